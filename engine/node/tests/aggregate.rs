//! `vain aggregate` end to end: random safetensors updates (f32, f16 and bf16 tensors, weights in
//! metadata), every rule, with and without clipping, compared with the float64 reference
//! (relative L2 error ≤ 1e-5; 1e-4 for the iterated CenteredClip); noise checked against the
//! secret's Philox stream, which the report does not reveal and the auditor can open;
//! mismatched inputs refused.

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use vain_kernels::aggregate::Rule;
use vain_kernels::philox;
use vain_kernels::reference::reference;

const TENSORS: [(&str, &[usize], Dtype); 3] =
    [("a.weight", &[13, 7], Dtype::F32), ("b.bias", &[29], Dtype::F16), ("c.proj", &[3, 4, 5], Dtype::BF16)];

struct Rng(u64);
impl Rng {
    fn value(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * 3.0 + 0.001
    }
}

/// Writes one update file and returns its values as the file stores them (after f16/bf16
/// rounding), flattened in sorted tensor-name order.
/// Honest clients (kind 0) share a direction plus noise; kind 1 points the other way, 4× longer;
/// kind 2 is large noise.
fn write_update(path: &Path, rng: &mut Rng, weight: Option<f32>, kind: u8) -> Vec<f64> {
    let mut flat = Vec::new();
    let mut bufs = Vec::new();
    for (_, shape, dtype) in TENSORS {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|j| {
                let base = ((j as f32) * 0.7).sin() * 2.0 + 0.5;
                match kind {
                    0 => base + 0.1 * rng.value(),
                    1 => -4.0 * base + 0.1 * rng.value(),
                    _ => 3.0 * rng.value(),
                }
            })
            .collect();
        let (bytes, stored): (Vec<u8>, Vec<f32>) = match dtype {
            Dtype::F32 => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), v.clone()),
            Dtype::F16 => (
                v.iter().flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes()).collect(),
                v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
            ),
            _ => (
                v.iter().flat_map(|x| bf16::from_f32(*x).to_bits().to_le_bytes()).collect(),
                v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect(),
            ),
        };
        flat.extend(stored.iter().map(|x| f64::from(*x)));
        bufs.push(bytes);
    }
    let views: Vec<(&str, TensorView<'_>)> = TENSORS
        .iter()
        .zip(&bufs)
        .map(|((name, shape, dtype), b)| (*name, TensorView::new(*dtype, shape.to_vec(), b).expect("view")))
        .collect();
    let meta = weight.map(|w| HashMap::from([("num_examples".to_string(), w.to_string())]));
    safetensors::serialize_to_file(views, meta, path).expect("write");
    flat
}

fn read_output(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("output");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out = Vec::new();
    for (name, shape, _) in TENSORS {
        let t = st.tensor(name).expect(name);
        assert_eq!(t.shape(), shape);
        assert_eq!(t.dtype(), Dtype::F32);
        out.extend(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    out
}

fn vain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vain")).args(args).output().expect("run vain")
}

fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let e: f64 = got.iter().zip(want).map(|(g, w)| (f64::from(*g) - w).powi(2)).sum();
    let n: f64 = want.iter().map(|w| w * w).sum();
    (e / n).sqrt()
}

fn inputs(dir: &Path, n: usize, seed: u64) -> (Vec<PathBuf>, Vec<Vec<f64>>, Vec<f32>) {
    let mut rng = Rng(seed);
    let mut paths = Vec::new();
    let mut xs = Vec::new();
    let mut ws = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("client{i}.safetensors"));
        let w = 10.0 + 7.0 * i as f32;
        // Two clients are far off, so robust rules have something to reject.
        let kind = match i {
            1 => 1,
            4 => 2,
            _ => 0,
        };
        xs.push(write_update(&p, &mut rng, Some(w), kind));
        paths.push(p);
        ws.push(w);
    }
    (paths, xs, ws)
}

