//! `vain bench`: the end-to-end ingest benchmark. An aggregator with K shards (this process)
//! and M synthetic clients (separate processes, so their CPU is not counted against the
//! aggregator) on loopback run R rounds: the aggregator opens a round, tells the clients, each
//! encodes, signs and sends a D-parameter update over QUIC, and the round closes with the rule
//! once every update is in. The same clients then repeat the run against quinn on tokio feeding
//! the same checks and stage, in the same process: the ordinary choice, measured alongside.
//!
//! Clients speak to the harness over their stdin/stdout: the harness writes
//! `round <r> <base-model hex>`, the client answers `sent <r> <first-byte unix ns>` or
//! `error <r> <message>`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vain_aggregator::{Event, Service, ShardHandler, Stage};
use vain_ingest::update::{Encoder, Round as ClientRound, Tensor};
use vain_ingest::{Config as IngestConfig, Ingest, TensorLayout};
use vain_kernels::aggregate::{Config as RoundConfig, Rule};
use vain_kernels::backend::Backend;
use vain_kernels::encode::Codec;
use vain_schema::Limits;
use vain_schema::delta::DType;
use vain_transport::client::{self, Client};
use vain_transport::frame::Decoder;
use vain_transport::quic;
use vain_transport::tls::{self, Policy};

const MODEL: &str = "vain-bench";
const TENSOR: &str = "weights";
const AGGREGATOR_SEED: [u8; 32] = [0xa9; 32];

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shards (glommio executors) of our transport; also the tokio workers of the baseline.
    pub shards: usize,
    /// Client processes.
    pub clients: usize,
    /// Parameters per update.
    pub params: usize,
    /// Client encoding.
    pub encoding: Codec,
    /// zstd level on top of the encoding, if any.
    pub zstd: Option<i32>,
    /// Aggregation rule.
    pub rule: Rule,
    /// Rounds (at most; `duration` may end the run sooner).
    pub rounds: usize,
    /// Stop opening rounds after this long.
    pub duration: Option<Duration>,
    /// Largest UDP payload: path-MTU discovery's upper bound (connections start at
    /// [`start_mtu`]).
    pub mtu: u16,
    /// GRO/GSO on our shards.
    pub offload: bool,
    /// Run the quinn-on-tokio baseline too.
    pub baseline: bool,
    /// The client program and the arguments before the harness's own (e.g. `vain bench client`).
    pub client_command: Vec<String>,
    /// Longest wait for a round's updates.
    pub round_timeout: Duration,
}

/// One round's figures.
#[derive(Debug, Clone, Default)]
pub struct RoundRow {
    /// Round number.
    pub round: u64,
    /// Updates accepted.
    pub updates: usize,
    /// Updates rejected.
    pub rejected: usize,
    /// Payload bytes received.
    pub wire_bytes: u64,
    /// From the first byte any client sent to the last update ingested (client encoding and
    /// round signalling excluded).
    pub seconds: f64,
    /// From the round opening (clients told) to its last update ingested.
    pub round_seconds: f64,
    /// Rule, noise and report at close.
    pub close_seconds: f64,
    /// Median latency, first byte sent → ingested, ms.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
}

/// One transport's run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Which transport.
    pub transport: &'static str,
    /// Per round.
    pub rounds: Vec<RoundRow>,
    /// Updates per second over the rounds' ingest time.
    pub updates_per_s: f64,
    /// Payload GB/s.
    pub wire_gbps: f64,
    /// f32-equivalent GB/s (updates × params × 4 bytes).
    pub f32_gbps: f64,
    /// Latency percentiles over every update, ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// CPU use of each receiving thread over the run, as a fraction of one core.
    pub cpu: Vec<(String, f64)>,
    /// Rejections by reason.
    pub rejects: BTreeMap<String, u64>,
    /// Transport counters (ours only).
    pub transport_stats: Option<quic::Stats>,
    /// Whether packets were routed to shards by connection ID (ours only).
    pub routed: Option<bool>,
    /// Seconds the receiving threads spent in the ingest checks (payload BLAKE3, Ed25519,
    /// decompression, layout), and in all (CPU time).
    pub check_seconds: f64,
    /// CPU seconds of the receiving threads.
    pub cpu_seconds: f64,
}

