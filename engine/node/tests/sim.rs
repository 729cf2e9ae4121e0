//! `vain sim` and `vain bench aggregate` from the command line.

use std::process::Command;

fn vain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vain")).args(args).output().expect("run vain")
}

#[test]
fn sim_prints_a_summary_and_writes_the_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("rep.svg");
    let args = [
        "sim",
        "--scenario",
        "sybil",
        "--nodes",
        "60",
        "--epochs",
        "24",
        "--seed",
        "3",
        "--svg",
        svg.to_str().expect("p"),
    ];
    let o = vain(&args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("honest") && out.contains("sybil") && out.contains("tier ≥ 2"), "{out}");
    let sybil_line = out.lines().find(|l| l.starts_with("sybil")).expect("sybil row");
    assert!(sybil_line.contains(" 0%"), "no Sybil reached tier 2: {sybil_line}");
    let chart = std::fs::read_to_string(&svg).expect("svg");
    assert!(chart.starts_with("<svg") && chart.contains("\nsybil\n") && chart.contains("\nhonest\n"), "{chart}");
    assert!(chart.contains("\nepoch (virtual hours)\n") && chart.contains("\nmean reputation score\n"));
    // A line and a legend swatch per behaviour present.
    assert_eq!(chart.matches("stroke-width=\"2\" points=").count(), 4);
    // Same seed, same output.
    let again = vain(&args);
    let strip = |s: &str| s.lines().filter(|l| !l.contains("simulated in")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&out), strip(&String::from_utf8_lossy(&again.stdout)));
}

#[test]
fn sim_refuses_bad_arguments() {
    let o = vain(&["sim", "--scenario", "nope"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("unknown scenario"));
    let o = vain(&["sim", "--partition", "0.5@9..3"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("FROM < TO"));
    let o = vain(&["sim", "--nodes", "3"]);
    assert!(!o.status.success());
}

#[test]
fn bench_aggregate_prints_the_table() {
    let o = vain(&[
        "bench",
        "aggregate",
        "--backend",
        "cpu",
        "--params",
        "64k",
        "--updates",
        "8",
        "--reps",
        "1",
        "--rule",
        "fedavg",
        "--rule",
        "median",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("memory copy bandwidth") && out.contains("fedavg") && out.contains("median"), "{out}");
}
