//! What the DHT holds, and the check every record passes before it is stored or served.
//!
//! Key namespaces (raw bytes; `vain dht get` takes the text forms):
//! * `/vain/node/` ‖ node id (32 bytes) — value: the node's `SignedAnnouncement`.
//! * `/vain/agg/` ‖ BLAKE3(model id) — provider records only: the aggregators serving a model.
//! * `/vain/ckpt/` ‖ BLAKE3 digest of a checkpoint — provider records only: who holds it.
//!
//! Kademlia keeps one value per key, so the directories that list several nodes are provider
//! records, which libp2p ties to the authenticated peer that sent them.

use libp2p::kad::RecordKey;
use std::fmt;
use vain_schema::Limits;
use vain_schema::node::{Announcement, MAX_CLOCK_SKEW_MS};

const NODE: &[u8] = b"/vain/node/";
const AGG: &[u8] = b"/vain/agg/";
const CKPT: &[u8] = b"/vain/ckpt/";

/// A key in one of our namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A node's announcement, by node id.
    Node([u8; 32]),
    /// The aggregators of a model, by BLAKE3 of its id.
    Aggregators([u8; 32]),
    /// The holders of a checkpoint, by its BLAKE3 digest.
    Checkpoint([u8; 32]),
}

impl Key {
    /// The aggregator directory of `model_id`.
    pub fn aggregators(model_id: &str) -> Self {
        Key::Aggregators(*blake3::hash(model_id.as_bytes()).as_bytes())
    }

    /// The DHT key bytes.
    pub fn record_key(&self) -> RecordKey {
        let (ns, id) = match self {
            Key::Node(k) => (NODE, k),
            Key::Aggregators(k) => (AGG, k),
            Key::Checkpoint(k) => (CKPT, k),
        };
        RecordKey::new(&[ns, id.as_slice()].concat())
    }

    /// Parses DHT key bytes.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let id = |ns: &[u8]| -> Option<[u8; 32]> { bytes.strip_prefix(ns)?.try_into().ok() };
        id(NODE).map(Key::Node).or_else(|| id(AGG).map(Key::Aggregators)).or_else(|| id(CKPT).map(Key::Checkpoint))
    }

    /// Parses the text form: `node/<64 hex>`, `agg/<model id>`, `ckpt/<64 hex>`.
    pub fn parse_text(s: &str) -> Result<Self, BadKey> {
        let hex32 =
            |h: &str| <[u8; 32] as hex::FromHex>::from_hex(h).map_err(|_| BadKey::NotHex { text: h.to_string() });
        match s.split_once('/') {
            Some(("node", h)) => Ok(Key::Node(hex32(h)?)),
            Some(("agg", model)) if !model.is_empty() => Ok(Key::aggregators(model)),
            Some(("ckpt", h)) => Ok(Key::Checkpoint(hex32(h)?)),
            _ => Err(BadKey::Form { text: s.to_string() }),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ns, id) = match self {
            Key::Node(k) => ("node", k),
            Key::Aggregators(k) => ("agg", k),
            Key::Checkpoint(k) => ("ckpt", k),
        };
        write!(f, "{ns}/{}", hex::encode(id))
    }
}

/// Why the text form of a key does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    /// Not `node/…`, `agg/…` or `ckpt/…`.
    #[error("{text:?}: expected node/<hex>, agg/<model id> or ckpt/<hex>")]
    Form {
        /// The text given.
        text: String,
    },
    /// The id of a `node/` or `ckpt/` key is not 64 hex digits.
    #[error("{text:?} is not 64 hex digits")]
    NotHex {
        /// The id given.
        text: String,
    },
}

/// Why a record was refused. Each variant is one counter.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The key is in none of our namespaces.
    Namespace,
    /// The value is over the size limit.
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value was put under a provider-only namespace.
    ProviderOnly,
    /// The announcement does not decode or its signature or rotation chain fails.
    Announcement(String),
    /// The announcement is for another node than its key says.
    WrongNode,
    /// Signed more than the allowed clock skew in the future.
    FromTheFuture,
    /// Older than the record lifetime.
    Expired,
    /// Older than the announcement already held for that node.
    Stale,
}

