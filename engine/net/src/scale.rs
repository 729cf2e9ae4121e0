//! The scale measurement: N nodes, each joining through one random earlier node; how long until
//! every routing table is full, how lookups of random node records fare, and what a node costs
//! in memory and CPU. The nodes run in this process on the memory transport ([`run`]), or
//! anywhere else behind the [`Member`] trait (`vain bench dht --processes`: one process per
//! node on TCP loopback, reached through their control sockets).

use crate::node::{self, Found, Handle, Identity, Transport};
use crate::records::Key;
use crate::{Config, Error};
use serde::Serialize;
use std::future::Future;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone)]
pub struct Options {
    /// Nodes.
    pub nodes: usize,
    /// Lookups of random node records after convergence.
    pub lookups: usize,
    /// Seed of the random choices.
    pub seed: u64,
    /// Give up converging after this long.
    pub timeout: Duration,
    /// First memory-transport port (ports `base..base + nodes`).
    pub base_port: u64,
    /// Told how far the run is: phase (converging, settling, lookups), done, total; `None` for
    /// a quiet run.
    pub progress: Option<Progress>,
    /// Kademlia query timeout, seconds (`dht.query_timeout`).
    pub query_timeout: f64,
    /// Quiet time between settling and the lookups, whose CPU is the nodes' cost at rest.
    pub idle: Duration,
}

/// Where a scale run reports its progress.
pub type Progress = std::sync::Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Seconds from the first node starting to the last one spawned.
    pub spawn_seconds: f64,
    /// Seconds until every node's routing table held min(k, n − 1) peers (None if it never did).
    pub converge_seconds: Option<f64>,
    /// Seconds until, in addition, every node's own record had settled on the peers closest to
    /// its key (two checks in a row found nobody new; None if not within the timeout).
    pub settle_seconds: Option<f64>,
    /// Routing-table sizes at the end: min, median, max.
    pub routing: (usize, usize, usize),
    /// Lookups made.
    pub lookups: usize,
    /// Of which found and verified the record.
    pub found: usize,
    /// Requests per lookup: median and 99th percentile.
    pub requests: (u32, u32),
    /// Lookup latency in ms: median and 99th percentile.
    pub latency_ms: (f64, f64),
    /// Resident memory added per node, KiB.
    pub kib_per_node: f64,
    /// Lookups not found, by what the query said (its error, without the key).
    pub failures: std::collections::BTreeMap<String, usize>,
    /// CPU seconds the nodes used, by phase: joining and converging, settling, lookups.
    pub cpu_seconds: (f64, f64, f64),
    /// Wall seconds of the lookup phase.
    pub lookup_seconds: f64,
    /// CPU ms per second per node in the quiet time before the lookups (None without one).
    pub idle_ms_per_s: Option<f64>,
}

/// What the measurement reads of a node.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Routing-table size.
    pub routing: usize,
    /// Whether its own record has settled.
    pub settled: bool,
    /// Open connections.
    pub connected: usize,
}

/// What one lookup gave: the node id (hex) of the record found and verified, or why not.
pub type Outcome = (Result<String, String>, node::Lookup);

/// A node under measurement, wherever it runs.
pub trait Member: Send + Sync {
    /// Its routing, settling and connections now.
    fn probe(&self) -> impl Future<Output = Result<Probe, Error>> + Send;
    /// Looks up the record of `node` from this node.
    fn lookup(&self, node: [u8; 32]) -> impl Future<Output = Result<Outcome, Error>> + Send;
}

impl Member for Handle {
    async fn probe(&self) -> Result<Probe, Error> {
        let s = self.status().await?;
        Ok(Probe { routing: s.routing, settled: s.settled, connected: s.connected })
    }
    async fn lookup(&self, node: [u8; 32]) -> Result<Outcome, Error> {
        let (r, cost) = Handle::lookup(self, Key::Node(node)).await?;
        let r = match r {
            Ok(Found::Node(n)) => Ok(n.node_id),
            Ok(Found::Providers(_)) => Err("another record".to_string()),
            // Keep the reason, not the key, so that failures group.
            Err(e) => {
                let e = e.to_string();
                Err(e.rsplit(": ").next().unwrap_or(&e).to_string())
            }
        };
        Ok((r, cost))
    }
}

/// Where the nodes' resources are read from.
pub struct Gauges {
    /// Resident KiB of all the nodes together.
    pub kib: Box<dyn Fn() -> u64 + Send + Sync>,
    /// CPU seconds the nodes have used so far.
    pub cpu: Box<dyn Fn() -> f64 + Send + Sync>,
}

