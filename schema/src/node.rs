//! Node-level messages: rotation certificates, announcements and heartbeats.
//!
//! Each travels as a `Signed*` table whose `body` holds the exact signed bytes of the inner table
//! (see [`crate::sign`]). Decoding verifies structure, meaning and signatures and returns owned
//! values: these messages are small and cross the control plane, not the hot path.

use crate::sign::{self, SigningInput};
use crate::{Error, FORMAT_VERSION, Limits, PublicKey, Signature, verified_root, wire};

/// Clock skew tolerated when checking that a certificate's window has started.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Role bits of an announcement.
pub mod roles {
    /// Trains and sends updates.
    pub const CLIENT: u8 = 1;
    /// Receives and aggregates updates.
    pub const AGGREGATOR: u8 = 2;
    /// Audits and votes.
    pub const VALIDATOR: u8 = 4;
    /// Every defined bit.
    pub const ALL: u8 = CLIENT | AGGREGATOR | VALIDATOR;

    const NAMES: [(u8, &str); 3] = [(CLIENT, "client"), (AGGREGATOR, "aggregator"), (VALIDATOR, "validator")];

    /// The bit of a role named in a config file or on the command line (surrounding spaces
    /// ignored); `None` for an unknown name.
    pub fn parse(name: &str) -> Option<u8> {
        NAMES.iter().find(|(_, n)| *n == name.trim()).map(|(b, _)| *b)
    }

    /// The names of the roles in `bits`, in bit order.
    pub fn names(bits: u8) -> Vec<&'static str> {
        NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
    }

    /// The names every role can be given by, for error messages.
    pub const KNOWN: &str = "client, aggregator, validator";

    #[cfg(test)]
    mod tests {
        #[test]
        fn names_and_bits_round_trip() {
            assert_eq!(super::parse(" aggregator "), Some(super::AGGREGATOR));
            assert_eq!(super::parse("miner"), None);
            assert_eq!(super::names(super::ALL), ["client", "aggregator", "validator"]);
            assert!(super::names(0).is_empty());
        }
    }
}

/// `old_key` hands over to `new_key` for the window `[not_before_ms, not_after_ms]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationCertificate {
    /// Position in the chain (0 = signed by the root key).
    pub sequence: u32,
    /// The key being replaced; it signs the certificate.
    pub old_key: PublicKey,
    /// The successor key.
    pub new_key: PublicKey,
    /// Start of the new key's validity, Unix ms.
    pub not_before_ms: u64,
    /// End of the new key's validity, Unix ms.
    pub not_after_ms: u64,
}

/// A rotation certificate with its signature and the exact bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRotation {
    /// The certificate.
    pub cert: RotationCertificate,
    /// `SignedRotationCertificate` bytes as carried.
    pub bytes: Vec<u8>,
}

impl RotationCertificate {
    /// Serialises the certificate body (what `old_key` signs).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(160);
        let old_key = wire::PublicKey::new(&self.old_key);
        let new_key = wire::PublicKey::new(&self.new_key);
        let c = wire::RotationCertificate::create(
            &mut b,
            &wire::RotationCertificateArgs {
                format_version: FORMAT_VERSION,
                sequence: self.sequence,
                old_key: Some(&old_key),
                new_key: Some(&new_key),
                not_before_ms: self.not_before_ms,
                not_after_ms: self.not_after_ms,
            },
        );
        b.finish_minimal(c);
        b.finished_data().to_vec()
    }

    /// Input to the old key's signature over `body` (from [`encode`](Self::encode)).
    pub fn signing_input(body: &[u8]) -> SigningInput {
        SigningInput::new(sign::ROTATION_CERTIFICATE, body)
    }

    /// Wraps a body and its signature into `SignedRotationCertificate` bytes.
    pub fn wrap(body: &[u8], signature: &Signature) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(body.len() + 128);
        let body = b.create_vector(body);
        let sig = wire::Signature::new(signature);
        let s = wire::SignedRotationCertificate::create(
            &mut b,
            &wire::SignedRotationCertificateArgs { body: Some(body), signature: Some(&sig) },
        );
        b.finish_minimal(s);
        b.finished_data().to_vec()
    }

    /// Decodes `SignedRotationCertificate` bytes and verifies the old key's signature.
    pub fn open(bytes: &[u8], limits: &Limits) -> Result<SignedRotation, Error> {
        let (body, sig) =
            open_signed::<wire::SignedRotationCertificate>(bytes, limits, "SignedRotationCertificate", |s| {
                (s.body().bytes(), s.signature().0)
            })?;
        let c = verified_root::<wire::RotationCertificate>(body, limits, "RotationCertificate")?;
        check_version("RotationCertificate", c.format_version())?;
        let cert = RotationCertificate {
            sequence: c.sequence(),
            old_key: c.old_key().0,
            new_key: c.new_key().0,
            not_before_ms: c.not_before_ms(),
            not_after_ms: c.not_after_ms(),
        };
        if cert.not_before_ms >= cert.not_after_ms {
            return Err(Error::invalid("not_after_ms", "window is empty"));
        }
        if cert.old_key == cert.new_key {
            return Err(Error::invalid("new_key", "equals old_key"));
        }
        sign::verifying_key(&cert.new_key, "new_key")?;
        sign::verify(sign::ROTATION_CERTIFICATE, body, &cert.old_key, &sig, "RotationCertificate")?;
        Ok(SignedRotation { cert, bytes: bytes.to_vec() })
    }
}

