//! The ingest endpoint: QUIC (quinn-proto, sans-IO) driven on glommio's io_uring executors, one
//! executor, UDP socket (SO_REUSEPORT, which glommio sets) and `Endpoint` per shard, sharing
//! nothing. Each unidirectional stream carries one frame (docs/protocol.md §3), read chunk by
//! chunk into the sans-IO [`crate::frame::Decoder`] (limits checked before allocating, payload in
//! a 64-byte aligned buffer) and handed, complete, to the shard's handler with the sender's
//! TLS-authenticated identity.
//!
//! glommio's UDP socket has no recvmmsg/GSO/GRO, so datagrams go one per syscall or io_uring
//! operation (docs/transport-design.md); transmits are asked for one datagram at a time.

use crate::frame::{Decoder, Frame};
use crate::tls;
use bytes::BytesMut;
use glommio::net::UdpSocket;
use glommio::{LocalExecutorBuilder, Placement};
use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event, ServerConfig, StreamEvent, StreamId, TransportConfig,
    VarInt,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use vain_schema::Limits;

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
    /// for Ethernet, up to 8952 on jumbo frames, more on loopback.
    pub max_udp_payload: u16,
    /// Socket receive and send buffer sizes in bytes (the kernel caps them at
    /// `net.core.rmem_max`/`wmem_max`): bursts of datagrams must fit while the shard is busy.
    pub socket_buffer: usize,
    /// UDP payload size the connection starts with (≥ 1200; raise it only where the path is
    /// known to carry it, e.g. loopback).
    pub initial_mtu: u16,
}

impl Config {
    /// Defaults for `listen` with `tls`: 64 MiB stream windows, 256 streams, 30 s idle.
    pub fn new(listen: SocketAddr, tls: rustls::ServerConfig) -> Self {
        Self {
            listen,
            tls,
            limits: Limits::default(),
            stream_window: 64 << 20,
            max_streams: 256,
            idle_timeout: Duration::from_secs(30),
            max_udp_payload: 1472,
            initial_mtu: 1200,
            socket_buffer: 4 << 20,
        }
    }

    /// The QUIC server config (also what the quinn-on-tokio baseline uses, so both run the
    /// same TLS and transport settings).
    pub fn server_config(&self) -> Result<ServerConfig, Error> {
        let crypto = QuicServerConfig::try_from(self.tls.clone()).map_err(|e| Error::Tls(e.to_string()))?;
        let mut sc = ServerConfig::with_crypto(Arc::new(crypto));
        sc.transport_config(Arc::new(self.transport()?));
        Ok(sc)
    }

    /// The endpoint settings (the largest UDP payload accepted).
    pub fn endpoint_config(&self) -> Result<EndpointConfig, Error> {
        let mut e = EndpointConfig::default();
        e.max_udp_payload_size(self.max_udp_payload).map_err(|_| Error::Config("max_udp_payload"))?;
        Ok(e)
    }

    /// The transport settings: windows sized for multi-MB deltas, uni streams only.
    pub fn transport(&self) -> Result<TransportConfig, Error> {
        let mut t = TransportConfig::default();
        t.stream_receive_window(VarInt::from_u32(self.stream_window));
        t.receive_window(VarInt::from_u32(self.stream_window.saturating_mul(4)));
        t.max_concurrent_uni_streams(VarInt::from_u32(self.max_streams));
        t.max_concurrent_bidi_streams(VarInt::from_u32(0));
        t.max_idle_timeout(Some(self.idle_timeout.try_into().map_err(|_| Error::Config("idle timeout"))?));
        if self.initial_mtu < 1200 || self.initial_mtu > self.max_udp_payload {
            return Err(Error::Config("initial_mtu must be in [1200, max_udp_payload]"));
        }
        t.initial_mtu(self.initial_mtu);
        let mut mtud = quinn_proto::MtuDiscoveryConfig::default();
        mtud.upper_bound(self.max_udp_payload);
        t.mtu_discovery_config(Some(mtud));
        Ok(t)
    }
}

/// Why the endpoint could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket or executor failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A glommio socket operation failed.
    #[error("glommio: {0}")]
    Glommio(String),
    /// The TLS config does not suit QUIC.
    #[error("tls: {0}")]
    Tls(String),
    /// A setting is out of range.
    #[error("bad setting: {0}")]
    Config(&'static str),
    /// The executor could not start (e.g. RLIMIT_MEMLOCK below 512 KiB, io_uring unavailable).
    #[error("executor: {0}")]
    Executor(String),
}

