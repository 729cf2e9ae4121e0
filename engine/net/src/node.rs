//! One node of the control plane: a task that owns the libp2p swarm, the beacon socket and the
//! peer table, driven by swarm events, timers and commands from [`Handle`]s.

use crate::codec::{self, Codec};
use crate::records::{self, Key};
use crate::{Config, Error, beacon, keys};
use ed25519_dalek::{Signer, SigningKey};
use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig, store::RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport as _, connection_limits, identify, mdns, noise, yamux,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use vain_schema::Limits;
use vain_schema::node::{Announcement, Heartbeat, Resources, roles};

const HEARTBEAT: &str = "/vain/heartbeat/1.0.0";
const PEX: &str = "/vain/pex/1.0.0";
const RELAY: &str = "/vain/announce/1.0.0";
const ROUND: &str = "/vain/round/1.0.0";
/// Largest round-protocol message: a checkpoint of a model with up to 16 M f32 parameters.
pub const MAX_ROUND_MESSAGE: usize = 64 << 20;
/// How long a round-protocol request waits for its answer.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
const IDENTIFY: &str = "/vain/0.1.0";
/// Largest request-response message (a PEX answer of `max_entries` announcements).
const MAX_MESSAGE: usize = 1 << 20;
/// The longest wait between two checks of who is closest to a node's own record key while it
/// settles (the checks start 1 s apart; the wait doubles after each check that finds someone
/// new).
const SETTLE_MAX_WAIT: Duration = Duration::from_secs(32);
/// Peers remembered as given our record while it settles.
const SETTLE_GIVEN: usize = 256;
/// Checks in a row that must find no new closest peer before the record counts as settled.
const SETTLE_STABLE: u8 = 2;
/// Announcements remembered for relay de-duplication.
const SEEN: usize = 8192;

/// Which transport the swarm runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP + noise + yamux.
    Tcp,
    /// libp2p's in-process memory transport + noise + yamux (tests, the scale measurement).
    Memory,
}

/// The node's keys: the Ed25519 signing key (its PeerId), its stable node id (the root key;
/// equal to the signing key's public half when there was no rotation) with the rotation chain
/// linking them, and its X25519 key for sealed messages.
#[derive(Clone)]
pub struct Identity {
    /// Seed of the current signing key (zeroed on drop; the type has no `Debug` so it cannot
    /// reach a log).
    pub seed: zeroize::Zeroizing<[u8; 32]>,
    /// Root key.
    pub node_id: [u8; 32],
    /// `SignedRotationCertificate`s from the root to the signing key.
    pub rotation_chain: Vec<Vec<u8>>,
    /// X25519 public key for HPKE.
    pub x25519: [u8; 32],
}

impl Identity {
    /// A node whose signing key is its root key.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let node_id = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        Self { seed: zeroize::Zeroizing::new(seed), node_id, rotation_chain: Vec::new(), x25519: [0; 32] }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Banned and blocked peers: their connections are denied as they are established (before
    /// any protocol sees them) and dials to them refused.
    gate: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    heartbeat: request_response::Behaviour<Codec>,
    pex: request_response::Behaviour<Codec>,
    relay: request_response::Behaviour<Codec>,
    round: request_response::Behaviour<Codec>,
    /// The standard `/ipfs/ping/1.0.0`, which other implementations' DHTs use to check a new
    /// contact before adding it to their routing table.
    ping: libp2p::ping::Behaviour,
}

/// Where a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Heard of (exchange, beacon, mDNS, relay, DHT) but not yet answered a heartbeat.
    Candidate,
    /// Answered a signed heartbeat within the stale timeout.
    Live,
    /// Silent past the stale timeout: removed from the routing table and directories.
    Stale,
    /// Stayed connected past the stale timeout without ever answering a heartbeat (a stuck
    /// node, or another libp2p implementation): treated as stale, and not dialled again; it
    /// becomes live if it answers a heartbeat on a connection it opens.
    Unresponsive,
}

struct Peer {
    node_id: Option<[u8; 32]>,
    announcement: Option<Vec<u8>>,
    announced_ms: u64,
    roles: u8,
    /// Region tag of its announcement (empty when none).
    region: String,
    addrs: Vec<Multiaddr>,
    state: State,
    last_seen: Instant,
    last_heartbeat: Option<Instant>,
    connected: bool,
    score: i32,
    in_routing: bool,
    requests: (f64, Instant),
    /// Token bucket of round-protocol requests.
    round_requests: (f64, Instant),
    /// The last dial since it was last heard from failed.
    probe_failed: bool,
    /// Which of our announcements (its `own_version`) this peer was sent on connecting.
    told: u64,
    /// When its current connection was established.
    connected_at: Instant,
}

/// One row of `vain peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// libp2p PeerId.
    pub peer_id: String,
    /// Node id (hex), once its announcement was verified.
    pub node_id: Option<String>,
    /// State.
    pub state: State,
    /// Connected now.
    pub connected: bool,
    /// Role bits.
    pub roles: u8,
    /// Region tag it announced (empty when none).
    pub region: String,
    /// Known addresses.
    pub addresses: Vec<String>,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
    /// Exchange score (junk lowers it).
    pub score: i32,
}

/// A node's summary (`vain up`'s table, the control socket's `status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// libp2p PeerId.
    pub peer_id: String,
    /// Node id (hex).
    pub node_id: String,
    /// Listen addresses (with `/p2p/<PeerId>`).
    pub listen: Vec<String>,
    /// Peers in the table, any state.
    pub known: usize,
    /// Peers that answered a heartbeat within the stale timeout.
    pub live: usize,
    /// Connected peers.
    pub connected: usize,
    /// Peers marked stale.
    pub stale: usize,
    /// Peers that stayed connected without ever answering a heartbeat (not dialled again).
    pub unresponsive: usize,
    /// DHT lookups this node made.
    pub lookups: Lookups,
    /// Kademlia routing-table entries.
    pub routing: usize,
    /// Records in the local store.
    pub records: usize,
    /// Milliseconds since the last heartbeat answered by anyone.
    pub last_heartbeat_ms: Option<u64>,
    /// Refusals by reason (bad records, bogus beacons, exchange junk, rate limits, …).
    pub rejected: BTreeMap<String, u64>,
    /// Announcements relayed onward.
    pub relayed: u64,
    /// Whether this node's own announcement has settled: the last two checks of the peers
    /// closest to its key found nobody new among the nearest quarter of them.
    pub settled: bool,
}

/// A verified node record found in the DHT.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    /// Node id (hex).
    pub node_id: String,
    /// Signing key (hex).
    pub signing_key: String,
    /// Addresses.
    pub addresses: Vec<String>,
    /// Role bits.
    pub roles: u8,
    /// Signing time, Unix ms.
    pub timestamp_ms: u64,
}

/// What `dht_get` returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Found {
    /// A node's announcement.
    Node(NodeRecord),
    /// Providers of a directory key.
    Providers(Vec<String>),
}

enum Command {
    Status(oneshot::Sender<Status>),
    Peers(oneshot::Sender<Vec<PeerRow>>),
    Get(Key, oneshot::Sender<(Result<Found, Error>, Lookup)>),
    Provide(Key, oneshot::Sender<Result<(), Error>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), Error>>),
    PutRaw(Vec<u8>, Vec<u8>, oneshot::Sender<Result<(), Error>>),
    Holds(Key, oneshot::Sender<bool>),
    Request(PeerId, Vec<u8>, oneshot::Sender<Result<Vec<u8>, Error>>),
    Directory(oneshot::Sender<Vec<Entry>>),
    Ban(Vec<[u8; 32]>, oneshot::Sender<usize>),
    Unban(Vec<[u8; 32]>, oneshot::Sender<usize>),
    Tiers(HashMap<[u8; 32], u8>),
    Aggregators(HashSet<[u8; 32]>),
    Junk(PeerId, i32, &'static str),
}

/// A peer whose announcement this node verified (the directory the round protocol reads).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its PeerId.
    pub peer_id: PeerId,
    /// Its latest verified announcement.
    pub announcement: Announcement,
    /// Where it stands.
    pub state: State,
    /// Connected now.
    pub connected: bool,
}

