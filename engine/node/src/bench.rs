//! `vain bench`: throughput harnesses.

use crate::aggregate::{BackendChoice, open_backend};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use vain_bench::aggregate::{self as harness, Options};
use vain_kernels::aggregate::Rule;
use vain_kernels::encode::Codec;

/// `vain bench`: with no subcommand, the end-to-end ingest benchmark.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    ingest: IngestArgs,
}

/// Options of the ingest benchmark (`vain bench` with no subcommand).
#[derive(Args)]
pub struct IngestArgs {
    /// Aggregation backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Receiving shards (glommio executors, one core each); also the baseline's tokio workers.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Client processes, one update each per round.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Parameters per update (k, M suffixes).
    #[arg(long, default_value = "4M", value_parser = parse_count)]
    params: usize,
    /// Client encoding: f32 | f16 | bf16 | int8:BLOCK | topk:FRACTION | topk-f16:FRACTION | sign.
    #[arg(long, default_value = "f32")]
    encoding: Codec,
    /// zstd level applied after the encoding (none by default).
    #[arg(long)]
    zstd: Option<i32>,
    /// Aggregation rule: fedavg | median | trimmed-mean:β | multi-krum:f,m | bulyan:f |
    /// centered-clip:τ,iters | clipped-mean:c.
    #[arg(long, default_value = "fedavg")]
    rule: Rule,
    /// Rounds per transport.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Stop opening rounds after this many seconds (per transport).
    #[arg(long)]
    duration: Option<f64>,
    /// Largest UDP payload, probed for by MTU discovery from 1472 (8952: jumbo frames, which
    /// loopback carries; 1472 keeps Ethernet-sized datagrams; at most 65507).
    #[arg(long, default_value_t = 8952)]
    mtu: u16,
    /// Move our shards' datagrams one io_uring operation each instead of with GRO/GSO.
    #[arg(long)]
    no_offload: bool,
    /// Skip the quinn-on-tokio baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Directory for report.json, rounds.csv and throughput.svg.
    #[arg(long, default_value = "vain-bench-out")]
    out: std::path::PathBuf,
    /// CPU backend threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Options of `vain bench dht`.
#[derive(Args)]
pub struct DhtArgs {
    /// Nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Lookups of random node records after convergence.
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// Seed of the random bootstrap choices and lookups.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up converging after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Kademlia query timeout in seconds (a node's `dht.query_timeout`).
    #[arg(long, default_value_t = 30.0)]
    query_timeout: f64,
    /// One process per node on TCP loopback (each at its own 127.1.x.y address), measured
    /// through their control sockets, instead of every node in this process on the memory
    /// transport.
    #[arg(long)]
    processes: bool,
    /// With --processes: nodes per process (each on its own address, sharing the process's
    /// single-threaded runtime).
    #[arg(long, default_value_t = 1, requires = "processes")]
    per_process: usize,
    /// Seconds of quiet between settling and the lookups, to measure what the nodes cost at
    /// rest.
    #[arg(long, default_value_t = 10.0)]
    idle: f64,
}

/// Options of `vain bench flood`.
#[derive(Args)]
pub struct FloodArgs {
    /// Seconds of each measured window (no attack, Initials, idle connections, frame storm, no
    /// attack).
    #[arg(long, default_value_t = 30.0)]
    window: f64,
    /// Bogus QUIC Initial packets per second.
    #[arg(long, default_value_t = 10_000)]
    initials: u32,
    /// One Initial in this many is a genuine ClientHello (0: none).
    #[arg(long, default_value_t = 10)]
    genuine_every: u32,
    /// Idle connections to open and hold.
    #[arg(long, default_value_t = 5_000)]
    idle: usize,
    /// Oversized, garbled and truncated frames per second.
    #[arg(long, default_value_t = 2_000)]
    storm: u32,
    /// Identities the storm comes from.
    #[arg(long, default_value_t = 8)]
    storm_peers: usize,
    /// Payload bytes of each honest frame (k, M suffixes).
    #[arg(long, default_value = "16M", value_parser = parse_count)]
    size: usize,
    /// Honest frames in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// The endpoint's shards.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// The endpoint's budget of connection attempts per address and second (0: none, the
    /// default; as `[aggregate] attempts_per_address`).
    #[arg(long, default_value_t = 0)]
    attempts_per_address: u32,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Options of `vain bench ledger`.
#[derive(Args)]
pub struct LedgerArgs {
    /// Epochs (one signed report each).
    #[arg(long, default_value_t = 200)]
    epochs: u64,
    /// Observations per report.
    #[arg(long, default_value_t = 1000)]
    observations: usize,
    /// Distinct nodes observed.
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// Also measure recovery: a journal of this many entries (one-observation reports and
    /// ticks, written without the per-epoch fsync) replayed whole, then the same state from
    /// its snapshot, alone and with the most entries a compacted journal holds (0: skip).
    #[arg(long, default_value_t = 0)]
    recovery: u64,
}

/// Options of the client process the ingest benchmark starts.
#[derive(Args)]
pub struct ClientArgs {
    /// Aggregator address.
    #[arg(long)]
    server: std::net::SocketAddr,
    /// Aggregator public key (hex).
    #[arg(long)]
    server_key: String,
    /// Synthetic client number (key and values).
    #[arg(long)]
    seed: u64,
    /// Parameters per update.
    #[arg(long)]
    params: usize,
    /// Encoding.
    #[arg(long)]
    encoding: Codec,
    /// zstd level.
    #[arg(long)]
    zstd: Option<i32>,
    /// Largest UDP payload, probed for by MTU discovery from 1472 (8952: jumbo frames, which
    /// loopback carries; 1472 keeps Ethernet-sized datagrams; at most 65507).
    #[arg(long, default_value_t = 8952)]
    mtu: u16,
}

/// Throughput harnesses.
#[derive(Subcommand)]
pub enum Command {
    /// Time every aggregation rule on synthetic updates and relate it to the memory-copy
    /// bandwidth measured in the same run.
    Aggregate(AggregateArgs),
    /// QUIC ingest throughput on loopback: our glommio + quinn-proto shard against quinn on
    /// tokio with the same TLS and transport settings, in the same run.
    Quic(QuicArgs),
    /// The control plane at scale: N nodes in one process on libp2p's memory transport (or one
    /// process each on TCP loopback with --processes), each joining through a random earlier
    /// node; convergence time, lookup success and cost, memory and CPU per node.
    Dht(DhtArgs),
    /// One node of `vain bench dht --processes` (started by it; ends when its stdin closes).
    #[command(hide = true)]
    DhtNode(crate::dht_bench::NodeArgs),
    /// Floods against the ingest endpoint while an honest client sends: bogus QUIC Initials,
    /// idle connections, a storm of oversized and garbled frames; the honest throughput in each
    /// window and whether anything it sent was lost.
    Flood(FloodArgs),
    /// The ledger's apply rate on one core: signed reports of many observations, in memory
    /// (`Ledger::handle`) and through a node's live ledger (signature, journal with fsync per
    /// epoch, apply).
    Ledger(LedgerArgs),
    /// One synthetic client of the ingest benchmark (started by it; reads rounds on stdin).
    #[command(hide = true)]
    Client(ClientArgs),
}

/// Options of `vain bench quic`.
#[derive(Args)]
pub struct QuicArgs {
    /// Frames to send (one per stream).
    #[arg(long, default_value_t = 64)]
    frames: usize,
    /// Payload bytes per frame (k, M suffixes).
    #[arg(long, default_value = "4M", value_parser = parse_count)]
    size: usize,
    /// Client connections the frames are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Largest UDP payload for both transports, probed for by MTU discovery from 1472 (8952:
    /// jumbo frames; 1472 keeps Ethernet-sized datagrams; at most 65507).
    #[arg(long, default_value_t = 8952)]
    mtu: u16,
    /// Move our shard's datagrams one io_uring operation each instead of with GRO/GSO.
    #[arg(long)]
    no_offload: bool,
    /// Runs of both transports, alternating; the summary gives the median ratios.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Options of `vain bench aggregate`.
#[derive(Args)]
pub struct AggregateArgs {
    /// Parameters per update (suffixes k, M accepted: 4M = 4 194 304).
    #[arg(long, default_value = "4M", value_parser = parse_count)]
    params: usize,
    /// Updates per round.
    #[arg(long, default_value_t = 32)]
    updates: usize,
    /// Client encoding: f32 | f16 | bf16 | int8:BLOCK | topk:FRACTION | topk-f16:FRACTION | sign.
    #[arg(long, default_value = "f32")]
    encoding: Codec,
    /// A rule to time (repeat for several); default: all, with parameters fitting --updates.
    #[arg(long)]
    rule: Vec<Rule>,
    /// Timed repetitions per rule (the median is shown).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Updates per ingest batch (streaming rules add a batch in one pass over the accumulator).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// "16M" → 16 × 2²⁰, "64k" → 64 × 2¹⁰, "1000" → 1000.
fn parse_count(s: &str) -> Result<usize, String> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!("{s:?} is not a count (e.g. 1000, 64k, 16M)"))?;
    n.checked_mul(mul).filter(|n| *n > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// Every rule, with Byzantine bounds sized to `n` updates.
fn default_rules(n: usize) -> Vec<Rule> {
    let mut rules = vec![Rule::FedAvg, Rule::ClippedMean { c: 10.0 }, Rule::Median, Rule::TrimmedMean { beta: 0.1 }];
    let f = n.saturating_sub(3) / 4;
    if n >= 3 {
        let fk = f.max(1).min((n - 3) / 2);
        rules.push(Rule::MultiKrum { f: fk, m: n - fk });
        rules.push(Rule::Bulyan { f });
    }
    rules.push(Rule::CenteredClip { tau: 10.0, iters: 3 });
    rules
}

/// Runs `vain bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    // The ingest benchmarks (aggregator and client processes) move bulk data: keep freed memory
    // for reuse rather than faulting in fresh pages for each receive arena and payload buffer.
    // Not for the DHT run, whose thousands of small allocations it slows (perf: _int_malloc).
    if !matches!(args.command, Some(Command::Dht(_) | Command::DhtNode(_) | Command::Aggregate(_))) {
        vain_transport::heap::retain_freed();
    }
    match args.command {
        Some(c) => run_command(c),
        None => ingest(args.ingest),
    }
}

fn ingest(a: IngestArgs) -> Result<()> {
    vain_transport::quic::probe()
        .map_err(|e| anyhow::anyhow!("the glommio shards cannot start on this machine: {e}"))?;
    let exe = std::env::current_exe()?;
    let opts = vain_bench::ingest::Options {
        shards: a.shards,
        clients: a.clients,
        params: a.params,
        encoding: a.encoding,
        zstd: a.zstd,
        rule: a.rule,
        rounds: a.rounds,
        duration: a.duration.map(std::time::Duration::from_secs_f64),
        mtu: a.mtu,
        offload: !a.no_offload,
        baseline: !a.no_baseline,
        client_command: vec![exe.to_string_lossy().into_owned(), "bench".into(), "client".into()],
        round_timeout: std::time::Duration::from_secs(120),
    };
    let mut backend = open_backend(a.backend, a.threads)?;
    let bar = crate::progress::bar(0, "round");
    let mut progress = |transport: &str, done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(transport.to_string());
        if done == total {
            bar.finish_and_clear();
            bar.reset();
        }
    };
    let report = vain_bench::ingest::run(&opts, backend.as_mut(), &mut progress)?;
    print!("{}", report.text());
    let mut files = report.write(&a.out)?;
    // Wire GB/s per round, one line per transport.
    let series: Vec<crate::chart::Series> = report
        .runs
        .iter()
        .enumerate()
        .map(|(i, run)| crate::chart::Series {
            name: run.transport.to_string(),
            colour: crate::chart::PALETTE[i % crate::chart::PALETTE.len()],
            points: run
                .rounds
                .iter()
                .map(|r| (r.round as f64, r.wire_bytes as f64 / r.seconds.max(1e-9) / 1e9))
                .collect(),
        })
        .collect();
    let o = &report.options;
    let title = format!(
        "vain bench: wire GB/s per round ({} clients, {} shard(s), {} params, {})",
        o.clients, o.shards, o.params, o.encoding
    );
    let svg = a.out.join("throughput.svg");
    let png = crate::chart::lines(
        &svg,
        &crate::chart::Chart { title: &title, x: "round", y: "wire GB/s", y_range: None },
        &series,
    )?;
    files.push(svg);
    files.push(png);
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}

/// Runs `vain bench ledger`.
fn flood(a: FloodArgs) -> Result<()> {
    if !(a.window.is_finite() && a.window > 0.0) || a.shards == 0 || a.in_flight == 0 {
        bail!("--window, --shards and --in-flight must be above 0");
    }
    vain_transport::quic::probe()
        .map_err(|e| anyhow::anyhow!("the glommio shard cannot start on this machine: {e}"))?;
    let opts = vain_bench::flood::Options {
        window: std::time::Duration::from_secs_f64(a.window),
        initials_per_s: a.initials,
        genuine_every: a.genuine_every,
        idle: a.idle,
        storm_per_s: a.storm,
        storm_peers: a.storm_peers.max(1),
        size: a.size,
        in_flight: a.in_flight,
        shards: a.shards,
        attempts_per_address: a.attempts_per_address,
    };
    eprintln!("five windows of {:.0} s each, plus the attacks' set-up…", a.window);
    let r = vain_bench::flood::run(opts)?;
    print!("{}", r.text());
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)?;
    }
    if r.lost() > 0 {
        bail!("{} honest frame(s) acknowledged by the endpoint never reached its handler", r.lost());
    }
    Ok(())
}

