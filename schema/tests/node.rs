//! Announcements, heartbeats and rotation certificates: verification and hostile input.

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use vain_schema::node::{Announcement, Heartbeat, Resources, RotationCertificate, roles};
use vain_schema::{Error, Limits};

const T0: u64 = 1_790_000_000_000;

fn announcement(
    signer: &SigningKey,
    node: &SigningKey,
    chain: Vec<Vec<u8>>,
    f: impl FnOnce(&mut Announcement),
) -> Vec<u8> {
    let mut a = Announcement {
        node_id: node.verifying_key().to_bytes(),
        signing_key: signer.verifying_key().to_bytes(),
        rotation_chain: chain,
        addresses: vec!["/ip4/10.0.0.1/tcp/4001".into()],
        roles: roles::VALIDATOR,
        resources: Resources::default(),
        x25519_key: [7; 32],
        timestamp_ms: T0,
        ingest: Vec::new(),
        region: String::new(),
    };
    f(&mut a);
    let body = a.encode();
    Announcement::wrap(&body, &signer.sign(Announcement::signing_input(&body).as_bytes()).to_bytes())
}

fn cert(old: &SigningKey, new: &SigningKey, seq: u32) -> Vec<u8> {
    let c = RotationCertificate {
        sequence: seq,
        old_key: old.verifying_key().to_bytes(),
        new_key: new.verifying_key().to_bytes(),
        not_before_ms: T0,
        not_after_ms: T0 + 1_000_000,
    };
    let body = c.encode();
    RotationCertificate::wrap(&body, &old.sign(RotationCertificate::signing_input(&body).as_bytes()).to_bytes())
}

#[test]
fn announcement_by_root_key_verifies() {
    let k = SigningKey::from_bytes(&[1; 32]);
    let a = Announcement::open(&announcement(&k, &k, vec![], |_| {}), &Limits::default(), T0).expect("valid");
    assert_eq!(a.roles, roles::VALIDATOR);
    assert_eq!(a.x25519_key, [7; 32]);
}

#[test]
fn announcement_signed_by_an_uncertified_key_is_refused() {
    let root = SigningKey::from_bytes(&[1; 32]);
    let other = SigningKey::from_bytes(&[2; 32]);
    // Claims root's node id but is signed by another key with no chain.
    let bytes = announcement(&other, &root, vec![], |_| {});
    assert!(
        matches!(Announcement::open(&bytes, &Limits::default(), T0), Err(Error::InvalidField { field, .. }) if field == "signing_key")
    );
    // A chain to the signer makes it valid.
    let bytes = announcement(&other, &root, vec![cert(&root, &other, 0)], |_| {});
    Announcement::open(&bytes, &Limits::default(), T0).expect("certified");
    // A chain signed by someone other than the root is refused.
    let bytes = announcement(&other, &root, vec![cert(&other, &root, 0)], |_| {});
    assert!(Announcement::open(&bytes, &Limits::default(), T0).is_err());
}

#[test]
fn announcement_limits_and_unknown_roles_are_enforced() {
    let k = SigningKey::from_bytes(&[1; 32]);
    let bytes = announcement(&k, &k, vec![], |a| a.roles = 0x80);
    assert!(matches!(Announcement::open(&bytes, &Limits::default(), T0), Err(Error::UnknownEnum { .. })));
    let bytes = announcement(&k, &k, vec![], |a| a.addresses = vec!["/ip4/1.2.3.4/tcp/1".into(); 40]);
    assert!(matches!(
        Announcement::open(&bytes, &Limits::default(), T0),
        Err(Error::TooLarge { what: "addresses", .. })
    ));
    let bytes = announcement(&k, &k, vec![], |a| a.addresses = vec!["x".repeat(300)]);
    assert!(matches!(Announcement::open(&bytes, &Limits::default(), T0), Err(Error::InvalidField { .. })));
    let chain: Vec<Vec<u8>> = (0..70).map(|i| cert(&k, &SigningKey::from_bytes(&[i as u8 + 2; 32]), i)).collect();
    let bytes = announcement(&k, &k, chain, |_| {});
    assert!(matches!(
        Announcement::open(&bytes, &Limits::default(), T0),
        Err(Error::TooLarge { what: "rotation chain", .. })
    ));
}

#[test]
fn heartbeat_round_trips_and_rejects_forgery() {
    let k = SigningKey::from_bytes(&[3; 32]);
    let hb = Heartbeat {
        node_id: [1; 32],
        signing_key: k.verifying_key().to_bytes(),
        sequence: 9,
        timestamp_ms: T0,
        round: 4,
    };
    let bytes = hb.encode_signed(|m| Ok::<_, ()>(k.sign(m).to_bytes())).expect("sign");
    assert_eq!(Heartbeat::open(&bytes, &Limits::default()).expect("valid"), hb);
    let forged = hb.encode_signed(|m| Ok::<_, ()>(SigningKey::from_bytes(&[4; 32]).sign(m).to_bytes())).expect("sign");
    assert!(matches!(Heartbeat::open(&forged, &Limits::default()), Err(Error::BadSignature { what: "Heartbeat" })));
}

#[test]
fn rotation_certificate_with_empty_window_or_same_keys_is_refused() {
    let k = SigningKey::from_bytes(&[1; 32]);
    let mk = |c: RotationCertificate| {
        let body = c.encode();
        RotationCertificate::wrap(&body, &k.sign(RotationCertificate::signing_input(&body).as_bytes()).to_bytes())
    };
    let pk = k.verifying_key().to_bytes();
    let other = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
    let empty = mk(RotationCertificate { sequence: 0, old_key: pk, new_key: other, not_before_ms: 5, not_after_ms: 5 });
    assert!(RotationCertificate::open(&empty, &Limits::default()).is_err());
    let same = mk(RotationCertificate { sequence: 0, old_key: pk, new_key: pk, not_before_ms: 5, not_after_ms: 6 });
    assert!(RotationCertificate::open(&same, &Limits::default()).is_err());
    let ok = mk(RotationCertificate { sequence: 0, old_key: pk, new_key: other, not_before_ms: 5, not_after_ms: 6 });
    RotationCertificate::open(&ok, &Limits::default()).expect("valid");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_announcements_never_panic_and_never_verify_with_changed_body(
        idx in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let root = SigningKey::from_bytes(&[1; 32]);
        let next = SigningKey::from_bytes(&[2; 32]);
        let orig = announcement(&next, &root, vec![cert(&root, &next, 0)], |_| {});
        let mut bytes = orig.clone();
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        if let Ok(a) = Announcement::open(&bytes, &Limits::default(), T0) {
            // Only changes to bytes no field reads (padding, unused vtable space) may pass,
            // and then the decoded content must be the original.
            let b = Announcement::open(&orig, &Limits::default(), T0).expect("orig");
            prop_assert_eq!(a, b);
        }
    }
}