/// A round-protocol request from a peer, for the node's owner to answer.
#[derive(Debug)]
pub struct Inbound {
    /// Who asked.
    pub peer: PeerId,
    /// Its verified announcement, when this node has one.
    pub announcement: Option<Announcement>,
    /// The request's bytes (at most [`MAX_ROUND_MESSAGE`]).
    pub request: Vec<u8>,
    /// Where the answer goes; dropping it leaves the requester with an error.
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// Talks to a running node.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    /// The node's PeerId.
    pub peer_id: PeerId,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// The node's summary.
    pub async fn status(&self) -> Result<Status, Error> {
        self.ask(Command::Status).await
    }

    /// The peer table.
    pub async fn peers(&self) -> Result<Vec<PeerRow>, Error> {
        self.ask(Command::Peers).await
    }

    /// Looks `key` up in the DHT; node records are verified before they are returned.
    pub async fn get(&self, key: Key) -> Result<Found, Error> {
        self.lookup(key).await?.0
    }

    /// [`Handle::get`] with what the lookup cost.
    pub async fn lookup(&self, key: Key) -> Result<(Result<Found, Error>, Lookup), Error> {
        self.ask(|tx| Command::Get(key, tx)).await
    }

    /// Announces this node as a provider of `key`.
    pub async fn provide(&self, key: Key) -> Result<(), Error> {
        self.ask(|tx| Command::Provide(key, tx)).await?
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Whether this node's own store holds a record (or provider records) for `key`.
    pub async fn holds(&self, key: Key) -> Result<bool, Error> {
        self.ask(|tx| Command::Holds(key, tx)).await
    }

    /// Sends a round-protocol request to `peer` and waits for the answer.
    pub async fn request(&self, peer: PeerId, message: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.ask(|tx| Command::Request(peer, message, tx)).await?
    }

    /// The peers with a verified announcement.
    pub async fn directory(&self) -> Result<Vec<Entry>, Error> {
        self.ask(Command::Directory).await
    }

    /// Scores `peer` down by `points` for junk on the round protocol that only a dishonest
    /// sender sends (a forged signature, a malformed message), counted under `reason`; below
    /// `pex.block_below` it is disconnected and blocked.
    pub async fn junk(&self, peer: PeerId, points: i32, reason: &'static str) -> Result<(), Error> {
        self.tx.send(Command::Junk(peer, points, reason)).await.map_err(|_| Error::Stopped)
    }

    /// The ledger's tiers (by node id or signing key), for the tier policies of this node's
    /// directories (`dht.aggregate_from`); nodes not listed are tier 0.
    pub async fn set_tiers(&self, tiers: HashMap<[u8; 32], u8>) -> Result<(), Error> {
        self.tx.send(Command::Tiers(tiers)).await.map_err(|_| Error::Stopped)
    }

    /// The nodes the ledger lets aggregate (pre-trusted, or at its aggregating tier; by node
    /// id or signing key): from now on only their `agg/` provider records are stored (others are counted
    /// under "provider tier"), on top of `dht.aggregate_from`.
    pub async fn set_aggregators(&self, nodes: HashSet<[u8; 32]>) -> Result<(), Error> {
        self.tx.send(Command::Aggregators(nodes)).await.map_err(|_| Error::Stopped)
    }

    /// Refuses these nodes (by node id or signing key) from now on: disconnected, out of the
    /// routing table and directories, their dials and announcements refused. Returns how many
    /// peers were newly blocked.
    pub async fn ban(&self, nodes: Vec<[u8; 32]>) -> Result<usize, Error> {
        self.ask(|tx| Command::Ban(nodes, tx)).await
    }

    /// Lifts the bans of these nodes (a passed unban proposal): their PeerIds may connect
    /// again. Returns how many were blocked.
    pub async fn unban(&self, nodes: Vec<[u8; 32]>) -> Result<usize, Error> {
        self.ask(|tx| Command::Unban(nodes, tx)).await
    }

    /// Puts `value` under `key` exactly as given, without this node's own check — what a
    /// faulty or hostile peer would do; the receivers' validation is what stops it.
    pub async fn put_raw(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        self.ask(|tx| Command::PutRaw(key, value, tx)).await?
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.001))
}

/// The routing-diversity bucket of an address: its /24 (IPv4) or /48 (IPv6); memory and other
/// addresses share one bucket each.
fn prefix(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::from(std::net::Ipv4Addr::from(u32::from(ip) & 0xffff_ff00))),
        Protocol::Ip6(ip) => Some(IpAddr::from(std::net::Ipv6Addr::from(u128::from(ip) & !((1u128 << 80) - 1)))),
        _ => None,
    })
}

/// The PeerId an announcement's signing key gives, and its addresses that end in that PeerId
/// (others are ignored: an announcement cannot point a dialler at someone else).
fn announced(a: &Announcement) -> Option<(PeerId, Vec<Multiaddr>)> {
    let pid = keys::peer_id(&a.signing_key).ok()?;
    let addrs = a
        .addresses
        .iter()
        .filter_map(|s| s.parse::<Multiaddr>().ok())
        .filter(|m| matches!(m.iter().last(), Some(Protocol::P2p(p)) if p == pid))
        .collect();
    Some((pid, addrs))
}

/// An answer to an inbound round-protocol request, on its way back to the swarm.
type Reply = (request_response::ResponseChannel<Vec<u8>>, Vec<u8>);
/// Where the answer to one of our round-protocol requests goes.
type Answer = oneshot::Sender<Result<Vec<u8>, Error>>;

/// Takes one token from a bucket refilled at `rate` per second up to twice that; whether there
/// was one.
fn take_token(bucket: &mut (f64, Instant), rate: f64) -> bool {
    let now = Instant::now();
    let (tokens, at) = *bucket;
    let tokens = (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(2.0 * rate);
    let ok = tokens >= 1.0;
    *bucket = (if ok { tokens - 1.0 } else { tokens }, now);
    ok
}

/// Announcements already relayed, by (node id, timestamp), oldest first for eviction.
type Seen = (HashSet<([u8; 32], u64)>, VecDeque<([u8; 32], u64)>);
/// A DHT lookup in flight: its key, who waits, providers found so far.
type Pending = (Key, oneshot::Sender<(Result<Found, Error>, Lookup)>, Vec<PeerId>);

/// What a lookup cost.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Lookup {
    /// Requests sent to peers (Kademlia reports no hop count; requests are its cost).
    pub requests: u32,
    /// Of which answered.
    pub successes: u32,
    /// How long it took, ms.
    pub ms: f64,
}

/// Upper bounds (ms) of the lookup-duration buckets in [`Lookups`].
pub const LOOKUP_BUCKETS_MS: [f64; 10] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0];

/// DHT lookups this node made (for its metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lookups {
    /// Lookups that found what they looked for.
    pub ok: u64,
    /// Lookups that found nothing valid, or failed.
    pub failed: u64,
    /// Lookups by duration: one count per bound of [`LOOKUP_BUCKETS_MS`], then one past the
    /// last bound.
    pub buckets: Vec<u64>,
    /// Sum of their durations, ms.
    pub sum_ms: f64,
}

impl Lookups {
    fn record(&mut self, ok: bool, ms: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LOOKUP_BUCKETS_MS.len() + 1];
        }
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        let i = LOOKUP_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LOOKUP_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms += ms;
    }
}

