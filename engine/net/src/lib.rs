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
    /// The config file is not valid TOML for the settings (unknown key, wrong type).
    #[error("config: {0}")]
    Toml(#[from] toml::de::Error),
    /// The config file could not be read.
    #[error("{path}: {source}")]
    ReadConfig {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range or malformed.
    #[error("config: {field} = {value}: {expected}")]
    Setting {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// An address is not a multiaddr.
    #[error("address {addr:?}: {source}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: Box<libp2p::multiaddr::Error>,
    },
    /// A key is not a valid Ed25519 key.
    #[error("key: {0}")]
    Key(#[from] libp2p::identity::DecodingError),
    /// The libp2p transport or behaviour could not be built.
    #[error("transport: {0}")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening on an address failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: Box<libp2p::TransportError<std::io::Error>>,
    },
    /// Dialling failed at once (no address, banned, …).
    #[error("dial: {0}")]
    Dial(#[source] Box<libp2p::swarm::DialError>),
    /// Socket or file I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The node stopped before answering.
    #[error("the node is not running")]
    Stopped,
    /// The local DHT store refused a record or provider entry.
    #[error("DHT store: {0}")]
    Store(#[from] libp2p::kad::store::Error),
    /// A DHT lookup failed.
    #[error("lookup {key}: {source}")]
    Lookup {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: Box<libp2p::kad::GetRecordError>,
    },
    /// A DHT lookup ended without a valid record.
    #[error("lookup {key}: no valid record found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Nothing answers on a control socket.
    #[error("no node answers at {path}: {source}")]
    Socket {
        /// The socket.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A control-socket answer is not JSON.
    #[error("the node's answer: {0}")]
    Answer(#[from] serde_json::Error),
    /// The node behind a control socket refused the request, with its message.
    #[error("the node refused: {message}")]
    Refused {
        /// What the node said.
        message: String,
    },
    /// A request on the round protocol got no answer (unreachable peer, timeout, refused).
    #[error("request to {peer}: {source}")]
    Request {
        /// The peer asked.
        peer: String,
        /// What went wrong.
        #[source]
        source: Box<libp2p::request_response::OutboundFailure>,
    },
}