#[test]
fn every_rule_reproduces_the_f64_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, xs, ws) = inputs(dir.path(), 11, 0x5eed);
    let out = dir.path().join("agg.safetensors");
    let rules =
        ["fedavg", "median", "trimmed-mean:0.2", "multi-krum:2,6", "bulyan:2", "centered-clip:5,3", "clipped-mean:20"];
    let mut checked = 0;
    for rule in rules {
        for clip in [None, Some("30")] {
            let mut args = vec![
                "aggregate",
                "--backend",
                "cpu",
                "--rule",
                rule,
                "--full-report",
                "-o",
                out.to_str().expect("utf8"),
            ];
            if let Some(c) = clip {
                args.extend(["--clip", c]);
            }
            let files: Vec<&str> = paths.iter().map(|p| p.to_str().expect("utf8")).collect();
            args.extend(&files);
            let o = vain(&args);
            assert!(o.status.success(), "{rule}: {}", String::from_utf8_lossy(&o.stderr));
            let r: Rule = rule.parse().expect("rule");
            // f16/bf16 tensors quantise coarsely, so Bulyan can meet values equally far from a
            // median, which f32 and f64 may order differently: the reference then says so and
            // the value check is left to the kernels' tests (whose seeds avoid such ties).
            match reference(&xs, &ws, r, clip.map(|c| c.parse().expect("clip"))) {
                Some(want) => {
                    let tol = if matches!(r, Rule::CenteredClip { .. }) { 1e-4 } else { 1e-5 };
                    let err = rel_err(&read_output(&out), &want);
                    assert!(err <= tol, "{rule} clip {clip:?}: relative error {err}");
                    checked += 1;
                }
                None => assert!(matches!(r, Rule::Bulyan { .. } | Rule::MultiKrum { .. }), "{rule} ambiguous"),
            }
            let report: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("agg.report.json")).expect("report"))
                    .expect("json");
            assert_eq!(report["rule"], rule);
            let ups = report["updates"].as_array().expect("updates");
            assert_eq!(ups.len(), 11);
            assert_eq!(ups[3]["weight"], 31.0, "weights come from the num_examples metadata");
            if rule.starts_with("multi-krum") || rule.starts_with("bulyan") {
                assert_eq!(ups[1]["selected"], false, "{rule} kept an outlier");
                assert_eq!(ups[4]["selected"], false, "{rule} kept an outlier");
            }
            assert!(ups[1]["cosine_to_median"].as_f64().expect("cos") < -0.9, "{rule}");
            assert!(ups[0]["cosine_to_median"].as_f64().expect("cos") > 0.9, "{rule}");
            assert!(ups[4]["norm_z"].as_f64().expect("z") > 3.0, "{rule}");
        }
    }
    assert!(checked >= 12, "only {checked} of 14 rule/clip combinations were value-checked");
}

#[test]
fn a_streaming_rule_holds_no_rows_unless_the_full_report_is_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, _, _) = inputs(dir.path(), 6, 0xfeed);
    let files: Vec<&str> = paths.iter().map(|p| p.to_str().expect("utf8")).collect();
    let mut outs = Vec::new();
    for (name, full) in [("lean", false), ("full", true)] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let mut args = vec!["aggregate", "--backend", "cpu", "-o", out.to_str().expect("utf8")];
        if full {
            args.push("--full-report");
        }
        args.extend(&files);
        run_ok(&args);
        let report = json(&dir.path().join(format!("{name}.report.json")));
        let ups = report["updates"].as_array().expect("updates");
        assert_eq!(ups.len(), 6);
        if full {
            assert!(report["storage_bytes"].as_u64().expect("bytes") > 0);
            assert!(ups.iter().all(|u| u["cosine_to_median"].is_f64() && u["max_similarity"].is_f64()));
        } else {
            // FedAvg streamed every file into the accumulator: no row was kept, so memory does
            // not grow with the number of inputs, and the report says what it could not compute.
            assert_eq!(report["storage_bytes"], 0, "{report}");
            assert!(ups.iter().all(|u| u["cosine_to_median"].is_null() && u["max_similarity"].is_null()));
            assert!(ups.iter().all(|u| u["norm"].as_f64().expect("norm") > 0.0));
        }
        outs.push(read_output(&out));
    }
    // From the accumulator or from the stored rows: the same mean, summed in another order.
    let want: Vec<f64> = outs[1].iter().map(|v| f64::from(*v)).collect();
    let err = rel_err(&outs[0], &want);
    assert!(err <= 1e-6, "storing rows changed the FedAvg aggregate by {err}");
}

