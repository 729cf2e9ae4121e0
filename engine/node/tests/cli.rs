//! `vain identity` end to end, as an operator runs it.

use std::path::Path;
use std::process::{Command, Output};

const DAY: u64 = 86_400_000;

fn vain(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vain"));
    c.args(args).env_remove("VAIN_PASSPHRASE").env_remove("VAIN_IDENTITY_DIR").env_remove("VAIN_NOW_MS");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.stdin(std::process::Stdio::null());
    c.output().expect("run vain")
}

fn ok(args: &[&str], envs: &[(&str, &str)]) -> String {
    let o = vain(args, envs);
    assert!(o.status.success(), "vain {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str], envs: &[(&str, &str)], needle: &str) {
    let o = vain(args, envs);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "vain {args:?} succeeded");
    assert!(err.contains(needle), "vain {args:?}: stderr {err:?} lacks {needle:?}");
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("{name} in {out}"))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn create_sign_verify_and_reject_tampering() {
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path().join("id");
    let out = ok(&["identity", "new", "--dir", p(&dir)], &[]);
    let key = field(&out, "current key:");
    assert_eq!(key, field(&out, "node id:"));
    assert!(out.contains("valid, 90.0 days left"), "{out}");
    let msg = t.path().join("msg");
    std::fs::write(&msg, b"global model v7").expect("write");
    let sig = ok(&["identity", "sign", "--dir", p(&dir), p(&msg)], &[]);
    assert_eq!(sig.trim().len(), 128);
    let verified = ok(&["identity", "verify", p(&msg), "--signature", sig.trim(), "--key", &key], &[]);
    assert!(verified.contains("good signature"));
    std::fs::write(&msg, b"global model v8").expect("write");
    fails(&["identity", "verify", p(&msg), "--signature", sig.trim(), "--key", &key], &[], "signature does not verify");
    fails(&["identity", "verify", p(&msg), "--signature", "zz", "--key", &key], &[], "not hex");
    fails(&["identity", "new", "--dir", p(&dir)], &[], "already exists");
    fails(&["identity", "show", "--dir", p(&t.path().join("none"))], &[], "no identity in");
}

#[test]
fn key_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path().join("id");
    ok(&["identity", "new", "--dir", p(&dir)], &[]);
    let key = dir.join("ed25519.key");
    assert_eq!(std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let msg = t.path().join("m");
    std::fs::write(&msg, b"x").expect("write");
    fails(&["identity", "sign", "--dir", p(&dir), p(&msg)], &[], "must not be readable by group or others");
}

#[test]
fn encrypted_identity_needs_the_right_passphrase() {
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path().join("id");
    ok(&["identity", "new", "--dir", p(&dir), "--encrypt"], &[("VAIN_PASSPHRASE", "hunter22")]);
    assert!(std::fs::read(dir.join("ed25519.key")).expect("read").windows(8).all(|w| w != b"hunter22"));
    let msg = t.path().join("m");
    std::fs::write(&msg, b"x").expect("write");
    fails(&["identity", "sign", "--dir", p(&dir), p(&msg)], &[("VAIN_PASSPHRASE", "hunter23")], "wrong passphrase");
    fails(&["identity", "sign", "--dir", p(&dir), p(&msg)], &[], "a passphrase is needed");
    let pf = t.path().join("pass");
    std::fs::write(&pf, "hunter22\n").expect("write");
    ok(&["identity", "sign", "--dir", p(&dir), p(&msg), "--passphrase-file", p(&pf)], &[]);
}

