//! Floods against the ingest endpoint while an honest client sends: bogus QUIC Initial packets,
//! thousands of idle connections, and a storm of oversized and garbled frames. An honest client
//! sends frames without pause from start to end; each attack runs through one measured window,
//! with windows without an attack before and after. The report gives the honest client's
//! throughput in every window, what the endpoint did with the attack (retries, refusals, bad
//! frames, connections held), the CPU each side used, and whether every frame the endpoint
//! acknowledged to the honest client reached the handler.
//!
//! Everything runs on loopback in this process, bounded in count and time: the attack threads
//! are named `vain-flood…`, the honest sender `vain-honest`, the endpoint's shards
//! `vain-shard-…`, so each one's CPU time can be read from /proc.

use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use vain_transport::buf::PoolLimits;
use vain_transport::limit::{Caps, Rates};
use vain_transport::quic::{self, Config};
use vain_transport::tls::{self, Policy};

const SERVER: [u8; 32] = [30; 32];
const HONEST: [u8; 32] = [31; 32];
/// Thread names (prefixes), for the CPU figures.
const ATTACKER: &str = "vain-flood";
const SENDER: &str = "vain-honest";
const SHARDS: &str = "vain-shard-";
/// The size every client Initial is padded to (RFC 9000 §14.1).
const INITIAL_LEN: usize = 1200;

/// What to run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Options {
    /// Length of each measured window.
    pub window: Duration,
    /// Bogus Initial packets per second in the Initial flood.
    pub initials_per_s: u32,
    /// One Initial in this many is a genuine ClientHello (the endpoint keeps handshake state for
    /// it); the rest carry a well-formed long header and a payload that fails authentication.
    pub genuine_every: u32,
    /// Connections the idle flood opens and holds (handshake completed, nothing sent).
    pub idle: usize,
    /// Frames per second of the storm: oversized, garbled and truncated in turn.
    pub storm_per_s: u32,
    /// Identities the storm comes from, one connection each.
    pub storm_peers: usize,
    /// Payload bytes of each honest frame.
    pub size: usize,
    /// Honest frames in flight at once.
    pub in_flight: usize,
    /// The endpoint's shards.
    pub shards: usize,
    /// The endpoint's budget of connection attempts per address and second (0: none).
    pub attempts_per_address: u32,
}

impl Default for Options {
    /// The figures `vain bench flood` measures: 10 000 Initials per second and 5 000 idle
    /// connections, 30 s windows.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            initials_per_s: 10_000,
            genuine_every: 10,
            idle: 5_000,
            storm_per_s: 2_000,
            storm_peers: 8,
            size: 16 << 20,
            in_flight: 4,
            shards: 2,
            attempts_per_address: 0,
        }
    }
}

/// Which attack a window ran under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// No attack (the reference windows).
    None,
    /// Bogus QUIC Initial packets from many source addresses.
    Initials,
    /// Connections opened and left idle.
    Idle,
    /// Oversized, garbled and truncated frames from authenticated peers.
    Storm,
}

impl std::fmt::Display for Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attack::None => "none",
            Attack::Initials => "initials",
            Attack::Idle => "idle",
            Attack::Storm => "storm",
        })
    }
}

/// What the endpoint counted over one window (sums over its shards).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Endpoint {
    /// Datagrams received.
    pub datagrams: u64,
    /// Connections accepted (handshakes begun).
    pub connections: u64,
    /// Retry packets sent (address validation under handshake load).
    pub retries: u64,
    /// Connections refused at a cap.
    pub capped: u64,
    /// Handshakes that failed or were abandoned.
    pub refused: u64,
    /// Streams dropped for a bad frame.
    pub bad_frames: u64,
    /// Streams stopped for a peer over its rate.
    pub throttled: u64,
    /// Connections open at the end of the window.
    pub open: u64,
    /// Connection attempts over the endpoint's budget, dropped unread.
    pub shed: u64,
}