impl From<glommio::GlommioError<()>> for Error {
    fn from(e: glommio::GlommioError<()>) -> Self {
        Error::Glommio(e.to_string())
    }
}

/// What a shard saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub datagrams: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Frames completed and handed over.
    pub frames: u64,
    /// Streams dropped for a bad frame (size over limits, truncation).
    pub bad_frames: u64,
    /// Handshakes refused (wrong or denied key shows up as a connection lost in handshake).
    pub refused: u64,
}

struct Conn {
    conn: quinn_proto::Connection,
    peer: Option<[u8; 32]>,
    streams: HashMap<StreamId, Decoder>,
    established: bool,
}

/// Whether this machine can run a shard: starts a glommio executor (io_uring, locked memory)
/// and binds a UDP socket on loopback through it.
pub fn probe() -> Result<(), Error> {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("vain-probe")
        .spawn(|| async { UdpSocket::bind("127.0.0.1:0").map(|_| ()).map_err(Error::from) })
        .map_err(|e| Error::Executor(e.to_string()))?;
    ex.join().map_err(|e| Error::Executor(e.to_string()))?
}

/// Runs one shard on the calling thread until `stop` is set; `handler(peer, frame)` gets every
/// complete frame.
pub fn run_shard(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    handler: impl FnMut([u8; 32], Frame) + Send + 'static,
) -> Result<Stats, Error> {
    let server = Arc::new(cfg.server_config()?);
    let endpoint = Arc::new(cfg.endpoint_config()?);
    let listen = cfg.listen;
    let socket_buffer = cfg.socket_buffer;
    let limits = cfg.limits.clone();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("vain-shard")
        .spawn(move || async move { shard(socket_buffer, listen, endpoint, server, limits, stop, handler).await })
        .map_err(|e| Error::Executor(e.to_string()))?;
    ex.join().map_err(|e| Error::Executor(e.to_string()))?
}

/// A UDP socket with SO_REUSEPORT (one per shard on the same address) and large buffers,
/// handed to glommio. glommio's own `bind` cannot size the buffers.
fn bind(listen: SocketAddr, buffer: usize) -> Result<UdpSocket, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    sock.set_recv_buffer_size(buffer)?;
    sock.set_send_buffer_size(buffer)?;
    sock.set_nonblocking(true)?;
    sock.bind(&listen.into())?;
    let fd = sock.into_raw_fd();
    // SAFETY: `fd` is a UDP socket this function just created and bound, owned by nobody else
    // since `into_raw_fd`; glommio takes ownership and closes it on drop.
    #[allow(unsafe_code)]
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    Ok(socket)
}

