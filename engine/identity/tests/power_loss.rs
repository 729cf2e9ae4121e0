//! Power lost at every step of creating an identity and of rotating its key: on the simulated
//! disk, whatever was not synced is gone, and the identity must still open — the old one or the
//! new one, never a key that does not match its metadata, never a torn file.

use std::path::Path;
use std::sync::Arc;
use vain_identity::keyfile::KdfParams;
use vain_identity::rotation::Policy;
use vain_identity::store::NewKey;
use vain_identity::{Error, Identity};
use vain_storage::{Sim, Storage};

const FAST: KdfParams = KdfParams { m_cost_kib: 256, t_cost: 1, parallelism: 1 };
const PASS: Option<&[u8]> = Some(b"correct horse");
const DIR: &str = "/var/lib/vain/identity";
const NOW: u64 = 1_700_000_000_000;

fn disk() -> (Sim, Arc<dyn Storage>) {
    let sim = Sim::new();
    (sim.clone(), Arc::new(sim))
}

#[test]
fn creating_an_identity_survives_power_loss_at_every_step() {
    let dir = Path::new(DIR);
    let mut steps = 0;
    for crash_at in 0.. {
        let (sim, st) = disk();
        sim.fail_after(crash_at);
        let made = Identity::create_in(st.clone(), dir, NewKey::Random, PASS, FAST, NOW);
        sim.crash();
        match (&made, Identity::open_in(st.clone(), dir, PASS, None)) {
            (Ok(m), Ok(o)) => {
                assert_eq!(o.node_id(), m.node_id(), "step {crash_at}");
                assert_eq!(o.x25519().public(), m.x25519().public());
                steps = crash_at;
                break;
            }
            (Err(_), Err(Error::NotFound { .. })) => {
                // No identity yet: creating it again works, over whatever the crash left.
                let again = Identity::create_in(st.clone(), dir, NewKey::Random, PASS, FAST, NOW)
                    .unwrap_or_else(|e| panic!("create after a crash at step {crash_at}: {e}"));
                let o = Identity::open_in(st, dir, PASS, None).expect("open");
                assert_eq!(o.node_id(), again.node_id());
            }
            (made, opened) => panic!("step {crash_at}: created {:?}, opened {:?}", made.is_ok(), opened.err()),
        }
    }
    // Directories (4 levels), then three files of five steps each (remove, write, sync,
    // rename, directory sync).
    assert_eq!(steps, 4 + 3 * 5, "every step was a crash point");
}

#[test]
fn rotating_the_key_survives_power_loss_at_every_step() {
    let dir = Path::new(DIR);
    let policy = Policy::default();
    let later = NOW + 86_400_000;
    let mut saw_old = false;
    let mut saw_new = false;
    for crash_at in 0.. {
        let (sim, st) = disk();
        let mut id = Identity::create_in(st.clone(), dir, NewKey::Random, PASS, FAST, NOW).expect("create");
        let old = id.current_key();
        sim.fail_after(crash_at);
        let rotated = id.rotate(NewKey::Random, PASS, FAST, later, &policy);
        sim.crash();
        let o = Identity::open_in(st.clone(), dir, PASS, None)
            .unwrap_or_else(|e| panic!("a crash at step {crash_at} of a rotation left no identity: {e}"));
        assert_eq!(o.node_id(), id.node_id());
        // `open` checks that the key it unlocked is the metadata's current key; the signer
        // must also sign for it.
        assert_eq!(o.signer().public_key(), o.current_key());
        if o.current_key() == old {
            assert!(rotated.is_err(), "a rotation that returned is durable (step {crash_at})");
            saw_old = true;
        } else {
            assert_eq!(o.meta().rotation_chain.len(), 1);
            saw_new = true;
        }
        // And it rotates again from there, and reopens with the result.
        let mut o = o;
        let cert = o.rotate(NewKey::Random, PASS, FAST, later + 1, &policy).expect("rotate after recovery");
        let again = Identity::open_in(st, dir, PASS, None).expect("reopen");
        assert_eq!(again.current_key(), cert.new_key);
        if rotated.is_ok() {
            assert!(crash_at > 10, "a rotation takes more than its key file and metadata");
            break;
        }
    }
    assert!(saw_old && saw_new, "crashes fell before and after the metadata committed");
}

#[test]
fn a_key_file_left_readable_by_others_is_refused() {
    let dir = Path::new(DIR);
    let (sim, st) = disk();
    Identity::create_in(st.clone(), dir, NewKey::Random, PASS, FAST, NOW).expect("create");
    sim.set_mode(&dir.join(vain_identity::store::KEY_FILE), 0o644);
    match Identity::open_in(st, dir, PASS, None) {
        Err(Error::InsecurePermissions { mode, .. }) => assert_eq!(mode, 0o644),
        other => panic!("{:?}", other.err()),
    }
}
