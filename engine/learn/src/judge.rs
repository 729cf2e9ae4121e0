//! An aggregator's judgement of its clients: the anomaly scores of a closed round become
//! signed evidence in its reputation ledger, and the ledger sets each client's weight in later
//! rounds and keeps suspended or banned clients out. The in-process federation and the
//! networked aggregator use the same judge.

use crate::Error;
use crate::federation::{SUSPECT_Z, anomaly_z};
use ed25519_dalek::SigningKey;
use vain_core::NodeId;
use vain_core::ledger::{self, Input, Ledger, Observation, Observed};
use vain_core::signed::Signed;
use vain_kernels::aggregate::Report;

/// One client's verdict for a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The client.
    pub id: NodeId,
    /// Anomaly z: the largest of the three below (infinite for a rejected update).
    pub z: f64,
    /// Robust z of its update's norm.
    pub z_norm: f64,
    /// Robust z of its cosine to the robust centre (low side).
    pub z_cosine: f64,
    /// Robust z of its largest similarity to another update (high side).
    pub z_similarity: f64,
    /// Quality (1 + cosine to the robust centre) / 2, the feedback score (NaN when rejected).
    pub quality: f64,
}

impl Verdict {
    /// Whether the update counts as suspected.
    pub fn suspected(&self) -> bool {
        self.z >= SUSPECT_Z
    }
}

/// The evidence verdicts stand for: per (client, z, quality), participation, the anomaly z and
/// the quality as feedback; an infinite z (a refused update) is an anomaly of z = 100.
pub fn observations(verdicts: &[(NodeId, f64, f64)]) -> Vec<Observation> {
    let mut out = Vec::with_capacity(3 * verdicts.len());
    for &(id, z, quality) in verdicts {
        if z.is_finite() {
            out.push(Observation { subject: id, what: Observed::Participated });
            out.push(Observation { subject: id, what: Observed::Anomaly { z } });
            let score = if quality.is_finite() { quality.clamp(0.0, 1.0) } else { 0.5 };
            out.push(Observation { subject: id, what: Observed::Feedback { score } });
        } else {
            out.push(Observation { subject: id, what: Observed::Anomaly { z: 100.0 } });
        }
    }
    out
}

/// The verdicts of a round's anomaly report on the `accepted` clients (client, index of its
/// update in the report).
fn verdicts(report: &Report, accepted: &[(NodeId, usize)]) -> Vec<Verdict> {
    let reps = &report.updates;
    let zs = anomaly_z(
        &reps.iter().map(|u| u.norm).collect::<Vec<_>>(),
        &reps.iter().map(|u| u.cosine.unwrap_or(1.0)).collect::<Vec<_>>(),
        &reps.iter().map(|u| u.max_similarity.unwrap_or(0.0)).collect::<Vec<_>>(),
    );
    let mut out = Vec::with_capacity(accepted.len());
    for (id, idx) in accepted {
        let Some(pos) = reps.iter().position(|u| u.index == *idx) else { continue };
        let u = &reps[pos];
        let (zn, zc, zsim) = zs[pos];
        let z = zn.max(zc).max(zsim);
        let quality = ((1.0 + u.cosine.unwrap_or(0.0)) / 2.0).clamp(0.0, 1.0);
        out.push(Verdict { id: *id, z, z_norm: zn, z_cosine: zc, z_similarity: zsim, quality });
    }
    out
}

/// The aggregator's judgement as the simulator's ([`vain_core::sim::Judge`], `vain sim`): each
/// simulated round's updates go through a real aggregation round on the CPU backend — FedAvg
/// with the full anomaly report, as the coordinator runs it — and the same verdicts and
/// [`observations`] a networked aggregator reports. A poisoner is flagged only when this code
/// sees it.
pub struct Simulated {
    backend: vain_kernels::cpu::CpuBackend,
}

impl Simulated {
    /// A judge on one CPU thread.
    pub fn new() -> Simulated {
        Simulated { backend: vain_kernels::cpu::CpuBackend::new(1) }
    }
}

impl Default for Simulated {
    fn default() -> Self {
        Self::new()
    }
}

impl vain_core::sim::Judge for Simulated {
    fn judge(&mut self, subjects: &[NodeId], updates: &[Vec<f32>]) -> Vec<Observation> {
        use vain_kernels::aggregate::{Config, Round, Rule};
        use vain_kernels::backend::{Segment, Update};
        use vain_kernels::decode::Encoding;
        let Some(dim) = updates.first().map(Vec::len) else { return Vec::new() };
        let cfg = Config { max_updates: updates.len(), full_report: true, ..Config::new(dim, Rule::FedAvg) };
        let outcome = Round::new(&mut self.backend, cfg).and_then(|mut round| {
            let mut accepted = Vec::with_capacity(updates.len());
            for (id, u) in subjects.iter().zip(updates) {
                let bytes: Vec<u8> = u.iter().flat_map(|x| x.to_le_bytes()).collect();
                let segment = Segment { offset: 0, numel: u.len(), encoding: Encoding::DenseF32, bytes: &bytes };
                accepted.push((*id, round.ingest(&Update { segments: &[segment] }, 1.0)?));
            }
            Ok((round.finish()?, accepted))
        });
        // The simulator builds these updates itself (finite, one dimension, within the
        // round's bounds): a failure is a bug in it, not bad input.
        let (o, accepted) = outcome.expect("the simulator's updates aggregate");
        let v: Vec<(NodeId, f64, f64)> =
            verdicts(&o.report, &accepted).iter().map(|v| (v.id, v.z, v.quality)).collect();
        observations(&v)
    }
}

