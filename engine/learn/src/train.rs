//! Local training: minibatch SGD with momentum or Adam on candle's autograd, a learning-rate
//! schedule over rounds, deterministic under a seed.

use crate::Error;
use crate::data::{Dataset, PIXELS};
use crate::model::{Model, PIXEL_MEAN, PIXEL_STD};
use candle_core::{DType, Tensor};
use candle_nn::Optimizer as _;
use candle_nn::loss::cross_entropy;
use candle_nn::optim::{AdamW, ParamsAdamW};
use rand::Rng as _;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use std::fmt;
use std::str::FromStr;

/// The optimiser a client runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optim {
    /// SGD with (PyTorch-style) momentum: v ← μv + g, θ ← θ − ηv.
    Sgd {
        /// Momentum μ (0 = plain SGD).
        momentum: f64,
    },
    /// Adam (Kingma and Ba 2015), β = (0.9, 0.999), ε = 1e-8, no weight decay.
    Adam,
}

impl fmt::Display for Optim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Optim::Sgd { momentum } => write!(f, "sgd:{momentum}"),
            Optim::Adam => write!(f, "adam"),
        }
    }
}

impl FromStr for Optim {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Parse { what: "optimiser (sgd[:momentum] | adam)", text: s.to_string() };
        match s.split_once(':') {
            None if s == "adam" => Ok(Optim::Adam),
            None if s == "sgd" => Ok(Optim::Sgd { momentum: 0.0 }),
            Some(("sgd", m)) => {
                let momentum: f64 = m.parse().map_err(|_| bad())?;
                if (0.0..1.0).contains(&momentum) { Ok(Optim::Sgd { momentum }) } else { Err(bad()) }
            }
            _ => Err(bad()),
        }
    }
}

/// Learning rate as a function of the round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The same every round.
    Constant,
    /// Multiplied by `gamma` every `every` rounds.
    Step {
        /// Rounds per step.
        every: u64,
        /// Factor.
        gamma: f64,
    },
    /// Cosine from the base rate at round 0 to `floor` × base at `rounds`.
    Cosine {
        /// Rounds of the whole run.
        rounds: u64,
        /// Final fraction.
        floor: f64,
    },
}

impl Schedule {
    /// The factor applied to the base rate in `round`.
    pub fn factor(&self, round: u64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, gamma } => gamma.powi((round / every.max(1)) as i32),
            Schedule::Cosine { rounds, floor } => {
                let t = (round as f64 / rounds.max(1) as f64).min(1.0);
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = Error;
    /// `constant`, `step:EVERY:GAMMA` (× γ every EVERY rounds, γ in (0, 1]) or
    /// `cosine:ROUNDS:FLOOR` (down to FLOOR × the base rate, FLOOR in [0, 1], at ROUNDS).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Parse {
            what: "learning-rate schedule (constant | step:EVERY:GAMMA | cosine:ROUNDS:FLOOR)",
            text: s.to_string(),
        };
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let (a, b) = (parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(bad());
        }
        let rounds = |x: Option<&str>| x.and_then(|x| x.parse::<u64>().ok()).filter(|n| *n > 0).ok_or_else(bad);
        let fraction = |x: Option<&str>| x.and_then(|x| x.parse::<f64>().ok()).ok_or_else(bad);
        match kind {
            "constant" if a.is_none() => Ok(Schedule::Constant),
            "step" => {
                let (every, gamma) = (rounds(a)?, fraction(b)?);
                if gamma > 0.0 && gamma <= 1.0 { Ok(Schedule::Step { every, gamma }) } else { Err(bad()) }
            }
            "cosine" => {
                let (rounds, floor) = (rounds(a)?, fraction(b)?);
                if (0.0..=1.0).contains(&floor) { Ok(Schedule::Cosine { rounds, floor }) } else { Err(bad()) }
            }
            _ => Err(bad()),
        }
    }
}

/// What a client does in one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Optimiser.
    pub optim: Optim,
    /// Base learning rate.
    pub lr: f64,
    /// Schedule over rounds.
    pub schedule: Schedule,
    /// Minibatch size.
    pub batch: usize,
    /// Optimiser steps per round (a step is one minibatch).
    pub steps: usize,
}

/// How a round of local training went.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Mean training loss over the round's steps.
    pub loss: f64,
    /// Examples processed (steps × batch, fewer for a small client).
    pub samples: usize,
}

