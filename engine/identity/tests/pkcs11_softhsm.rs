//! PKCS#11 signing against SoftHSM2 with a throwaway token this test creates.
//!
//! One test function: SoftHSM2 reads SOFTHSM2_CONF once per process, and setting an environment
//! variable is only sound while no other thread runs.
#![allow(unsafe_code)]

use ed25519_dalek::{Verifier, VerifyingKey};
use std::path::PathBuf;
use std::process::Command;
use vain_identity::keyfile::KdfParams;
use vain_identity::pkcs11::{Config, Pkcs11Signer};
use vain_identity::rotation::Policy;
use vain_identity::store::NewKey;
use vain_identity::{Error, Identity, Signer};

fn module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

#[test]
fn softhsm_signs_with_ed25519_and_backs_an_identity() {
    let Some(module) = module() else {
        let test = "softhsm_signs_with_ed25519_and_backs_an_identity";
        vain_testkit::unavailable(vain_testkit::Need::SoftHsm, test, "SoftHSM2 not installed (apt install softhsm2)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir(&tokens).expect("mkdir");
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .expect("conf");
    // SAFETY: the only test in this binary; no other thread reads the environment concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "vain-test", "--so-pin", "12345678", "--pin", "87654321"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(status.status.success(), "init token: {}", String::from_utf8_lossy(&status.stderr));

    let cfg = Config {
        module: module.clone(),
        token_label: "vain-test".into(),
        key_label: "node-key".into(),
        pin: "87654321".into(),
    };
    let signer = Pkcs11Signer::generate(&cfg).expect("generate Ed25519 key in the token");
    let msg = b"vAIn round 7 aggregate";
    let sig = signer.sign(msg).expect("sign");
    let vk = VerifyingKey::from_bytes(&signer.public_key()).expect("public key");
    vk.verify(msg, &ed25519_dalek::Signature::from_bytes(&sig)).expect("ed25519-dalek verifies the HSM signature");
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig)).expect("strict too");
    assert!(vk.verify(b"other", &ed25519_dalek::Signature::from_bytes(&sig)).is_err());
    match Pkcs11Signer::generate(&cfg) {
        Err(Error::KeyExists { .. }) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("duplicate label accepted"),
    }
    drop(signer);

    // Wrong PIN, unknown token and unknown key are typed errors.
    let wrong_pin = Config { pin: "0000".into(), ..cfg.clone() };
    assert!(matches!(Pkcs11Signer::open(&wrong_pin), Err(Error::Pkcs11 { op: "login", .. })));
    let no_token = Config { token_label: "nope".into(), ..cfg.clone() };
    assert!(matches!(Pkcs11Signer::open(&no_token), Err(Error::TokenNotFound { .. })));
    let no_key = Config { key_label: "nope".into(), ..cfg.clone() };
    assert!(matches!(Pkcs11Signer::open(&no_key), Err(Error::KeyNotFound { .. })));

    // An identity whose key lives in the token, rotated to a second token key.
    let dir = tmp.path().join("id");
    let id_cfg = Config { key_label: "root".into(), ..cfg.clone() };
    let id = Identity::create(&dir, NewKey::Hsm(id_cfg), None, KdfParams::default(), vain_schema::clock::unix_ms())
        .expect("create");
    let root = id.node_id();
    drop(id);
    let mut id = Identity::open(&dir, None, Some(cfg.clone())).expect("open");
    let now = vain_schema::clock::unix_ms();
    let next = Config { key_label: "rotated".into(), ..cfg.clone() };
    let cert = id.rotate(NewKey::Hsm(next), None, KdfParams::default(), now, &Policy::default()).expect("rotate");
    assert_eq!(cert.old_key, root);
    assert_eq!(id.node_id(), root);
    let ann = id.announcement(vec!["/ip4/127.0.0.1/tcp/4001".into()], 2, Default::default(), now).expect("announce");
    let a = vain_schema::node::Announcement::open(&ann, &vain_schema::Limits::default(), now)
        .expect("announcement verifies");
    assert_eq!((a.node_id, a.signing_key), (root, cert.new_key));
    drop(id);
    let id = Identity::open(&dir, None, Some(cfg.clone())).expect("reopen after rotation");
    assert_eq!(id.current_key(), cert.new_key);
    drop(id);
    rotations_between_a_file_and_the_token_survive_power_loss(&cfg);
}

/// Power lost at every step of a rotation from a key file into the token and from the token to a
/// key file, on the simulated disk (the token itself is SoftHSM's): the identity opens to the old
/// or the new key, and opening finishes what the rotation left — the retired key file removed, or
/// the new key file renamed into place.
fn rotations_between_a_file_and_the_token_survive_power_loss(cfg: &Config) {
    use std::path::Path;
    use std::sync::Arc;
    use vain_identity::store::KEY_FILE;
    use vain_storage::{Sim, Storage};
    const FAST: KdfParams = KdfParams { m_cost_kib: 256, t_cost: 1, parallelism: 1 };
    let dir = Path::new("/var/lib/vain/identity");
    let (now, later) = (1_700_000_000_000u64, 1_700_086_400_000u64);
    let policy = Policy::default();
    let hsm = |label: String| Config { key_label: label, ..cfg.clone() };
    for to_token in [true, false] {
        let (mut saw_old, mut saw_new) = (false, false);
        for crash_at in 0.. {
            let sim = Sim::new();
            let st: Arc<dyn Storage> = Arc::new(sim.clone());
            let (from, to) = if to_token {
                (NewKey::Random, NewKey::Hsm(hsm(format!("into-{crash_at}"))))
            } else {
                (NewKey::Hsm(hsm(format!("from-{crash_at}"))), NewKey::Random)
            };
            let mut id = Identity::create_in(st.clone(), dir, from, None, FAST, now).expect("create");
            let old = id.current_key();
            sim.fail_after(crash_at);
            let rotated = id.rotate(to, None, FAST, later, &policy);
            sim.crash();
            let o = Identity::open_in(st.clone(), dir, None, Some(cfg.clone()))
                .unwrap_or_else(|e| panic!("to token {to_token}: a crash at step {crash_at} left no identity: {e}"));
            assert_eq!(o.signer().public_key(), o.current_key(), "step {crash_at}");
            if o.current_key() == old {
                assert!(rotated.is_err(), "a rotation that returned is durable (step {crash_at})");
                saw_old = true;
            } else {
                saw_new = true;
                // Opened on the new key, the directory holds what that key needs and no more:
                // into the token, the retired key file is gone (durably); out of it, the key
                // file is in place.
                sim.crash();
                assert_eq!(st.exists(&dir.join(KEY_FILE)), !to_token, "step {crash_at}");
                let again = Identity::open_in(st.clone(), dir, None, Some(cfg.clone())).expect("reopen");
                assert_eq!(again.current_key(), o.current_key());
            }
            if rotated.is_ok() {
                break;
            }
        }
        assert!(saw_old && saw_new, "to token {to_token}: crashes fell before and after the metadata committed");
    }
}
