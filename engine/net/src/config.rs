//! `node.toml`: what a node runs with. Every field has a default, so an empty file is a valid
//! client node listening on a random TCP port with no bootstrap peers (LAN discovery only).
//! Intervals are in seconds.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vain_schema::node::roles;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `client`, `aggregator`, `validator`.
    pub roles: Vec<String>,
    /// Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Vec<String>,
    /// Multiaddrs of bootstrap peers, each ending in `/p2p/<PeerId>`.
    pub bootstrap: Vec<String>,
    /// Where the node keeps its identity and control socket.
    pub data_dir: PathBuf,
    /// The tier this node assumes until its owner hands it the ledger's tiers
    /// ([`crate::node::Handle::set_tiers`]); from then on its own tier is the ledger's. Nodes at
    /// or above `relay.min_tier` relay announcements. Not read from files: a tier is earned,
    /// never configured.
    #[serde(skip)]
    pub tier: u8,
    /// Models this node aggregates (aggregators provide `agg/<model>` in the DHT) or trains.
    pub models: Vec<String>,
    /// QUIC ingest endpoints (`ip:port`) to announce; an aggregator's node fills them in from
    /// the address its ingest server bound.
    pub ingest: Vec<String>,
    /// Region tag announced (e.g. `eu-west`): shown with the node in every peer's `vain peers`
    /// and API peer list. A client whose round's aggregator announces another region asks the
    /// aggregators and validators of its own region for the base checkpoint first (the model
    /// then crosses regions once, to the standby there, rather than once per client); the
    /// update itself goes to the round's leader wherever it is.
    pub region: String,
    /// CPU cores to announce; 0 (the default) announces what the OS reports. Validators
    /// challenge the claim: a node announcing more cores than it has fails its challenges.
    pub cpu_cores: u32,
    /// Kademlia.
    pub dht: Dht,
    /// mDNS.
    pub mdns: Mdns,
    /// The UDP broadcast beacon.
    pub beacon: Beacon,
    /// Heartbeats, probes and stale cleanup.
    pub liveness: Liveness,
    /// Peer exchange.
    pub pex: Pex,
    /// Relay of announcements by high-tier nodes.
    pub relay: Relay,
    /// Connection limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            roles: vec!["client".into()],
            listen: vec!["/ip4/0.0.0.0/tcp/0".into()],
            bootstrap: Vec::new(),
            data_dir: PathBuf::from(".vain"),
            tier: 0,
            models: Vec::new(),
            ingest: Vec::new(),
            region: String::new(),
            cpu_cores: 0,
            dht: Dht::default(),
            mdns: Mdns::default(),
            beacon: Beacon::default(),
            liveness: Liveness::default(),
            pex: Pex::default(),
            relay: Relay::default(),
            limits: Limits::default(),
        }
    }
}

/// Kademlia settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dht {
    /// Protocol id; `/vain/kad/1.0.0` keeps our DHT apart from IPFS's (docs/interop.md).
    pub protocol: String,
    /// Copies of each record (k).
    pub replication_factor: usize,
    /// Record lifetime; also the oldest announcement accepted.
    pub record_ttl: f64,
    /// How often a node re-signs and re-puts its own announcement.
    pub republish_interval: f64,
    /// How often stored records are re-replicated to the closest peers.
    pub replication_interval: f64,
    /// Largest record value accepted.
    pub max_record_bytes: usize,
    /// Records stored at most.
    pub max_records: usize,
    /// Routing-table entries per /24 (IPv4) or /48 (IPv6) prefix, against eclipse attempts.
    pub max_per_prefix: usize,
    /// Lowest ledger tier (see [`crate::node::Handle::set_tiers`]) whose `agg/` provider records
    /// this node stores; 0 takes any node announcing the aggregator role.
    pub aggregate_from: u8,
    /// While the routing table holds fewer than `replication_factor` peers, run a Kademlia
    /// bootstrap this often (Kademlia's own periodic one is every 5 minutes).
    pub bootstrap_interval: f64,
    /// A lookup, put or bootstrap that has not finished after this many seconds ends with a
    /// timeout (what it found so far is kept).
    pub query_timeout: f64,
}