/// Checks that `chain` (signatures already verified by [`RotationCertificate::open`]) leads from
/// `root` to the key it returns, and that the last key is valid at `now_ms`.
///
/// Rules: certificates are numbered 0, 1, …; each is signed by the previous certificate's new key
/// (the first by the root); each window starts inside the previous one; no key appears twice.
pub fn verify_chain(
    root: &PublicKey,
    chain: &[RotationCertificate],
    now_ms: u64,
    limits: &Limits,
) -> Result<PublicKey, Error> {
    if chain.len() > limits.max_chain_len {
        return Err(Error::TooLarge {
            what: "rotation chain",
            len: chain.len() as u64,
            max: limits.max_chain_len as u64,
        });
    }
    let mut current = *root;
    let mut seen = vec![*root];
    let mut prev: Option<&RotationCertificate> = None;
    for (i, c) in chain.iter().enumerate() {
        let field = |f: &str| format!("rotation_chain[{i}].{f}");
        if c.sequence as usize != i {
            return Err(Error::invalid(field("sequence"), format!("{} at position {i}", c.sequence)));
        }
        if c.old_key != current {
            return Err(Error::invalid(field("old_key"), "is not the previous certificate's new key"));
        }
        if let Some(p) = prev
            && (c.not_before_ms < p.not_before_ms || c.not_before_ms > p.not_after_ms)
        {
            return Err(Error::invalid(field("not_before_ms"), "rotation happened outside the old key's window"));
        }
        if seen.contains(&c.new_key) {
            return Err(Error::invalid(field("new_key"), "key reused in the chain"));
        }
        seen.push(c.new_key);
        current = c.new_key;
        prev = Some(c);
    }
    if let Some(last) = chain.last() {
        if now_ms.saturating_add(MAX_CLOCK_SKEW_MS) < last.not_before_ms {
            return Err(Error::RotationNotYetValid {
                sequence: last.sequence,
                not_before_ms: last.not_before_ms,
                now_ms,
            });
        }
        if now_ms > last.not_after_ms {
            return Err(Error::RotationExpired { not_after_ms: last.not_after_ms, now_ms });
        }
    }
    Ok(current)
}

/// Fails with [`Error::RotationFork`] when two chains from the same root disagree at some position;
/// a chain that extends the other is fine.
pub fn check_no_fork(a: &[RotationCertificate], b: &[RotationCertificate]) -> Result<(), Error> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Err(Error::RotationFork { sequence: i as u32 }),
        None => Ok(()),
    }
}

/// A GPU a node claims to have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gpu {
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub model: String,
    /// Device memory in bytes.
    pub memory_bytes: u64,
    /// Device memory bandwidth in bytes per second.
    pub memory_bandwidth: u64,
}

