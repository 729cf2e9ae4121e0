//! The ingest endpoint: QUIC (quinn-proto, sans-IO) on glommio's thread-per-core executors.
//! A [`Server`] binds K UDP sockets to one address (SO_REUSEPORT), one per shard; each shard is a
//! glommio executor on its own thread (pinned to a core on request) with its own
//! `quinn_proto::Endpoint`, and shards share nothing. Connection IDs carry the shard index in
//! their first byte and a classic BPF program on the port's reuseport group sends short-header
//! packets to that shard; handshakes stay on the socket the kernel's 4-tuple hash picked.
//!
//! Each unidirectional stream carries one frame (docs/protocol.md §3), read chunk by chunk into
//! the sans-IO [`crate::frame::Decoder`] (limits checked before allocating, payload in a 64-byte
//! aligned buffer) and handed, complete, to the shard's handler with the sender's
//! TLS-authenticated identity. Admission caps (per address, per identity, total, retry under
//! handshake load) and per-peer token buckets ([`crate::limit`]) apply per shard.
//!
//! Datagram I/O: with `offload` (the default) a shard receives with UDP_GRO and sends with
//! UDP_SEGMENT through `recvmsg`/`sendmsg` on its own thread, waiting for readability on
//! io_uring; without it, every datagram goes through glommio's io_uring `recv_from`/`send_to`
//! (glommio's operations carry no control messages, so they cannot do GRO/GSO).

use crate::buf::{Pinner, Pool, PoolLimits};
use crate::frame::{Decoder, Frame};
use crate::limit::{Admission, Attempts, Caps, Peers, Rates};
use crate::{tls, udp};
use bytes::{Bytes, BytesMut};
use glommio::net::UdpSocket;
use glommio::{LocalExecutorBuilder, Placement};
use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{
    ConnectionHandle, ConnectionId, ConnectionIdGenerator, DatagramEvent, Dir, EndpointConfig, Event, ServerConfig,
    StreamEvent, StreamId, Transmit, TransportConfig, VarInt,
};
use socket2::{SockAddr, Socket};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use vain_schema::Limits;

/// A peer's Ed25519 public key, as its TLS raw public key proved it.
pub type Peer = [u8; 32];

/// Bytes of a connection ID this endpoint issues: the shard index, then 7 random bytes.
const CID_LEN: usize = 8;
/// Application error codes a shard closes streams and connections with.
const STOP_BAD_FRAME: u32 = 1;
const STOP_RATE: u32 = 2;
const CLOSE_CAP: u32 = 3;

/// Endpoint settings.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on (every shard binds it).
    pub listen: SocketAddr,
    /// TLS (from [`tls::server_config`]).
    pub tls: rustls::ServerConfig,
    /// Frame limits.
    pub limits: Limits,
    /// Per-stream receive window in bytes (sized for multi-MB deltas).
    pub stream_window: u32,
    /// Concurrent unidirectional streams per connection.
    pub max_streams: u32,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Largest UDP payload accepted and probed for (path-MTU discovery's upper bound): 1472
    /// for Ethernet, 8952 for jumbo frames (the default: a path that carries less loses the
    /// probes and keeps its size), up to [`MAX_UDP_PAYLOAD`] on loopback.
    pub max_udp_payload: u16,
    /// Socket receive and send buffer sizes in bytes (the kernel caps them at
    /// `net.core.rmem_max`/`wmem_max`): bursts of datagrams must fit while the shard is busy.
    pub socket_buffer: usize,
    /// UDP payload size the connection starts with (≥ 1200; raise it only where the path is
    /// known to carry it, e.g. loopback).
    pub initial_mtu: u16,
    /// Connection caps, per shard.
    pub caps: Caps,
    /// Per-peer rates, per shard.
    pub rates: Rates,
    /// Peers whose rate state a shard keeps.
    pub max_peers: usize,
    /// Receive with UDP_GRO and send with UDP_SEGMENT (see the module docs); off, every
    /// datagram is an io_uring operation.
    pub offload: bool,
    /// Pin shard i to CPU i (modulo the CPUs online).
    pub pin: bool,
    /// Datagrams a shard gathers before it drives its connections (reads their streams and
    /// acknowledges), unless `gather_wait` passes first, a handshake is under way or a timer is
    /// due; 0 drives after every receive. Fewer, larger acknowledgements cost both ends less.
    pub gather: usize,
    /// Longest a received datagram waits for others to gather (at most [`MAX_GATHER_WAIT`];
    /// QUIC lets an acknowledgement wait 25 ms).
    pub gather_wait: Duration,
    /// How long an idle shard keeps polling before it sleeps (at most [`MAX_SPIN`]): glommio
    /// issues a `membarrier` (an interrupt to every core running the process) each time an
    /// executor goes to sleep.
    pub spin: Duration,
    /// Each shard's pool of payload buffers (buffers return to it when the handler's consumer
    /// drops them); `None` allocates a fresh buffer per frame.
    pub pool: Option<PoolLimits>,
    /// Page-locks the pools' buffers for a device backend (see [`crate::buf::Pinner`]).
    pub page_lock: Option<Arc<dyn Pinner>>,
}