async fn shard(
    socket_buffer: usize,
    listen: SocketAddr,
    endpoint_config: Arc<EndpointConfig>,
    server: Arc<ServerConfig>,
    limits: Limits,
    stop: Arc<AtomicBool>,
    mut handler: impl FnMut([u8; 32], Frame),
) -> Result<Stats, Error> {
    let socket = Rc::new(bind(listen, socket_buffer)?);
    let mut endpoint = quinn_proto::Endpoint::new(endpoint_config, Some(server), true, None);
    let mut conns: HashMap<ConnectionHandle, Conn> = HashMap::new();
    let mut stats = Stats::default();
    let mut out = Vec::with_capacity(65_536);
    // A dedicated receive task: an in-flight `recv_from` must never be dropped (glommio cancels
    // the io_uring request and a datagram that already arrived would be lost), so the loop
    // below waits on this bounded channel instead, which is safe to abandon on a timeout.
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<(BytesMut, SocketAddr)>(4096);
    let rsock = socket.clone();
    glommio::spawn_local(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = rsock.recv_from(&mut buf).await {
            if tx.send((BytesMut::from(&buf[..n]), from)).await.is_err() {
                break;
            }
        }
    })
    .detach();
    while !stop.load(Ordering::Relaxed) {
        // Wait for a datagram or the earliest connection timer, at most 50 ms (to see `stop`).
        let next = conns.values_mut().filter_map(|c| c.conn.poll_timeout()).min();
        let wait = next.map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()));
        let wait = wait.min(Duration::from_millis(50));
        let got = glommio::timer::timeout(wait, async { Ok::<_, glommio::GlommioError<()>>(rx.recv().await) }).await;
        let now = Instant::now();
        let mut batch = Vec::with_capacity(64);
        match got {
            Ok(Some(d)) => batch.push(d),
            Ok(None) => return Err(Error::Io(std::io::Error::other("the UDP receive task stopped"))),
            Err(glommio::GlommioError::TimedOut(_)) => {}
            Err(e) => return Err(Error::Io(std::io::Error::other(e.to_string()))),
        }
        // Take whatever else is already queued, so one pass over the connections serves a
        // batch of datagrams rather than each one.
        while batch.len() < 64 {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        let mut dirty: Vec<ConnectionHandle> = Vec::new();
        for (data, from) in batch {
            stats.datagrams += 1;
            out.clear();
            match endpoint.handle(now, from, None, None, data, &mut out) {
                Some(DatagramEvent::NewConnection(incoming)) => {
                    out.clear();
                    match endpoint.accept(incoming, now, &mut out, None) {
                        Ok((ch, conn)) => {
                            stats.connections += 1;
                            conns.insert(ch, Conn { conn, peer: None, streams: HashMap::new(), established: false });
                            dirty.push(ch);
                        }
                        Err(e) => {
                            if let Some(t) = e.response {
                                socket.send_to(&out[..t.size], t.destination).await?;
                            }
                        }
                    }
                }
                Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                    if let Some(c) = conns.get_mut(&ch) {
                        c.conn.handle_event(ev);
                        dirty.push(ch);
                    }
                }
                Some(DatagramEvent::Response(t)) => {
                    socket.send_to(&out[..t.size], t.destination).await?;
                }
                None => {}
            }
        }
        for (ch, c) in conns.iter_mut() {
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                dirty.push(*ch);
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        // Drive the connections that received something or whose timer fired.
        for ch in dirty {
            let Some(c) = conns.get_mut(&ch) else { continue };
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(back) = endpoint.handle_event(ch, ev) {
                    c.conn.handle_event(back);
                }
            }
            while let Some(ev) = c.conn.poll() {
                match ev {
                    Event::Connected => {
                        c.established = true;
                        c.peer = c
                            .conn
                            .crypto_session()
                            .peer_identity()
                            .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
                            .and_then(|certs| tls::peer_key(Some(&certs)));
                    }
                    Event::ConnectionLost { .. } if !c.established => stats.refused += 1,
                    Event::Stream(StreamEvent::Opened { dir: Dir::Uni })
                    | Event::Stream(StreamEvent::Readable { .. }) => {
                        while let Some(id) = c.conn.streams().accept(Dir::Uni) {
                            c.streams.insert(id, Decoder::new(limits.clone()));
                        }
                        let ids: Vec<StreamId> = c.streams.keys().copied().collect();
                        for id in ids {
                            read_stream(c, id, &mut stats, &mut handler);
                        }
                    }
                    _ => {}
                }
            }
            loop {
                out.clear();
                let Some(t) = c.conn.poll_transmit(now, 1, &mut out) else { break };
                socket.send_to(&out[..t.size], t.destination).await?;
            }
            if c.conn.is_drained() {
                conns.remove(&ch);
            }
        }
    }
    Ok(stats)
}

/// Reads what stream `id` has into its decoder; a finished stream yields its frame.
fn read_stream(c: &mut Conn, id: StreamId, stats: &mut Stats, handler: &mut impl FnMut([u8; 32], Frame)) {
    let mut rs = c.conn.recv_stream(id);
    let Ok(mut chunks) = rs.read(true) else { return };
    let mut done = false;
    let mut bad = false;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => {
                if let Some(d) = c.streams.get_mut(&id)
                    && d.push(&chunk.bytes).is_err()
                {
                    bad = true;
                    break;
                }
            }
            Ok(None) => {
                done = true;
                break;
            }
            Err(quinn_proto::ReadError::Blocked) => break,
            Err(_) => {
                bad = true;
                break;
            }
        }
    }
    let _ = chunks.finalize();
    if bad {
        stats.bad_frames += 1;
        c.streams.remove(&id);
        let _ = c.conn.recv_stream(id).stop(VarInt::from_u32(1));
    } else if done && let Some(d) = c.streams.remove(&id) {
        match (d.finish(), c.peer) {
            (Ok(frame), Some(peer)) => {
                stats.frames += 1;
                handler(peer, frame);
            }
            _ => stats.bad_frames += 1,
        }
    }
}
