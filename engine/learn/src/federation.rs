//! A whole federation in one process: clients train on their partitions, honest or attacking,
//! encode and sign their updates exactly as the network path sends them, and one aggregator
//! checks, aggregates (any rule, clipping, DP noise) and signs the round; its anomaly report
//! becomes signed evidence in the reputation ledger, and the ledger sets each client's weight
//! and excludes suspended or banned clients in later rounds.
//!
//! Each round, for every client allowed to take part:
//!
//! 1. start from the global model, train locally (label-flip and backdoor clients on poisoned
//!    data), update = local − global;
//! 2. attackers transform their update (attack module); ALIE and IPM attackers first see the
//!    honest updates of the round, as in their papers;
//! 3. encode (top-k keeps its error feedback per client across rounds), zstd, sign and frame
//!    with `vain_ingest::update::Encoder`;
//! 4. the aggregator runs every frame through `vain_ingest::Ingest` (frame, header, digest,
//!    signature, replay, allow-list, layout, values), weighted by reputation, and closes the
//!    round with the rule, clipping and noise on the chosen kernel backend;
//! 5. global ← global + η·aggregate (η = 1, or the Reptile step ε);
//! 6. the aggregator signs a ledger report: every accepted client participated, each one's
//!    anomaly z (robust z of its norm, or of its cosine to the robust centre, whichever is
//!    larger) and a quality score (1 + cosine)/2; rejected updates count as anomalies; the ledger
//!    ticks one virtual hour.
//!
//! The ledger's score then weighs each client's next update (weight = examples × score ÷ the
//! best score), and its suspensions and bans keep clients out.

use crate::Error;
use crate::attack::{self, Attack, Plan};
use crate::client;
use crate::data::{Dataset, Mnist};
use crate::judge::Judge;
use crate::model::{self, Arch, Model};
use crate::partition::{self, Scheme};
use crate::train::{self, same_label, same_pixels};
use candle_core::{DType, Device};
use ed25519_dalek::SigningKey;
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vain_core::ledger::Ledger;
use vain_core::{HOUR, NodeId};
use vain_ingest::update::{Encoder, Round as UpdateRound, Tensor as UpdateTensor};
use vain_ingest::{Config as IngestConfig, Ingest};
use vain_kernels::aggregate::{Config as RoundConfig, Noise, Pre, Rule};
use vain_kernels::backend::Backend;
use vain_kernels::encode::Codec;
use vain_kernels::philox;
use vain_kernels::privacy;
use vain_kernels::reference::median64;
use vain_schema::Limits;

/// Virtual time between rounds in the ledger.
pub const ROUND_TIME: u64 = HOUR;
/// z from which an update counts as suspected (the ledger's anomaly threshold).
pub const SUSPECT_Z: f64 = 3.5;
/// δ of the (ε, δ) reported when noise is added.
pub const DELTA: f64 = 1e-5;

/// Everything a simulated federation needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Model.
    pub arch: Arch,
    /// Clients.
    pub clients: usize,
    /// Fraction of clients that attack (rounded down).
    pub malicious: f64,
    /// What the attackers do.
    pub plan: Plan,
    /// Aggregation rule.
    pub rule: Rule,
    /// Pre-aggregation steps before the rule (NNM, bucketing, ARC).
    pub pre: Vec<Pre>,
    /// How the training data is spread.
    pub partition: Scheme,
    /// Rounds.
    pub rounds: u64,
    /// Local training.
    pub train: train::Config,
    /// Wire encoding of updates.
    pub codec: Codec,
    /// zstd level for update payloads.
    pub zstd: Option<i32>,
    /// Per-update L2 clip.
    pub clip: Option<f32>,
    /// DP noise multiplier σ (needs `clip`).
    pub noise_multiplier: Option<f32>,
    /// Reputation sets weights and exclusions.
    pub reputation: bool,
    /// Server step η: global ← global + η·aggregate (Reptile's outer step; 1 = plain).
    pub server_lr: f64,
    /// Head fine-tuning steps per round for each client's personal head (0 = off).
    pub personal_steps: usize,
    /// Fraction of each client's items held out for its own evaluation.
    pub holdout: f64,
    /// Global test items held out of training when the data has no test set.
    pub test_size: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Worker threads training clients concurrently (0 = one per core).
    pub threads: usize,
}