impl Config {
    /// Defaults for `listen` with `tls`: 64 MiB stream windows, 256 streams, 30 s idle,
    /// datagrams from 1200 bytes up to what MTU discovery finds (at most 8952).
    pub fn new(listen: SocketAddr, tls: rustls::ServerConfig) -> Self {
        Self {
            listen,
            tls,
            limits: Limits::default(),
            stream_window: 64 << 20,
            max_streams: 256,
            idle_timeout: Duration::from_secs(30),
            max_udp_payload: 8952,
            initial_mtu: 1200,
            socket_buffer: 4 << 20,
            caps: Caps::default(),
            rates: Rates::default(),
            max_peers: 4096,
            offload: true,
            pin: false,
            gather: 128,
            gather_wait: Duration::from_micros(300),
            spin: Duration::from_micros(50),
            pool: Some(PoolLimits::default()),
            page_lock: None,
        }
    }

    /// The QUIC server config (also what the quinn-on-tokio baseline uses, so both run the
    /// same TLS and transport settings).
    pub fn server_config(&self) -> Result<ServerConfig, Error> {
        let crypto = QuicServerConfig::try_from(self.tls.clone())?;
        let mut sc = ServerConfig::with_crypto(Arc::new(crypto));
        sc.transport_config(Arc::new(self.transport()?));
        Ok(sc)
    }

    /// The endpoint settings (the largest UDP payload accepted).
    pub fn endpoint_config(&self) -> Result<EndpointConfig, Error> {
        endpoint_config(self.max_udp_payload)
    }

    /// The transport settings: windows sized for multi-MB deltas, uni streams only.
    pub fn transport(&self) -> Result<TransportConfig, Error> {
        transport_config(
            self.stream_window,
            self.max_streams,
            self.idle_timeout,
            self.initial_mtu,
            self.max_udp_payload,
        )
    }
}

/// Endpoint settings accepting UDP payloads up to `max_udp_payload` (clients use it too).
pub fn endpoint_config(max_udp_payload: u16) -> Result<EndpointConfig, Error> {
    let mut e = EndpointConfig::default();
    e.max_udp_payload_size(max_udp_payload).map_err(|_| Error::Config("max_udp_payload"))?;
    Ok(e)
}

/// Largest UDP payload the transport accepts: the most an IPv4 datagram can carry (loopback's
/// MTU is 65 536). Jumbo frames (9 000-byte MTU, 8 972-byte payloads) are the useful setting on
/// real networks; see docs/benchmarks.md for what larger datagrams do on loopback.
pub const MAX_UDP_PAYLOAD: u16 = 65_507;

/// RFC 9002's initial congestion window for datagrams of `mtu` bytes:
/// min(10 × mtu, max(2 × mtu, 14 720)).
pub fn initial_window(mtu: u16) -> u64 {
    let mtu = u64::from(mtu);
    (10 * mtu).min((2 * mtu).max(14_720))
}

/// Transport settings shared by the shards, the clients and the quinn baseline: stream and
/// connection windows, uni streams only, the idle timeout and the MTU range (at most
/// [`MAX_UDP_PAYLOAD`]; larger is [`Error::Config`]).
pub fn transport_config(
    stream_window: u32,
    max_streams: u32,
    idle_timeout: Duration,
    initial_mtu: u16,
    max_udp_payload: u16,
) -> Result<TransportConfig, Error> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(stream_window));
    t.receive_window(VarInt::from_u32(stream_window.saturating_mul(4)));
    t.send_window(u64::from(stream_window.saturating_mul(4)));
    t.max_concurrent_uni_streams(VarInt::from_u32(max_streams));
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.max_idle_timeout(Some(idle_timeout.try_into().map_err(|_| Error::Config("idle timeout"))?));
    if initial_mtu < 1200 || initial_mtu > max_udp_payload {
        return Err(Error::Config("initial_mtu must be in [1200, max_udp_payload]"));
    }
    if max_udp_payload > MAX_UDP_PAYLOAD {
        return Err(Error::Config("max_udp_payload above 65 507 (an IPv4 datagram's limit)"));
    }
    t.initial_mtu(initial_mtu);
    // quinn's default initial congestion window is 12 000 bytes whatever the datagram size (RFC
    // 9002's value for 1200-byte datagrams), and a sender whose next datagram would fill the
    // window waits for acknowledgements: with datagrams of 12 000 bytes or more, nothing was
    // ever sent. RFC 9002 §7.2 scales the window with the datagram size.
    let mut cc = quinn_proto::congestion::CubicConfig::default();
    cc.initial_window(initial_window(initial_mtu));
    t.congestion_controller_factory(Arc::new(cc));
    let mut mtud = quinn_proto::MtuDiscoveryConfig::default();
    mtud.upper_bound(max_udp_payload);
    t.mtu_discovery_config(Some(mtud));
    Ok(t)
}