/// A ledger seen from one aggregator, which is its pre-trusted reporter.
pub struct Judge {
    ledger: Ledger,
    key: SigningKey,
    reputation: bool,
}

impl Judge {
    /// A judge reporting as `key`; without `reputation` every client weighs by its examples
    /// alone and no one is kept out.
    pub fn new(key: SigningKey, reputation: bool, now: u64) -> Judge {
        let ledger = Ledger::new(
            ledger::Config { pretrusted: vec![key.verifying_key().to_bytes()], ..ledger::Config::default() },
            now,
        );
        Judge { ledger, key, reputation }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Adds a client the ledger does not know yet.
    pub fn join(&mut self, id: NodeId, now: u64) {
        if self.ledger.record(&id).is_none() {
            self.ledger.join(id, now);
        }
    }

    /// Whether `id` may take part (not suspended or banned).
    pub fn allowed(&self, id: &NodeId, now: u64) -> bool {
        !self.reputation || self.ledger.tier(id, now) > 0
    }

    /// Each client's weight factor: score ÷ the best score, halved per past suspension
    /// (probation); equal before any evidence.
    pub fn factors(&self, ids: &[NodeId]) -> Vec<(NodeId, f32)> {
        let best = ids.iter().filter_map(|id| self.ledger.record(id).map(|r| r.score)).fold(0f64, f64::max);
        ids.iter()
            .map(|id| {
                let rec = self.ledger.record(id);
                let s = rec.map_or(0.0, |r| r.score);
                // A suspension pays off the penalty points, so a client back from one starts a
                // fresh count: it is on probation, its weight halved per past suspension.
                let probation = 0.5f64.powi(rec.map_or(0, |r| r.suspensions).min(30) as i32);
                let f = if !self.reputation || best <= 0.0 { 1.0 } else { (s / best * probation).max(0.01) };
                (*id, f as f32)
            })
            .collect()
    }

    /// Scores a closed round: `accepted` maps clients to their update's index in `report`
    /// (`None` when no round could be closed), `rejected` lists clients whose update was
    /// refused. With reputation on, the evidence goes to the ledger as a signed report for
    /// `epoch` at `now`.
    pub fn observe(
        &mut self,
        epoch: u64,
        now: u64,
        report: Option<&Report>,
        accepted: &[(NodeId, usize)],
        rejected: &[NodeId],
    ) -> Result<Vec<Verdict>, Error> {
        let mut verdicts = report.map(|r| verdicts(r, accepted)).unwrap_or_default();
        for id in rejected {
            let nan = f64::NAN;
            verdicts.push(Verdict {
                id: *id,
                z: f64::INFINITY,
                z_norm: nan,
                z_cosine: nan,
                z_similarity: nan,
                quality: nan,
            });
        }
        self.apply(epoch, now, verdicts.iter().map(|v| (v.id, v.z, v.quality)))?;
        Ok(verdicts)
    }

    /// Records verdicts as evidence: for each (client, z, quality), participation, the anomaly
    /// z and the quality as feedback; an infinite z (a refused update) counts as z = 100. A
    /// follower applies the verdicts its leader published, so their ledgers agree.
    pub fn apply(
        &mut self,
        epoch: u64,
        now: u64,
        verdicts: impl Iterator<Item = (NodeId, f64, f64)>,
    ) -> Result<(), Error> {
        let verdicts: Vec<(NodeId, f64, f64)> = verdicts.collect();
        for (id, _, _) in &verdicts {
            self.join(*id, now);
        }
        let observations = observations(&verdicts);
        if self.reputation && !observations.is_empty() {
            let report = Signed::sign(&self.key, ledger::Report { epoch, observations, governance: Vec::new() });
            // The judge is pre-trusted, so its report is accepted; an error here is a bug in
            // how the report was built.
            self.ledger
                .handle(now, Input::Report(report))
                .map_err(|_| Error::Config("the ledger refused the aggregator's report"))?;
        }
        Ok(())
    }

    /// Advances the ledger's clock (suspensions expire, scores decay).
    pub fn tick(&mut self, now: u64) {
        self.ledger.tick(now);
        while self.ledger.poll().is_some() {}
    }
}