impl Default for Dht {
    fn default() -> Self {
        Self {
            protocol: "/vain/kad/1.0.0".into(),
            replication_factor: 20,
            record_ttl: 48.0 * 3600.0,
            republish_interval: 3600.0,
            replication_interval: 3600.0,
            max_record_bytes: 16 << 10,
            max_records: 4096,
            max_per_prefix: 8,
            aggregate_from: 0,
            bootstrap_interval: 5.0,
            query_timeout: 30.0,
        }
    }
}

/// mDNS settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mdns {
    /// Run mDNS.
    pub enabled: bool,
}

impl Default for Mdns {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Beacon settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Beacon {
    /// Send and listen.
    pub enabled: bool,
    /// UDP port (the same on every node of the LAN).
    pub port: u16,
    /// Where to send: the subnet broadcast address, or 255.255.255.255.
    pub broadcast: String,
    /// Seconds between beacons.
    pub interval: f64,
    /// Beacons accepted per source address per second (the rest are dropped unread).
    pub per_source_rate: f64,
}

impl Default for Beacon {
    fn default() -> Self {
        Self { enabled: true, port: 47_474, broadcast: "255.255.255.255".into(), interval: 10.0, per_source_rate: 2.0 }
    }
}

/// Liveness settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Liveness {
    /// Seconds between heartbeats to each connected peer (and probes of known, unconnected ones).
    pub heartbeat_interval: f64,
    /// A peer silent this long, and unreachable or not answering, is stale: dropped from the
    /// routing table and directories.
    pub stale_after: f64,
    /// Known but unconnected peers dialled per heartbeat interval (longest silent first).
    pub probes_per_tick: usize,
}

impl Default for Liveness {
    fn default() -> Self {
        Self { heartbeat_interval: 5.0, stale_after: 30.0, probes_per_tick: 8 }
    }
}

/// Peer-exchange settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pex {
    /// Seconds between exchanges (with one random connected peer).
    pub interval: f64,
    /// Entries per answer.
    pub max_entries: usize,
    /// Score below which a peer that sent junk is disconnected and blocked.
    pub block_below: i32,
}

impl Default for Pex {
    fn default() -> Self {
        Self { interval: 15.0, max_entries: 32, block_below: -20 }
    }
}

/// Announcement relay settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Relay {
    /// Nodes at this tier or above forward announcements they have not seen.
    pub min_tier: u8,
    /// Hops an announcement travels.
    pub ttl: u8,
    /// Relayed announcements accepted per peer per second.
    pub per_peer_rate: f64,
}

impl Default for Relay {
    fn default() -> Self {
        Self { min_tier: 2, ttl: 3, per_peer_rate: 20.0 }
    }
}

/// Connection and request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections per peer.
    pub max_per_peer: u32,
    /// Peers learnt from discovery are dialled at once only while fewer than this many are
    /// connected (Kademlia queries and probes connect beyond it).
    pub target_connections: usize,
    /// Requests (heartbeat, exchange, relay) accepted per peer per second.
    pub requests_per_s: f64,
    /// Round-protocol requests (opens, closes, fetches, evidence, governance, challenges)
    /// accepted per peer per second, in bursts of twice that; the rest are dropped, counted as
    /// `round rate`.
    pub round_requests_per_s: f64,
    /// Seconds an idle connection is kept.
    pub idle_timeout: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_peer: 2,
            target_connections: 48,
            requests_per_s: 20.0,
            round_requests_per_s: 100.0,
            idle_timeout: 60.0,
        }
    }
}

impl Config {
    /// The CPU cores this node announces (`cpu_cores`, or what the OS reports).
    pub fn claimed_cores(&self) -> u32 {
        if self.cpu_cores > 0 {
            self.cpu_cores
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        }
    }