fn ledger(a: LedgerArgs) -> Result<()> {
    use vain_core::ledger::{self, Input, Ledger, Observation, Observed, Report};
    use vain_core::signed::Signed;
    if a.epochs == 0 || a.observations == 0 || a.subjects == 0 {
        bail!("--epochs, --observations and --subjects must be at least 1");
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let reporter = key.verifying_key().to_bytes();
    // Mostly honest participation and feedback, some anomalies: the ledger's common work.
    let reports: Vec<Signed<Report>> = (0..a.epochs)
        .map(|e| {
            let observations = (0..a.observations)
                .map(|i| {
                    let n = (e as usize * a.observations + i) % a.subjects;
                    let mut subject = [0u8; 32];
                    subject[..8].copy_from_slice(&(n as u64).to_le_bytes());
                    let what = match i % 3 {
                        0 => Observed::Participated,
                        1 => Observed::Anomaly { z: if n.is_multiple_of(50) { 5.0 } else { 0.5 } },
                        _ => Observed::Feedback { score: 0.8 },
                    };
                    Observation { subject, what }
                })
                .collect();
            Signed::sign(&key, Report { epoch: e, observations, governance: Vec::new() })
        })
        .collect();
    let total = a.epochs as f64 * a.observations as f64;

    let mut l = Ledger::new(ledger::Config { pretrusted: vec![reporter], ..ledger::Config::default() }, 0);
    let t = std::time::Instant::now();
    for r in &reports {
        let at = vain_trust::epoch_time(r.body.epoch);
        l.handle(at, Input::Report(r.clone())).map_err(|e| anyhow::anyhow!("ledger refused a report: {e}"))?;
        l.tick(at);
        while l.poll().is_some() {}
    }
    let mem = t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let mut live = vain_trust::Live::open(
        dir.path(),
        vain_trust::Config { pretrusted: vec![reporter], ..vain_trust::Config::default() },
    )?;
    let t = std::time::Instant::now();
    for r in &reports {
        live.offer(r.clone())?;
    }
    let journaled = t.elapsed().as_secs_f64();
    if live.next_epoch() != a.epochs || live.status().digest != hex::encode(l.digest()) {
        bail!("the live ledger did not reach the in-memory ledger's state");
    }
    println!(
        "{} reports × {} observations over {} nodes, one core:
         in memory (Ledger::handle + tick):      {:>10.0} observations/s ({:.3} s)
         live (verify + journal fsync + apply):  {:>10.0} observations/s ({:.3} s, {:.2} ms per epoch)
         both reach state digest {}",
        a.epochs,
        a.observations,
        a.subjects,
        total / mem,
        mem,
        total / journaled,
        journaled,
        journaled * 1000.0 / a.epochs as f64,
        live.status().digest
    );
    if a.recovery > 0 {
        recovery(a.recovery, a.subjects, &key)?;
    }
    Ok(())
}

/// `vain bench ledger --recovery N`: how long a node takes to reopen its ledger after N journal
/// entries, with and without compaction.
fn recovery(entries: u64, subjects: usize, key: &ed25519_dalek::SigningKey) -> Result<()> {
    use std::io::Write;
    use vain_core::journal::{self, Entry};
    use vain_core::ledger::{Input, Observation, Observed, Report};
    use vain_core::signed::Signed;
    let cfg =
        || vain_trust::Config { pretrusted: vec![key.verifying_key().to_bytes()], ..vain_trust::Config::default() };
    let dir = tempfile::tempdir()?;
    let epochs = entries / 2;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.path().join("ledger.journal"))?);
        f.write_all(journal::MAGIC)?;
        for e in 0..epochs {
            let mut subject = [0u8; 32];
            subject[..8].copy_from_slice(&(e % subjects.max(1) as u64).to_le_bytes());
            let r = Signed::sign(key, Report::new(e, vec![Observation { subject, what: Observed::Participated }]));
            let at = vain_trust::epoch_time(e);
            f.write_all(&journal::encode(&Entry::Input { at, input: Input::Report(r) }))?;
            f.write_all(&journal::encode(&Entry::Tick { at }))?;
        }
        f.flush()?;
    }
    let t = std::time::Instant::now();
    let mut live = vain_trust::Live::open(dir.path(), cfg())?;
    let whole = t.elapsed().as_secs_f64();
    let digest = live.status().digest;
    let t = std::time::Instant::now();
    live.compact_now()?;
    let compact = t.elapsed().as_secs_f64();
    let snapshot_bytes = std::fs::metadata(dir.path().join("ledger.snapshot"))?.len();
    drop(live);
    let t = std::time::Instant::now();
    let mut live = vain_trust::Live::open(dir.path(), cfg())?;
    let from_snapshot = t.elapsed().as_secs_f64();
    if live.status().digest != digest {
        bail!("the snapshot did not give the replayed state");
    }
    // The worst case: the snapshot and a journal one entry short of the next compaction.
    let more = (vain_trust::COMPACT_EVERY / 2).saturating_sub(1);
    for e in epochs..epochs + more {
        live.offer(Signed::sign(key, Report::new(e, Vec::new())))?;
    }
    let digest = live.status().digest;
    drop(live);
    let t = std::time::Instant::now();
    let live = vain_trust::Live::open(dir.path(), cfg())?;
    let worst = t.elapsed().as_secs_f64();
    if live.status().digest != digest {
        bail!("the snapshot and the journal did not give the live state");
    }
    println!(
        "recovery after {} journal entries ({epochs} epochs over {subjects} nodes):
         replaying the whole journal:                         {whole:>8.3} s
         compacting (snapshot of {snapshot_bytes} bytes, written and synced): {compact:>8.3} s
         from the snapshot alone:                             {from_snapshot:>8.3} s
         from the snapshot and {} more entries (the most between snapshots): {worst:>8.3} s",
        epochs * 2,
        more * 2
    );
    Ok(())
}