/// Normalised pixels of the items `idx` as a `[len, 784]` tensor, with labels (optionally
/// rewritten by `relabel`, for label-flipping and backdoor clients) and an optional pixel
/// transform (the backdoor trigger).
pub fn batch(
    model: &Model,
    data: &Dataset,
    idx: &[usize],
    relabel: &dyn Fn(usize, u8) -> u8,
    pixels: &dyn Fn(usize, &mut [f32]),
) -> Result<(Tensor, Tensor), Error> {
    let mut x = vec![0f32; idx.len() * PIXELS];
    let mut y = Vec::with_capacity(idx.len());
    for (row, &i) in idx.iter().enumerate() {
        let out = &mut x[row * PIXELS..(row + 1) * PIXELS];
        for (o, &p) in out.iter_mut().zip(data.image(i)) {
            *o = f32::from(p) / 255.0;
        }
        pixels(i, out);
        for o in out.iter_mut() {
            *o = (*o - PIXEL_MEAN) / PIXEL_STD;
        }
        y.push(u32::from(relabel(i, data.labels[i])));
    }
    let dev = model.device();
    let dtype = model.vars().first().map_or(DType::F32, |v| v.dtype());
    Ok((Tensor::from_vec(x, (idx.len(), PIXELS), dev)?.to_dtype(dtype)?, Tensor::from_vec(y, idx.len(), dev)?))
}

/// Trains `model` in place for one round on the items `idx` of `data`: `cfg.steps` minibatches
/// drawn without replacement from a shuffled pass (reshuffled when a pass ends).
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &Model,
    data: &Dataset,
    idx: &[usize],
    cfg: &Config,
    round: u64,
    rng: &mut ChaCha20Rng,
    relabel: &dyn Fn(usize, u8) -> u8,
    pixels: &dyn Fn(usize, &mut [f32]),
) -> Result<Stats, Error> {
    run(model, data, idx, cfg, round, rng, relabel, pixels, None)
}

/// Like [`train`] on clean data, but only the variables at `vars` (indices into
/// [`Model::vars`]) move: fine-tuning a personal head on a frozen body.
pub fn train_vars(
    model: &Model,
    data: &Dataset,
    idx: &[usize],
    cfg: &Config,
    round: u64,
    rng: &mut ChaCha20Rng,
    vars: &[usize],
) -> Result<Stats, Error> {
    run(model, data, idx, cfg, round, rng, &same_label, &same_pixels, Some(vars))
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &Model,
    data: &Dataset,
    idx: &[usize],
    cfg: &Config,
    round: u64,
    rng: &mut ChaCha20Rng,
    relabel: &dyn Fn(usize, u8) -> u8,
    pixels: &dyn Fn(usize, &mut [f32]),
    only: Option<&[usize]>,
) -> Result<Stats, Error> {
    let trained: Vec<candle_core::Var> = model
        .vars()
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o.contains(i)))
        .map(|(_, v)| v.clone())
        .collect();
    if idx.is_empty() || cfg.batch == 0 || cfg.steps == 0 {
        return Ok(Stats::default());
    }
    let lr = cfg.lr * cfg.schedule.factor(round);
    let mut order: Vec<usize> = idx.to_vec();
    order.shuffle(rng);
    let mut at = 0;
    enum State {
        Adam(Box<AdamW>),
        Sgd { momentum: f64, velocity: Vec<Option<Tensor>> },
    }
    let mut opt = match cfg.optim {
        Optim::Adam => State::Adam(Box::new(AdamW::new(
            trained.clone(),
            ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() },
        )?)),
        Optim::Sgd { momentum } => State::Sgd { momentum, velocity: vec![None; trained.len()] },
    };
    let (mut loss_sum, mut samples) = (0f64, 0usize);
    for _ in 0..cfg.steps {
        if at >= order.len() {
            order.shuffle(rng);
            at = 0;
        }
        let end = (at + cfg.batch).min(order.len());
        let (x, y) = batch(model, data, &order[at..end], relabel, pixels)?;
        samples += end - at;
        at = end;
        let loss = cross_entropy(&model.forward(&x)?, &y)?;
        loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = loss.backward()?;
        match &mut opt {
            State::Adam(adam) => adam.step(&grads)?,
            State::Sgd { momentum, velocity } => {
                let momentum = *momentum;
                for (v, vel) in trained.iter().zip(velocity.iter_mut()) {
                    let Some(g) = grads.get(v.as_tensor()) else { continue };
                    let step = match vel.take() {
                        Some(prev) if momentum > 0.0 => ((prev * momentum)? + g)?,
                        _ => g.clone(),
                    };
                    v.set(&(v.as_tensor() - (&step * lr)?)?)?;
                    if momentum > 0.0 {
                        *vel = Some(step);
                    }
                }
            }
        }
    }
    // Touching the rng keeps the stream position independent of how many steps ran.
    let _: u64 = rng.random();
    Ok(Stats { loss: loss_sum / cfg.steps as f64, samples })
}

