//! The ledger survives crashes: a journal cut at any byte, corrupted in the middle, or left by a
//! writer killed mid-way recovers exactly its committed prefix, and replaying it gives the same
//! state (digest) as the live ledger had after those entries.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use vain_core::journal::{self, Entry, MAGIC, Tail};
use vain_core::ledger::Ledger;
use vain_core::sim::{self, Options};
use vain_core::store::Store;

fn recorded() -> sim::Run {
    let opts = Options { journal: true, epochs: 14, ..Options::new(40, 21) };
    sim::run(sim::scenario("mixed").expect("scenario"), &opts, &mut sim::Blind)
}

/// The digest after applying the first `k` entries.
fn digest_after(run: &sim::Run, k: usize) -> [u8; 32] {
    journal::replay(run.config.clone(), 0, &run.journal[..k]).digest()
}

#[test]
fn replaying_the_whole_journal_gives_the_live_state() {
    let run = recorded();
    assert!(run.journal.len() > 300, "{}", run.journal.len());
    let bytes: Vec<u8> = MAGIC.iter().copied().chain(run.journal.iter().flat_map(journal::encode)).collect();
    let scan = journal::scan(&bytes);
    assert_eq!(scan.tail, None);
    assert_eq!(scan.valid_len, bytes.len());
    assert_eq!(scan.entries.len(), run.journal.len());
    let mut l = Ledger::new(run.config.clone(), 0);
    for e in &scan.entries {
        e.apply(&mut l);
    }
    assert_eq!(l.digest(), run.digest);
}

#[test]
fn a_journal_cut_at_any_byte_recovers_exactly_the_whole_frames() {
    let run = recorded();
    let frames: Vec<Vec<u8>> = run.journal.iter().take(120).map(journal::encode).collect();
    let mut bytes = MAGIC.to_vec();
    let mut ends = vec![bytes.len()];
    for f in &frames {
        bytes.extend_from_slice(f);
        ends.push(bytes.len());
    }
    for cut in 0..=bytes.len() {
        let scan = journal::scan(&bytes[..cut]);
        let whole = ends.iter().filter(|&&e| e <= cut).count().saturating_sub(1);
        if cut < MAGIC.len() {
            assert!(scan.entries.is_empty());
            continue;
        }
        assert_eq!(scan.entries.len(), whole, "cut at {cut}");
        assert_eq!(scan.valid_len, ends[whole]);
        assert_eq!(scan.tail.is_some(), cut != ends[whole], "cut at {cut}");
    }
    // Spot-check that the recovered prefixes give the states the live ledger had.
    for k in [0, 1, 40, 119] {
        let scan = journal::scan(&bytes[..ends[k] + 3]);
        assert_eq!(journal::replay(run.config.clone(), 0, &scan.entries).digest(), digest_after(&run, k));
    }
}

#[test]
fn corruption_in_the_middle_stops_recovery_there_and_never_loads_it() {
    let run = recorded();
    let frames: Vec<Vec<u8>> = run.journal.iter().take(50).map(journal::encode).collect();
    let mut bytes = MAGIC.to_vec();
    let mut starts = Vec::new();
    for f in &frames {
        starts.push(bytes.len());
        bytes.extend_from_slice(f);
    }
    for (k, &at) in starts.iter().enumerate().step_by(7) {
        for off in [0usize, 3, 4, 19, 20, 25] {
            let pos = at + off.min(frames[k].len() - 1);
            let mut bad = bytes.clone();
            bad[pos] ^= 0x40;
            let scan = journal::scan(&bad);
            assert_eq!(scan.entries.len(), k, "flip at {pos}");
            assert!(matches!(scan.tail, Some(Tail::Checksum { .. } | Tail::Oversized { .. } | Tail::Torn { .. })));
        }
    }
    assert_eq!(journal::scan(b"not a journal").tail, Some(Tail::Magic));
}