#[test]
fn an_input_that_cannot_be_mapped_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, _, _) = inputs(dir.path(), 3, 0xf1f0);
    let fifo = dir.path().join("pipe.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let bytes = std::fs::read(&paths[2]).expect("input");
    let f = fifo.clone();
    let writer = std::thread::spawn(move || std::fs::write(f, bytes).expect("write the fifo"));
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    let p = |x: &Path| x.to_str().expect("utf8").to_string();
    let (p0, p1, p2, pf) = (p(&paths[0]), p(&paths[1]), p(&paths[2]), p(&fifo));
    run_ok(&["aggregate", "--backend", "cpu", "-o", &p(&a), &p0, &p1, &pf]);
    writer.join().expect("writer");
    run_ok(&["aggregate", "--backend", "cpu", "-o", &p(&b), &p0, &p1, &p2]);
    assert_eq!(read_output(&a), read_output(&b), "the same bytes, mapped or read from a pipe");
}

fn run_ok(args: &[&str]) -> String {
    let o = vain(args);
    assert!(o.status.success(), "vain {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report")).expect("json")
}

#[test]
fn noise_is_the_secret_stream_scaled_by_the_sensitivity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, _, ws) = inputs(dir.path(), 5, 7);
    let files: Vec<&str> = paths.iter().map(|p| p.to_str().expect("utf8")).collect();
    let clean = dir.path().join("clean.safetensors");
    let noisy = dir.path().join("noisy.safetensors");
    let secret_file = dir.path().join("secret.hex");
    std::fs::write(&secret_file, "ab".repeat(32)).expect("write");
    let base = ["aggregate", "--backend", "cpu", "--clip", "2.5", "--round", "4"];
    let mut a: Vec<&str> = base.to_vec();
    a.extend(["-o", clean.to_str().expect("utf8")]);
    a.extend(&files);
    run_ok(&a);
    let mut b: Vec<&str> = base.to_vec();
    b.extend(["--noise-multiplier", "0.8", "--noise-secret-file", secret_file.to_str().expect("utf8")]);
    b.extend(["-o", noisy.to_str().expect("utf8")]);
    b.extend(&files);
    run_ok(&b);
    let (c, n) = (read_output(&clean), read_output(&noisy));
    let total: f32 = ws.iter().sum();
    let max = ws.iter().copied().fold(0f32, f32::max);
    let std = (0.8f64 * 2.5 * f64::from(max) / f64::from(total)) as f32;
    let secret = philox::Secret::from_bytes([0xab; 32]);
    let (seed, stream) = secret.stream(4);
    let mut z = vec![0f32; c.len()];
    philox::add_noise(&mut z, 0, 1.0, seed, stream);
    for i in 0..c.len() {
        let want = std * z[i];
        assert!((n[i] - c[i] - want).abs() <= 1e-5 * (1.0 + c[i].abs()), "coordinate {i}: {} vs {want}", n[i] - c[i]);
    }
    let report = json(&dir.path().join("noisy.report.json"));
    assert_eq!(report["noise_commitment"], hex::encode(secret.commitment()));
    assert_eq!(report["noise_stream"], philox::STREAM_VERSION);
    assert_eq!(report["round"], 4);
    assert!((report["noise_std"].as_f64().expect("std") - f64::from(std)).abs() < 1e-7);
    assert!(!report.to_string().contains(&"ab".repeat(32)), "the report holds the secret");
}