impl Endpoint {
    fn of(s: &quic::Stats) -> Self {
        Self {
            datagrams: s.datagrams,
            connections: s.connections,
            retries: s.retries,
            capped: s.capped,
            refused: s.refused,
            bad_frames: s.bad_frames,
            throttled: s.throttled,
            open: s.open,
            shed: s.shed,
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            datagrams: self.datagrams.saturating_sub(before.datagrams),
            connections: self.connections.saturating_sub(before.connections),
            retries: self.retries.saturating_sub(before.retries),
            capped: self.capped.saturating_sub(before.capped),
            refused: self.refused.saturating_sub(before.refused),
            bad_frames: self.bad_frames.saturating_sub(before.bad_frames),
            throttled: self.throttled.saturating_sub(before.throttled),
            open: self.open,
            shed: self.shed.saturating_sub(before.shed),
        }
    }
}

/// One measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The attack running through it.
    pub attack: Attack,
    /// Its length.
    pub seconds: f64,
    /// Honest payload bytes that reached the handler in it.
    pub honest_bytes: u64,
    /// Honest frames that reached the handler in it.
    pub honest_frames: u64,
    /// Honest payload GB/s.
    pub gbps: f64,
    /// Attack units sent in it: datagrams (Initials), connections held (idle), frames (storm).
    pub attack_sent: u64,
    /// CPU seconds of the attack's threads in it.
    pub attacker_cpu: f64,
    /// CPU seconds of the honest sender in it.
    pub sender_cpu: f64,
    /// CPU seconds of the endpoint's shards in it.
    pub endpoint_cpu: f64,
    /// What the endpoint counted in it.
    pub endpoint: Endpoint,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What ran.
    pub options: Options,
    /// Every window in order.
    pub windows: Vec<Window>,
    /// Honest frames the endpoint acknowledged in full (the sender's count).
    pub acknowledged: u64,
    /// Honest frames that reached the handler (the endpoint's count).
    pub received: u64,
    /// Honest frames the endpoint stopped (rate or bad frame; none expected).
    pub stopped: u64,
    /// Honest sends that failed on a broken connection.
    pub failed: u64,
    /// Seconds spent preparing the attacks (genuine ClientHellos, idle handshakes), untimed.
    pub setup_seconds: f64,
}

impl Report {
    /// Mean honest GB/s over the windows without an attack.
    pub fn unloaded_gbps(&self) -> f64 {
        let v: Vec<f64> = self.windows.iter().filter(|w| w.attack == Attack::None).map(|w| w.gbps).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// Honest frames acknowledged but never handed over (0 is the requirement).
    pub fn lost(&self) -> u64 {
        self.acknowledged.saturating_sub(self.received)
    }

    /// The report as text.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let o = &self.options;
        let base = self.unloaded_gbps();
        let mut t = format!(
            "Floods against the ingest endpoint ({} shard(s), attempt budget {}/s per address), loopback, {:.0} s \
             windows; an honest client sends {} MB frames, {} in flight\n  initials: {}/s, 1 in {} a genuine ClientHello; idle: {} connections; storm: {} \
             frames/s from {} peers\n\n{:<9} {:>7} {:>8} {:>8} {:>9} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6}\n",
            o.shards,
            o.attempts_per_address,
            o.window.as_secs_f64(),
            o.size as f64 / 1e6,
            o.in_flight,
            o.initials_per_s,
            o.genuine_every,
            o.idle,
            o.storm_per_s,
            o.storm_peers,
            "attack",
            "GB/s",
            "of none",
            "GB/epCPU",
            "sent",
            "datagrams",
            "shed",
            "retries",
            "capped",
            "badframe",
            "throttle",
            "open",
            "atk CPU",
            "snd",
            "ep",
        );
        for w in &self.windows {
            let e = &w.endpoint;
            let _ = writeln!(
                t,
                "{:<9} {:>7.3} {:>7.1}% {:>8.2} {:>9} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7.2} {:>6.2} {:>6.2}",
                w.attack.to_string(),
                w.gbps,
                100.0 * w.gbps / base.max(1e-12),
                w.honest_bytes as f64 / 1e9 / w.endpoint_cpu.max(1e-9),
                w.attack_sent,
                e.datagrams,
                e.shed,
                e.retries,
                e.capped,
                e.bad_frames,
                e.throttled,
                e.open,
                w.attacker_cpu,
                w.sender_cpu,
                w.endpoint_cpu,
            );
        }
        let _ = writeln!(
            t,
            "\nhonest frames: {} acknowledged, {} received, {} lost, {} stopped by the endpoint, {} failed sends; \
             attack setup {:.1} s (untimed)",
            self.acknowledged,
            self.received,
            self.lost(),
            self.stopped,
            self.failed,
            self.setup_seconds
        );
        let worst = self
            .windows
            .iter()
            .filter(|w| w.attack != Attack::None)
            .map(|w| (w.gbps / base.max(1e-12), w.attack))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((r, a)) = worst {
            let _ = writeln!(t, "lowest under attack: {:.1} % of the unloaded throughput ({a})", 100.0 * r);
        }
        t
    }
}