#[test]
fn rotation_keeps_the_node_id_and_expired_chains_are_refused() {
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path().join("id");
    let t0 = 1_790_000_000_000u64;
    let at = |ms: u64| ms.to_string();
    let now0 = at(t0);
    let out = ok(&["identity", "new", "--dir", p(&dir)], &[("VAIN_NOW_MS", &now0)]);
    let node_id = field(&out, "node id:");
    let out = ok(&["identity", "rotate", "--dir", p(&dir), "--validity-days", "30"], &[("VAIN_NOW_MS", &now0)]);
    assert_eq!(field(&out, "node id:"), node_id);
    let k1 = field(&out, "current key:");
    assert_ne!(k1, node_id);
    assert_eq!(field(&out, "rotations:"), "1");

    // Signatures are made by the new key.
    let msg = t.path().join("m");
    std::fs::write(&msg, b"x").expect("write");
    let sig = ok(&["identity", "sign", "--dir", p(&dir), p(&msg)], &[("VAIN_NOW_MS", &now0)]);
    ok(&["identity", "verify", p(&msg), "--signature", sig.trim(), "--key", &k1], &[]);
    fails(&["identity", "verify", p(&msg), "--signature", sig.trim(), "--key", &node_id], &[], "does not verify");

    // Near expiry: a warning. Past it: shown as expired, and rotation from it is refused.
    let soon = at(t0 + 25 * DAY);
    let o = vain(&["identity", "show", "--dir", p(&dir)], &[("VAIN_NOW_MS", &soon)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("expires in"), "{o:?}");
    let late = at(t0 + 31 * DAY);
    let o = vain(&["identity", "show", "--dir", p(&dir)], &[("VAIN_NOW_MS", &late)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("EXPIRED"));
    fails(&["identity", "rotate", "--dir", p(&dir)], &[("VAIN_NOW_MS", &late)], "expired");

    // An announcement made while valid verifies then, and is refused once its chain has expired.
    let ann = t.path().join("ann");
    ok(
        &["identity", "announce", "--dir", p(&dir), "--out", p(&ann), "--roles", "aggregator"],
        &[("VAIN_NOW_MS", &now0)],
    );
    let sealed = t.path().join("sealed");
    ok(&["identity", "seal", p(&msg), "--to", p(&ann), "--out", p(&sealed)], &[("VAIN_NOW_MS", &now0)]);
    fails(&["identity", "seal", p(&msg), "--to", p(&ann), "--out", p(&sealed)], &[("VAIN_NOW_MS", &late)], "expired");
}

#[test]
fn seal_to_an_announced_node_and_open() {
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path().join("id");
    let other = t.path().join("other");
    ok(&["identity", "new", "--dir", p(&dir)], &[]);
    ok(&["identity", "new", "--dir", p(&other)], &[]);
    let ann = t.path().join("ann");
    ok(
        &["identity", "announce", "--dir", p(&dir), "--out", p(&ann), "--address", "/ip4/127.0.0.1/udp/4433/quic-v1"],
        &[],
    );
    let msg = t.path().join("delta.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&msg, &data).expect("write");
    let sealed = t.path().join("delta.sealed");
    ok(&["identity", "seal", p(&msg), "--to", p(&ann), "--out", p(&sealed), "--aad", "round=7"], &[]);
    let opened = t.path().join("delta.out");
    ok(&["identity", "open", "--dir", p(&dir), p(&sealed), "--out", p(&opened), "--aad", "round=7"], &[]);
    assert_eq!(std::fs::read(&opened).expect("read"), data);
    fails(
        &["identity", "open", "--dir", p(&dir), p(&sealed), "--out", p(&opened), "--aad", "round=8"],
        &[],
        "decryption failed",
    );
    fails(
        &["identity", "open", "--dir", p(&other), p(&sealed), "--out", p(&opened), "--aad", "round=7"],
        &[],
        "decryption failed",
    );
    // A tampered announcement is refused before anything is sealed.
    let mut a = std::fs::read(&ann).expect("read");
    let n = a.len();
    a[n - 40] ^= 1;
    std::fs::write(&ann, &a).expect("write");
    fails(&["identity", "seal", p(&msg), "--to", p(&ann), "--out", p(&sealed)], &[], "does not verify");
}

#[test]
fn mnemonic_derivation_is_reproducible() {
    let t = tempfile::tempdir().expect("tmp");
    let words = t.path().join("words");
    std::fs::write(
        &words,
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about\n",
    )
    .expect("write");
    let a = ok(&["identity", "derive", "--mnemonic-file", p(&words), "--path", "m/44'/7331'/0'/0'"], &[]);
    let b = ok(&["identity", "derive", "--mnemonic-file", p(&words), "--path", "m/44H/7331H/0H/0H"], &[]);
    assert_eq!(field(&a, "public key:"), field(&b, "public key:"));
    let c = ok(&["identity", "derive", "--mnemonic-file", p(&words), "--path", "m/44'/7331'/0'/1'"], &[]);
    assert_ne!(field(&a, "public key:"), field(&c, "public key:"));
    let dir = t.path().join("id");
    let d = ok(&["identity", "derive", "--mnemonic-file", p(&words), "--create", "--dir", p(&dir)], &[]);
    assert_eq!(field(&d, "node id:"), field(&a, "public key:"));
    fails(&["identity", "derive", "--mnemonic-file", p(&words), "--path", "m/44/0"], &[], "hardened");
    std::fs::write(
        &words,
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon\n",
    )
    .expect("write");
    fails(&["identity", "derive", "--mnemonic-file", p(&words)], &[], "invalid mnemonic");
}

#[test]
fn help_lists_every_identity_command() {
    let out = ok(&["identity", "--help"], &[]);
    for c in ["new", "show", "derive", "rotate", "sign", "verify", "announce", "seal", "open"] {
        assert!(out.contains(c), "{c} missing from help:\n{out}");
    }
}

/// A fresh SoftHSM2 token labelled `label` under `dir` (user PIN 33334444): the module's path
/// and the config file, or `None` (a counted skip) without SoftHSM2.
fn softhsm(dir: &Path, label: &str, test: &str) -> Option<(&'static str, std::path::PathBuf)> {
    let Some(module) = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .into_iter()
        .find(|m| Path::new(m).exists())
    else {
        vain_testkit::unavailable(vain_testkit::Need::SoftHsm, test, "libsofthsm2.so not found");
        return None;
    };
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).expect("mkdir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()))
        .expect("conf");
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--so-pin", "11112222", "--pin", "33334444"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    Some((module, conf))
}

#[test]
fn hsm_backed_identity_signs_and_rotates_inside_the_token() {
    let t = tempfile::tempdir().expect("tmp");
    let Some((module, conf)) = softhsm(t.path(), "cli-token", "cli: hsm-backed identity") else { return };
    let env = [("SOFTHSM2_CONF", p(&conf)), ("VAIN_PKCS11_PIN", "33334444"), ("VAIN_PKCS11_MODULE", module)];
    let dir = t.path().join("id");
    let out = ok(&["identity", "new", "--dir", p(&dir), "--hsm", "--token", "cli-token", "--key-label", "root"], &env);
    assert!(out.contains("PKCS#11 token \"cli-token\", key \"root\""), "{out}");
    assert!(!dir.join("ed25519.key").exists(), "no secret key file for an HSM identity");
    let msg = t.path().join("m");
    std::fs::write(&msg, b"aggregate r9").expect("write");
    let root = field(&out, "node id:");
    let sig = ok(&["identity", "sign", "--dir", p(&dir), p(&msg)], &env);
    ok(&["identity", "verify", p(&msg), "--signature", sig.trim(), "--key", &root], &[]);

    let out = ok(&["identity", "rotate", "--dir", p(&dir), "--token", "cli-token", "--hsm-key-label", "second"], &env);
    let current = field(&out, "current key:");
    assert_ne!(current, root);
    assert_eq!(field(&out, "node id:"), root);
    let sig = ok(&["identity", "sign", "--dir", p(&dir), p(&msg)], &env);
    ok(&["identity", "verify", p(&msg), "--signature", sig.trim(), "--key", &current], &[]);

    let bad_pin = [("SOFTHSM2_CONF", p(&conf)), ("VAIN_PKCS11_PIN", "00000000"), ("VAIN_PKCS11_MODULE", module)];
    fails(&["identity", "sign", "--dir", p(&dir), p(&msg)], &bad_pin, "login");
    fails(&["identity", "sign", "--dir", p(&dir), p(&msg)], &[], "PKCS#11 token");
}

/// `vain node` on a root key held in a PKCS#11 token: the token certifies the operational key the
/// node runs on; the node's id is the token's key, and the secret root never touches the disk.
#[test]
fn the_node_runs_on_a_root_key_in_a_token() {
    let t = tempfile::tempdir().expect("tmp");
    let Some((module, conf)) = softhsm(t.path(), "node-token", "cli: node on an hsm root") else { return };
    let env = [("SOFTHSM2_CONF", p(&conf)), ("VAIN_PKCS11_PIN", "33334444"), ("VAIN_PKCS11_MODULE", module)];
    let cfg = control_plane_only(t.path());
    let id_dir = t.path().join("data").join("identity");
    let out =
        ok(&["identity", "new", "--dir", p(&id_dir), "--hsm", "--token", "node-token", "--key-label", "root"], &env);
    let root = field(&out, "node id:");

    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vain"));
        c.args(["--log-format", "json", "node", "--token", "node-token", "--key-label", "root", "--config"]).arg(&cfg);
        c.env_remove("VAIN_PKCS11_MODULE").env_remove("VAIN_PKCS11_PIN");
        for (k, v) in env {
            c.env(k, v);
        }
        // A node killed before its signal handler is up leaves its socket: start clean.
        let sock = t.path().join("data").join("control.sock");
        let _ = std::fs::remove_file(&sock);
        let mut child =
            c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("node");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !sock.exists() && std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let o = child.wait_with_output().expect("wait");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let log = run(&env);
    let started = log.lines().find(|l| l.contains("node started")).unwrap_or_else(|| panic!("{log}"));
    assert!(started.contains(&root), "the node's id is the token's key: {started}");
    assert!(log.contains("operational key certified"), "{log}");
    // The operational key is a file key certified by the token's key; the root stays inside.
    let shown = ok(&["identity", "show", "--dir", p(&id_dir)], &[]);
    assert_eq!(field(&shown, "node id:"), root);
    assert_ne!(field(&shown, "current key:"), root);
    assert_eq!(field(&shown, "rotations:"), "1");
    // Later starts run on it without the token, until it nears expiry.
    let log = run(&[]);
    assert!(log.lines().any(|l| l.contains("node started") && l.contains(&root)), "{log}");
    assert!(!log.contains("operational key certified"), "{log}");
}

/// A `node.toml` in `dir` for a node that runs only the control plane on loopback (data in
/// `dir/data`), without LAN discovery.
fn control_plane_only(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("node.toml");
    let text = format!(
        "roles = []\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\ndata_dir = \"{}\"\n[mdns]\nenabled = false\n[beacon]\nenabled = false\n",
        dir.join("data").display()
    );
    std::fs::write(&cfg, text).expect("config");
    cfg
}

/// `vain node` logs with tracing: JSON lines on stderr with `--log-format json`, fewer with -q,
/// more with -v; `RUST_LOG`, when set, decides instead of the flags.
#[test]
fn the_node_logs_json_lines_and_quiet_silences_info() {
    let run_with = |args: &[&str], rust_log: Option<&str>| -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = control_plane_only(dir.path());
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vain"));
        cmd.env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let child = cmd
            .args(args)
            .arg("node")
            .arg("--config")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start vain node");
        let sock = dir.path().join("data").join("control.sock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !sock.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let out = child.wait_with_output().expect("wait");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let run = |args: &[&str]| run_with(args, None);
    let json = run(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> =
        json.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect(l)).collect();
    let started = lines.iter().find(|v| v["fields"]["message"] == "node started").expect("a node started event");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["node_id"].as_str().map(str::len), Some(64), "{started}");
    assert!(lines.iter().any(|v| v["fields"]["message"] == "stopped"), "{json}");
    let quiet = run(&["-q"]);
    assert!(!quiet.contains("node started"), "{quiet}");
    let levels = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["level"].as_str().map(str::to_string))
            .collect()
    };
    let verbose = run(&["-v", "--log-format", "json"]);
    assert!(levels(&verbose).iter().any(|l| l == "DEBUG"), "-v shows debug events: {verbose}");
    assert!(!levels(&json).iter().any(|l| l == "DEBUG"), "the default level shows none: {json}");
    // RUST_LOG decides over -v: warnings only.
    let env = run_with(&["-v", "--log-format", "json"], Some("warn"));
    assert!(levels(&env).iter().all(|l| l == "WARN" || l == "ERROR"), "{env}");
    assert!(!env.contains("node started"), "{env}");
    // And over -q: the node's own debug events.
    let env = run_with(&["-q", "--log-format", "json"], Some("vain=debug"));
    assert!(env.contains("node started"), "{env}");
}

/// The HTTP answer of a node's `/metrics` at `port` (empty when it does not answer).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        })
        .unwrap_or_default()
}