impl Gauges {
    /// This process's own resident memory and CPU time.
    pub fn this_process() -> Gauges {
        Gauges { kib: Box::new(|| rss_kib("self")), cpu: Box::new(|| cpu_seconds("self")) }
    }
}

/// Resident KiB of process `pid` (`self` for this one; 0 when it cannot be read).
pub fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User and system CPU seconds of process `pid` (`self` for this one; 0 when unreadable).
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // /proc counts in USER_HZ, which the kernel fixes at 100 on every architecture.
    (ticks(11) + ticks(12)) / 100.0
}

/// The key seed of the node numbered `i`.
pub fn seed_of(i: u64) -> [u8; 32] {
    let mut s = [0x5cu8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    s
}

/// The random choices of a run (xorshift).
pub struct Rng(pub u64);
impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// The configuration of a measured node listening on `listen`.
pub fn config(listen: String, bootstrap: Option<String>, query_timeout: f64) -> Config {
    let mut c = Config { listen: vec![listen], bootstrap: bootstrap.into_iter().collect(), ..Default::default() };
    c.mdns.enabled = false;
    c.beacon.enabled = false;
    // A DHT-centred node: Kademlia connects on demand; discovery dials few peers itself, and
    // liveness and exchange run at a relaxed pace. The defaults (48 dialled peers, 5 s
    // heartbeats) cost ~10 MiB and much CPU per node, which on one 2-core machine caps the
    // run near 100 nodes.
    c.limits.max_connections = 128;
    c.limits.target_connections = 8;
    c.limits.idle_timeout = 20.0;
    c.liveness.heartbeat_interval = 60.0;
    c.liveness.stale_after = 240.0;
    c.liveness.probes_per_tick = 2;
    c.pex.interval = 60.0;
    c.dht.query_timeout = query_timeout;
    c
}

fn pct<T: Copy + PartialOrd>(v: &mut [T], p: f64) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(((v.len().saturating_sub(1)) as f64 * p).round() as usize).copied()
}

/// Runs the measurement on the current tokio runtime, every node in this process.
pub async fn run(o: Options) -> Result<Report, Error> {
    let g = Gauges::this_process();
    let (kib0, cpu0) = ((g.kib)(), (g.cpu)());
    let mut rng = Rng(o.seed | 1);
    let start = Instant::now();
    let mut nodes: Vec<Handle> = Vec::with_capacity(o.nodes);
    let mut ids = Vec::with_capacity(o.nodes);
    for i in 0..o.nodes {
        let boot = (i > 0).then(|| {
            let j = rng.below(i);
            format!("/memory/{}/p2p/{}", o.base_port + j as u64, nodes[j].peer_id)
        });
        let seed = seed_of(o.base_port + i as u64);
        ids.push(Identity::from_seed(seed).node_id);
        nodes.push(
            node::spawn(
                config(format!("/memory/{}", o.base_port + i as u64), boot, o.query_timeout),
                Identity::from_seed(seed),
                Transport::Memory,
            )
            .await?,
        );
    }
    let spawn_seconds = start.elapsed().as_secs_f64();
    let gauges =
        Gauges { kib: Box::new(move || (g.kib)().saturating_sub(kib0)), cpu: Box::new(move || (g.cpu)() - cpu0) };
    measure(&nodes, &ids, &o, rng, start, spawn_seconds, &gauges).await
}