impl Config {
    /// Defaults for `arch` and `clients`.
    pub fn new(arch: Arch, clients: usize) -> Config {
        Config {
            arch,
            clients,
            malicious: 0.0,
            plan: Plan::One(Attack::SignFlip),
            rule: Rule::FedAvg,
            pre: Vec::new(),
            partition: Scheme::Dirichlet(0.5),
            rounds: 30,
            train: train::Config {
                optim: train::Optim::Sgd { momentum: 0.9 },
                lr: 0.05,
                schedule: train::Schedule::Constant,
                batch: 32,
                steps: 10,
            },
            codec: Codec::F32,
            zstd: None,
            clip: None,
            noise_multiplier: None,
            reputation: true,
            server_lr: 1.0,
            personal_steps: 0,
            holdout: 0.2,
            test_size: 2000,
            seed: 1,
            threads: 0,
        }
    }

    /// Number of attackers.
    pub fn attackers(&self) -> usize {
        ((self.clients as f64) * self.malicious).floor() as usize
    }
}

/// One client as the round table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    /// Index.
    pub index: usize,
    /// Its attack, if it is malicious.
    pub attack: Option<Attack>,
    /// Share of the round's total weight (0 when it did not contribute).
    pub weight: f64,
    /// Ledger tier after the round (0 = suspended or banned).
    pub tier: u8,
    /// Ledger score after the round.
    pub score: f64,
    /// Anomaly z this round, the larger of the two below (NaN when it did not take part;
    /// infinite when its update was rejected).
    pub z: f64,
    /// Robust z of its update's norm.
    pub z_norm: f64,
    /// Robust z of its update's cosine to the robust centre (low side).
    pub z_cosine: f64,
    /// Robust z of its update's largest similarity to another update (high side).
    pub z_similarity: f64,
    /// active | suspended | banned.
    pub status: &'static str,
}

/// What one round did.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRow {
    /// Round number (from 0).
    pub round: u64,
    /// Global model accuracy on the global test split.
    pub accuracy: f64,
    /// Its mean cross-entropy.
    pub loss: f64,
    /// Mean accuracy of the honest clients' personalised models on their held-out splits.
    pub personal_accuracy: Option<f64>,
    /// Mean accuracy of the global model on the honest clients' held-out splits.
    pub local_accuracy: f64,
    /// Updates the aggregator accepted.
    pub accepted: usize,
    /// Updates it rejected (any check).
    pub rejected: usize,
    /// Clients whose update had z ≥ [`SUSPECT_Z`].
    pub suspected: Vec<usize>,
    /// Clients kept out by the ledger (suspended or banned) this round.
    pub excluded: usize,
    /// Share of triggered test images (true label ≠ target) classified as the target.
    pub backdoor_success: Option<f64>,
    /// ε spent so far (δ = [`DELTA`]) when noise is added.
    pub epsilon: Option<f64>,
    /// Per client.
    pub clients: Vec<ClientRow>,
    /// Examples trained on this round.
    pub samples: usize,
    /// Time in local training.
    pub train_time: Duration,
    /// Time in everything else (attacks, encoding, signing, checks, aggregation, ledger).
    pub other_time: Duration,
    /// Time evaluating.
    pub eval_time: Duration,
}

/// A client's trained update: (client index, update, examples, training time).
type Trained = (usize, Vec<f32>, usize, Duration);