#[test]
fn the_store_truncates_a_torn_tail_and_appends_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.journal");
    let run = recorded();
    {
        let (mut s, rec) = Store::open(&path).expect("open");
        assert!(rec.entries.is_empty() && rec.dropped.is_none());
        s.append(&run.journal[..30]).expect("append");
    }
    // A torn write: half a frame at the end.
    let half = journal::encode(&run.journal[30]);
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("file");
    std::io::Write::write_all(&mut f, &half[..half.len() / 2]).expect("write");
    drop(f);
    let (mut s, rec) = Store::open(&path).expect("open");
    assert_eq!(rec.entries.len(), 30);
    assert!(matches!(rec.dropped, Some(Tail::Torn { .. })));
    s.append(&run.journal[30..60]).expect("append");
    drop(s);
    let (_, rec) = Store::open(&path).expect("open");
    assert_eq!(rec.entries.len(), 60);
    assert!(rec.dropped.is_none());
    assert_eq!(journal::replay(run.config.clone(), 0, &rec.entries).digest(), digest_after(&run, 60));
    std::fs::write(dir.path().join("other"), b"hello").expect("write");
    assert!(Store::open(&dir.path().join("other")).is_err(), "a foreign file is refused, not overwritten");
    assert_eq!(std::fs::read(dir.path().join("other")).expect("read"), b"hello");
}

/// The writer side of the kill test: appends entries one by one, printing each commit.
#[test]
#[ignore = "run by killed_writer_loses_no_committed_entry as a child process"]
fn writer_child() {
    let Some(path) = std::env::var_os("VAIN_JOURNAL_CHILD") else { return };
    let run = recorded();
    let (mut s, _) = Store::open(std::path::Path::new(&path)).expect("open");
    for (k, e) in run.journal.iter().enumerate() {
        s.append(std::slice::from_ref(e)).expect("append");
        println!("committed {}", k + 1);
    }
    println!("done");
}

#[test]
fn killed_writer_loses_no_committed_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.journal");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "writer_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("VAIN_JOURNAL_CHILD", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let out = child.stdout.take().expect("stdout");
    let mut committed = 0usize;
    for line in BufReader::new(out).lines() {
        let line = line.expect("line");
        if let Some(k) = line.strip_prefix("committed ") {
            committed = k.parse().expect("count");
            if committed >= 200 {
                break;
            }
        }
    }
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(committed >= 200, "the writer committed {committed} entries before the kill");
    let (_, rec) = Store::open(&path).expect("open");
    assert!(rec.entries.len() >= committed, "{} recovered < {committed} committed", rec.entries.len());
    let run = recorded();
    assert_eq!(
        journal::replay(run.config.clone(), 0, &rec.entries).digest(),
        digest_after(&run, rec.entries.len()),
        "the recovered prefix is exactly the live state after it"
    );
    let _: Option<Entry> = rec.entries.last().cloned();
}

#[test]
fn power_loss_at_every_step_keeps_exactly_the_committed_entries() {
    use vain_core::storage::Sim;
    let run = recorded();
    let entries = &run.journal[..40];
    let path = std::path::Path::new("/sim/ledger.journal");
    // Opening a new journal is 3 operations (truncate, magic, sync), each batch 2 (write,
    // sync): crash before every one of them, and once after all.
    let batches: Vec<&[Entry]> = entries.chunks(3).collect();
    let ops = 3 + 2 * batches.len();
    for crash_at in 0..=ops {
        let sim = Sim::new();
        vain_core::storage::Storage::create_dir_all(&sim, std::path::Path::new("/sim"), 0o700).expect("dir");
        sim.fail_after(crash_at);
        let mut committed = 0;
        if let Ok((mut s, _)) = Store::open_in(&sim, path) {
            for b in &batches {
                if s.append(b).is_err() {
                    break;
                }
                committed += b.len();
            }
        }
        sim.crash();
        let (mut s, rec) = Store::open_in(&sim, path).expect("a journal recovers after any crash");
        assert_eq!(rec.entries.len(), committed, "crash before operation {crash_at}");
        assert_eq!(journal::replay(run.config.clone(), 0, &rec.entries).digest(), digest_after(&run, committed));
        // And it takes appends again, on a frame boundary.
        s.append(&entries[committed..]).expect("append after recovery");
        sim.crash();
        let (_, rec) = Store::open_in(&sim, path).expect("reopen");
        assert_eq!(rec.entries.len(), entries.len(), "crash before operation {crash_at}");
    }
}

