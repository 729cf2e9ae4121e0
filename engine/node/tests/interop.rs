//! Interoperability with another libp2p implementation, tried as a new user would: a js-libp2p
//! peer (tests/interop-js, npm packages pinned and installed by the test command) joins three
//! `vain up` nodes, finds a node's signed announcement through the DHT with a `vain` record
//! validator, and has a forged announcement refused by its validator and by every vAIn node.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `vain up`, stopped with SIGINT (which stops its nodes) however the test ends.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(sock: &Path) -> Option<Value> {
    vain_net::control::request(sock, &json!({"cmd": "status"})).ok()
}

#[test]
fn a_js_libp2p_peer_finds_a_node_record_and_has_a_forgery_refused() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop-js");
    let node_ok = Command::new("node").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !node_ok || !js.join("node_modules/libp2p").exists() {
        vain_testkit::unavailable(
            vain_testkit::Need::JsLibp2p,
            "interop: js-libp2p peer",
            "Node.js or tests/interop-js/node_modules missing (npm ci there)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _up = Up(Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["-q", "up", "--nodes", "3", "--seconds", "300", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vain up"));
    let socks: Vec<_> = (0..3).map(|i| dir.path().join(format!("node-0{i}")).join("control.sock")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let statuses = loop {
        let s: Vec<Value> = socks.iter().filter_map(|p| status(p)).collect();
        if s.len() == 3 && s.iter().all(|v| v["live"].as_u64() >= Some(2)) {
            break s;
        }
        assert!(Instant::now() < deadline, "the vAIn nodes never all went live: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let boot = statuses[0]["listen"][0].as_str().expect("listen address").to_string();
    let wanted = statuses[2]["node_id"].as_str().expect("node id").to_string();

    let out = Command::new("timeout")
        .args(["120", "node", "join.mjs", &boot, &wanted])
        .current_dir(&js)
        .stdin(Stdio::null())
        .output()
        .expect("node join.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let steps: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} step:\n{stdout}\n{stderr}"))
    };
    let found = step("found");
    assert_eq!(found["node_id"], wanted.as_str(), "the js peer found the node's own record");
    assert_eq!(found["signing_key"], wanted.as_str());
    // The vAIn nodes it met are in its routing table (they answer kad-dht's pings).
    let routing = step("routing");
    assert!(routing["size"].as_u64() >= Some(2), "the js peer's routing table: {routing}");
    assert_eq!(step("forged")["refused_by_validator"], true);
    let after = step("after-forgery");
    assert_eq!(after["still_genuine"], true, "the forgery did not replace the record");
    assert!(out.status.success(), "{stderr}");

    // Every vAIn node the forgery reached refused it, and saw the js peer's foreign identify.
    let refused: u64 = socks
        .iter()
        .filter_map(|p| status(p))
        .map(|s| s["rejected"]["record bad announcement"].as_u64().unwrap_or(0))
        .sum();
    assert!(refused >= 1, "no vAIn node counted the forged record");
    assert!(after["put_responses"].as_u64() >= Some(1), "the forgery reached no vAIn node: {after}");
}
