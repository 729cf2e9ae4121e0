//! Transport throughput, ours against the ordinary choice in the same run: the glommio +
//! quinn-proto shard, and quinn on a one-thread tokio runtime with the same TLS (raw public
//! keys) and transport settings, each receiving the same frames from the same quinn client and
//! running them through the same frame decoder into aligned buffers from a pool of the same size.
//! Each run sends the frames twice and times the second pass, so both receivers are measured
//! warm.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use vain_transport::buf::{Pool, PoolLimits};
use vain_transport::frame::Decoder;
use vain_transport::quic::{self, Config};
use vain_transport::tls::{self, Policy};

const SERVER: [u8; 32] = [21; 32];
const CLIENT: [u8; 32] = [22; 32];
/// Thread names, so each side's CPU time can be read from /proc.
const SENDER: &str = "vain-sender";
const RECEIVER: &str = "vain-quinn-rx";

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Frames (one per stream).
    pub frames: usize,
    /// Payload bytes per frame.
    pub size: usize,
    /// Client connections the frames are spread over.
    pub connections: usize,
    /// Largest UDP payload: both sides accept it and MTU discovery probes up to it, from
    /// Ethernet's 1472 (loopback carries up to 65 507).
    pub mtu: u16,
    /// Receive with GRO / send with GSO (ours; quinn always does).
    pub offload: bool,
}

/// One side's figures.
#[derive(Debug, Clone)]
pub struct Side {
    /// Which transport.
    pub name: &'static str,
    /// From the first byte sent to the last frame decoded.
    pub seconds: f64,
    /// Payload GB/s.
    pub gbps: f64,
    /// Frames received whole.
    pub frames: u64,
    /// CPU seconds of the receiving thread(s) over the timed pass.
    pub recv_cpu: f64,
    /// CPU seconds of the sending client's thread(s) over the timed pass.
    pub send_cpu: f64,
    /// Datagrams the kernel dropped for a full receive buffer during the timed pass
    /// (machine-wide counter; `None` where unreadable).
    pub dropped: Option<u64>,
    /// The sending connections' counters over the timed pass.
    pub sender: Sender,
    /// Our shard's counters over both passes (`None` for the baseline).
    pub shard: Option<quic::Stats>,
}

impl Side {
    /// Payload GB per CPU-second of the receiving thread(s).
    pub fn gb_per_recv_cpu(&self) -> f64 {
        self.gbps * self.seconds / self.recv_cpu.max(1e-9)
    }
}

/// What `drive` measured over the timed pass.
struct Drive {
    seconds: f64,
    send_cpu: f64,
    recv_cpu: f64,
    dropped: Option<u64>,
    sender: Sender,
}

/// The sending connections' own counters over the timed pass (summed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Send calls (with GSO, several datagrams each).
    pub sends: u64,
    /// ACK frames received.
    pub acks: u64,
    /// Packets declared lost.
    pub lost: u64,
    /// Congestion events (window reductions).
    pub congestion_events: u64,
}

