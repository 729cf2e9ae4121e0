//! `vain chain` as an operator drives it: the embedded chain served by one process, an account
//! created, funded, staked and registered for a node, a round anchored by hand, and the
//! contracts' refusals reported with their reasons.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vain")).args(args).output().expect("run vain")
}

fn ok(args: &[&str]) -> String {
    let out = vain(args);
    assert!(
        out.status.success(),
        "vain {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = vain(args);
    assert!(!out.status.success(), "vain {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, port: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["chain", "serve", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve");
    let s = Serve(child);
    let start = Instant::now();
    while !dir.join("deployment.json").exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "the embedded chain did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

#[test]
fn an_operator_stakes_registers_and_anchors_on_the_embedded_chain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chain_dir = tmp.path().join("chain");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let server = serve(&chain_dir, port);
    let url = format!("http://127.0.0.1:{port}");
    let dep = chain_dir.join("deployment.json");
    let dep = dep.to_str().expect("utf-8");
    let keystore = tmp.path().join("account.json");
    let pw = tmp.path().join("password");
    std::fs::write(&pw, "correct horse\n").expect("password");
    let (ks, pwf) = (keystore.to_str().expect("utf-8"), pw.to_str().expect("utf-8"));

    // A new account: its address is printed, never its key.
    let address = ok(&["chain", "account", "new", "--keystore", ks, "--password-file", pwf]).trim().to_string();
    assert!(address.starts_with("0x") && address.len() == 42, "{address}");
    assert_eq!(ok(&["chain", "account", "show", "--keystore", ks, "--password-file", pwf]).trim(), address);
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "nope").expect("write");
    let e = fails(&["chain", "account", "show", "--keystore", ks, "--password-file", wrong.to_str().expect("utf-8")]);
    assert!(e.contains("account key"), "{e}");

    let me = ["--rpc-url", &url, "--deployment", dep, "--keystore", ks, "--password-file", pwf];
    let with = |cmd: &[&str], extra: &[&str]| -> Vec<String> {
        cmd.iter().chain(me.iter()).chain(extra.iter()).map(|s| s.to_string()).collect()
    };
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let run_fail = |v: Vec<String>| fails(&v.iter().map(String::as_str).collect::<Vec<_>>());

    // No ether for gas yet: the chain says so.
    let e = run_fail(with(&["chain", "stake"], &["--amount", "10"]));
    assert!(e.contains("lack of funds"), "{e}");
    ok(&[
        "chain",
        "fund",
        "--rpc-url",
        &url,
        "--deployment",
        dep,
        "--dev-account",
        "0",
        "--to",
        &address,
        "--eth",
        "5",
    ]);
    // Ether but no VAIN: the token's own error says why.
    let e = run_fail(with(&["chain", "stake"], &["--amount", "10"]));
    assert!(e.contains("ERC20InsufficientBalance"), "{e}");

    ok(&[
        "chain",
        "fund",
        "--rpc-url",
        &url,
        "--deployment",
        dep,
        "--dev-account",
        "0",
        "--to",
        &address,
        "--vain",
        "12000",
    ]);
    run(with(&["chain", "stake"], &["--amount", "10000"]));

    // A node identity, registered as an aggregator with its signature.
    let node = tmp.path().join("node");
    ok(&["identity", "new", "--dir", node.join("identity").to_str().expect("utf-8")]);
    let e =
        run_fail(with(&["chain", "register"], &["--data-dir", node.to_str().expect("utf-8"), "--role", "validatr"]));
    assert!(e.contains("role"), "{e}");
    let out = run(with(&["chain", "register"], &["--data-dir", node.to_str().expect("utf-8"), "--role", "aggregator"]));
    assert!(out.contains("is aggregator for"), "{out}");
    let status = run(with(&["chain", "status"], &[]));
    assert!(status.contains("staked       10000"), "{status}");
    assert!(status.contains("as aggregator"), "{status}");
    assert!(status.contains("VAIN         2000"), "{status}");

    // Anchors: in order, each once.
    let root = "11".repeat(32);
    let cp = "22".repeat(32);
    let anchor = |round: &str| {
        with(&["chain", "anchor"], &["--model", "mnist-mlp", "--round", round, "--root", &root, "--checkpoint", &cp])
    };
    let out = run(anchor("0"));
    assert!(out.contains("anchored: transaction"), "{out}");
    let e = run_fail(anchor("0"));
    assert!(e.contains("RoundOutOfOrder") && e.contains("next=1"), "{e}");

    // Unstaking waits; the deployer cannot anchor (not registered).
    run(with(&["chain", "unstake"], &["--amount", "1"]));
    let e = run_fail(with(&["chain", "withdraw"], &[]));
    assert!(e.contains("StillBonding"), "{e}");
    let e = fails(&[
        "chain",
        "anchor",
        "--rpc-url",
        &url,
        "--deployment",
        dep,
        "--dev-account",
        "0",
        "--model",
        "mnist-mlp",
        "--round",
        "5",
        "--root",
        &root,
        "--checkpoint",
        &cp,
    ]);
    assert!(e.contains("NotAuthorized"), "{e}");

    // Governance: the deployer (who holds most VAIN) delegates, proposes to slash the
    // aggregator, votes; the proposal waits its blocks and the timelock, then executes.
    let dev0 = ["--rpc-url", url.as_str(), "--deployment", dep, "--dev-account", "0"];
    let dev = |cmd: &[&str], extra: &[&str]| -> Vec<String> {
        cmd.iter().chain(dev0.iter()).chain(extra.iter()).map(|s| s.to_string()).collect()
    };
    run(dev(&["chain", "delegate"], &[]));
    let out =
        run(dev(&["chain", "propose"], &["--slash", &address, "--amount", "4000", "--description", "misbehaved"]));
    let id = out.lines().find_map(|l| l.strip_prefix("proposal ")).expect("proposal id").trim().to_string();
    let e =
        run_fail(dev(&["chain", "propose"], &["--slash", &address, "--amount", "4000", "--description", "misbehaved"]));
    assert!(e.contains("GovernorUnexpectedProposalState"), "{e}");
    let mine = |blocks: &str, secs: &str| {
        ok(&["chain", "mine", "--rpc-url", &url, "--deployment", dep, "--blocks", blocks, "--seconds", secs])
    };
    mine("2", "0");
    let e = run_fail(dev(&["chain", "vote"], &["--proposal", &id, "--support", "maybe"]));
    assert!(e.contains("--support"), "{e}");
    run(dev(&["chain", "vote"], &["--proposal", &id, "--support", "for"]));
    let e = run_fail(dev(&["chain", "execute"], &["--proposal", &id]));
    assert!(e.contains("GovernorUnexpectedProposalState"), "voting is still open: {e}");
    mine("51", "0");
    assert!(run(dev(&["chain", "execute"], &["--proposal", &id])).contains("queued"));
    let e = run_fail(dev(&["chain", "execute"], &["--proposal", &id]));
    assert!(e.contains("TimelockUnexpectedOperationState"), "the timelock waits: {e}");
    mine("1", "3700");
    assert!(run(dev(&["chain", "execute"], &["--proposal", &id])).contains("executed"));
    let status = run(with(&["chain", "status"], &[]));
    assert!(status.contains("staked       5999"), "slashed by 4000: {status}");

    // The pool: a swap within the bound goes through, one beyond it is refused.
    let swap = |min: &str| with(&["chain", "swap"], &["--sell", "vain", "--amount", "10", "--min-out", min]);
    let e = run_fail(swap("10"));
    assert!(e.contains("SlippageExceeded"), "10 VAIN buy a little under 10 of the other token at 1:1: {e}");
    assert!(run(swap("9.9")).contains("swapped"));
    let e = run_fail(with(&["chain", "swap"], &["--sell", "gold", "--amount", "1", "--min-out", "0"]));
    assert!(e.contains("--sell"), "{e}");

    // The chain survives a restart of its process: the stake is still there.
    drop(server);
    let _server = serve(&chain_dir, port);
    let status = run(with(&["chain", "status"], &[]));
    assert!(status.contains("staked       5999"), "{status}");
}