/// Resources a node claims (verified later by challenges, never trusted as such).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU cores.
    pub cpu_cores: u32,
    /// Host memory in bytes.
    pub memory_bytes: u64,
    /// Network bandwidth in bits per second.
    pub network_bandwidth: u64,
    /// GPUs.
    pub gpus: Vec<Gpu>,
}

/// A node's signed self-description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Stable identity: the root key.
    pub node_id: PublicKey,
    /// Current key; signs the announcement.
    pub signing_key: PublicKey,
    /// `SignedRotationCertificate` bytes from `node_id` to `signing_key`.
    pub rotation_chain: Vec<Vec<u8>>,
    /// Multiaddr strings.
    pub addresses: Vec<String>,
    /// Bits from [`roles`].
    pub roles: u8,
    /// Claimed resources.
    pub resources: Resources,
    /// X25519 key for HPKE to this node.
    pub x25519_key: [u8; 32],
    /// Signing time, Unix ms.
    pub timestamp_ms: u64,
    /// QUIC ingest endpoints (`ip:port`); the TLS handshake there presents `signing_key`.
    pub ingest: Vec<String>,
    /// Region tag, empty when none.
    pub region: String,
}

impl Announcement {
    /// Serialises the body (what `signing_key` signs).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(512);
        let chain: Vec<_> = self
            .rotation_chain
            .iter()
            .map(|c| {
                // The certificate is embedded as its own table: re-encode from the carried bytes.
                let root = flatbuffers::root::<wire::SignedRotationCertificate>(c).ok();
                let (body, sig) = match root {
                    Some(r) => (r.body().bytes().to_vec(), r.signature().0),
                    None => (Vec::new(), [0u8; 64]),
                };
                let body = b.create_vector(&body);
                let sig = wire::Signature::new(&sig);
                wire::SignedRotationCertificate::create(
                    &mut b,
                    &wire::SignedRotationCertificateArgs { body: Some(body), signature: Some(&sig) },
                )
            })
            .collect();
        let chain = b.create_vector(&chain);
        let addrs: Vec<_> = self.addresses.iter().map(|a| b.create_string(a)).collect();
        let addrs = b.create_vector(&addrs);
        let gpus: Vec<_> = self
            .resources
            .gpus
            .iter()
            .map(|g| {
                let model = b.create_string(&g.model);
                wire::GpuResource::create(
                    &mut b,
                    &wire::GpuResourceArgs {
                        model: Some(model),
                        memory_bytes: g.memory_bytes,
                        memory_bandwidth: g.memory_bandwidth,
                    },
                )
            })
            .collect();
        let gpus = b.create_vector(&gpus);
        let res = wire::Resources::create(
            &mut b,
            &wire::ResourcesArgs {
                cpu_cores: self.resources.cpu_cores,
                memory_bytes: self.resources.memory_bytes,
                network_bandwidth: self.resources.network_bandwidth,
                gpus: Some(gpus),
            },
        );
        let node_id = wire::PublicKey::new(&self.node_id);
        let signing_key = wire::PublicKey::new(&self.signing_key);
        let x = wire::X25519Key::new(&self.x25519_key);
        // Absent rather than empty, so an announcement without them keeps its v1 bytes.
        let ingest = if self.ingest.is_empty() {
            None
        } else {
            let v: Vec<_> = self.ingest.iter().map(|a| b.create_string(a)).collect();
            Some(b.create_vector(&v))
        };
        let region = if self.region.is_empty() { None } else { Some(b.create_string(&self.region)) };
        let a = wire::Announcement::create(
            &mut b,
            &wire::AnnouncementArgs {
                format_version: FORMAT_VERSION,
                node_id: Some(&node_id),
                signing_key: Some(&signing_key),
                rotation_chain: Some(chain),
                addresses: Some(addrs),
                roles: self.roles,
                resources: Some(res),
                x25519_key: Some(&x),
                timestamp_ms: self.timestamp_ms,
                ingest,
                region,
            },
        );
        b.finish_minimal(a);
        b.finished_data().to_vec()
    }

    /// Input to the signing key's signature over `body`.
    pub fn signing_input(body: &[u8]) -> SigningInput {
        SigningInput::new(sign::ANNOUNCEMENT, body)
    }

    /// Wraps a body and its signature into `SignedAnnouncement` bytes.
    pub fn wrap(body: &[u8], signature: &Signature) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(body.len() + 128);
        let body = b.create_vector(body);
        let sig = wire::Signature::new(signature);
        let s = wire::SignedAnnouncement::create(
            &mut b,
            &wire::SignedAnnouncementArgs { body: Some(body), signature: Some(&sig) },
        );
        b.finish_minimal(s);
        b.finished_data().to_vec()
    }

    /// Decodes `SignedAnnouncement` bytes: structure, limits, rotation chain from `node_id` to
    /// `signing_key` valid at `now_ms`, and the signature.
    pub fn open(bytes: &[u8], limits: &Limits, now_ms: u64) -> Result<Self, Error> {
        let (body, sig) = open_signed::<wire::SignedAnnouncement>(bytes, limits, "SignedAnnouncement", |s| {
            (s.body().bytes(), s.signature().0)
        })?;
        let a = verified_root::<wire::Announcement>(body, limits, "Announcement")?;
        check_version("Announcement", a.format_version())?;
        if a.roles() & !roles::ALL != 0 {
            return Err(Error::UnknownEnum { field: "roles".into(), value: u64::from(a.roles()) });
        }
        let addresses: Vec<String> = match a.addresses() {
            None => Vec::new(),
            Some(v) => {
                if v.len() > limits.max_addresses {
                    return Err(Error::TooLarge {
                        what: "addresses",
                        len: v.len() as u64,
                        max: limits.max_addresses as u64,
                    });
                }
                let mut out = Vec::with_capacity(v.len());
                for (i, s) in v.iter().enumerate() {
                    crate::delta::check_name(&format!("addresses[{i}]"), s, limits)?;
                    out.push(s.to_owned());
                }
                out
            }
        };
        let ingest: Vec<String> = match a.ingest() {
            None => Vec::new(),
            Some(v) => {
                if v.len() > limits.max_addresses {
                    return Err(Error::TooLarge {
                        what: "ingest",
                        len: v.len() as u64,
                        max: limits.max_addresses as u64,
                    });
                }
                let mut out = Vec::with_capacity(v.len());
                for (i, s) in v.iter().enumerate() {
                    crate::delta::check_name(&format!("ingest[{i}]"), s, limits)?;
                    out.push(s.to_owned());
                }
                out
            }
        };
        let region = match a.region() {
            None => String::new(),
            Some(r) => {
                crate::delta::check_name("region", r, limits)?;
                r.to_owned()
            }
        };
        let resources = match a.resources() {
            None => Resources::default(),
            Some(r) => {
                let gpus = match r.gpus() {
                    None => Vec::new(),
                    Some(g) => {
                        if g.len() > limits.max_gpus {
                            return Err(Error::TooLarge {
                                what: "resources.gpus",
                                len: g.len() as u64,
                                max: limits.max_gpus as u64,
                            });
                        }
                        let mut out = Vec::with_capacity(g.len());
                        for (i, x) in g.iter().enumerate() {
                            crate::delta::check_name(&format!("resources.gpus[{i}].model"), x.model(), limits)?;
                            out.push(Gpu {
                                model: x.model().to_owned(),
                                memory_bytes: x.memory_bytes(),
                                memory_bandwidth: x.memory_bandwidth(),
                            });
                        }
                        out
                    }
                };
                Resources {
                    cpu_cores: r.cpu_cores(),
                    memory_bytes: r.memory_bytes(),
                    network_bandwidth: r.network_bandwidth(),
                    gpus,
                }
            }
        };
        let node_id = a.node_id().0;
        let signing_key = a.signing_key().0;
        let mut certs = Vec::new();
        let mut chain_bytes = Vec::new();
        if let Some(chain) = a.rotation_chain() {
            if chain.len() > limits.max_chain_len {
                return Err(Error::TooLarge {
                    what: "rotation chain",
                    len: chain.len() as u64,
                    max: limits.max_chain_len as u64,
                });
            }
            for c in chain.iter() {
                let bytes = RotationCertificate::wrap(c.body().bytes(), &c.signature().0);
                let signed = RotationCertificate::open(&bytes, limits)?;
                certs.push(signed.cert);
                chain_bytes.push(signed.bytes);
            }
        }
        let current = verify_chain(&node_id, &certs, now_ms, limits)?;
        if current != signing_key {
            return Err(Error::invalid("signing_key", "is not the last key of the rotation chain"));
        }
        sign::verify(sign::ANNOUNCEMENT, body, &signing_key, &sig, "Announcement")?;
        Ok(Announcement {
            node_id,
            signing_key,
            rotation_chain: chain_bytes,
            addresses,
            roles: a.roles(),
            resources,
            x25519_key: a.x25519_key().0,
            timestamp_ms: a.timestamp_ms(),
            ingest,
            region,
        })
    }
}