/// Every integer and every hex string in a report, read as a Philox seed (with the report's round
/// or 0 as the stream), and the commitment's own words: none of them gives the noise.
fn guesses_from_report(report: &serde_json::Value) -> Vec<(u64, u64)> {
    fn walk(v: &serde_json::Value, out: &mut Vec<u64>) {
        match v {
            serde_json::Value::Number(n) => out.extend(n.as_u64().into_iter().chain(n.as_f64().map(f64::to_bits))),
            serde_json::Value::String(s) => {
                if let Ok(b) = hex::decode(s) {
                    out.extend(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))));
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut words = Vec::new();
    walk(report, &mut words);
    let round = report["round"].as_u64().expect("round");
    let mut g: Vec<(u64, u64)> = words.iter().flat_map(|&w| [(w, round), (w, 0)]).collect();
    g.extend(words.windows(2).map(|w| (w[0], w[1])));
    g
}

#[test]
fn the_report_does_not_reproduce_the_noise_but_the_auditor_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |name: &str| dir.path().join(name).to_str().expect("utf8").to_owned();
    let (paths, _, _) = inputs(dir.path(), 5, 11);
    let files: Vec<&str> = paths.iter().map(|p| p.to_str().expect("utf8")).collect();
    // The auditor has an identity and publishes a signed announcement.
    let (auditor, ann) = (d("auditor"), d("auditor.ann"));
    let run_env_free = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vain"))
            .args(args)
            .env_remove("VAIN_PASSPHRASE")
            .env_remove("VAIN_IDENTITY_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run vain")
    };
    let env_free = |args: &[&str]| {
        let o = run_env_free(args);
        assert!(o.status.success(), "vain {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    env_free(&["identity", "new", "--dir", &auditor]);
    env_free(&["identity", "announce", "--dir", &auditor, "--out", &ann, "--roles", "validator"]);

    let base = ["aggregate", "--backend", "cpu", "--clip", "1.5", "--round", "7"];
    let clean = d("clean.safetensors");
    let mut a: Vec<&str> = base.to_vec();
    a.extend(["-o", &clean]);
    a.extend(&files);
    run_ok(&a);
    // Two noised runs on the same inputs, the first sealed to the auditor.
    let (n1, n2) = (d("n1.safetensors"), d("n2.safetensors"));
    let mut b: Vec<&str> = base.to_vec();
    b.extend(["--noise-multiplier", "1.2", "--auditor", &ann, "-o", &n1]);
    b.extend(&files);
    let out = run_ok(&b);
    assert!(out.contains("noise secret sealed to the auditor"), "{out}");
    let mut b2: Vec<&str> = base.to_vec();
    b2.extend(["--noise-multiplier", "1.2", "-o", &n2]);
    b2.extend(&files);
    let out = run_ok(&b2);
    assert!(out.contains("noise secret discarded"), "{out}");

    let (c, x1, x2) = (read_output(Path::new(&clean)), read_output(Path::new(&n1)), read_output(Path::new(&n2)));
    let (r1, r2) = (json(&dir.path().join("n1.report.json")), json(&dir.path().join("n2.report.json")));
    assert!(r1.get("noise_seed").is_none() && r2.get("noise_seed").is_none());
    // Same inputs, same report apart from the commitment and the sealing fields, yet different
    // noise: the report does not determine the noise.
    let strip = |r: &serde_json::Value| {
        let mut r = r.clone();
        for k in ["noise_commitment", "noise_sealed_to", "noise_sealed_file"] {
            r.as_object_mut().expect("object").remove(k);
        }
        r
    };
    assert_eq!(strip(&r1), strip(&r2));
    assert_ne!(r1["noise_commitment"], r2["noise_commitment"]);
    assert!(x1.iter().zip(&x2).all(|(a, b)| a != b), "two runs drew the same noise");
    // No number or hex string of the report, used as the stream's words, gives the noise.
    let std = r1["noise_std"].as_f64().expect("std") as f32;
    for (seed, stream) in guesses_from_report(&r1) {
        let mut g = c.clone();
        philox::add_noise(&mut g, 0, std, seed, stream);
        let close = g.iter().zip(&x1).filter(|(a, b)| (*a - *b).abs() <= 1e-4 * (1.0 + b.abs())).count();
        assert!(close < c.len() / 10, "the report's words ({seed:#x}, {stream}) reproduce the noise");
    }

    // The auditor opens the sealed secret and verifies the noise.
    let sealed = d("n1.noise.sealed");
    let secret_out = d("opened.hex");
    let r1p = d("n1.report.json");
    let audit = ["audit", "noise", "--aggregate", &n1, "--report", &r1p, "--sealed", &sealed, "--reference", &clean];
    let mut a1: Vec<&str> = audit.to_vec();
    a1.extend(["--dir", &auditor, "--write-secret", &secret_out]);
    // A report whose noise came from another version of the stream is refused, not misjudged.
    let other = d("other-stream.report.json");
    let mut r_other = r1.clone();
    r_other["noise_stream"] = serde_json::json!(philox::STREAM_VERSION + 1);
    std::fs::write(&other, r_other.to_string()).expect("write");
    let mut a0: Vec<&str> = audit.to_vec();
    a0[5] = &other;
    a0.extend(["--dir", &auditor]);
    let o = run_env_free(&a0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("noise stream version"), "{err}");
    let out = env_free(&a1);
    assert!(out.contains("matches the commitment") && out.contains("noise verified"), "{out}");
    // With the opened secret the auditor regenerates the noise exactly.
    let hexs = std::fs::read_to_string(&secret_out).expect("secret");
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hexs.trim(), &mut bytes).expect("hex");
    let secret = philox::Secret::from_bytes(bytes);
    assert_eq!(hex::encode(secret.commitment()), r1["noise_commitment"]);
    let (seed, stream) = secret.stream(7);
    let mut g = c.clone();
    philox::add_noise(&mut g, 0, std, seed, stream);
    for (i, (a, b)) in g.iter().zip(&x1).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "coordinate {i}: {a} vs {b}");
    }

    // Someone else cannot open it; a report with another commitment or round does not match it;
    // the other run's aggregate is not this secret's noise.
    let other = d("other");
    env_free(&["identity", "new", "--dir", &other]);
    let fail = |extra: &[&str], report: &str, agg: &str, needle: &str| {
        let mut v: Vec<&str> =
            vec!["audit", "noise", "--aggregate", agg, "--report", report, "--sealed", &sealed, "--reference", &clean];
        v.extend(extra);
        let o = vain(&v);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{extra:?}: {err}");
    };
    fail(&["--dir", &other], &r1p, &n1, "does not open for this node");
    let mut bad = r1.clone();
    bad["round"] = 8.into();
    let badp = d("bad.report.json");
    std::fs::write(&badp, bad.to_string()).expect("write");
    fail(&["--dir", &auditor], &badp, &n1, "does not open for this node");
    let mut bad2 = r1.clone();
    bad2["noise_std"] = (std * 2.0).into();
    std::fs::write(&badp, bad2.to_string()).expect("write");
    fail(&["--dir", &auditor], &badp, &n1, "not the reference plus the committed noise");
    fail(&["--dir", &auditor], &r1p, &n2, "not the reference plus the committed noise");
}

