//! Scenarios run in the simulator or on the ledger directly, asserting outcomes. The ones whose
//! updates matter (poisoners) run with the aggregator's judge in vain-learn's tests; these use
//! the blind judge.

use ed25519_dalek::SigningKey;
use vain_core::governance::{Choice, Kind, Outcome, Proposal, Vote};
use vain_core::ledger::{AuditRequest, Config, Error, Input, Ledger, Observation, Observed, Output, Report};
use vain_core::signed::Signed;
use vain_core::sim::{self, Behaviour, Blind, Options};
use vain_core::{HOUR, NodeId, audit};

fn opts(nodes: usize, seed: u64, epochs: u32) -> Options {
    Options { epochs, ..Options::new(nodes, seed) }
}

#[test]
fn a_30_percent_sybil_ring_never_reaches_tier_2_and_honest_nodes_do_within_a_day() {
    for seed in [1, 2, 3] {
        let run = sim::run(sim::scenario("sybil").expect("scenario"), &opts(150, seed, 72), &mut Blind);
        let sybils: Vec<usize> = run.of(Behaviour::Sybil).collect();
        assert!(sybils.len() as f64 >= 0.29 * 150.0);
        assert!(sybils.iter().all(|&i| run.max_tier[i] == 1), "seed {seed}: a Sybil reached tier 2");
        // Challenged together, the ring's members share its one machine: too slow for a
        // challenge sized to each one's claim, they miss its deadline (a failure, as on the
        // network). Honest machines pass theirs.
        let [passed, failed, _] = run.counters.challenges[&Behaviour::Sybil];
        assert!(failed > 10 * passed, "seed {seed}: {}", run.summary());
        let [passed, failed, timed_out] = run.counters.challenges[&Behaviour::Honest];
        assert!(failed + timed_out == 0 && passed > 0, "seed {seed}: {}", run.summary());
        // Configured time: tier 2 needs 6 h in tier 1 (min_time_in_tier) and a score of 0.45;
        // every honest node gets there within 24 virtual hours.
        let late: Vec<usize> = run.of(Behaviour::Honest).filter(|&i| run.tier2_at[i].is_none_or(|e| e > 24)).collect();
        assert!(late.is_empty(), "seed {seed}: honest nodes not at tier 2 by hour 24: {late:?}");
    }
}

#[test]
fn equivocating_voters_are_detected_and_penalised() {
    let run = sim::run(sim::scenario("equivocator").expect("scenario"), &opts(120, 4, 48), &mut Blind);
    let eq: Vec<usize> = run.of(Behaviour::Equivocator).collect();
    assert!(run.counters.equivocations >= eq.len() as u64, "{:?}", run.counters);
    assert!(eq.iter().all(|&i| run.suspended[i]), "every equivocator is suspended");
    let mean = |b| run.of(b).map(|i| run.score[i]).sum::<f64>() / run.of(b).count() as f64;
    assert!(mean(Behaviour::Equivocator) < mean(Behaviour::Honest) / 2.0, "{}", run.summary());
    assert!(run.of(Behaviour::Honest).all(|i| !run.suspended[i]));
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_does_not() {
    let sc = sim::scenario("mixed").expect("scenario");
    let a = sim::run(sc, &opts(80, 9, 24), &mut Blind);
    let b = sim::run(sc, &opts(80, 9, 24), &mut Blind);
    let c = sim::run(sc, &opts(80, 10, 24), &mut Blind);
    assert_eq!(a.history, b.history);
    assert_eq!(a.counters, b.counters);
    assert_eq!(a.score, b.score);
    assert_ne!(a.score, c.score);
}

#[test]
fn partitions_and_loss_slow_honest_nodes_but_do_not_promote_sybils() {
    let mut o = opts(120, 11, 48);
    o.loss = 0.2;
    o.partition = Some((0, 12, 0.4));
    let run = sim::run(sim::scenario("sybil").expect("scenario"), &o, &mut Blind);
    assert!(run.of(Behaviour::Sybil).all(|i| run.max_tier[i] == 1));
    assert!(run.of(Behaviour::Honest).filter(|&i| run.tier2_at[i].is_some()).count() > 0);
    assert!(run.counters.lost > run.counters.sent / 10);
}

// ---- governance and audits on the ledger directly ----

fn key(i: u32) -> SigningKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b[31] = 0x5a;
    SigningKey::from_bytes(&b)
}

