//! `vain`: the vAIn node binary.

mod identity;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// vAIn: decentralized federated learning. Nodes with Ed25519 identities train locally and send
/// signed, compressed model deltas to aggregator nodes.
#[derive(Parser)]
#[command(name = "vain", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, inspect, rotate and use a node identity (keys, signatures, sealed messages).
    #[command(subcommand)]
    Identity(identity::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Identity(c) => identity::run(c),
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
