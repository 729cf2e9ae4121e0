//! The ledger's append-only journal format (pure: bytes in, entries out; [`crate::store`] does
//! the file I/O).
//!
//! The ledger is deterministic, so its state is a function of the entries applied to it: the
//! journal records every entry (each input with its arrival time, each tick, each join and audit
//! opening) and recovery replays them. A file is the 8-byte magic `vAInLOG2` (`2`: reports carry governance inputs) followed by frames:
//! `len: u32 LE ‖ check: first 16 bytes of BLAKE3(payload) ‖ payload`, with
//! `payload = at: u64 LE ‖ tag: u8 ‖ body`. A frame is committed once its bytes are on disk
//! (`fsync`); a crash can leave a torn last frame, which [`scan`] detects by length or checksum
//! and cuts off, so no partial or corrupt entry is ever applied and every committed one is.

use crate::codec::{self, Reader};
use crate::ledger::{Input, Ledger};
use crate::{NodeId, Time};
use thiserror::Error;

/// File magic and version.
pub const MAGIC: &[u8; 8] = b"vAInLOG2";
/// Largest payload a frame may declare (checked before allocating).
pub const MAX_PAYLOAD: u32 = 16 << 20;
const HEADER: usize = 4 + 16;

/// One journal entry: everything that changes the ledger.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An input handed to [`Ledger::handle`] at `at` (recorded whether or not it was accepted:
    /// replay refuses the same ones).
    Input {
        /// Arrival time.
        at: Time,
        /// The input.
        input: Input,
    },
    /// [`Ledger::tick`] at `at`.
    Tick {
        /// When.
        at: Time,
    },
    /// [`Ledger::join`].
    Join {
        /// When.
        at: Time,
        /// The node.
        node: NodeId,
    },
    /// [`Ledger::open_audit`].
    OpenAudit {
        /// When.
        at: Time,
        /// Audited node.
        subject: NodeId,
        /// Public seed.
        seed: [u8; 32],
    },
}

impl Entry {
    /// The ledger time it was applied at.
    pub fn at(&self) -> Time {
        match self {
            Entry::Input { at, .. } | Entry::Tick { at } | Entry::Join { at, .. } | Entry::OpenAudit { at, .. } => *at,
        }
    }

    /// Applies the entry to `ledger` exactly as it was applied live.
    pub fn apply(&self, ledger: &mut Ledger) {
        match self {
            Entry::Input { at, input } => {
                // Refusals are part of the history too: replay reaches the same verdict.
                let _ = ledger.handle(*at, input.clone());
            }
            Entry::Tick { at } => ledger.tick(*at),
            Entry::Join { at, node } => ledger.join(*node, *at),
            Entry::OpenAudit { at, subject, seed } => {
                ledger.open_audit(*subject, *seed, *at);
            }
        }
    }
}

/// One frame's bytes.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    match entry {
        Entry::Input { at, input } => {
            p.extend_from_slice(&at.to_le_bytes());
            p.push(0);
            codec::encode_input(input, &mut p);
        }
        Entry::Tick { at } => {
            p.extend_from_slice(&at.to_le_bytes());
            p.push(1);
        }
        Entry::Join { at, node } => {
            p.extend_from_slice(&at.to_le_bytes());
            p.push(2);
            p.extend_from_slice(node);
        }
        Entry::OpenAudit { at, subject, seed } => {
            p.extend_from_slice(&at.to_le_bytes());
            p.push(3);
            p.extend_from_slice(subject);
            p.extend_from_slice(seed);
        }
    }
    let mut f = Vec::with_capacity(HEADER + p.len());
    f.extend_from_slice(&(p.len() as u32).to_le_bytes());
    f.extend_from_slice(&blake3::hash(&p).as_bytes()[..16]);
    f.extend_from_slice(&p);
    f
}

/// Why scanning stopped before the end of the bytes.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tail {
    /// The file does not start with [`MAGIC`].
    #[error("not a vAIn journal (bad magic)")]
    Magic,
    /// The last frame is incomplete (a crash during a write).
    #[error("torn frame at byte {offset}")]
    Torn {
        /// Where the frame starts.
        offset: usize,
    },
    /// A frame declares more than [`MAX_PAYLOAD`].
    #[error("frame at byte {offset} declares {len} bytes")]
    Oversized {
        /// Where the frame starts.
        offset: usize,
        /// Declared length.
        len: u32,
    },
    /// A frame's checksum does not match.
    #[error("checksum mismatch in the frame at byte {offset}")]
    Checksum {
        /// Where the frame starts.
        offset: usize,
    },
    /// A frame's payload does not decode.
    #[error("frame at byte {offset}: {error}")]
    Decode {
        /// Where the frame starts.
        offset: usize,
        /// The decoding error.
        error: codec::Error,
    },
}

