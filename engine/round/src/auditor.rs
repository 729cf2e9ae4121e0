//! Audits of training work (docs/protocol.md, "Audits of training work").
//!
//! A client keeps, for each of its last rounds, its signed training [`Manifest`] (base
//! checkpoint, the items it trained on and a commitment to their bytes, the round's seed and
//! hyper-parameters, the digest of the update it sent), the update's frame and the aggregator's
//! signed close that accepted it, and gives them to whoever asks ([`Message::Work`]).
//!
//! A node on an audit's team ([`Auditor`]) asks the subject for its work of the audited round,
//! checks that the three agree and are signed by whom they must be (the manifest by the
//! subject, the close by a reporter of its ledger, the update's header by the subject, the
//! update listed in the close), fetches the base checkpoint by digest, re-executes the local
//! training from those signed inputs on the same items, and compares the result with the
//! update the subject sent: it passes when ‖sent − recomputed‖ ≤ [`TOLERANCE`] · ‖recomputed‖.
//! A subject that cannot show its work (no answer within [`PATIENCE`], nothing held, anything
//! inconsistent) fails. When the auditor's own data does not hold the items (a client training
//! on private data), it cannot re-execute and abstains: no verdict.

use crate::msg::{self, Close, Manifest, Message, Work};
use crate::{Error, short};
use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vain_core::NodeId;
use vain_core::audit::Verdict;
use vain_core::signed::Signed;
use vain_learn::data::Dataset;
use vain_learn::model::{Arch, Model};
use vain_learn::{DType, Device, client, train};
use vain_net::node::Handle;

/// Largest ‖sent − recomputed‖ / ‖recomputed‖ that passes: re-execution on another machine
/// (another thread count, another summation order) and the dense wire encodings (f16, bf16,
/// int8 blocks) stay well below it; a poisoned, scaled, stale or made-up update is far above.
pub const TOLERANCE: f64 = 0.05;
/// How long a subject has to answer for its work before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The open audits a node is on the team of: (audit, subject, round).
pub type Assigned = Arc<dyn Fn() -> Vec<([u8; 32], NodeId, u64)> + Send + Sync>;

/// What the auditor needs from its node.
pub struct Config {
    /// The model the federation trains.
    pub arch: Arch,
    /// The data set the clients' items index (the embedded digits, or the node's `[train] data`).
    pub data: Arc<Dataset>,
    /// This node's signing key (it signs verdicts).
    pub key: SigningKey,
    /// The open audits this node is on the team of.
    pub assigned: Assigned,
    /// Whether a key may report in this node's ledger (the close's signer must).
    pub reporter: Arc<dyn Fn(&NodeId) -> bool + Send + Sync>,
    /// Hands a signed verdict to the ledger's pool and the peers.
    pub submit: Arc<dyn Fn(Signed<Verdict>) + Send + Sync>,
}

/// Why an audit failed (or could not be done), for the log and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The re-executed update matches the one sent.
    Matches {
        /// ‖sent − recomputed‖ / ‖recomputed‖.
        relative_error: f64,
    },
    /// It does not.
    Differs {
        /// ‖sent − recomputed‖ / ‖recomputed‖.
        relative_error: f64,
    },
    /// The subject did not show consistent, signed work for the round.
    NoWork(&'static str),
    /// This node cannot re-execute it (its data does not hold the items): no verdict.
    Abstain(&'static str),
}

impl Finding {
    /// The verdict: pass, fail, or none.
    pub fn pass(&self) -> Option<bool> {
        match self {
            Finding::Matches { .. } => Some(true),
            Finding::Differs { .. } | Finding::NoWork(_) => Some(false),
            Finding::Abstain(_) => None,
        }
    }
}

/// Audits finished here (verdict given, or abstained), and those being run.
type Progress = (BTreeSet<[u8; 32]>, BTreeSet<[u8; 32]>);

/// Most audits a node runs at once (each re-executes a client's training).
pub const IN_FLIGHT: usize = 4;

/// Runs the audits assigned to this node, each as its own task (at most [`IN_FLIGHT`] at
/// once), until the runtime stops.
pub async fn run(cfg: Config, net: Handle) {
    let cfg = Arc::new(cfg);
    let state: Arc<std::sync::Mutex<Progress>> = Arc::default();
    let mut first_tried: BTreeMap<[u8; 32], Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let assigned = (cfg.assigned)();
        for (audit, subject, round) in assigned.iter().copied() {
            {
                let Ok(mut s) = state.lock() else { return };
                if s.0.contains(&audit) || s.1.contains(&audit) || s.1.len() >= IN_FLIGHT {
                    continue;
                }
                s.1.insert(audit);
            }
            let since = *first_tried.entry(audit).or_insert_with(Instant::now);
            let (cfg, net, state) = (cfg.clone(), net.clone(), state.clone());
            tokio::spawn(async move {
                let finding = audit_once(&cfg, &net, &subject, round, since).await;
                let Ok(mut s) = state.lock() else { return };
                s.1.remove(&audit);
                // Not reachable yet, or busy: asked again on a later pass.
                let Some(finding) = finding else { return };
                s.0.insert(audit);
                drop(s);
                tracing::info!(audit = %short(&audit), subject = %short(&subject), round, finding = ?finding, "audit");
                if let Some(pass) = finding.pass() {
                    (cfg.submit)(Signed::sign(&cfg.key, Verdict { audit, subject, pass }));
                }
            });
        }
        let open: BTreeSet<[u8; 32]> = assigned.iter().map(|(a, _, _)| *a).collect();
        first_tried.retain(|a, _| open.contains(a));
        if let Ok(mut s) = state.lock()
            && s.0.len() > 4096
        {
            s.0.retain(|a| open.contains(a));
        }
    }
}

