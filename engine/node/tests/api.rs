//! The node's HTTP API and dashboard, on a real federation: `vain demo --api` starts two
//! aggregators serving them; a governance proposal made through one and voted through both
//! rides in the rounds' reports to every ledger and bans a client; every route is checked
//! against the run's own files, bad requests get JSON errors, and the dashboard opened in
//! headless Chromium shows the values the API gives (a screenshot is kept at
//! target/dashboard.png).

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 40;

/// The demo, stopped with SIGTERM (which stops its nodes) however the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request (the body, when any, as JSON).
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> std::io::Result<Reply> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status =
        headers.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    let mut body = raw[split + 4..].to_vec();
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok(Reply { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

fn get(port: u16, path: &str) -> Reply {
    http(port, "GET", path, None, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn error_code(r: &Reply) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// The values of attribute `attr` inside the element with `id` (up to its closing `tag`) in a
/// dumped DOM.
fn attrs_in(dom: &str, id: &str, tag: &str, attr: &str) -> Vec<String> {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let end = at + dom[at..].find(&format!("</{tag}>")).expect("element end");
    let pat = format!("{attr}=\"");
    dom[at..end]
        .match_indices(&pat)
        .map(|(i, _)| {
            let v = &dom[at + i + pat.len()..end];
            v[..v.find('"').expect("attribute end")].to_string()
        })
        .collect()
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + dom[at..].find('>').expect("tag end") + 1;
    let end = start + dom[start..].find('<').expect("text end");
    dom[start..end].trim().to_string()
}

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // The page polls; virtual time lets its first refreshes run before the dump.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

#[test]
fn the_api_answers_every_route_and_the_dashboard_shows_the_same_values() {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "api: dashboard", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    // Two free ports in a row: aggregator j serves at port + j.
    let port = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let log = std::fs::File::create(dir.path().join("demo.log")).expect("log");
    let _demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_vain"))
            .args(["-q", "demo", "--clients", "4", "--attacks", "scale:30", "--aggregators", "2"])
            .args(["--kill-primary", "100000", "--quorum", "0.15", "--no-audit"])
            .args(["--model", "mnist-mlp", "--steps", "2", "--backend", "cpu", "--round-time", "30"])
            .args(["--rounds", &ROUNDS.to_string(), "--api", &format!("127.0.0.1:{port}"), "--hold", "600", "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start vain demo"),
    );

    let log_text = || std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    let wait_rounds = |port: u16, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(r) = http(port, "GET", "/api/v1/status", None, None)
                && r.status == 200
                && r.json()["aggregator"]["rounds"].as_u64() >= Some(n)
            {
                return r.json();
            }
            assert!(Instant::now() < deadline, "no {n} rounds in the API: {}", log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Governance, while the rounds go on: aggregator 0 proposes to ban a client, both
    // aggregators vote for it; the reports of the next rounds carry the proposal and the votes
    // to every ledger, which tally them at the window's end.
    let s0 = wait_rounds(port, 3);
    let s1 = wait_rounds(port + 1, 3);
    let token_of = |j: usize| {
        std::fs::read_to_string(out.join("nodes").join(format!("node-0{}", j + 1)).join("api.token"))
            .expect("token")
            .trim()
            .to_string()
    };
    let (t0, t1) = (token_of(0), token_of(1));
    let aggregators = [s0["node_id"].as_str().expect("id"), s1["node_id"].as_str().expect("id")];
    let ledger0 = get(port, "/api/v1/ledger").json();
    // A client whose update round 0 accepted (the ledger also holds the bootstrap node and the
    // validator, whose uptime the validator measures).
    let round0 = get(port, "/api/v1/rounds/0").json();
    let accepted: Vec<String> = round0["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| c["status"] == "accepted")
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    let target = ledger0["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["standing"] == "active" && n["tier"] == 1)
        .filter(|n| accepted.iter().any(|a| n["key"].as_str().is_some_and(|k| k.starts_with(a.as_str()))))
        .map(|n| n["key"].as_str().expect("key").to_string())
        .find(|k| !aggregators.contains(&k.as_str()))
        .expect("an active client");
    let post = |port: u16, path: &str, token: &str, body: &str| {
        http(port, "POST", path, Some(token), Some(body)).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    };
    for (body, code) in [
        (r#"{"kind": "nuke"}"#.to_string(), "bad_parameter"),
        (r#"{"kind": "ban", "node": "zz"}"#.to_string(), "bad_parameter"),
        (format!(r#"{{"kind": "ban", "node": "{target}", "epochs": 0}}"#), "bad_parameter"),
        (r#"{"kind": "set_parameter", "name": "x"}"#.to_string(), "bad_parameter"),
        (r#"{"kind": "set_parameter", "name": "round_length_s", "value": 600}"#.to_string(), "bad_parameter"),
        (r#"{"kind": "set_parameter", "name": "quorum", "value": 2}"#.to_string(), "bad_parameter"),
        (r#"{"kind": "ban", "nod": "x"}"#.to_string(), "bad_json"),
    ] {
        let r = post(port, "/api/v1/proposals", &t0, &body);
        assert_eq!((r.status, error_code(&r).as_str()), (400, code), "{body}: {}", r.text());
    }
    let r = post(port, "/api/v1/proposals", &t1, r#"{"kind": "upgrade", "version": "2"}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (403, "wrong_token"), "each node has its own token");
    let r = post(port, "/api/v1/proposals", &t0, &format!(r#"{{"kind": "ban", "node": "{target}", "epochs": 8}}"#));
    assert_eq!(r.status, 202, "{}", r.text());
    let proposal = r.json();
    assert_eq!(proposal["outcome"], "new");
    let id = proposal["id"].as_str().expect("id").to_string();
    // The proposal reaches aggregator 1 by the flood (pending there until a report carries it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(port + 1, "/api/v1/proposals").text().contains(&id) {
        assert!(Instant::now() < deadline, "the proposal never reached aggregator 1");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = post(port, &format!("/api/v1/proposals/{id}/votes"), &t0, r#"{"choice": "yes"}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["outcome"], "new", "{}", r.text());
    // Aggregator 1's operator votes with `vain gov`, which goes through the same API.
    let gov =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_vain")).arg("gov").args(args).output().expect("run vain gov");
    let api1 = format!("127.0.0.1:{}", port + 1);
    let token1 = out.join("nodes").join("node-02").join("api.token");
    let token1 = token1.to_str().expect("utf-8");
    // A parameter change, proposed with `vain gov` on aggregator 1; both vote for it below.
    let proposed = gov(&[
        "propose",
        "--set",
        "penalties.suspend_for_h=48",
        "--epochs",
        "4",
        "--api",
        &api1,
        "--token-file",
        token1,
    ]);
    assert!(proposed.status.success(), "{proposed:?}");
    let param_id = String::from_utf8_lossy(&proposed.stdout).split_whitespace().nth(1).expect("id").to_string();
    assert_eq!(param_id.len(), 64, "{proposed:?}");

    // Audits of training work: the attacker's update of round 1 (the highest z) and an honest
    // one's (the lowest; not the client about to be banned), one asked through the API, one
    // through `vain audit request`. Every ledger draws the same team — the genesis: both
    // aggregators and the validator — which re-executes the training from the client's signed
    // manifest and votes.
    let round1 = get(port, "/api/v1/rounds/1").json();
    let mut accepted1: Vec<(f64, String)> = round1["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| c["status"] == "accepted")
        .map(|c| (c["z"].as_f64().unwrap_or(0.0), c["id"].as_str().expect("id").to_string()))
        .collect();
    accepted1.sort_by(|a, b| a.0.total_cmp(&b.0));
    let full_key = |short: &str| {
        ledger0["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["key"].as_str())
            .find(|k| k.starts_with(short))
            .expect("in the ledger")
            .to_string()
    };
    let attacker = full_key(&accepted1.last().expect("accepted in round 1").1);
    let honest = accepted1.iter().map(|(_, id)| full_key(id)).find(|k| *k != target && *k != attacker).expect("honest");
    let r = post(port, "/api/v1/audits", &t0, &format!(r#"{{"node": "{attacker}", "round": 1}}"#));
    assert_eq!(r.status, 202, "{}", r.text());
    let asked = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["audit", "request", &honest, "--round", "1", "--api", &api1, "--token-file", token1])
        .output()
        .expect("run vain audit request");
    assert!(asked.status.success() && String::from_utf8_lossy(&asked.stdout).contains("requested"), "{asked:?}");
    let r = post(port, "/api/v1/audits", &t0, r#"{"node": "zz", "round": 1}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_parameter"), "{}", r.text());
    // Asking for an audit changes state: the token, and the right one.
    let body = format!(r#"{{"node": "{honest}", "round": 1}}"#);
    let r = http(port, "POST", "/api/v1/audits", None, Some(&body)).expect("post");
    assert_eq!((r.status, error_code(&r).as_str()), (401, "missing_token"), "{}", r.text());
    let r = post(port, "/api/v1/audits", &t1, &body);
    assert_eq!((r.status, error_code(&r).as_str()), (403, "wrong_token"), "another node's token: {}", r.text());
    let r = post(port, "/api/v1/audits", &t0, &format!(r#"{{"node": "{honest}"}}"#));
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_parameter"), "{}", r.text());
    let wrong = out.join("nodes").join("node-01").join("api.token");
    let refused =
        gov(&["vote", &id, "--choice", "yes", "--api", &api1, "--token-file", wrong.to_str().expect("utf-8")]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("wrong_token"),
        "{refused:?}"
    );
    let voted = gov(&["vote", &id, "--choice", "yes", "--api", &api1, "--token-file", token1]);
    assert!(voted.status.success(), "{voted:?}");
    let voted = gov(&["vote", &param_id, "--choice", "yes", "--api", &api1, "--token-file", token1]);
    assert!(voted.status.success(), "{voted:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(port, "/api/v1/proposals").text().contains(&param_id) {
        assert!(Instant::now() < deadline, "the parameter proposal never reached aggregator 0");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = post(port, &format!("/api/v1/proposals/{param_id}/votes"), &t0, r#"{"choice": "yes"}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(String::from_utf8_lossy(&voted.stdout).contains("(new)"), "{voted:?}");
    let listed = gov(&["list", "--api", &api1]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id[..16]), "{listed:?}");
    let shown = gov(&["show", &id[..12], "--api", &api1]);
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("vain gov show prints the proposal");
    assert_eq!(shown["action"]["node"], target.as_str());
    let again = post(port, &format!("/api/v1/proposals/{id}/votes"), &t0, r#"{"choice": "yes"}"#);
    assert_eq!(again.json()["outcome"], "duplicate", "{}", again.text());
    // Another choice by the same node would be equivocation: refused before it is signed.
    let other = post(port, &format!("/api/v1/proposals/{id}/votes"), &t0, r#"{"choice": "no"}"#);
    assert_eq!((other.status, error_code(&other).as_str()), (409, "already_voted"), "{}", other.text());
    let r = post(port, &format!("/api/v1/proposals/{}/votes", "00".repeat(32)), &t0, r#"{"choice": "yes"}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"), "{}", r.text());
    let r = post(port, &format!("/api/v1/proposals/{id}/votes"), &t0, r#"{"choice": "maybe"}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_parameter"));
    let r = post(port, "/api/v1/proposals/xyz/votes", &t0, r#"{"choice": "no"}"#);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_parameter"));
    // Both aggregators' ledgers tally it the same way: passed, and the client is banned.
    for p in [port, port + 1] {
        let deadline = Instant::now() + Duration::from_secs(120);
        let row = loop {
            let g = get(p, "/api/v1/proposals").json();
            let row = g["proposals"].as_array().expect("proposals").iter().find(|x| x["id"] == id.as_str()).cloned();
            if let Some(row) = row.filter(|r| r["state"] != "open" && r["state"] != "pending") {
                break row;
            }
            assert!(Instant::now() < deadline, "proposal never closed on {p}: {g}\n{}", log_text());
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(row["state"], "passed", "{row}");
        assert_eq!(row["votes"]["yes"], 2, "{row}");
        assert_eq!(row["action"]["node"], target.as_str());
        assert_eq!(get(p, &format!("/api/v1/ledger/{target}")).json()["standing"], "banned");
    }
    // The parameter change passed on both, and both ledgers apply it.
    for p in [port, port + 1] {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let l = get(p, "/api/v1/ledger").json();
            if l["parameters"]["penalties.suspend_for_h"] == 48.0 {
                break;
            }
            assert!(Instant::now() < deadline, "the parameter never changed on {p}: {l}\n{}", log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        let g = get(p, "/api/v1/proposals").json();
        let row = g["proposals"].as_array().expect("proposals").iter().find(|x| x["id"] == param_id.as_str()).cloned();
        assert_eq!(row.as_ref().map(|r| r["state"].clone()), Some(json!("passed")), "{g}");
    }
    // The leader applied the ban before opening its next round (a follower's round may lag).
    let banned_at = [port, port + 1]
        .iter()
        .map(|p| get(*p, "/api/v1/status").json()["aggregator"]["next_round"].as_u64().expect("round"))
        .max()
        .expect("two aggregators");

    // The rounds, through the API itself.
    let status = wait_rounds(port, ROUNDS);

    // Both audits decided alike on both aggregators: the attacker's update is not what its
    // signed inputs give, the honest one's is.
    for p in [port, port + 1] {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let a = get(p, "/api/v1/audits").json();
            let state = |k: &str| {
                a["audits"].as_array().expect("audits").iter().find(|x| x["subject"] == k).map(|x| x["state"].clone())
            };
            if let (Some(bad), Some(good)) = (state(&attacker), state(&honest))
                && bad != "open"
                && good != "open"
            {
                assert_eq!((bad.as_str(), good.as_str()), (Some("failed"), Some("passed")), "{a}");
                break;
            }
            assert!(Instant::now() < deadline, "audits never decided on {p}: {a}\n{}", log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let listed = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["audit", "list", "--api", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run vain audit list");
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("failed") && listed.contains("passed"), "{listed}");

    // On chain, the ban filed a governance proposal to slash the client's stake (every node with
    // a chain account registered it, the client too).
    let filed = Instant::now() + Duration::from_secs(30);
    loop {
        let logs: String = std::fs::read_dir(out.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path().join("node.log")).unwrap_or_default())
            .collect();
        if logs.lines().any(|l| l.contains("slashing proposal filed") && l.contains(&target)) {
            break;
        }
        assert!(Instant::now() < filed, "no slashing proposal filed for the banned client {target}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let data = out.join("nodes").join("node-01");
    let rows: Vec<Value> = std::fs::read_to_string(data.join("aggregator/rounds.jsonl"))
        .expect("rounds.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(rows.len() as u64, ROUNDS);
    // The banned client's updates stop: a round opened after the aggregators' ledgers banned it
    // does not select it (and the QUIC handshake and the control plane refuse it).
    let after: Vec<&Value> = rows.iter().filter(|r| r["round"].as_u64() > Some(banned_at)).collect();
    assert!(!after.is_empty(), "rounds after the ban (at round {banned_at})");
    for r in after {
        let updates = r["updates"].as_array().expect("updates");
        assert!(!updates.iter().any(|u| u.as_str().is_some_and(|u| u.starts_with(&target[..8]))), "{r}");
    }

    // Status: this aggregator, by its identity.
    assert_eq!(status["roles"], serde_json::json!(["aggregator"]));
    assert_eq!(status["model"], "mnist-mlp");
    assert_eq!(status["node_id"].as_str().map(str::len), Some(64));
    assert!(status["control"]["connected"].as_u64() >= Some(5), "{status}");

    // Rounds: the list and each round equal the aggregator's rounds.jsonl.
    let list = get(port, "/api/v1/rounds").json();
    let listed = list["rounds"].as_array().expect("rounds");
    assert_eq!(listed.len() as u64, ROUNDS);
    for (l, row) in listed.iter().zip(&rows) {
        for k in ["round", "accuracy", "loss", "accepted", "rejected", "missing", "checkpoint", "aggregator"] {
            assert_eq!(l[k], row[k], "{k}");
        }
        assert!(l.get("clients").is_none(), "the list leaves the per-client rows out");
        let one = get(port, &format!("/api/v1/rounds/{}", row["round"])).json();
        assert_eq!(&one, row);
    }
    assert_eq!(get(port, "/api/v1/rounds?limit=1").json()["rounds"][0]["round"], ROUNDS - 1);
    for (path, status, code) in [
        ("/api/v1/rounds/99", 404, "not_found"),
        ("/api/v1/rounds/x", 400, "bad_parameter"),
        ("/api/v1/rounds?limit=0", 400, "bad_parameter"),
        ("/api/v1/rounds?limit=many", 400, "bad_parameter"),
        ("/api/v1/ledger/zz", 400, "bad_parameter"),
        ("/api/v1/ledger/0000000000", 404, "not_found"),
        ("/api/v1/nothing", 404, "no_route"),
    ] {
        let r = get(port, path);
        assert_eq!((r.status, error_code(&r).as_str()), (status, code), "{path}: {}", r.text());
    }

    // Ledger: every node's row, and one node found by a prefix of its key.
    let ledger = get(port, "/api/v1/ledger").json();
    let nodes = ledger["nodes"].as_array().expect("nodes").clone();
    assert!(nodes.len() >= 5, "the clients and the aggregator are in the ledger: {ledger}");
    assert_eq!(ledger["next_epoch"].as_u64(), Some(ROUNDS));
    let me = nodes.iter().find(|n| n["key"] == status["node_id"]).expect("the aggregator's row");
    let by_prefix = get(port, &format!("/api/v1/ledger/{}", &me["key"].as_str().expect("key")[..12])).json();
    assert_eq!(&by_prefix, me);

    // Privacy: the demo clips without noise; nothing is spent.
    let privacy = get(port, "/api/v1/privacy").json();
    assert_eq!(privacy["clip"], 2.0);
    assert_eq!(privacy["noise_multiplier"], Value::Null);
    assert_eq!(privacy["epsilon"], Value::Null);

    // The latest checkpoint, and its safetensors bytes hash to its digest.
    let ck = get(port, "/api/v1/checkpoint").json();
    let last = rows.last().expect("row");
    assert_eq!(ck["digest"], last["checkpoint"]);
    assert_eq!(ck["round"], last["round"]);
    let st = get(port, "/api/v1/checkpoint/safetensors");
    assert_eq!(st.status, 200);
    let tensors = safetensors::SafeTensors::deserialize(&st.body).expect("safetensors");
    let mut h = blake3::Hasher::new();
    for name in ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"] {
        h.update(tensors.tensor(name).expect(name).data());
    }
    assert_eq!(hex::encode(h.finalize().as_bytes()), ck["digest"].as_str().expect("digest"));

    // Metrics on the same address agree with the rounds.
    let m = get(port, "/metrics").text();
    let accepted: u64 = rows.iter().map(|r| r["accepted"].as_u64().expect("accepted")).sum();
    assert!(m.contains(&format!("vain_round_updates_total{{status=\"accepted\"}} {accepted}")), "{m}");
    assert!(m.contains("vain_governance_proposals{state=\"passed\"} 2"), "{m}");
    // This aggregator's own ingest: the rounds it closed (a followed round has no backend).
    let own: Vec<&Value> = rows.iter().filter(|r| r["backend"].as_str().is_some_and(|b| !b.is_empty())).collect();
    let own_accepted: u64 = own.iter().map(|r| r["accepted"].as_u64().expect("accepted")).sum();
    let own_bytes: u64 = own.iter().map(|r| r["ingest_bytes"].as_u64().expect("bytes")).sum();
    if own_accepted > 0 {
        assert!(m.contains(&format!("vain_ingest_updates_total{{outcome=\"accepted\"}} {own_accepted}")), "{m}");
        assert!(m.contains(&format!("vain_ingest_bytes_total {own_bytes}")), "{m}");
        assert!(m.contains("vain_aggregation_seconds_count{rule=\"fedavg\",backend=\"cpu\"}"), "{m}");
        assert!(m.contains("vain_shard_cpu_seconds_total{shard=\"0\"}"), "{m}");
        // Each round it closed went through the four phases, recorded as its row says.
        for phase in ["open", "collect", "close"] {
            let series = format!("vain_round_phase_duration_seconds_count{{phase=\"{phase}\"}} {}", own.len());
            assert!(m.contains(&series), "{series}: {m}");
        }
        for r in &own {
            let (open, close) = (r["open_ms"].as_f64().expect("open_ms"), r["close_ms"].as_f64().expect("close_ms"));
            let (round, aggregate) =
                (r["round_ms"].as_f64().expect("round_ms"), r["aggregate_ms"].as_f64().unwrap_or(0.0));
            assert!(open > 0.0 && open <= round && close >= aggregate, "{r}");
        }
        // The clients' QUIC connections to this aggregator's ingest, from the shards' live figures.
        let accepted_connections = m
            .lines()
            .find_map(|l| l.strip_prefix("vain_quic_events_total{event=\"connection accepted\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(accepted_connections >= 1, "{m}");
    }
    // Each round this aggregator closed is anchored on the demo's chain by it (anchoring runs
    // beside the rounds: wait for the last; a transaction that failed is sent again, and a
    // round another aggregator anchored first counts as already anchored).
    let closed = own.iter().filter(|r| r["root"].as_str().is_some_and(|x| x.len() == 64)).count() as u64;
    let anchored = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get(port, "/metrics").text();
        let value = |series: &str| {
            m.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<u64>().ok())).unwrap_or(0)
        };
        let series =
            |outcome: &str| format!("vain_chain_submissions_total{{call=\"anchorRound\",outcome=\"{outcome}\"}} ");
        let (ok, already) = (value(&series("ok")), value(&series("already")));
        assert_eq!(value(&series("reverted")), 0, "{m}");
        if ok + already >= closed {
            assert!(ok >= 1 || closed == 0, "{m}");
            if ok > 0 {
                assert!(value("vain_chain_gas_total{call=\"anchorRound\"} ") > 21_000 * ok, "{m}");
            }
            break;
        }
        assert!(Instant::now() < anchored, "{ok} anchors for {closed} rounds: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(m.contains("# TYPE vain_dht_lookup_duration_seconds histogram"), "{m}");
    assert!(m.contains("vain_dht_lookup_duration_seconds_count "), "{m}");
    // The exposition parses with the Prometheus project's OpenMetrics parser.
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             print(len(list(p(sys.stdin.read()))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                i.write_all(m.as_bytes())?;
            }
            c.wait_with_output()
        })
        .expect("python3");
    let stderr = String::from_utf8_lossy(&parsed.stderr);
    if stderr.contains("No module named") {
        vain_testkit::unavailable(vain_testkit::Need::OpenMetricsParser, "api: exposition parses", stderr);
    } else {
        assert!(parsed.status.success(), "the OpenMetrics parser refused the exposition: {stderr}\n{m}");
        let families: usize = String::from_utf8_lossy(&parsed.stdout).trim().parse().expect("count");
        assert!(families >= 20, "{families} metric families");
    }
    assert!(m.contains("vain_governance_submits_total{outcome=\"new\"}"), "{m}");
    assert!(m.contains("vain_privacy_epsilon 0.0"), "{m}");
    let banned = ledger["nodes"].as_array().expect("nodes").iter().filter(|n| n["tier"] == 0).count();
    assert!(m.contains(&format!("vain_ledger_tier_nodes{{tier=\"0\"}} {banned}")), "{m}");

    // Changing state needs the token from the 0600 file.
    let token_file = data.join("api.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).expect("token").permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token").trim().to_string();
    let dial = r#"{"address": "/ip4/127.0.0.1/tcp/9"}"#;
    let r = http(port, "POST", "/api/v1/peers", None, Some(dial)).expect("post");
    assert_eq!((r.status, error_code(&r).as_str()), (401, "missing_token"));
    assert!(r.headers.to_ascii_lowercase().contains("www-authenticate: bearer"), "{}", r.headers);
    let r = http(port, "POST", "/api/v1/peers", Some("not-the-token-at-all"), Some(dial)).expect("post");
    assert_eq!((r.status, error_code(&r).as_str()), (403, "wrong_token"));
    for (body, code) in
        [("{", "bad_json"), (r#"{"addr": 1}"#, "bad_json"), (r#"{"address": "nowhere"}"#, "bad_parameter")]
    {
        let r = http(port, "POST", "/api/v1/peers", Some(&token), Some(body)).expect("post");
        assert_eq!((r.status, error_code(&r).as_str()), (400, code), "{body}: {}", r.text());
    }
    let r = http(port, "POST", "/api/v1/peers", Some(&token), Some(dial)).expect("post");
    assert_eq!(r.status, 202, "{}", r.text());
    let r = http(port, "DELETE", "/api/v1/ledger", Some(&token), None).expect("delete");
    assert_eq!((r.status, error_code(&r).as_str()), (405, "method_not_allowed"));
    // A body over the limit gets 413. The server may reset the connection while the rest of the
    // body still arrives, which can cost the client the answer: try again then.
    let big = format!(r#"{{"address": "{}"}}"#, "a".repeat(100_000));
    let over = (0..5)
        .find_map(|_| http(port, "POST", "/api/v1/peers", Some(&token), Some(&big)).ok())
        .expect("an answer to the oversized body");
    assert_eq!(over.status, 413, "bodies are bounded");
    // A request naming another host (a page that rebound its name to 127.0.0.1) is refused.
    let mut rebound = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    rebound
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: attacker.example:80\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    let _ = rebound.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 403") && reply.contains("bad_host"), "{reply}");
    // Malformed path segments get JSON errors too; the scheme's name is case-insensitive.
    let r = get(port, "/api/v1/rounds/%FF");
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_parameter"), "{}", r.text());
    let r = http(port, "POST", "/api/v1/peers", None, Some(dial)).expect("post");
    assert_eq!(r.status, 401);
    let mut lower = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let req = format!(
        "POST /api/v1/peers HTTP/1.1\r\nHost: localhost\r\nAuthorization: bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{dial}",
        dial.len()
    );
    lower.write_all(req.as_bytes()).expect("write");
    let mut reply = String::new();
    let _ = lower.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");

    // The dashboard in a real browser.
    if Command::new("chromium").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        vain_testkit::unavailable(vain_testkit::Need::Chromium, "api: dashboard in a browser", "no chromium on PATH");
        return;
    }
    let url = format!("http://127.0.0.1:{port}/");
    let profile = tempfile::tempdir().expect("profile");
    let dumped = chromium(&["--dump-dom", &url], profile.path());
    let dom = String::from_utf8_lossy(&dumped.stdout).into_owned();
    assert!(dom.contains("data-ready=\"1\""), "the page never refreshed: {dom}");
    // The values on the page are the API's.
    let ledger = get(port, "/api/v1/ledger").json();
    assert_eq!(text_of(&dom, "node-id"), status["node_id"].as_str().expect("id"));
    assert_eq!(text_of(&dom, "rounds-closed"), ROUNDS.to_string());
    assert_eq!(text_of(&dom, "last-accuracy"), format!("{:.2} %", 100.0 * last["accuracy"].as_f64().expect("acc")));
    assert_eq!(text_of(&dom, "ledger-digest"), ledger["digest"].as_str().expect("digest"));
    assert_eq!(text_of(&dom, "ledger-epoch"), ROUNDS.to_string());
    assert_eq!(text_of(&dom, "epsilon"), "no noise");
    assert!(dom.contains(&format!("data-proposal=\"{id}\"")), "the proposal is on the page");
    assert!(dom.contains(">passed<"), "with its outcome");
    for r in &rows {
        assert!(dom.contains(&format!("data-round=\"{}\"", r["round"])), "round {} missing from the page", r["round"]);
    }
    for n in ledger["nodes"].as_array().expect("nodes") {
        assert!(dom.contains(&format!("data-key=\"{}\"", n["key"].as_str().expect("key"))), "{n} missing");
    }
    // Each node's trust share (EigenTrust) as the ledger gives it; the clients the aggregators
    // worked with hold one.
    let keys = attrs_in(&dom, "ledger-table", "table", "data-key");
    let shares = attrs_in(&dom, "ledger-table", "table", "data-social");
    assert_eq!(keys.len(), shares.len());
    for (k, share) in keys.iter().zip(&shares) {
        let n = ledger["nodes"].as_array().expect("nodes").iter().find(|n| n["key"] == k.as_str()).expect("node");
        let (shown, social) = (share.parse::<f64>().expect("share"), n["social"].as_f64().expect("social"));
        assert!((shown - social).abs() <= 0.005 + 1e-9, "{share} on the page for {n}");
    }
    assert!(shares.iter().filter(|s| s.as_str() != "0.00").count() >= 3, "{shares:?}");
    assert_eq!(dom.matches("<polyline").count(), 2, "accuracy and loss lines");
    // Throughput: one bar per round after the first, accepted updates per second since the
    // previous close, as the API's rounds give them.
    let list = get(port, "/api/v1/rounds").json();
    let listed = list["rounds"].as_array().expect("rounds");
    let want: Vec<(String, f64)> = listed
        .windows(2)
        .filter_map(|w| {
            let ms = w[1]["closed_ms"].as_f64()? - w[0]["closed_ms"].as_f64()?;
            let accepted = w[1]["accepted"].as_f64()?;
            (ms > 0.0).then(|| (w[1]["round"].to_string(), 1000.0 * accepted / ms))
        })
        .collect();
    let xs = attrs_in(&dom, "chart-throughput", "svg", "data-x");
    let ys = attrs_in(&dom, "chart-throughput", "svg", "data-y");
    assert_eq!(xs.len(), want.len(), "{xs:?}");
    for ((x, y), (round, rate)) in xs.iter().zip(&ys).zip(&want) {
        assert_eq!(x, round);
        assert!((y.parse::<f64>().expect("rate") - rate).abs() < 0.006, "round {round}: {y} vs {rate}");
    }
    // Suspected and banned nodes: those the ledger does not hold active, and those whose update
    // a round found suspect.
    let suspect_ids: std::collections::BTreeSet<&str> =
        listed.iter().flat_map(|r| r["suspects"].as_array().expect("suspects")).filter_map(Value::as_str).collect();
    let mut flagged: Vec<String> = ledger["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["standing"] != "active" || n["id"].as_str().is_some_and(|i| suspect_ids.contains(i)))
        .map(|n| n["key"].as_str().expect("key").to_string())
        .collect();
    let mut on_page = attrs_in(&dom, "suspects-table", "table", "data-key");
    flagged.sort();
    on_page.sort();
    assert!(!flagged.is_empty(), "the banned client at least");
    assert_eq!(on_page, flagged);
    // Peers: every peer the API lists with a verified announcement is on the page.
    let page_peers = attrs_in(&dom, "peers-table", "table", "data-peer");
    let api_peers = get(port, "/api/v1/peers").json();
    let verified: Vec<&str> = api_peers["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter(|p| !p["node_id"].is_null())
        .map(|p| p["peer_id"].as_str().expect("peer_id"))
        .collect();
    assert!(verified.len() >= 5, "{api_peers}");
    for p in verified {
        assert!(page_peers.iter().any(|q| q == p), "peer {p} missing from the page: {page_peers:?}");
    }
    // A screenshot for people, kept where CI can pick it up.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    let shot_profile = tempfile::tempdir().expect("profile");
    let taken =
        chromium(&["--window-size=1400,1700", &format!("--screenshot={}", shot.display()), &url], shot_profile.path());
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&taken.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real picture");
    println!("dashboard screenshot: {}", shot.canonicalize().unwrap_or(shot).display());
}