/// A ledger where `n` validators may vote with equal weight (tier 1, vote_from 1).
fn voters(n: u32) -> (Ledger, Vec<SigningKey>) {
    let keys: Vec<SigningKey> = (0..n).map(key).collect();
    let cfg = Config {
        pretrusted: keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
        vote_from: 1,
        ..Config::default()
    };
    (Ledger::new(cfg, 0), keys)
}

fn propose(l: &mut Ledger, k: &SigningKey) -> [u8; 32] {
    let p =
        Signed::sign(k, Proposal { kind: Kind::Upgrade { version: "0.2".into() }, opens: 0, closes: HOUR, nonce: 1 });
    let id = p.digest();
    l.handle(0, Input::Propose(p)).expect("propose");
    id
}

#[test]
fn proposals_have_a_bounded_window_and_a_bounded_number_per_proposer() {
    use vain_core::ledger::{Error as LedgerError, MAX_OPEN_PER_PROPOSER, MAX_VOTING_WINDOW};
    let (mut l, keys) = voters(2);
    let p = |nonce, closes| {
        Signed::sign(&keys[0], Proposal { kind: Kind::Upgrade { version: "0.3".into() }, opens: 0, closes, nonce })
    };
    assert_eq!(l.handle(0, Input::Propose(p(0, MAX_VOTING_WINDOW + 1))), Err(LedgerError::BadWindow));
    for n in 0..MAX_OPEN_PER_PROPOSER as u64 {
        l.handle(0, Input::Propose(p(n + 1, HOUR))).expect("within the bound");
    }
    assert_eq!(l.handle(0, Input::Propose(p(99, HOUR))), Err(LedgerError::TooManyOpen));
    // Another proposer is not held back by the first one's.
    let q = Signed::sign(
        &keys[1],
        Proposal { kind: Kind::Upgrade { version: "0.3".into() }, opens: 0, closes: HOUR, nonce: 1 },
    );
    l.handle(0, Input::Propose(q)).expect("another proposer");
}

fn close(l: &mut Ledger) -> Outcome {
    l.tick(HOUR);
    std::iter::from_fn(|| l.poll())
        .find_map(|o| match o {
            Output::ProposalClosed { outcome, .. } => Some(outcome),
            _ => None,
        })
        .expect("closed")
}

#[test]
fn a_proposal_passes_with_honest_two_thirds_and_fails_with_a_third_plus_one_against() {
    // 10 equal voters. 7 honest yes, 3 Byzantine no: 70 % > 2/3 passes.
    let (mut l, keys) = voters(10);
    let id = propose(&mut l, &keys[0]);
    for (i, k) in keys.iter().enumerate() {
        let choice = if i < 7 { Choice::Yes } else { Choice::No };
        l.handle(10, Input::Vote(Signed::sign(k, Vote { proposal: id, choice }))).expect("vote");
    }
    assert_eq!(close(&mut l), Outcome::Passed);

    // 4 Byzantine (one third plus one) vote no: 6/10 yes is not > 2/3.
    let (mut l, keys) = voters(10);
    let id = propose(&mut l, &keys[0]);
    for (i, k) in keys.iter().enumerate() {
        let choice = if i < 6 { Choice::Yes } else { Choice::No };
        l.handle(10, Input::Vote(Signed::sign(k, Vote { proposal: id, choice }))).expect("vote");
    }
    assert_eq!(close(&mut l), Outcome::Rejected);

    // Byzantine voters staying silent cannot block it either when the honest are a quorum.
    let (mut l, keys) = voters(10);
    let id = propose(&mut l, &keys[0]);
    for k in &keys[..6] {
        l.handle(10, Input::Vote(Signed::sign(k, Vote { proposal: id, choice: Choice::Yes }))).expect("vote");
    }
    assert_eq!(close(&mut l), Outcome::Passed);
}