struct Client {
    key: SigningKey,
    id: NodeId,
    train: Vec<usize>,
    held: Vec<usize>,
    attack: Option<Attack>,
    encoder: Encoder,
    rng: ChaCha20Rng,
    head: Option<Vec<f32>>,
}

/// The data of a federation: every item, the shared test split, each client's (training,
/// held-out) items and who attacks with what. `vain train local` uses it to give one client
/// exactly the data it has in the simulator.
#[derive(Debug, Clone)]
pub struct Split {
    /// Every item (training and test).
    pub data: Dataset,
    /// The global test items.
    pub test: Vec<usize>,
    /// Per client: training items and held-out items.
    pub clients: Vec<(Vec<usize>, Vec<usize>)>,
    /// Per client: its attack, if malicious.
    pub attack_of: Vec<Option<Attack>>,
}

/// Splits `data` (the embedded digits when `None`) as `cfg` says, from `cfg.seed`.
pub fn split(cfg: &Config, data: Option<Mnist>) -> Result<Split, Error> {
    let mnist = data.unwrap_or_else(Mnist::embedded);
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
    let (data, test, pool): (Dataset, Vec<usize>, Vec<usize>) = match mnist.test {
        Some(t) => {
            let n = mnist.train.len();
            let mut all = mnist.train;
            all.images.extend_from_slice(&t.images);
            all.labels.extend_from_slice(&t.labels);
            let test = (n..all.len()).collect();
            (all, test, (0..n).collect())
        }
        None => {
            let mut idx: Vec<usize> = (0..mnist.train.len()).collect();
            idx.shuffle(&mut rng);
            let k = cfg.test_size.min(idx.len() / 2);
            let test = idx.split_off(idx.len() - k);
            (mnist.train, test, idx)
        }
    };
    let pool_labels: Vec<u8> = pool.iter().map(|&i| data.labels[i]).collect();
    let parts = partition::split(&pool_labels, cfg.clients, cfg.partition, 10, rng.random())?;
    // Attackers are a seeded random subset, not the first indices.
    let mut order: Vec<usize> = (0..cfg.clients).collect();
    order.shuffle(&mut rng);
    let mut attack_of = vec![None; cfg.clients];
    for (k, &c) in order.iter().take(cfg.attackers()).enumerate() {
        attack_of[c] = Some(cfg.plan.for_attacker(k));
    }
    let clients = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let items: Vec<usize> = p.iter().map(|&j| pool[j]).collect();
            partition::hold_out(&items, cfg.holdout, cfg.seed ^ (i as u64 + 1))
        })
        .collect();
    Ok(Split { data, test, clients, attack_of })
}

/// The running federation.
pub struct Federation {
    cfg: Config,
    data: Dataset,
    test: Vec<usize>,
    clients: Vec<Client>,
    global: Vec<f32>,
    judge: Judge,
    aggregator: SigningKey,
    round: u64,
    device: Device,
    last_step: Vec<f32>,
}

fn derive_key(seed: u64, what: &str, i: usize) -> SigningKey {
    let mut h = blake3::Hasher::new_derive_key("vain 2026 simulated federation keys v1");
    h.update(&seed.to_le_bytes());
    h.update(what.as_bytes());
    h.update(&(i as u64).to_le_bytes());
    SigningKey::from_bytes(h.finalize().as_bytes())
}

/// Robust z-scores (x − median)/(1.4826·max(MAD, floor)). The floor keeps a round of a few
/// similar honest updates (MAD near 0) from calling a slightly different one an outlier.
fn robust_z(x: &[f64], floor: f64) -> Vec<f64> {
    if x.is_empty() {
        return Vec::new();
    }
    let m = median64(&mut x.to_vec());
    let mad = median64(&mut x.iter().map(|v| (v - m).abs()).collect::<Vec<_>>()).max(floor);
    x.iter().map(|v| (v - m) / (1.4826 * mad)).collect()
}