impl Sender {
    fn of(conns: &[quinn::Connection]) -> Self {
        conns.iter().map(|c| c.stats()).fold(Self::default(), |a, s| Self {
            datagrams: a.datagrams + s.udp_tx.datagrams,
            sends: a.sends + s.udp_tx.ios,
            acks: a.acks + s.frame_rx.acks,
            lost: a.lost + s.path.lost_packets,
            congestion_events: a.congestion_events + s.path.congestion_events,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            datagrams: self.datagrams.saturating_sub(before.datagrams),
            sends: self.sends.saturating_sub(before.sends),
            acks: self.acks.saturating_sub(before.acks),
            lost: self.lost.saturating_sub(before.lost),
            congestion_events: self.congestion_events.saturating_sub(before.congestion_events),
        }
    }
}

/// CPU seconds so far of this process's threads named `prefix`…
fn cpu(prefix: &str) -> f64 {
    vain_transport::proc::thread_cpu(prefix).iter().map(|(_, s)| s).sum()
}

struct Sink {
    frames: AtomicU64,
    bytes: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Sink {
    fn new() -> Arc<Self> {
        Arc::new(Self { frames: AtomicU64::new(0), bytes: AtomicU64::new(0), last: Mutex::new(None) })
    }
    fn reset(&self) {
        self.frames.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }
    fn take(&self, payload: usize) {
        self.bytes.fetch_add(payload as u64, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
        }
    }
}

fn public(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

fn free_addr() -> Result<SocketAddr, crate::Error> {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_err(crate::Error::from)
}

/// Both servers' settings; the buffer pool keeps every frame of a pass, so the timed pass runs
/// on buffers the warm-up pass allocated.
fn config(addr: SocketAddr, opts: &Options) -> Result<Config, crate::Error> {
    let deny = Arc::new(RwLock::new(BTreeSet::new()));
    let tls = tls::server_config(&SERVER, Policy::AnyExcept(deny))?;
    let mtu = opts.mtu.max(1200);
    let pool = PoolLimits { buffers: opts.frames, bytes: opts.frames.saturating_mul(opts.size + 4096) };
    Ok(Config {
        max_udp_payload: mtu,
        initial_mtu: crate::ingest::start_mtu(mtu),
        pool: Some(pool),
        ..Config::new(addr, tls)
    })
}

fn quinn_endpoint(
    cfg: &Config,
    server: Option<quinn::ServerConfig>,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, crate::Error> {
    let socket = quic::bind_udp(addr, cfg.socket_buffer)?;
    let runtime = quinn::default_runtime().ok_or(crate::Error::NoRuntime)?;
    let socket = vain_transport::client::gso_capped(socket, cfg.max_udp_payload, &runtime)?;
    quinn::Endpoint::new_with_abstract_socket(cfg.endpoint_config()?, server, socket, runtime)
        .map_err(crate::Error::from)
}

/// The frame every stream carries (the payload differs by index so nothing is deduplicated).
fn frame(i: usize, size: usize) -> Vec<u8> {
    let header = vec![0x42u8; 256];
    let payload: Vec<u8> = (0..size).map(|k| (k as u8) ^ (i as u8)).collect();
    vain_schema::frame::encode(&header, &payload).unwrap_or_default()
}

/// Each frame on its own stream, spread over `conns`, all at once; returns when all are written.
async fn send_all(conns: &[quinn::Connection], frames: &[Arc<Vec<u8>>]) -> Result<(), crate::Error> {
    let mut tasks = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let (c, f) = (conns[i % conns.len()].clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = c.open_uni().await?;
            s.write_all(&f).await?;
            s.finish().map_err(crate::Error::from)
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until `sink` holds `n` frames, at most 120 s.
async fn wait_for(sink: &Sink, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.frames.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends `opts.frames` frames to `addr` twice, the first time untimed, and waits until `sink`
/// has the second lot; returns the time from the first write of the second lot to its last
/// frame decoded, with the CPU time of the sender and of the receiver (threads named
/// `receiver`…) and the kernel's receive-buffer drops over that pass.
fn drive(addr: SocketAddr, opts: Options, cfg: &Config, sink: &Sink, receiver: &str) -> Result<Drive, crate::Error> {
    let transport = cfg.transport()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(SENDER).enable_all().build()?;
    rt.block_on(async {
        let tls = tls::client_config(&CLIENT, Policy::Only(BTreeSet::from([public(&SERVER)])))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
        cc.transport_config(Arc::new(transport));
        let mut ep = quinn_endpoint(cfg, None, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        ep.set_default_client_config(cc);
        let mut conns = Vec::new();
        for _ in 0..opts.connections.max(1) {
            let c = ep.connect(addr, "aggregator")?.await?;
            conns.push(c);
        }
        let frames: Vec<Arc<Vec<u8>>> = (0..opts.frames).map(|i| Arc::new(frame(i, opts.size))).collect();
        // One untimed pass first, so both receivers are measured warm: heap pages faulted in,
        // our shard's buffer pool filled, congestion windows open.
        send_all(&conns, &frames).await?;
        wait_for(sink, opts.frames as u64).await;
        sink.reset();
        let (send0, recv0, drops0) = (cpu(SENDER), cpu(receiver), vain_transport::proc::udp_rcvbuf_errors());
        let sender0 = Sender::of(&conns);
        let start = Instant::now();
        send_all(&conns, &frames).await?;
        wait_for(sink, opts.frames as u64).await;
        let (send_cpu, recv_cpu) = (cpu(SENDER) - send0, cpu(receiver) - recv0);
        let dropped = dropped_since(drops0);
        let sender = Sender::of(&conns).since(sender0);
        let last = sink.last.lock().map_err(|_| crate::Error::Panicked("sink"))?.unwrap_or_else(Instant::now);
        for c in &conns {
            c.close(0u32.into(), b"done");
        }
        ep.wait_idle().await;
        Ok(Drive { seconds: last.saturating_duration_since(start).as_secs_f64(), send_cpu, recv_cpu, dropped, sender })
    })
}

fn side(name: &'static str, d: Drive, sink: &Sink) -> Side {
    let bytes = sink.bytes.load(Ordering::Relaxed) as f64;
    Side {
        name,
        seconds: d.seconds,
        gbps: bytes / d.seconds.max(1e-9) / 1e9,
        frames: sink.frames.load(Ordering::Relaxed),
        recv_cpu: d.recv_cpu,
        send_cpu: d.send_cpu,
        dropped: d.dropped,
        sender: d.sender,
        shard: None,
    }
}

/// Drops counted from `before` to now.
fn dropped_since(before: Option<u64>) -> Option<u64> {
    Some(vain_transport::proc::udp_rcvbuf_errors()?.saturating_sub(before?))
}

/// Our shard (one glommio executor).
pub fn ours(opts: Options) -> Result<Side, crate::Error> {
    let cfg = Config { offload: opts.offload, ..config(SocketAddr::from(([127, 0, 0, 1], 0)), &opts)? };
    let server = quic::Server::bind(cfg.clone(), 1)?;
    let addr = server.local_addr();
    let sink = Sink::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (sink.clone(), stop.clone());
    let h = std::thread::spawn(move || {
        server.run(vec![move |_, f: vain_transport::frame::Frame| s.take(f.payload.len())], st)
    });
    let d = drive(addr, opts, &cfg, &sink, "vain-shard-");
    stop.store(true, Ordering::Relaxed);
    let shard = h.join().map_err(|_| crate::Error::Panicked("shard"))?;
    let stats = quic::Stats::total(&shard?);
    Ok(Side { shard: Some(stats), ..side("glommio + quinn-proto (ours)", d?, &sink) })
}

/// quinn on a one-thread tokio runtime, same TLS and transport settings, same decoder.
pub fn baseline(opts: Options) -> Result<Side, crate::Error> {
    let addr = free_addr()?;
    let cfg = config(addr, &opts)?;
    let pool = Pool::new(cfg.pool.unwrap_or_default());
    let server = cfg.server_config()?;
    let limits = cfg.limits.clone();
    let sink = Sink::new();
    let s = sink.clone();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(RECEIVER).enable_all().build()?;
    let ep = rt.block_on(async { quinn_endpoint(&cfg, Some(server), addr) })?;
    let accept = ep.clone();
    rt.spawn(async move {
        while let Some(inc) = accept.accept().await {
            let (s, limits, pool) = (s.clone(), limits.clone(), pool.clone());
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok(mut recv) = conn.accept_uni().await {
                    let (s, limits, pool) = (s.clone(), limits.clone(), pool.clone());
                    tokio::spawn(async move {
                        let mut d = Decoder::with_pool(limits, pool);
                        while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                            if d.push(&chunk.bytes).is_err() {
                                return;
                            }
                        }
                        if let Ok(f) = d.finish() {
                            s.take(f.payload.len());
                        }
                    });
                }
            });
        }
    });
    let d = drive(addr, opts, &cfg, &sink, RECEIVER);
    ep.close(0u32.into(), b"done");
    drop(rt);
    Ok(side("quinn on tokio (baseline)", d?, &sink))
}

/// Both, `repeat` times, returned as (ours, baseline). Which goes first alternates: the first
/// run in the process also pays for faulting in the heap the later ones reuse.
pub fn run(opts: Options, repeat: usize) -> Result<Vec<(Side, Side)>, crate::Error> {
    (0..repeat.max(1))
        .map(|i| {
            if i % 2 == 0 {
                let a = ours(opts)?;
                Ok((a, baseline(opts)?))
            } else {
                let b = baseline(opts)?;
                Ok((ours(opts)?, b))
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The comparison as text: one line per side per run (the sender's datagrams, datagrams per
/// send call, ACK frames it received and packets it declared lost are over the timed pass),
/// then the medians.
pub fn table(opts: &Options, runs: &[(Side, Side)]) -> String {
    use std::fmt::Write;
    let mut t = format!(
        "QUIC ingest, loopback, TLS 1.3 (raw public keys), {} frames × {} MB over {} connection(s), UDP payload {} B, one receiving thread each\n\n\
         {:>3} {:<30} {:>8} {:>7} {:>7} {:>10} {:>8} {:>8} {:>7} {:>9} {:>6} {:>7} {:>5}\n",
        opts.frames,
        opts.size as f64 / 1e6,
        opts.connections,
        opts.mtu,
        "run",
        "transport",
        "seconds",
        "GB/s",
        "frames",
        "recv CPU s",
        "GB/CPU-s",
        "send CPU",
        "drops",
        "datagrams",
        "/send",
        "ACKs",
        "lost",
    );
    for (i, (a, b)) in runs.iter().enumerate() {
        for s in [a, b] {
            let drops = s.dropped.map_or("-".to_string(), |d| d.to_string());
            let _ = writeln!(
                t,
                "{:>3} {:<30} {:>8.3} {:>7.2} {:>7} {:>10.3} {:>8.2} {:>8.3} {:>7} {:>9} {:>6.1} {:>7} {:>5}",
                i + 1,
                s.name,
                s.seconds,
                s.gbps,
                s.frames,
                s.recv_cpu,
                s.gb_per_recv_cpu(),
                s.send_cpu,
                drops,
                s.sender.datagrams,
                s.sender.datagrams as f64 / s.sender.sends.max(1) as f64,
                s.sender.acks,
                s.sender.lost
            );
        }
    }
    if let Some(s) = runs.last().and_then(|(a, _)| a.shard.as_ref()) {
        let _ = writeln!(
            t,
            "\nour shard, last run (both passes): {} datagrams in {} receives, {} datagrams sent",
            s.datagrams, s.receives, s.sent
        );
    }
    let ratio = |f: &dyn Fn(&Side) -> f64| median(runs.iter().map(|(a, b)| f(a) / f(b).max(1e-12)).collect());
    let _ = writeln!(
        t,
        "\nours / baseline (median of {} run(s)): {:.2}× GB/s, {:.2}× GB per receiving CPU-second",
        runs.len(),
        ratio(&|s| s.gbps),
        ratio(&|s| s.gb_per_recv_cpu())
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_transports_deliver_every_frame() {
        if let Err(e) = quic::probe() {
            vain_testkit::unavailable(vain_testkit::Need::IoUring, "bench quic: both transports", e);
            return;
        }
        // Enough bytes (32 MB) that each thread's CPU time spans several of the kernel's 10 ms
        // accounting ticks: with less, a fast run can be charged 0.
        let opts = Options { frames: 32, size: 1_000_000, connections: 2, mtu: 1472, offload: true };
        let runs = run(opts, 1).expect("run");
        let (a, b) = &runs[0];
        assert_eq!((a.frames, b.frames), (32, 32));
        assert!(a.gbps > 0.0 && b.gbps > 0.0);
        // Both receivers and the sender did work that the scheduler charged to them.
        assert!(a.recv_cpu > 0.0 && b.recv_cpu > 0.0 && a.send_cpu > 0.0 && b.send_cpu > 0.0);
        assert!(table(&opts, &runs).contains("ours / baseline (median of 1 run(s))"));
    }
}