fn run_command(cmd: Command) -> Result<()> {
    match cmd {
        Command::Ledger(a) => ledger(a)?,
        Command::Flood(a) => flood(a)?,
        Command::Dht(d) => {
            if d.nodes < 2 {
                bail!("--nodes must be at least 2");
            }
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let o = vain_net::scale::Options {
                nodes: d.nodes,
                lookups: d.lookups,
                seed: d.seed,
                timeout: std::time::Duration::from_secs(d.timeout),
                base_port: 1_000_000 + std::process::id() as u64 * 10_000,
                progress: Some({
                    let bar = crate::progress::bar(d.nodes as u64, "");
                    std::sync::Arc::new(move |phase: &str, done: u64, total: u64| {
                        bar.set_length(total);
                        bar.set_position(done);
                        bar.set_message(phase.to_string());
                    })
                }),
                query_timeout: d.query_timeout,
                idle: std::time::Duration::from_secs_f64(d.idle.max(0.0)),
            };
            eprintln!("starting {} nodes…", d.nodes);
            let r = if d.processes {
                drop(rt);
                crate::dht_bench::run(o, d.per_process)?
            } else {
                rt.block_on(vain_net::scale::run(o)).map_err(anyhow::Error::msg)?
            };
            let per_node = |cpu: f64, secs: Option<f64>| {
                secs.filter(|s| *s > 0.0)
                    .map_or("—".into(), |s| format!("{:.2} ms/s", 1e3 * cpu / s / r.nodes as f64))
            };
            println!(
                "{} nodes {}, each bootstrapped from one random earlier node; query timeout {} s
                 spawned in {:.1} s; every routing table ≥ min(20, n−1) after {}; every node's record settled after {}
                 routing-table size min / median / max: {} / {} / {}
                 lookups: {} of {} found and verified ({:.1} %); requests per lookup p50 {} / p99 {}; latency p50 {:.1} ms / p99 {:.1} ms
                 memory: {:.0} KiB {} per node
                 CPU of all nodes: {:.0} s joining and converging, {:.0} s settling, {:.0} s in {:.0} s of lookups; per node at rest {}, during lookups {}{}",
                r.nodes,
                match (d.processes, d.per_process) {
                    (false, _) => "in one process on the memory transport".to_string(),
                    (true, 1) => "as processes on TCP loopback".to_string(),
                    (true, n) => format!("as processes of {n} on TCP loopback"),
                },
                d.query_timeout,
                r.spawn_seconds,
                r.converge_seconds.map_or("— (did not converge)".into(), |s| format!("{s:.1} s")),
                r.settle_seconds.map_or("— (did not settle)".into(), |s| format!("{s:.1} s")),
                r.routing.0,
                r.routing.1,
                r.routing.2,
                r.found,
                r.lookups,
                100.0 * r.found as f64 / r.lookups.max(1) as f64,
                r.requests.0,
                r.requests.1,
                r.latency_ms.0,
                r.latency_ms.1,
                r.kib_per_node,
                if d.processes { "proportional resident (PSS)" } else { "resident" },
                r.cpu_seconds.0,
                r.cpu_seconds.1,
                r.cpu_seconds.2,
                r.lookup_seconds,
                r.idle_ms_per_s.map_or("—".into(), |c| format!("{c:.2} ms/s")),
                per_node(r.cpu_seconds.2, Some(r.lookup_seconds)),
                if r.failures.is_empty() { String::new() } else { format!("\n                 not found: {:?}", r.failures) }
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::DhtNode(a) => crate::dht_bench::node_main(&a)?,
        Command::Client(c) => {
            let o = vain_bench::ingest::ClientOptions {
                server: c.server,
                server_key: c.server_key,
                seed: c.seed,
                params: c.params,
                encoding: c.encoding,
                zstd: c.zstd,
                mtu: c.mtu,
            };
            vain_bench::ingest::client_main(&o)?;
        }
        Command::Quic(q) => {
            if q.frames == 0 || q.connections == 0 || q.repeat == 0 {
                bail!("--frames, --connections and --repeat must be at least 1");
            }
            let opts = vain_bench::quic::Options {
                frames: q.frames,
                size: q.size,
                connections: q.connections,
                mtu: q.mtu,
                offload: !q.no_offload,
            };
            vain_transport::quic::probe()
                .map_err(|e| anyhow::anyhow!("the glommio shard cannot start on this machine: {e}"))?;
            let runs = vain_bench::quic::run(opts, q.repeat)?;
            print!("{}", vain_bench::quic::table(&opts, &runs));
        }
        Command::Aggregate(a) => {
            if a.updates == 0 {
                bail!("--updates must be at least 1");
            }
            let mut backend = open_backend(a.backend, a.threads)?;
            let opts = Options {
                params: a.params,
                updates: a.updates,
                codec: a.encoding,
                rules: if a.rule.is_empty() { default_rules(a.updates) } else { a.rule },
                reps: a.reps.max(1),
                tensors: 8,
                batch: a.batch.max(1),
                copy_threads: if a.threads == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    a.threads
                },
            };
            let need = (a.updates as u64) * (a.params as u64) * 4;
            eprintln!("preparing {} updates ({} MB of f32-equivalent data)…", a.updates, need / 1_000_000);
            let res = harness::run(backend.as_mut(), &opts)?;
            print!("{}", harness::table(&opts, &backend.kind().to_string(), &res));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("16M"), Ok(16 << 20));
        assert_eq!(parse_count("64k"), Ok(64 << 10));
        assert_eq!(parse_count("1000"), Ok(1000));
        assert!(parse_count("0").is_err() && parse_count("x").is_err() && parse_count("99999999999G").is_err());
    }

    #[test]
    fn default_rules_fit_their_preconditions() {
        for n in 1..200 {
            for r in default_rules(n) {
                assert!(r.check_count(n).is_ok(), "{r} on {n}");
            }
        }
    }
}