    /// Parses `node.toml` text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::ReadConfig { path: path.to_path_buf(), source })?;
        Self::parse(&text)
    }

    /// The role bits.
    pub fn role_bits(&self) -> Result<u8, Error> {
        self.roles.iter().try_fold(0u8, |acc, r| {
            roles::parse(r).map(|b| acc | b).ok_or_else(|| Error::Setting {
                field: "roles",
                value: r.clone(),
                expected: roles::KNOWN,
            })
        })
    }

    /// Checks ranges and addresses.
    pub fn validate(&self) -> Result<(), Error> {
        self.role_bits()?;
        let positive = |field: &'static str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::Setting { field, value: v.to_string(), expected: "a number > 0" })
            }
        };
        positive("dht.record_ttl", self.dht.record_ttl)?;
        positive("dht.republish_interval", self.dht.republish_interval)?;
        positive("dht.replication_interval", self.dht.replication_interval)?;
        positive("dht.bootstrap_interval", self.dht.bootstrap_interval)?;
        positive("dht.query_timeout", self.dht.query_timeout)?;
        positive("beacon.interval", self.beacon.interval)?;
        positive("beacon.per_source_rate", self.beacon.per_source_rate)?;
        positive("liveness.heartbeat_interval", self.liveness.heartbeat_interval)?;
        positive("pex.interval", self.pex.interval)?;
        positive("relay.per_peer_rate", self.relay.per_peer_rate)?;
        positive("limits.requests_per_s", self.limits.requests_per_s)?;
        positive("limits.idle_timeout", self.limits.idle_timeout)?;
        if self.liveness.stale_after <= self.liveness.heartbeat_interval {
            return Err(Error::Setting {
                field: "liveness.stale_after",
                value: self.liveness.stale_after.to_string(),
                expected: "more than liveness.heartbeat_interval",
            });
        }
        for (field, v) in [
            ("dht.replication_factor", self.dht.replication_factor),
            ("dht.max_records", self.dht.max_records),
            ("dht.max_per_prefix", self.dht.max_per_prefix),
        ] {
            if v == 0 {
                return Err(Error::Setting { field, value: "0".into(), expected: "at least 1" });
            }
        }
        if !self.dht.protocol.starts_with('/') {
            return Err(Error::Setting {
                field: "dht.protocol",
                value: self.dht.protocol.clone(),
                expected: "a protocol name starting with '/'",
            });
        }
        for a in self.listen.iter().chain(&self.bootstrap) {
            a.parse::<libp2p::Multiaddr>().map_err(|e| Error::Address { addr: a.clone(), source: Box::new(e) })?;
        }
        for b in &self.bootstrap {
            let m: libp2p::Multiaddr =
                b.parse().map_err(|e| Error::Address { addr: b.clone(), source: Box::new(e) })?;
            if !m.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_))) {
                return Err(Error::Setting {
                    field: "bootstrap",
                    value: b.clone(),
                    expected: "an address ending in /p2p/<PeerId>",
                });
            }
        }
        for e in &self.ingest {
            e.parse::<std::net::SocketAddr>().map_err(|_| Error::Setting {
                field: "ingest",
                value: e.clone(),
                expected: "ip:port",
            })?;
        }
        if self.region.len() > 64 || self.region.chars().any(char::is_control) {
            return Err(Error::Setting {
                field: "region",
                value: self.region.clone(),
                expected: "at most 64 printable bytes",
            });
        }
        self.beacon.broadcast.parse::<std::net::Ipv4Addr>().map_err(|_| Error::Setting {
            field: "beacon.broadcast",
            value: self.beacon.broadcast.clone(),
            expected: "an IPv4 address",
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let c = Config::parse(include_str!("../node.example.toml")).expect("example");
        assert_eq!(c.role_bits().expect("roles"), roles::AGGREGATOR);
        assert_eq!(c.models, vec!["mnist-cnn".to_string()]);
    }

    #[test]
    fn an_empty_file_is_a_valid_client_and_mistakes_are_named() {
        let c = Config::parse("").expect("empty");
        assert_eq!(c.role_bits().expect("roles"), roles::CLIENT);
        let c = Config::parse(
            "roles = [\"aggregator\", \"validator\"]\n[liveness]\nstale_after = 9.0\nheartbeat_interval = 1.0",
        )
        .expect("parse");
        assert_eq!(c.role_bits().expect("roles"), roles::AGGREGATOR | roles::VALIDATOR);
        for (text, needle) in [
            ("roles = [\"miner\"]", "miner"),
            ("bootstrap = [\"/ip4/1.2.3.4/tcp/1\"]", "/p2p/"),
            ("[liveness]\nstale_after = 1.0", "stale_after"),
            ("[dht]\nprotocol = \"kad\"", "protocol"),
            ("unknown = 1", "unknown"),
            ("[beacon]\nbroadcast = \"lan\"", "broadcast"),
        ] {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