#[test]
fn votes_outside_the_window_or_from_banned_keys_are_refused() {
    let (mut l, keys) = voters(4);
    let id = propose(&mut l, &keys[0]);
    let late = Signed::sign(&keys[1], Vote { proposal: id, choice: Choice::Yes });
    assert!(matches!(l.handle(HOUR, Input::Vote(late)), Err(Error::OutsideWindow { .. })));
    let mut forged = Signed::sign(&keys[1], Vote { proposal: id, choice: Choice::Yes });
    forged.body.choice = Choice::No;
    assert!(matches!(l.handle(10, Input::Vote(forged)), Err(Error::Signature(_))));
    // A passed ban proposal bans, and the banned key gets nothing afterwards.
    let target: NodeId = keys[3].verifying_key().to_bytes();
    let p = Signed::sign(&keys[0], Proposal { kind: Kind::Ban { node: target }, opens: 0, closes: HOUR, nonce: 2 });
    let ban = p.digest();
    l.handle(0, Input::Propose(p)).expect("propose");
    for k in &keys[..3] {
        l.handle(10, Input::Vote(Signed::sign(k, Vote { proposal: ban, choice: Choice::Yes }))).expect("vote");
    }
    l.tick(HOUR);
    assert!(l.is_banned(&target));
    let after = Signed::sign(&keys[3], Report { epoch: 1, observations: vec![], governance: Vec::new() });
    assert_eq!(l.handle(HOUR + 1, Input::Report(after)), Err(Error::Banned));
}

#[test]
fn two_colluders_on_a_team_of_five_cannot_pass_a_bad_node() {
    // Give 12 nodes tier 2 and one subject tier 1, then audit the subject.
    let keys: Vec<SigningKey> = (0..13).map(key).collect();
    let ids: Vec<NodeId> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
    let cfg = Config { pretrusted: ids[..12].to_vec(), ..Config::default() };
    let mut l = Ledger::new(cfg, 0);
    l.join(ids[12], 0);
    for h in 1..=24u64 {
        let obs: Vec<Observation> = ids[..12]
            .iter()
            .flat_map(|s| {
                [
                    Observation { subject: *s, what: Observed::Participated },
                    Observation { subject: *s, what: Observed::ChallengePassed },
                ]
            })
            .collect();
        l.handle(
            h * HOUR - 1,
            Input::Report(Signed::sign(
                &keys[0],
                Report { epoch: h, observations: obs.clone(), governance: Vec::new() },
            )),
        )
        .expect("r");
        l.handle(
            h * HOUR - 1,
            Input::Report(Signed::sign(&keys[1], Report { epoch: h, observations: obs, governance: Vec::new() })),
        )
        .expect("r");
        l.tick(h * HOUR);
    }
    while l.poll().is_some() {}
    assert!(ids[..12].iter().filter(|id| l.tier(id, 24 * HOUR) >= 2).count() >= 5);
    let (audit_id, team) = l.open_audit(ids[12], [3; 32], 24 * HOUR);
    assert_eq!(team.len(), 5);
    let member = |id: &NodeId| keys.iter().position(|k| k.verifying_key().to_bytes() == *id).expect("member");
    // The first two team members collude and pass the node; the other three fail it.
    for (rank, id) in team.iter().enumerate() {
        let pass = rank < 2;
        let v = Signed::sign(&keys[member(id)], audit::Verdict { audit: audit_id, subject: ids[12], pass });
        l.handle(24 * HOUR + 1, Input::Verdict(v)).expect("verdict");
    }
    let decided: Vec<Output> = std::iter::from_fn(|| l.poll()).collect();
    assert!(decided.iter().any(|o| matches!(o, Output::AuditDecided { pass: false, .. })), "{decided:?}");
    assert!(!decided.iter().any(|o| matches!(o, Output::AuditDecided { pass: true, .. })));
    // Any node may ask for an audit; the team comes from the ledger's last state digest.
    let q = Signed::sign(&keys[12], AuditRequest { subject: ids[5], round: 0, nonce: 1 });
    l.handle(24 * HOUR + 1, Input::RequestAudit(q)).expect("request");
    let opened: Vec<Output> = std::iter::from_fn(|| l.poll()).collect();
    assert!(
        opened.iter().any(
            |o| matches!(o, Output::AuditOpened { subject, team, .. } if *subject == ids[5] && !team.contains(&ids[5]))
        ),
        "{opened:?}"
    );
    let again = Signed::sign(&keys[0], AuditRequest { subject: ids[5], round: 0, nonce: 2 });
    assert_eq!(l.handle(24 * HOUR + 2, Input::RequestAudit(again)), Err(Error::AuditOpen));
    // A verdict from outside the team is refused.
    let outsider = (0..12).find(|&i| !team.contains(&ids[i])).expect("outsider");
    let v = Signed::sign(&keys[outsider], audit::Verdict { audit: audit_id, subject: ids[12], pass: true });
    assert_eq!(l.handle(24 * HOUR + 2, Input::Verdict(v)), Err(Error::NotOnTeam));
}