/// One attempt at an audit: `None` when the subject is not reachable yet (within
/// [`PATIENCE`] of the first attempt `since`).
async fn audit_once(cfg: &Arc<Config>, net: &Handle, subject: &NodeId, round: u64, since: Instant) -> Option<Finding> {
    let subject = *subject;
    Some(match fetch_work(net, &subject, round).await {
        Ok(work) => match fetch_base(net, &subject, &work.manifest.body.base).await {
            Ok(base) => {
                let c = cfg.clone();
                tokio::task::spawn_blocking(move || judge(&c, &subject, round, &work, &base))
                    .await
                    .unwrap_or(Finding::Abstain("the re-execution panicked"))
            }
            Err(_) if since.elapsed() < PATIENCE => return None,
            Err(_) => Finding::NoWork("base checkpoint unavailable"),
        },
        Err(why) if since.elapsed() >= PATIENCE => Finding::NoWork(why),
        Err(_) => return None,
    })
}

async fn peer_of(net: &Handle, subject: &NodeId) -> Option<vain_net::PeerId> {
    let dir = net.directory().await.ok()?;
    dir.into_iter().find(|e| e.connected && e.announcement.signing_key == *subject).map(|e| e.peer_id)
}

async fn fetch_work(net: &Handle, subject: &NodeId, round: u64) -> Result<Work, &'static str> {
    let peer = peer_of(net, subject).await.ok_or("not connected")?;
    let ask = net.request(peer, Message::Work(round).encode());
    let answer = tokio::time::timeout(Duration::from_secs(20), ask).await.map_err(|_| "no answer")?;
    let bytes = answer.map_err(|_| "no answer")?;
    match Work::decode(&bytes).map_err(|_| "malformed work")? {
        Some(w) => Ok(w),
        None => Err("no work held for the round"),
    }
}

async fn fetch_base(net: &Handle, subject: &NodeId, digest: &vain_schema::Digest) -> Result<Vec<f32>, Error> {
    let peer = peer_of(net, subject).await.ok_or(Error::CheckpointUnavailable(*digest))?;
    let answer = net.request(peer, Message::Fetch(*digest).encode()).await?;
    msg::decode_checkpoint(&answer, digest)
}