/// `vain node --metrics ADDR` serves OpenMetrics text at /metrics.
#[test]
fn the_node_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = control_plane_only(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["-q", "node", "--metrics", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start vain node");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        match scrape(port) {
            r if r.contains("# EOF") => break r,
            _ if std::time::Instant::now() > deadline => panic!("no metrics served"),
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    };
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait_with_output();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("application/openmetrics-text"), "{body}");
    for name in [
        "vain_ledger_epoch 0",
        "vain_peers_connected",
        "# TYPE vain_rounds counter",
        "# TYPE vain_round_duration_seconds histogram",
        "# UNIT vain_round_duration_seconds seconds",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert!(body.contains("vain_ledger_nodes{standing=\"banned\"} 0"), "{body}");
}

/// `[aggregate] attempts_per_address`: a flood of connection attempts from one address at a
/// `vain node` aggregator's ingest is shed past the budget, and `/metrics` counts what was shed.
#[test]
fn an_aggregator_sheds_connection_attempts_over_its_budget() {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "cli: attempt budget", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let free = || std::net::UdpSocket::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let ingest = free();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "models = [\"mnist-mlp\"]\nroles = [\"aggregator\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\ndata_dir = \"{}\"\n\
             [mdns]\nenabled = false\n[beacon]\nenabled = false\n\
             [aggregate]\nlisten = \"127.0.0.1:{ingest}\"\nshards = 1\nbackend = \"cpu\"\nattempts_per_address = 5\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["-q", "node", "--metrics", &format!("127.0.0.1:{metrics}"), "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vain node");
    let scrape = || scrape(metrics);
    let shed = |body: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with("vain_quic_events_total{event=\"attempt over budget\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !scrape().contains("vain_quic_connections_open") {
        if std::time::Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("the ingest never served: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // 400 client Initials (long header, version 1, 8-byte IDs, no token) whose payload is noise,
    // from one socket: a budget of 5 a second (bursts of 10) takes a handful.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        let mut p = [0u8; 1200];
        for b in p.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        p[0] = 0xc3;
        p[1..5].copy_from_slice(&1u32.to_be_bytes());
        p[5] = 8;
        p[14] = 8;
        p[23] = 0;
        p[24..26].copy_from_slice(&(0x4000u16 | (1200 - 26)).to_be_bytes());
        sock.send_to(&p, ("127.0.0.1", ingest)).expect("send");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 0;
    while std::time::Instant::now() < deadline {
        n = shed(&scrape());
        if n >= 350 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait_with_output();
    assert!((350..=400).contains(&n), "attempts shed: {n} of 400");
}