#[test]
fn stake_comes_from_reporters_reading_the_chain_and_round_trips_the_codec() {
    let (mut l, keys) = voters(2);
    let subject = key(77).verifying_key().to_bytes();
    let reporter_id = keys[0].verifying_key().to_bytes();
    let report = |epoch, what| {
        Signed::sign(&keys[0], Report { epoch, observations: vec![Observation { subject, what }], governance: vec![] })
    };
    let r = report(0, Observed::Staked { total: 10_000 });
    // The wire form carries the stake exactly.
    let mut wire = Vec::new();
    vain_core::codec::encode_signed(&r, &mut wire);
    let back = vain_core::codec::decode_signed::<Report>(&mut vain_core::codec::Reader::new(&wire)).expect("decode");
    assert_eq!(back.body.observations[0].what, Observed::Staked { total: 10_000 });
    l.handle(HOUR, Input::Report(r)).expect("apply");
    assert_eq!(l.record(&subject).expect("record").stake, 10_000);
    // A later read replaces it (unstaked, or slashed by governance).
    l.handle(2 * HOUR, Input::Report(report(1, Observed::Staked { total: 6_000 }))).expect("apply");
    assert_eq!(l.record(&subject).expect("record").stake, 6_000);
    // A reporter's word about its own stake is not taken.
    let own = Signed::sign(
        &keys[0],
        Report {
            epoch: 2,
            observations: vec![Observation { subject: reporter_id, what: Observed::Staked { total: 1 << 40 } }],
            governance: vec![],
        },
    );
    l.handle(3 * HOUR, Input::Report(own)).expect("apply");
    assert_eq!(l.record(&reporter_id).map_or(0, |r| r.stake), 0);
}