/// Floor of the norms' MAD, as a fraction of the median norm.
pub const NORM_MAD_FLOOR: f64 = 1.5;
/// Floor of the cosines' MAD.
pub const COSINE_MAD_FLOOR: f64 = 0.1;
/// Floor of the largest pairwise similarities' MAD.
pub const SIMILARITY_MAD_FLOOR: f64 = 0.1;
/// A largest similarity from which an update counts as a copy of another (z = 10): clients
/// training on their own data do not send updates this close to someone else's.
pub const COPY_SIMILARITY: f64 = 0.99;

/// Each update's (norm z, cosine z, similarity z): the robust z of its norm (both sides; MAD at
/// least [`NORM_MAD_FLOOR`] of the median norm), of its cosine to the robust centre on the low
/// side (MAD at least [`COSINE_MAD_FLOOR`]), and of its largest similarity to another update on
/// the high side (MAD at least [`SIMILARITY_MAD_FLOOR`]; from [`COPY_SIMILARITY`] on, z = 10):
/// copies and colluders' shared vectors. The floors keep honest non-IID spread from looking
/// anomalous (a client holding mostly one class sent 6× the median norm late in a clean run): an
/// update needs a norm about 8.8× the median, or a cosine 0.52 below the median, to reach z = 3.5;
/// magnitude itself is the clip bound's business.
pub fn anomaly_z(norms: &[f64], cosines: &[f64], similarity: &[f64]) -> Vec<(f64, f64, f64)> {
    let zs = robust_z(similarity, SIMILARITY_MAD_FLOOR);
    anomaly_pairs(norms, cosines)
        .into_iter()
        .zip(zs.iter().zip(similarity))
        .map(|((a, b), (z, s))| (a, b, if *s >= COPY_SIMILARITY { z.max(10.0) } else { z.max(0.0) }))
        .collect()
}

