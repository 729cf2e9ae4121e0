//! The federation over the network, end to end: `vain demo` starts real `vain node` processes
//! (a bootstrap, an aggregator, six clients of which one attacks — eight nodes), which find
//! each other over libp2p, exchange signed opens and closes, fetch checkpoints by digest and
//! send signed updates over QUIC. Midway one client is killed with SIGKILL and restarted from
//! its data directory.

use serde_json::Value;
use std::process::Command;

#[test]
fn eight_node_processes_run_rounds_and_a_killed_client_rejoins() {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "federation: vain demo", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["demo", "--clients", "6", "--attacks", "scale:10", "--rounds", "5", "--steps", "3"])
        .args(["--backend", "cpu", "--round-time", "60", "--restart-client", "1", "--timeout", "400", "--out"])
        .arg(&out)
        .output()
        .expect("run vain demo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("client 0 killed (SIGKILL) and restarted"), "{stdout}");

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["rounds"], 5, "{summary}");
    let acc = summary["final_accuracy"].as_f64().expect("accuracy");
    assert!(acc > 0.4, "five rounds of three steps reach well above chance: {acc}");
    assert!(std::fs::read_to_string(out.join("accuracy.svg")).expect("svg").starts_with("<svg"));

    // Every round: each participant accounted for, the attacker suspected at least once.
    let log = std::fs::read_to_string(out.join("nodes/node-01/aggregator/rounds.jsonl")).expect("rounds");
    let rows: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).expect("row")).collect();
    assert_eq!(rows.len(), 5);
    let mut accuracies = Vec::new();
    for r in &rows {
        let n = r["participants"].as_u64().expect("participants");
        let (a, j, m) = (r["accepted"].as_u64(), r["rejected"].as_u64(), r["missing"].as_u64());
        let declined = r["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .filter(|c| c["status"].as_str().is_some_and(|s| s.starts_with("declined") || s == "unreachable"))
            .count() as u64;
        assert_eq!(a.unwrap_or(0) + j.unwrap_or(0) + m.unwrap_or(0) + declined, n, "{r}");
        assert_eq!(r["outcome"], "aggregated", "{r}");
        accuracies.push(r["accuracy"].as_f64().expect("accuracy"));
    }
    assert!(accuracies[4] > accuracies[0], "{accuracies:?}");
    assert!(rows.iter().any(|r| !r["suspects"].as_array().expect("suspects").is_empty()), "{log}");

    // The restarted client (node-02) took part in the last round again, and its own log shows
    // its updates inside the published Merkle roots.
    let client0 = std::fs::read_to_string(out.join("nodes/node-02/client/participant.jsonl")).expect("client log");
    let included = client0.lines().filter(|l| l.contains("\"included\"")).count();
    assert!(included >= 2, "{client0}");
    let rejoined = client0
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| v["round"].as_u64().is_some_and(|r| r >= 3) && v["status"] == "included");
    assert!(rejoined, "the restarted client rejoined a later round: {client0}");
}
