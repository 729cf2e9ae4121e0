//! `vain train`: local learning and the in-process federation.
//!
//! `vain train simulate` runs a whole federation (vain-learn's `federation`) with a progress bar,
//! prints a table per round and writes `rounds.csv`, `clients.csv`, `summary.json` and
//! `accuracy.svg` (and `.png`). `vain train local` trains one client from a checkpoint and writes its signed
//! update, so `vain aggregate` can be driven by real updates.

use crate::aggregate::{BackendChoice, open_backend};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vain_ingest::update::{Encoder, Round as UpdateRound, Tensor as UpdateTensor};
use vain_kernels::aggregate::{Rule, parse_pre};
use vain_kernels::encode::Codec;
use vain_learn::attack::Plan;
use vain_learn::data::Mnist;
use vain_learn::federation::{Config, Federation, RoundRow};
use vain_learn::model::{self, Arch, Model};
use vain_learn::partition::Scheme;
use vain_learn::train::{Config as TrainConfig, same_label, same_pixels};
use vain_learn::train::{Optim, Schedule};
use vain_learn::{DType, Device};

/// `vain train` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run a whole federation in one process: real training, encoders, envelopes, checks,
    /// kernels, ledger and attacks.
    Simulate(SimulateArgs),
    /// Train one client of a federation from a checkpoint and write its update: safetensors
    /// (for `vain aggregate`) and the signed wire frame a client sends.
    Local(LocalArgs),
    /// Evaluate a checkpoint (optionally plus an aggregated update) on the global test split,
    /// and optionally save the sum as the next checkpoint.
    Eval(EvalArgs),
}

/// The federation's data: which set, how it is split, which client.
#[derive(Args)]
pub struct DataArgs {
    /// mnist-mlp | mnist-cnn.
    #[arg(long, default_value = "mnist-cnn")]
    model: Arch,
    /// Directory with the MNIST IDX files; default: the 10,000 embedded digits.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Clients the data is split across.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// iid | dirichlet:α.
    #[arg(long, default_value = "dirichlet:0.5")]
    partition: Scheme,
    /// Seed of everything: the data split, the initial model, training and attacks. The same
    /// seed gives the same run, and `vain train local`/`eval` the same data as the simulator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl DataArgs {
    fn config(&self) -> Config {
        let mut cfg = Config::new(self.model, self.clients);
        cfg.partition = self.partition;
        cfg.seed = self.seed;
        cfg
    }

    fn load(&self) -> Result<Option<Mnist>> {
        Ok(match &self.data {
            Some(dir) => Some(Mnist::load_dir(dir).with_context(|| format!("loading MNIST from {}", dir.display()))?),
            None => None,
        })
    }

    fn split(&self) -> Result<(Config, vain_learn::federation::Split)> {
        let cfg = self.config();
        let split = vain_learn::federation::split(&cfg, self.load()?)?;
        Ok((cfg, split))
    }

    fn base(&self, path: Option<&Path>) -> Result<Vec<f32>> {
        Ok(match path {
            Some(p) => model::load_flat(self.model, p)?,
            None => Model::init(self.model, self.seed, &Device::Cpu, DType::F32)?.flat()?,
        })
    }
}

/// How a client trains in a round.
#[derive(Args)]
pub struct TrainArgs {
    /// Optimiser steps (minibatches) per round.
    #[arg(long, default_value_t = 10)]
    local_steps: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// sgd[:momentum] | adam.
    #[arg(long, default_value = "sgd:0.9")]
    optimizer: Optim,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Learning rate over rounds: constant | step:EVERY:GAMMA (× GAMMA every EVERY rounds) |
    /// cosine:ROUNDS:FLOOR (down to FLOOR × the base rate at ROUNDS).
    #[arg(long, default_value = "constant")]
    lr_schedule: Schedule,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            optim: self.optimizer,
            lr: self.lr,
            schedule: self.lr_schedule,
            batch: self.batch,
            steps: self.local_steps,
        }
    }
}

/// Arguments of `vain train local`.
#[derive(Args)]
pub struct LocalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// This client's index (0-based).
    #[arg(long)]
    client: usize,
    /// The global checkpoint to train from (safetensors); default: the seeded initial model.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Round number written into the envelope.
    #[arg(long, default_value_t = 0)]
    round: u64,
    #[command(flatten)]
    train: TrainArgs,
    /// Wire encoding of the signed frame.
    #[arg(long, default_value = "f32")]
    encoding: Codec,
    /// zstd level for the frame's payload.
    #[arg(long)]
    zstd: Option<i32>,
    /// The update (local − base) as f32 safetensors, with `num_examples` in its metadata.
    #[arg(short, long)]
    output: PathBuf,
    /// The signed frame (as sent over QUIC). Default: OUTPUT with extension .frame.
    #[arg(long)]
    frame: Option<PathBuf>,
    #[command(flatten)]
    identity: crate::identity::Common,
    #[command(flatten)]
    hsm_args: crate::identity::HsmArgs,
}