/// A liveness message between connected peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Stable identity of the sender.
    pub node_id: PublicKey,
    /// Current key of the sender; signs the heartbeat. The receiver checks it against the key it
    /// learnt from the sender's announcement.
    pub signing_key: PublicKey,
    /// Increases by one per heartbeat.
    pub sequence: u64,
    /// Sender's clock, Unix ms.
    pub timestamp_ms: u64,
    /// Round in progress, 0 if none.
    pub round: u64,
}

impl Heartbeat {
    /// Encodes and signs with `sign`, which receives the signing input.
    pub fn encode_signed<E>(&self, sign: impl FnOnce(&[u8]) -> Result<Signature, E>) -> Result<Vec<u8>, E> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(128);
        let node_id = wire::PublicKey::new(&self.node_id);
        let signing_key = wire::PublicKey::new(&self.signing_key);
        let h = wire::Heartbeat::create(
            &mut b,
            &wire::HeartbeatArgs {
                format_version: FORMAT_VERSION,
                node_id: Some(&node_id),
                signing_key: Some(&signing_key),
                sequence: self.sequence,
                timestamp_ms: self.timestamp_ms,
                round: self.round,
            },
        );
        b.finish_minimal(h);
        let body = b.finished_data().to_vec();
        let sig = sign(SigningInput::new(sign::HEARTBEAT, &body).as_bytes())?;
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(body.len() + 128);
        let body = b.create_vector(&body);
        let sig = wire::Signature::new(&sig);
        let s = wire::SignedHeartbeat::create(
            &mut b,
            &wire::SignedHeartbeatArgs { body: Some(body), signature: Some(&sig) },
        );
        b.finish_minimal(s);
        Ok(b.finished_data().to_vec())
    }

    /// Decodes `SignedHeartbeat` bytes and verifies the signature by `signing_key`.
    pub fn open(bytes: &[u8], limits: &Limits) -> Result<Self, Error> {
        let (body, sig) = open_signed::<wire::SignedHeartbeat>(bytes, limits, "SignedHeartbeat", |s| {
            (s.body().bytes(), s.signature().0)
        })?;
        let h = verified_root::<wire::Heartbeat>(body, limits, "Heartbeat")?;
        check_version("Heartbeat", h.format_version())?;
        let hb = Heartbeat {
            node_id: h.node_id().0,
            signing_key: h.signing_key().0,
            sequence: h.sequence(),
            timestamp_ms: h.timestamp_ms(),
            round: h.round(),
        };
        sign::verify(sign::HEARTBEAT, body, &hb.signing_key, &sig, "Heartbeat")?;
        Ok(hb)
    }
}

fn check_version(what: &'static str, found: u16) -> Result<(), Error> {
    if found != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion { what, found, expected: FORMAT_VERSION });
    }
    Ok(())
}

fn open_signed<'a, T>(
    bytes: &'a [u8],
    limits: &Limits,
    what: &'static str,
    parts: impl FnOnce(T::Inner) -> (&'a [u8], Signature),
) -> Result<(&'a [u8], Signature), Error>
where
    T: flatbuffers::Follow<'a> + flatbuffers::Verifiable + 'a,
{
    if bytes.len() > limits.max_header_bytes {
        return Err(Error::TooLarge { what, len: bytes.len() as u64, max: limits.max_header_bytes as u64 });
    }
    Ok(parts(verified_root::<T>(bytes, limits, what)?))
}
