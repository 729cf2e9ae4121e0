//! The control plane: how nodes find each other with no central authority.
//!
//! A [`node::Node`] is a libp2p swarm (TCP + noise + yamux; the memory transport in tests) whose
//! PeerId is its Ed25519 signing key, composed of Kademlia (our protocol id, signed records
//! validated before they are stored or served), identify, mDNS, and three request-response
//! protocols of ours: heartbeats, peer exchange and announcement relay. Beside the swarm it runs
//! a signed UDP broadcast beacon. A fourth protocol, `/vain/round/1.0.0`, carries opaque
//! request-response messages for the round protocol, which the node's owner serves
//! ([`node::spawn_serving`]). Everything a peer sends is size-limited, rate-limited and
//! verified before use; counters of what was refused are in [`node::Status`].
//! docs/architecture.md ("Control plane") and docs/protocol.md §9 describe the design and the
//! wire formats.

pub mod beacon;
pub mod codec;
pub mod config;
pub mod control;
pub mod keys;
pub mod node;
pub mod records;
pub mod scale;

pub use config::Config;
pub use libp2p::{Multiaddr, PeerId};

use thiserror::Error;

/// Why the control plane could not start or answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A key could not be used.
    #[error("key: {0}")]
    Key(String),
    /// The transport or a listener failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Socket or file I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The node stopped before answering.
    #[error("the node is not running")]
    Stopped,
    /// A DHT query failed.
    #[error("query: {0}")]
    Query(String),
    /// A request on the round protocol got no answer (unreachable peer, timeout, refused).
    #[error("request to {peer}: {why}")]
    Request {
        /// The peer asked.
        peer: String,
        /// What went wrong.
        why: String,
    },
}
