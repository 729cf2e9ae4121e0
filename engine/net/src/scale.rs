//! The scale measurement: N nodes in one process on the memory transport, each joining through
//! one random earlier node; how long until every routing table is full, how lookups of random
//! node records fare, and what a node costs in memory.

use crate::node::{self, Found, Handle, Identity, Transport};
use crate::records::Key;
use crate::{Config, Error};
use serde::Serialize;
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
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn seed_of(i: u64) -> [u8; 32] {
    let mut s = [0x5cu8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    s
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn config(port: u64, bootstrap: Option<String>, query_timeout: f64) -> Config {
    let mut c = Config {
        listen: vec![format!("/memory/{port}")],
        bootstrap: bootstrap.into_iter().collect(),
        ..Default::default()
    };
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

/// Runs the measurement on the current tokio runtime.
pub async fn run(o: Options) -> Result<Report, Error> {
    let rss0 = rss_kib();
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
                config(o.base_port + i as u64, boot, o.query_timeout),
                Identity::from_seed(seed),
                Transport::Memory,
            )
            .await?,
        );
    }
    let spawn_seconds = start.elapsed().as_secs_f64();
    let want = 20.min(o.nodes.saturating_sub(1));
    let mut converge_seconds = None;
    let mut sizes = Vec::new();
    while start.elapsed() < o.timeout {
        // All at once: each answer waits behind its node's own work, so asking in turn would
        // measure the sum of those waits.
        let all = futures::future::join_all(nodes.iter().map(|h| h.status())).await;
        sizes = all.into_iter().map(|s| s.map(|s| s.routing)).collect::<Result<Vec<_>, _>>()?;
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
    let kib_per_node = rss_kib().saturating_sub(rss0) as f64 / o.nodes.max(1) as f64;
    let mut s = sizes.clone();
    let routing = (pct(&mut s, 0.0).unwrap_or(0), pct(&mut s, 0.5).unwrap_or(0), pct(&mut s, 1.0).unwrap_or(0));
    let mut settle_seconds = None;
    while converge_seconds.is_some() && start.elapsed() < o.timeout {
        let all = futures::future::join_all(nodes.iter().map(|h| h.status())).await;
        let all = all.into_iter().collect::<Result<Vec<_>, _>>()?;
        let unsettled = all.iter().filter(|s| !s.settled).count();
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
    let mut found = 0;
    let mut requests = Vec::new();
    let mut latency = Vec::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    // Lookups in batches of 20 concurrent ones.
    let pairs: Vec<(usize, usize)> = (0..o.lookups).map(|_| (rng.below(o.nodes), rng.below(o.nodes))).collect();
    for batch in pairs.chunks(20) {
        let runs = batch.iter().map(|&(asker, target)| {
            let h = nodes[asker].clone();
            let id = ids[target];
            async move {
                let t = Instant::now();
                let r = h.lookup(Key::Node(id)).await;
                (r, id, t.elapsed())
            }
        });
        for (r, id, took) in futures::future::join_all(runs).await {
            let (r, cost) = r?;
            latency.push(took.as_secs_f64() * 1e3);
            requests.push(cost.requests);
            let want: String = id.iter().map(|b| format!("{b:02x}")).collect();
            match r {
                Ok(Found::Node(ref n)) if n.node_id == want => found += 1,
                Ok(_) => *failures.entry("another record".into()).or_default() += 1,
                Err(e) => {
                    // Keep the reason, not the key, so that failures group.
                    let e = e.to_string();
                    let reason = e.rsplit(": ").next().unwrap_or(&e).to_string();
                    *failures.entry(reason).or_default() += 1;
                }
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
        })
        .await
        .expect("run");
        assert!(r.converge_seconds.is_some() && r.settle_seconds.is_some(), "{r:?}");
        assert_eq!(r.found, 40, "{r:?}");
        assert!(r.routing.0 >= 20, "{r:?}");
    }
}