#[test]
fn a_carried_testimony_applies_once_in_its_reporters_order_and_only_from_a_reporter() {
    use vain_core::ledger::Governed;
    let (mut l, keys) = voters(2);
    let (carrier, validator) = (&keys[0], &keys[1]);
    let node = key(40);
    let subject = node.verifying_key().to_bytes();
    // A failure carries the subject's admission to the testifier's task of that epoch.
    let testimony = |k: &SigningKey, epoch, what| {
        let governance = if what == Observed::ChallengeFailed { vec![admission(k, &node, epoch)] } else { vec![] };
        Signed::sign(k, Report { epoch, observations: vec![Observation { subject, what }], governance })
    };
    let carry = |epoch, t: Vec<Signed<Report>>| {
        Input::Report(Signed::sign(
            carrier,
            Report { epoch, observations: vec![], governance: t.into_iter().map(Governed::Testimony).collect() },
        ))
    };
    let penalty = |l: &Ledger, at| l.evidence(&subject, at).map_or(0.0, |e| e.1);
    let failed = testimony(validator, 3, Observed::ChallengeFailed);
    l.handle(HOUR, carry(0, vec![failed.clone()])).expect("apply");
    let once = penalty(&l, HOUR);
    assert!((once - 0.15).abs() < 1e-9, "{once}");
    assert_eq!(l.testified(&validator.verifying_key().to_bytes()), Some(3));
    // Carried again (a replaying carrier), or an older epoch: nothing changes.
    let before = l.digest();
    l.handle(HOUR, carry(1, vec![failed.clone(), testimony(validator, 2, Observed::ChallengeFailed)])).expect("apply");
    assert!((penalty(&l, HOUR) - once).abs() < 1e-9);
    // Only the carrier's own (empty) report changed nothing either: the state is the same.
    assert_eq!(l.digest(), before);
    assert_eq!(l.handle(HOUR, Input::Testimony(failed)), Err(Error::Stale));
    // A newer epoch applies.
    l.handle(HOUR, carry(2, vec![testimony(validator, 4, Observed::ChallengePassed)])).expect("apply");
    let (means, _) = l.evidence(&subject, HOUR).expect("record");
    assert!(means[0] > 0.0, "a passed challenge is resource evidence: {means:?}");
    // A testimony by a node that may not report, or one that carries other inputs than
    // admissions, is refused.
    let stranger = testimony(&key(90), 9, Observed::ChallengeFailed);
    assert!(matches!(l.handle(HOUR, Input::Testimony(stranger)), Err(Error::NotEligible { .. })));
    let carrying = Signed::sign(
        validator,
        Report {
            epoch: 9,
            observations: vec![],
            governance: vec![Governed::Testimony(testimony(validator, 10, Observed::ChallengeFailed))],
        },
    );
    assert_eq!(l.handle(HOUR, Input::Testimony(carrying)), Err(Error::Unproven));
    // The journal's form of the input round-trips.
    let t = testimony(validator, 11, Observed::Uptime { fraction: 0.5 });
    let mut wire = Vec::new();
    vain_core::codec::encode_input(&Input::Testimony(t.clone()), &mut wire);
    match vain_core::codec::decode_input(&mut vain_core::codec::Reader::new(&wire)).expect("decode") {
        Input::Testimony(back) => assert_eq!(back, t),
        other => panic!("{other:?}"),
    }
}

/// `node`'s signed admission that it gave up a task `validator` labelled `epoch`.
fn admission(validator: &SigningKey, node: &SigningKey, epoch: u64) -> vain_core::ledger::Governed {
    use vain_core::challenge::{GaveUp, Task, sized};
    let task = Task { subject: node.verifying_key().to_bytes(), epoch, challenge: sized(1e6, 2000, 0.5, 7, 1_000) };
    vain_core::ledger::Governed::GaveUp(Signed::sign(node, GaveUp { task: Signed::sign(validator, task) }))
}

