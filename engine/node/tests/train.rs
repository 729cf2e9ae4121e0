//! `vain train` end to end, as a user runs it: a short simulated federation with attackers
//! (table, files, attackers losing their weight), one client's real update aggregated by
//! `vain aggregate` and evaluated, and bad input refused with a clear message.

use std::path::Path;
use std::process::{Command, Output};

fn vain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(args)
        .env_remove("VAIN_PASSPHRASE")
        .env_remove("VAIN_IDENTITY_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vain")
}

fn ok(args: &[&str]) -> String {
    let o = vain(args);
    assert!(o.status.success(), "vain {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str], needle: &str) {
    let o = vain(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(needle), "vain {args:?}: {err}");
}

fn p(x: &Path) -> &str {
    x.to_str().expect("utf-8")
}

#[test]
fn simulate_prints_the_table_writes_the_files_and_drops_the_attackers() {
    let t = tempfile::tempdir().expect("tmp");
    let out = t.path().join("out");
    let stdout = ok(&[
        "train",
        "simulate",
        "--model",
        "mnist-mlp",
        "--clients",
        "6",
        "--malicious",
        "0.34",
        "--attack",
        "scale:-4",
        "--rounds",
        "4",
        "--partition",
        "iid",
        "--local-steps",
        "8",
        "--seed",
        "3",
        "--out",
        p(&out),
    ]);
    assert!(stdout.contains("weight % / tier per client"), "{stdout}");
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(' ') && l.split_whitespace().next().is_some_and(|w| w.parse::<u64>().is_ok()))
        .collect();
    assert_eq!(table.len(), 4, "{stdout}");
    assert!(stdout.contains("final accuracy"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["rounds"], 4);
    assert_eq!(summary["attackers"], 2);
    assert!(summary["final_accuracy"].as_f64().expect("acc") > 0.75, "{summary}");
    assert_eq!(summary["honest_suspended"], 0);
    let share = summary["attacker_weight"].as_array().expect("shares");
    assert!(share[0].as_f64().expect("w") > 0.3 && share[3].as_f64().expect("w") < 0.05, "{share:?}");
    let rounds = std::fs::read_to_string(out.join("rounds.csv")).expect("rounds.csv");
    assert_eq!(rounds.lines().count(), 5);
    let clients = std::fs::read_to_string(out.join("clients.csv")).expect("clients.csv");
    assert_eq!(clients.lines().count(), 1 + 4 * 6);
    let svg = std::fs::read_to_string(out.join("accuracy.svg")).expect("svg");
    assert!(std::fs::read(out.join("accuracy.png")).expect("png").starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(
        svg.contains("<svg") && svg.contains("global test accuracy") && svg.contains("<polyline"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}

/// The other knobs of `vain train simulate` on one short run: top-k with error feedback and
/// zstd, pre-aggregation before a robust rule, clipping with DP noise (ε per round), Reptile's
/// outer step, personal heads, a stepped learning rate, reputation off, a backdoor measured.
#[test]
fn simulate_takes_every_knob_and_reports_what_each_adds() {
    let t = tempfile::tempdir().expect("tmp");
    let out = t.path().join("out");
    let stdout = ok(&[
        "train",
        "simulate",
        "--model",
        "mnist-mlp",
        "--clients",
        "6",
        "--malicious",
        "0.2",
        "--attack",
        "backdoor",
        "--rule",
        "median",
        "--pre",
        "nnm:1",
        "--encoding",
        "topk:0.1",
        "--zstd",
        "1",
        "--clip",
        "5",
        "--noise-multiplier",
        "0.3",
        "--reptile",
        "0.8",
        "--personal-steps",
        "3",
        "--lr-schedule",
        "step:1:0.5",
        "--reputation",
        "off",
        "--partition",
        "dirichlet:0.5",
        "--rounds",
        "3",
        "--local-steps",
        "6",
        "--seed",
        "2",
        "--out",
        p(&out),
    ]);
    assert!(stdout.contains("ε = "), "{stdout}");
    let rounds = std::fs::read_to_string(out.join("rounds.csv")).expect("rounds.csv");
    let rows: Vec<Vec<&str>> = rounds.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{rounds}");
    let header: Vec<&str> = rounds.lines().next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let num = |r: &Vec<&str>, name: &str| r[col(name)].parse::<f64>().unwrap_or(f64::NAN);
    // Every round: a personalised accuracy, a backdoor success rate, ε growing.
    for r in &rows {
        assert!((0.0..=1.0).contains(&num(r, "personal_accuracy")), "{rounds}");
        assert!((0.0..=1.0).contains(&num(r, "backdoor_success")), "{rounds}");
        assert_eq!(num(r, "accepted"), 6.0, "{rounds}");
    }
    assert!(num(&rows[0], "epsilon") > 0.0 && num(&rows[2], "epsilon") > num(&rows[1], "epsilon"), "{rounds}");
    // (Six clients cannot hide one another under DP noise: the model does not learn much here.)
    assert!(rows.iter().all(|r| (0.0..=1.0).contains(&num(r, "accuracy")) && num(r, "loss").is_finite()), "{rounds}");
    // Reputation off: every client keeps its weight, nobody is suspended.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["honest_suspended"], 0, "{summary}");
    fails(&["train", "simulate", "--lr-schedule", "step:0:0.5"], "learning-rate schedule");
    fails(&["train", "simulate", "--cosine", "--lr-schedule", "constant"], "cannot be used with");
}

#[test]
fn local_updates_aggregate_and_improve_the_model() {
    let t = tempfile::tempdir().expect("tmp");
    let id = t.path().join("id");
    ok(&["identity", "new", "--dir", p(&id)]);
    let common = ["--model", "mnist-mlp", "--clients", "4", "--partition", "iid", "--seed", "5"];
    let mut files = Vec::new();
    for c in 0..4 {
        let out = t.path().join(format!("u{c}.safetensors"));
        let cs = c.to_string();
        let mut args =
            vec!["train", "local", "--client", cs.as_str(), "--local-steps", "20", "-o", p(&out), "--dir", p(&id)];
        args.extend(common);
        let s = ok(&args);
        assert!(s.contains("signed frame"), "{s}");
        assert!(out.with_extension("frame").exists());
        files.push(out);
    }
    let agg = t.path().join("agg.safetensors");
    let mut args = vec!["aggregate", "--backend", "cpu", "-o", p(&agg)];
    args.extend(files.iter().map(|f| p(f)));
    ok(&args);
    let next = t.path().join("next.safetensors");
    let mut before = vec!["train", "eval"];
    before.extend(common);
    let b = ok(&before);
    let mut after = before.clone();
    after.extend(["--delta", p(&agg), "--save", p(&next)]);
    let a = ok(&after);
    let acc = |s: &str| -> f64 {
        s.split("accuracy ").nth(1).and_then(|x| x.split(' ').next()).and_then(|x| x.parse().ok()).expect("accuracy")
    };
    assert!(acc(&a) > acc(&b) + 30.0, "before {b} after {a}");
    let mut again = before.clone();
    again.extend(["--checkpoint", p(&next)]);
    assert!((acc(&ok(&again)) - acc(&a)).abs() < 1e-9);
}

#[test]
fn bad_arguments_and_data_are_refused_clearly() {
    let t = tempfile::tempdir().expect("tmp");
    fails(&["train", "simulate", "--malicious", "0.6", "--rounds", "1"], "--malicious must be in [0, 0.5)");
    fails(&["train", "simulate", "--attack", "trojan"], "cannot parse attack");
    fails(&["train", "simulate", "--model", "resnet"], "unknown model");
    fails(&["train", "simulate", "--pre", "nnm"], "cannot parse pre-aggregation step");
    fails(&["train", "simulate", "--noise-multiplier", "1", "--rounds", "1"], "needs --clip");
    fails(&["train", "simulate", "--data", p(&t.path().join("none"))], "no train-images-idx3-ubyte");
    std::fs::write(
        t.path().join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2],
    )
    .expect("write");
    std::fs::write(t.path().join("train-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 1, 3]).expect("write");
    fails(&["train", "simulate", "--data", p(t.path())], "truncated at offset 18");
    fails(
        &["train", "local", "--client", "99", "--clients", "4", "-o", p(&t.path().join("x"))],
        "outside the 4 clients",
    );
}
