//! Key rotation: certificates, the validity policy and its warnings.
//!
//! Rotating replaces the signing key while the node id (root key) stays the same: the current key
//! signs a [`RotationCertificate`] naming the new key and its validity window. Each key is valid for
//! [`Policy::validity`] (90 days by default); [`status`] warns [`Policy::warn_before`] ahead of expiry.

use crate::{Error, Signer};
use vain_schema::node::{RotationCertificate, SignedRotation};
use vain_schema::{Limits, PublicKey};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How long keys live and when to warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Validity of a key from the moment it takes over, in ms.
    pub validity_ms: u64,
    /// Warn this long before the current key expires, in ms.
    pub warn_before_ms: u64,
}

impl Default for Policy {
    /// 90 days of validity, warnings from 14 days before expiry.
    fn default() -> Self {
        Self { validity_ms: 90 * DAY_MS, warn_before_ms: 14 * DAY_MS }
    }
}

impl Policy {
    /// Validity of a key in days.
    pub fn validity_days(&self) -> u64 {
        self.validity_ms / DAY_MS
    }
}

/// Where the current key stands with respect to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Valid and not near expiry.
    Valid {
        /// When the key stops being accepted (for a root key never rotated: when rotation is due).
        expires_at_ms: u64,
    },
    /// Valid, but within the warning period: rotate now.
    ExpiringSoon {
        /// When the key stops being accepted (or rotation is due).
        expires_at_ms: u64,
    },
    /// A rotated key past its window: peers refuse it.
    Expired {
        /// When it expired.
        expired_at_ms: u64,
    },
    /// The root key has been in use longer than the policy allows; it is still accepted (the root
    /// key has no certificate to expire) but should be rotated.
    RotationOverdue {
        /// When rotation became due.
        due_at_ms: u64,
    },
}

/// The status of an identity whose current key took over at `current_since_ms`, with `last` the
/// last certificate of its chain (None when the root key signs).
pub fn status(current_since_ms: u64, last: Option<&RotationCertificate>, now_ms: u64, policy: &Policy) -> Status {
    let (expires, hard) = match last {
        Some(c) => (c.not_after_ms, true),
        None => (current_since_ms.saturating_add(policy.validity_ms), false),
    };
    if now_ms > expires {
        if hard { Status::Expired { expired_at_ms: expires } } else { Status::RotationOverdue { due_at_ms: expires } }
    } else if now_ms.saturating_add(policy.warn_before_ms) >= expires {
        Status::ExpiringSoon { expires_at_ms: expires }
    } else {
        Status::Valid { expires_at_ms: expires }
    }
}

/// `old` certifies `new_key` as its successor at position `sequence`, valid from `now_ms` for the
/// policy's validity. The certificate is checked by decoding it again before it is returned.
pub fn issue(
    old: &dyn Signer,
    new_key: PublicKey,
    sequence: u32,
    now_ms: u64,
    policy: &Policy,
) -> Result<SignedRotation, Error> {
    let cert = RotationCertificate {
        sequence,
        old_key: old.public_key(),
        new_key,
        not_before_ms: now_ms,
        not_after_ms: now_ms.saturating_add(policy.validity_ms),
    };
    let body = cert.encode();
    let sig = old.sign(RotationCertificate::signing_input(&body).as_bytes())?;
    let bytes = RotationCertificate::wrap(&body, &sig);
    Ok(RotationCertificate::open(&bytes, &Limits::default())?)
}