/// The handler's tally of honest frames.
#[derive(Default)]
struct Sink {
    frames: AtomicU64,
    bytes: AtomicU64,
    others: AtomicU64,
}

/// The honest sender's tally.
#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    stopped: AtomicU64,
    failed: AtomicU64,
}

fn public(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// A secret for attacker identity `i` (distinct from the server's and the honest client's).
fn attacker_secret(tag: u8, i: usize) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    h.update(&(i as u64).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Loopback source address `i` of block `block`: 127.`block`.x.y, so each block has its own
/// addresses and the endpoint's per-address caps apply per source.
fn source(block: u8, i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, block, (i / 250) as u8, (i % 250 + 1) as u8), 0))
}

fn client_config(secret: &[u8; 32], transport: quinn::TransportConfig) -> Result<quinn::ClientConfig, crate::Error> {
    let tls = tls::client_config(secret, Policy::Only(BTreeSet::from([public(&SERVER)])))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(Arc::new(transport));
    Ok(cc)
}

fn endpoint_at(local: SocketAddr, mtu: u16) -> Result<quinn::Endpoint, crate::Error> {
    let socket = quic::bind_udp(local, 1 << 20)?;
    let runtime = quinn::default_runtime().ok_or(crate::Error::NoRuntime)?;
    let socket = vain_transport::client::gso_capped(socket, mtu, &runtime)?;
    quinn::Endpoint::new_with_abstract_socket(quic::endpoint_config(mtu)?, None, socket, runtime)
        .map_err(crate::Error::from)
}

fn cpu(prefix: &str) -> f64 {
    vain_transport::proc::thread_cpu(prefix).iter().map(|(_, s)| s).sum()
}

/// xorshift64*: the garbage needs no quality, only speed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A well-formed client Initial (long header, version 1, 8-byte connection IDs, no token) whose
/// protected payload is noise: the endpoint derives the Initial keys from the destination ID
/// and fails to authenticate it.
fn bogus_initial(noise: &mut Noise, buf: &mut [u8; INITIAL_LEN]) {
    noise.fill(&mut buf[..]);
    buf[0] = 0xc3; // long header, fixed bit, Initial, 4-byte packet number
    buf[1..5].copy_from_slice(&1u32.to_be_bytes());
    buf[5] = 8; // DCID length (8 random bytes follow)
    buf[14] = 8; // SCID length
    buf[23] = 0; // token length
    let rest = (INITIAL_LEN - 26) as u16; // packet number and payload after the 2-byte length
    buf[24..26].copy_from_slice(&(0x4000 | rest).to_be_bytes());
}