/// What [`scan`] found.
#[derive(Debug)]
pub struct Scan {
    /// The entries of the valid prefix, in order.
    pub entries: Vec<Entry>,
    /// Bytes of the valid prefix (magic included): truncate the file here before appending.
    pub valid_len: usize,
    /// Why the rest was cut off, if anything was.
    pub tail: Option<Tail>,
    /// Valid frames found after a damaged one (0 for a torn tail): corruption, not a crash.
    pub later: usize,
}

fn decode_payload(p: &[u8]) -> Result<Entry, codec::Error> {
    let mut r = Reader::new(p);
    let at = r.u64("entry.at")?;
    let e = match r.u8("entry.kind")? {
        0 => Entry::Input { at, input: codec::decode_input(&mut r)? },
        1 => Entry::Tick { at },
        2 => Entry::Join { at, node: r.array::<32>("entry.node")? },
        3 => Entry::OpenAudit { at, subject: r.array::<32>("entry.subject")?, seed: r.array::<32>("entry.seed")? },
        value => return Err(codec::Error::Tag { field: "entry.kind", value }),
    };
    r.finish()?;
    Ok(e)
}

/// Reads a journal file's bytes: the longest valid prefix of frames.
pub fn scan(bytes: &[u8]) -> Scan {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        // An empty file is a new journal, and so is a torn header (a crash while the file was
        // created left a prefix of the magic); anything else is not ours.
        let tail = if bytes.is_empty() {
            None
        } else if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            Some(Tail::Torn { offset: 0 })
        } else {
            Some(Tail::Magic)
        };
        return Scan { entries: Vec::new(), valid_len: 0, tail, later: 0 };
    }
    let mut entries = Vec::new();
    let mut off = MAGIC.len();
    let tail = loop {
        let rest = &bytes[off..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < HEADER {
            break Some(Tail::Torn { offset: off });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len > MAX_PAYLOAD {
            break Some(Tail::Oversized { offset: off, len });
        }
        if rest.len() < HEADER + len as usize {
            break Some(Tail::Torn { offset: off });
        }
        let payload = &rest[HEADER..HEADER + len as usize];
        if blake3::hash(payload).as_bytes()[..16] != rest[4..HEADER] {
            break Some(Tail::Checksum { offset: off });
        }
        match decode_payload(payload) {
            Ok(e) => entries.push(e),
            Err(error) => break Some(Tail::Decode { offset: off, error }),
        }
        off += HEADER + len as usize;
    };
    let later = if matches!(tail, Some(Tail::Checksum { .. } | Tail::Decode { .. } | Tail::Oversized { .. })) {
        valid_frames_after(bytes, off + 1)
    } else {
        0
    };
    Scan { entries, valid_len: off, tail, later }
}

/// Bytes after a damaged frame searched for valid ones (bounded: the search hashes a candidate
/// payload at each offset whose header looks plausible).
const RESYNC_WINDOW: usize = 4 << 20;

/// How many valid frames follow, from the first one found at or after `from`.
fn valid_frames_after(bytes: &[u8], from: usize) -> usize {
    let end = bytes.len().min(from.saturating_add(RESYNC_WINDOW));
    let mut at = from;
    while at + HEADER <= end {
        if let Some(n) = frames_from(bytes, at) {
            return n;
        }
        at += 1;
    }
    0
}

/// The number of consecutive valid frames starting at `at`, if one starts there.
fn frames_from(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut n = 0;
    while let Some(rest) = bytes.get(at..) {
        if rest.len() < HEADER {
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        // The payload starts with `at: u64` and a kind byte 0..=3.
        if !(9..=MAX_PAYLOAD).contains(&len) || rest.len() < HEADER + len as usize || rest[HEADER + 8] > 3 {
            break;
        }
        let payload = &rest[HEADER..HEADER + len as usize];
        if blake3::hash(payload).as_bytes()[..16] != rest[4..HEADER] || decode_payload(payload).is_err() {
            break;
        }
        n += 1;
        at += HEADER + len as usize;
    }
    (n > 0).then_some(n)
}

/// A ledger rebuilt from `entries` (all of them, in order).
pub fn replay(cfg: crate::ledger::Config, t0: Time, entries: &[Entry]) -> Ledger {
    let mut l = Ledger::new(cfg, t0);
    for e in entries {
        e.apply(&mut l);
    }
    // Decisions were taken (and acted on) when the entries were first applied.
    while l.poll().is_some() {}
    l
}
