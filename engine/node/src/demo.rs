//! `vain demo`: a federation of real `vain node` processes on loopback — a bootstrap node, an
//! aggregator and a set of clients, some of them attacking — running rounds of a model on the
//! embedded digits, with a live view of the rounds, a summary and a chart at the end.

use crate::net::{Cluster, free_tcp_port, prepare};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vain_learn::attack::Attack;
use vain_learn::model::Arch;

/// Options of `vain demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Client processes.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Attacks, one client each (comma-separated, as `vain train simulate --attack`).
    #[arg(long, default_value = "alie,label-flip,scale:10", value_delimiter = ',')]
    attacks: Vec<String>,
    /// Rounds.
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// Model.
    #[arg(long, default_value = "mnist-cnn")]
    model: String,
    /// Aggregation backend: cpu | cuda | auto.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Aggregation rule.
    #[arg(long, default_value = "fedavg")]
    rule: String,
    /// Per-update L2 clip (0 for none).
    #[arg(long, default_value_t = 2.0)]
    clip: f32,
    /// Seconds from a round's open to its deadline.
    #[arg(long, default_value_t = 30.0)]
    round_time: f64,
    /// Optimiser steps per client per round.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Where the nodes' data, logs, `summary.json` and `accuracy.svg` (and `.png`) go.
    #[arg(long, default_value = "vain-demo")]
    out: PathBuf,
    /// Aggregator processes: the first to lead opens the rounds, the others stand by.
    #[arg(long, default_value_t = 2)]
    aggregators: usize,
    /// Kill the leading aggregator with SIGKILL while this round is open (once it has journaled
    /// an update of it), to show failover.
    #[arg(long, default_value = "5")]
    kill_primary: Option<u64>,
    /// Restart the killed aggregator from its data directory.
    #[arg(long)]
    restart_primary: bool,
    /// Kill client 0 with SIGKILL once this round has closed, and restart it from its data
    /// directory once the next one has (it rejoins a later round, and fetches the ledger
    /// evidence it missed from its peers).
    #[arg(long)]
    restart_client: Option<u64>,
    /// Kill the validator with SIGKILL once this round has closed, and restart it from its data
    /// directory once the next one has (its ledger catches up from its peers).
    #[arg(long)]
    restart_validator: Option<u64>,
    /// The aggregator that closes this round signs two different reports for its ledger
    /// epoch and sends one to half its peers, the other to the rest: every node convicts it,
    /// keeps it out (a standby takes the rounds over) and takes the report it applied back out
    /// of its ledger, so all agree again.
    #[arg(long, value_name = "ROUND")]
    equivocate_round: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Serve each aggregator's HTTP API and dashboard: aggregator j at ADDR's port + j
    /// (127.0.0.1:9480 when given without an address).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::api::DEFAULT_ADDR)]
    api: Option<std::net::SocketAddr>,
    /// Keep the federation serving this many seconds after the last round (default: until
    /// Ctrl-C with --api, not at all without).
    #[arg(long, value_name = "SECONDS")]
    hold: Option<f64>,
    /// The ledger's voting tier (`[ledger] vote_from`): a demo's rounds are hours of ledger
    /// time, too few for anyone to climb above tier 1.
    #[arg(long, default_value_t = 1)]
    vote_from: u8,
    /// The ledger's quorum (`[ledger] quorum`): the fraction of eligible voting weight that
    /// must vote.
    #[arg(long, default_value_t = 0.5)]
    quorum: f64,
    /// The last honest client announces this many CPU cores, far more than it has, and fails
    /// the validator's resource challenges (0: every client announces what it has).
    #[arg(long, default_value_t = 1024)]
    overclaim: u32,
    /// Seconds between two resource challenges of the same node (`[challenge] interval`).
    #[arg(long, default_value_t = 6.0)]
    challenge_interval: f64,
    /// Once this round has closed, aggregator 0 asks for audits of the attackers' updates of
    /// it and of one honest client's: every ledger draws the team, which re-executes the
    /// training.
    #[arg(long, default_value_t = 1)]
    audit_round: u64,
    /// Ask for no audits.
    #[arg(long)]
    no_audit: bool,
    /// Add a Sybil ring: this many fresh identities, client nodes on this same machine, with
    /// no stake, each announcing 64 cores and free-riding (sending zero updates). The summary
    /// shows the tiers they reach against the honest clients'.
    #[arg(long, default_value_t = 0)]
    sybils: usize,
    /// Steps each client tunes its own output layer for per round (its personal head, kept
    /// across rounds); the summary compares the global and the personalised model on each
    /// honest client's held-out items. 0: none.
    #[arg(long, default_value_t = 5)]
    personal_steps: usize,
    /// Region tags (comma-separated), given in turn: aggregator j takes the j-th, client i the
    /// i-th (modulo their number), the validator the first. A client whose round's aggregator
    /// announces another region fetches the base checkpoint from a holder in its own first;
    /// the summary counts where each client's checkpoints came from.
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
}

/// Region of the i-th node of a kind under `--regions` (none without it).
fn region_of(regions: &[String], i: usize) -> Option<&str> {
    (!regions.is_empty()).then(|| regions[i % regions.len()].as_str())
}

/// The `region` line of a node's config (the control plane's top-level key).
fn region_line(region: Option<&str>) -> String {
    region.map(|r| format!("region = {}\n", toml::Value::String(r.to_string()))).unwrap_or_default()
}

/// Cores each Sybil identity announces.
const SYBIL_CORES: u32 = 64;

/// The Sybil ring's standing against the honest clients', from the validator's ledger rows
/// (`resource`, by label): their highest tier, and each side's tiers.
fn ring_summary(ring: &[String], resource: &BTreeMap<String, Value>) -> Value {
    if ring.is_empty() {
        return Value::Null;
    }
    let tier = |l: &String| resource.get(l).and_then(|r| r["tier"].as_u64());
    let social = |l: &String| resource.get(l).map_or(json!(0.0), |r| r["social"].clone());
    let members: BTreeMap<&String, Value> = ring.iter().map(|l| (l, json!(tier(l)))).collect();
    let honest: Vec<&String> = resource.keys().filter(|l| l.starts_with("client") && !l.contains('(')).collect();
    json!({
        "members": members,
        "highest_tier": ring.iter().filter_map(tier).max(),
        "honest_clients": honest.iter().map(|l| (*l, json!(tier(l)))).collect::<BTreeMap<_, _>>(),
        // EigenTrust share relative to an even one (the score's social term), and how many
        // nodes each member's applied local-trust vector vouches for.
        "members_social": ring.iter().map(|l| (l, social(l))).collect::<BTreeMap<_, _>>(),
        "members_vouches": ring.iter().map(|l| (l, resource.get(l).map_or(json!(0), |r| r["vouches"].clone())))
            .collect::<BTreeMap<_, _>>(),
        "honest_social": honest.iter().map(|l| (*l, social(l))).collect::<BTreeMap<_, _>>(),
    })
}