struct Node {
    cfg: Config,
    identity: Identity,
    signer: SigningKey,
    roles: u8,
    swarm: Swarm<Behaviour>,
    peer_id: PeerId,
    listen: Vec<Multiaddr>,
    own: Vec<u8>,
    /// Bumped each time `own` is re-signed.
    own_version: u64,
    peers: HashMap<PeerId, Peer>,
    blocked: HashSet<PeerId>,
    prefixes: HashMap<IpAddr, usize>,
    provider_keys: HashSet<kad::RecordKey>,
    rejected: BTreeMap<String, u64>,
    relayed: u64,
    seen: Seen,
    hb_seq: u64,
    hb_cache: Option<(Vec<u8>, Instant)>,
    last_heartbeat: Option<Instant>,
    lookups: Lookups,
    gets: HashMap<kad::QueryId, Pending>,
    beacon: Option<(tokio::net::UdpSocket, SocketAddr, beacon::RateLimit)>,
    settle: Settle,
    /// Where round-protocol requests go (none: they are refused).
    inbound: Option<mpsc::Sender<Inbound>>,
    /// Answers to inbound requests, from the tasks waiting on the owner.
    replies: (mpsc::Sender<Reply>, Option<mpsc::Receiver<Reply>>),
    /// The ledger's tiers, as last pushed by the node's owner (none pushed yet: `cfg.tier` is
    /// this node's own).
    tiers: Option<HashMap<[u8; 32], u8>>,
    /// The nodes the ledger lets aggregate, as last pushed (none pushed yet: the tier policy
    /// alone decides).
    aggregators: Option<HashSet<[u8; 32]>>,
    /// Our round-protocol requests waiting for answers.
    requests: HashMap<request_response::OutboundRequestId, (PeerId, Answer)>,
}

/// Placing a node's own announcement on the peers that end up closest to its key.
///
/// While many nodes join at once, the k peers closest to a key keep changing, and a put
/// made early lands on peers that later are not among them; Kademlia's fix is republishing,
/// hourly. Instead a joining node asks who is closest now (1 s after start, then at a wait
/// that doubles, up to [`SETTLE_MAX_WAIT`], each time the nearest quarter of the answer holds
/// someone new), gives the record to any closest peer it has not given it to, and stops once
/// [`SETTLE_STABLE`] checks in a row find nobody new there. In a network that has already formed this costs three lookups
/// over about 5 s; in a cluster started at once it keeps going until the network has formed.
struct Settle {
    /// The peers given the record so far (found closest by some check). Not just the last
    /// answer: under load a lookup misses some of the closest peers, and one missing from one
    /// answer and back in the next is not new.
    given: HashSet<PeerId>,
    /// Checks in a row that found no new closest peer.
    stable: u8,
    wait: Duration,
    next: tokio::time::Instant,
    query: Option<kad::QueryId>,
}

impl Settle {
    fn new() -> Self {
        Settle {
            given: HashSet::new(),
            stable: 0,
            wait: Duration::from_secs(1),
            next: tokio::time::Instant::now() + Duration::from_secs(1),
            query: None,
        }
    }

    fn done(&self) -> bool {
        self.stable >= SETTLE_STABLE
    }
}