/// The audit itself, on the work a subject showed (blocking: it trains).
pub fn judge(cfg: &Config, subject: &NodeId, round: u64, work: &Work, base: &[f32]) -> Finding {
    let m = &work.manifest;
    if m.verify().is_err() || m.signer != *subject {
        return Finding::NoWork("manifest not signed by the subject");
    }
    let close: &Signed<Close> = &work.close;
    if close.verify().is_err() || !(cfg.reporter)(&close.signer) {
        return Finding::NoWork("close not signed by a reporter");
    }
    let (m, c) = (&m.body, &close.body);
    if m.round != round || c.round != round || m.base != c.base || m.model_id != cfg.arch.id() {
        return Finding::NoWork("manifest and close are not of the audited round");
    }
    if !c.accepted.iter().any(|a| a.sender == *subject && a.digest == m.update) {
        return Finding::NoWork("update not accepted in the close");
    }
    let sent = match msg::update_values(&work.frame, cfg.arch, round, &m.base) {
        Ok((sender, digest, dense, values)) if sender == *subject && digest == m.update => {
            if !dense {
                return Finding::Abstain(
                    "a sparse or sign encoding: the sender's error feedback is not in the manifest",
                );
            }
            values
        }
        _ => return Finding::NoWork("update frame does not match the manifest"),
    };
    if m.items.iter().any(|i| *i as usize >= cfg.data.len()) {
        return Finding::Abstain("items outside this node's data");
    }
    let items: Vec<usize> = m.items.iter().map(|i| *i as usize).collect();
    if vain_learn::data::commitment(&cfg.data, &items) != m.data {
        return Finding::Abstain("this node's data does not hold the items");
    }
    let Ok(optim) = m.optim.parse::<train::Optim>() else { return Finding::NoWork("unknown optimiser") };
    let tcfg = train::Config {
        optim,
        lr: m.lr,
        schedule: train::Schedule::Constant,
        batch: m.batch as usize,
        steps: m.steps as usize,
    };
    let recomputed = Model::from_flat(cfg.arch, base, &Device::Cpu, DType::F32).and_then(|model| {
        let mut rng = vain_learn::seeded(m.seed);
        client::local_update(&model, base, &cfg.data, &items, &tcfg, round, &mut rng, None)
    });
    let Ok((v, _)) = recomputed else { return Finding::Abstain("re-execution failed") };
    if v.len() != sent.len() {
        return Finding::NoWork("update of another size");
    }
    let (mut d2, mut v2) = (0f64, 0f64);
    for (s, r) in sent.iter().zip(&v) {
        let d = f64::from(*s) - f64::from(*r);
        d2 += d * d;
        v2 += f64::from(*r) * f64::from(*r);
    }
    let relative_error = d2.sqrt() / v2.sqrt().max(f64::MIN_POSITIVE);
    if relative_error.is_finite() && relative_error <= TOLERANCE {
        Finding::Matches { relative_error }
    } else {
        Finding::Differs { relative_error }
    }
}