#[test]
fn a_testified_failure_counts_only_with_the_subjects_own_admission_once() {
    use vain_core::ledger::{Governed, testimony_checked};
    let (mut l, keys) = voters(2);
    let (carrier, validator) = (&keys[0], &keys[1]);
    let (node, other) = (key(40), key(41));
    let (subject, other_id) = (node.verifying_key().to_bytes(), other.verifying_key().to_bytes());
    let failed = |s| Observation { subject: s, what: Observed::ChallengeFailed };
    let testimony =
        |epoch, observations, governance| Signed::sign(validator, Report { epoch, observations, governance });
    let penalty = |l: &Ledger| l.evidence(&subject, HOUR).map_or(0.0, |e| e.1);
    let refused = |l: &mut Ledger, t: Signed<Report>| {
        let before = l.digest();
        let got = l.handle(HOUR, Input::Testimony(t));
        assert_eq!(l.digest(), before, "nothing of a refused testimony applies");
        got
    };
    // A testifier's word alone: refused whole (the uptime beside it does not apply either).
    let bare =
        testimony(5, vec![failed(subject), Observation { subject: other_id, what: Observed::ChallengePassed }], vec![]);
    assert_eq!(refused(&mut l, bare), Err(Error::Unproven));
    // Admissions that prove nothing here: another node's, for another validator's task, for a
    // task labelled after the testimony, an admission with no failure beside it, two for one.
    for governance in [
        vec![admission(validator, &other, 5)],
        vec![admission(carrier, &node, 5)],
        vec![admission(validator, &node, 6)],
        vec![admission(validator, &node, 5), admission(validator, &other, 5)],
        vec![admission(validator, &node, 4), admission(validator, &node, 5)],
    ] {
        assert_eq!(refused(&mut l, testimony(5, vec![failed(subject)], governance)), Err(Error::Unproven));
    }
    // A task no node works on: a window under a second (an honest node refuses it; one that
    // admitted it would prove nothing), or beyond the dimensions.
    let Governed::GaveUp(g) = admission(validator, &node, 5) else { unreachable!() };
    let mut rushed = g.body.task.body;
    rushed.challenge.deadline = rushed.challenge.issued + vain_core::challenge::MIN_WINDOW - 1;
    let mut wide = g.body.task.body;
    wide.challenge.rows = vain_core::challenge::MAX_SIDE + 1;
    for task in [rushed, wide] {
        let g = vain_core::challenge::GaveUp { task: Signed::sign(validator, task) };
        let t = testimony(5, vec![failed(subject)], vec![Governed::GaveUp(Signed::sign(&node, g))]);
        assert_eq!(refused(&mut l, t), Err(Error::Unproven));
    }
    // A forged admission.
    let Governed::GaveUp(mut forged) = admission(validator, &node, 5) else { unreachable!() };
    forged.signature[0] ^= 1;
    let t = testimony(5, vec![failed(subject)], vec![Governed::GaveUp(forged)]);
    assert!(matches!(refused(&mut l, t), Err(Error::Signature(_))));
    // Proven: applies once; the same admission in a later testimony (its task's epoch is not
    // after the testifier's last) proves nothing.
    l.handle(HOUR, Input::Testimony(testimony(5, vec![failed(subject)], vec![admission(validator, &node, 3)])))
        .expect("apply");
    assert!((penalty(&l) - 0.15).abs() < 1e-9, "{}", penalty(&l));
    let replay = testimony(6, vec![failed(subject)], vec![admission(validator, &node, 3)]);
    assert_eq!(testimony_checked(&replay, l.testified(&validator.verifying_key().to_bytes())), Err(Error::Unproven));
    assert_eq!(refused(&mut l, replay), Err(Error::Unproven));
    // A fresh admission in the window (5, 8] does.
    let next = testimony(8, vec![failed(subject)], vec![admission(validator, &node, 6)]);
    let carried = Signed::sign(
        carrier,
        Report { epoch: 1, observations: vec![], governance: vec![Governed::Testimony(next.clone())] },
    );
    l.handle(HOUR, Input::Report(carried)).expect("apply");
    assert!((penalty(&l) - 0.30).abs() < 1e-9, "{}", penalty(&l));
    // The journal's and the wire's forms keep the proof.
    let mut wire = Vec::new();
    vain_core::codec::encode_input(&Input::Testimony(next.clone()), &mut wire);
    match vain_core::codec::decode_input(&mut vain_core::codec::Reader::new(&wire)).expect("decode") {
        Input::Testimony(back) => assert_eq!(back, next),
        other => panic!("{other:?}"),
    }
    // An admission on its own is no input.
    let alone = Signed::sign(
        carrier,
        Report { epoch: 2, observations: vec![], governance: vec![admission(validator, &node, 8)] },
    );
    let before = penalty(&l);
    l.handle(HOUR, Input::Report(alone)).expect("the report applies");
    assert_eq!(penalty(&l), before);
}

#[test]
fn a_ring_of_two_has_the_machine_its_challenges_need_but_no_work_to_show() {
    // Two identities on one machine are rarely challenged at the same moment: the challenges
    // do not catch them (the simulator does not rig them), the missing work does.
    let sc = sim::Scenario {
        name: "ring-of-two",
        about: "two Sybil identities sharing one machine",
        mix: &[(Behaviour::Sybil, 0.02)],
        ..*sim::scenario("sybil").expect("scenario")
    };
    let run = sim::run(&sc, &opts(100, 21, 48), &mut Blind);
    let ring: Vec<usize> = run.of(Behaviour::Sybil).collect();
    assert_eq!(ring.len(), 2);
    let [passed, failed, _] = run.counters.challenges[&Behaviour::Sybil];
    assert!(passed > failed, "{}", run.summary());
    assert!(ring.iter().all(|&i| run.max_tier[i] == 1), "{}", run.summary());
}