fn build_swarm(cfg: &Config, kp: libp2p::identity::Keypair, transport: Transport) -> Result<Swarm<Behaviour>, Error> {
    let peer_id = kp.public().to_peer_id();
    let protocol = StreamProtocol::try_from_owned(cfg.dht.protocol.clone()).map_err(|_| Error::Setting {
        field: "dht.protocol",
        value: cfg.dht.protocol.clone(),
        expected: "a protocol name starting with '/'",
    })?;
    let mdns_on = cfg.mdns.enabled && transport == Transport::Tcp;
    let make = |key: &libp2p::identity::Keypair| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
        let mut kc = kad::Config::new(protocol.clone());
        kc.set_replication_factor(NonZeroUsize::new(cfg.dht.replication_factor).ok_or("replication factor")?)
            .set_record_ttl(Some(secs(cfg.dht.record_ttl)))
            .set_publication_interval(Some(secs(cfg.dht.republish_interval)))
            .set_replication_interval(Some(secs(cfg.dht.replication_interval)))
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_max_packet_size(cfg.dht.max_record_bytes * 2 + 4096)
            .set_query_timeout(secs(cfg.dht.query_timeout));
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_records: cfg.dht.max_records,
                max_value_bytes: cfg.dht.max_record_bytes,
                max_providers_per_key: 64,
                max_provided_keys: 1024,
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kc);
        // No external address is ever confirmed on loopback or a LAN without autonat; a node in
        // client mode would neither answer nor be added to others' tables.
        kad.set_mode(Some(kad::Mode::Server));
        let rr = |name: &'static str| {
            request_response::Behaviour::with_codec(
                Codec { max: MAX_MESSAGE },
                [(StreamProtocol::new(name), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        };
        let mdns = if mdns_on { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?) } else { None };
        Ok(Behaviour {
            gate: libp2p::allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(cfg.limits.max_connections))
                    .with_max_established_per_peer(Some(cfg.limits.max_per_peer)),
            ),
            kad,
            identify: identify::Behaviour::new(identify::Config::new(IDENTIFY.into(), key.public())),
            mdns: Toggle::from(mdns),
            heartbeat: rr(HEARTBEAT),
            pex: rr(PEX),
            relay: rr(RELAY),
            round: request_response::Behaviour::with_codec(
                Codec { max: MAX_ROUND_MESSAGE },
                [(StreamProtocol::new(ROUND), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(ROUND_TIMEOUT),
            ),
            ping: libp2p::ping::Behaviour::default(),
        })
    };
    let idle = secs(cfg.limits.idle_timeout);
    let builder = libp2p::SwarmBuilder::with_existing_identity(kp).with_tokio();
    let swarm = match transport {
        Transport::Tcp => builder
            .with_tcp(libp2p::tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .map_err(|e| Error::Build(e.into()))?
            .with_behaviour(make)
            .map_err(|e| Error::Build(e.into()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Transport::Memory => builder
            .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(MemoryTransport::new()
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            })
            .map_err(|e| Error::Build(e.into()))?
            .with_behaviour(make)
            .map_err(|e| Error::Build(e.into()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

/// Starts a node on the current tokio runtime; it runs until every [`Handle`] is dropped.
/// Round-protocol requests are refused.
pub async fn spawn(cfg: Config, identity: Identity, transport: Transport) -> Result<Handle, Error> {
    spawn_inner(cfg, identity, transport, None).await
}

/// [`spawn`], handing round-protocol requests to `inbound` (bounded: when it is full a request
/// is refused and counted as `round busy`).
pub async fn spawn_serving(
    cfg: Config,
    identity: Identity,
    transport: Transport,
    inbound: mpsc::Sender<Inbound>,
) -> Result<Handle, Error> {
    spawn_inner(cfg, identity, transport, Some(inbound)).await
}

async fn spawn_inner(
    cfg: Config,
    identity: Identity,
    transport: Transport,
    inbound: Option<mpsc::Sender<Inbound>>,
) -> Result<Handle, Error> {
    cfg.validate()?;
    let roles = cfg.role_bits()?;
    let kp = keys::keypair(&identity.seed)?;
    let peer_id = kp.public().to_peer_id();
    let mut swarm = build_swarm(&cfg, kp, transport)?;
    for l in &cfg.listen {
        let addr: Multiaddr = l.parse().map_err(|e| Error::Address { addr: l.clone(), source: Box::new(e) })?;
        swarm.listen_on(addr).map_err(|e| Error::Listen { addr: l.clone(), source: Box::new(e) })?;
    }
    let beacon = if cfg.beacon.enabled && transport == Transport::Tcp { Some(bind_beacon(&cfg)?) } else { None };
    let signer = SigningKey::from_bytes(&identity.seed);
    let mut node = Node {
        signer,
        roles,
        swarm,
        peer_id,
        listen: Vec::new(),
        own: Vec::new(),
        own_version: 0,
        peers: HashMap::new(),
        blocked: HashSet::new(),
        prefixes: HashMap::new(),
        provider_keys: HashSet::new(),
        rejected: BTreeMap::new(),
        relayed: 0,
        seen: (HashSet::new(), VecDeque::new()),
        hb_seq: 0,
        hb_cache: None,
        last_heartbeat: None,
        lookups: Lookups::default(),
        gets: HashMap::new(),
        beacon,
        identity,
        cfg,
        settle: Settle::new(),
        inbound,
        replies: {
            let (tx, rx) = mpsc::channel(256);
            (tx, Some(rx))
        },
        requests: HashMap::new(),
        tiers: None,
        aggregators: None,
    };
    node.refresh_announcement();
    for b in node.cfg.bootstrap.clone() {
        let Ok(addr) = b.parse::<Multiaddr>() else { continue };
        if let Some(Protocol::P2p(pid)) = addr.iter().last() {
            node.swarm.behaviour_mut().kad.add_address(&pid, addr.clone());
            node.learn_addr(pid, addr.clone());
            let _ = node.swarm.dial(addr);
        }
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(node.run(rx));
    Ok(Handle { tx, peer_id })
}

fn bind_beacon(cfg: &Config) -> Result<(tokio::net::UdpSocket, SocketAddr, beacon::RateLimit), Error> {
    use socket2::{Domain, Protocol as SProtocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(SProtocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], cfg.beacon.port)).into())?;
    let ip: std::net::Ipv4Addr = cfg.beacon.broadcast.parse().map_err(|_| Error::Setting {
        field: "beacon.broadcast",
        value: cfg.beacon.broadcast.clone(),
        expected: "an IPv4 address",
    })?;
    let sock = tokio::net::UdpSocket::from_std(s.into())?;
    Ok((sock, SocketAddr::from((ip, cfg.beacon.port)), beacon::RateLimit::new(cfg.beacon.per_source_rate, 4096)))
}

impl Node {
    fn count(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }

    /// Re-signs our announcement with the current listen addresses and puts it in the DHT.
    fn refresh_announcement(&mut self) {
        let addresses: Vec<String> = self
            .listen
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.peer_id)).to_string())
            .take(Limits::default().max_addresses)
            .collect();
        let a = Announcement {
            node_id: self.identity.node_id,
            signing_key: self.signer.verifying_key().to_bytes(),
            rotation_chain: self.identity.rotation_chain.clone(),
            addresses,
            roles: self.roles,
            resources: Resources { cpu_cores: self.cfg.claimed_cores(), ..Resources::default() },
            x25519_key: self.identity.x25519,
            timestamp_ms: vain_schema::clock::unix_ms(),
            ingest: self.cfg.ingest.clone(),
            region: self.cfg.region.clone(),
        };
        let body = a.encode();
        let sig = self.signer.sign(Announcement::signing_input(&body).as_bytes()).to_bytes();
        self.own = Announcement::wrap(&body, &sig);
        self.own_version += 1;
        // Our own record passes the same check as anyone's: put_record skips the filter.
        let key = Key::Node(self.identity.node_id).record_key();
        if records::check(
            key.as_ref(),
            &self.own,
            vain_schema::clock::unix_ms(),
            self.cfg.dht.max_record_bytes,
            self.max_age_ms(),
        )
        .is_ok()
        {
            let _ =
                self.swarm.behaviour_mut().kad.put_record(kad::Record::new(key, self.own.clone()), kad::Quorum::One);
        }
    }

    fn max_age_ms(&self) -> u64 {
        (self.cfg.dht.record_ttl * 1000.0) as u64
    }

    fn peer(&mut self, pid: PeerId) -> &mut Peer {
        let burst = 2.0 * self.cfg.limits.requests_per_s;
        let round_burst = 2.0 * self.cfg.limits.round_requests_per_s;
        self.peers.entry(pid).or_insert_with(|| Peer {
            node_id: None,
            announcement: None,
            announced_ms: 0,
            roles: 0,
            region: String::new(),
            addrs: Vec::new(),
            state: State::Candidate,
            last_seen: Instant::now(),
            last_heartbeat: None,
            connected: false,
            score: 0,
            in_routing: false,
            requests: (burst, Instant::now()),
            round_requests: (round_burst, Instant::now()),
            probe_failed: false,
            told: 0,
            connected_at: Instant::now(),
        })
    }

    fn learn_addr(&mut self, pid: PeerId, addr: Multiaddr) {
        if pid == self.peer_id {
            return;
        }
        let p = self.peer(pid);
        if !p.addrs.contains(&addr) && p.addrs.len() < 8 {
            p.addrs.push(addr);
        }
    }

    /// A verified announcement: remember it, and dial the node if we are not connected.
    fn learn_announcement(&mut self, a: &Announcement, bytes: &[u8]) -> Option<PeerId> {
        let (pid, addrs) = announced(a)?;
        if pid == self.peer_id || self.blocked.contains(&pid) {
            return None;
        }
        let p = self.peer(pid);
        if a.timestamp_ms >= p.announced_ms {
            p.announced_ms = a.timestamp_ms;
            p.announcement = Some(bytes.to_vec());
            p.node_id = Some(a.node_id);
            p.roles = a.roles;
            p.region.clone_from(&a.region);
        }
        let connected = p.connected;
        for addr in addrs.iter().cloned() {
            self.learn_addr(pid, addr);
        }
        // Known is not connected: beyond the target, new peers wait for a probe or a query.
        if !connected && !addrs.is_empty() && self.connected() < self.cfg.limits.target_connections {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(pid).addresses(addrs).build();
            let _ = self.swarm.dial(opts);
        }
        Some(pid)
    }

    /// Adds a peer's addresses to the routing table, at most `max_per_prefix` peers per prefix.
    fn route(&mut self, pid: PeerId, addrs: &[Multiaddr]) {
        let Some(first) = addrs.first() else { return };
        if self.peers.get(&pid).is_some_and(|p| p.in_routing) {
            for a in addrs {
                self.swarm.behaviour_mut().kad.add_address(&pid, a.clone());
            }
            return;
        }
        let bucket = prefix(first).unwrap_or(IpAddr::from([0u8; 4]));
        let n = self.prefixes.get(&bucket).copied().unwrap_or(0);
        // Loopback and memory addresses are one machine by construction; the cap is for real
        // networks.
        let local = bucket.is_loopback() || bucket.is_unspecified() || prefix(first).is_none();
        if !local && n >= self.cfg.dht.max_per_prefix {
            self.count("routing prefix full");
            return;
        }
        *self.prefixes.entry(bucket).or_default() += 1;
        for a in addrs {
            self.swarm.behaviour_mut().kad.add_address(&pid, a.clone());
        }
        self.peer(pid).in_routing = true;
    }

    fn allow_request(&mut self, pid: PeerId) -> bool {
        let rate = self.cfg.limits.requests_per_s;
        let ok = take_token(&mut self.peer(pid).requests, rate);
        if !ok {
            self.count("request rate");
        }
        ok
    }

    /// Round-protocol requests have their own budget: a flood of them (valid-looking evidence
    /// included) is cut at `limits.round_requests_per_s`, whatever the owner makes of each.
    fn allow_round_request(&mut self, pid: PeerId) -> bool {
        let rate = self.cfg.limits.round_requests_per_s;
        let ok = take_token(&mut self.peer(pid).round_requests, rate);
        if !ok {
            self.count("round rate");
        }
        ok
    }

    /// This node's signed heartbeat. One signature serves every heartbeat sent within a
    /// second (a tick to all connected peers, a burst of new connections): the receiver checks
    /// signer and node, not freshness to the millisecond.
    fn heartbeat_bytes(&mut self) -> Vec<u8> {
        if let Some((bytes, at)) = &self.hb_cache
            && at.elapsed() < Duration::from_secs(1)
        {
            return bytes.clone();
        }
        self.hb_seq += 1;
        let hb = Heartbeat {
            node_id: self.identity.node_id,
            signing_key: self.signer.verifying_key().to_bytes(),
            sequence: self.hb_seq,
            timestamp_ms: vain_schema::clock::unix_ms(),
            round: 0,
        };
        let signer = &self.signer;
        let bytes = hb
            .encode_signed(|input| Ok::<_, std::convert::Infallible>(signer.sign(input).to_bytes()))
            .unwrap_or_default();
        self.hb_cache = Some((bytes.clone(), Instant::now()));
        bytes
    }

    /// A heartbeat from `pid`: signed by the key its PeerId is.
    fn check_heartbeat(&mut self, pid: PeerId, bytes: &[u8]) -> bool {
        match Heartbeat::open(bytes, &Limits::default()) {
            Ok(hb) if keys::peer_id(&hb.signing_key).ok() == Some(pid) => {
                let now = Instant::now();
                let p = self.peer(pid);
                if p.node_id.is_none_or(|n| n == hb.node_id) {
                    p.node_id = Some(hb.node_id);
                    p.last_seen = now;
                    p.last_heartbeat = Some(now);
                    p.state = State::Live;
                    self.last_heartbeat = Some(now);
                    true
                } else {
                    self.count("heartbeat node mismatch");
                    false
                }
            }
            _ => {
                self.count("bad heartbeat");
                false
            }
        }
    }

    fn connected(&self) -> usize {
        self.peers.values().filter(|p| p.connected).count()
    }

    fn on_heartbeat_tick(&mut self) {
        let stale_after = secs(self.cfg.liveness.stale_after);
        let now = Instant::now();
        // One exchange per pair and interval is enough: each side verifies the other's signed
        // heartbeat in it. A peer whose heartbeat arrived within the interval (its request, or
        // its answer to ours) has just spoken for both sides, and skipping it halves the
        // heartbeats of every connection.
        let heard_within = secs(self.cfg.liveness.heartbeat_interval);
        let connected: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.connected && p.last_heartbeat.is_none_or(|t| now.saturating_duration_since(t) >= heard_within)
            })
            .map(|(k, _)| *k)
            .collect();
        for pid in connected {
            let hb = self.heartbeat_bytes();
            self.swarm.behaviour_mut().heartbeat.send_request(&pid, hb);
        }
        // Stale: silent past the timeout, and either connected without answering heartbeats or
        // unreachable when last probed. A peer merely not probed yet keeps its state.
        let mut gone = Vec::new();
        let mut probe: Vec<(Instant, PeerId)> = Vec::new();
        let mut unresponsive = 0;
        for (pid, p) in self.peers.iter_mut() {
            if matches!(p.state, State::Stale | State::Unresponsive) {
                continue;
            }
            let silent = now.saturating_duration_since(p.last_seen) > stale_after;
            // Connected all along yet never a heartbeat: dialling it again would only repeat this.
            let mute = p.connected
                && p.last_heartbeat.is_none()
                && now.saturating_duration_since(p.connected_at) > stale_after;
            if mute {
                p.state = State::Unresponsive;
                unresponsive += 1;
                gone.push(*pid);
            } else if silent && (p.connected || p.probe_failed) {
                p.state = State::Stale;
                gone.push(*pid);
            } else if !p.connected && !p.addrs.is_empty() {
                probe.push((p.last_seen, *pid));
            }
        }
        for _ in 0..unresponsive {
            self.count("unresponsive to heartbeats");
        }
        for pid in gone {
            self.drop_stale(pid);
        }
        // Probe the longest-silent known peers, a few per tick.
        probe.sort();
        for (_, pid) in probe.into_iter().take(self.cfg.liveness.probes_per_tick) {
            let addrs = self.peers.get(&pid).map(|p| p.addrs.clone()).unwrap_or_default();
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(pid).addresses(addrs).build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// The PeerIds of these nodes: each key's own, and every peer announcing one as its node id.
    fn peer_ids_of(&self, nodes: Vec<[u8; 32]>) -> Vec<PeerId> {
        let ids: HashSet<[u8; 32]> = nodes.into_iter().collect();
        let mut pids: Vec<PeerId> = ids.iter().filter_map(|k| keys::peer_id(k).ok()).collect();
        pids.extend(self.peers.iter().filter(|(_, p)| p.node_id.is_some_and(|n| ids.contains(&n))).map(|(k, _)| *k));
        pids
    }

    /// Stale-node cleanup: out of the routing table and the provider directories.
    fn drop_stale(&mut self, pid: PeerId) {
        // If it comes back, it may have lost what we told it.
        if let Some(p) = self.peers.get_mut(&pid) {
            p.told = 0;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.remove_peer(&pid);
        for key in &self.provider_keys {
            kad.store_mut().remove_provider(key, &pid);
        }
        if let Some(p) = self.peers.get_mut(&pid) {
            if p.in_routing
                && let Some(b) = p.addrs.first().and_then(prefix)
                && let Some(n) = self.prefixes.get_mut(&b)
            {
                *n = n.saturating_sub(1);
            }
            p.in_routing = false;
        }
        let _ = self.swarm.disconnect_peer_id(pid);
    }

    fn on_pex_tick(&mut self) {
        let connected: Vec<PeerId> = self.peers.iter().filter(|(_, p)| p.connected).map(|(k, _)| *k).collect();
        if connected.is_empty() {
            return;
        }
        let pick = connected[(vain_schema::clock::unix_ms() as usize) % connected.len()];
        self.swarm.behaviour_mut().pex.send_request(&pick, Vec::new());
    }

    fn pex_answer(&self, asker: PeerId) -> Vec<u8> {
        let mut items: Vec<Vec<u8>> = vec![self.own.clone()];
        for (pid, p) in &self.peers {
            if items.len() >= self.cfg.pex.max_entries {
                break;
            }
            if *pid != asker
                && p.state == State::Live
                && !self.blocked.contains(pid)
                && let Some(a) = &p.announcement
            {
                items.push(a.clone());
            }
        }
        codec::encode_list(&items)
    }

    fn on_pex_answer(&mut self, from: PeerId, bytes: &[u8]) {
        let Some(items) = codec::decode_list(bytes, self.cfg.pex.max_entries) else {
            self.junk(from, 10, "pex malformed");
            return;
        };
        let now = vain_schema::clock::unix_ms();
        let max_age = self.max_age_ms();
        let items: Vec<Vec<u8>> = items.into_iter().map(<[u8]>::to_vec).collect();
        for item in items {
            match records::check_announcement(&item, now, max_age) {
                Ok(a) if announced(&a).is_some_and(|(_, addrs)| !addrs.is_empty()) => {
                    self.learn_announcement(&a, &item);
                }
                Ok(_) => self.junk(from, 2, "pex unreachable entry"),
                Err(e) => {
                    let reason = format!("pex {}", e.reason());
                    self.junk(from, 5, &reason);
                }
            }
        }
    }

    /// Scores a peer down for junk; below the floor it is disconnected and blocked.
    fn junk(&mut self, from: PeerId, by: i32, reason: &str) {
        self.count(reason);
        let floor = self.cfg.pex.block_below;
        let p = self.peer(from);
        p.score -= by;
        if p.score < floor && self.blocked.insert(from) {
            self.swarm.behaviour_mut().gate.block_peer(from);
            self.count("blocked");
            self.drop_stale(from);
        }
    }

    /// A peer's tier in the ledger (under its node id or its signing key, the higher), 0 when
    /// the ledger does not know it or no tiers were pushed.
    fn peer_tier(&self, peer: PeerId) -> u8 {
        let node_id = self.peers.get(&peer).and_then(|x| x.node_id);
        [node_id, keys::public_key(&peer)].iter().flatten().filter_map(|k| self.tier_of(k)).max().unwrap_or(0)
    }

    /// The ledger's tier of node `id`, once the owner pushed tiers (unknown nodes: 0).
    fn tier_of(&self, id: &[u8; 32]) -> Option<u8> {
        self.tiers.as_ref().map(|t| t.get(id).copied().unwrap_or(0))
    }

    /// This node's own tier: the ledger's once pushed (under its node id, or under its
    /// current signing key after a rotation), else the configured starting tier.
    fn own_tier(&self) -> u8 {
        let signing = self.signer.verifying_key().to_bytes();
        match (self.tier_of(&self.identity.node_id), self.tier_of(&signing)) {
            (Some(a), Some(b)) => a.max(b),
            _ => self.cfg.tier,
        }
    }

    fn on_relay(&mut self, from: PeerId, bytes: &[u8]) {
        let Some((&ttl, body)) = bytes.split_first() else {
            self.count("relay malformed");
            return;
        };
        let a = match records::check_announcement(body, vain_schema::clock::unix_ms(), self.max_age_ms()) {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("relay {}", e.reason());
                self.junk(from, 5, &reason);
                return;
            }
        };
        // A banned (or blocked) node's announcement goes no further through this node.
        if announced(&a).is_some_and(|(pid, _)| self.blocked.contains(&pid)) {
            self.count("relay banned");
            return;
        }
        // Relaying others' announcements is a privilege of the tier the ledger gives: a peer
        // below it may hand over its own announcement and nothing else, so it cannot use this
        // node to amplify a flood.
        if self.tiers.is_some()
            && announced(&a).is_none_or(|(pid, _)| pid != from)
            && self.peer_tier(from) < self.cfg.relay.min_tier
        {
            self.count("relay tier");
            return;
        }
        let id = (a.node_id, a.timestamp_ms);
        if !self.seen.0.insert(id) {
            return;
        }
        self.seen.1.push_back(id);
        if self.seen.1.len() > SEEN
            && let Some(old) = self.seen.1.pop_front()
        {
            self.seen.0.remove(&old);
        }
        let origin = self.learn_announcement(&a, body);
        if self.own_tier() >= self.cfg.relay.min_tier && ttl > 0 {
            let mut msg = vec![ttl - 1];
            msg.extend_from_slice(body);
            let targets: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(k, p)| p.connected && **k != from && Some(**k) != origin)
                .map(|(k, _)| *k)
                .collect();
            for t in targets {
                self.swarm.behaviour_mut().relay.send_request(&t, msg.clone());
                self.relayed += 1;
            }
        }
    }

    fn announce_to(&mut self, pid: PeerId) {
        let mut msg = vec![self.cfg.relay.ttl];
        msg.extend_from_slice(&self.own);
        self.swarm.behaviour_mut().relay.send_request(&pid, msg);
    }

    fn on_beacon(&mut self, datagram: &[u8], from: SocketAddr) {
        let now = Instant::now();
        let Some((_, _, limit)) = self.beacon.as_mut() else { return };
        if !limit.allow(from.ip(), now) {
            self.count("beacon rate");
            return;
        }
        match beacon::decode(datagram, vain_schema::clock::unix_ms(), self.max_age_ms()) {
            Ok((a, body)) => {
                let body = body.to_vec();
                self.learn_announcement(&a, &body);
            }
            Err(beacon::Bogus::Malformed) => self.count("beacon malformed"),
            Err(beacon::Bogus::Announcement(e)) => {
                let reason = format!("beacon {}", e.reason());
                self.count(&reason);
            }
        }
    }

    fn status(&mut self) -> Status {
        let routing = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
        let records = self.swarm.behaviour_mut().kad.store_mut().records().count();
        Status {
            peer_id: self.peer_id.to_string(),
            node_id: hex::encode(self.identity.node_id),
            listen: self.listen.iter().map(|a| a.clone().with(Protocol::P2p(self.peer_id)).to_string()).collect(),
            known: self.peers.len(),
            live: self.peers.values().filter(|p| p.state == State::Live).count(),
            connected: self.peers.values().filter(|p| p.connected).count(),
            stale: self.peers.values().filter(|p| p.state == State::Stale).count(),
            unresponsive: self.peers.values().filter(|p| p.state == State::Unresponsive).count(),
            lookups: self.lookups.clone(),
            routing,
            records,
            last_heartbeat_ms: self.last_heartbeat.map(|t| t.elapsed().as_millis() as u64),
            rejected: self.rejected.clone(),
            relayed: self.relayed,
            settled: self.settle.done(),
        }
    }

    /// Starts a check of who is closest to our own record key (see [`Settle`]).
    fn settle_check(&mut self) {
        if self.settle.query.is_none() {
            let key = Key::Node(self.identity.node_id).record_key().to_vec();
            self.settle.query = Some(self.swarm.behaviour_mut().kad.get_closest_peers(key));
        }
        // Jittered by the PeerId, so nodes started together do not check together.
        let jitter = f64::from(self.peer_id.to_bytes().last().copied().unwrap_or(0)) / 255.0;
        self.settle.next = tokio::time::Instant::now() + self.settle.wait.mul_f64(0.75 + 0.5 * jitter);
    }

    /// The answer to a [`Node::settle_check`]: the record goes to the closest peers that do not
    /// have it yet.
    fn on_settle(&mut self, peers: Vec<kad::PeerInfo>) {
        self.settle.query = None;
        if peers.is_empty() {
            return;
        }
        // Closest first. A lookup under load misses some of the closest peers and reports
        // farther ones instead, which differ from answer to answer; what must be stable is the
        // nearest quarter, where every lookup for the record ends (a lookup asks all k closest
        // peers it finds, so one holder among them is enough to find the record).
        let target = kad::KBucketKey::new(Key::Node(self.identity.node_id).record_key().to_vec());
        let mut peers: Vec<PeerId> = peers.into_iter().map(|p| p.peer_id).collect();
        peers.sort_by_key(|p| target.distance(&kad::KBucketKey::from(*p)));
        let near = peers.len().div_ceil(4);
        let near_new = peers[..near].iter().any(|p| !self.settle.given.contains(p));
        let new: Vec<PeerId> = peers.into_iter().filter(|p| !self.settle.given.contains(p)).collect();
        if near_new {
            self.settle.stable = 0;
            self.settle.wait = (self.settle.wait * 2).min(SETTLE_MAX_WAIT);
        } else {
            self.settle.stable = self.settle.stable.saturating_add(1);
        }
        if !new.is_empty() {
            // Bounded: a network that keeps changing around our key for long restarts the set.
            if self.settle.given.len() + new.len() > SETTLE_GIVEN {
                self.settle.given.clear();
            }
            self.settle.given.extend(new.iter().copied());
            let record = kad::Record::new(Key::Node(self.identity.node_id).record_key(), self.own.clone());
            let _ = self.swarm.behaviour_mut().kad.put_record_to(record, new.into_iter(), kad::Quorum::One);
        }
    }

    fn peer_rows(&self) -> Vec<PeerRow> {
        let mut rows: Vec<PeerRow> = self
            .peers
            .iter()
            .map(|(pid, p)| PeerRow {
                peer_id: pid.to_string(),
                node_id: p.node_id.map(hex::encode),
                state: p.state,
                connected: p.connected,
                roles: p.roles,
                region: p.region.clone(),
                addresses: p.addrs.iter().map(|a| a.to_string()).collect(),
                last_seen_ms: p.last_seen.elapsed().as_millis() as u64,
                score: p.score,
            })
            .collect();
        rows.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        rows
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peer_rows());
            }
            Command::Get(key, tx) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let id = match key {
                    Key::Node(_) => kad.get_record(key.record_key()),
                    _ => kad.get_providers(key.record_key()),
                };
                self.gets.insert(id, (key, tx, Vec::new()));
            }
            Command::Provide(key, tx) => {
                let r = self.swarm.behaviour_mut().kad.start_providing(key.record_key());
                let _ = tx.send(r.map(|_| ()).map_err(Error::from));
            }
            Command::Request(peer, message, tx) => {
                let id = self.swarm.behaviour_mut().round.send_request(&peer, message);
                self.requests.insert(id, (peer, tx));
            }
            Command::Tiers(t) => self.tiers = Some(t),
            Command::Aggregators(a) => self.aggregators = Some(a),
            Command::Junk(pid, by, reason) => self.junk(pid, by, reason),
            Command::Ban(nodes, tx) => {
                let pids = self.peer_ids_of(nodes);
                let mut newly = 0;
                for pid in pids {
                    if pid != self.peer_id && self.blocked.insert(pid) {
                        self.swarm.behaviour_mut().gate.block_peer(pid);
                        newly += 1;
                        self.count("banned");
                        self.drop_stale(pid);
                    }
                }
                let _ = tx.send(newly);
            }
            Command::Unban(nodes, tx) => {
                let pids = self.peer_ids_of(nodes);
                let mut lifted = 0;
                for pid in pids {
                    if self.blocked.remove(&pid) {
                        self.swarm.behaviour_mut().gate.unblock_peer(pid);
                        lifted += 1;
                        self.count("unbanned");
                        if let Some(p) = self.peers.get_mut(&pid) {
                            p.state = State::Candidate;
                        }
                    }
                }
                let _ = tx.send(lifted);
            }
            Command::Directory(tx) => {
                let now = vain_schema::clock::unix_ms();
                let max_age = self.max_age_ms();
                let entries = self
                    .peers
                    .iter()
                    .filter_map(|(pid, p)| {
                        let bytes = p.announcement.as_ref()?;
                        let a = Announcement::open(bytes, &Limits::default(), now).ok()?;
                        (now.saturating_sub(a.timestamp_ms) <= max_age).then_some(Entry {
                            peer_id: *pid,
                            announcement: a,
                            state: p.state,
                            connected: p.connected,
                        })
                    })
                    .collect();
                let _ = tx.send(entries);
            }
            Command::Holds(key, tx) => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let k = key.record_key();
                let _ = tx.send(store.get(&k).is_some() || !store.providers(&k).is_empty());
            }
            Command::PutRaw(key, value, tx) => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(kad::Record::new(kad::RecordKey::new(&key), value), kad::Quorum::One);
                let _ = tx.send(r.map(|_| ()).map_err(Error::from));
            }
            Command::Dial(addr, tx) => {
                let _ = tx.send(self.swarm.dial(addr).map_err(|e| Error::Dial(Box::new(e))));
            }
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::InboundRequest { request } => match request {
                kad::InboundRequest::PutRecord { source, record: Some(r), .. } => {
                    let now = vain_schema::clock::unix_ms();
                    match records::check(
                        r.key.as_ref(),
                        &r.value,
                        now,
                        self.cfg.dht.max_record_bytes,
                        self.max_age_ms(),
                    ) {
                        // This node does not serve a banned node's record (its addresses).
                        Ok(a) if announced(&a).is_some_and(|(pid, _)| self.blocked.contains(&pid)) => {
                            self.count("record banned");
                        }
                        Ok(a) => {
                            let stored = self.swarm.behaviour_mut().kad.store_mut().get(&r.key).and_then(|old| {
                                records::check(old.key.as_ref(), &old.value, now, usize::MAX, u64::MAX).ok()
                            });
                            if stored.is_some_and(|old| old.timestamp_ms > a.timestamp_ms) {
                                self.count("record stale");
                            } else if self.swarm.behaviour_mut().kad.store_mut().put(r).is_err() {
                                self.count("record store full");
                            }
                        }
                        Err(e) => {
                            let reason = format!("record {}", e.reason());
                            self.junk(source, 2, &reason);
                        }
                    }
                }
                kad::InboundRequest::AddProvider { record: Some(p) } => {
                    // A directory lists only nodes whose verified announcement has the role it
                    // is for: aggregators under agg/, aggregators and validators under ckpt/.
                    let provider_roles = self.peers.get(&p.provider).map_or(0, |x| x.roles);
                    let key = Key::parse(p.key.as_ref());
                    let role_ok = match key {
                        Some(Key::Aggregators(_)) => provider_roles & roles::AGGREGATOR != 0,
                        Some(Key::Checkpoint(_)) => provider_roles & (roles::AGGREGATOR | roles::VALIDATOR) != 0,
                        _ => true,
                    };
                    // And, for agg/, the tier the policy requires, from the ledger.
                    // Under its node id or its current signing key (the one its PeerId names):
                    // a node that rotated its key is in the ledger under either.
                    let node_id = self.peers.get(&p.provider).and_then(|x| x.node_id);
                    let signing = keys::public_key(&p.provider);
                    let tier = [node_id, signing].iter().flatten().filter_map(|k| self.tier_of(k)).max();
                    let allowed = self
                        .aggregators
                        .as_ref()
                        .is_none_or(|a| [node_id, signing].iter().flatten().any(|k| a.contains(k)));
                    let tier_ok = !matches!(key, Some(Key::Aggregators(_)))
                        || (tier.unwrap_or(0) >= self.cfg.dht.aggregate_from && allowed);
                    if self.blocked.contains(&p.provider) {
                        self.count("provider banned");
                    } else if !role_ok {
                        self.count("provider role");
                    } else if !tier_ok {
                        self.count("provider tier");
                    } else if key.is_some_and(|k| !matches!(k, Key::Node(_))) {
                        self.provider_keys.insert(p.key.clone());
                        if self.swarm.behaviour_mut().kad.store_mut().add_provider(p).is_err() {
                            self.count("provider store full");
                        }
                    } else {
                        self.count("provider namespace");
                    }
                }
                _ => {}
            },
            kad::Event::OutboundQueryProgressed { id, result, step, stats } => {
                if self.settle.query == Some(id) {
                    match result {
                        kad::QueryResult::GetClosestPeers(Ok(kad::GetClosestPeersOk { peers, .. }))
                        | kad::QueryResult::GetClosestPeers(Err(kad::GetClosestPeersError::Timeout {
                            peers, ..
                        })) => self.on_settle(peers),
                        _ => self.settle.query = None,
                    }
                    return;
                }
                let cost = Lookup {
                    requests: stats.num_requests(),
                    successes: stats.num_successes(),
                    ms: stats.duration().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                };
                self.on_query(id, result, step.last, cost)
            }
            kad::Event::RoutingUpdated { peer, addresses, .. } => {
                for a in addresses.iter() {
                    self.learn_addr(peer, a.clone());
                }
            }
            _ => {}
        }
    }

    fn on_query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool, cost: Lookup) {
        let Some((key, _, _)) = self.gets.get(&id) else { return };
        let key = *key;
        match result {
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(pr))) => {
                // Values from other peers are unverified until checked here.
                match records::check(
                    pr.record.key.as_ref(),
                    &pr.record.value,
                    vain_schema::clock::unix_ms(),
                    usize::MAX,
                    self.max_age_ms(),
                ) {
                    Ok(a) => {
                        if let Some((_, tx, _)) = self.gets.remove(&id) {
                            self.lookups.record(true, cost.ms);
                            let _ = tx.send((
                                Ok(Found::Node(NodeRecord {
                                    node_id: hex::encode(a.node_id),
                                    signing_key: hex::encode(a.signing_key),
                                    addresses: a.addresses.clone(),
                                    roles: a.roles,
                                    timestamp_ms: a.timestamp_ms,
                                })),
                                cost,
                            ));
                        }
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                    }
                    Err(e) => {
                        let reason = format!("found {}", e.reason());
                        self.count(&reason);
                    }
                }
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })) => {
                if let Some((_, _, acc)) = self.gets.get_mut(&id) {
                    acc.extend(providers);
                }
            }
            kad::QueryResult::GetRecord(Err(e)) => {
                if let Some((_, tx, _)) = self.gets.remove(&id) {
                    self.lookups.record(false, cost.ms);
                    let _ = tx.send((Err(Error::Lookup { key: key.to_string(), source: Box::new(e) }), cost));
                }
            }
            _ => {}
        }
        if last && let Some((key, tx, acc)) = self.gets.remove(&id) {
            let r = match key {
                Key::Node(_) => Err(Error::NotFound { key: key.to_string() }),
                _ => {
                    let mut v: Vec<String> = acc.iter().map(|p| p.to_string()).collect();
                    v.sort();
                    v.dedup();
                    Ok(Found::Providers(v))
                }
            };
            let found = matches!(&r, Ok(Found::Providers(v)) if !v.is_empty());
            self.lookups.record(found, cost.ms);
            let _ = tx.send((r, cost));
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        // The peer an event concerns, on whatever handling it logs.
        let peer = match &ev {
            SwarmEvent::ConnectionEstablished { peer_id, .. } | SwarmEvent::ConnectionClosed { peer_id, .. } => {
                Some(*peer_id)
            }
            SwarmEvent::OutgoingConnectionError { peer_id, .. } => *peer_id,
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, .. })) => {
                Some(*peer_id)
            }
            SwarmEvent::Behaviour(
                BehaviourEvent::Heartbeat(request_response::Event::Message { peer, .. })
                | BehaviourEvent::Pex(request_response::Event::Message { peer, .. })
                | BehaviourEvent::Relay(request_response::Event::Message { peer, .. })
                | BehaviourEvent::Round(request_response::Event::Message { peer, .. }),
            ) => Some(*peer),
            _ => None,
        };
        let _span = peer.map(|p| tracing::debug_span!("peer", peer = %p).entered());
        match ev {
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                self.listen.push(address);
                self.refresh_announcement();
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                if self.blocked.contains(&peer_id) {
                    self.count("blocked connection");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let first = !self.peers.get(&peer_id).is_some_and(|p| p.connected);
                let p = self.peer(peer_id);
                if !p.connected {
                    p.connected_at = Instant::now();
                }
                p.connected = true;
                p.probe_failed = false;
                p.last_seen = Instant::now();
                // A new connection is a new chance: a peer unresponsive before must be silent
                // for another `stale_after` to be marked again.
                if matches!(p.state, State::Stale | State::Unresponsive) {
                    p.state = State::Candidate;
                }
                if endpoint.is_dialer() {
                    self.learn_addr(peer_id, endpoint.get_remote_address().clone());
                }
                if first {
                    // New neighbours learn about us right away (they relay onward if their
                    // tier allows), and answer a heartbeat, which makes them live. Kademlia
                    // reconnects to the same peers again and again (connections close when
                    // idle): a peer already sent this announcement, or heard within a
                    // heartbeat interval, is not sent it, or a heartbeat, again.
                    let version = self.own_version;
                    let fresh_within = secs(self.cfg.liveness.heartbeat_interval);
                    let p = self.peer(peer_id);
                    let tell = std::mem::replace(&mut p.told, version) != version;
                    let fresh = p.last_heartbeat.is_some_and(|t| t.elapsed() < fresh_within);
                    if tell {
                        self.announce_to(peer_id);
                    }
                    if !fresh {
                        let hb = self.heartbeat_bytes();
                        self.swarm.behaviour_mut().heartbeat.send_request(&peer_id, hb);
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connected = false;
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(pid), .. } => {
                if let Some(p) = self.peers.get_mut(&pid)
                    && !p.connected
                {
                    p.probe_failed = true;
                }
            }
            // The gate denied a banned or blocked peer's connection as it was established.
            SwarmEvent::IncomingConnectionError { error: libp2p::swarm::ListenError::Denied { cause }, .. }
                if cause.downcast_ref::<libp2p::allow_block_list::Blocked>().is_some() =>
            {
                self.count("blocked connection");
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Kad(e) => self.on_kad(e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != IDENTIFY {
                    self.count("identify foreign protocol");
                    return;
                }
                let ours = info.protocols.iter().any(|p| p.as_ref() == self.cfg.dht.protocol);
                let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(8).collect();
                for a in &addrs {
                    self.learn_addr(peer_id, a.clone());
                }
                if ours {
                    self.route(peer_id, &addrs);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (pid, addr) in list {
                    if pid != self.peer_id && !self.blocked.contains(&pid) {
                        self.learn_addr(pid, addr.clone());
                        if self.connected() < self.cfg.limits.target_connections {
                            let _ = self.swarm.dial(addr);
                        }
                    }
                }
            }
            BehaviourEvent::Heartbeat(request_response::Event::Message { peer, message, .. }) => match message {
                request_response::Message::Request { request, channel, .. } => {
                    if !self.allow_request(peer) {
                        return;
                    }
                    if self.check_heartbeat(peer, &request) {
                        let hb = self.heartbeat_bytes();
                        let _ = self.swarm.behaviour_mut().heartbeat.send_response(channel, hb);
                    }
                }
                request_response::Message::Response { response, .. } => {
                    self.check_heartbeat(peer, &response);
                }
            },
            BehaviourEvent::Pex(request_response::Event::Message { peer, message, .. }) => match message {
                request_response::Message::Request { channel, .. } => {
                    if self.allow_request(peer) {
                        let answer = self.pex_answer(peer);
                        let _ = self.swarm.behaviour_mut().pex.send_response(channel, answer);
                    }
                }
                request_response::Message::Response { response, .. } => self.on_pex_answer(peer, &response),
            },
            BehaviourEvent::Relay(request_response::Event::Message { peer, message, .. }) => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let _ = self.swarm.behaviour_mut().relay.send_response(channel, Vec::new());
                    if self.allow_request(peer) {
                        self.on_relay(peer, &request);
                    }
                }
                request_response::Message::Response { .. } => {}
            },
            BehaviourEvent::Round(ev) => self.on_round(ev),
            _ => {}
        }
    }

    fn on_round(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let Some(inbound) = self.inbound.clone() else {
                        self.count("round unserved");
                        return;
                    };
                    if self.blocked.contains(&peer) || !self.allow_round_request(peer) {
                        return;
                    }
                    let announcement =
                        self.peers.get(&peer).and_then(|p| p.announcement.as_ref()).and_then(|b| {
                            Announcement::open(b, &Limits::default(), vain_schema::clock::unix_ms()).ok()
                        });
                    let (tx, rx) = oneshot::channel();
                    if inbound.try_send(Inbound { peer, announcement, request, reply: tx }).is_err() {
                        // Dropping the channel tells the requester no answer is coming.
                        self.count("round busy");
                        return;
                    }
                    let replies = self.replies.0.clone();
                    tokio::spawn(async move {
                        if let Ok(answer) = rx.await {
                            let _ = replies.send((channel, answer)).await;
                        }
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, tx)) = self.requests.remove(&request_id) {
                        let _ = tx.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                if let Some((peer, tx)) = self.requests.remove(&request_id) {
                    let _ = tx.send(Err(Error::Request { peer: peer.to_string(), source: Box::new(error) }));
                }
            }
            _ => {}
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        // Periodic work starts at a phase of its own per node: nodes started together (a fleet
        // restarted at once, the scale measurement) would otherwise all heartbeat and exchange
        // at the same instant, and every lookup in that instant waits behind the burst.
        let phase = {
            let b = self.peer_id.to_bytes();
            let n = b.len();
            f64::from(u16::from_le_bytes([b[n - 2], b[n - 1]])) / f64::from(u16::MAX)
        };
        let spread = |period: f64| {
            let period = secs(period);
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(phase), period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        };
        let mut hb = spread(self.cfg.liveness.heartbeat_interval);
        let mut pex = spread(self.cfg.pex.interval);
        let mut beacon_tick = tokio::time::interval(secs(self.cfg.beacon.interval));
        let mut republish = tokio::time::interval(secs(self.cfg.dht.republish_interval));
        let mut bootstrap = spread(self.cfg.dht.bootstrap_interval);
        let mut provided = false;
        let mut buf = vec![0u8; beacon::MAX_DATAGRAM + 1];
        let Some(mut replies) = self.replies.1.take() else { return };
        loop {
            tokio::select! {
                Some((channel, answer)) = replies.recv() => {
                    let _ = self.swarm.behaviour_mut().round.send_response(channel, answer);
                }
                ev = self.swarm.select_next_some() => self.on_event(ev),
                cmd = cmds.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = hb.tick() => self.on_heartbeat_tick(),
                _ = pex.tick() => self.on_pex_tick(),
                _ = bootstrap.tick() => {
                    // A node whose first contacts were few or poorly placed keeps looking
                    // instead of waiting for Kademlia's 5-minute bootstrap.
                    // (In a network smaller than k, a full table is every peer we know.)
                    let want = self.cfg.dht.replication_factor.min(self.peers.len());
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    let routing: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
                    if routing > 0 && routing < want {
                        let _ = kad.bootstrap();
                    }
                }
                _ = tokio::time::sleep_until(self.settle.next), if !self.settle.done() => self.settle_check(),
                _ = republish.tick() => {
                    self.refresh_announcement();
                    if !provided && self.roles & roles::AGGREGATOR != 0 {
                        for m in self.cfg.models.clone() {
                            let _ = self.swarm.behaviour_mut().kad.start_providing(Key::aggregators(&m).record_key());
                        }
                        provided = true;
                    }
                }
                _ = beacon_tick.tick(), if self.beacon.is_some() => {
                    if let (Some((sock, to, _)), Some(d)) = (self.beacon.as_ref(), beacon::encode(&self.own)) {
                        let _ = sock.send_to(&d, *to).await;
                    }
                }
                r = recv_beacon(self.beacon.as_ref(), &mut buf) => {
                    if let Some((n, from)) = r {
                        let d = buf[..n].to_vec();
                        self.on_beacon(&d, from);
                    }
                }
            }
        }
    }
}

/// The next beacon datagram, or never when there is no beacon socket.
async fn recv_beacon(
    b: Option<&(tokio::net::UdpSocket, SocketAddr, beacon::RateLimit)>,
    buf: &mut [u8],
) -> Option<(usize, SocketAddr)> {
    match b {
        Some((sock, _, _)) => sock.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}