/// Both runs.
#[derive(Debug, Clone)]
pub struct Report {
    /// Settings.
    pub options: Options,
    /// Backend that aggregated.
    pub backend: String,
    /// Ours, then the baseline if run.
    pub runs: Vec<Run>,
}

fn client_public(seed: u64) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&client_secret(seed)).verifying_key().to_bytes()
}

fn client_secret(seed: u64) -> [u8; 32] {
    let mut s = [0x5eu8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s
}

fn base_model(round: u64) -> [u8; 32] {
    *blake3::hash(&[b"vain-bench/base/".as_slice(), &round.to_le_bytes()].concat()).as_bytes()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Where connections start when MTU discovery may go up to `mtu`: Ethernet's 1472, or `mtu`
/// when that is smaller.
pub(crate) fn start_mtu(mtu: u16) -> u16 {
    mtu.clamp(1200, 1472)
}

fn server_config(listen: SocketAddr, opts: &Options) -> Result<quic::Config, crate::Error> {
    let allowed = (0..opts.clients as u64).map(client_public).collect();
    let tls = tls::server_config(&AGGREGATOR_SEED, Policy::Only(allowed))?;
    let mut cfg = quic::Config::new(listen, tls);
    cfg.max_udp_payload = opts.mtu.max(1200);
    cfg.initial_mtu = start_mtu(opts.mtu);
    cfg.offload = opts.offload;
    cfg.pin = opts.shards > 1;
    // One update per client per round, and room for a whole round in flight.
    let update = (opts.params as u64 * 4 + (1 << 20)) as f64;
    cfg.rates.bytes_burst = cfg.rates.bytes_burst.max(4.0 * update);
    Ok(cfg)
}

struct Clients {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    lines: mpsc::Receiver<(usize, String)>,
}

impl Clients {
    fn spawn(opts: &Options, server: SocketAddr) -> Result<Self, crate::Error> {
        let (prog, pre) = opts.client_command.split_first().ok_or(crate::Error::Options("no client command"))?;
        let server_key = ed25519_dalek::SigningKey::from_bytes(&AGGREGATOR_SEED).verifying_key().to_bytes();
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for i in 0..opts.clients {
            let mut child = Command::new(prog)
                .args(pre)
                .args(["--server", &server.to_string()])
                .args(["--server-key", &hex::encode(server_key)])
                .args(["--seed", &i.to_string()])
                .args(["--params", &opts.params.to_string()])
                .args(["--encoding", &opts.encoding.to_string()])
                .args(["--mtu", &opts.mtu.to_string()])
                .args(opts.zstd.map(|z| vec!["--zstd".to_string(), z.to_string()]).unwrap_or_default())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|source| crate::Error::Io { what: format!("starting client {prog}"), source })?;
            stdins.push(child.stdin.take().ok_or(crate::Error::Options("client stdin"))?);
            let out = child.stdout.take().ok_or(crate::Error::Options("client stdout"))?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
            children.push(child);
        }
        Ok(Self { children, stdins, lines })
    }

    fn open(&mut self, round: u64) -> Result<(), crate::Error> {
        let line = format!("round {round} {}\n", hex::encode(base_model(round)));
        for s in &mut self.stdins {
            s.write_all(line.as_bytes())
                .and_then(|_| s.flush())
                .map_err(|source| crate::Error::Io { what: "a client exited".into(), source })?;
        }
        Ok(())
    }

    /// The first-byte times clients report for `round`, by client index, waiting until each
    /// answered or `deadline`.
    fn answers(&self, round: u64, deadline: Instant) -> Result<HashMap<usize, u64>, crate::Error> {
        let mut got = HashMap::new();
        while got.len() < self.stdins.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((i, line)) = self.lines.recv_timeout(left) else { break };
            let f: Vec<&str> = line.splitn(3, ' ').collect();
            match f.as_slice() {
                ["sent", r, ns] if r.parse::<u64>() == Ok(round) => {
                    got.insert(
                        i,
                        ns.parse::<u64>().map_err(|_| crate::Error::Client { client: i, line: line.clone() })?,
                    );
                }
                ["error", r, msg] if r.parse::<u64>() == Ok(round) => {
                    eprintln!("client {i}, round {round}: {msg}");
                    got.insert(i, 0);
                }
                _ => {}
            }
        }
        Ok(got)
    }

    fn finish(mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the rounds through `stage` with clients aimed at `server`.
fn rounds(
    opts: &Options,
    backend: &mut dyn Backend,
    stage: &Stage,
    server: SocketAddr,
    transport: &'static str,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Run, crate::Error> {
    let mut clients = Clients::spawn(opts, server)?;
    let index_of: HashMap<[u8; 32], usize> = (0..opts.clients).map(|i| (client_public(i as u64), i)).collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut all_lat = Vec::new();
    let mut rejects: BTreeMap<String, u64> = BTreeMap::new();
    let dim = opts.params;
    for r in 1..=opts.rounds as u64 {
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        progress(transport, r as usize - 1, opts.rounds);
        let cfg = IngestConfig {
            limits: Limits::default(),
            model_id: MODEL.into(),
            round: r,
            base_model: base_model(r),
            layout: vec![TensorLayout { name: TENSOR.into(), shape: vec![dim as u64], dtype: DType::F32 }],
            aggregation: RoundConfig { max_updates: opts.clients, ..RoundConfig::new(dim, opts.rule) },
            replay_window: 4,
        };
        let mut ingest = Ingest::new(&mut *backend, cfg, |_| Ok(()))?;
        stage.open(ingest.checker());
        let t0 = Instant::now();
        clients.open(r)?;
        let mut accepted: Vec<([u8; 32], u64)> = Vec::new();
        let mut row = RoundRow { round: r, ..Default::default() };
        let mut last = t0;
        stage.collect(&mut ingest, opts.clients, t0 + opts.round_timeout, |ev| match ev {
            Event::Accepted { accepted: a, wire_bytes, at_unix_ns, .. } => {
                accepted.push((a.sender, at_unix_ns));
                row.wire_bytes += wire_bytes;
                last = Instant::now();
            }
            Event::Rejected(rej) => {
                row.rejected += 1;
                *rejects.entry(rej.reject.reason().to_string()).or_default() += 1;
                if rej.first_for_peer {
                    eprintln!("round {r}: rejected: {}", rej.reject);
                }
            }
        })?;
        row.updates = accepted.len();
        if row.updates == 0 {
            // A report of a round nothing arrived in would be all zeros and nonsense ratios.
            return Err(crate::Error::NothingArrived {
                transport: transport.to_string(),
                round: r,
                timeout_s: opts.round_timeout.as_secs_f64(),
                rejected: row.rejected,
                rejects: format!("{rejects:?}"),
            });
        }
        row.round_seconds = last.duration_since(t0).as_secs_f64();
        let c0 = Instant::now();
        if row.updates > 0 {
            ingest.finish(&ed25519_dalek::SigningKey::from_bytes(&AGGREGATOR_SEED))?;
        }
        row.close_seconds = c0.elapsed().as_secs_f64();
        let sent = clients.answers(r, Instant::now() + opts.round_timeout)?;
        let mut lat: Vec<f64> = accepted
            .iter()
            .filter_map(|(k, at)| {
                let first = *sent.get(index_of.get(k)?)?;
                (first > 0).then(|| at.saturating_sub(first) as f64 / 1e6)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let first = accepted.iter().filter_map(|(k, _)| sent.get(index_of.get(k)?).copied()).filter(|t| *t > 0).min();
        let done = accepted.iter().map(|(_, at)| *at).max();
        row.seconds = match (first, done) {
            (Some(f), Some(d)) => d.saturating_sub(f) as f64 / 1e9,
            _ => row.round_seconds,
        };
        row.p50_ms = percentile(&lat, 0.5);
        row.p99_ms = percentile(&lat, 0.99);
        all_lat.extend(lat);
        stage.drain();
        rows.push(row);
    }
    progress(transport, rows.len(), opts.rounds);
    clients.finish();
    all_lat.sort_by(f64::total_cmp);
    let secs: f64 = rows.iter().map(|r| r.seconds).sum();
    // CPU of the receiving threads (a shard's executor and its helper threads, or all tokio
    // workers) against the time updates were on the wire.
    let check_seconds: f64 = stage.check_seconds().iter().sum();
    let cpu = if transport.starts_with("glommio") {
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for (name, s) in vain_transport::proc::thread_cpu("vain-shard-") {
            let shard = name.trim_start_matches("vain-shard-").split('-').next().unwrap_or("?").to_string();
            *by.entry(format!("shard {shard}")).or_default() += s;
        }
        by.into_iter().map(|(n, s)| (n, s / secs.max(1e-9))).collect()
    } else {
        let t = vain_transport::proc::thread_cpu("vain-quinn");
        let n = t.len();
        vec![(format!("{n} tokio workers"), t.iter().map(|(_, s)| s).sum::<f64>() / secs.max(1e-9))]
    };
    let updates: usize = rows.iter().map(|r| r.updates).sum();
    let wire: u64 = rows.iter().map(|r| r.wire_bytes).sum();
    let per = |x: f64| x / secs.max(1e-9);
    let cpu_seconds = cpu.iter().map(|(_, f)| f * secs).sum();
    Ok(Run {
        transport,
        updates_per_s: per(updates as f64),
        wire_gbps: per(wire as f64) / 1e9,
        f32_gbps: per((updates * dim * 4) as f64) / 1e9,
        p50_ms: percentile(&all_lat, 0.5),
        p99_ms: percentile(&all_lat, 0.99),
        rounds: rows,
        cpu_seconds,
        cpu,
        rejects,
        transport_stats: None,
        routed: None,
        check_seconds,
    })
}

/// Our transport: K glommio shards.
pub fn ours(
    opts: &Options,
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Run, crate::Error> {
    let mut cfg = server_config(SocketAddr::from(([127, 0, 0, 1], 0)), opts)?;
    cfg.page_lock = vain_aggregator::page_lock(&*backend);
    let service = Service::start(cfg, opts.shards, 2 * opts.clients.max(4))?;
    let addr = service.local_addr();
    let routed = service.routed();
    let run = rounds(opts, backend, &service.stage, addr, "glommio + quinn-proto (ours)", progress);
    let stats = service.stop().map_err(crate::Error::from);
    let mut run = run?;
    let per_shard = stats?;
    let total = quic::Stats::total(&per_shard);
    if run.cpu.is_empty() {
        let wall: f64 = run.rounds.iter().map(|r| r.seconds).sum::<f64>().max(1e-9);
        run.cpu =
            per_shard.iter().enumerate().map(|(i, s)| (format!("shard {i}"), s.cpu_ns as f64 / 1e9 / wall)).collect();
    }
    run.transport_stats = Some(total);
    run.routed = Some(routed);
    Ok(run)
}

/// quinn on a tokio runtime with K worker threads, the same TLS and transport settings, the
/// same frame decoder, checks and stage.
pub fn baseline(
    opts: &Options,
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Run, crate::Error> {
    let cfg = server_config(SocketAddr::from(([127, 0, 0, 1], 0)), opts)?;
    let (stage, mut handlers) =
        vain_aggregator::channels(1, 2 * opts.clients.max(4), vain_aggregator::page_lock(&*backend));
    let handler: Arc<Mutex<ShardHandler>> = Arc::new(Mutex::new(handlers.remove(0)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.shards.max(1))
        .thread_name("vain-quinn")
        .enable_all()
        .build()?;
    let server = cfg.server_config()?;
    let limits = cfg.limits.clone();
    // Payload buffers as a shard gets them: pooled, page-locked for a device backend.
    let pool =
        vain_transport::buf::Pool::with_pinner(cfg.pool.unwrap_or_default(), vain_aggregator::page_lock(&*backend));
    let ep = rt.block_on(async {
        // The shards' socket buffers, so the two transports differ only in how they run.
        let socket = quic::bind_udp(cfg.listen, cfg.socket_buffer)?;
        let runtime = quinn::default_runtime().ok_or(crate::Error::NoRuntime)?;
        quinn::Endpoint::new(cfg.endpoint_config()?, Some(server), socket, runtime).map_err(crate::Error::from)
    })?;
    let addr = ep.local_addr()?;
    let accept = ep.clone();
    rt.spawn(async move {
        while let Some(inc) = accept.accept().await {
            let (h, limits, pool) = (handler.clone(), limits.clone(), pool.clone());
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let peer = conn
                    .peer_identity()
                    .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
                    .and_then(|certs| tls::peer_key(Some(&certs)));
                let Some(peer) = peer else { return };
                while let Ok(mut recv) = conn.accept_uni().await {
                    let (h, limits, pool) = (h.clone(), limits.clone(), pool.clone());
                    tokio::spawn(async move {
                        let mut d = Decoder::with_pool(limits, pool);
                        while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                            if d.push(&chunk.bytes).is_err() {
                                let _ = recv.stop(1u32.into());
                                return;
                            }
                        }
                        if let Ok(f) = d.finish()
                            && let Ok(mut h) = h.lock()
                        {
                            h.handle(peer, f);
                        }
                    });
                }
            });
        }
    });
    let run = rounds(opts, backend, &stage, addr, "quinn on tokio (baseline)", progress);
    ep.close(0u32.into(), b"done");
    stage.drain();
    drop(rt);
    run
}

/// Ours, then the baseline when asked.
pub fn run(
    opts: &Options,
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Report, crate::Error> {
    if opts.clients == 0 || opts.shards == 0 || opts.params == 0 || opts.rounds == 0 {
        return Err(crate::Error::Options("--clients, --shards, --params and --rounds must be at least 1"));
    }
    opts.rule.check_count(opts.clients).map_err(|source| crate::Error::Rule {
        rule: opts.rule.to_string(),
        clients: opts.clients,
        source,
    })?;
    let mut runs = vec![ours(opts, backend, progress)?];
    if opts.baseline {
        runs.push(baseline(opts, backend, progress)?);
    }
    Ok(Report { options: opts.clone(), backend: backend.kind().to_string(), runs })
}

impl Report {
    /// The per-round tables and the summary.
    pub fn text(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "vain bench: {} client processes → aggregator on loopback, {} shard(s), {} backend\n\
             {} parameters per update ({:.1} MB as f32), encoding {}{}, rule {}, UDP payload {} B, TLS 1.3 (raw public keys)\n",
            o.clients,
            o.shards,
            self.backend,
            o.params,
            o.params as f64 * 4.0 / 1e6,
            o.encoding,
            o.zstd.map(|z| format!(" + zstd {z}")).unwrap_or_default(),
            o.rule,
            o.mtu
        );
        for run in &self.runs {
            s += &format!("\n{}\n", run.transport);
            s += &format!(
                "{:>5} {:>7} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}\n",
                "round",
                "updates",
                "rejected",
                "wire MB",
                "seconds",
                "updates/s",
                "wire GB/s",
                "f32 GB/s",
                "p50 ms",
                "p99 ms",
                "close ms"
            );
            for r in &run.rounds {
                let per = |x: f64| x / r.seconds.max(1e-9);
                s += &format!(
                    "{:>5} {:>7} {:>8} {:>9.1} {:>8.3} {:>9.1} {:>9.2} {:>9.2} {:>8.1} {:>8.1} {:>8.1}\n",
                    r.round,
                    r.updates,
                    r.rejected,
                    r.wire_bytes as f64 / 1e6,
                    r.seconds,
                    per(r.updates as f64),
                    per(r.wire_bytes as f64) / 1e9,
                    per((r.updates * o.params * 4) as f64) / 1e9,
                    r.p50_ms,
                    r.p99_ms,
                    r.close_seconds * 1e3
                );
            }
        }
        s += "\n(seconds: first byte sent → last update ingested; latency: each update's first byte → ingested)\n";
        s += "\nsummary\n";
        s += &format!(
            "{:<30} {:>9} {:>9} {:>9} {:>8} {:>8}  {}\n",
            "transport",
            "updates/s",
            "wire GB/s",
            "f32 GB/s",
            "p50 ms",
            "p99 ms",
            "receiving CPU (share of one core while updates were in flight)"
        );
        for run in &self.runs {
            let cpu: Vec<String> = run.cpu.iter().map(|(n, f)| format!("{n} {:.0} %", f * 100.0)).collect();
            s += &format!(
                "{:<30} {:>9.1} {:>9.2} {:>9.2} {:>8.1} {:>8.1}  {}\n",
                run.transport,
                run.updates_per_s,
                run.wire_gbps,
                run.f32_gbps,
                run.p50_ms,
                run.p99_ms,
                cpu.join(", ")
            );
        }
        for run in &self.runs {
            let rej: Vec<String> = run.rejects.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            s += &format!(
                "rejected ({}): {}\n",
                run.transport,
                if rej.is_empty() { "none".into() } else { rej.join(", ") }
            );
        }
        for run in &self.runs {
            let wire: u64 = run.rounds.iter().map(|r| r.wire_bytes).sum();
            s += &format!(
                "{}: {:.2} GB of payload per receiving CPU-second; checks (payload BLAKE3, Ed25519, decompression, layout) took {:.3} of {:.3} CPU-seconds ({:.0} %)\n",
                run.transport,
                wire as f64 / 1e9 / run.cpu_seconds.max(1e-9),
                run.check_seconds,
                run.cpu_seconds,
                100.0 * run.check_seconds / run.cpu_seconds.max(1e-9)
            );
        }
        if let Some(run) = self.runs.first()
            && let Some(t) = &run.transport_stats
        {
            s += &format!(
                "our shards: {} datagrams in {} receives, {} sent, {} connections, {} frames, {} bad frames, {} throttled, {} misrouted, payload buffers {} reused / {} allocated ({} page-locked); connection-ID routing {}\n",
                t.datagrams,
                t.receives,
                t.sent,
                t.connections,
                t.frames,
                t.bad_frames,
                t.throttled,
                t.misrouted,
                t.pool_reused,
                t.pool_allocated,
                t.pool_pinned,
                if run.routed == Some(true) { "in the kernel (reuseport BPF)" } else { "by 4-tuple hash only" }
            );
        }
        if let [a, b] = self.runs.as_slice() {
            s += &format!("ours / baseline (wire GB/s): {:.2}×\n", a.wire_gbps / b.wire_gbps.max(1e-12));
        }
        s
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "{{\n  \"options\": {{\"shards\": {}, \"clients\": {}, \"params\": {}, \"encoding\": \"{}\", \"zstd\": {}, \"rule\": \"{}\", \"rounds\": {}, \"mtu\": {}, \"offload\": {}}},\n  \"backend\": \"{}\",\n  \"runs\": [",
            o.shards,
            o.clients,
            o.params,
            o.encoding,
            o.zstd.map_or("null".into(), |z| z.to_string()),
            o.rule,
            o.rounds,
            o.mtu,
            o.offload,
            self.backend
        );
        for (i, run) in self.runs.iter().enumerate() {
            let rounds: Vec<String> = run
                .rounds
                .iter()
                .map(|r| {
                    format!(
                        "{{\"round\": {}, \"updates\": {}, \"rejected\": {}, \"wire_bytes\": {}, \"seconds\": {:.6}, \"round_seconds\": {:.6}, \"close_seconds\": {:.6}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
                        r.round, r.updates, r.rejected, r.wire_bytes, r.seconds, r.round_seconds, r.close_seconds, r.p50_ms, r.p99_ms
                    )
                })
                .collect();
            let cpu: Vec<String> =
                run.cpu.iter().map(|(n, f)| format!("{{\"thread\": \"{n}\", \"cpu\": {f:.4}}}")).collect();
            let rej: Vec<String> = run.rejects.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            s += &format!(
                "{}\n    {{\"transport\": \"{}\", \"updates_per_s\": {:.3}, \"wire_gbps\": {:.4}, \"f32_gbps\": {:.4}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"check_seconds\": {:.4}, \"cpu_seconds\": {:.4},\n     \"cpu\": [{}], \"rejects\": {{{}}},\n     \"rounds\": [\n      {}\n     ]}}",
                if i > 0 { "," } else { "" },
                run.transport,
                run.updates_per_s,
                run.wire_gbps,
                run.f32_gbps,
                run.p50_ms,
                run.p99_ms,
                run.check_seconds,
                run.cpu_seconds,
                cpu.join(", "),
                rej.join(", "),
                rounds.join(",\n      ")
            );
        }
        s += "\n  ]\n}\n";
        s
    }

    /// One line per (transport, round).
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "transport,round,updates,rejected,wire_bytes,seconds,round_seconds,close_seconds,wire_gbps,f32_gbps,p50_ms,p99_ms\n",
        );
        for run in &self.runs {
            for r in &run.rounds {
                let per = |x: f64| x / r.seconds.max(1e-9) / 1e9;
                s += &format!(
                    "{},{},{},{},{},{:.6},{:.6},{:.6},{:.4},{:.4},{:.3},{:.3}\n",
                    run.transport,
                    r.round,
                    r.updates,
                    r.rejected,
                    r.wire_bytes,
                    r.seconds,
                    r.round_seconds,
                    r.close_seconds,
                    per(r.wire_bytes as f64),
                    per((r.updates * self.options.params * 4) as f64),
                    r.p50_ms,
                    r.p99_ms
                );
            }
        }
        s
    }

    /// Writes `report.json` and `rounds.csv` into `dir` (the CLI draws the chart).
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let files = [("report.json", self.json()), ("rounds.csv", self.csv())];
        let mut out = Vec::new();
        for (name, body) in files {
            let p = dir.join(name);
            std::fs::write(&p, body)?;
            out.push(p);
        }
        Ok(out)
    }
}