/// Why the endpoint could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket or executor failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A glommio socket operation failed (glommio's error as the I/O error it maps to: its own
    /// type is not `Sync`).
    #[error("glommio: {0}")]
    Glommio(#[source] std::io::Error),
    /// The TLS config does not suit QUIC.
    #[error("tls: {0}")]
    Tls(#[from] quinn_proto::crypto::rustls::NoInitialCipherSuite),
    /// A setting is out of range.
    #[error("bad setting: {0}")]
    Config(&'static str),
    /// The executor could not start (e.g. RLIMIT_MEMLOCK below 512 KiB, io_uring unavailable).
    #[error("executor: {0}")]
    Executor(#[source] std::io::Error),
}

impl From<glommio::GlommioError<()>> for Error {
    fn from(e: glommio::GlommioError<()>) -> Self {
        Error::Glommio(e.into())
    }
}

/// What a shard saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received (after splitting coalesced receives).
    pub datagrams: u64,
    /// Receive calls that returned data (with GRO, several datagrams each).
    pub receives: u64,
    /// Datagrams sent: acknowledgements, handshakes, retries, refusals.
    pub sent: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Frames completed and handed over.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub frame_bytes: u64,
    /// Streams dropped for a bad frame (size over limits, truncation, bad padding).
    pub bad_frames: u64,
    /// Handshakes that failed (a wrong or denied key shows up here).
    pub refused: u64,
    /// Connections refused or closed at a cap (total, per address, per identity).
    pub capped: u64,
    /// Streams stopped because the peer was over its rate.
    pub throttled: u64,
    /// Retry packets sent (address validation under handshake load).
    pub retries: u64,
    /// Short-header packets for another shard's connection ID, dropped.
    pub misrouted: u64,
    /// CPU time the shard's thread used, in nanoseconds (its own work: receive, decrypt,
    /// reassemble, and the handler's).
    pub cpu_ns: u64,
    /// Payload buffers reused from the shard's pool.
    pub pool_reused: u64,
    /// Payload buffers the pool had to allocate.
    pub pool_allocated: u64,
    /// Of those, the ones page-locked for the device backend.
    pub pool_pinned: u64,
    /// Connections open when these figures were taken.
    pub open: u64,
    /// Connection attempts (Initial packets for unknown connections) over their address's
    /// budget ([`Caps::attempts_per_address`]), dropped unread.
    pub shed: u64,
}

/// Each shard's figures while the server runs, published by the shard about every
/// [`LIVE_EVERY`] (a node's metrics read them).
#[derive(Debug, Clone)]
pub struct Live(Arc<Vec<std::sync::Mutex<Stats>>>);

/// How often a shard publishes its figures.
pub const LIVE_EVERY: Duration = Duration::from_millis(250);

impl Live {
    fn new(shards: usize) -> Live {
        Live(Arc::new((0..shards).map(|_| std::sync::Mutex::new(Stats::default())).collect()))
    }

    /// The latest figures of every shard.
    pub fn snapshot(&self) -> Vec<Stats> {
        self.0.iter().map(|s| s.lock().map(|s| s.clone()).unwrap_or_default()).collect()
    }

    fn publish(&self, shard: usize, stats: &Stats, open: usize) {
        if let Some(slot) = self.0.get(shard)
            && let Ok(mut s) = slot.lock()
        {
            *s = Stats { open: open as u64, ..stats.clone() };
        }
    }
}

impl Stats {
    /// A server's total over its shards.
    pub fn total(shards: &[Stats]) -> Stats {
        let mut t = Stats::default();
        for s in shards {
            t.add(s);
        }
        t
    }

    /// Adds `other` into `self` (a server's total over its shards).
    pub fn add(&mut self, o: &Stats) {
        self.datagrams += o.datagrams;
        self.receives += o.receives;
        self.sent += o.sent;
        self.connections += o.connections;
        self.frames += o.frames;
        self.frame_bytes += o.frame_bytes;
        self.bad_frames += o.bad_frames;
        self.refused += o.refused;
        self.capped += o.capped;
        self.throttled += o.throttled;
        self.retries += o.retries;
        self.misrouted += o.misrouted;
        self.cpu_ns += o.cpu_ns;
        self.pool_reused += o.pool_reused;
        self.pool_allocated += o.pool_allocated;
        self.pool_pinned += o.pool_pinned;
        self.open += o.open;
        self.shed += o.shed;
    }
}

/// Connection IDs that name their shard: byte 0 is the shard index.
struct ShardCid {
    shard: u8,
}

impl ConnectionIdGenerator for ShardCid {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut b = [0u8; CID_LEN];
        b[0] = self.shard;
        // The rest only has to be unpredictable enough not to collide; getrandom failing
        // (no entropy source) leaves zeros, which quinn-proto's duplicate check then catches.
        let _ = getrandom::fill(&mut b[1..]);
        ConnectionId::new(&b)
    }
    fn validate(&self, cid: &ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if cid.len() == CID_LEN && cid[0] == self.shard { Ok(()) } else { Err(quinn_proto::InvalidCid) }
    }
    fn cid_len(&self) -> usize {
        CID_LEN
    }
    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

struct Conn {
    conn: quinn_proto::Connection,
    remote: IpAddr,
    peer: Option<Peer>,
    streams: HashMap<StreamId, (Decoder, bool)>,
    in_handshake: bool,
    admitted: bool,
    /// The connection's timer as the shard's timer set holds it.
    timer: Option<Instant>,
}

/// Whether this machine can run a shard: starts a glommio executor (io_uring, locked memory)
/// and binds a UDP socket on loopback through it.
pub fn probe() -> Result<(), Error> {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("vain-probe")
        .spawn(|| async { UdpSocket::bind("127.0.0.1:0").map(|_| ()).map_err(Error::from) })
        .map_err(|e| Error::Executor(e.into()))?;
    ex.join().map_err(|e| Error::Executor(e.into()))?
}

/// Bound sockets, one per shard, ready to run.
pub struct Server {
    cfg: Config,
    sockets: Vec<Socket>,
    addr: SocketAddr,
    routed: bool,
    live: Live,
}

impl Server {
    /// Binds `shards` sockets (1 to 255) on `cfg.listen` (port 0 picks a free port) and
    /// installs the connection-ID router on them.
    pub fn bind(cfg: Config, shards: usize) -> Result<Self, Error> {
        if shards == 0 || shards > 255 {
            return Err(Error::Config("shards must be 1 to 255"));
        }
        cfg.server_config()?;
        cfg.endpoint_config()?;
        // Held longer, datagrams would wait past the acknowledgement delay the peer expects
        // (25 ms) and it would retransmit what arrived.
        if cfg.gather_wait > MAX_GATHER_WAIT {
            return Err(Error::Config("gather_wait above 10 ms"));
        }
        if cfg.spin > MAX_SPIN {
            return Err(Error::Config("spin above 10 ms"));
        }
        let mut sockets = Vec::with_capacity(shards);
        let first = bind(cfg.listen, cfg.socket_buffer)?;
        let addr = first.local_addr()?.as_socket().ok_or(Error::Config("listen address"))?;
        sockets.push(first);
        for _ in 1..shards {
            sockets.push(bind(addr, cfg.socket_buffer)?);
        }
        // Without the router (very old kernels, seccomp) the 4-tuple hash still keeps each
        // connection on one socket unless the client's address changes.
        let routed = shards == 1 || udp::attach_shard_router(&sockets[0], shards as u32).is_ok();
        if cfg.offload {
            for s in &sockets {
                // Without GRO every datagram is its own receive; correct, only slower.
                let _ = udp::enable_gro(s);
            }
        }
        Ok(Self { cfg, sockets, addr, routed, live: Live::new(shards) })
    }

    /// The shards' figures while they run.
    pub fn live(&self) -> Live {
        self.live.clone()
    }

    /// The address the shards listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether packets are routed to shards by connection ID in the kernel.
    pub fn routed(&self) -> bool {
        self.routed
    }

    /// Runs the shards until `stop` is set, handler i on shard i (one handler per socket); each
    /// gets every complete frame its shard receives with the sender's key. Returns each shard's
    /// figures.
    pub fn run<H>(self, handlers: Vec<H>, stop: Arc<AtomicBool>) -> Result<Vec<Stats>, Error>
    where
        H: FnMut(Peer, Frame) + Send + 'static,
    {
        if handlers.len() != self.sockets.len() {
            return Err(Error::Config("one handler per shard"));
        }
        let server = Arc::new(self.cfg.server_config()?);
        let base = self.cfg.endpoint_config()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut joins = Vec::with_capacity(handlers.len());
        for (i, (sock, handler)) in self.sockets.into_iter().zip(handlers).enumerate() {
            let mut endpoint = base.clone();
            let shard = i as u8;
            endpoint.cid_generator(move || Box::new(ShardCid { shard }));
            let ctx = ShardCtx {
                index: shard,
                endpoint: Arc::new(endpoint),
                server: server.clone(),
                cfg: self.cfg.clone(),
                stop: stop.clone(),
                multi: joins.capacity() > 1,
                live: self.live.clone(),
            };
            let placement = if self.cfg.pin { Placement::Fixed(i % cpus) } else { Placement::Unbound };
            let ex = LocalExecutorBuilder::new(placement)
                .spin_before_park(self.cfg.spin)
                .name(&format!("vain-shard-{i}"))
                .spawn(move || async move { shard_main(ctx, sock, handler).await })
                .map_err(|e| Error::Executor(e.into()))?;
            joins.push(ex);
        }
        joins.into_iter().map(|j| j.join().map_err(|e| Error::Executor(e.into()))?).collect()
    }
}

/// Runs one shard on `cfg.listen` until `stop` is set (see [`Server`]).
pub fn run_shard(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    handler: impl FnMut(Peer, Frame) + Send + 'static,
) -> Result<Stats, Error> {
    let mut stats = Server::bind(cfg.clone(), 1)?.run(vec![handler], stop)?;
    Ok(stats.pop().unwrap_or_default())
}

/// A UDP socket bound to `listen` with the shards' socket settings (receive and send buffers
/// of `buffer` bytes), for a transport on another runtime: the quinn baseline gets the same
/// buffers as the shards it is compared with.
pub fn bind_udp(listen: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, Error> {
    Ok(bind(listen, buffer)?.into())
}

/// A UDP socket with SO_REUSEPORT (one per shard on the same address) and large buffers.
/// glommio's own `bind` cannot size the buffers.
fn bind(listen: SocketAddr, buffer: usize) -> Result<Socket, Error> {
    use socket2::{Domain, Protocol, Type};
    let sock = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    sock.set_recv_buffer_size(buffer)?;
    sock.set_send_buffer_size(buffer)?;
    // Blocking, as glommio's own sockets are: its io_uring operations wait for data, and
    // its direct syscalls (and ours) pass MSG_DONTWAIT.
    sock.bind(&listen.into())?;
    Ok(sock)
}

/// Hands a duplicate of `sock`'s descriptor to glommio (same socket, its own fd).
fn glommio_socket(sock: &Socket) -> Result<UdpSocket, Error> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = sock.try_clone()?.into_raw_fd();
    // SAFETY: `fd` is a fresh duplicate of a bound UDP socket, owned by nobody else since
    // `into_raw_fd`; glommio takes ownership and closes it on drop.
    #[allow(unsafe_code)]
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    Ok(socket)
}

struct ShardCtx {
    index: u8,
    endpoint: Arc<EndpointConfig>,
    server: Arc<ServerConfig>,
    cfg: Config,
    stop: Arc<AtomicBool>,
    multi: bool,
    live: Live,
}

/// How a shard moves datagrams.
enum Io {
    /// recvmsg with GRO, sendmsg with GSO (at most `gso` datagrams per send); io_uring only to
    /// wait for readability.
    Offload { sock: Socket, ring: UdpSocket, arena: BytesMut, family: SockAddr, gso: usize },
    /// Every datagram an io_uring operation, through a dedicated receive task (an in-flight
    /// `recv_from` must never be dropped: glommio would cancel the request and lose a datagram
    /// that already arrived) feeding a bounded channel.
    Ring { ring: Rc<UdpSocket>, rx: glommio::channels::local_channel::LocalReceiver<(BytesMut, SocketAddr)> },
}

/// Datagrams of up to `max_udp_payload` bytes one GSO send may carry: the kernel refuses a
/// send over 64 KiB (quinn-proto would take that as loss), and more than 10 gains little.
pub fn gso_segments(max_udp_payload: u16) -> usize {
    (65_507 / usize::from(max_udp_payload.max(1200))).clamp(1, 10)
}

/// Longest [`Config::gather_wait`] accepted.
pub const MAX_GATHER_WAIT: Duration = Duration::from_millis(10);

/// Longest [`Config::spin`] accepted (a shard that spins longer is a busy loop).
pub const MAX_SPIN: Duration = Duration::from_millis(10);

/// When a shard stops gathering datagrams and drives its connections.
#[derive(Debug, Clone, Copy)]
struct Gather {
    /// Drive once this many datagrams have arrived since the last drive (0: after every receive).
    datagrams: usize,
    /// Drive once the first of them has waited this long.
    wait: Duration,
}

impl Gather {
    /// Whether to drive now: the last wait brought nothing (`arrived` = 0), enough datagrams have
    /// gathered, or the first of them (at `first`) has waited long enough. Handshakes and due
    /// timers are the caller's to add.
    fn done(self, arrived: usize, gathered: usize, first: Instant, now: Instant) -> bool {
        arrived == 0 || gathered >= self.datagrams || now >= first + self.wait
    }
}

/// Datagrams taken per pass before the connections are driven.
const BATCH: usize = 256;

impl Io {
    fn new(sock: Socket, offload: bool, max_udp_payload: u16) -> Result<Self, Error> {
        let ring = glommio_socket(&sock)?;
        if offload {
            let family = match sock.local_addr()?.as_socket() {
                Some(SocketAddr::V6(_)) => SockAddr::from(SocketAddr::from(([0u16; 8], 0))),
                _ => SockAddr::from(SocketAddr::from(([0u8; 4], 0))),
            };
            let gso = gso_segments(max_udp_payload);
            return Ok(Io::Offload { sock, ring, arena: BytesMut::new(), family, gso });
        }
        let ring = Rc::new(ring);
        let (tx, rx) = glommio::channels::local_channel::new_bounded::<(BytesMut, SocketAddr)>(4096);
        let rsock = ring.clone();
        glommio::spawn_local(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = rsock.recv_from(&mut buf).await {
                if tx.send((BytesMut::from(&buf[..n]), from)).await.is_err() {
                    break;
                }
            }
        })
        .detach();
        Ok(Io::Ring { ring, rx })
    }

    /// Waits up to `wait` for datagrams, then takes what is queued, up to [`BATCH`].
    async fn next_batch(
        &mut self,
        wait: Duration,
        out: &mut Vec<(BytesMut, SocketAddr)>,
        stats: &mut Stats,
    ) -> Result<(), Error> {
        match self {
            Io::Offload { sock, ring, arena, family, .. } => {
                drain(sock, arena, family, out, stats)?;
                if out.is_empty() && !wait.is_zero() {
                    let mut one = [0u8; 1];
                    // A peek consumes nothing, so abandoning it on the timeout loses nothing.
                    // (`peek` is recv(2), which glommio refuses on an unconnected socket.)
                    let _ = glommio::timer::timeout(wait, async { ring.peek_from(&mut one).await }).await;
                    drain(sock, arena, family, out, stats)?;
                }
            }
            Io::Ring { rx, .. } => {
                let got = glommio::timer::timeout(wait, async { Ok(rx.recv().await) }).await;
                match got {
                    Ok(Some(d)) => out.push(d),
                    Ok(None) => return Err(Error::Io(std::io::Error::other("the UDP receive task stopped"))),
                    Err(glommio::GlommioError::TimedOut(_)) => {}
                    Err(e) => return Err(Error::Glommio(e.into())),
                }
                while out.len() < BATCH {
                    match futures_lite::future::poll_once(rx.recv()).await {
                        Some(Some(d)) => out.push(d),
                        _ => break,
                    }
                }
                stats.receives += out.len() as u64;
            }
        }
        Ok(())
    }

    /// Sends one transmit (several datagrams when `segment_size` is set); returns how many.
    async fn send(&self, t: &Transmit, data: &[u8]) -> Result<u64, Error> {
        let seg = t.segment_size.unwrap_or(t.size).max(1);
        match self {
            Io::Offload { sock, .. } => udp::send(sock, &data[..t.size], t.destination, t.segment_size)?,
            Io::Ring { ring, .. } => {
                for d in data[..t.size].chunks(seg) {
                    ring.send_to(d, t.destination).await?;
                }
            }
        }
        Ok(t.size.div_ceil(seg) as u64)
    }

    /// Datagrams one `poll_transmit` may return.
    fn max_datagrams(&self) -> usize {
        match self {
            Io::Offload { gso, .. } => *gso,
            Io::Ring { .. } => 1,
        }
    }
}

/// Takes queued receives without blocking, splitting coalesced ones into datagrams.
fn drain(
    sock: &Socket,
    arena: &mut BytesMut,
    family: &SockAddr,
    out: &mut Vec<(BytesMut, SocketAddr)>,
    stats: &mut Stats,
) -> Result<(), Error> {
    while out.len() < BATCH {
        let Some(r) = udp::recv(sock, arena, family)? else { break };
        stats.receives += 1;
        let mut data = r.data;
        if let Some(stride) = r.stride {
            while data.len() > stride {
                out.push((data.split_to(stride), r.from));
            }
        }
        out.push((data, r.from));
    }
    Ok(())
}

async fn shard_main(ctx: ShardCtx, sock: Socket, handler: impl FnMut(Peer, Frame)) -> Result<Stats, Error> {
    let cpu0 = udp::thread_cpu_ns();
    let mut io = Io::new(sock, ctx.cfg.offload, ctx.cfg.max_udp_payload)?;
    let endpoint = quinn_proto::Endpoint::new(ctx.endpoint.clone(), Some(ctx.server.clone()), true, None);
    let mut shard = Shard {
        index: ctx.index,
        multi: ctx.multi,
        endpoint,
        conns: HashMap::new(),
        stats: Stats::default(),
        admission: Admission::new(ctx.cfg.caps),
        peers: Peers::new(ctx.cfg.rates, ctx.cfg.max_peers, 60_000_000_000),
        limits: ctx.cfg.limits.clone(),
        pool: ctx.cfg.pool.map(|l| Pool::with_pinner(l, ctx.cfg.page_lock.clone())),
        handler,
        epoch: Instant::now(),
        readable: Vec::new(),
        timers: BTreeSet::new(),
        attempts: (ctx.cfg.caps.attempts_per_address > 0)
            .then(|| Attempts::new(ctx.cfg.caps.attempts_per_address, ctx.cfg.max_peers, 60_000_000_000)),
    };
    let mut out = Vec::with_capacity(65_536);
    let mut batch = Vec::with_capacity(BATCH);
    let mut dirty: Vec<ConnectionHandle> = Vec::new();
    let gather = Gather { datagrams: ctx.cfg.gather, wait: ctx.cfg.gather_wait };
    // Datagrams handed to their connections since the connections were last driven, and when
    // the first of them came.
    let (mut gathered, mut since) = (0usize, None::<Instant>);
    let mut published = Instant::now();
    while !ctx.stop.load(Ordering::Relaxed) {
        if published.elapsed() >= LIVE_EVERY {
            ctx.live.publish(usize::from(ctx.index), &shard.stats, shard.conns.len());
            published = Instant::now();
        }
        // Wait for a datagram, the earliest connection timer or the end of gathering, at most
        // 50 ms (to see `stop`).
        let timer = shard.timers.first().map(|(t, _)| *t);
        let next = match since {
            Some(t) => Some(timer.map_or(t + gather.wait, |n| n.min(t + gather.wait))),
            None => timer,
        };
        let wait = next.map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()));
        io.next_batch(wait.min(Duration::from_millis(50)), &mut batch, &mut shard.stats).await?;
        let now = Instant::now();
        let arrived = batch.len();
        for (data, from) in batch.drain(..) {
            shard.datagram(now, from, data, &mut out, &io, &mut dirty).await?;
        }
        // Driving a connection reads its streams and acknowledges what arrived; after every
        // burst a sender's GSO send makes, that is an ACK per few datagrams, each costing an
        // encrypted packet and a sendmsg here and a receive and ACK processing at the sender.
        gathered += arrived;
        let first = *since.get_or_insert(now);
        // A timer that the datagrams just handled set lies ahead of `now`, so the earliest one
        // from before the wait is the one that can be due.
        if !gather.done(arrived, gathered, first, now) && timer.is_none_or(|t| t > now) {
            // A handshake goes on at once (its client waits on each flight), but alone: under a
            // flood of connection attempts, driving every gathered connection with it would
            // acknowledge the bulk senders' data a few datagrams at a time.
            let mut k = 0;
            while k < dirty.len() {
                match shard.conns.get(&dirty[k]) {
                    Some(c) if !c.in_handshake => k += 1,
                    _ => {
                        let ch = dirty.swap_remove(k);
                        shard.drive(ch, now, &mut out, &io).await?;
                    }
                }
            }
            continue;
        }
        (gathered, since) = (0, None);
        dirty.extend(shard.timers.iter().take_while(|(t, _)| *t <= now).map(|(_, ch)| *ch));
        dirty.sort_unstable();
        dirty.dedup();
        for ch in dirty.drain(..) {
            shard.drive(ch, now, &mut out, &io).await?;
        }
    }
    // Tell every peer we are going, so clients reconnect at once instead of waiting out the
    // idle timeout.
    let now = Instant::now();
    for c in shard.conns.values_mut() {
        c.conn.close(now, VarInt::from_u32(0), Bytes::from_static(b"aggregator stopping"));
    }
    let open: Vec<ConnectionHandle> = shard.conns.keys().copied().collect();
    for ch in open {
        shard.drive(ch, now, &mut out, &io).await?;
    }
    shard.stats.cpu_ns = udp::thread_cpu_ns().saturating_sub(cpu0);
    if let Some(p) = &shard.pool {
        let ps = p.stats();
        (shard.stats.pool_reused, shard.stats.pool_allocated, shard.stats.pool_pinned) =
            (ps.reused, ps.allocated, ps.pinned);
    }
    Ok(shard.stats)
}

