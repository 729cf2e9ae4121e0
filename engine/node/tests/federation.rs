//! The federation over the network, end to end: `vain demo` starts real `vain node` processes
//! which find each other over libp2p, exchange signed opens, receipts and closes, fetch
//! checkpoints by digest and send signed updates over QUIC.
//!
//! 1. Two aggregators, a validator and six clients (one attacking) — ten nodes with the
//!    bootstrap: the
//!    leading aggregator is killed with SIGKILL while a round is open, the standby takes the
//!    round over, and every update the dead leader acknowledged is in the round's result
//!    exactly once; a client is killed and restarted and rejoins; the validator's resource
//!    challenges catch a client that claims 1024 cores; audits of round 0 fail the attacker and
//!    pass an honest client.
//! 2. One aggregator, killed mid-round and restarted: it recovers its journal and the round
//!    closes with every acknowledged update exactly once; the validator, killed and restarted
//!    a round later, fetches the evidence it missed.
//!
//! 3. A Sybil ring of 30 % of the nodes never reaches the voting tier that honest clients
//!    reach.
//! 4. An aggregator that equivocates at a round is convicted by every ledger, replaced by the
//!    standby, and every ledger ends in the same state.
//!
//! The federations run one after the other: on a two-core machine, twenty node processes at
//! once would measure the machine, not the protocol.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `vain demo` with `args` in a fresh directory, rounds closing at `round_time` seconds
/// at the latest; returns the directory (kept while the test reads it), the demo's output
/// directory and its stdout — or `None` when io_uring is missing (counted by the test kit as
/// `what`; a failure under `CI=true`).
fn federation(what: &str, round_time: &str, args: &[&str]) -> Option<(tempfile::TempDir, PathBuf, String)> {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, what, e);
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let stdout = demo(&out, round_time, args);
    Some((dir, out, stdout))
}

