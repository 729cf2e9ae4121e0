//! The reputation simulator with the aggregator's own judge: every simulated round's updates
//! go through a real aggregation round and its anomaly report, so poisoners are flagged (or
//! not) by the detector the network runs, and the Sybil ring's challenges are sized to its
//! claim and answered with the machine it really shares.

use vain_core::sim::{self, Behaviour, Options};
use vain_learn::judge::Simulated;

fn opts(nodes: usize, seed: u64, epochs: u32) -> Options {
    Options { epochs, ..Options::new(nodes, seed) }
}

#[test]
fn poisoners_flagged_by_anomaly_evidence_are_suspended_then_banned() {
    let run = sim::run(sim::scenario("poisoner").expect("scenario"), &opts(120, 5, 96), &mut Simulated::new());
    let p: Vec<usize> = run.of(Behaviour::Poisoner).collect();
    assert!(!p.is_empty());
    // Flagged by the real anomaly report, not by a coin: nearly every boosted update, no
    // honest one.
    assert!(run.flagged(Behaviour::Poisoner) >= 0.9, "{}", run.summary());
    assert!(run.flagged(Behaviour::Honest) <= 0.01, "{}", run.summary());
    assert!(p.iter().all(|&i| run.suspended[i] && run.banned[i]), "{}", run.summary());
    assert!(run.of(Behaviour::Honest).all(|i| !run.suspended[i] && !run.banned[i]));
}

#[test]
fn colluding_auditors_below_a_team_majority_cannot_pass_a_poisoner() {
    let run = sim::run(sim::scenario("audit-collusion").expect("scenario"), &opts(150, 6, 48), &mut Simulated::new());
    let poisoners: Vec<usize> = run.of(Behaviour::Poisoner).collect();
    // The backdoor stays inside the honest spread: the anomaly report misses it.
    assert!(run.flagged(Behaviour::Poisoner) <= 0.1, "{}", run.summary());
    let minority = |k: usize, size: usize| 2 * k < size;
    let audited: Vec<_> = run.audits.iter().filter(|a| poisoners.contains(&a.0)).collect();
    assert!(audited.len() >= poisoners.len(), "every poisoner was audited at least once: {:?}", run.audits);
    assert!(audited.iter().any(|a| a.2 > 0), "some teams did include colluders");
    for &&(i, pass, k, size) in &audited {
        assert!(!(pass && minority(k, size)), "node {i} passed with {k} colluders of {size}");
    }
    for &(i, pass, k, size) in run.audits.iter().filter(|a| run.behaviours[a.0] == Behaviour::Honest) {
        assert!(pass || !minority(k, size), "honest node {i} failed with {k} colluders of {size}");
    }
    // Missed by the anomaly report, poisoners are caught by the audits.
    assert!(poisoners.iter().all(|&i| run.suspended[i]), "{}", run.summary());
    assert!(run.of(Behaviour::Honest).all(|i| !run.suspended[i]));
}

#[test]
fn a_thousand_node_mixed_run_keeps_every_property() {
    // Its speed is a benchmark (docs/benchmarks.md, `vain sim --nodes 1000`), not asserted here.
    let run = sim::run(sim::scenario("mixed").expect("scenario"), &opts(1000, 12, 36), &mut Simulated::new());
    assert!(run.of(Behaviour::Sybil).all(|i| run.max_tier[i] == 1));
    assert!(run.of(Behaviour::Honest).all(|i| run.tier2_at[i].is_some() && !run.suspended[i]));
    assert!(run.of(Behaviour::Equivocator).filter(|&i| run.suspended[i]).count() > 0);
    assert!(run.counters.equivocations > 0 && run.counters.proposals[0] > 0);
}