struct Shard<H> {
    index: u8,
    multi: bool,
    endpoint: quinn_proto::Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    stats: Stats,
    admission: Admission<Peer>,
    peers: Peers<Peer>,
    limits: Limits,
    pool: Option<Pool>,
    handler: H,
    epoch: Instant,
    /// Streams to read in the current pass (kept to reuse its allocation).
    readable: Vec<StreamId>,
    /// Every connection's next timer, earliest first: finding the due ones and the next wake-up
    /// must not cost a pass over thousands of idle connections per receive.
    timers: BTreeSet<(Instant, ConnectionHandle)>,
    /// The budgets of connection attempts per address ([`Caps::attempts_per_address`]).
    attempts: Option<Attempts>,
}

impl<H: FnMut(Peer, Frame)> Shard<H> {
    async fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: BytesMut,
        out: &mut Vec<u8>,
        io: &Io,
        dirty: &mut Vec<ConnectionHandle>,
    ) -> Result<(), Error> {
        self.stats.datagrams += 1;
        // A short header for another shard's connection: the router failed (or the client
        // moved); handing it to our endpoint would answer with a stateless reset and kill a
        // connection that lives elsewhere.
        if self.multi && data.len() > CID_LEN && data[0] & 0x80 == 0 && data[1] != self.index {
            self.stats.misrouted += 1;
            return Ok(());
        }
        if let Some(budget) = &mut self.attempts
            && is_attempt(&data, self.index)
            && !budget.allow(from.ip(), now.saturating_duration_since(self.epoch).as_nanos() as u64)
        {
            self.stats.shed += 1;
            return Ok(());
        }
        out.clear();
        match self.endpoint.handle(now, from, None, None, data, out) {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let remote = incoming.remote_address();
                if self.admission.must_validate() && !incoming.remote_address_validated() && incoming.may_retry() {
                    out.clear();
                    match self.endpoint.retry(incoming, out) {
                        Ok(t) => {
                            self.stats.retries += 1;
                            self.stats.sent += io.send(&t, out).await?;
                        }
                        Err(e) => self.endpoint.ignore(e.into_incoming()),
                    }
                    return Ok(());
                }
                if self.admission.begin(remote.ip()).is_err() {
                    self.stats.capped += 1;
                    out.clear();
                    let t = self.endpoint.refuse(incoming, out);
                    self.stats.sent += io.send(&t, out).await?;
                    return Ok(());
                }
                out.clear();
                match self.endpoint.accept(incoming, now, out, None) {
                    Ok((ch, conn)) => {
                        self.stats.connections += 1;
                        let c = Conn {
                            conn,
                            remote: remote.ip(),
                            peer: None,
                            streams: HashMap::new(),
                            in_handshake: true,
                            admitted: false,
                            timer: None,
                        };
                        self.conns.insert(ch, c);
                        dirty.push(ch);
                    }
                    Err(e) => {
                        self.admission.end(remote.ip(), None, true);
                        if let Some(t) = e.response {
                            self.stats.sent += io.send(&t, out).await?;
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(ev);
                    dirty.push(ch);
                }
            }
            Some(DatagramEvent::Response(t)) => self.stats.sent += io.send(&t, out).await?,
            None => {}
        }
        Ok(())
    }

    /// Drives connection `ch`: timers, endpoint events, application events, transmits.
    async fn drive(&mut self, ch: ConnectionHandle, now: Instant, out: &mut Vec<u8>, io: &Io) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&ch) else { return Ok(()) };
        if c.conn.poll_timeout().is_some_and(|t| t <= now) {
            c.conn.handle_timeout(now);
        }
        while let Some(ev) = c.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(ch, ev) {
                c.conn.handle_event(back);
            }
        }
        let tick = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut readable = std::mem::take(&mut self.readable);
        while let Some(ev) = c.conn.poll() {
            match ev {
                Event::Connected => {
                    c.in_handshake = false;
                    c.peer = c
                        .conn
                        .crypto_session()
                        .peer_identity()
                        .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
                        .and_then(|certs| tls::peer_key(Some(&certs)));
                    match c.peer.map(|p| self.admission.authenticated(p)) {
                        Some(Ok(())) => c.admitted = true,
                        _ => {
                            self.stats.capped += 1;
                            c.conn.close(now, VarInt::from_u32(CLOSE_CAP), Bytes::from_static(b"connection cap"));
                        }
                    }
                }
                Event::ConnectionLost { .. } if c.in_handshake => self.stats.refused += 1,
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    while let Some(id) = c.conn.streams().accept(Dir::Uni) {
                        let d = match &self.pool {
                            Some(p) => Decoder::with_pool(self.limits.clone(), p.clone()),
                            None => Decoder::new(self.limits.clone()),
                        };
                        c.streams.insert(id, (d, false));
                        readable.push(id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => readable.push(id),
                _ => {}
            }
        }
        // Each stream with news is read once per pass, however many packets brought it: a read
        // costs quinn-proto a map removal and re-insertion and a flow-control check.
        readable.sort_unstable();
        readable.dedup();
        for id in readable.drain(..) {
            read_stream(c, id, tick, &mut self.peers, &mut self.stats, &mut self.handler);
        }
        self.readable = readable;
        let max = io.max_datagrams();
        loop {
            out.clear();
            let Some(t) = c.conn.poll_transmit(now, max, out) else { break };
            self.stats.sent += io.send(&t, out).await?;
        }
        // A connection's timer changes only when it is driven, or when a datagram reaches it,
        // which marks it for driving within the gathering wait.
        let timer = if c.conn.is_drained() { None } else { c.conn.poll_timeout() };
        if timer != c.timer {
            if let Some(t) = c.timer {
                self.timers.remove(&(t, ch));
            }
            if let Some(t) = timer {
                self.timers.insert((t, ch));
            }
            c.timer = timer;
        }
        if c.conn.is_drained() {
            let admitted = c.admitted.then_some(c.peer).flatten();
            self.admission.end(c.remote, admitted, c.in_handshake);
            self.conns.remove(&ch);
        }
        Ok(())
    }
}