/// The manifest a client signs for the update it built in `round`.
#[allow(clippy::too_many_arguments)]
pub fn manifest(
    key: &SigningKey,
    arch: Arch,
    round: u64,
    base: vain_schema::Digest,
    update: vain_schema::Digest,
    data: &Dataset,
    items: &[usize],
    cfg: &train::Config,
    seed: u64,
) -> Signed<Manifest> {
    Signed::sign(
        key,
        Manifest {
            model_id: arch.id().to_string(),
            round,
            base,
            update,
            items: items.iter().map(|i| *i as u32).collect(),
            data: vain_learn::data::commitment(data, items),
            optim: cfg.optim.to_string(),
            lr: cfg.lr * cfg.schedule.factor(round),
            batch: cfg.batch as u64,
            steps: cfg.steps as u64,
            seed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Contribution, Outcome};
    use ed25519_dalek::Signer;
    use vain_ingest::update::{Encoder, Round as UpdateRound};
    use vain_kernels::encode::Codec;

    /// A client's work of round 3: trains honestly (then scales by `scale`), builds the frame
    /// with `codec`, signs the manifest; the aggregator `agg` signs a close accepting it.
    fn work(client: &SigningKey, agg: &SigningKey, data: &Dataset, scale: f32, codec: Codec) -> (Work, Vec<f32>) {
        let arch = Arch::MnistMlp;
        let base = Model::init(arch, 7, &Device::Cpu, DType::F32).expect("model").flat().expect("flat");
        let base_digest = *blake3::hash(&crate::store::bytes_of(&base)).as_bytes();
        let items: Vec<usize> = (100..164).collect();
        let tcfg = train::Config {
            optim: train::Optim::Sgd { momentum: 0.9 },
            lr: 0.05,
            schedule: train::Schedule::Constant,
            batch: 16,
            steps: 3,
        };
        let model = Model::from_flat(arch, &base, &Device::Cpu, DType::F32).expect("model");
        let mut rng = vain_learn::seeded(99);
        let (mut u, n) = client::local_update(&model, &base, data, &items, &tcfg, 3, &mut rng, None).expect("train");
        u.iter_mut().for_each(|x| *x *= scale);
        let layout = arch.layout();
        let tensors = crate::participant::tensors(&layout, &u);
        let round = UpdateRound {
            model_id: arch.id().to_string(),
            round: 3,
            base_model: base_digest,
            num_examples: n as u64,
            timestamp_ms: 1,
        };
        let built = Encoder::new(codec, None)
            .build_with(
                client.verifying_key().to_bytes(),
                &mut |m| Ok(client.sign(m).to_bytes()),
                &round,
                [5; 16],
                &tensors,
            )
            .expect("frame");
        let (header, _) = vain_schema::frame::split(&built.frame, &vain_schema::Limits::default()).expect("split");
        let update = *blake3::hash(header).as_bytes();
        let manifest = manifest(client, arch, 3, base_digest, update, data, &items, &tcfg, 99);
        let close = Close {
            model_id: arch.id().to_string(),
            round: 3,
            base: base_digest,
            checkpoint: [0; 32],
            outcome: Outcome::Aggregated,
            rule: "fedavg".into(),
            root: [0; 32],
            accepted: vec![Contribution { sender: client.verifying_key().to_bytes(), weight: 1.0, digest: update }],
            rejected: Vec::new(),
            missing: Vec::new(),
            suspects: Vec::new(),
            verdicts: Vec::new(),
            noise: None,
            epsilon: f64::NAN,
        };
        (Work { manifest, frame: built.frame, close: Signed::sign(agg, close) }, base)
    }

    fn config(data: Dataset, reporter: NodeId) -> Config {
        Config {
            arch: Arch::MnistMlp,
            data: Arc::new(data),
            key: SigningKey::from_bytes(&[9; 32]),
            assigned: Arc::new(Vec::new),
            reporter: Arc::new(move |k| *k == reporter),
            submit: Arc::new(|_| {}),
        }
    }

    #[test]
    fn honest_work_passes_and_poisoned_forged_or_unprovable_work_does_not() {
        let data = vain_learn::data::Mnist::embedded().train;
        let (client, agg) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let me = client.verifying_key().to_bytes();
        let cfg = config(data.clone(), agg.verifying_key().to_bytes());
        let (honest, base) = work(&client, &agg, &data, 1.0, Codec::F32);
        let f = judge(&cfg, &me, 3, &honest, &base);
        assert!(matches!(f, Finding::Matches { relative_error } if relative_error < 1e-4), "{f:?}");
        // f16 on the wire stays within the tolerance.
        let (half, _) = work(&client, &agg, &data, 1.0, Codec::F16);
        assert_eq!(judge(&cfg, &me, 3, &half, &base).pass(), Some(true));
        // A scaled update is not what the signed inputs give.
        let (scaled, _) = work(&client, &agg, &data, 10.0, Codec::F32);
        assert!(
            matches!(judge(&cfg, &me, 3, &scaled, &base), Finding::Differs { relative_error } if relative_error > 5.0)
        );
        // Another round asked, a close by a non-reporter, another client's manifest.
        assert_eq!(judge(&cfg, &me, 4, &honest, &base).pass(), Some(false));
        let stranger = config(data.clone(), [0; 32]);
        assert_eq!(judge(&stranger, &me, 3, &honest, &base), Finding::NoWork("close not signed by a reporter"));
        let mut forged = honest.clone();
        forged.manifest = Signed::sign(&agg, forged.manifest.body.clone());
        assert_eq!(judge(&cfg, &me, 3, &forged, &base), Finding::NoWork("manifest not signed by the subject"));
        // A manifest that claims other inputs (a different seed) no longer matches the update.
        let mut reseeded = honest.clone();
        let mut m = reseeded.manifest.body.clone();
        m.seed = 100;
        reseeded.manifest = Signed::sign(&client, m);
        assert_eq!(judge(&cfg, &me, 3, &reseeded, &base).pass(), Some(false));
        // An auditor whose data does not hold the items abstains.
        let mut other = data.clone();
        other.labels[120] = (other.labels[120] + 1) % 10;
        assert_eq!(judge(&config(other, agg.verifying_key().to_bytes()), &me, 3, &honest, &base).pass(), None);
        // Top-k carries the sender's error feedback: no verdict.
        let (sparse, _) = work(&client, &agg, &data, 1.0, Codec::TopK { fraction: 0.1, half: false });
        assert_eq!(judge(&cfg, &me, 3, &sparse, &base).pass(), None);
    }
}