impl Invalid {
    /// The counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Namespace => "namespace",
            Invalid::TooLarge { .. } => "too large",
            Invalid::ProviderOnly => "provider-only key",
            Invalid::Announcement(_) => "bad announcement",
            Invalid::WrongNode => "wrong node",
            Invalid::FromTheFuture => "from the future",
            Invalid::Expired => "expired",
            Invalid::Stale => "stale",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::TooLarge { len, max } => write!(f, "record of {len} bytes, limit {max}"),
            Invalid::Announcement(e) => write!(f, "announcement: {e}"),
            other => f.write_str(other.reason()),
        }
    }
}

/// Checks a record's value for `key` at `now_ms`: the announcement must open (structure,
/// rotation chain, signature), be for the node the key names, and be neither from the future
/// nor older than `max_age_ms`.
pub fn check(
    key: &[u8],
    value: &[u8],
    now_ms: u64,
    max_bytes: usize,
    max_age_ms: u64,
) -> Result<Announcement, Invalid> {
    if value.len() > max_bytes {
        return Err(Invalid::TooLarge { len: value.len(), max: max_bytes });
    }
    match Key::parse(key) {
        None => Err(Invalid::Namespace),
        Some(Key::Aggregators(_) | Key::Checkpoint(_)) => Err(Invalid::ProviderOnly),
        Some(Key::Node(id)) => {
            let a = check_announcement(value, now_ms, max_age_ms)?;
            if a.node_id != id {
                return Err(Invalid::WrongNode);
            }
            Ok(a)
        }
    }
}

/// Opens a `SignedAnnouncement` and checks its age at `now_ms`.
pub fn check_announcement(bytes: &[u8], now_ms: u64, max_age_ms: u64) -> Result<Announcement, Invalid> {
    let a = Announcement::open(bytes, &Limits::default(), now_ms).map_err(|e| Invalid::Announcement(e.to_string()))?;
    if a.timestamp_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(Invalid::FromTheFuture);
    }
    if now_ms.saturating_sub(a.timestamp_ms) > max_age_ms {
        return Err(Invalid::Expired);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_bytes_and_text() {
        for k in [Key::Node([1; 32]), Key::aggregators("mnist-cnn"), Key::Checkpoint([0xab; 32])] {
            assert_eq!(Key::parse(&k.record_key().to_vec()), Some(k));
            if !matches!(k, Key::Aggregators(_)) {
                assert_eq!(Key::parse_text(&k.to_string()), Ok(k));
            }
        }
        assert_eq!(Key::parse_text("agg/mnist-cnn"), Ok(Key::aggregators("mnist-cnn")));
        assert!(Key::parse_text("node/12").is_err() && Key::parse_text("x/y").is_err());
        // Found by the control_plane fuzz target: 64 bytes that are not 64 characters used to
        // panic on a slice through a multi-byte character.
        let crash = String::from_utf8_lossy(b"node/\x00\x81\x00\x00\x00\x00\x00\x00\x00\x88\x88\x88\x88\x88\x88\xff\x88\x88\x88\x88\xb2\xff\xff\xf2vAInBCN\x01");
        assert!(Key::parse_text(&crash).is_err());
        let h = format!("{}é", "a".repeat(62));
        assert_eq!(h.len(), 64);
        assert!(Key::parse_text(&format!("node/{h}")).is_err());
        assert!(Key::parse_text(&format!("ckpt/{}", "G".repeat(64))).is_err());
        assert_eq!(Key::parse_text(&format!("ckpt/{}", "aB".repeat(32))), Ok(Key::Checkpoint([0xab; 32])));
        assert_eq!(Key::parse(b"/vain/node/short"), None);
    }

    #[test]
    fn values_under_provider_keys_and_foreign_namespaces_are_refused() {
        let v = vec![1u8; 10];
        assert_eq!(check(&Key::aggregators("m").record_key().to_vec(), &v, 0, 100, 1), Err(Invalid::ProviderOnly));
        assert_eq!(check(b"/ipfs/x", &v, 0, 100, 1), Err(Invalid::Namespace));
        assert_eq!(check(b"/ipfs/x", &[0; 200], 0, 100, 1), Err(Invalid::TooLarge { len: 200, max: 100 }));
        let bad = check(&Key::Node([1; 32]).record_key().to_vec(), &v, 0, 100, 1);
        assert!(matches!(bad, Err(Invalid::Announcement(_))), "{bad:?}");
    }
}