/// Runs `vain demo` with `args`, rounds closing at `round_time` seconds at the latest.
fn demo(out: &Path, round_time: &str, args: &[&str]) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let run = Command::new(env!("CARGO_BIN_EXE_vain"))
        .arg("demo")
        .args(args)
        .args(["--backend", "cpu", "--round-time", round_time, "--timeout", "400", "--out"])
        .arg(out)
        .output()
        .expect("run vain demo");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    stdout
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Rows of every aggregator, by round (the closing aggregator's).
fn rounds(out: &Path) -> BTreeMap<u64, Value> {
    let mut by = BTreeMap::new();
    for e in std::fs::read_dir(out.join("nodes")).expect("nodes").flatten() {
        for r in jsonl(&e.path().join("aggregator/rounds.jsonl")) {
            by.insert(r["round"].as_u64().expect("round"), r);
        }
    }
    by
}

/// Every client's (round, digest) pairs its aggregator acknowledged with a receipt.
fn acknowledged(out: &Path) -> Vec<(u64, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(out.join("nodes")).expect("nodes").flatten() {
        for r in jsonl(&e.path().join("client/participant.jsonl")) {
            if r["status"] == "acknowledged" {
                v.push((r["round"].as_u64().expect("round"), r["digest"].as_str().expect("digest").to_string()));
            }
        }
    }
    v
}

/// Each acknowledged update of `round` appears exactly once among the round's accepted updates,
/// and nothing is listed twice.
fn exactly_once(rows: &BTreeMap<u64, Value>, acks: &[(u64, String)], round: u64) {
    let row = &rows[&round];
    let updates: Vec<String> = row["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| u.as_str().expect("update").split_once(':').expect("sender:digest").1.to_string())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for u in &updates {
        assert!(seen.insert(u), "update {u} counted twice in round {round}: {row}");
    }
    let acked: Vec<&String> = acks.iter().filter(|(r, _)| *r == round).map(|(_, d)| d).collect();
    assert!(!acked.is_empty(), "no update of round {round} was acknowledged");
    for d in acked {
        assert!(updates.contains(d), "acknowledged update {d} lost from round {round}: {row}");
    }
}

#[test]
fn the_standby_takes_over_a_killed_leader_and_loses_no_acknowledged_update() {
    // Client 0 is killed once round 0's row is in (after its evaluation: by then the client may
    // have sent round 1 too; if not, round 1 waits for its deadline for it) and restarted once
    // the ledger epoch it lacked has closed. Rounds run ahead of the evaluated rows, so seven
    // rounds leave it a few to rejoin however fast the machine evaluates.
    const ROUNDS: u64 = 7;
    let Some((_dir, out, stdout)) = federation(
        "federation: failover",
        "25",
        &[
            "--clients",
            "6",
            "--attacks",
            "scale:30",
            "--rounds",
            &ROUNDS.to_string(),
            "--steps",
            "3",
            "--aggregators",
            "2",
            "--kill-primary",
            "2",
            "--restart-client",
            "0",
            "--audit-round",
            "0",
        ],
    ) else {
        return;
    };
    assert!(stdout.contains("killed (SIGKILL) with updates of round 2"), "{stdout}");
    assert!(stdout.contains("client 0 killed (SIGKILL) after round 0"), "{stdout}");
    assert!(stdout.contains("client 0 restarted from its data directory"), "{stdout}");

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["rounds"], ROUNDS, "{summary}");
    let acc = summary["final_accuracy"].as_f64().expect("accuracy");
    assert!(acc > 0.3, "seven rounds of three steps reach well above chance: {acc}");
    assert!(std::fs::read_to_string(out.join("accuracy.svg")).expect("svg").starts_with("<svg"));
    assert!(std::fs::read(out.join("accuracy.png")).expect("png").starts_with(b"\x89PNG\r\n\x1a\n"));
    let closed_by: Vec<&str> =
        summary["closed_by"].as_array().expect("closed_by").iter().map(|v| v.as_str().expect("name")).collect();
    assert_eq!(closed_by.len(), ROUNDS as usize);
    assert!(closed_by[..2].iter().all(|c| *c == closed_by[0]), "{closed_by:?}");
    assert!(closed_by[2..].iter().all(|c| *c != closed_by[0]), "the standby closed rounds 2 on: {closed_by:?}");
    // Each round is anchored once, by the aggregator that closed it: the leader's first two,
    // the standby's after the takeover.
    assert_eq!(summary["chain"]["anchored_rounds"], ROUNDS, "{summary}");
    assert!(summary["chain"]["proven_update"].is_object(), "{summary}");

    let rows = rounds(&out);
    assert_eq!(rows.len(), ROUNDS as usize);
    let acks = acknowledged(&out);
    // Round 2: acknowledged by the killed leader, closed by the standby.
    exactly_once(&rows, &acks, 2);
    for (r, row) in &rows {
        assert_eq!(row["outcome"], "aggregated", "{row}");
        let n = row["participants"].as_u64().expect("participants");
        let accounted = row["accepted"].as_u64().unwrap_or(0)
            + row["rejected"].as_u64().unwrap_or(0)
            + row["missing"].as_u64().unwrap_or(0)
            + row["clients"]
                .as_array()
                .expect("clients")
                .iter()
                .filter(|c| c["status"].as_str().is_some_and(|s| s.starts_with("declined") || s == "unreachable"))
                .count() as u64;
        assert_eq!(accounted, n, "round {r}: {row}");
    }
    assert!(rows.values().any(|r| !r["suspects"].as_array().expect("suspects").is_empty()), "{rows:?}");
    assert!(rows[&(ROUNDS - 1)]["accuracy"].as_f64() > rows[&0]["accuracy"].as_f64());
    // The validator found every close valid, across the failover too.
    assert_eq!(summary["validator"]["checked"], ROUNDS, "{summary}");
    assert_eq!(summary["validator"]["valid"], ROUNDS, "{summary}");
    // Every live node's ledger took each round's evidence, spread node to node, and all reach
    // the same state digest.
    assert_eq!(summary["ledger"]["distinct_digests"], 1, "{summary}");
    assert_eq!(summary["ledger"]["nodes"], 9, "every node but the killed aggregator: {summary}");
    // The rounds' epochs, then the evidence epochs that carried the audits' verdicts.
    assert!(summary["ledger"]["epochs"].as_u64().is_some_and(|e| e >= ROUNDS), "{summary}");
    // Every honest client tuned its personal head each round and measured it beside the global
    // model on its own held-out items (its participant.jsonl).
    let personal = &summary["personalisation"];
    let clients = personal["clients"].as_object().expect("personalised clients");
    assert!(clients.len() >= 3, "{personal}");
    for (k, v) in clients {
        for m in ["global", "personal"] {
            assert!(v[m].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{k}: {v}");
        }
    }
    assert!(personal["mean_personal"].as_f64().is_some(), "{personal}");
    // The validator challenged every node's claimed cores and testified to every ledger (the
    // digests above agree): the client announcing 1024 cores on this machine never passed, and
    // is penalised; honest nodes pass.
    let challenges = &summary["challenges"];
    let count = |k: &str| challenges[k].as_u64().unwrap_or(0);
    assert!(count("passed") > count("gave up") + count("late") + count("wrong"), "{challenges}");
    let evidence = summary["resource_evidence"].as_object().expect("resource evidence");
    let (liar, row) =
        evidence.iter().find(|(k, _)| k.ends_with("(claims 1024 cores)")).expect("the overclaiming client");
    assert_eq!(row["resource"], 0.0, "{liar}: {row}");
    assert!(row["penalty"].as_f64().is_some_and(|p| p >= 0.14), "{liar}: {row}");
    let honest_passed = evidence
        .iter()
        .filter(|(k, v)| k.starts_with("client") && !k.contains('(') && v["resource"].as_f64() > Some(0.0))
        .count();
    assert!(honest_passed >= 2, "{evidence:?}");
    // Audits of round 0, asked for through aggregator 0's API: the team (both aggregators and
    // the validator) re-executed each client's training from its signed manifest; the reports
    // of the later rounds carried the verdicts.
    let audits = summary["audits"].as_object().expect("audits");
    assert_eq!(audits.get("client 5 (scale:30)").and_then(Value::as_str), Some("failed"), "{audits:?}");
    assert!(
        audits.iter().any(|(k, v)| k.starts_with("client") && !k.contains('(') && v == "passed"),
        "an honest client passes: {audits:?}"
    );
    assert!(stdout.contains("audits of round 0"), "{stdout}");
    // The clients' control sockets report their answers: opens, receipts and closes taken.
    assert!(summary["client_answers"]["taken"].as_u64().is_some_and(|n| n >= 5 * 5), "{summary}");

    // The restarted client (the first client process) took part again after its restart, and
    // saw its updates inside the published Merkle roots.
    let client0 = jsonl(&out.join("nodes/node-04/client/participant.jsonl"));
    assert!(
        client0.iter().any(|v| v["round"].as_u64().is_some_and(|r| r >= 2) && v["status"] == "included"),
        "the restarted client rejoined: {client0:?}"
    );
}

/// An aggregator that signs two reports for one epoch (`--equivocate-round 2`: the one that
/// closes round 2 sends one report to half its peers and the other to the rest): every node's
/// ledger convicts it, it is kept out and the standby closes the last round, and every ledger —
/// whichever of the two reports it had applied — ends in one state; the validator finds every
/// close valid across the change of leader.
#[test]
fn an_equivocating_leader_is_convicted_everywhere_replaced_and_the_ledgers_agree() {
    let Some((_dir, out, stdout)) = federation(
        "federation: equivocating leader",
        "20",
        &[
            "--clients",
            "4",
            "--attacks",
            "scale:10",
            "--rounds",
            "5",
            "--steps",
            "2",
            "--aggregators",
            "2",
            "--kill-primary",
            "99",
            "--equivocate-round",
            "2",
            "--no-audit",
        ],
    ) else {
        return;
    };
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    let closed_by: Vec<&str> =
        summary["closed_by"].as_array().expect("closed_by").iter().map(|v| v.as_str().expect("name")).collect();
    assert_eq!(closed_by.len(), 5, "{stdout}");
    let convicted = summary["equivocation"]["convicted_by_ledgers"].as_object().expect("convicted");
    assert_eq!(convicted.len(), 1, "{summary}");
    let (who, ledgers) = convicted.iter().next().expect("one");
    assert_eq!(who, closed_by[2], "the aggregator that closed round 2 is the one convicted");
    // Every node's ledger, the convicted aggregator's own included.
    assert_eq!(ledgers, &summary["ledger"]["nodes"], "{summary}");
    assert_eq!(summary["ledger"]["nodes"], 8, "{summary}");
    assert_ne!(closed_by[4], who, "the standby closed the last round: {closed_by:?}");
    assert_eq!(summary["ledger"]["distinct_digests"], 1, "{summary}");
    assert_eq!(summary["validator"]["valid"], 5, "{summary}");
    assert!(stdout.contains(&format!("equivocation at round 2: convicted {who} by 8 of 8 ledgers")), "{stdout}");
}

#[test]
fn a_restarted_aggregator_recovers_its_journal() {
    let Some((_dir, out, stdout)) = federation(
        "federation: restart recovery",
        "60",
        &[
            "--clients",
            "5",
            "--attacks",
            "none",
            "--rounds",
            "4",
            "--steps",
            "3",
            "--aggregators",
            "1",
            "--kill-primary",
            "2",
            "--restart-primary",
            "--restart-validator",
            "0",
            "--challenge-interval",
            "3600",
            "--no-audit",
        ],
    ) else {
        return;
    };
    // The validator was down while round 1 closed: its ledger fetched that epoch's evidence
    // from its peers.
    assert!(stdout.contains("the validator killed (SIGKILL) after round 0"), "{stdout}");
    assert!(stdout.contains("the validator restarted from its data directory"), "{stdout}");
    assert!(stdout.contains("killed (SIGKILL) with updates of round 2"), "{stdout}");
    assert!(stdout.contains("restarted from its data directory"), "{stdout}");
    let rows = rounds(&out);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows[&2]["recovered"].as_u64().is_some_and(|n| n >= 1), "{}", rows[&2]);
    exactly_once(&rows, &acknowledged(&out), 2);
    assert_eq!(rows[&2]["accepted"], 5, "{}", rows[&2]);
    // The restarted aggregator replayed its ledger journal, the restarted validator replayed
    // its own and fetched what it missed: every node agrees.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["ledger"]["distinct_digests"], 1, "{summary}");
    assert_eq!(summary["ledger"]["nodes"], 8, "{summary}");
    assert!(summary["ledger"]["epochs"].as_u64().is_some_and(|e| e >= 4), "{summary}");
    let validator_log = std::fs::read_to_string(out.join("nodes/node-02/node.log")).expect("the validator's log");
    assert!(validator_log.contains("ledger history fetched"), "{validator_log}");
}