#[test]
fn mismatched_or_bad_inputs_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, _, _) = inputs(dir.path(), 3, 9);
    let out = dir.path().join("agg.safetensors");
    let odd = dir.path().join("odd.safetensors");
    let data = vec![0u8; 8];
    let views = vec![("a.weight", TensorView::new(Dtype::F32, vec![2], &data).expect("view"))];
    safetensors::serialize_to_file(views, None, &odd).expect("write");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![paths[0].to_str().expect("p"), odd.to_str().expect("p")], "tensors"),
        (vec![paths[0].to_str().expect("p"), "/nonexistent.safetensors"], "opening /nonexistent.safetensors"),
    ];
    for (files, needle) in cases {
        let mut args = vec!["aggregate", "--backend", "cpu", "-o", out.to_str().expect("p")];
        args.extend(files);
        let o = vain(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{needle}: {err}");
    }
    let all: Vec<&str> = paths.iter().map(|p| p.to_str().expect("p")).collect();
    let mut args = vec!["aggregate", "--backend", "cpu", "--rule", "multi-krum:1,1", "-o", out.to_str().expect("p")];
    args.extend(&all);
    let o = vain(&args);
    assert!(String::from_utf8_lossy(&o.stderr).contains("n ≥ 2f + 3"), "{}", String::from_utf8_lossy(&o.stderr));
    let mut args = vec!["aggregate", "--noise-multiplier", "1", "-o", out.to_str().expect("p")];
    args.extend(&all);
    assert!(String::from_utf8_lossy(&vain(&args).stderr).contains("--clip"));
    let o = vain(&["aggregate", "--pre", "nnm", "-o", "x", "y"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot parse pre-aggregation step"));
    let mut args = vec![
        "aggregate",
        "--backend",
        "cpu",
        "--pre",
        "arc:1+nnm:1",
        "--rule",
        "median",
        "-o",
        out.to_str().expect("p"),
    ];
    args.extend(&all);
    let o = vain(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = vain(&["aggregate", "--rule", "krum", "-o", "x", "y"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot parse rule"));
}

#[test]
fn privacy_epsilon_prints_the_accountant() {
    let o = vain(&[
        "privacy",
        "epsilon",
        "--noise-multiplier",
        "1.1",
        "--sample-rate",
        "0.01",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
    ]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    let eps: f64 = s.split_whitespace().nth(2).expect("value").parse().expect("number");
    let want =
        vain_kernels::privacy::epsilon(0.01, 1.1, 1000, 1e-5, vain_kernels::privacy::DEFAULT_ORDERS).expect("eps");
    assert!((eps - want.epsilon).abs() < 1e-5, "{s}");
    let o = vain(&[
        "privacy",
        "epsilon",
        "--noise-multiplier",
        "-1",
        "--sample-rate",
        "0.01",
        "--steps",
        "1",
        "--delta",
        "1e-5",
    ]);
    assert!(!o.status.success());
}