/// Genuine client Initials (each a fresh connection with its own ClientHello), made with
/// quinn-proto's client side and never continued.
fn genuine_initials(server: SocketAddr, n: usize) -> Result<Vec<Vec<u8>>, crate::Error> {
    let tls = tls::client_config(&attacker_secret(1, 0), Policy::Only(BTreeSet::from([public(&SERVER)])))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let cc = quinn_proto::ClientConfig::new(Arc::new(crypto));
    let mut ep = quinn_proto::Endpoint::new(Arc::new(quic::endpoint_config(1472)?), None, false, None);
    let mut out = Vec::with_capacity(n);
    let now = Instant::now();
    for _ in 0..n {
        let (_, mut conn) = ep
            .connect(now, cc.clone(), server, "aggregator")
            .map_err(|_| crate::Error::Options("could not build a ClientHello"))?;
        let mut buf = Vec::new();
        if conn.poll_transmit(now, 1, &mut buf).is_some() {
            out.push(buf);
        }
    }
    Ok(out)
}

/// Sends `rate` Initials per second to `server` from 64 loopback addresses until `stop`; one in
/// `genuine_every` comes from `genuine` (each used once while they last). Counts into `sent`.
fn flood_initials(
    server: SocketAddr,
    rate: u32,
    genuine_every: u32,
    genuine: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<(), crate::Error> {
    let socks: Vec<UdpSocket> = (0..64)
        .map(|i| {
            let s = UdpSocket::bind(source(10, i))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<Result<_, std::io::Error>>()?;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut buf = [0u8; INITIAL_LEN];
    let (start, mut n, mut g) = (Instant::now(), 0u64, 0usize);
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while n < due {
            let sock = &socks[(n % socks.len() as u64) as usize];
            let genuine_turn = genuine_every > 0 && n % u64::from(genuine_every) == 0 && g < genuine.len();
            let r = if genuine_turn {
                g += 1;
                sock.send_to(&genuine[g - 1], server)
            } else {
                bogus_initial(&mut noise, &mut buf);
                sock.send_to(&buf, server)
            };
            n += 1;
            if r.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Opens `n` connections from loopback addresses (15 per address, 4 per identity, under the
/// endpoint's default caps), completing each handshake; they send nothing but keep-alives. A
/// handshake the endpoint refuses (at a cap) is left out: the window reports those held.
async fn open_idle(
    server: SocketAddr,
    n: usize,
) -> Result<(Vec<quinn::Endpoint>, Vec<quinn::Connection>), crate::Error> {
    const PER_ADDRESS: usize = 15;
    const PER_IDENTITY: usize = 4;
    let mut endpoints = Vec::new();
    for a in 0..n.div_ceil(PER_ADDRESS) {
        endpoints.push(endpoint_at(source(20, a), 1472)?);
    }
    let transport = || -> Result<quinn::TransportConfig, crate::Error> {
        let mut t = quic::transport_config(1 << 16, 1, Duration::from_secs(30), 1200, 1472)?;
        t.keep_alive_interval(Some(Duration::from_secs(10)));
        Ok(t)
    };
    let mut conns = Vec::with_capacity(n);
    // A few hundred handshakes at a time, so most finish without the endpoint asking for retry.
    for chunk in (0..n).collect::<Vec<_>>().chunks(128) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let cc = client_config(&attacker_secret(2, i / PER_IDENTITY), transport()?)?;
            let connecting = endpoints[i / PER_ADDRESS].connect_with(cc, server, "aggregator")?;
            set.spawn(connecting);
        }
        while let Some(r) = set.join_next().await {
            if let Ok(c) = r? {
                conns.push(c);
            }
        }
    }
    Ok((endpoints, conns))
}

/// Frames of the storm, in turn: a preamble declaring a payload far over the limits, noise, and
/// a frame cut short of the payload its preamble declares.
fn storm_frame(i: u64, noise: &mut Noise) -> Bytes {
    use vain_schema::frame::Preamble;
    match i % 3 {
        0 => Bytes::copy_from_slice(&Preamble { header_len: 256, payload_len: 1 << 50 }.encode()),
        1 => {
            let mut b = vec![0u8; 2048];
            noise.fill(&mut b);
            Bytes::from(b)
        }
        _ => {
            let mut b = Preamble { header_len: 256, payload_len: 64 << 10 }.encode().to_vec();
            b.resize(1024, 0x5a);
            Bytes::from(b)
        }
    }
}

/// `peers` authenticated connections sending `rate` bad frames per second in total until
/// `stop`; counts frames written into `sent`.
async fn storm(
    server: SocketAddr,
    peers: usize,
    rate: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<(), crate::Error> {
    let mut conns = Vec::new();
    let mut endpoints = Vec::new();
    for p in 0..peers.max(1) {
        let ep = endpoint_at(source(30, p), 1472)?;
        let t = quic::transport_config(1 << 20, 256, Duration::from_secs(30), 1200, 1472)?;
        let c = ep.connect_with(client_config(&attacker_secret(3, p), t)?, server, "aggregator")?.await?;
        conns.push(c);
        endpoints.push(ep);
    }
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    let (start, mut n) = (Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while n < due {
            let c = &conns[(n % conns.len() as u64) as usize];
            // A stopped stream or a full stream budget is the endpoint defending itself, not a
            // failure of the run: the attacker moves on.
            if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(5), c.open_uni()).await
                && s.write_chunk(storm_frame(n, &mut noise)).await.is_ok()
                && s.finish().is_ok()
            {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    Ok(())
}

/// The honest client: `in_flight` streams at a time, each one frame, until `stop`; a frame
/// counts as acknowledged when the endpoint acknowledged all of it.
async fn honest(conn: quinn::Connection, frame: Bytes, in_flight: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (conn, frame, stop, tally) = (conn.clone(), frame.clone(), stop.clone(), tally.clone());
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = async {
                    let mut s = conn.open_uni().await.map_err(|_| None)?;
                    match s.write_chunk(frame.clone()).await {
                        Ok(()) => {}
                        Err(quinn::WriteError::Stopped(code)) => return Err(Some(code)),
                        Err(_) => return Err(None),
                    }
                    s.finish().map_err(|_| None)?;
                    match s.stopped().await {
                        Ok(None) => Ok(()),
                        Ok(Some(code)) => Err(Some(code)),
                        Err(_) => Err(None),
                    }
                };
                match sent.await {
                    Ok(()) => tally.acknowledged.fetch_add(1, Ordering::Relaxed),
                    Err(Some(_)) => tally.stopped.fetch_add(1, Ordering::Relaxed),
                    Err(None) => tally.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Figures at one instant, to subtract.
struct Mark {
    at: Instant,
    bytes: u64,
    frames: u64,
    attacker: f64,
    sender: f64,
    endpoint: f64,
    stats: Endpoint,
}

impl Mark {
    fn now(sink: &Sink, live: &quic::Live) -> Self {
        Self {
            at: Instant::now(),
            bytes: sink.bytes.load(Ordering::Relaxed),
            frames: sink.frames.load(Ordering::Relaxed),
            attacker: cpu(ATTACKER),
            sender: cpu(SENDER),
            endpoint: cpu(SHARDS),
            stats: Endpoint::of(&quic::Stats::total(&live.snapshot())),
        }
    }

    fn window(&self, end: &Mark, attack: Attack, attack_sent: u64) -> Window {
        let seconds = end.at.saturating_duration_since(self.at).as_secs_f64();
        let bytes = end.bytes.saturating_sub(self.bytes);
        Window {
            attack,
            seconds,
            honest_bytes: bytes,
            honest_frames: end.frames.saturating_sub(self.frames),
            gbps: bytes as f64 / seconds.max(1e-9) / 1e9,
            attack_sent,
            attacker_cpu: end.attacker - self.attacker,
            sender_cpu: end.sender - self.sender,
            endpoint_cpu: end.endpoint - self.endpoint,
            endpoint: end.stats.since(self.stats),
        }
    }
}

/// Waits one window under `attack` and returns it. The honest bytes and the CPU figures are
/// exact at both marks; the endpoint's counters are those its shards last published (every
/// [`quic::LIVE_EVERY`]), so they lag equally at both ends.
fn measure(sink: &Sink, live: &quic::Live, window: Duration, attack: Attack, sent: &AtomicU64) -> Window {
    // Let the attack reach its rate before the window opens.
    std::thread::sleep(quic::LIVE_EVERY * 2);
    let (before, sent0) = (Mark::now(sink, live), sent.load(Ordering::Relaxed));
    std::thread::sleep(window);
    let after = Mark::now(sink, live);
    before.window(&after, attack, sent.load(Ordering::Relaxed).saturating_sub(sent0))
}

/// Runs every window: none, initials, idle, storm, none.
pub fn run(opts: Options) -> Result<Report, crate::Error> {
    if opts.shards == 0 || opts.size == 0 || opts.window.is_zero() {
        return Err(crate::Error::Options("shards, size and window must be above 0"));
    }
    // Each shard holds at most its cap; the honest client and the half-open handshakes of the
    // Initial flood need room too.
    if opts.idle + 1024 > opts.shards * Caps::default().total {
        return Err(crate::Error::Options("idle connections past the endpoint's caps (4 096 per shard, less 1 024)"));
    }
    let deny = Arc::new(RwLock::new(BTreeSet::new()));
    let tls = tls::server_config(&SERVER, Policy::AnyExcept(deny))?;
    let cfg = Config {
        max_udp_payload: 8952,
        initial_mtu: crate::ingest::start_mtu(8952),
        pool: Some(PoolLimits { buffers: opts.in_flight * 4, bytes: opts.in_flight * 4 * (opts.size + 4096) }),
        // The per-peer rates (2 GB/s, 50 streams/s by default) would cap the honest client below
        // what the endpoint can take on loopback, and the run would measure the limiter, not
        // the endpoint under attack. The attacks do not depend on them: bad frames are dropped
        // before or when they are charged, and Initials and idle connections carry no streams.
        rates: Rates { bytes_per_s: 1e12, bytes_burst: 1e12, streams_per_s: 1e5, streams_burst: 1e5 },
        caps: Caps { attempts_per_address: opts.attempts_per_address, ..Caps::default() },
        ..Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), tls)
    };
    let server = quic::Server::bind(cfg.clone(), opts.shards)?;
    let addr = server.local_addr();
    let live = server.live();
    let sink = Arc::new(Sink::default());
    let honest_key = public(&HONEST);
    let handlers = (0..opts.shards)
        .map(|_| {
            let s = sink.clone();
            move |peer: quic::Peer, f: vain_transport::frame::Frame| {
                if peer == honest_key {
                    s.bytes.fetch_add(f.payload.len() as u64, Ordering::Relaxed);
                    s.frames.fetch_add(1, Ordering::Relaxed);
                } else {
                    s.others.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .collect();
    let stop_server = Arc::new(AtomicBool::new(false));
    let st = stop_server.clone();
    let shards = std::thread::spawn(move || server.run(handlers, st));
    let result = drive(&opts, addr, &sink, &live);
    stop_server.store(true, Ordering::Relaxed);
    let joined = shards.join().map_err(|_| crate::Error::Panicked("shard"))?;
    let report = result?;
    joined?;
    Ok(report)
}

fn drive(opts: &Options, addr: SocketAddr, sink: &Sink, live: &quic::Live) -> Result<Report, crate::Error> {
    let honest_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(SENDER).enable_all().build()?;
    let attack_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(ATTACKER).enable_all().build()?;
    let frame = Bytes::from(vain_schema::frame::encode(&[0x42; 256], &vec![0x17; opts.size])?);
    let tally = Arc::new(Tally::default());
    let stop_honest = Arc::new(AtomicBool::new(false));
    let conn = honest_rt.block_on(async {
        let ep = endpoint_at(SocketAddr::from(([127, 0, 0, 1], 0)), 8952)?;
        let t = quic::transport_config(64 << 20, 256, Duration::from_secs(30), 1472, 8952)?;
        let c = ep.connect_with(client_config(&HONEST, t)?, addr, "aggregator")?.await?;
        Ok::<_, crate::Error>((ep, c))
    })?;
    let sender = honest_rt.spawn(honest(conn.1.clone(), frame, opts.in_flight, stop_honest.clone(), tally.clone()));
    // Let the congestion window open before the first window.
    std::thread::sleep(Duration::from_secs(1));
    let mut windows = Vec::new();
    let mut setup = 0.0;
    let none = AtomicU64::new(0);
    let outcome = (|| {
        windows.push(measure(sink, live, opts.window, Attack::None, &none));

        let t = Instant::now();
        let pool = if opts.genuine_every == 0 {
            Vec::new()
        } else {
            let n =
                (opts.window.as_secs_f64() * f64::from(opts.initials_per_s) / f64::from(opts.genuine_every)) as usize;
            genuine_initials(addr, n.min(50_000) + 1)?
        };
        setup += t.elapsed().as_secs_f64();
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (rate, every, s2, c2) = (opts.initials_per_s, opts.genuine_every, stop.clone(), sent.clone());
        let flooder = std::thread::Builder::new()
            .name(format!("{ATTACKER}-init"))
            .spawn(move || flood_initials(addr, rate, every, pool, s2, c2))?;
        windows.push(measure(sink, live, opts.window, Attack::Initials, &sent));
        stop.store(true, Ordering::Relaxed);
        flooder.join().map_err(|_| crate::Error::Panicked("initial flood"))??;

        let t = Instant::now();
        let (endpoints, conns) = attack_rt.block_on(open_idle(addr, opts.idle))?;
        setup += t.elapsed().as_secs_f64();
        let held = AtomicU64::new(0);
        let mut w = measure(sink, live, opts.window, Attack::Idle, &held);
        w.attack_sent = conns.iter().filter(|c| c.close_reason().is_none()).count() as u64;
        windows.push(w);
        for c in &conns {
            c.close(0u32.into(), b"done");
        }
        drop((endpoints, conns));

        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let stormer = attack_rt.spawn(storm(addr, opts.storm_peers, opts.storm_per_s, stop.clone(), sent.clone()));
        // The storm's handshakes happen before the window opens.
        std::thread::sleep(Duration::from_millis(500));
        windows.push(measure(sink, live, opts.window, Attack::Storm, &sent));
        stop.store(true, Ordering::Relaxed);
        attack_rt.block_on(stormer)??;

        windows.push(measure(sink, live, opts.window, Attack::None, &none));
        Ok::<_, crate::Error>(())
    })();
    stop_honest.store(true, Ordering::Relaxed);
    honest_rt.block_on(sender)?;
    // Every acknowledged frame must reach the handler; the last ones may be a moment behind
    // their acknowledgement.
    let acknowledged = tally.acknowledged.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.frames.load(Ordering::Relaxed) < acknowledged && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    conn.1.close(0u32.into(), b"done");
    honest_rt.block_on(conn.0.wait_idle());
    attack_rt.shutdown_timeout(Duration::from_secs(1));
    outcome?;
    Ok(Report {
        options: *opts,
        windows,
        acknowledged,
        received: sink.frames.load(Ordering::Relaxed),
        stopped: tally.stopped.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        setup_seconds: setup,
    })
}