/// Decodes and verifies a chain of `SignedRotationCertificate` bytes from `root`; returns the
/// certificates and the current key.
pub fn verify_chain(
    root: &PublicKey,
    chain: &[Vec<u8>],
    now_ms: u64,
) -> Result<(Vec<RotationCertificate>, PublicKey), Error> {
    let limits = Limits::default();
    let certs =
        chain.iter().map(|b| RotationCertificate::open(b, &limits).map(|s| s.cert)).collect::<Result<Vec<_>, _>>()?;
    let current = vain_schema::node::verify_chain(root, &certs, now_ms, &limits)?;
    Ok((certs, current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::FileSigner;
    use vain_schema::node::check_no_fork;

    const T0: u64 = 1_790_000_000_000;

    #[test]
    fn chain_of_three_rotations_verifies_and_keeps_the_root() {
        let p = Policy::default();
        let root = FileSigner::from_seed(&[1; 32]);
        let k1 = FileSigner::from_seed(&[2; 32]);
        let k2 = FileSigner::from_seed(&[3; 32]);
        let k3 = FileSigner::from_seed(&[4; 32]);
        let c0 = issue(&root, k1.public_key(), 0, T0, &p).expect("c0");
        let c1 = issue(&k1, k2.public_key(), 1, T0 + 30 * DAY_MS, &p).expect("c1");
        let c2 = issue(&k2, k3.public_key(), 2, T0 + 60 * DAY_MS, &p).expect("c2");
        let chain = vec![c0.bytes.clone(), c1.bytes.clone(), c2.bytes.clone()];
        let (certs, current) = verify_chain(&root.public_key(), &chain, T0 + 61 * DAY_MS).expect("chain");
        assert_eq!(current, k3.public_key());
        assert_eq!(certs.len(), 3);
        // Expired once the last window has passed.
        let late = T0 + 60 * DAY_MS + p.validity_ms + 1;
        assert!(matches!(
            verify_chain(&root.public_key(), &chain, late),
            Err(Error::Schema(vain_schema::Error::RotationExpired { .. }))
        ));
        // Out of order, missing a link, or from the wrong root: refused.
        assert!(verify_chain(&root.public_key(), &[chain[1].clone(), chain[0].clone()], T0).is_err());
        assert!(verify_chain(&root.public_key(), &[chain[0].clone(), chain[2].clone()], T0 + 61 * DAY_MS).is_err());
        assert!(verify_chain(&k1.public_key(), &chain, T0 + 61 * DAY_MS).is_err());
    }

    #[test]
    fn rotation_after_the_old_key_expired_is_refused() {
        let p = Policy::default();
        let root = FileSigner::from_seed(&[1; 32]);
        let k1 = FileSigner::from_seed(&[2; 32]);
        let k2 = FileSigner::from_seed(&[3; 32]);
        let c0 = issue(&root, k1.public_key(), 0, T0, &p).expect("c0");
        let c1 = issue(&k1, k2.public_key(), 1, T0 + p.validity_ms + 1, &p).expect("c1");
        assert!(verify_chain(&root.public_key(), &[c0.bytes, c1.bytes], T0 + p.validity_ms + 2).is_err());
    }

    #[test]
    fn forked_chains_are_detected() {
        let p = Policy::default();
        let root = FileSigner::from_seed(&[1; 32]);
        let a = issue(&root, FileSigner::from_seed(&[2; 32]).public_key(), 0, T0, &p).expect("a");
        let b = issue(&root, FileSigner::from_seed(&[3; 32]).public_key(), 0, T0, &p).expect("b");
        assert!(matches!(
            check_no_fork(std::slice::from_ref(&a.cert), &[b.cert]),
            Err(vain_schema::Error::RotationFork { sequence: 0 })
        ));
        assert!(check_no_fork(std::slice::from_ref(&a.cert), std::slice::from_ref(&a.cert)).is_ok());
    }

    #[test]
    fn forged_certificate_signature_is_refused() {
        let p = Policy::default();
        let root = FileSigner::from_seed(&[1; 32]);
        let mut c = issue(&root, FileSigner::from_seed(&[2; 32]).public_key(), 0, T0, &p).expect("c").bytes;
        let n = c.len();
        c[n - 10] ^= 1; // somewhere in the body or signature
        assert!(verify_chain(&root.public_key(), &[c], T0).is_err());
    }

    #[test]
    fn status_warns_before_expiry() {
        let p = Policy::default();
        let cert = RotationCertificate {
            sequence: 0,
            old_key: [1; 32],
            new_key: [2; 32],
            not_before_ms: T0,
            not_after_ms: T0 + p.validity_ms,
        };
        let end = T0 + p.validity_ms;
        assert_eq!(status(T0, Some(&cert), T0 + DAY_MS, &p), Status::Valid { expires_at_ms: end });
        assert_eq!(status(T0, Some(&cert), end - 13 * DAY_MS, &p), Status::ExpiringSoon { expires_at_ms: end });
        assert_eq!(status(T0, Some(&cert), end + 1, &p), Status::Expired { expired_at_ms: end });
        assert_eq!(status(T0, None, end + 1, &p), Status::RotationOverdue { due_at_ms: end });
    }
}