fn short_of(data: &Path) -> Result<String> {
    let id = crate::net::identity(data)?;
    let k = ed25519_dalek::SigningKey::from_bytes(&id.seed).verifying_key().to_bytes();
    Ok(hex::encode(&k[..4]))
}

/// Runs `vain demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    let arch: Arch = a.model.parse().map_err(|e| anyhow::anyhow!("--model: {e}"))?;
    if a.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if a.vote_from == 0 || !(a.quorum > 0.0 && a.quorum <= 1.0) {
        bail!("--vote-from must be at least 1 and --quorum in (0, 1]");
    }
    if a.hold.is_some_and(|h| h.is_nan() || h < 0.0) {
        bail!("--hold must be a number of seconds ≥ 0");
    }
    if let Some(r) = a.equivocate_round
        && (r == 0 || r >= a.rounds || a.aggregators < 2)
    {
        bail!(
            "--equivocate-round must be a round from 1 to --rounds − 1, with at least two --aggregators (a standby takes over from the convicted one)"
        );
    }
    let attacks: Vec<Attack> = a
        .attacks
        .iter()
        .filter(|s| !s.is_empty() && *s != "none")
        .map(|s| s.parse::<Attack>().map_err(|e| anyhow::anyhow!("--attacks {s}: {e}")))
        .collect::<Result<_>>()?;
    if attacks.len() * 2 >= a.clients {
        bail!("{} attackers of {} clients: attackers must be fewer than half", attacks.len(), a.clients);
    }
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out).with_context(|| format!("clearing {}", a.out.display()))?;
    }
    let dir = a.out.join("nodes");
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let mut cluster = Cluster { children: Vec::new(), sockets: Vec::new(), _tmp: None };
    // Every node is configured first (each needs the aggregators' keys as the ledger's
    // pre-trusted reporters), then started in order.
    let mut planned: Vec<(PathBuf, Vec<(&str, &str)>)> = Vec::new();
    let start = |planned: &mut Vec<(PathBuf, Vec<(&str, &str)>)>,
                 cfg: &Path,
                 env: &[(&'static str, &'static str)]|
     -> Result<()> {
        planned.push((cfg.to_path_buf(), env.to_vec()));
        Ok(())
    };
    let t0 = Instant::now();

    // The bootstrap: control plane only. It is the one node whose address others must know
    // before it runs; every other node listens on a port the OS picks (a port probed here and
    // bound later could be taken in between, by a connection or by the embedded chain).
    let (boot_cfg, boot) = prepare(&dir, 0, free_tcp_port()?, None, "", "")?;
    start(&mut planned, &boot_cfg, &[])?;

    // The aggregators (`models` is a top-level key: it goes before the sections).
    let agg_extra = format!(
        "[aggregate]\nbackend = \"{backend}\"\nrule = \"{rule}\"\nclip = {clip}\nrounds = {rounds}\n\
         round_time = {rt}\nmin_clients = {n}\nwait_clients = 60.0\n\
         connections_per_address = {conns}\nequivocate_round = {fork}\n",
        fork = a.equivocate_round.unwrap_or(0),
        backend = a.backend,
        rule = a.rule,
        clip = a.clip,
        rounds = a.rounds,
        rt = a.round_time,
        n = a.clients + a.sybils,
        // Every client connects from 127.0.0.1.
        conns = 2 * (a.clients + a.sybils) + 4,
    );
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert(short_of(boot_cfg.parent().unwrap_or(&dir))?, "bootstrap".to_string());
    let mut aggs: Vec<(PathBuf, usize)> = Vec::new();
    // Extra `vain node` arguments by config file (the aggregators' API addresses).
    let mut node_args: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut dashboards: Vec<String> = Vec::new();
    let mut audit_api: Option<crate::gov::Api> = None;
    for j in 0..a.aggregators.max(1) {
        let (cfg, _) = prepare(&dir, 1 + j, 0, Some(&boot), "\"aggregator\"", &agg_extra)?;
        if let Some(base) = a.api {
            let port = base.port().checked_add(j as u16).context("--api: port out of range")?;
            let addr = std::net::SocketAddr::new(base.ip(), port);
            node_args.insert(cfg.clone(), vec!["--api".into(), addr.to_string()]);
            dashboards.push(format!("http://{addr}/ (aggregator {j})"));
        } else if j == 0 && !a.no_audit {
            // The demo asks for its audits through aggregator 0's API.
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
            node_args.insert(cfg.clone(), vec!["--api".into(), addr.to_string()]);
        }
        if j == 0 && !a.no_audit {
            let port = node_args.get(&cfg).and_then(|v| v.get(1)).and_then(|s| s.parse().ok());
            audit_api = port.map(|addr| crate::gov::Api::new(addr, cfg.with_file_name("api.token")));
        }
        let text = std::fs::read_to_string(&cfg)?;
        let region = region_line(region_of(&a.regions, j));
        std::fs::write(&cfg, format!("models = [\"{}\"]\n{region}{text}", arch.id()))?;
        labels.insert(short_of(cfg.parent().unwrap_or(&dir))?, format!("aggregator {j}"));
        aggs.push((cfg.clone(), planned.len()));
        start(&mut planned, &cfg, &[])?;
    }
    // The validator: checks every close and evaluates its checkpoint.
    // It challenges every node's claimed cores each few seconds (a quarter of a second of work
    // at the claim, two seconds allowed: room for ten processes training on the same cores) and
    // measures uptime each second.
    let challenge = format!(
        "[challenge]\nbudget = 2.0\nshare = 0.125\ngrace = 0.5\ninterval = {}\nheartbeat = 1.0\n",
        a.challenge_interval
    );
    let (val_cfg, _) = prepare(&dir, 1 + aggs.len(), 0, Some(&boot), "\"validator\"", &challenge)?;
    let text = std::fs::read_to_string(&val_cfg)?;
    let region = region_line(region_of(&a.regions, 0));
    std::fs::write(&val_cfg, format!("models = [\"{}\"]\n{region}{text}", arch.id()))?;
    start(&mut planned, &val_cfg, &[])?;
    let val_log = val_cfg.with_file_name("validator").join("validator.jsonl");
    labels.insert(short_of(val_cfg.parent().unwrap_or(&dir))?, "validator".to_string());
    let first_client = planned.len();

    // The clients; the attackers are spread among them.
    let mut client_cfgs: Vec<PathBuf> = Vec::new();
    // Clients' whole keys by their first bytes (audits name whole keys).
    let mut client_keys: BTreeMap<String, String> = BTreeMap::new();
    let stride = (a.clients / attacks.len().max(1)).max(1);
    let attack_of = |i: usize| if i % stride == stride - 1 { attacks.get(i / stride) } else { None };
    // The last honest client overstates its cores (when asked to).
    let overclaiming = (0..a.clients).rev().find(|i| attack_of(*i).is_none()).filter(|_| a.overclaim > 0);
    for i in 0..a.clients {
        let attack = attack_of(i);
        let attack_line = attack.map(|x| format!("attack = \"{x}\"\n")).unwrap_or_default();
        let extra = format!(
            "[train]\nshard = \"{i}/{n}\"\npartition = \"dirichlet:0.5\"\nseed = 1\nsteps = {steps}\npersonal_steps = {p}\n{attack_line}",
            n = a.clients,
            steps = a.steps,
            p = a.personal_steps,
        );
        let (cfg, _) = prepare(&dir, 2 + aggs.len() + i, 0, Some(&boot), "\"client\"", &extra)?;
        let text = std::fs::read_to_string(&cfg)?;
        let cores = if overclaiming == Some(i) { format!("cpu_cores = {}\n", a.overclaim) } else { String::new() };
        let region = region_line(region_of(&a.regions, i));
        std::fs::write(&cfg, format!("models = [\"{}\"]\n{cores}{region}{text}", arch.id()))?;
        client_cfgs.push(cfg.clone());
        let data = cfg.parent().map(Path::to_path_buf).unwrap_or_default();
        let id = crate::net::identity(&data)?;
        let key = hex::encode(ed25519_dalek::SigningKey::from_bytes(&id.seed).verifying_key().to_bytes());
        client_keys.insert(key[..8].to_string(), key);
        labels.insert(
            short_of(&data)?,
            match attack {
                Some(x) => format!("client {i} ({x})"),
                None if overclaiming == Some(i) => format!("client {i} (claims {} cores)", a.overclaim),
                None => format!("client {i}"),
            },
        );
        // Clients share the cores: one training thread each.
        start(&mut planned, &cfg, &[("RAYON_NUM_THREADS", "1")])?;
    }
    // The Sybil ring: fresh identities on this machine, unstaked, each announcing a machine of
    // its own, sending nothing useful, and vouching for the others (`[ledger] vouch`).
    let mut ring: Vec<String> = Vec::new();
    let mut ring_keys: BTreeMap<PathBuf, String> = BTreeMap::new();
    for k in 0..a.sybils {
        let extra = format!(
            "[train]\nshard = \"{k}/{n}\"\npartition = \"iid\"\nseed = 1\nsteps = 1\nattack = \"free-ride\"\n",
            n = a.sybils
        );
        let (cfg, _) = prepare(&dir, 2 + aggs.len() + a.clients + k, 0, Some(&boot), "\"client\"", &extra)?;
        let text = std::fs::read_to_string(&cfg)?;
        std::fs::write(&cfg, format!("models = [\"{}\"]\ncpu_cores = {SYBIL_CORES}\n{text}", arch.id()))?;
        let label = format!("sybil {k}");
        labels.insert(short_of(cfg.parent().unwrap_or(&dir))?, label.clone());
        let id = crate::net::identity(cfg.parent().unwrap_or(&dir))?;
        let key = hex::encode(ed25519_dalek::SigningKey::from_bytes(&id.seed).verifying_key().to_bytes());
        ring_keys.insert(cfg.clone(), key);
        ring.push(label);
        start(&mut planned, &cfg, &[("RAYON_NUM_THREADS", "1")])?;
    }
    // The network's genesis: the aggregators report evidence from the start, the validator
    // testifies to challenges and uptime.
    let mut pretrusted = Vec::new();
    for cfg in aggs.iter().map(|(c, _)| c).chain(std::iter::once(&val_cfg)) {
        let id = crate::net::identity(cfg.parent().unwrap_or(&dir))?;
        let k = ed25519_dalek::SigningKey::from_bytes(&id.seed).verifying_key().to_bytes();
        pretrusted.push(format!("\"{}\"", hex::encode(k)));
    }
    // The chain: the embedded EVM in this process, every aggregator staked and registered; the
    // aggregators anchor each round they close.
    let agg_dirs: Vec<PathBuf> = aggs.iter().map(|(cfg, _)| cfg.parent().unwrap_or(&dir).to_path_buf()).collect();
    let mut staked: Vec<(PathBuf, vain_chain::client::Role)> =
        agg_dirs.iter().map(|d| (d.clone(), vain_chain::client::Role::Aggregator)).collect();
    staked.push((val_cfg.parent().unwrap_or(&dir).to_path_buf(), vain_chain::client::Role::Validator));
    // The clients register too: rewards are paid to the accounts nodes registered.
    staked.extend(
        client_cfgs.iter().map(|c| (c.parent().unwrap_or(&dir).to_path_buf(), vain_chain::client::Role::Client)),
    );
    let (demo_chain, sections) = crate::chain::DemoChain::start(&a.out.join("chain"), &staked)?;
    let cfgs: Vec<&PathBuf> =
        aggs.iter().map(|(cfg, _)| cfg).chain(std::iter::once(&val_cfg)).chain(client_cfgs.iter()).collect();
    for (cfg, section) in cfgs.into_iter().zip(&sections) {
        let mut text = std::fs::read_to_string(cfg)?;
        text.push_str(section);
        std::fs::write(cfg, text)?;
    }
    let ledger = format!(
        "\n[ledger]\npretrusted = [{}]\nvote_from = {}\nquorum = {}\n",
        pretrusted.join(", "),
        a.vote_from,
        a.quorum
    );
    for (cfg, env) in &planned {
        let mut text = std::fs::read_to_string(cfg)?;
        text.push_str(&ledger);
        if ring_keys.contains_key(cfg) {
            let others: Vec<String> =
                ring_keys.iter().filter(|(c, _)| *c != cfg).map(|(_, k)| format!("\"{k}\"")).collect();
            text.push_str(&format!("vouch = [{}]\n", others.join(", ")));
        }
        std::fs::write(cfg, text)?;
        let log = std::fs::File::create(cfg.with_file_name("node.log"))?;
        let mut cmd = Command::new(&exe);
        crate::net::dies_with_parent(&mut cmd);
        cmd.arg("node").arg("--config").arg(cfg).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        cmd.args(node_args.get(cfg).into_iter().flatten());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cluster.children.push(cmd.spawn().context("starting a node")?);
        cluster.sockets.push(cfg.with_file_name("control.sock"));
    }
    // A node that could not start (a taken port, a bad config) would leave a federation one
    // short that still runs, and the summary would be wrong about why: wait until each answers.
    let names: Vec<String> = planned
        .iter()
        .map(|(cfg, _)| {
            short_of(cfg.parent().unwrap_or(&dir)).ok().and_then(|k| labels.get(&k).cloned()).unwrap_or_default()
        })
        .collect();
    started(&mut cluster, &names, Instant::now() + Duration::from_secs(120))?;
    println!(
        "vain demo: 1 bootstrap, {} aggregator(s), 1 validator, {} clients ({} attacking: {}), {} rounds of {} — nodes in {}",
        aggs.len(),
        a.clients,
        attacks.len(),
        attacks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        a.rounds,
        arch.id(),
        dir.display()
    );
    if !dashboards.is_empty() {
        println!("dashboards: {}", dashboards.join(", "));
    }
    println!(
        "{:>5} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9}  {:<13} {:<15} suspects / kept out",
        "round", "accuracy", "accepted", "rejected", "missing", "round s", "gap ms", "closed by", "tier:clients"
    );

    // Rows come from whichever aggregator closed the round.
    let logs: Vec<PathBuf> = aggs.iter().map(|(c, _)| c.with_file_name("aggregator").join("rounds.jsonl")).collect();
    // Whose log each is: a round's row from the aggregator that closed it wins over a
    // follower's record of it (which has no timings: it adopted the close).
    let owners: Vec<String> =
        aggs.iter().map(|(c, _)| short_of(c.parent().unwrap_or(&dir)).unwrap_or_default()).collect();
    let mut rows: Vec<Value> = Vec::new();
    let deadline = t0 + Duration::from_secs_f64(a.timeout);
    let mut killed: Option<usize> = None;
    let mut killed_at: Option<Instant> = None;
    let mut failover_seconds: Option<f64> = None;
    // Nodes killed by --restart-client / --restart-validator: (the first round whose evidence
    // they lack, (process index, config, name, environment)).
    type Down = (usize, PathBuf, &'static str, Vec<(&'static str, &'static str)>);
    // Audits asked for: (whole key, label).
    let mut audits: Vec<(String, String)> = Vec::new();
    let mut down: Vec<(u64, Down)> = Vec::new();
    // The table scrolls above a progress bar (on a terminal).
    let bar = crate::progress::bar(a.rounds, "round");
    loop {
        // Each round's row, and whether it is the closing aggregator's own.
        let mut by_round: BTreeMap<u64, (Value, bool)> = BTreeMap::new();
        for (l, owner) in logs.iter().zip(&owners) {
            for line in std::fs::read_to_string(l).unwrap_or_default().lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
                let Some(r) = v["round"].as_u64() else { continue };
                let own = v["aggregator"].as_str() == Some(owner.as_str());
                if own || !by_round.contains_key(&r) {
                    by_round.insert(r, (v, own));
                }
            }
        }
        // The demo acts on a round as soon as any record of it is there (kills and restarts
        // follow the rounds), so a follower's record may still stand in for the closer's.
        while let Some((v, _)) = by_round.remove(&(rows.len() as u64)) {
            bar.suspend(|| print_row(&v, &labels));
            bar.set_position(rows.len() as u64 + 1);
            bar.set_message(format!("accuracy {:.2} %", 100.0 * v["accuracy"].as_f64().unwrap_or(f64::NAN)));
            let round = v["round"].as_u64();
            if let Some(t) = killed_at
                && failover_seconds.is_none()
            {
                let s = t.elapsed().as_secs_f64();
                failover_seconds = Some(s);
                crate::progress::say(
                    &bar,
                    format!("      round {} closed {s:.1} s after the kill", round.unwrap_or(0)),
                );
            }
            rows.push(v);
            // Nodes killed earlier come back once a round whose evidence they did not apply
            // has closed: they must fetch it from their peers.
            let Some(round) = round else { continue };
            for (i, cfg, name, env) in down.iter().filter(|d| d.0 <= round).map(|d| &d.1) {
                cluster.children[*i] = respawn(&exe, cfg, &[], env)?;
                crate::progress::say(&bar, format!("      {name} restarted from its data directory"));
            }
            down.retain(|d| d.0 > round);
            let mut kill = |i: usize, cfg: &PathBuf, name: &'static str, env: Vec<(&'static str, &'static str)>| {
                // Rounds run ahead of the evaluated rows: the node may have applied later
                // epochs than this row's already. It comes back after the first it lacks.
                let lacks = cluster
                    .sockets
                    .get(i)
                    .and_then(|s| vain_net::control::request(s, &json!({"cmd": "ledger"})).ok())
                    .and_then(|v| v["next_epoch"].as_u64())
                    .unwrap_or(0)
                    .max(round + 1);
                if let Some(c) = cluster.children.get_mut(i) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                crate::progress::say(&bar, format!("      {name} killed (SIGKILL) after round {round}"));
                down.push((lacks, (i, cfg.clone(), name, env)));
            };
            if Some(round) == a.restart_client
                && let Some(cfg) = client_cfgs.first()
            {
                kill(first_client, cfg, "client 0", vec![("RAYON_NUM_THREADS", "1")]);
            }
            if Some(round) == a.restart_validator {
                kill(first_client - 1, &val_cfg, "the validator", Vec::new());
            }
            if round == a.audit_round
                && let Some(api) = &audit_api
                && let Some(row) = rows.last()
            {
                // Not the client --restart-client takes down: its work may be out of reach.
                let skip = a.restart_client.map(|_| "client 0");
                audits = request_audits(api, row, &labels, &client_keys, skip);
                crate::progress::say(
                    &bar,
                    format!(
                        "      audits of round {round} asked for: {}",
                        audits.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        // Failover: kill the aggregator that holds round K open as soon as it has journaled an
        // update of it (mid-round; rounds can outrun the evaluated rows, so the journal, not the
        // table, tells). If round K closes before any journal is seen, kill its leader after.
        if let Some(k) = a.kill_primary
            && killed.is_none()
        {
            let state_round = |j: usize| -> u64 {
                std::fs::read_to_string(aggs[j].0.with_file_name("aggregator").join("state.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["round"].as_u64())
                    .unwrap_or(0)
            };
            // At least one whole record (u32 length ‖ frame) in the round's journal: a kill while
            // the first one is half written would leave nothing to recover.
            let journaling = (0..aggs.len()).find(|&j| {
                std::fs::read(aggs[j].0.with_file_name("aggregator").join("journal").join(format!("{k}.bin")))
                    .is_ok_and(|b| {
                        b.len() >= 4 && b.len() as u64 >= 4 + u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    })
            });
            let late = (0..aggs.len()).find(|&j| {
                state_round(j) > k
                    && rows
                        .get(k as usize)
                        .and_then(|r| r["aggregator"].as_str())
                        .is_some_and(|c| short_of(aggs[j].0.parent().unwrap_or(&dir)).is_ok_and(|s| s == c))
            });
            if let Some(j) = journaling.or(late) {
                if let Some(c) = cluster.children.get_mut(aggs[j].1) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                killed = Some(j);
                killed_at = Some(Instant::now());
                crate::progress::say(
                    &bar,
                    format!(
                        "      aggregator {j} killed (SIGKILL) {} round {k}",
                        if journaling.is_some() { "with updates of" } else { "after" }
                    ),
                );
                if a.restart_primary {
                    std::thread::sleep(Duration::from_millis(500));
                    let args = node_args.get(&aggs[j].0).cloned().unwrap_or_default();
                    cluster.children[aggs[j].1] = respawn(&exe, &aggs[j].0, &args, &[])?;
                    crate::progress::say(&bar, format!("      aggregator {j} restarted from its data directory"));
                }
            }
        }
        if rows.len() as u64 >= a.rounds {
            bar.finish_and_clear();
            break;
        }
        let alive = aggs
            .iter()
            .enumerate()
            .filter(|(j, _)| Some(*j) != killed || a.restart_primary)
            .any(|(_, (_, i))| cluster.children.get_mut(*i).is_some_and(|c| matches!(c.try_wait(), Ok(None))));
        if !alive {
            let states: Vec<String> = aggs
                .iter()
                .map(|(_, i)| match cluster.children.get_mut(*i).map(|c| c.try_wait()) {
                    Some(Ok(Some(st))) => st.to_string(),
                    Some(Ok(None)) => "running".into(),
                    _ => "unknown".into(),
                })
                .collect();
            bail!("every aggregator exited after {} rounds ({}); see {}", rows.len(), states.join(", "), dir.display());
        }
        if Instant::now() > deadline {
            bail!("timed out after {} of {} rounds", rows.len(), a.rounds);
        }
        std::thread::sleep(Duration::from_millis(if a.kill_primary.is_some() && killed.is_none() { 5 } else { 250 }));
    }
    let wall = t0.elapsed();
    // A node still down (the rounds outran it) comes back now and catches up.
    for (_, (i, cfg, name, env)) in down.drain(..) {
        cluster.children[i] = respawn(&exe, &cfg, &[], &env)?;
        println!("      {name} restarted from its data directory");
    }
    // The validator's verdicts on the closes (it may still be evaluating the last one).
    let verdict_deadline = Instant::now() + Duration::from_secs(10);
    let mut verdicts: Vec<Value> = Vec::new();
    while Instant::now() < verdict_deadline {
        verdicts = std::fs::read_to_string(&val_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if verdicts.len() >= rows.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The audits' verdicts, as every ledger applied them (the team may still be re-executing;
    // verdicts after the last round come in the leader's evidence epochs).
    let audit_deadline = Instant::now() + Duration::from_secs(90);
    let mut audited: BTreeMap<String, String> = BTreeMap::new();
    while !audits.is_empty() {
        let states: BTreeMap<String, String> = cluster
            .sockets
            .get(first_client - 1)
            .and_then(|s| vain_net::control::request(s, &json!({"cmd": "ledger"})).ok())
            .and_then(|v| v["audits"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|x| Some((x["subject"].as_str()?.to_string(), x["state"].as_str()?.to_string())))
            .collect();
        audited = audits
            .iter()
            .map(|(k, l)| (l.clone(), states.get(k).cloned().unwrap_or_else(|| "pending".into())))
            .collect();
        if audited.values().all(|s| s == "passed" || s == "failed") || Instant::now() > audit_deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Every node's ledger: the same evidence, in the same order, gives the same digest.
    let mut digests: BTreeMap<String, usize> = BTreeMap::new();
    let mut epochs = Vec::new();
    let mut ledger_stakes: BTreeMap<String, u64> = BTreeMap::new();
    // Evidence propagation: from a round's close to each node applying its epoch.
    let closed: BTreeMap<u64, u64> =
        rows.iter().filter_map(|r| Some((r["round"].as_u64()?, r["closed_ms"].as_u64()?))).collect();
    let mut delays: Vec<f64> = Vec::new();
    // A node restarted late may still be fetching the evidence it missed: wait (a while) until
    // every ledger has applied as many epochs as the furthest one.
    let ledger_deadline = Instant::now() + Duration::from_secs(30);
    let mut unreachable: BTreeMap<String, String> = BTreeMap::new();
    let statuses = loop {
        unreachable.clear();
        let mut statuses: Vec<Value> = Vec::new();
        for (i, sock) in cluster.sockets.iter().enumerate() {
            if killed.is_some_and(|j| aggs[j].1 == i) && !a.restart_primary {
                continue;
            }
            match vain_net::control::request(sock, &json!({"cmd": "ledger"})) {
                Ok(v) => statuses.push(v),
                Err(e) => {
                    let state = match cluster.children.get_mut(i).map(|c| c.try_wait()) {
                        Some(Ok(Some(st))) => format!("exited ({st})"),
                        _ => "running".to_string(),
                    };
                    let name = names.get(i).cloned().unwrap_or_else(|| format!("node {i}"));
                    unreachable
                        .insert(name, format!("{e}; {state}; log {}", sock.with_file_name("node.log").display()));
                }
            }
        }
        let epochs: Vec<u64> = statuses.iter().map(|v| v["next_epoch"].as_u64().unwrap_or(0)).collect();
        if (unreachable.is_empty() && epochs.iter().min() == epochs.iter().max()) || Instant::now() > ledger_deadline {
            break statuses;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Ledgers that convicted each node of equivocating at the demonstration's round.
    let mut convicted: BTreeMap<String, usize> = BTreeMap::new();
    for v in statuses {
        *digests.entry(v["digest"].as_str().unwrap_or("").to_string()).or_default() += 1;
        for n in v["nodes"].as_array().into_iter().flatten() {
            if let (Some(r), Some(id)) = (a.equivocate_round, n["id"].as_str())
                && n["forked_epoch"].as_u64() == Some(r)
            {
                *convicted.entry(labels.get(id).cloned().unwrap_or_else(|| id.to_string())).or_default() += 1;
            }
        }
        epochs.push(v["next_epoch"].as_u64().unwrap_or(0));
        // The stakes the ledger took from the chain (the same in every ledger).
        for n in v["nodes"].as_array().into_iter().flatten() {
            if let (Some(id), Some(stake)) = (n["id"].as_str(), n["stake"].as_u64())
                && stake > 0
            {
                ledger_stakes.insert(id.to_string(), stake);
            }
        }
        for e in v["applied_at_ms"].as_array().into_iter().flatten() {
            if let (Some(epoch), Some(at)) = (e[0].as_u64(), e[1].as_u64())
                && let Some(c) = closed.get(&epoch)
            {
                delays.push(at as f64 - *c as f64);
            }
        }
    }
    let ledger_nodes: usize = digests.values().sum();
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| delays.get(((delays.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
    // Every client's answers to the round protocol, from its control socket.
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for sock in cluster.sockets.iter().skip(first_client) {
        if let Ok(v) = vain_net::control::request(sock, &json!({"cmd": "round"}))
            && let Some(m) = v["client"]["answers"].as_object()
        {
            for (k, n) in m {
                *answers.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    // Where each client's base checkpoints came from (its participant.jsonl), with its region;
    // and its last round's global and personalised accuracy on its own held-out items.
    let mut fetches: BTreeMap<String, Value> = BTreeMap::new();
    let mut personal: BTreeMap<String, Value> = BTreeMap::new();
    for (i, cfg) in client_cfgs.iter().enumerate() {
        let data = cfg.parent().unwrap_or(&dir);
        let mut from: BTreeMap<String, u64> = BTreeMap::new();
        let mut last_personal = None;
        let log = std::fs::read_to_string(data.join("client").join("participant.jsonl")).unwrap_or_default();
        for row in log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
            // The source's kind: cache, aggregator, nearby <key>, holder <peer>.
            if let Some(kind) = row["base_from"].as_str().and_then(|f| f.split(' ').next()).filter(|k| !k.is_empty()) {
                *from.entry(kind.to_string()).or_default() += 1;
            }
            if let (Some(g), Some(p)) = (row["local_accuracy"].as_f64(), row["personal_accuracy"].as_f64()) {
                last_personal = Some(json!({"round": row["round"], "global": g, "personal": p}));
            }
        }
        let label = labels.get(&short_of(data)?).cloned().unwrap_or_else(|| format!("client {i}"));
        if let Some(p) = last_personal.filter(|_| attack_of(i).is_none()) {
            personal.insert(label.clone(), p);
        }
        fetches.insert(label, json!({"region": region_of(&a.regions, i), "from": from}));
    }
    let mean = |k: &str| {
        let v: Vec<f64> = personal.values().filter_map(|p| p[k].as_f64()).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (mean_global, mean_personal) = (mean("global"), mean("personal"));
    // The validator's resource challenges, and what every ledger made of them.
    let mut challenges: BTreeMap<String, u64> = BTreeMap::new();
    let mut resource: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(sock) = cluster.sockets.get(first_client - 1) {
        if let Ok(v) = vain_net::control::request(sock, &json!({"cmd": "round"}))
            && let Some(m) = v["validator"]["challenges"].as_object()
        {
            challenges = m.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect();
        }
        if let Ok(v) = vain_net::control::request(sock, &json!({"cmd": "ledger"})) {
            for n in v["nodes"].as_array().into_iter().flatten() {
                let Some(id) = n["id"].as_str() else { continue };
                let label = labels.get(id).cloned().unwrap_or_else(|| id.to_string());
                resource.insert(
                    label,
                    json!({
                        "resource": n["resource"], "penalty": n["penalty"], "tier": n["tier"],
                        "standing": n["standing"], "social": n["social"], "vouches": n["vouches"],
                    }),
                );
            }
        }
    }
    let valid = verdicts.iter().filter(|v| v["valid"] == true).count();
    let unverified = verdicts.iter().filter(|v| v["unverified"] == true).count();
    let invalid: Vec<String> = verdicts
        .iter()
        .filter(|v| v["valid"] != true)
        .map(|v| format!("round {}: {}", v["round"], v["failed"]))
        .collect();

    let last = rows.last().cloned().unwrap_or(Value::Null);
    let mut kept_out = Vec::new();
    if let Some(cs) = last["clients"].as_array() {
        for c in cs {
            let standing = c["standing"].as_str().unwrap_or("");
            if standing != "active" {
                let id = c["id"].as_str().unwrap_or("");
                kept_out.push(format!("{} {standing}", labels.get(id).map_or(id, String::as_str)));
            }
        }
    }
    let mut closers = agg_dirs.clone();
    closers.push(val_cfg.parent().unwrap_or(&dir).to_path_buf());
    let final_digest = digests
        .iter()
        .max_by_key(|(_, n)| **n)
        .and_then(|(d, _)| hex::decode(d).ok())
        .and_then(|d| <[u8; 32]>::try_from(d).ok());
    let final_epoch = epochs.iter().max().and_then(|e| e.checked_sub(1));
    let chain = demo_chain.check(arch.id(), rows.len() as u64, &closers, final_epoch.zip(final_digest))?;
    let summary = json!({
        "chain": {
            "url": demo_chain.url(),
            "deployment": chain.deployment,
            "anchored_rounds": chain.anchored,
            "proven_update": chain.proven.as_ref().map(|(r, s, u)| json!({"round": r, "sender": s, "update": u})),
            "final_digest_attestations": chain.attested,
            "ledger_stakes": ledger_stakes,
            "rewards": chain.rewarded.as_ref().map(|(e, n, node, got)| json!({"epoch": e, "paid": n, "claimed_by": node, "claimed_vain": got})),
        },
        "model": arch.id(),
        "clients": a.clients,
        "attacks": attacks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "rule": a.rule,
        "clip": a.clip,
        "rounds": rows.len(),
        "final_accuracy": last["accuracy"],
        "kept_out": kept_out,
        "wall_seconds": wall.as_secs_f64(),
        "round_overhead_ms": rows.iter().filter_map(|r| r["overhead_ms"].as_f64()).collect::<Vec<_>>(),
        "closed_by": rows
            .iter()
            .map(|r| {
                let k = r["aggregator"].as_str().unwrap_or("");
                labels.get(k).cloned().unwrap_or_else(|| k.to_string())
            })
            .collect::<Vec<_>>(),
        "killed_aggregator": killed.map(|j| format!("aggregator {j}")),
        "kill_round": killed.and(a.kill_primary),
        "failover_seconds": failover_seconds,
        "equivocation": a.equivocate_round.map(|r| json!({ "round": r, "convicted_by_ledgers": convicted })),
        "validator": { "checked": verdicts.len(), "valid": valid, "invalid": invalid, "unverified_checkpoints": unverified },
        "client_answers": answers,
        "checkpoint_fetches": fetches,
        "personalisation": {
            "steps": a.personal_steps,
            "clients": personal,
            "mean_global": mean_global,
            "mean_personal": mean_personal,
        },
        "challenges": challenges,
        "audits": audited,
        "resource_evidence": resource,
        "sybil_ring": ring_summary(&ring, &resource),
        "ledger": {
            "nodes": ledger_nodes,
            "distinct_digests": digests.len(),
            "unreachable": unreachable,
            "epochs": epochs.iter().max(),
            "digest": digests.iter().max_by_key(|(_, n)| **n).map(|(d, _)| d.clone()),
            "propagation_ms": { "p50": pct(0.5), "p95": pct(0.95), "max": delays.last(), "samples": delays.len() },
        },
    });
    std::fs::write(a.out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    chart(&a.out.join("accuracy.svg"), &rows)?;
    println!(
        "\nfinal accuracy {:.2} % after {} rounds in {:.0} s; kept out: {}",
        last["accuracy"].as_f64().unwrap_or(f64::NAN) * 100.0,
        rows.len(),
        wall.as_secs_f64(),
        if kept_out.is_empty() { "none".to_string() } else { kept_out.join(", ") }
    );
    println!(
        "validator: {valid} of {} closes checked valid (signature, Merkle root, base chain, checkpoint digest{}){}",
        verdicts.len(),
        if unverified > 0 { format!("; {unverified} checkpoint(s) unavailable") } else { String::new() },
        if invalid.is_empty() { String::new() } else { format!("; invalid: {}", invalid.join("; ")) }
    );
    let passed = challenges.get("passed").copied().unwrap_or(0);
    let failed: u64 = ["wrong", "late", "gave up", "gave up unsigned"].iter().filter_map(|k| challenges.get(*k)).sum();
    let overclaimer = resource.iter().find(|(k, _)| k.contains("claims")).map(|(k, v)| {
        format!(
            "; {k}: resource {:.2}, penalty {:.2}",
            v["resource"].as_f64().unwrap_or(f64::NAN),
            v["penalty"].as_f64().unwrap_or(f64::NAN)
        )
    });
    if let (Some(g), Some(p)) = (mean_global, mean_personal) {
        println!(
            "personal heads ({} steps a round on each client's own items): the global model {:.2} %, the personalised ones {:.2} % on the honest clients' held-out items",
            a.personal_steps,
            g * 100.0,
            p * 100.0
        );
    }
    println!(
        "challenges: {passed} passed, {failed} failed, {} unanswered (validator's resource challenges, testified to every ledger){}",
        challenges.get("no answer").copied().unwrap_or(0) + challenges.get("busy").copied().unwrap_or(0),
        overclaimer.unwrap_or_default()
    );
    if !audited.is_empty() {
        println!(
            "audits of round {} (the team re-executed each client's training from its signed manifest): {}",
            a.audit_round,
            audited.iter().map(|(l, s)| format!("{l} {s}")).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "ledger: {ledger_nodes} nodes, {} distinct state digest(s) after {} epochs of evidence; \
         applied {} ms (p50) / {} ms (p95) after the close",
        digests.len(),
        epochs.iter().max().copied().unwrap_or(0),
        pct(0.5).map_or("-".into(), |x| format!("{x:.0}")),
        pct(0.95).map_or("-".into(), |x| format!("{x:.0}")),
    );
    if let Some(r) = a.equivocate_round {
        let who = if convicted.is_empty() {
            "nobody".to_string()
        } else {
            convicted
                .iter()
                .map(|(w, n)| format!("{w} by {n} of {ledger_nodes} ledgers"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "equivocation at round {r}: convicted {who}; each ledger took the report it had applied back out \
             (one digest above means they agree again)"
        );
    }
    if !ring.is_empty() {
        let sr = &summary["sybil_ring"];
        let tiers = |v: &Value| -> String {
            v.as_object()
                .map(|m| m.iter().map(|(l, t)| format!("{l} {t}")).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        };
        let shares = |v: &Value| -> String {
            v.as_object()
                .map(|m| m.values().map(|x| format!("{:.2}", x.as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        println!(
            "sybil ring ({} fresh identities on this machine, no stake, {SYBIL_CORES} cores announced each, free-riding, \
             vouching for each other): tiers {} (voting from tier {}), trust shares {}; honest clients: {}, trust shares {}",
            ring.len(),
            tiers(&sr["members"]),
            a.vote_from,
            shares(&sr["members_social"]),
            tiers(&sr["honest_clients"]),
            shares(&sr["honest_social"])
        );
    }
    println!(
        "chain: {} of {} rounds anchored on the embedded chain ({}); the ledger's final digest attested by {} validator(s){}",
        chain.anchored,
        rows.len(),
        chain.deployment.display(),
        chain.attested,
        match &chain.proven {
            Some((r, s, u)) =>
                format!("; update {}… of {}… in round {r} proven from the chain alone", &u[..12], &s[..8]),
            None => String::new(),
        }
    );
    if let Some((epoch, paid, node, got)) = &chain.rewarded {
        let who = labels.get(&node[..8.min(node.len())]).cloned().unwrap_or_else(|| node.chars().take(8).collect());
        println!(
            "rewards: round {epoch} paid {paid} contributor(s) by reputation; {who} claimed {got} VAIN with its proof"
        );
    }
    println!(
        "wrote {}, {} and {}",
        a.out.join("summary.json").display(),
        a.out.join("accuracy.svg").display(),
        a.out.join("accuracy.png").display()
    );
    let hold = a.hold.unwrap_or(if a.api.is_some() { f64::INFINITY } else { 0.0 });
    if hold > 0.0 {
        let forever = !hold.is_finite();
        println!(
            "the federation keeps serving{}{} (Ctrl-C stops it)",
            if forever { String::new() } else { format!(" for {hold:.0} s") },
            if dashboards.is_empty() { String::new() } else { format!("; dashboards: {}", dashboards.join(", ")) },
        );
        let wait = if forever { Duration::from_secs(365 * 86_400) } else { Duration::from_secs_f64(hold) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            Ok::<_, anyhow::Error>(())
        })?;
    }
    drop(cluster);
    Ok(())
}

/// Starts `vain node --config cfg` again, appending to its log.
/// Waits until every node of `cluster` answers on its control socket; a node that exited
/// first is an error naming it (`names`, by position), its exit status and the end of its log.
fn started(cluster: &mut Cluster, names: &[String], deadline: Instant) -> Result<()> {
    let mut waiting: Vec<usize> = (0..cluster.sockets.len()).collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for i in waiting {
            if let Some(Ok(Some(status))) = cluster.children.get_mut(i).map(|c| c.try_wait()) {
                let log = cluster.sockets[i].with_file_name("node.log");
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} exited while starting ({status}); {}:\n{}",
                    names.get(i).map_or("a node", String::as_str),
                    log.display(),
                    tail.join("\n")
                );
            }
            if vain_net::control::request(&cluster.sockets[i], &json!({"cmd": "status"})).is_err() {
                still.push(i);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            if Instant::now() > deadline {
                let late: Vec<&str> = waiting.iter().filter_map(|i| names.get(*i).map(String::as_str)).collect();
                bail!("nodes not answering on their control sockets after start: {}", late.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn respawn(exe: &Path, cfg: &Path, args: &[String], env: &[(&str, &str)]) -> Result<std::process::Child> {
    let log = std::fs::OpenOptions::new().append(true).create(true).open(cfg.with_file_name("node.log"))?;
    let mut cmd = Command::new(exe);
    crate::net::dies_with_parent(&mut cmd);
    cmd.arg("node").arg("--config").arg(cfg).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().context("restarting a node")
}

/// Asks, through `api`, for audits of the attackers' accepted updates in the round of `row` and
/// of one honest client's; returns (whole key, label) of each audit asked for.
fn request_audits(
    api: &crate::gov::Api,
    row: &Value,
    labels: &BTreeMap<String, String>,
    keys: &BTreeMap<String, String>,
    skip: Option<&str>,
) -> Vec<(String, String)> {
    let Some(round) = row["round"].as_u64() else { return Vec::new() };
    let accepted: Vec<(&str, &String)> = row["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "accepted")
        .filter_map(|c| {
            let id = c["id"].as_str()?;
            Some((id, labels.get(id)?))
        })
        .collect();
    let attackers = accepted.iter().filter(|(_, l)| l.contains('(') && !l.contains("claims"));
    let honest = accepted.iter().rev().find(|(_, l)| !l.contains('(') && Some(l.as_str()) != skip);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return Vec::new() };
    let mut out = Vec::new();
    for (id, label) in attackers.chain(honest) {
        let Some(key) = keys.get(*id) else { continue };
        let body = json!({"node": key, "round": round});
        match rt.block_on(crate::gov::call(api, reqwest::Method::POST, "/api/v1/audits", Some(body))) {
            Ok(_) => out.push((key.clone(), (*label).clone())),
            Err(e) => tracing::warn!(node = %label, error = %e, "audit request"),
        }
    }
    out
}

fn print_row(v: &Value, labels: &BTreeMap<String, String>) {
    let name = |id: &str| labels.get(id).cloned().unwrap_or_else(|| id.to_string());
    let suspects: Vec<String> =
        v["suspects"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).map(name).collect();
    let out: Vec<String> = v["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["standing"].as_str().is_some_and(|s| s != "active"))
        .map(|c| format!("{} {}", name(c["id"].as_str().unwrap_or("")), c["standing"].as_str().unwrap_or("")))
        .collect();
    let closer = v["aggregator"].as_str().unwrap_or("");
    // The clients' ledger tiers after the round, as counts: "1:6 2:3".
    let mut tiers: BTreeMap<u64, usize> = BTreeMap::new();
    for c in v["clients"].as_array().into_iter().flatten() {
        if let Some(t) = c["tier"].as_u64() {
            *tiers.entry(t).or_default() += 1;
        }
    }
    let tiers = tiers.iter().map(|(t, n)| format!("{t}:{n}")).collect::<Vec<_>>().join(" ");
    println!(
        "{:>5} {:>8.2}% {:>4} of {:<3} {:>8} {:>7} {:>9.1} {:>9}  {:<13} {:<15} {} / {}",
        v["round"].as_u64().unwrap_or(0),
        v["accuracy"].as_f64().unwrap_or(f64::NAN) * 100.0,
        v["accepted"].as_u64().unwrap_or(0),
        v["participants"].as_u64().unwrap_or(0),
        v["rejected"].as_u64().unwrap_or(0),
        v["missing"].as_u64().unwrap_or(0),
        v["round_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        v["overhead_ms"].as_f64().map_or("-".to_string(), |x| format!("{x:.0}")),
        labels.get(closer).map_or(closer, String::as_str),
        if tiers.is_empty() { "-".to_string() } else { tiers },
        if suspects.is_empty() { "-".to_string() } else { suspects.join(", ") },
        if out.is_empty() { "-".to_string() } else { out.join(", ") },
    );
}

fn chart(path: &Path, rows: &[Value]) -> Result<std::path::PathBuf> {
    let points: Vec<(f64, f64)> =
        rows.iter().filter_map(|r| Some((r["round"].as_u64()? as f64, 100.0 * r["accuracy"].as_f64()?))).collect();
    let series =
        [crate::chart::Series { name: "global test accuracy".into(), colour: crate::chart::PALETTE[0], points }];
    let chart = crate::chart::Chart {
        title: "vain demo: global test accuracy per round",
        x: "round",
        y: "accuracy %",
        y_range: Some((0.0, 100.0)),
    };
    crate::chart::lines(path, &chart, &series)
}