#[test]
fn a_federation_anchors_every_round_and_a_third_party_verifies_an_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args([
            "demo",
            "--rounds",
            "3",
            "--clients",
            "4",
            "--attacks",
            "none",
            "--no-audit",
            "--backend",
            "cpu",
            "--timeout",
            "300",
            "--regions",
            "us,eu",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run vain demo");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["chain"]["anchored_rounds"], summary["rounds"], "{stdout}");
    // The same run puts aggregator 0, the validator and the even clients in region us, the
    // others in eu: the clients in the leader's region take each base checkpoint from it, the
    // others from the standby (or validator) in their own region.
    let rounds = summary["rounds"].as_u64().expect("rounds");
    let leader_region = match summary["closed_by"][0].as_str() {
        Some("aggregator 0") => "us",
        Some("aggregator 1") => "eu",
        other => panic!("closed by {other:?}"),
    };
    assert!(summary["closed_by"].as_array().expect("closed_by").iter().all(|c| c == &summary["closed_by"][0]));
    // The live view counts the clients by ledger tier each round ("1:4": four at tier 1).
    assert!(stdout.contains("tier:clients"), "{stdout}");
    let counted: Vec<usize> = stdout
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| {
                    t.split_once(':').and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<usize>().ok()?)))
                })
                .map(|(_, n)| n)
                .sum()
        })
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(counted.len() as u64, rounds, "{stdout}");
    assert!(counted.iter().all(|n| *n == 4), "{counted:?}\n{stdout}");
    let fetches = summary["checkpoint_fetches"].as_object().expect("checkpoint_fetches");
    assert_eq!(fetches.len(), 4, "{fetches:?}");
    for (client, f) in fetches {
        let n = |k: &str| f["from"][k].as_u64().unwrap_or(0);
        let total: u64 = f["from"].as_object().expect("from").values().filter_map(serde_json::Value::as_u64).sum();
        assert!(total >= 1 && total <= rounds && n("holder") == 0, "{client}: {f}");
        if f["region"] == leader_region {
            assert_eq!(n("nearby"), 0, "{client}: {f}");
        } else {
            assert!(n("nearby") >= 1, "{client} never fetched from its region: {f}");
        }
    }
    // The validator attested the digest every node's ledger reached.
    assert_eq!(summary["chain"]["final_digest_attestations"], 1, "{stdout}");
    // The ledgers took the standby aggregator's and the validator's stake from the chain,
    // through the leader's reports.
    let stakes: Vec<u64> = summary["chain"]["ledger_stakes"]
        .as_object()
        .expect("stakes")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert!(stakes.contains(&10_000) && stakes.contains(&5_000), "{}", summary["chain"]);
    let proven = &summary["chain"]["proven_update"];
    let round = proven["round"].as_u64().expect("a proven update");
    let update = proven["update"].as_str().expect("update").to_string();
    assert!(stdout.contains("proven from the chain alone"), "{stdout}");

    // A third party: the chain's journal served again, the proof from an aggregator's closes,
    // checked with nothing but the RPC URL and the deployment's addresses.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let _chain = serve(&out.join("chain"), port);
    let url = format!("http://127.0.0.1:{port}");
    let proof = tmp.path().join("proof.json");
    let p = proof.to_str().expect("utf-8");
    // The aggregator that closed the round holds its signed close.
    let agg = std::fs::read_dir(out.join("nodes"))
        .expect("nodes")
        .flatten()
        .map(|e| e.path())
        .find(|d| {
            vain(&[
                "chain",
                "proof",
                "--data-dir",
                d.to_str().expect("utf-8"),
                "--round",
                &round.to_string(),
                "--update",
                &update,
                "--out",
                p,
            ])
            .status
            .success()
        })
        .expect("an aggregator with the round's close");
    let dep = out.join("chain").join("deployment.json");
    let dep = dep.to_str().expect("utf-8");
    let verified = ok(&["chain", "verify", "--rpc-url", &url, "--deployment", dep, "--proof", p]);
    assert!(verified.contains(&format!("included: update {update}")), "{verified}");
    // The node that holds the close verifies in one step.
    let direct = ok(&[
        "chain",
        "verify",
        "--rpc-url",
        &url,
        "--deployment",
        dep,
        "--data-dir",
        agg.to_str().expect("utf-8"),
        "--round",
        &round.to_string(),
        "--update",
        &update,
    ]);
    assert!(direct.contains("included"), "{direct}");

    // The same proof for another round, or with a flipped bit, is refused.
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&proof).expect("proof")).expect("json");
    doc["round"] = serde_json::json!((round + 1) % 3);
    std::fs::write(&proof, serde_json::to_vec(&doc).expect("json")).expect("write");
    let e = fails(&["chain", "verify", "--rpc-url", &url, "--deployment", dep, "--proof", p]);
    assert!(e.contains("NOT included"), "{e}");
    doc["round"] = serde_json::json!(round);
    let flipped = {
        let u = doc["update"].as_str().expect("update");
        format!("{}{}", if u.starts_with('0') { "1" } else { "0" }, &u[1..])
    };
    doc["update"] = serde_json::json!(flipped);
    std::fs::write(&proof, serde_json::to_vec(&doc).expect("json")).expect("write");
    let e = fails(&["chain", "verify", "--rpc-url", &url, "--deployment", dep, "--proof", p]);
    assert!(e.contains("NOT included"), "{e}");
    // Rewards: each round's tree is kept by the aggregator that published it; the demo claimed
    // the first leaf of the last one, anyone can submit the others from the file.
    assert!(summary["chain"]["rewards"]["paid"].as_u64().is_some_and(|n| n >= 1), "{}", summary["chain"]);
    let tree_path = std::fs::read_dir(out.join("nodes"))
        .expect("nodes")
        .flatten()
        .map(|e| e.path().join("rewards").join("0.json"))
        .find(|p| p.exists())
        .expect("a rewards file for round 0");
    let tree: serde_json::Value = serde_json::from_slice(&std::fs::read(&tree_path).expect("read")).expect("json");
    let account = tree["leaves"][0]["account"].as_str().expect("account").to_string();
    let claim = [
        "chain",
        "claim",
        "--rpc-url",
        &url,
        "--deployment",
        dep,
        "--dev-account",
        "0",
        "--rewards-file",
        tree_path.to_str().expect("utf-8"),
        "--account",
        &account,
    ];
    let out_claim = ok(&claim);
    assert!(out_claim.contains("claimed") && out_claim.contains("(epoch 0)"), "{out_claim}");
    let e = fails(&claim);
    assert!(e.contains("AlreadyClaimed"), "{e}");
    let e = fails(&[
        "chain",
        "claim",
        "--rpc-url",
        &url,
        "--deployment",
        dep,
        "--dev-account",
        "0",
        "--rewards-file",
        tree_path.to_str().expect("utf-8"),
        "--account",
        "0x000000000000000000000000000000000000dEaD",
    ]);
    assert!(e.contains("has no reward"), "{e}");
    // An update that was not accepted has no proof to write.
    let e = fails(&[
        "chain",
        "proof",
        "--data-dir",
        agg.to_str().expect("utf-8"),
        "--round",
        "0",
        "--update",
        &"ab".repeat(32),
        "--out",
        p,
    ]);
    assert!(e.contains("was not accepted"), "{e}");
}
