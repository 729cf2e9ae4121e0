//! A hostile peer against a `vain node` process over TCP: forged evidence is refused with its
//! reason and counted; after five forgeries the node disconnects and blocks the sender, whose
//! next requests go unanswered. Evidence an honest forwarder may pass on (signed, from a
//! reporter this node's ledger does not take) is refused but costs nothing.

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vain_core::ledger::{Observation, Observed, Report};
use vain_core::signed::Signed;
use vain_net::node::{self, Identity, Transport};
use vain_net::{PeerId, control};
use vain_round::msg::{Ack, Message};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out: {what}");
}

#[test]
fn a_peer_forging_evidence_is_refused_counted_and_blocked() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("node");
    std::fs::create_dir_all(&data).expect("dir");
    let cfg = format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\ndata_dir = \"{}\"\n[mdns]\nenabled = false\n[beacon]\nenabled = false\n\
         [liveness]\nheartbeat_interval = 0.5\nstale_after = 3.0\n[pex]\ninterval = 0.5\n",
        data.display()
    );
    std::fs::write(data.join("node.toml"), cfg).expect("config");
    let _node = Child(
        Command::new(env!("CARGO_BIN_EXE_vain"))
            .args(["node", "--config"])
            .arg(data.join("node.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let socket = data.join("control.sock");
    let status = || control::request(&socket, &json!({"cmd": "status"})).ok();
    wait("the node up", 60, || status().is_some_and(|s| s["listen"][0].is_string()));
    let s: Value = status().expect("status");
    let boot = s["listen"][0].as_str().expect("listen").to_string();
    let target: PeerId = s["peer_id"].as_str().expect("peer id").parse().expect("peer id");
    let rejected = |reason: &str| status().and_then(|s| s["rejected"][reason].as_u64()).unwrap_or(0);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = vain_net::Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: vec![boot],
            data_dir: dir.path().join("hostile"),
            ..Default::default()
        };
        c.mdns.enabled = false;
        c.beacon.enabled = false;
        let me = node::spawn(c, Identity::from_seed([0x44; 32]), Transport::Tcp).await.expect("hostile node");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.directory().await.expect("directory").iter().any(|e| e.peer_id == target && e.connected) {
            assert!(Instant::now() < deadline, "connected to the node");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x45; 32]);
        // Signed, from a reporter the node's ledger does not take: refused, never scored.
        for epoch in 0..8 {
            let r = Signed::sign(&key, Report::new(epoch, Vec::new()));
            let answer = me.request(target, Message::Evidence(r).encode()).await.expect("an answer");
            assert_eq!(answer, vec![Ack::NotAggregator as u8], "ineligible report {epoch}");
        }
        // Evidence that looks right but whose signature does not match its body.
        let mut forged =
            Signed::sign(&key, Report::new(0, vec![Observation { subject: [9; 32], what: Observed::ChallengePassed }]));
        forged.body.epoch = 1;
        let bytes = Message::Evidence(forged).encode();
        // The node knows us once it has our announcement and a heartbeat (connections may
        // churn until then).
        let deadline = Instant::now() + Duration::from_secs(30);
        while status().and_then(|s| s["live"].as_u64()) != Some(1) {
            assert!(Instant::now() < deadline, "the node sees us live");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..4 {
            let answer = me.request(target, bytes.clone()).await.expect("an answer");
            assert_eq!(answer, vec![Ack::BadSignature as u8], "forgery {i}");
        }
        // The fifth reaches the floor: the node blocks us (its answer may not make it out
        // before the connection closes) and serves nothing more.
        let _ = me.request(target, bytes.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = tokio::time::timeout(Duration::from_secs(3), me.request(target, bytes.clone())).await;
            if !matches!(answered, Ok(Ok(_))) {
                break;
            }
            assert!(Instant::now() < deadline, "still served after five forgeries");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(rejected("evidence forged"), 5);
    assert_eq!(rejected("blocked"), 1);
    // None of it reached the ledger: `vain ledger status` shows an untouched journal.
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["ledger", "status", "--socket"])
        .arg(&socket)
        .output()
        .expect("vain ledger status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("next epoch 0"), "{text}");
    assert!(text.contains("journal    0 entries since the start (no snapshot yet)"), "{text}");
}
