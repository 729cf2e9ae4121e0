//! `vain privacy`: the RDP accountant for DP-FedAvg / DP-SGD style training.

use anyhow::Result;
use clap::{Args, Subcommand};
use vain_kernels::privacy;

/// Privacy accounting for the sampled Gaussian mechanism.
#[derive(Subcommand)]
pub enum Command {
    /// ε spent after T steps of the sampled Gaussian mechanism at a given δ.
    Epsilon(Params<DeltaArg>),
    /// δ for a target ε after T steps.
    Delta(Params<EpsilonArg>),
}

/// The mechanism's parameters.
#[derive(Args)]
pub struct Params<T: Args> {
    /// σ: noise standard deviation ÷ clip bound.
    #[arg(long)]
    noise_multiplier: f64,
    /// q: probability that a client (or example) takes part in a step.
    #[arg(long)]
    sample_rate: f64,
    /// T: number of steps (rounds).
    #[arg(long)]
    steps: u64,
    /// Use Mironov's original RDP → (ε, δ) conversion instead of the tighter one.
    #[arg(long)]
    classic: bool,
    #[command(flatten)]
    target: T,
}

/// δ for `vain privacy epsilon`.
#[derive(Args)]
pub struct DeltaArg {
    /// Target δ.
    #[arg(long)]
    delta: f64,
}

/// ε for `vain privacy delta`.
#[derive(Args)]
pub struct EpsilonArg {
    /// Target ε.
    #[arg(long)]
    epsilon: f64,
}

fn conversion(classic: bool) -> privacy::Conversion {
    if classic { privacy::Conversion::Classic } else { privacy::Conversion::Improved }
}

/// Runs the command.
pub fn run(cmd: Command) -> Result<()> {
    let orders = privacy::DEFAULT_ORDERS;
    match cmd {
        Command::Epsilon(p) => {
            let s = privacy::epsilon_with(
                p.sample_rate,
                p.noise_multiplier,
                p.steps,
                p.target.delta,
                orders,
                conversion(p.classic),
            )?;
            println!("epsilon = {:.6}  (delta = {:e}, optimal RDP order {})", s.epsilon, s.delta, s.order);
        }
        Command::Delta(p) => {
            let curve = privacy::rdp_curve(p.sample_rate, p.noise_multiplier, p.steps, orders)?;
            let s = privacy::delta_from_rdp(orders, &curve, p.target.epsilon, conversion(p.classic))?;
            println!("delta = {:e}  (epsilon = {}, optimal RDP order {})", s.delta, s.epsilon, s.order);
        }
    }
    Ok(())
}