/// Accuracy and mean loss of `model` on the items `idx` (batches of 500).
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    idx: &[usize],
    relabel: &dyn Fn(usize, u8) -> u8,
    pixels: &dyn Fn(usize, &mut [f32]),
) -> Result<(f64, f64), Error> {
    if idx.is_empty() {
        return Ok((0.0, 0.0));
    }
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    for chunk in idx.chunks(500) {
        let (x, y) = batch(model, data, chunk, relabel, pixels)?;
        let logits = model.forward(&x)?.detach();
        loss_sum += cross_entropy(&logits, &y)?.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
        let pred = logits.argmax(1)?.to_vec1::<u32>()?;
        let want = y.to_vec1::<u32>()?;
        correct += pred.iter().zip(&want).filter(|(a, b)| a == b).count();
    }
    Ok((correct as f64 / idx.len() as f64, loss_sum / idx.len() as f64))
}

/// No relabelling.
pub fn same_label(_: usize, l: u8) -> u8 {
    l
}

/// No pixel change.
pub fn same_pixels(_: usize, _: &mut [f32]) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Mnist;
    use crate::model::Arch;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn loss_falls_on_a_fixed_batch_and_runs_are_deterministic() {
        let m = Mnist::embedded();
        let idx: Vec<usize> = (0..10_000).step_by(157).collect();
        for (arch, optim, lr) in [
            (Arch::MnistMlp, Optim::Sgd { momentum: 0.9 }, 0.05),
            (Arch::MnistCnn, Optim::Adam, 0.003),
            (Arch::MnistMlp, Optim::Sgd { momentum: 0.0 }, 0.1),
        ] {
            let run = || {
                let model = Model::init(arch, 1, &Device::Cpu, DType::F32).expect("init");
                let before = evaluate(&model, &m.train, &idx, &same_label, &same_pixels).expect("eval").1;
                let cfg = Config { optim, lr, schedule: Schedule::Constant, batch: idx.len(), steps: 15 };
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                train(&model, &m.train, &idx, &cfg, 0, &mut rng, &same_label, &same_pixels).expect("train");
                let after = evaluate(&model, &m.train, &idx, &same_label, &same_pixels).expect("eval").1;
                (before, after, model.flat().expect("flat"))
            };
            let (before, after, a) = run();
            assert!(after < 0.5 * before, "{arch} {optim}: loss {before} → {after}");
            let (_, _, b) = run();
            assert_eq!(a, b, "{arch} {optim}: same seed, different parameters");
        }
    }

    #[test]
    fn schedules_and_optimisers_parse_and_decay() {
        assert_eq!(Schedule::Step { every: 10, gamma: 0.5 }.factor(25), 0.25);
        let c = Schedule::Cosine { rounds: 10, floor: 0.1 };
        assert!((c.factor(0) - 1.0).abs() < 1e-12 && (c.factor(10) - 0.1).abs() < 1e-12 && c.factor(5) < c.factor(4));
        assert_eq!("sgd:0.9".parse::<Optim>().expect("sgd"), Optim::Sgd { momentum: 0.9 });
        assert_eq!("adam".parse::<Optim>().expect("adam"), Optim::Adam);
        assert!("sgd:1.5".parse::<Optim>().is_err() && "lbfgs".parse::<Optim>().is_err());
        assert_eq!("constant".parse::<Schedule>().expect("constant"), Schedule::Constant);
        assert_eq!("step:10:0.5".parse::<Schedule>().expect("step"), Schedule::Step { every: 10, gamma: 0.5 });
        assert_eq!("cosine:30:0.1".parse::<Schedule>().expect("cosine"), Schedule::Cosine { rounds: 30, floor: 0.1 });
        for bad in [
            "",
            "cosine",
            "step:0:0.5",
            "step:10:1.5",
            "step:10:0",
            "cosine:30:-0.1",
            "cosine:30:0.1:2",
            "constant:1",
            "linear:3:0.5",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad:?}");
        }
    }
}
