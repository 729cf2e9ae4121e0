//! `vain`: the vAIn node binary.

mod aggregate;
mod api;
mod audit;
mod bench;
mod chain;
mod chart;
mod demo;
mod dht_bench;
mod gov;
mod identity;
mod metrics;
mod net;
mod node;
mod privacy;
mod progress;
mod sim;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// vAIn: decentralized federated learning. Nodes with Ed25519 identities train locally and send
/// signed, compressed model deltas to aggregator nodes.
#[derive(Parser)]
#[command(name = "vain", version, propagate_version = true)]
struct Cli {
    /// More log detail (-v debug, -vv trace); RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log detail (-q warnings and errors, -qq errors).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    /// Log lines on stderr: human, or json (one object per line).
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

/// Logs go to stderr; command output (tables, reports) stays on stdout.
fn init_logs(verbose: u8, quiet: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // libp2p and quinn are chatty below warn; -vv shows them too.
    let default =
        if verbose >= 2 { level.to_string() } else { format!("{level},libp2p=warn,libp2p_kad=error,quinn=warn") };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: node logs often go to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => b.try_init(),
        LogFormat::Json => b.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

#[derive(Subcommand)]
enum Command {
    /// A federation of real node processes on loopback: a bootstrap, an aggregator and
    /// clients (some attacking) train a model over QUIC and libp2p, with a live view of the
    /// rounds, a summary and a chart.
    Demo(demo::DemoArgs),
    /// Create, inspect, rotate and use a node identity (keys, signatures, sealed messages).
    #[command(subcommand)]
    Identity(identity::Command),
    /// Aggregate client updates (safetensors files) with a robust rule, clipping and DP noise;
    /// writes the aggregate and a JSON anomaly report.
    Aggregate(aggregate::AggregateArgs),
    /// Auditor checks on published results (the DP noise behind an aggregate).
    #[command(subcommand)]
    Audit(audit::Command),
    /// Throughput benchmarks. With no subcommand: the end-to-end ingest benchmark (client
    /// processes → QUIC → our shards → checks → aggregation), against quinn on tokio.
    Bench(bench::BenchArgs),
    /// Local learning: a whole federation in one process (`vain train simulate`).
    #[command(subcommand)]
    Train(train::Command),
    /// Run the deterministic reputation / governance simulator and chart reputation over time.
    Sim(sim::SimArgs),
    /// Run one node of the control plane (libp2p: Kademlia, mDNS, beacon, peer exchange,
    /// heartbeats) until Ctrl-C or SIGTERM.
    Node(net::NodeArgs),
    /// Start N node processes on loopback, from one bootstrap, with a live status table.
    Up(net::UpArgs),
    /// List the peers a running node knows.
    Peers(net::SocketArgs),
    /// What a running node reports about the round protocol: whether its aggregator leads and
    /// the next round; its client's answers to opens, closes and receipts, by reason.
    Round(net::SocketArgs),
    /// A running node's reputation ledger.
    #[command(subcommand)]
    Ledger(net::LedgerCommand),
    /// Query the DHT through a running node.
    #[command(subcommand)]
    Dht(net::DhtCommand),
    /// Differential-privacy accounting (RDP accountant for the sampled Gaussian mechanism).
    #[command(subcommand)]
    Privacy(privacy::Command),
    /// Governance through a running node's API: list, show, propose, vote.
    #[command(subcommand)]
    Gov(gov::Command),
    /// On-chain anchoring: the embedded chain, deployment, account, stake, registration,
    /// anchors and inclusion proofs.
    #[command(subcommand)]
    Chain(chain::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose, cli.quiet, cli.log_format);
    // One TLS provider for the whole process (QUIC, HTTPS to a chain, the API client): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Identity(c) => identity::run(c),
        Command::Aggregate(a) => aggregate::run(a),
        Command::Audit(c) => audit::run(c),
        Command::Privacy(c) => privacy::run(c),
        Command::Chain(c) => chain::run(c),
        Command::Gov(c) => gov::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Sim(a) => sim::run(a),
        Command::Train(c) => train::run(c, cli.quiet > 0),
        Command::Node(a) => net::run_node(a),
        Command::Up(a) => net::run_up(a),
        Command::Peers(a) => net::run_peers(a),
        Command::Round(a) => net::run_round(a),
        Command::Ledger(c) => net::run_ledger(c),
        Command::Dht(c) => net::run_dht(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