#[test]
fn a_torn_header_is_a_new_journal_and_mid_file_corruption_is_refused_not_dropped() {
    use vain_core::storage::Sim;
    let run = recorded();
    let path = std::path::Path::new("/sim/ledger.journal");
    // A crash while the file was created left 3 bytes of the magic.
    let sim = Sim::new();
    sim.set(path, MAGIC[..3].to_vec());
    let (mut s, rec) = Store::open_in(&sim, path).expect("a torn header is a new journal");
    assert!(rec.entries.is_empty());
    s.append(&run.journal[..20]).expect("append");
    let good = sim.get(path).expect("file");
    assert!(good.starts_with(MAGIC));
    // One flipped byte inside frame 5, frames 6.. intact: refused, file untouched.
    let mut at = MAGIC.len();
    for e in &run.journal[..5] {
        at += journal::encode(e).len();
    }
    let mut bad = good.clone();
    bad[at + 30] ^= 0x10;
    sim.set(path, bad.clone());
    match Store::open_in(&sim, path) {
        Err(vain_core::store::Error::Corrupt { later, tail: Tail::Checksum { offset }, .. }) => {
            assert_eq!(offset, at);
            assert_eq!(later, 14, "frames 6–19 are still there");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("mid-file corruption must not be dropped silently"),
    }
    assert_eq!(sim.get(path), Some(bad), "left as it was");
    // The same damage in the last frame is a torn tail: cut off.
    let mut last = good.clone();
    let n = last.len();
    last[n - 3] ^= 0x10;
    sim.set(path, last);
    let (_, rec) = Store::open_in(&sim, path).expect("a damaged last frame is cut off");
    assert_eq!(rec.entries.len(), 19);
}

#[test]
fn a_journal_of_an_older_format_is_refused_by_name_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.journal");
    let mut old = MAGIC.to_vec();
    old[7] = b'1';
    old.extend_from_slice(&[7; 40]);
    std::fs::write(&path, &old).expect("write");
    match Store::open(&path) {
        Err(e @ vain_core::store::Error::OlderFormat { found: '1', .. }) => {
            assert!(e.to_string().contains("move it aside"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an older journal was opened"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), old);
}

/// A snapshot taken after any prefix of the journal, written out and read back, continues
/// exactly as the ledger it was taken of: the rest of the journal on top of it reaches the live
/// ledger's digest. Every proposal, ballot, audit and trust vector of the mixed scenario is in it.
#[test]
fn a_snapshot_after_any_prefix_continues_to_the_live_state() {
    use vain_core::ledger::Snapshot;
    let run = recorded();
    let n = run.journal.len();
    for k in (0..=n).step_by(n / 17 + 1).chain([n]) {
        let l = journal::replay(run.config.clone(), 0, &run.journal[..k]);
        let bytes = l.snapshot(0).encode().expect("encode");
        let mut back = Ledger::from_snapshot(Snapshot::decode(&bytes).expect("decode"));
        assert_eq!(back.digest(), l.digest(), "after {k} entries");
        for e in &run.journal[k..] {
            e.apply(&mut back);
        }
        assert_eq!(back.digest(), run.digest, "snapshot after {k} entries, then the rest");
    }
}

/// A damaged snapshot is refused by name, never half-loaded.
#[test]
fn a_damaged_snapshot_is_refused() {
    use vain_core::ledger::Snapshot;
    let run = recorded();
    let bytes = journal::replay(run.config.clone(), 0, &run.journal).snapshot(0).encode().expect("encode");
    for at in [0, 9, 40, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        let e = Snapshot::decode(&bad).err().expect("refused");
        assert!(e.to_string().contains("ledger snapshot") || e.to_string().contains("magic"), "{at}: {e}");
    }
    assert!(Snapshot::decode(&bytes[..bytes.len() - 3]).is_err());
}
