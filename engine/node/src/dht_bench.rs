//! `vain bench dht --processes`: the scale measurement with the nodes in processes of their own
//! (one each, or `--per-process` each) on TCP loopback (node i listens on 127.1.x.y:4001, its own
//! address), measured through the nodes' control sockets. Each process has its own runtime,
//! allocator and timer thread, and the kernel schedules them, instead of one tokio runtime
//! multiplexing every node.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use vain_net::node::{Identity, Lookup, Transport};
use vain_net::scale::{self, Gauges, Member, Outcome, Probe};

/// Port every node listens on (each at its own loopback address).
const PORT: u16 = 4001;
/// How long a node process may take to open its nodes' control sockets.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of one node process (started by `vain bench dht --processes`).
#[derive(Args)]
pub struct NodeArgs {
    /// The number of the process's first node (node i's key seed and address follow from i).
    #[arg(long)]
    first: usize,
    /// The node each of the process's nodes joins through, by number, comma-separated (`-`:
    /// none, for node 0).
    #[arg(long)]
    joins: String,
    /// Directory of the control sockets (node i serves `i.sock` there).
    #[arg(long)]
    sockets: PathBuf,
    /// Kademlia query timeout, seconds.
    #[arg(long)]
    query_timeout: f64,
}

/// Node `i`'s multiaddr (with its PeerId).
fn multiaddr(i: usize) -> Result<String> {
    let id = Identity::from_seed(scale::seed_of(i as u64)).node_id;
    Ok(format!("/ip4/{}/tcp/{PORT}/p2p/{}", address(i), vain_net::keys::peer_id(&id)?))
}

/// Runs the measured nodes of one process until its parent goes away (its stdin closes).
pub fn node_main(a: &NodeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        for (k, join) in a.joins.split(',').enumerate() {
            let i = a.first + k;
            let bootstrap = match join {
                "-" => None,
                j => Some(multiaddr(j.parse().context("--joins: node numbers")?)?),
            };
            let listen = format!("/ip4/{}/tcp/{PORT}", address(i));
            let cfg = scale::config(listen, bootstrap, a.query_timeout);
            let h = vain_net::node::spawn(cfg, Identity::from_seed(scale::seed_of(i as u64)), Transport::Tcp).await?;
            let socket = a.sockets.join(format!("{i}.sock"));
            tokio::spawn(async move {
                if let Err(e) = vain_net::control::serve(&socket, h).await {
                    tracing::error!(socket = %socket.display(), error = %e, "control socket failed");
                }
            });
        }
        let parent_gone = async {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut b = [0u8; 64];
            while let Ok(n) = stdin.read(&mut b).await
                && n > 0
            {}
        };
        parent_gone.await;
        Ok(())
    })
}

fn address(i: usize) -> String {
    format!("127.1.{}.{}", i / 250, 1 + i % 250)
}

/// A node in another process, reached through its control socket.
struct Remote {
    socket: PathBuf,
    /// Longest wait for a lookup's answer (its query timeout and some).
    lookup_wait: Duration,
}

impl Member for Remote {
    async fn probe(&self) -> Result<Probe, vain_net::Error> {
        let v = vain_net::control::ask(&self.socket, &json!({"cmd": "status"}), Duration::from_secs(60)).await?;
        let n = |f: &str| v[f].as_u64().unwrap_or(0) as usize;
        Ok(Probe { routing: n("routing"), settled: v["settled"].as_bool().unwrap_or(false), connected: n("connected") })
    }
    async fn lookup(&self, node: [u8; 32]) -> Result<Outcome, vain_net::Error> {
        let key = format!("node/{}", hex::encode(node));
        let v = vain_net::control::ask(&self.socket, &json!({"cmd": "lookup", "key": key}), self.lookup_wait).await?;
        let cost = Lookup {
            requests: v["requests"].as_u64().unwrap_or(0) as u32,
            successes: v["successes"].as_u64().unwrap_or(0) as u32,
            ms: v["ms"].as_f64().unwrap_or(0.0),
        };
        let r = match (v["found"]["node"]["node_id"].as_str(), v["error"].as_str()) {
            (Some(id), _) => Ok(id.to_string()),
            (None, Some(e)) => Err(e.rsplit(": ").next().unwrap_or(e).to_string()),
            (None, None) => Err("another record".to_string()),
        };
        Ok((r, cost))
    }
}

/// The node processes; killed when dropped (their stdin closes too, which ends them anyway).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Proportional resident KiB of process `pid` (shared pages split among their users).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Pss:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Starts `o.nodes` nodes, `per_process` to a process, each joining through a random earlier
/// one, and measures them.
pub fn run(o: scale::Options, per_process: usize) -> Result<scale::Report> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rng = scale::Rng(o.seed | 1);
    let start = Instant::now();
    let per_process = per_process.max(1);
    let mut nodes = Nodes(Vec::with_capacity(o.nodes.div_ceil(per_process)));
    let mut members = Vec::with_capacity(o.nodes);
    let ids: Vec<[u8; 32]> = (0..o.nodes).map(|i| Identity::from_seed(scale::seed_of(i as u64)).node_id).collect();
    for first in (0..o.nodes).step_by(per_process) {
        let group = first..(first + per_process).min(o.nodes);
        // The same random choices as the in-process run: node i joins through rng.below(i).
        let joins: Vec<String> =
            group.clone().map(|i| if i == 0 { "-".to_string() } else { rng.below(i).to_string() }).collect();
        let child = std::process::Command::new(&exe)
            .args(["-qq", "bench", "dht-node", "--first", &first.to_string(), &format!("--joins={}", joins.join(","))])
            .args(["--query-timeout", &o.query_timeout.to_string()])
            .arg("--sockets")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the node process of node {first} (too few file descriptors?)"))?;
        nodes.0.push(child);
        // Later nodes may join through these: wait until they all serve.
        let t = Instant::now();
        for i in group {
            let socket = dir.path().join(format!("{i}.sock"));
            while !socket.exists() {
                if let Some(status) = nodes.0.last_mut().map(Child::try_wait).transpose()?.flatten() {
                    bail!("the node process of node {first} exited during start-up ({status})");
                }
                if t.elapsed() > START_TIMEOUT {
                    bail!("node {i} did not open its control socket within {START_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            members.push(Remote { socket, lookup_wait: Duration::from_secs_f64(o.query_timeout + 30.0) });
            if let Some(p) = &o.progress {
                p("nodes started", i as u64 + 1, o.nodes as u64);
            }
        }
    }
    let spawn_seconds = start.elapsed().as_secs_f64();
    let pids: Vec<u32> = nodes.0.iter().map(Child::id).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|p| scale::cpu_seconds(&p.to_string())).sum::<f64>();
    let p2 = pids.clone();
    let gauges =
        Gauges { kib: Box::new(move || p2.iter().map(|p| pss_kib(*p)).sum()), cpu: Box::new(move || cpu(&pids)) };
    let report = rt.block_on(scale::measure(&members, &ids, &o, rng, start, spawn_seconds, &gauges))?;
    drop(nodes);
    Ok(report)
}