fn anomaly_pairs(norms: &[f64], cosines: &[f64]) -> Vec<(f64, f64)> {
    // The upper middle norm (no averaging): the floor's scale, not a statistic that is reported.
    let med_norm = {
        let mut v = norms.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let zn = robust_z(norms, NORM_MAD_FLOOR * med_norm.abs() + f64::MIN_POSITIVE);
    let zc = robust_z(&cosines.iter().map(|c| -c).collect::<Vec<_>>(), COSINE_MAD_FLOOR);
    zn.iter().zip(&zc).map(|(a, b)| (a.abs(), b.max(0.0))).collect()
}

impl Federation {
    /// Sets up the clients, partitions and ledger. `data` is the training set and optional test
    /// set (the embedded digits when `None`).
    pub fn new(cfg: Config, data: Option<Mnist>) -> Result<Federation, Error> {
        if cfg.clients == 0 {
            return Err(Error::Config("a federation needs at least one client"));
        }
        if !(0.0..0.5).contains(&cfg.malicious) {
            return Err(Error::Config("--malicious must be in [0, 0.5)"));
        }
        if cfg.noise_multiplier.is_some() && cfg.clip.is_none() {
            return Err(Error::Config("--noise-multiplier needs --clip"));
        }
        if !(cfg.server_lr.is_finite() && cfg.server_lr > 0.0) {
            return Err(Error::Config("the server step must be positive"));
        }
        let Split { data, test, clients: parts, attack_of } = split(&cfg, data)?;
        let clients = parts
            .into_iter()
            .enumerate()
            .map(|(i, (train, held))| {
                let key = derive_key(cfg.seed, "client", i);
                Client {
                    id: key.verifying_key().to_bytes(),
                    key,
                    train,
                    held,
                    attack: attack_of[i],
                    encoder: Encoder::new(cfg.codec, cfg.zstd),
                    rng: ChaCha20Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64),
                    head: None,
                }
            })
            .collect::<Vec<_>>();
        let aggregator = derive_key(cfg.seed, "aggregator", 0);
        let mut judge = Judge::new(aggregator.clone(), cfg.reputation, 0);
        for c in &clients {
            judge.join(c.id, 0);
        }
        let device = Device::Cpu;
        let global = Model::init(cfg.arch, cfg.seed, &device, DType::F32)?.flat()?;
        Ok(Federation {
            last_step: vec![0.0; global.len()],
            cfg,
            data,
            test,
            clients,
            global,
            judge,
            aggregator,
            round: 0,
            device,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The global model's flat parameters.
    pub fn global(&self) -> &[f32] {
        &self.global
    }

    /// Rounds run so far.
    pub fn rounds_run(&self) -> u64 {
        self.round
    }

    /// Each client's attack (None = honest), by index.
    pub fn attacks(&self) -> Vec<Option<Attack>> {
        self.clients.iter().map(|c| c.attack).collect()
    }

    /// Training items per client.
    pub fn client_sizes(&self) -> Vec<usize> {
        self.clients.iter().map(|c| c.train.len()).collect()
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        self.judge.ledger()
    }

    fn now(&self) -> u64 {
        self.round * ROUND_TIME
    }

    fn allowed(&self, c: &Client) -> bool {
        self.judge.allowed(&c.id, self.now())
    }

    /// Trains one client from the global model: its (honest or poisoned) local update and the
    /// examples it saw.
    fn local_update(&self, model: &Model, c: &mut Client) -> Result<(Vec<f32>, usize, Duration), Error> {
        let start = Instant::now();
        let (u, n) = client::local_update(
            model,
            &self.global,
            &self.data,
            &c.train,
            &self.cfg.train,
            self.round,
            &mut c.rng,
            c.attack,
        )?;
        Ok((u, n, start.elapsed()))
    }

    /// Fine-tunes client `c`'s personal head on its data, from the global body; returns its
    /// accuracy on the client's held-out items.
    fn personalise(&self, model: &Model, c: &mut Client) -> Result<f64, Error> {
        let head = self.cfg.arch.range_of("fc2.");
        let mut flat = self.global.clone();
        if let Some(h) = &c.head {
            flat[head.clone()].copy_from_slice(h);
        }
        model.set_flat(&flat)?;
        let cfg = train::Config { steps: self.cfg.personal_steps, ..self.cfg.train };
        train::train_vars(
            model,
            &self.data,
            &c.train,
            &cfg,
            self.round,
            &mut c.rng,
            &[model.vars().len() - 2, model.vars().len() - 1],
        )?;
        c.head = Some(model.flat()?[head].to_vec());
        Ok(train::evaluate(model, &self.data, &c.held, &same_label, &same_pixels)?.0)
    }

    /// Runs one round on `backend`.
    pub fn run_round(&mut self, backend: &mut dyn Backend) -> Result<RoundRow, Error> {
        let t0 = Instant::now();
        let now = self.now();
        let arch = self.cfg.arch;
        let base = model::digest(&self.global);
        let mut clients = std::mem::take(&mut self.clients);
        let selected: Vec<usize> = (0..clients.len()).filter(|&i| self.allowed(&clients[i])).collect();
        let excluded = clients.len() - selected.len();

        // 1. Local training, clients spread over worker threads (each with its own model).
        let threads = match self.cfg.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(selected.len().max(1));
        let mut work: Vec<(usize, &mut Client)> =
            clients.iter_mut().enumerate().filter(|(i, _)| selected.contains(i)).collect();
        let chunk = work.len().div_ceil(threads).max(1);
        let this = &*self;
        let results: Vec<Result<Vec<Trained>, Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = work
                .chunks_mut(chunk)
                .map(|part| {
                    s.spawn(move || -> Result<Vec<Trained>, Error> {
                        let model = Model::from_flat(arch, &this.global, &this.device, DType::F32)?;
                        let mut out = Vec::with_capacity(part.len());
                        for (i, c) in part.iter_mut() {
                            let (u, n, d) = this.local_update(&model, c)?;
                            out.push((*i, u, n, d));
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(Err(Error::Config("a training thread panicked")))).collect()
        });
        let mut updates: Vec<(usize, Vec<f32>, usize)> = Vec::with_capacity(selected.len());
        let mut samples = 0;
        let mut train_time = Duration::ZERO;
        for r in results {
            for (i, u, n, d) in r? {
                samples += n;
                train_time += d;
                updates.push((i, u, n));
            }
        }
        updates.sort_by_key(|u| u.0);
        let train_wall = t0.elapsed();
        let train_share = if train_time.is_zero() { train_wall } else { train_wall.min(train_time) };

        // 2. Attacks; the colluders see the honest updates of the round.
        let t1 = Instant::now();
        let honest: Vec<&[f32]> =
            updates.iter().filter(|(i, ..)| clients[*i].attack.is_none()).map(|(_, u, _)| u.as_slice()).collect();
        let colluding = updates.iter().any(|(i, ..)| clients[*i].attack.is_some_and(Attack::colludes));
        let (mean, std) =
            if colluding && !honest.is_empty() { attack::mean_std(&honest) } else { (Vec::new(), Vec::new()) };
        let n_attackers = updates.iter().filter(|(i, ..)| clients[*i].attack.is_some()).count();
        let z_alie = attack::alie_z(updates.len(), n_attackers);
        let know = client::Knowledge {
            mean: &mean,
            std: &std,
            z_alie,
            last_step: &self.last_step,
            boost: boost(selected.len(), n_attackers) as f32,
        };
        for (i, u, _) in updates.iter_mut() {
            let c = &mut clients[*i];
            let Some(a) = c.attack else { continue };
            client::poison(a, u, &know, &mut c.rng)?;
        }

        // 3. Encode, sign and frame, as a client sends it.
        let model_id = arch.id().to_string();
        let layout = arch.layout();
        let mut frames = Vec::with_capacity(updates.len());
        for (i, u, n) in &updates {
            let c = &mut clients[*i];
            let mut tensors = Vec::with_capacity(layout.len());
            let mut at = 0;
            for l in &layout {
                let k = l.shape.iter().product::<u64>() as usize;
                tensors.push((l.name.as_str(), l.shape.as_slice(), &u[at..at + k]));
                at += k;
            }
            let t: Vec<UpdateTensor<'_>> =
                tensors.iter().map(|(name, shape, values)| UpdateTensor { name, shape, values }).collect();
            let round = UpdateRound {
                model_id: model_id.clone(),
                round: self.round,
                base_model: base,
                num_examples: (*n).max(1) as u64,
                timestamp_ms: now,
            };
            let nonce: [u8; 16] = c.rng.random();
            frames.push((*i, c.encoder.build(&c.key, &round, nonce, &t)?.frame));
        }

        // 4. The aggregator: checks, reputation weights, rule, noise; a signed result.
        let cfg = IngestConfig {
            limits: Limits::default(),
            model_id,
            round: self.round,
            base_model: base,
            layout,
            aggregation: RoundConfig {
                clip: self.cfg.clip,
                noise: match self.cfg.noise_multiplier {
                    Some(multiplier) => Some(Noise {
                        multiplier,
                        secret: philox::Secret::generate()
                            .map_err(|_| Error::Config("the OS random generator failed"))?,
                    }),
                    None => None,
                },
                round: self.round,
                max_updates: frames.len().max(1),
                full_report: true,
                pre: self.cfg.pre.clone(),
                // Suspended clients are left out: the rule's bound follows who is left.
                fit_rule: true,
                ..RoundConfig::new(arch.dim(), self.cfg.rule)
            },
            replay_window: 4,
        };
        let allowed: BTreeSet<NodeId> = selected.iter().map(|&i| clients[i].id).collect();
        let ids: Vec<NodeId> = selected.iter().map(|&i| clients[i].id).collect();
        let factors = self.judge.factors(&ids);
        let mut ingest =
            Ingest::new(
                backend,
                cfg,
                move |k| {
                    if allowed.contains(k) { Ok(()) } else { Err(vain_ingest::Denied::KeptOut) }
                },
            )?
            .with_weights(|k, examples| examples * factors.iter().find(|(id, _)| id == k).map_or(0.01, |(_, f)| *f));
        let mut accepted_of: Vec<Option<usize>> = vec![None; clients.len()];
        let mut rejected = Vec::new();
        for (i, f) in &frames {
            match ingest.ingest_frame(f) {
                Ok(a) => accepted_of[*i] = Some(a.index),
                Err(_) => rejected.push(*i),
            }
        }
        let accepted = frames.len() - rejected.len();
        let outcome = if accepted > 0 { Some(ingest.finish(&self.aggregator)?.0) } else { None };

        // 5. The server step.
        if let Some(o) = &outcome {
            let eta = self.cfg.server_lr as f32;
            self.last_step = o.aggregate.iter().map(|a| eta * a).collect();
            self.global.iter_mut().zip(&self.last_step).for_each(|(g, s)| *g += s);
        }

        // 6. Evidence → ledger.
        let mut z_of = vec![f64::NAN; clients.len()];
        let mut parts_of = vec![(f64::NAN, f64::NAN, f64::NAN); clients.len()];
        let accepted_ids: Vec<(NodeId, usize)> =
            accepted_of.iter().enumerate().filter_map(|(i, a)| a.map(|idx| (clients[i].id, idx))).collect();
        let rejected_ids: Vec<NodeId> = rejected.iter().map(|&i| clients[i].id).collect();
        let verdicts =
            self.judge.observe(self.round, now, outcome.as_ref().map(|o| &o.report), &accepted_ids, &rejected_ids)?;
        for v in &verdicts {
            if let Some(i) = clients.iter().position(|c| c.id == v.id) {
                z_of[i] = v.z;
                parts_of[i] = (v.z_norm, v.z_cosine, v.z_similarity);
            }
        }
        let suspected: Vec<usize> = (0..clients.len()).filter(|&i| z_of[i] >= SUSPECT_Z).collect();
        self.round += 1;
        let later = self.now();
        self.judge.tick(later);
        let other_time = t1.elapsed();

        // 7. Evaluation.
        let t2 = Instant::now();
        let model = Model::from_flat(arch, &self.global, &self.device, DType::F32)?;
        let (accuracy, loss) = train::evaluate(&model, &self.data, &self.test, &same_label, &same_pixels)?;
        let honest_idx: Vec<usize> = (0..clients.len()).filter(|&i| clients[i].attack.is_none()).collect();
        let mut local_acc = 0.0;
        for &i in &honest_idx {
            local_acc += train::evaluate(&model, &self.data, &clients[i].held, &same_label, &same_pixels)?.0;
        }
        let local_accuracy = local_acc / honest_idx.len().max(1) as f64;
        let backdoor_success = if clients.iter().any(|c| c.attack == Some(Attack::Backdoor)) {
            let victims: Vec<usize> =
                self.test.iter().copied().filter(|&i| self.data.labels[i] != attack::BACKDOOR_TARGET).collect();
            let hit = train::evaluate(&model, &self.data, &victims, &|_, _| attack::BACKDOOR_TARGET, &|_, px| {
                attack::stamp_trigger(px)
            })?
            .0;
            Some(hit)
        } else {
            None
        };
        let personal_accuracy = if self.cfg.personal_steps > 0 {
            let mut sum = 0.0;
            for &i in &honest_idx {
                sum += self.personalise(&model, &mut clients[i])?;
            }
            Some(sum / honest_idx.len().max(1) as f64)
        } else {
            None
        };
        let eval_time = t2.elapsed();

        let epsilon = match self.cfg.noise_multiplier {
            Some(s) => Some(
                privacy::epsilon(
                    selected.len() as f64 / clients.len() as f64,
                    f64::from(s),
                    self.round,
                    DELTA,
                    privacy::DEFAULT_ORDERS,
                )
                .map_err(|_| Error::Config("the privacy accountant refused the parameters"))?
                .epsilon,
            ),
            None => None,
        };
        let total_w: f64 = outcome.as_ref().map_or(0.0, |o| o.report.updates.iter().map(|u| f64::from(u.weight)).sum());
        let rows = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rec = self.judge.ledger().record(&c.id);
                let weight = match (&outcome, accepted_of[i]) {
                    (Some(o), Some(idx)) => {
                        o.report.updates.iter().find(|u| u.index == idx).map_or(0.0, |u| f64::from(u.weight))
                            / total_w.max(f64::MIN_POSITIVE)
                    }
                    _ => 0.0,
                };
                ClientRow {
                    index: i,
                    attack: c.attack,
                    weight,
                    tier: self.judge.ledger().tier(&c.id, later),
                    score: rec.map_or(0.0, |r| r.score),
                    z: z_of[i],
                    z_norm: parts_of[i].0,
                    z_cosine: parts_of[i].1,
                    z_similarity: parts_of[i].2,
                    status: match rec {
                        Some(r) if r.banned => "banned",
                        Some(r) if r.suspended_until.is_some_and(|u| later < u) => "suspended",
                        _ => "active",
                    },
                }
            })
            .collect();
        self.clients = clients;
        Ok(RoundRow {
            round: self.round - 1,
            accuracy,
            loss,
            personal_accuracy,
            local_accuracy,
            accepted,
            rejected: rejected.len(),
            suspected,
            excluded,
            backdoor_success,
            epsilon,
            clients: rows,
            samples,
            train_time: train_share,
            other_time,
            eval_time,
        })
    }
}

/// Model replacement's boost: participants ÷ attackers (Bagdasaryan et al.'s n/η with η = 1,
/// shared among the colluding backdoor clients).
fn boost(participants: usize, attackers: usize) -> usize {
    participants.max(1) / attackers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_replacement_boosts_by_participants_over_attackers() {
        // Twenty participants, six colluding backdoor clients: each boosts by 20 ÷ 6 = 3, so
        // together they carry about n times their update, as in Bagdasaryan et al.
        assert_eq!(boost(20, 6), 3);
        assert_eq!(boost(20, 1), 20);
        assert_eq!(boost(0, 0), 1);
    }

    #[test]
    fn anomaly_scores_tolerate_honest_spread_and_flag_outliers_and_copies() {
        // Norms: 5× the median stays below 3.5 (non-IID clients do that); 10× does not.
        let norms = [1.0, 1.2, 0.8, 1.1, 0.9, 5.0, 10.0];
        let cos = [0.5, 0.6, 0.4, 0.55, 0.45, 0.5, -0.5];
        let sim = [0.3, 0.4, 0.35, 0.5, 0.45, 0.99, 0.995];
        let z = anomaly_z(&norms, &cos, &sim);
        assert!(z[5].0 < SUSPECT_Z && z[6].0 > SUSPECT_Z, "{z:?}");
        assert!(z[..6].iter().all(|(_, c, _)| *c < SUSPECT_Z) && z[6].1 > SUSPECT_Z, "{z:?}");
        assert!(z[..5].iter().all(|(_, _, s)| *s < SUSPECT_Z), "{z:?}");
        assert_eq!((z[5].2, z[6].2), (10.0, 10.0), "copies count as z = 10");
        // A round of near-identical honest updates (MAD ≈ 0) calls nobody an outlier.
        let z = anomaly_z(&[1.0, 1.0, 1.001, 1.0], &[0.9, 0.9, 0.899, 0.9], &[0.5, 0.5, 0.52, 0.5]);
        assert!(z.iter().all(|(a, b, c)| a.max(*b).max(*c) < 1.0), "{z:?}");
    }
}
