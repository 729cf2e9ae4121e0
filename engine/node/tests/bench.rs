//! `vain bench` end to end: client processes, our shards and the quinn baseline, the report on
//! stdout and the JSON/CSV/SVG files.

use std::process::Command;

#[test]
fn the_ingest_benchmark_runs_both_transports_and_writes_its_report() {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "bench: ingest benchmark", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["bench", "--backend", "cpu", "--shards", "2", "--clients", "3", "--params", "64k", "--rounds", "2"])
        .args(["--encoding", "int8:256", "--zstd", "1", "--rule", "median", "--out"])
        .arg(dir.path())
        .output()
        .expect("run vain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["glommio + quinn-proto (ours)", "quinn on tokio (baseline)", "summary", "ours / baseline"] {
        assert!(stdout.contains(needle), "{needle:?} missing:\n{stdout}");
    }
    // Every round of both runs took all three updates and rejected none.
    let csv = std::fs::read_to_string(dir.path().join("rounds.csv")).expect("csv");
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for r in &rows {
        assert_eq!((r[2], r[3]), ("3", "0"), "{csv}");
        assert!(r[4].parse::<u64>().expect("wire bytes") > 3 * 64 * 1024 / 8, "{csv}");
    }
    let json = std::fs::read_to_string(dir.path().join("report.json")).expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["options"]["rule"], "median");
    let svg = std::fs::read_to_string(dir.path().join("throughput.svg")).expect("svg");
    assert!(std::fs::read(dir.path().join("throughput.png")).expect("png").starts_with(b"\x89PNG\r\n\x1a\n"));
    // A line and a legend swatch per transport, labelled axes.
    assert!(svg.starts_with("<svg") && svg.matches("stroke-width=\"2\" points=").count() == 4, "{svg}");
    assert!(svg.contains("\nwire GB/s\n") && svg.contains("\nround\n"));
}

#[test]
fn floods_leave_the_honest_client_its_frames_and_the_endpoint_counts_each_attack() {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "bench: floods", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("flood.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["bench", "flood", "--window", "1", "--initials", "3000", "--idle", "300", "--storm", "600"])
        .args(["--size", "1M", "--json"])
        .arg(&json)
        .output()
        .expect("run vain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("valid JSON");
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    // Nothing the endpoint acknowledged to the honest client went missing, and none of its
    // frames was stopped or failed.
    let acknowledged = n(&v["acknowledged"]);
    assert!(acknowledged > 0, "{stdout}");
    assert_eq!(n(&v["received"]), acknowledged, "{stdout}");
    assert_eq!((n(&v["stopped"]), n(&v["failed"])), (0, 0), "{stdout}");
    let windows = v["windows"].as_array().expect("windows");
    let attacks: Vec<&str> = windows.iter().map(|w| w["attack"].as_str().expect("attack")).collect();
    assert_eq!(attacks, ["none", "initials", "idle", "storm", "none"]);
    for w in windows {
        assert!(n(&w["honest_frames"]) > 0, "the honest client got nothing through in {w}");
    }
    // Each attack reached the endpoint and was dealt with: Initials answered with retries,
    // refusals or failed handshakes; every idle connection held; every bad frame dropped.
    let (initials, idle, storm) = (&windows[1], &windows[2], &windows[3]);
    assert!(n(&initials["attack_sent"]) >= 1000, "{initials}");
    let e = &initials["endpoint"];
    assert!(n(&e["datagrams"]) >= n(&initials["attack_sent"]) / 2, "{initials}");
    assert!(n(&e["connections"]) + n(&e["retries"]) + n(&e["capped"]) > 0, "{initials}");
    assert_eq!(n(&idle["attack_sent"]), 300, "{idle}");
    assert!(n(&idle["endpoint"]["open"]) >= 300, "{idle}");
    assert!(n(&storm["attack_sent"]) >= 100, "{storm}");
    assert!(n(&storm["endpoint"]["bad_frames"]) >= n(&storm["attack_sent"]) / 2, "{storm}");
    assert!(stdout.contains("lowest under attack:"), "{stdout}");
}

#[test]
fn bad_settings_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["bench", "--clients", "2", "--rule", "bulyan:1", "--no-baseline"])
        .output()
        .expect("run vain");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bulyan") && err.contains("2 clients"), "{err}");
}

#[test]
fn the_ledger_benchmark_applies_every_report_live_and_in_memory_alike_and_recovers_from_its_snapshot() {
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["bench", "ledger", "--epochs", "5", "--observations", "60", "--subjects", "10", "--recovery", "3000"])
        .output()
        .expect("run vain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("5 reports × 60 observations over 10 nodes"), "{stdout}");
    assert!(stdout.contains("both reach state digest"), "{stdout}");
    let rate = |label: &str| -> f64 {
        let line = stdout.lines().find(|l| l.contains(label)).expect("line");
        line.split("):").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|x| x.parse().ok()).expect("rate")
    };
    assert!(rate("in memory") > 0.0 && rate("live") > 0.0, "{stdout}");
    // Recovery: the whole journal, its snapshot, and the snapshot with a journal behind it all
    // reach the same state (the command checks the digests).
    assert!(stdout.contains("recovery after 3000 journal entries"), "{stdout}");
    assert!(stdout.contains("from the snapshot and 2046 more entries"), "{stdout}");
}

/// `vain bench dht --processes`: nodes in processes of their own (three to a process) on TCP
/// loopback, each at its own 127.1.x.y address, driven through the control sockets' `status` and
/// `lookup`; every lookup found, the nodes' CPU and memory read from /proc, and no node process
/// left behind.
#[test]
fn the_dht_benchmark_runs_a_node_per_process_and_finds_every_record() {
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["bench", "dht", "--processes", "--per-process", "3", "--nodes", "12", "--lookups", "24"])
        .args(["--timeout", "90", "--idle", "1"])
        .output()
        .expect("run vain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("12 nodes as processes of 3 on TCP loopback"), "{stdout}");
    let json = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(v["nodes"], 12);
    assert_eq!(v["found"], 24, "{json}");
    assert_eq!(v["failures"].as_object().map(|m| m.len()), Some(0), "{json}");
    assert!(v["converge_seconds"].as_f64().is_some() && v["settle_seconds"].as_f64().is_some(), "{json}");
    // 11 peers each: every routing table holds all of them.
    assert_eq!(v["routing"][0], 11, "{json}");
    assert!(v["kib_per_node"].as_f64().is_some_and(|k| k > 1000.0), "{json}");
    assert!(v["cpu_seconds"][0].as_f64().is_some_and(|c| c > 0.0), "{json}");
    assert!(v["idle_ms_per_s"].as_f64().is_some(), "{json}");
    let left = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains("dht-node"))
        .count();
    assert_eq!(left, 0, "node processes outlived the benchmark");
}