/// Measures `nodes` (whose node ids are `ids`), spawned since `start`: convergence, settling,
/// lookups; the rest of `rng` picks the lookups.
pub async fn measure<M: Member>(
    nodes: &[M],
    ids: &[[u8; 32]],
    o: &Options,
    mut rng: Rng,
    start: Instant,
    spawn_seconds: f64,
    gauges: &Gauges,
) -> Result<Report, Error> {
    let want = 20.min(o.nodes.saturating_sub(1));
    let mut converge_seconds = None;
    let mut sizes = Vec::new();
    while start.elapsed() < o.timeout {
        // All at once: each answer waits behind its node's own work, so asking in turn would
        // measure the sum of those waits.
        let all = futures::future::join_all(nodes.iter().map(|h| h.probe())).await;
        // A node too busy to answer in time has not converged yet; the run's timeout bounds
        // the wait.
        sizes = all.into_iter().map(|s| s.map_or(0, |s| s.routing)).collect();
        if sizes.iter().all(|s| *s >= want) {
            converge_seconds = Some(start.elapsed().as_secs_f64());
            break;
        }
        if let Some(p) = &o.progress {
            let at = sizes.iter().filter(|s| **s >= want).count();
            p("nodes with their routing table filled", at as u64, o.nodes as u64);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kib_per_node = (gauges.kib)() as f64 / o.nodes.max(1) as f64;
    let cpu_converged = (gauges.cpu)();
    let mut s = sizes.clone();
    let routing = (pct(&mut s, 0.0).unwrap_or(0), pct(&mut s, 0.5).unwrap_or(0), pct(&mut s, 1.0).unwrap_or(0));
    let mut settle_seconds = None;
    while converge_seconds.is_some() && start.elapsed() < o.timeout {
        let all = futures::future::join_all(nodes.iter().map(|h| h.probe())).await;
        let all: Vec<Probe> = all.into_iter().flatten().collect();
        let unsettled = o.nodes - all.iter().filter(|s| s.settled).count();
        let mut conns: Vec<usize> = all.iter().map(|s| s.connected).collect();
        if unsettled == 0 {
            settle_seconds = Some(start.elapsed().as_secs_f64());
            break;
        }
        if let Some(p) = &o.progress {
            let median = pct(&mut conns, 0.5).unwrap_or(0);
            p(&format!("nodes settled ({median} connections per node)"), (o.nodes - unsettled) as u64, o.nodes as u64);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let idle_ms_per_s = if o.idle.is_zero() {
        None
    } else {
        if let Some(p) = &o.progress {
            p("quiet before the lookups", 0, 1);
        }
        let (c0, t0) = ((gauges.cpu)(), Instant::now());
        tokio::time::sleep(o.idle).await;
        Some(1e3 * ((gauges.cpu)() - c0) / t0.elapsed().as_secs_f64() / o.nodes.max(1) as f64)
    };
    let cpu_settled = (gauges.cpu)();
    let lookups_start = Instant::now();
    let mut found = 0;
    let mut requests = Vec::new();
    let mut latency = Vec::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    // Lookups in batches of 20 concurrent ones.
    let pairs: Vec<(usize, usize)> = (0..o.lookups).map(|_| (rng.below(o.nodes), rng.below(o.nodes))).collect();
    for batch in pairs.chunks(20) {
        let runs = batch.iter().map(|&(asker, target)| {
            let h = &nodes[asker];
            let id = ids[target];
            async move {
                let t = Instant::now();
                let r = h.lookup(id).await;
                (r, id, t.elapsed())
            }
        });
        for (r, id, took) in futures::future::join_all(runs).await {
            let (r, cost) =
                r.unwrap_or_else(|_| (Err("the asking node did not answer".into()), node::Lookup::default()));
            latency.push(took.as_secs_f64() * 1e3);
            requests.push(cost.requests);
            let want = hex::encode(id);
            match r {
                Ok(n) if n == want => found += 1,
                Ok(_) => *failures.entry("another record".into()).or_default() += 1,
                Err(reason) => *failures.entry(reason).or_default() += 1,
            }
        }
        if let Some(p) = &o.progress {
            p(&format!("lookups ({found} found)"), latency.len() as u64, o.lookups as u64);
        }
    }
    Ok(Report {
        nodes: o.nodes,
        spawn_seconds,
        converge_seconds,
        settle_seconds,
        routing,
        lookups: o.lookups,
        found,
        requests: (pct(&mut requests, 0.5).unwrap_or(0), pct(&mut requests, 0.99).unwrap_or(0)),
        latency_ms: (pct(&mut latency, 0.5).unwrap_or(0.0), pct(&mut latency, 0.99).unwrap_or(0.0)),
        kib_per_node,
        failures,
        cpu_seconds: (cpu_converged, cpu_settled - cpu_converged, (gauges.cpu)() - cpu_settled),
        lookup_seconds: lookups_start.elapsed().as_secs_f64(),
        idle_ms_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_network_converges_and_every_lookup_succeeds() {
        let r = run(Options {
            nodes: 40,
            lookups: 40,
            seed: 7,
            timeout: Duration::from_secs(60),
            base_port: 50_000,
            progress: None,
            query_timeout: 30.0,
            idle: Duration::ZERO,
        })
        .await
        .expect("run");
        assert!(r.converge_seconds.is_some() && r.settle_seconds.is_some(), "{r:?}");
        assert_eq!(r.found, 40, "{r:?}");
        assert!(r.routing.0 >= 20, "{r:?}");
    }
}