/// The client process's settings (`vain bench client`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The aggregator.
    pub server: SocketAddr,
    /// Its public key, hex.
    pub server_key: String,
    /// Which synthetic client (selects its key and values).
    pub seed: u64,
    /// Parameters per update.
    pub params: usize,
    /// Encoding.
    pub encoding: Codec,
    /// zstd level, if any.
    pub zstd: Option<i32>,
    /// Largest UDP payload: path-MTU discovery's upper bound (connections start at
    /// [`start_mtu`]).
    pub mtu: u16,
}

/// The client process: answers every `round` line on stdin with one update.
pub fn client_main(o: &ClientOptions) -> Result<(), crate::Error> {
    let key: [u8; 32] = hex::decode(&o.server_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(crate::Error::Options("--server-key must be 64 hex digits"))?;
    let secret = client_secret(o.seed);
    let signer = ed25519_dalek::SigningKey::from_bytes(&secret);
    let mut cfg = client::Config::new(o.server, key, secret);
    (cfg.initial_mtu, cfg.max_udp_payload) = (start_mtu(o.mtu), o.mtu.max(1200));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut client = rt.block_on(async { Client::new(cfg) })?;
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let base: Vec<f32> = (0..o.params)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        })
        .collect();
    let mut encoder = Encoder::new(o.encoding, o.zstd);
    let shape = [o.params as u64];
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(&"round"), Some(r), Some(b)) = (f.first(), f.get(1), f.get(2)) else { continue };
        let round: u64 = r.parse().map_err(|_| crate::Error::BadLine(line.clone()))?;
        let base_model: [u8; 32] =
            hex::decode(b).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| crate::Error::BadLine(line.clone()))?;
        let scale = 1.0 + (round % 7) as f32 * 0.01;
        let values: Vec<f32> = base.iter().map(|v| v * scale).collect();
        let meta = ClientRound {
            model_id: MODEL.into(),
            round,
            base_model,
            num_examples: 100 + o.seed,
            timestamp_ms: vain_schema::clock::unix_ms(),
        };
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&round.to_le_bytes());
        nonce[8..].copy_from_slice(&o.seed.to_le_bytes());
        let built = encoder.build(&signer, &meta, nonce, &[Tensor { name: TENSOR, shape: &shape, values: &values }])?;
        let answer = match rt.block_on(client.send(&built.frame)) {
            Ok(sent) => format!("sent {round} {}\n", sent.first_byte_unix_ns),
            Err(e) => format!("error {round} {e}\n"),
        };
        let mut out = stdout.lock();
        out.write_all(answer.as_bytes()).and_then(|_| out.flush())?;
    }
    rt.block_on(client.close());
    Ok(())
}