/// 3. A Sybil ring of 30 % of the nodes — three fresh identities on this machine, no stake,
///    each announcing 64 cores and free-riding — against four honest clients, with the real
///    voting tier (2): in twenty rounds honest clients climb to it, no Sybil does (they fail
///    the resource challenges sized to their claim), and the ring's vouching for itself gives
///    it no trust.
#[test]
fn a_sybil_ring_of_fresh_identities_never_reaches_the_voting_tier() {
    let Some((_dir, out, stdout)) = federation(
        "federation: Sybil ring",
        "25",
        &[
            "--clients",
            "4",
            "--attacks",
            "none",
            "--sybils",
            "3",
            "--rounds",
            "20",
            "--steps",
            "2",
            "--aggregators",
            "1",
            "--kill-primary",
            "99",
            "--no-audit",
            "--vote-from",
            "2",
        ],
    ) else {
        return;
    };
    assert!(stdout.contains("sybil ring (3 fresh identities"), "{stdout}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["ledger"]["distinct_digests"], 1, "{summary}");
    let ring = &summary["sybil_ring"];
    let members = ring["members"].as_object().expect("members");
    assert_eq!(members.len(), 3, "{ring}");
    assert!(members.values().all(|t| t.as_u64().is_some_and(|t| t < 2)), "a Sybil reached the voting tier: {ring}");
    let honest = ring["honest_clients"].as_object().expect("honest clients");
    assert!(honest.values().any(|t| t.as_u64().is_some_and(|t| t >= 2)), "no honest client reached tier 2: {ring}");
    // No Sybil ever passed a challenge sized to its claim, and the ones the validator reached
    // failed them (a challenge that finds a node busy, gets no answer, or is refused by a node
    // whose ledger does not yet count the validator as a reporter is not held against it; on
    // this loaded machine one Sybil now and then ends the run with none recorded).
    let evidence = summary["resource_evidence"].as_object().expect("resource evidence");
    for k in members.keys() {
        assert_eq!(evidence[k]["resource"], 0.0, "{k}: {}", evidence[k]);
    }
    // Penalised, or already suspended for it (a suspension pays for the points: the count
    // starts again from zero).
    let penalised = members
        .keys()
        .filter(|k| {
            let e = &evidence[k.as_str()];
            e["penalty"].as_f64().is_some_and(|p| p > 0.0) || e["standing"] != "active"
        })
        .count();
    assert!(penalised >= 1, "no Sybil failed a challenge: {} {evidence:?}", summary["challenges"]);
    // The ring vouches for itself (`[ledger] vouch`), but no trusted node vouches for a member
    // (a zero update agrees with nothing): every ledger refused their local-trust vectors and
    // gives them no EigenTrust share, while the honest clients, whose updates the aggregator
    // vouched for, hold one.
    for (k, s) in ring["members_social"].as_object().expect("members' shares") {
        assert_eq!(s.as_f64(), Some(0.0), "{k} holds trust: {ring}");
        assert_eq!(ring["members_vouches"][k], 0, "{k}'s vector was applied: {ring}");
    }
    let honest_social = ring["honest_social"].as_object().expect("honest shares");
    assert_eq!(honest_social.len(), honest.len(), "{ring}");
    assert!(honest_social.values().all(|s| s.as_f64().is_some_and(|s| s > 0.0)), "{ring}");
}