#[test]
fn a_reporter_that_signs_two_reports_for_one_epoch_is_suspended_by_the_proof() {
    use vain_core::codec::{Reader, decode_governed, decode_input, encode_governed, encode_input};
    use vain_core::ledger::{FORK_AHEAD, Fork, Governed};
    let (mut l, keys) = voters(2);
    let (cheat, carrier) = (&keys[0], &keys[1]);
    let cheat_id = cheat.verifying_key().to_bytes();
    let subject = key(50).verifying_key().to_bytes();
    let report = |k: &SigningKey, epoch, what| Signed::sign(k, Report::new(epoch, vec![Observation { subject, what }]));
    let (a, b) = (report(cheat, 3, Observed::Participated), report(cheat, 3, Observed::Missed));
    // Either order builds the same proof.
    let proof = Fork::new(&a, &b);
    assert_eq!(proof, Fork::new(&b, &a));
    assert_eq!(proof.check(), Ok(3));
    assert!(l.may_report(&cheat_id, HOUR));
    let carry = |epoch, g: Vec<Governed>| {
        Input::Report(Signed::sign(carrier, Report { epoch, observations: vec![], governance: g }))
    };
    l.handle(HOUR, carry(0, vec![Governed::Fork(Box::new(proof.clone()))])).expect("apply");
    assert_eq!(l.record(&cheat_id).map(|r| r.forked.clone()), Some(vec![3]));
    let mut forked = 0;
    l.tick(HOUR);
    while let Some(o) = l.poll() {
        if let Output::Forked { node, epoch } = o {
            assert_eq!((node, epoch), (cheat_id, 3));
            forked += 1;
        }
    }
    assert_eq!(forked, 1);
    // Suspended at the epoch's tick: pre-trusted or not, its reports no longer count.
    let rec = l.record(&cheat_id).expect("record");
    assert_eq!(rec.suspensions, 1);
    assert!(rec.suspended_until.is_some_and(|u| u > HOUR));
    assert!(!l.may_report(&cheat_id, HOUR));
    assert!(matches!(l.handle(HOUR, Input::Report(report(cheat, 4, Observed::Missed))), Err(Error::Suspended { .. })));
    // The same proof again penalises no further; a proof for another epoch does, suspended or not
    // (a penalty at one epoch buys no immunity at the others).
    let before = l.digest();
    assert_eq!(l.handle(HOUR, Input::Fork(Box::new(proof.clone()))), Err(Error::Stale));
    assert_eq!(l.digest(), before);
    let older = Fork::new(&report(cheat, 2, Observed::Participated), &report(cheat, 2, Observed::Missed));
    l.handle(HOUR, Input::Fork(Box::new(older))).expect("another epoch");
    assert_eq!(l.record(&cheat_id).map(|r| r.forked.clone()), Some(vec![2, 3]));
    // Nobody takes a penalty for a far-future epoch now (to make its later proofs stale), and a
    // key that is no reporter cannot be convicted (nor grow the ledger by it).
    let far = 1 + FORK_AHEAD + 1;
    let future = Fork::new(&report(cheat, far, Observed::Participated), &report(cheat, far, Observed::Missed));
    assert_eq!(l.handle(HOUR, Input::Fork(Box::new(future))), Err(Error::Value { field: "fork.epoch" }));
    let stranger = key(77);
    let nobody = Fork::new(&report(&stranger, 1, Observed::Participated), &report(&stranger, 1, Observed::Missed));
    assert_eq!(nobody.check(), Ok(1));
    assert!(matches!(l.handle(HOUR, Input::Fork(Box::new(nobody))), Err(Error::NotEligible { .. })));
    assert!(l.record(&stranger.verifying_key().to_bytes()).is_none());
    // What is not a proof: one report twice, two signers, two epochs, a forged signature, the
    // wrong order, a body too short to hold an epoch.
    let same = Fork { signer: cheat_id, reports: [proof.reports[0].clone(), proof.reports[0].clone()] };
    assert_eq!(same.check(), Err(Error::Value { field: "fork.order" }));
    let two_signers = Fork::new(&report(cheat, 5, Observed::Missed), &report(carrier, 5, Observed::Participated));
    assert!(matches!(two_signers.check(), Err(Error::Signature(_))));
    let two_epochs = Fork::new(&report(cheat, 5, Observed::Missed), &report(cheat, 6, Observed::Missed));
    assert_eq!(two_epochs.check(), Err(Error::Value { field: "fork.epoch" }));
    let mut forged = report(cheat, 7, Observed::Missed);
    forged.body.observations[0].what = Observed::Participated;
    let forged = Fork::new(&forged, &report(cheat, 7, Observed::Missed));
    assert!(matches!(forged.check(), Err(Error::Signature(_))));
    assert!(matches!(l.handle(HOUR, Input::Fork(Box::new(forged))), Err(Error::Signature(_))));
    let swapped = Fork { signer: cheat_id, reports: [proof.reports[1].clone(), proof.reports[0].clone()] };
    assert_eq!(swapped.check(), Err(Error::Value { field: "fork.order" }));
    let short = Fork { signer: cheat_id, reports: [(vec![1, 2], [0; 64]), (vec![3], [0; 64])] };
    assert!(short.check().is_err());
    // The wire and journal forms round-trip whatever the reports carry — governance, even
    // another proof: the proof keeps their signed bytes and decodes none of it.
    let carrying = |epoch, g| Signed::sign(cheat, Report { epoch, observations: vec![], governance: g });
    let testimony = Governed::Testimony(report(carrier, 9, Observed::ChallengeFailed));
    let inner = Governed::Fork(Box::new(proof.clone()));
    let deep = Fork::new(&carrying(8, vec![testimony, inner]), &carrying(8, vec![]));
    assert_eq!(deep.check(), Ok(8));
    let g = Governed::Fork(Box::new(deep.clone()));
    let mut wire = Vec::new();
    encode_governed(&g, &mut wire);
    assert_eq!(decode_governed(&mut Reader::new(&wire)), Ok(g.clone()));
    let mut journal = Vec::new();
    encode_input(&Input::Fork(Box::new(deep)), &mut journal);
    assert!(matches!(decode_input(&mut Reader::new(&journal)), Ok(Input::Fork(f)) if f.check() == Ok(8)));
    // A body length past the end is refused before anything is allocated.
    let mut bad = wire.clone();
    bad[1 + 32..1 + 32 + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode_governed(&mut Reader::new(&bad)).is_err());
    // And a body larger than any report a node takes, even when the bytes are there.
    let huge = Fork { signer: cheat_id, reports: [(vec![0; (4 << 20) + 1], [0; 64]), (vec![1; 8], [0; 64])] };
    let mut wire = Vec::new();
    encode_governed(&Governed::Fork(Box::new(huge)), &mut wire);
    assert!(matches!(
        decode_governed(&mut Reader::new(&wire)),
        Err(vain_core::codec::Error::TooLong { field: "fork.body", .. })
    ));
}