/// Arguments of `vain train eval`.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The checkpoint (safetensors); default: the seeded initial model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// An update to add first (e.g. the output of `vain aggregate`).
    #[arg(long)]
    delta: Option<PathBuf>,
    /// Server step: checkpoint + step × delta.
    #[arg(long, default_value_t = 1.0)]
    step: f32,
    /// Write checkpoint + step × delta here (the next global model).
    #[arg(long)]
    save: Option<PathBuf>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Arguments of `vain train simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    train: TrainArgs,
    /// Fraction of clients that attack, in [0, 0.5).
    #[arg(long, default_value_t = 0.0)]
    malicious: f64,
    /// alie | ipm[:ε] | label-flip | sign-flip | scale:λ | noise[:σ] | free-ride[:stale] | backdoor | mixed,
    /// or a comma-separated list (attacker k runs the k-th, cyclically).
    #[arg(long, default_value = "sign-flip")]
    attack: Plan,
    /// fedavg | median | trimmed-mean:β | multi-krum:f,m | bulyan:f | centered-clip:τ,iters | clipped-mean:C.
    #[arg(long, default_value = "fedavg")]
    rule: Rule,
    /// Pre-aggregation steps before the rule: nnm:f | bucketing:s | arc:f, joined by + (e.g.
    /// arc:6+nnm:6).
    #[arg(long, default_value = "none")]
    pre: String,
    /// Rounds.
    #[arg(long, default_value_t = 30)]
    rounds: u64,
    /// Learning rate decay: cosine from the base rate to 10 % of it over the run (the same as
    /// --lr-schedule cosine:ROUNDS:0.1).
    #[arg(long, conflicts_with = "lr_schedule")]
    cosine: bool,
    /// f32 | f16 | bf16 | int8:BLOCK | topk:FRACTION | topk-f16:FRACTION | sign.
    #[arg(long, default_value = "f32")]
    encoding: Codec,
    /// zstd level for update payloads.
    #[arg(long)]
    zstd: Option<i32>,
    /// Clip every update to this L2 norm.
    #[arg(long)]
    clip: Option<f32>,
    /// DP noise multiplier σ (needs --clip); ε per round is reported (δ = 1e-5).
    #[arg(long)]
    noise_multiplier: Option<f32>,
    /// Reputation sets weights and excludes suspended clients.
    #[arg(long, value_enum, default_value = "on")]
    reputation: Switch,
    /// Reptile outer step ε: global ← global + ε·aggregate (1 = plain averaging).
    #[arg(long, default_value_t = 1.0)]
    reptile: f64,
    /// Steps fine-tuning each client's personal head per round (0 = no personalisation).
    #[arg(long, default_value_t = 0)]
    personal_steps: usize,
    /// Aggregation backend.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    /// Client training threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where to write rounds.csv, clients.csv, summary.json and accuracy.svg (and .png).
    #[arg(long, default_value = "vain-train-out")]
    out: PathBuf,
}

/// Runs a `vain train` subcommand; `quiet` (the global `-q`) leaves out the per-round table.
pub fn run(cmd: Command, quiet: bool) -> Result<()> {
    match cmd {
        Command::Simulate(a) => simulate(a, quiet),
        Command::Local(a) => local(a),
        Command::Eval(a) => eval(a),
    }
}

fn local(a: LocalArgs) -> Result<()> {
    let (cfg, split) = a.data.split()?;
    let Some((train_idx, _)) = split.clients.get(a.client) else {
        bail!("--client {} is outside the {} clients", a.client, cfg.clients);
    };
    let base = a.data.base(a.base.as_deref())?;
    let model = Model::from_flat(cfg.arch, &base, &Device::Cpu, DType::F32)?;
    let tcfg = a.train.config();
    let mut rng = vain_learn::seeded(cfg.seed ^ (a.client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.round);
    let stats =
        vain_learn::train::train(&model, &split.data, train_idx, &tcfg, a.round, &mut rng, &same_label, &same_pixels)?;
    let local = model.flat()?;
    let update: Vec<f32> = local.iter().zip(&base).map(|(l, b)| l - b).collect();
    let base_digest = model::digest(&base);
    model::save_flat(cfg.arch, &update, &a.output)?;
    add_metadata(&a.output, stats.samples, &base_digest)?;

    let id = crate::identity::open(&a.identity, Some(&a.hsm_args))?;
    let layout = cfg.arch.layout();
    let mut at = 0;
    let tensors: Vec<UpdateTensor<'_>> = layout
        .iter()
        .map(|l| {
            let k = l.shape.iter().product::<u64>() as usize;
            at += k;
            UpdateTensor { name: &l.name, shape: &l.shape, values: &update[at - k..at] }
        })
        .collect();
    let round = UpdateRound {
        model_id: cfg.arch.id().to_string(),
        round: a.round,
        base_model: base_digest,
        num_examples: stats.samples.max(1) as u64,
        timestamp_ms: crate::identity::now_ms(),
    };
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    let signer = id.signer();
    let built = Encoder::new(a.encoding, a.zstd).build_with(
        signer.public_key(),
        &mut |m| signer.sign(m).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
        &round,
        nonce,
        &tensors,
    )?;
    let frame = a.frame.clone().unwrap_or_else(|| a.output.with_extension("frame"));
    std::fs::write(&frame, &built.frame).with_context(|| format!("writing {}", frame.display()))?;
    println!(
        "client {} trained {} steps on {} items (mean loss {:.4}); update {} ({} parameters), signed frame {} ({} bytes, {:.1}× smaller than f32)",
        a.client,
        a.train.local_steps,
        train_idx.len(),
        stats.loss,
        a.output.display(),
        update.len(),
        frame.display(),
        built.frame.len(),
        built.ratio
    );
    Ok(())
}

/// Adds `num_examples` and the base digest to an update file's metadata (rewrites the file).
fn add_metadata(path: &Path, samples: usize, base: &[u8; 32]) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let mut m = meta.metadata().clone().unwrap_or_default();
    m.insert("num_examples".into(), samples.max(1).to_string());
    m.insert("vain.base".into(), hex::encode(base));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors().into_iter().collect();
    safetensors::serialize_to_file(views, Some(m), path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let (cfg, split) = a.data.split()?;
    let mut flat = a.data.base(a.checkpoint.as_deref())?;
    if let Some(d) = &a.delta {
        let delta = model::load_flat(cfg.arch, d)?;
        flat.iter_mut().zip(&delta).for_each(|(p, d)| *p += a.step * d);
    }
    let model = Model::from_flat(cfg.arch, &flat, &Device::Cpu, DType::F32)?;
    let (acc, loss) = vain_learn::train::evaluate(&model, &split.data, &split.test, &same_label, &same_pixels)?;
    println!(
        "{}: accuracy {:.2} % (loss {:.4}) on {} test digits; digest {}",
        cfg.arch,
        100.0 * acc,
        loss,
        split.test.len(),
        hex::encode(model::digest(&flat))
    );
    if let Some(p) = &a.save {
        model::save_flat(cfg.arch, &flat, p)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn simulate(a: SimulateArgs, quiet: bool) -> Result<()> {
    let data = a.data.load()?;
    let mut cfg = a.data.config();
    cfg.train = a.train.config();
    cfg.malicious = a.malicious;
    cfg.plan = a.attack;
    cfg.rule = a.rule;
    cfg.pre = parse_pre(&a.pre)?;
    cfg.rounds = a.rounds;
    if a.cosine {
        cfg.train.schedule = Schedule::Cosine { rounds: a.rounds, floor: 0.1 };
    }
    cfg.codec = a.encoding;
    cfg.zstd = a.zstd;
    cfg.clip = a.clip;
    cfg.noise_multiplier = a.noise_multiplier;
    cfg.reputation = a.reputation == Switch::On;
    cfg.server_lr = a.reptile;
    cfg.personal_steps = a.personal_steps;
    cfg.threads = a.threads;
    let mut backend = open_backend(a.backend, 0)?;
    let start = Instant::now();
    let mut fed = Federation::new(cfg.clone(), data)?;
    let attacks = fed.attacks();
    let title = format!(
        "vain train simulate --model {} --clients {} --malicious {} --attack {} --rule {}{} --partition {} --rounds {} --encoding {} --reputation {} --seed {}",
        cfg.arch,
        cfg.clients,
        cfg.malicious,
        cfg.plan,
        cfg.rule,
        if cfg.pre.is_empty() {
            String::new()
        } else {
            format!(" --pre {}", cfg.pre.iter().map(ToString::to_string).collect::<Vec<_>>().join("+"))
        },
        cfg.partition,
        cfg.rounds,
        cfg.codec,
        if cfg.reputation { "on" } else { "off" },
        cfg.seed
    );
    println!("{title}");
    let sizes = fed.client_sizes();
    println!(
        "{} clients ({} attacking: {}), {}–{} training items each, {} parameters, {} local steps of {}",
        cfg.clients,
        cfg.attackers(),
        attacks.iter().enumerate().filter_map(|(i, a)| a.map(|a| format!("#{i} {a}"))).collect::<Vec<_>>().join(", "),
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0),
        cfg.arch.dim(),
        cfg.train.steps,
        cfg.train.batch
    );
    let bar = crate::progress::bar(cfg.rounds, "round");
    let say = |s: String| crate::progress::say(&bar, s);
    if !quiet {
        say(header());
    }
    let mut rows = Vec::with_capacity(cfg.rounds as usize);
    for _ in 0..cfg.rounds {
        let row = fed.run_round(backend.as_mut())?;
        bar.set_message(format!("accuracy {:.2} %", 100.0 * row.accuracy));
        if !quiet {
            say(line(&row));
        }
        bar.inc(1);
        rows.push(row);
    }
    bar.finish_and_clear();
    let wall = start.elapsed();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_csv(&a.out, &rows)?;
    let summary = summary_json(&cfg, &title, &rows, wall);
    std::fs::write(a.out.join("summary.json"), serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", a.out.join("summary.json").display()))?;
    chart(&a.out.join("accuracy.svg"), &title, &rows)?;
    let last = rows.last().context("no rounds were run")?;
    println!("{}", final_clients(last));
    println!(
        "final accuracy {:.2} % (loss {:.4}){}{} after {} rounds in {:.1} s; {:.0} training samples/s per core, {:.1} % of the time outside training",
        100.0 * last.accuracy,
        last.loss,
        last.backdoor_success.map(|b| format!(", backdoor success {:.1} %", 100.0 * b)).unwrap_or_default(),
        last.epsilon.map(|e| format!(", ε = {e:.2} (δ = 1e-5)")).unwrap_or_default(),
        rows.len(),
        wall.as_secs_f64(),
        summary["samples_per_second_per_core"].as_f64().unwrap_or(0.0),
        summary["outside_training_percent"].as_f64().unwrap_or(0.0),
    );
    println!("wrote {}/rounds.csv, clients.csv, summary.json, accuracy.svg, accuracy.png", a.out.display());
    Ok(())
}

fn header() -> String {
    format!(
        "{:>5} {:>8} {:>7} {:>8} {:>8} {:>4} {:>4} {:>4} {:>8} {:>7}  {:<12} {}",
        "round",
        "acc %",
        "loss",
        "local %",
        "pers %",
        "acc",
        "rej",
        "excl",
        "backdoor",
        "ε",
        "suspected",
        "weight % / tier per client (* attacker)"
    )
}

fn line(r: &RoundRow) -> String {
    let opt =
        |v: Option<f64>, scale: f64, prec: usize| v.map_or("-".to_string(), |x| format!("{:.*}", prec, scale * x));
    format!(
        "{:>5} {:>8.2} {:>7.4} {:>8.2} {:>8} {:>4} {:>4} {:>4} {:>8} {:>7}  {:<12} {}",
        r.round,
        100.0 * r.accuracy,
        r.loss,
        100.0 * r.local_accuracy,
        opt(r.personal_accuracy, 100.0, 2),
        r.accepted,
        r.rejected,
        r.excluded,
        opt(r.backdoor_success, 100.0, 1),
        opt(r.epsilon, 1.0, 2),
        r.suspected.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(" "),
        r.clients
            .iter()
            .map(|c| format!("{:.1}{}/{}", 100.0 * c.weight, if c.attack.is_some() { "*" } else { "" }, c.tier))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn final_clients(r: &RoundRow) -> String {
    let mut s = String::from("client  role            weight %  tier  score   status\n");
    for c in &r.clients {
        let role = c.attack.map_or("honest".to_string(), |a| a.to_string());
        let _ = writeln!(
            s,
            "#{:<6} {:<15} {:>8.2} {:>5} {:>6.3}   {}",
            c.index,
            role,
            100.0 * c.weight,
            c.tier,
            c.score,
            c.status
        );
    }
    s
}

fn num(x: f64) -> String {
    if x.is_finite() { format!("{x:.4}") } else { String::new() }
}

fn write_csv(out: &Path, rows: &[RoundRow]) -> Result<()> {
    let mut s = String::from(
        "round,accuracy,loss,local_accuracy,personal_accuracy,accepted,rejected,excluded,suspected,backdoor_success,epsilon,samples,train_s,other_s,eval_s\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    for r in rows {
        let _ = writeln!(
            s,
            "{},{:.6},{:.6},{:.6},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3}",
            r.round,
            r.accuracy,
            r.loss,
            r.local_accuracy,
            opt(r.personal_accuracy),
            r.accepted,
            r.rejected,
            r.excluded,
            r.suspected.len(),
            opt(r.backdoor_success),
            opt(r.epsilon),
            r.samples,
            r.train_time.as_secs_f64(),
            r.other_time.as_secs_f64(),
            r.eval_time.as_secs_f64()
        );
    }
    std::fs::write(out.join("rounds.csv"), s)
        .with_context(|| format!("writing {}", out.join("rounds.csv").display()))?;
    let mut c = String::from("round,client,attack,weight,tier,score,z,z_norm,z_cosine,z_similarity,status\n");
    for r in rows {
        for cl in &r.clients {
            let _ = writeln!(
                c,
                "{},{},{},{:.6},{},{:.6},{},{},{},{},{}",
                r.round,
                cl.index,
                cl.attack.map_or("honest".to_string(), |a| a.to_string()),
                cl.weight,
                cl.tier,
                cl.score,
                num(cl.z),
                num(cl.z_norm),
                num(cl.z_cosine),
                num(cl.z_similarity),
                cl.status
            );
        }
    }
    std::fs::write(out.join("clients.csv"), c)
        .with_context(|| format!("writing {}", out.join("clients.csv").display()))?;
    Ok(())
}

fn summary_json(cfg: &Config, title: &str, rows: &[RoundRow], wall: Duration) -> serde_json::Value {
    let train: f64 = rows.iter().map(|r| r.train_time.as_secs_f64()).sum();
    let other: f64 = rows.iter().map(|r| r.other_time.as_secs_f64()).sum();
    let samples: usize = rows.iter().map(|r| r.samples).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let last = rows.last();
    json!({
        "command": title,
        "model": cfg.arch.id(),
        "parameters": cfg.arch.dim(),
        "clients": cfg.clients,
        "attackers": cfg.attackers(),
        "attack": cfg.plan.to_string(),
        "rule": cfg.rule.to_string(),
        "pre": cfg.pre.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "partition": cfg.partition.to_string(),
        "encoding": cfg.codec.to_string(),
        "reputation": cfg.reputation,
        "rounds": rows.len(),
        "seed": cfg.seed,
        "final_accuracy": last.map(|r| r.accuracy),
        "final_loss": last.map(|r| r.loss),
        "final_backdoor_success": last.and_then(|r| r.backdoor_success),
        "final_epsilon": last.and_then(|r| r.epsilon),
        "honest_suspended": last.map(|r| r.clients.iter().filter(|c| c.attack.is_none() && c.status != "active").count()),
        "wall_seconds": wall.as_secs_f64(),
        "training_samples": samples,
        "samples_per_second_per_core": samples as f64 / train.max(1e-9) / cores,
        "outside_training_percent": 100.0 * other / (train + other).max(1e-9),
        "accuracy": rows.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
        "backdoor_success": rows.iter().map(|r| r.backdoor_success).collect::<Vec<_>>(),
        "attacker_weight": rows.iter().map(|r| r.clients.iter().filter(|c| c.attack.is_some()).map(|c| c.weight).sum::<f64>()).collect::<Vec<_>>(),
    })
}

fn chart(path: &Path, title: &str, rows: &[RoundRow]) -> Result<std::path::PathBuf> {
    use crate::chart::{PALETTE, Series};
    let series = |name: &str, colour, f: &dyn Fn(&RoundRow) -> Option<f64>| Series {
        name: name.into(),
        colour,
        points: rows.iter().filter_map(|r| f(r).map(|v| (r.round as f64, 100.0 * v))).collect(),
    };
    let mut lines = vec![series("global test accuracy", PALETTE[0], &|r| Some(r.accuracy))];
    if rows.iter().any(|r| r.clients.iter().any(|c| c.attack.is_some())) {
        lines.push(series("attackers' share of the weight", PALETTE[1], &|r| {
            Some(r.clients.iter().filter(|c| c.attack.is_some()).map(|c| c.weight).sum())
        }));
    }
    if rows.iter().any(|r| r.backdoor_success.is_some()) {
        lines.push(series("backdoor success", PALETTE[3], &|r| r.backdoor_success));
    }
    if rows.iter().any(|r| r.personal_accuracy.is_some()) {
        lines.push(series("personalised accuracy (honest clients)", PALETTE[4], &|r| r.personal_accuracy));
    }
    crate::chart::lines(path, &crate::chart::Chart { title, x: "round", y: "%", y_range: Some((0.0, 100.0)) }, &lines)
}
