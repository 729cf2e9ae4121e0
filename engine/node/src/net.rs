//! `vain node`, `vain up`, `vain peers`, `vain dht`: the control plane from the command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vain_identity::store::{KEY_FILE, NewKey};
use vain_identity::{Identity, keyfile};
use vain_net::control;
use vain_net::node::{self};

/// Options of `vain node`.
#[derive(Args)]
pub struct NodeArgs {
    /// node.toml (every field has a default; see docs/architecture.md, "Control plane").
    #[arg(long)]
    config: Option<PathBuf>,
    /// The node's key in a PKCS#11 token: its root key stays in the token, which certifies the
    /// operational key the node runs on (docs/architecture.md, "Identity").
    #[command(flatten)]
    hsm: crate::identity::HsmArgs,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Serve the HTTP API, the dashboard (/) and the metrics at ADDR (127.0.0.1:9480 when
    /// given without one); see docs/api.md.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::api::DEFAULT_ADDR)]
    api: Option<std::net::SocketAddr>,
    /// The API's bearer token file for requests that change state (default: <data dir>/api.token,
    /// created with mode 0600 on first start).
    #[arg(long, value_name = "FILE")]
    api_token: Option<PathBuf>,
}

/// Options of `vain up`.
#[derive(Args)]
pub struct UpArgs {
    /// Node processes to start on loopback.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Directory for the nodes' data (default: a new temporary directory, removed on exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stop after this many seconds instead of at Ctrl-C.
    #[arg(long)]
    seconds: Option<f64>,
}

/// Options that find a running node.
#[derive(Args)]
pub struct SocketArgs {
    /// The node's control socket (default: <data dir>/control.sock with the default data dir).
    #[arg(long, default_value = ".vain/control.sock")]
    socket: PathBuf,
}

/// `vain dht`.
#[derive(Subcommand)]
pub enum DhtCommand {
    /// Looks a key up: node/<node id hex>, agg/<model id>, ckpt/<digest hex>.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
}

/// Loads or creates the node's identity in `<data dir>/identity` (unencrypted unless
/// VAIN_PASSPHRASE is set) and returns the network identity.
pub(crate) fn identity(data_dir: &Path) -> Result<node::Identity> {
    identity_with(data_dir, None)
}

/// [`identity`], with the root key in a PKCS#11 token when `hsm` names one: a new identity's
/// root key is generated in the token. libp2p's handshake and the TLS key need the secret in
/// process, so the node runs on an operational file key that the token certifies (a rotation
/// certificate signed inside the token): when the current key is the token's, or a file key
/// near its expiry, the node has the current key certify a fresh operational key at start-up.
pub(crate) fn identity_with(data_dir: &Path, hsm: Option<vain_identity::pkcs11::Config>) -> Result<node::Identity> {
    use vain_identity::rotation::{Policy, Status};
    use vain_schema::persist::KeySource;
    let dir = data_dir.join("identity");
    let pass = std::env::var("VAIN_PASSPHRASE").ok();
    let pass = pass.as_deref().map(str::as_bytes);
    let now = vain_schema::clock::unix_ms();
    let mut id = if dir.join(vain_identity::store::META_FILE).exists() {
        Identity::open(&dir, pass, hsm.clone()).with_context(|| format!("opening the identity in {}", dir.display()))?
    } else {
        let key = match hsm.clone() {
            Some(cfg) => NewKey::Hsm(cfg),
            None => NewKey::Random,
        };
        Identity::create(&dir, key, pass, Default::default(), now)
            .with_context(|| format!("creating an identity in {}", dir.display()))?
    };
    let policy = Policy::default();
    let in_token = matches!(id.meta().key_source, KeySource::Pkcs11 { .. });
    let expiring = matches!(id.status(now, &policy)?, Status::ExpiringSoon { .. });
    if in_token || expiring {
        let cert = id
            .rotate(NewKey::Random, pass, Default::default(), now, &policy)
            .with_context(|| format!("certifying an operational key for {}", dir.display()))?;
        tracing::info!(
            certified_by = %hex::encode(cert.old_key),
            key = %hex::encode(cert.new_key),
            days = policy.validity_ms / 86_400_000,
            "operational key certified"
        );
    }
    let seed = keyfile::read(&vain_core::storage::Disk, &dir.join(KEY_FILE), keyfile::Kind::Ed25519, pass)
        .context("reading the operational key")?;
    if ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes() != id.current_key() {
        bail!("{} is not the identity's current key", dir.join(KEY_FILE).display());
    }
    Ok(node::Identity {
        seed: zeroize::Zeroizing::new(*seed),
        node_id: id.node_id(),
        rotation_chain: id.meta().rotation_chain.clone(),
        x25519: id.x25519().public(),
    })
}

/// Runs `vain node`.
pub fn run_node(a: NodeArgs) -> Result<()> {
    let serve = crate::node::Serve { metrics: a.metrics, api: a.api, api_token: a.api_token, hsm: a.hsm.config()? };
    crate::node::run(a.config.as_deref(), serve)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs `vain peers`.
pub fn run_peers(a: SocketArgs) -> Result<()> {
    let v = control::request(&a.socket, &json!({"cmd": "peers"}))?;
    let rows = v.as_array().cloned().unwrap_or_default();
    println!(
        "{:<54} {:<9} {:>9} {:>6} {:>10} {:<12} node id",
        "peer id", "state", "connected", "score", "seen ms", "region"
    );
    for r in rows {
        println!(
            "{:<54} {:<9} {:>9} {:>6} {:>10} {:<12} {}",
            r["peer_id"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["connected"].as_bool().unwrap_or(false),
            r["score"].as_i64().unwrap_or(0),
            r["last_seen_ms"].as_u64().unwrap_or(0),
            r["region"].as_str().filter(|s| !s.is_empty()).unwrap_or("-"),
            r["node_id"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `vain ledger`.
#[derive(Subcommand)]
pub enum LedgerCommand {
    /// The node's ledger: state digest (equal on nodes that applied the same evidence), the next
    /// epoch, evidence offered by outcome, the governable parameters, and every node's tier,
    /// score and standing.
    Status {
        #[command(flatten)]
        socket: SocketArgs,
    },
}

/// Runs `vain ledger`.
pub fn run_ledger(c: LedgerCommand) -> Result<()> {
    match c {
        LedgerCommand::Status { socket } => {
            let v = control::request(&socket.socket, &json!({"cmd": "ledger"}))?;
            println!("digest     {}", v["digest"].as_str().unwrap_or("?"));
            println!("next epoch {}", v["next_epoch"]);
            println!("applied    {} reports ({} pending)", v["applied"], v["pending"]);
            println!(
                "journal    {} entries since {}",
                v["journal_entries"],
                v["snapshot_epoch"]
                    .as_u64()
                    .map_or("the start (no snapshot yet)".to_string(), |e| format!("the snapshot of epoch {e}"))
            );
            println!("offers     {}", v["offers"]);
            let params: Vec<String> = v["parameters"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            println!("parameters {}", params.join(" "));
            println!("{:<10} {:>4} {:>8}  standing", "node", "tier", "score");
            for n in v["nodes"].as_array().into_iter().flatten() {
                let forked = n["forked_epoch"]
                    .as_u64()
                    .map(|e| format!(" (signed two reports for epoch {e})"))
                    .unwrap_or_default();
                println!(
                    "{:<10} {:>4} {:>8.3}  {}{forked}",
                    n["id"].as_str().unwrap_or(""),
                    n["tier"],
                    n["score"].as_f64().unwrap_or(f64::NAN),
                    n["standing"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

/// Runs `vain round`.
pub fn run_round(a: SocketArgs) -> Result<()> {
    print_json(&control::request(&a.socket, &json!({"cmd": "round"}))?)
}

/// Runs `vain dht`.
pub fn run_dht(c: DhtCommand) -> Result<()> {
    match c {
        DhtCommand::Get { key, socket } => {
            vain_net::records::Key::parse_text(&key)?;
            print_json(&control::request(&socket.socket, &json!({"cmd": "get", "key": key}))?)
        }
    }
}

pub(crate) struct Cluster {
    pub(crate) children: Vec<Child>,
    pub(crate) sockets: Vec<PathBuf>,
    pub(crate) _tmp: Option<tempfile::TempDir>,
}

/// Has the process `cmd` starts receive SIGTERM when the thread that started it ends — the
/// process dying included, by SIGKILL too — so no node outlives the `vain demo` or `vain up`
/// that started it (a `Cluster` stops its nodes when dropped, but a signal that kills the
/// parent outright runs no destructor).
pub(crate) fn dies_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe and touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first, so each node removes its socket and closes its connections.
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).stderr(Stdio::null()).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes node i's config (control plane for loopback, `roles`, then the `extra` sections) and
/// identity; returns its config path and its bootstrap address.
pub(crate) fn prepare(
    dir: &Path,
    i: usize,
    port: u16,
    bootstrap: Option<&str>,
    roles: &str,
    extra: &str,
) -> Result<(PathBuf, String)> {
    let data = dir.join(format!("node-{i:02}"));
    std::fs::create_dir_all(&data)?;
    let id = identity(&data)?;
    let peer = vain_net::keys::peer_id(&ed25519_dalek::SigningKey::from_bytes(&id.seed).verifying_key().to_bytes())?;
    let boot = bootstrap.map(|b| format!("bootstrap = [\"{b}\"]\n")).unwrap_or_default();
    let text = format!(
        "roles = [{roles}]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\n{boot}data_dir = \"{}\"\n\
         [mdns]\nenabled = false\n[beacon]\nenabled = false\n\
         [liveness]\nheartbeat_interval = 1.0\nstale_after = 6.0\n[pex]\ninterval = 1.0\n{extra}",
        data.display()
    );
    let path = data.join("node.toml");
    std::fs::write(&path, text)?;
    Ok((path, format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")))
}

/// Runs `vain up`.
pub fn run_up(a: UpArgs) -> Result<()> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let (dir, tmp) = match a.dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let exe = std::env::current_exe()?;
    let mut cluster = Cluster { children: Vec::new(), sockets: Vec::new(), _tmp: tmp };
    let mut boot = None;
    for i in 0..a.nodes {
        // Only the bootstrap's port must be known in advance; the others take what the OS gives.
        let port = if boot.is_none() { free_tcp_port()? } else { 0 };
        let (cfg, addr) = prepare(&dir, i, port, boot.as_deref(), "\"client\"", "")?;
        let log = std::fs::File::create(cfg.with_file_name("node.log"))?;
        let mut cmd = Command::new(&exe);
        dies_with_parent(&mut cmd);
        let child = cmd
            .arg("node")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a node")?;
        cluster.children.push(child);
        cluster.sockets.push(cfg.with_file_name("control.sock"));
        if boot.is_none() {
            boot = Some(addr);
        }
    }
    eprintln!("{} nodes starting in {} (Ctrl-C stops them)", a.nodes, dir.display());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    // Ctrl-C ends the table loop; Drop then stops the children cleanly.
    let _ = ctrlc_flag(s);
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut converged_at = None;
    let mut last = String::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if a.seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut table = format!(
            "{:>4} {:<54} {:>5} {:>4} {:>9} {:>7} {:>7} {:>12}\n",
            "node", "peer id", "known", "live", "connected", "routing", "records", "heartbeat ms"
        );
        let mut all_live = true;
        for (i, sock) in cluster.sockets.iter().enumerate() {
            match control::request(sock, &json!({"cmd": "status"})) {
                Ok(s) => {
                    let live = s["live"].as_u64().unwrap_or(0);
                    all_live &= live + 1 >= a.nodes as u64;
                    table += &format!(
                        "{:>4} {:<54} {:>5} {:>4} {:>9} {:>7} {:>7} {:>12}\n",
                        i,
                        s["peer_id"].as_str().unwrap_or(""),
                        s["known"],
                        live,
                        s["connected"],
                        s["routing"],
                        s["records"],
                        s["last_heartbeat_ms"].as_u64().map_or("-".into(), |v| v.to_string())
                    );
                }
                Err(_) => {
                    all_live = false;
                    table += &format!("{i:>4} (starting)\n");
                }
            }
        }
        if all_live && converged_at.is_none() {
            converged_at = Some(started.elapsed());
        }
        let head = match converged_at {
            Some(t) => {
                format!("converged: every node live with all {} others after {:.1} s\n", a.nodes - 1, t.as_secs_f64())
            }
            None => format!("converging… {:.0} s\n", started.elapsed().as_secs_f64()),
        };
        last = head + &table;
        if tty {
            print!("\x1b[2J\x1b[H{last}");
            std::io::stdout().flush()?;
        }
    }
    if !tty {
        print!("{last}");
    }
    drop(cluster);
    println!("stopped {} nodes", a.nodes);
    Ok(())
}

/// Sets `flag` on SIGINT (via a tokio signal on a helper runtime thread).
fn ctrlc_flag(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });
    Ok(())
}