#[test]
fn a_report_carrying_only_empty_testimonies_or_trust_vectors_decodes() {
    use vain_core::ledger::{Governed, TrustVector};
    let (k, v) = (key(1), key(2));
    // Ten of each: the count check must not assume more bytes per input than the smallest takes.
    let empty_vector = Governed::Trust(Signed::sign(&v, TrustVector { epoch: 0, edges: vec![] }));
    let mut one = Vec::new();
    vain_core::codec::encode_governed(&empty_vector, &mut one);
    assert_eq!(one.len(), vain_core::codec::MIN_GOVERNED);
    for g in [
        (0..10).map(|e| Governed::Testimony(Signed::sign(&v, Report::new(e, vec![])))).collect::<Vec<_>>(),
        (0..10).map(|e| Governed::Trust(Signed::sign(&v, TrustVector { epoch: e, edges: vec![] }))).collect(),
        vec![Governed::Trust(Signed::sign(
            &v,
            TrustVector { epoch: 3, edges: vec![([7; 32], 0.25), ([8; 32], 0.75)] },
        ))],
    ] {
        let r = Signed::sign(&k, Report { epoch: 0, observations: vec![], governance: g });
        let mut wire = Vec::new();
        vain_core::codec::encode_signed(&r, &mut wire);
        let mut reader = vain_core::codec::Reader::new(&wire);
        assert_eq!(vain_core::codec::decode_signed::<Report>(&mut reader), Ok(r));
        assert_eq!(reader.finish(), Ok(()));
    }
}