/// Whether a datagram opens with a client Initial for a connection this shard did not name: a
/// long header of type Initial (RFC 9000 §17.2.2) whose destination connection ID is not one
/// of ours (8 bytes starting with the shard index). A client's later Initials carry our ID.
fn is_attempt(d: &[u8], shard: u8) -> bool {
    let long_initial = d.len() > 6 && d[0] & 0xc0 == 0xc0 && d[0] & 0x30 == 0;
    long_initial && !(usize::from(d[5]) == CID_LEN && d[6] == shard)
}

/// Reads what stream `id` has into its decoder; a finished stream yields its frame. The
/// stream is charged against the peer's rates once its preamble declares the payload size.
fn read_stream(
    c: &mut Conn,
    id: StreamId,
    tick: u64,
    peers: &mut Peers<Peer>,
    stats: &mut Stats,
    handler: &mut impl FnMut(Peer, Frame),
) {
    let mut rs = c.conn.recv_stream(id);
    let Ok(mut chunks) = rs.read(true) else { return };
    let mut done = false;
    let mut stop = None;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => {
                let Some((d, charged)) = c.streams.get_mut(&id) else { break };
                if d.push(&chunk.bytes).is_err() {
                    stop = Some(STOP_BAD_FRAME);
                    break;
                }
                if !*charged && let (Some(len), Some(peer)) = (d.declared_payload(), c.peer) {
                    if peers.stream(peer, len, tick).is_err() {
                        stop = Some(STOP_RATE);
                        break;
                    }
                    *charged = true;
                }
            }
            Ok(None) => {
                done = true;
                break;
            }
            Err(quinn_proto::ReadError::Blocked) => break,
            Err(_) => {
                stop = Some(STOP_BAD_FRAME);
                break;
            }
        }
    }
    let _ = chunks.finalize();
    if let Some(code) = stop {
        match code {
            STOP_RATE => stats.throttled += 1,
            _ => stats.bad_frames += 1,
        }
        c.streams.remove(&id);
        let _ = c.conn.recv_stream(id).stop(VarInt::from_u32(code));
    } else if done && let Some((d, _)) = c.streams.remove(&id) {
        match (d.finish(), c.peer.filter(|_| c.admitted)) {
            (Ok(frame), Some(peer)) => {
                stats.frames += 1;
                stats.frame_bytes += frame.payload.len() as u64;
                handler(peer, frame);
            }
            _ => stats.bad_frames += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_initials_for_unknown_connections_count_as_attempts() {
        let initial = |dcid: &[u8]| {
            let mut d = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
            d.extend_from_slice(dcid);
            d.resize(1200, 0);
            d
        };
        assert!(is_attempt(&initial(&[9; 16]), 0), "a client-chosen ID");
        assert!(is_attempt(&initial(&[1, 2, 3, 4, 5, 6, 7, 8]), 0), "8 bytes, another shard's first byte");
        assert!(!is_attempt(&initial(&[0, 2, 3, 4, 5, 6, 7, 8]), 0), "our ID: a handshake under way");
        let mut handshake = initial(&[9; 16]);
        handshake[0] = 0xe3; // long header, type Handshake
        assert!(!is_attempt(&handshake, 0));
        assert!(!is_attempt(&[0x43, 0, 1, 2, 3, 4, 5, 6, 7], 0), "short header");
        assert!(!is_attempt(&[0xc3, 0], 0), "too short to say");
    }

    #[test]
    fn udp_payloads_above_an_ipv4_datagram_are_refused() {
        let cfg = |mtu| transport_config(1 << 20, 16, Duration::from_secs(5), 1200, mtu);
        assert!(cfg(MAX_UDP_PAYLOAD).is_ok());
        assert!(matches!(cfg(MAX_UDP_PAYLOAD + 1), Err(Error::Config(_))));
        assert!(matches!(transport_config(1 << 20, 16, Duration::from_secs(5), 1100, 1472), Err(Error::Config(_))));
    }

    #[test]
    fn a_shard_drives_its_connections_when_enough_has_gathered_or_waited() {
        let g = Gather { datagrams: 128, wait: Duration::from_micros(300) };
        let t0 = Instant::now();
        let at = |us| t0 + Duration::from_micros(us);
        // A burst of 10 right after the first: keep gathering.
        assert!(!g.done(10, 10, t0, at(20)));
        assert!(!g.done(10, 127, t0, at(299)));
        // Enough datagrams, or the first has waited long enough.
        assert!(g.done(10, 128, t0, at(20)));
        assert!(g.done(1, 12, t0, at(300)));
        // The wait for more brought nothing: drive what there is.
        assert!(g.done(0, 40, t0, at(50)));
        // Gathering off: every receive drives.
        assert!(Gather { datagrams: 0, ..g }.done(1, 1, t0, t0));
    }

    #[test]
    fn the_initial_window_and_gso_batches_scale_with_the_datagram_size() {
        // RFC 9002 §7.2: min(10 × mtu, max(2 × mtu, 14 720)).
        assert_eq!(initial_window(1200), 12_000);
        assert_eq!(initial_window(1472), 14_720);
        assert_eq!(initial_window(8952), 17_904);
        assert_eq!(initial_window(16_384), 32_768);
        for (mtu, segments) in [(1200, 10), (1472, 10), (8952, 7), (16_384, 3), (40_000, 1), (MAX_UDP_PAYLOAD, 1)] {
            assert_eq!(gso_segments(mtu), segments, "mtu {mtu}");
            assert!(segments * usize::from(mtu) <= 65_507);
        }
    }
}
