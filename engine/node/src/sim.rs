//! `vain sim`: the deterministic reputation/governance simulator (engine core).

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use vain_core::sim::{self, Options};

/// Options of `vain sim`.
#[derive(Args)]
pub struct SimArgs {
    /// Scenario: baseline | sybil | equivocator | poisoner | audit-collusion | mixed.
    #[arg(long, default_value = "mixed")]
    scenario: String,
    /// Nodes (validators included).
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Seed; the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Epochs (virtual hours).
    #[arg(long, default_value_t = 72)]
    epochs: u32,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.02)]
    loss: f64,
    /// Cut this fraction of the nodes off during epochs FROM..TO (e.g. `0.3@10..20`).
    #[arg(long)]
    partition: Option<String>,
    /// Where to write the SVG chart of reputation over time by behaviour (and the PNG, with the
    /// extension `png`).
    #[arg(long, default_value = "sim.svg")]
    svg: PathBuf,
}

fn parse_partition(s: &str) -> Result<(u32, u32, f64)> {
    let (f, range) = s.split_once('@').context("partition is FRACTION@FROM..TO")?;
    let (a, b) = range.split_once("..").context("partition is FRACTION@FROM..TO")?;
    let (f, a, b): (f64, u32, u32) = (f.parse()?, a.parse()?, b.parse()?);
    if !(0.0..=1.0).contains(&f) || a >= b {
        bail!("partition {s:?}: fraction must be in [0, 1] and FROM < TO");
    }
    Ok((a, b, f))
}

/// Runs the command.
pub fn run(a: SimArgs) -> Result<()> {
    let Some(scenario) = sim::scenario(&a.scenario) else {
        let names: Vec<&str> = sim::SCENARIOS.iter().map(|s| s.name).collect();
        bail!("unknown scenario {:?}; one of: {}", a.scenario, names.join(", "));
    };
    if a.nodes < 10 {
        bail!("--nodes must be at least 10");
    }
    if !(0.0..1.0).contains(&a.loss) {
        bail!("--loss must be in [0, 1)");
    }
    let mut opts = Options::new(a.nodes, a.seed);
    opts.epochs = a.epochs;
    opts.loss = a.loss;
    opts.partition = a.partition.as_deref().map(parse_partition).transpose()?;
    let start = Instant::now();
    let bar = crate::progress::bar(u64::from(a.epochs), "epoch");
    let run = sim::run_with(
        scenario,
        &opts,
        // The aggregator's own judge: the anomaly report decides what is flagged.
        &mut vain_learn::judge::Simulated::new(),
        &mut |e| bar.set_position(u64::from(e)),
    );
    bar.finish_and_clear();
    let took = start.elapsed();
    println!(
        "scenario {} ({}): {} nodes, {} epochs, seed {} — simulated in {:.2} s\n",
        scenario.name,
        scenario.about,
        a.nodes,
        a.epochs,
        a.seed,
        took.as_secs_f64()
    );
    print!("{}", run.summary());
    let title = format!("vain sim --scenario {} --nodes {} --seed {}", scenario.name, a.nodes, a.seed);
    let series: Vec<crate::chart::Series> = sim::Behaviour::ALL
        .into_iter()
        .filter(|b| run.history.first().is_some_and(|e| e.mean_score.contains_key(b)))
        .enumerate()
        .map(|(i, b)| crate::chart::Series {
            name: b.name().to_string(),
            colour: crate::chart::PALETTE[i % crate::chart::PALETTE.len()],
            points: run
                .history
                .iter()
                .map(|e| (f64::from(e.epoch), e.mean_score.get(&b).copied().unwrap_or(0.0)))
                .collect(),
        })
        .collect();
    let chart = crate::chart::Chart {
        title: &title,
        x: "epoch (virtual hours)",
        y: "mean reputation score",
        y_range: Some((0.0, 1.0)),
    };
    let png = crate::chart::lines(&a.svg, &chart, &series)?;
    println!("chart: {} and {}", a.svg.display(), png.display());
    Ok(())
}
