//! A hostile peer against a `vain node` process over TCP: forged evidence is refused with its
//! reason and counted; after five forgeries the node disconnects and blocks the sender, whose
//! next requests go unanswered. Evidence an honest forwarder may pass on (signed, from a
//! reporter this node's ledger does not take) is refused but costs nothing. Reporters that
//! equivocate, or race each other for one epoch, leave every node on the same state.

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

/// An in-process libp2p node (identity from `seed`) bootstrapped from `boot`, once it is
/// connected to every node of `to`.
async fn in_process(dir: &std::path::Path, boot: &str, seed: u8, to: &[PeerId]) -> node::Handle {
    in_process_as(dir, boot, seed, to, &[]).await
}

/// [`in_process`], announcing `roles`.
async fn in_process_as(dir: &std::path::Path, boot: &str, seed: u8, to: &[PeerId], roles: &[&str]) -> node::Handle {
    let mut c = vain_net::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: vec![boot.to_string()],
        data_dir: dir.to_path_buf(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    c.mdns.enabled = false;
    c.beacon.enabled = false;
    let me = node::spawn(c, Identity::from_seed([seed; 32]), Transport::Tcp).await.expect("in-process node");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dir = me.directory().await.expect("directory");
        if to.iter().all(|p| dir.iter().any(|e| e.peer_id == *p && e.connected)) {
            return me;
        }
        assert!(Instant::now() < deadline, "connected to {to:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `vain ledger status` prints for the node at `socket`.
fn ledger_status(socket: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["ledger", "status", "--socket"])
        .arg(socket)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn a_peer_forging_evidence_is_refused_counted_and_blocked() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_node, socket) = start(&dir.path().join("node"), None, &[]);
    let status = || control::request(&socket, &json!({"cmd": "status"})).ok();
    wait("the node up", 60, || status().is_some_and(|s| s["listen"][0].is_string()));
    let s: Value = status().expect("status");
    let boot = s["listen"][0].as_str().expect("listen").to_string();
    let target: PeerId = s["peer_id"].as_str().expect("peer id").parse().expect("peer id");
    let rejected = |reason: &str| status().and_then(|s| s["rejected"][reason].as_u64()).unwrap_or(0);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let me = in_process(&dir.path().join("hostile"), &boot, 0x44, &[target]).await;
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
    let text = ledger_status(&socket);
    assert!(text.contains("next epoch 0"), "{text}");
    assert!(text.contains("journal    0 entries since the start (no snapshot yet)"), "{text}");
}

/// Two `vain node` processes of one genesis, the second bootstrapped from the first.
struct Pair {
    nodes: [Child; 2],
    sockets: [std::path::PathBuf; 2],
    /// The first node's address.
    boot: String,
    peers: [PeerId; 2],
}

/// Starts a [`Pair`] in `dir`, once the two see each other live (so the flood between them
/// works).
fn pair(dir: &std::path::Path, genesis: &[[u8; 32]]) -> Pair {
    let status = |s: &std::path::Path| control::request(s, &json!({"cmd": "status"})).ok();
    let (n1, s1) = start(&dir.join("n1"), None, genesis);
    wait("node 1 up", 60, || status(&s1).is_some_and(|s| s["listen"][0].is_string()));
    let boot = status(&s1).expect("status")["listen"][0].as_str().expect("listen").to_string();
    let (n2, s2) = start(&dir.join("n2"), Some(&boot), genesis);
    wait("node 2 up", 60, || status(&s2).is_some_and(|s| s["listen"][0].is_string()));
    let peer = |s: &std::path::Path| -> PeerId {
        status(s).expect("status")["peer_id"].as_str().expect("peer id").parse().expect("peer id")
    };
    let peers = [peer(&s1), peer(&s2)];
    wait("the nodes live to each other", 60, || {
        [&s1, &s2].iter().all(|s| status(s).and_then(|v| v["live"].as_u64()).is_some_and(|n| n >= 1))
    });
    Pair { nodes: [n1, n2], sockets: [s1, s2], boot, peers }
}

/// Two pre-trusted reporters' keys (from seeds `seed` and `seed + 1`) as the genesis, and the
/// two keys, the one that ranks first for epoch 0 first.
fn two_reporters(seed: u8) -> ([[u8; 32]; 2], ed25519_dalek::SigningKey, ed25519_dalek::SigningKey) {
    let keys = [seed, seed + 1].map(|b| ed25519_dalek::SigningKey::from_bytes(&[b; 32]));
    let genesis = keys.clone().map(|k| k.verifying_key().to_bytes());
    let ranking = vain_core::ledger::Ledger::new(
        vain_core::ledger::Config { pretrusted: genesis.to_vec(), ..Default::default() },
        0,
    );
    let rank = |k: &ed25519_dalek::SigningKey| vain_trust::rank(&ranking, 0, &k.verifying_key().to_bytes());
    let [a, b] = keys;
    if rank(&a) < rank(&b) { (genesis, a, b) } else { (genesis, b, a) }
}

/// Governance from a hostile peer against a `vain node`: a forged vote, a vote by a key below
/// the voting tier, a proposal whose window is already over — each refused with its reason and
/// counted; a replayed proposal is taken once. Only the forgery costs the sender.
#[test]
fn forged_ineligible_out_of_window_and_replayed_governance_is_refused_and_counted() {
    use vain_core::governance::{Choice, Kind, Proposal, Vote};
    use vain_core::ledger::Governed;
    let dir = tempfile::tempdir().expect("tmp");
    let proposer = ed25519_dalek::SigningKey::from_bytes(&[0xb1; 32]);
    let (_node, socket) = start(&dir.path().join("node"), None, &[proposer.verifying_key().to_bytes()]);
    let status = || control::request(&socket, &json!({"cmd": "status"})).ok();
    wait("the node up", 60, || status().is_some_and(|s| s["listen"][0].is_string()));
    let s = status().expect("status");
    let boot = s["listen"][0].as_str().expect("listen").to_string();
    let target: PeerId = s["peer_id"].as_str().expect("peer id").parse().expect("peer id");
    let hour = vain_core::HOUR;
    let proposal = |closes, nonce| {
        let body = Proposal { kind: Kind::Unban { node: [7; 32] }, opens: hour, closes, nonce };
        Signed::sign(&proposer, body)
    };
    let open = proposal(10 * hour, 1);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0xb2; 32]);
    let vote = |k: &ed25519_dalek::SigningKey| Signed::sign(k, Vote { proposal: open.digest(), choice: Choice::Yes });
    let mut forged = vote(&stranger);
    forged.body.choice = Choice::No;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let me = in_process(&dir.path().join("peer"), &boot, 0xb3, &[target]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while status().and_then(|s| s["live"].as_u64()) != Some(1) {
            assert!(Instant::now() < deadline, "the node sees us live");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let send = async |g: Governed| me.request(target, Message::Govern(g).encode()).await.expect("an answer");
        assert_eq!(send(Governed::Propose(open.clone())).await, vec![Ack::Taken as u8]);
        assert_eq!(send(Governed::Propose(open.clone())).await, vec![Ack::Taken as u8], "a replay: taken once");
        assert_eq!(send(Governed::Vote(forged)).await, vec![Ack::BadSignature as u8]);
        assert_eq!(send(Governed::Vote(vote(&stranger))).await, vec![Ack::Ineligible as u8], "tier 0 may not vote");
        let over = proposal(hour, 2);
        assert_eq!(send(Governed::Propose(over)).await, vec![Ack::Stale as u8], "its window is over");
    });
    let ledger = control::request(&socket, &json!({"cmd": "ledger"})).expect("ledger");
    let submits = &ledger["submits"];
    for (reason, n) in [("new", 1), ("duplicate", 1), ("bad signature", 1), ("ineligible", 1), ("closed", 1)] {
        assert_eq!(submits[reason], n, "{reason}: {ledger}");
    }
    assert_eq!(ledger["pool"], 1, "only the proposal is held: {ledger}");
    assert_eq!(status().and_then(|s| s["rejected"]["governance forged"].as_u64()), Some(1));
}

/// Starts a `vain node` in `dir` whose ledger takes `pretrusted` as its genesis.
fn start(dir: &std::path::Path, bootstrap: Option<&str>, pretrusted: &[[u8; 32]]) -> (Child, std::path::PathBuf) {
    start_with(dir, bootstrap, pretrusted, "", "")
}

/// [`start`], with `top` at the top of its node.toml (models, roles) and `sections` at its end.
fn start_with(
    dir: &std::path::Path,
    bootstrap: Option<&str>,
    pretrusted: &[[u8; 32]],
    top: &str,
    sections: &str,
) -> (Child, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    let boot = bootstrap.map(|b| format!("bootstrap = [\"{b}\"]\n")).unwrap_or_default();
    let keys: Vec<String> = pretrusted.iter().map(|k| format!("\"{}\"", hex::encode(k))).collect();
    let cfg = format!(
        "{top}listen = [\"/ip4/127.0.0.1/tcp/0\"]\n{boot}data_dir = \"{}\"\n[mdns]\nenabled = false\n[beacon]\nenabled = false\n\
         [liveness]\nheartbeat_interval = 0.5\nstale_after = 3.0\n[pex]\ninterval = 0.5\n[ledger]\npretrusted = [{}]\n{sections}",
        dir.display(),
        keys.join(", ")
    );
    std::fs::write(dir.join("node.toml"), cfg).expect("config");
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_vain"))
            .args(["node", "--config"])
            .arg(dir.join("node.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    (child, dir.join("control.sock"))
}

/// A reporter that signs two different reports for one epoch and sends one to each of two
/// `vain node` processes: each applies the one it got first and refuses the other when the
/// flood brings it, builds the same proof from the pair and passes it on; the next report
/// carries it, and both nodes suspend the reporter at that epoch, take the report each applied
/// out of their past — so they reach the same state digest — and refuse its next report.
#[test]
fn a_reporter_signing_two_reports_for_one_epoch_is_suspended_on_every_node() {
    use vain_core::ledger::{Fork, Governed};
    let dir = tempfile::tempdir().expect("tmp");
    let cheat = ed25519_dalek::SigningKey::from_bytes(&[0x51; 32]);
    let honest = ed25519_dalek::SigningKey::from_bytes(&[0x52; 32]);
    let genesis = [cheat.verifying_key().to_bytes(), honest.verifying_key().to_bytes()];
    let ledger = |s: &std::path::Path| control::request(s, &json!({"cmd": "ledger"})).ok();
    let Pair { nodes: _nodes, sockets: [s1, s2], boot, peers: [p1, p2] } = pair(dir.path(), &genesis);

    let report = |k: &ed25519_dalek::SigningKey, epoch, what, governance| {
        Signed::sign(k, Report { epoch, observations: vec![Observation { subject: [9; 32], what }], governance })
    };
    let a = report(&cheat, 0, Observed::Participated, Vec::new());
    let b = report(&cheat, 0, Observed::Missed, Vec::new());
    let cheat_key = hex::encode(genesis[0]);
    let suspended =
        |s: &std::path::Path| {
            ledger(s).is_some_and(|v| {
                v["next_epoch"] == 2
                    && v["pool"] == 0
                    && v["nodes"].as_array().into_iter().flatten().any(|n| {
                        n["key"] == cheat_key.as_str() && n["standing"] == "suspended" && n["forked_epoch"] == 0
                    })
            })
        };
    let proof_held = |s: &std::path::Path| ledger(s).and_then(|v| v["pool"].as_u64()) == Some(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let me = in_process(&dir.path().join("reporter"), &boot, 0x53, &[p1, p2]).await;
        let (x, y) = tokio::join!(
            me.request(p1, Message::Evidence(a.clone()).encode()),
            me.request(p2, Message::Evidence(b.clone()).encode())
        );
        // Each took the one it got, unless the other's flood was faster (then it refused it).
        for answer in [x.expect("answer"), y.expect("answer")] {
            assert!(answer == [Ack::Taken as u8] || answer == [Ack::Equivocation as u8], "{answer:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(proof_held(&s1) && proof_held(&s2)) {
            assert!(Instant::now() < deadline, "both nodes hold the proof");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for s in [&s1, &s2] {
            let v = ledger(s).expect("ledger");
            assert_eq!(v["next_epoch"], 1);
            assert!(v["offers"]["equivocation"].as_u64() >= Some(1), "{v}");
        }
        // The honest reporter's next report carries the proof (the same one each node holds for
        // whichever report comes next).
        let proof = Governed::Fork(Box::new(Fork::new(&a, &b)));
        let next = report(&honest, 1, Observed::Participated, vec![proof]);
        let answer = me.request(p1, Message::Evidence(next).encode()).await.expect("answer");
        assert_eq!(answer, vec![Ack::Taken as u8]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(suspended(&s1) && suspended(&s2)) {
            assert!(Instant::now() < deadline, "the reporter suspended on both nodes: {:?}", ledger(&s2));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (d1, d2) = (ledger(&s1).expect("ledger"), ledger(&s2).expect("ledger"));
        assert_eq!(d1["digest"], d2["digest"], "the split epoch healed");
        // Its next report counts nowhere.
        let later = report(&cheat, 2, Observed::Participated, Vec::new());
        for p in [p1, p2] {
            let answer = me.request(p, Message::Evidence(later.clone()).encode()).await.expect("answer");
            assert_eq!(answer, vec![Ack::NotAggregator as u8]);
        }
    });
    let text = ledger_status(&s2);
    assert!(text.contains("signed two reports for epoch 0"), "{text}");
}

/// Two reporters sign a report each for the same epoch (two aggregators that both closed a
/// round), and each reaches a different `vain node` first: each node applies the one it got,
/// and when the flood brings the other, the node holding the report that ranks second rebuilds
/// its past with the better one — both end on the same state digest, with the better report's
/// evidence.
#[test]
fn two_reporters_racing_for_one_epoch_leave_every_node_on_the_same_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let (genesis, better, worse) = two_reporters(0x71);
    let ledger = |s: &std::path::Path| control::request(s, &json!({"cmd": "ledger"})).ok();
    let Pair { nodes: _nodes, sockets: [s1, s2], boot, peers: [p1, p2] } = pair(dir.path(), &genesis);
    // The better report says the subject took part, the other that it missed the round.
    let report = |k, what| Signed::sign(k, Report::new(0, vec![Observation { subject: [9; 32], what }]));
    let (good, bad) = (report(&better, Observed::Participated), report(&worse, Observed::Missed));
    let subject = hex::encode([9u8; 32]);
    let took_part = |s: &std::path::Path| {
        ledger(s).is_some_and(|v| {
            v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["key"] == subject.as_str() && n["participation"].as_f64().is_some_and(|p| p > 0.0))
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let me = in_process(&dir.path().join("reporters"), &boot, 0x73, &[p1, p2]).await;
        let (x, y) = tokio::join!(
            me.request(p1, Message::Evidence(good.clone()).encode()),
            me.request(p2, Message::Evidence(bad.clone()).encode())
        );
        for answer in [x.expect("answer"), y.expect("answer")] {
            assert_eq!(answer, vec![Ack::Taken as u8]);
        }
    });
    wait("both nodes on the better report", 30, || {
        took_part(&s1)
            && took_part(&s2)
            && ledger(&s1).map(|v| v["digest"].clone()) == ledger(&s2).map(|v| v["digest"].clone())
    });
    // Each node took one report first and the other second: the second was either outranked
    // (the better one came first) or replaced the first (node 2, unless the flood outran the
    // request).
    for s in [&s1, &s2] {
        let v = ledger(s).expect("ledger");
        let count = |what: &str| v["offers"][what].as_u64().unwrap_or(0);
        assert_eq!(count("replaced") + count("outranked"), 1, "{v}");
        assert_eq!(v["next_epoch"], 1);
    }
}

/// Two nodes that applied different reports for one epoch while apart (each got one, and the
/// flood that would have brought it the other is over) agree once they meet: a third node
/// joining both catches up from one and, asking its peers for the reports of their last
/// epochs, finds the other; the better one displaces the worse on every node.
#[test]
fn nodes_that_applied_different_reports_apart_agree_once_they_meet() {
    let dir = tempfile::tempdir().expect("tmp");
    let (genesis, better, worse) = two_reporters(0x91);
    let ledger = |s: &std::path::Path| control::request(s, &json!({"cmd": "ledger"})).ok();
    let status = |s: &std::path::Path| control::request(s, &json!({"cmd": "status"})).ok();
    let up = |s: &std::path::Path| -> (String, PeerId) {
        wait("a node up", 60, || status(s).is_some_and(|v| v["listen"][0].is_string()));
        let v = status(s).expect("status");
        (
            v["listen"][0].as_str().expect("listen").to_string(),
            v["peer_id"].as_str().expect("peer id").parse().expect("peer id"),
        )
    };
    let (_n1, s1) = start(&dir.path().join("n1"), None, &genesis);
    let (_n2, s2) = start(&dir.path().join("n2"), None, &genesis);
    let ((boot1, p1), (boot2, p2)) = (up(&s1), up(&s2));
    let report = |k, what| Signed::sign(k, Report::new(0, vec![Observation { subject: [9; 32], what }]));
    let (good, bad) = (report(&better, Observed::Participated), report(&worse, Observed::Missed));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let a = in_process(&dir.path().join("a"), &boot1, 0x93, &[p1]).await;
        let b = in_process(&dir.path().join("b"), &boot2, 0x94, &[p2]).await;
        let (x, y) = tokio::join!(
            a.request(p1, Message::Evidence(good.clone()).encode()),
            b.request(p2, Message::Evidence(bad.clone()).encode())
        );
        assert_eq!((x.expect("answer"), y.expect("answer")), (vec![Ack::Taken as u8], vec![Ack::Taken as u8]));
    });
    drop(rt);
    let digest = |s: &std::path::Path| ledger(s).map(|v| v["digest"].clone());
    wait("each applied its report", 30, || [&s1, &s2].iter().all(|s| ledger(s).is_some_and(|v| v["next_epoch"] == 1)));
    assert_ne!(digest(&s1), digest(&s2), "apart, they disagree");
    let top = format!("bootstrap = [\"{boot1}\", \"{boot2}\"]\n");
    let (_n3, s3) = start_with(&dir.path().join("n3"), None, &genesis, &top, "");
    up(&s3);
    wait("all three on the better report", 120, || {
        let d = digest(&s1);
        d.is_some() && d == digest(&s2) && d == digest(&s3)
    });
    // The better report's evidence: the subject took part.
    let subject = hex::encode([9u8; 32]);
    let v = ledger(&s2).expect("ledger");
    let row = v["nodes"].as_array().into_iter().flatten().find(|n| n["key"] == subject.as_str()).expect("row");
    assert!(row["participation"].as_f64() > Some(0.0), "{v}");
    assert_eq!(v["offers"]["replaced"], 1, "{v}");
}

/// A node the ledger bans — here by penalties: a genesis reporter's reports of its anomalous
/// updates until it is suspended a second time — is refused on every plane of a running `vain
/// node` aggregator: its libp2p connection is closed and its next dial denied at the gate, and
/// its next QUIC handshake with the ingest fails, where the same handshake worked before.
#[test]
fn a_node_the_ledger_bans_is_refused_by_the_control_plane_and_the_ingest() {
    if let Err(e) = vain_transport::quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "hostile: a banned node's handshake", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let reporter = ed25519_dalek::SigningKey::from_bytes(&[0xa1; 32]);
    let genesis = [reporter.verifying_key().to_bytes()];
    let victim_seed = [0xa2u8; 32];
    let victim = ed25519_dalek::SigningKey::from_bytes(&victim_seed).verifying_key().to_bytes();
    let ingest = std::net::UdpSocket::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let (_n, s) = start_with(
        &dir.path().join("n"),
        None,
        &genesis,
        "models = [\"mnist-mlp\"]\nroles = [\"aggregator\"]\n",
        &format!("[aggregate]\nlisten = \"{ingest}\"\nshards = 1\nbackend = \"cpu\"\n"),
    );
    let status = || control::request(&s, &json!({"cmd": "status"})).ok();
    wait("the aggregator up", 60, || status().is_some_and(|v| v["listen"][0].is_string()));
    let v = status().expect("status");
    let boot = v["listen"][0].as_str().expect("listen").to_string();
    let target: PeerId = v["peer_id"].as_str().expect("peer id").parse().expect("peer id");
    let server_key = vain_net::keys::public_key(&target).expect("an Ed25519 peer id");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // One QUIC handshake with the ingest, as the victim: Ok when it got through (whatever the
    // ingest then made of the bytes), the error when it did not.
    let handshake = || {
        rt.block_on(async {
            let mut cfg = vain_transport::client::Config::new(ingest, server_key, victim_seed);
            cfg.attempts = 1;
            cfg.connect_timeout = Duration::from_secs(5);
            let mut c = vain_transport::client::Client::new(cfg).expect("client");
            let sent = c.send(b"not an update").await;
            c.close().await;
            sent
        })
    };
    // Refused by the server's certificate check: in TLS 1.3 the client may already count the
    // handshake done when the server, checking the client's key, closes the connection.
    let connect_failed = |r: &Result<_, vain_transport::client::Error>| match r {
        Err(vain_transport::client::Error::Connect { .. }) => true,
        Err(e) => format!("{e:?}").contains("invalid peer certificate"),
        Ok(_) => false,
    };
    let before = handshake();
    assert!(!connect_failed(&before), "before the ban the handshake works: {before:?}");
    let banned = || {
        control::request(&s, &json!({"cmd": "ledger"})).ok().is_some_and(|v| {
            v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["key"] == hex::encode(victim).as_str() && n["standing"] == "banned")
        })
    };
    rt.block_on(async {
        let from = in_process(&dir.path().join("reporter"), &boot, 0xa3, &[target]).await;
        let x = in_process(&dir.path().join("victim"), &boot, 0xa2, &[target]).await;
        // Hours of ledger time: three anomalous rounds suspend the victim for a day; after it,
        // three more ban it.
        for epoch in 0..33u64 {
            let (subject, z) = if !(3..30).contains(&epoch) { (victim, 8.0) } else { ([8; 32], 0.1) };
            let obs = vec![
                Observation { subject, what: Observed::Participated },
                Observation { subject, what: Observed::Anomaly { z } },
            ];
            let r = Signed::sign(&reporter, Report::new(epoch, obs));
            let answer = from.request(target, Message::Evidence(r).encode()).await.expect("an answer");
            assert_eq!(answer, vec![Ack::Taken as u8], "report {epoch}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !banned() {
            assert!(Instant::now() < deadline, "the victim never banned");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The control plane drops the victim's connection …
        let connected =
            async || x.directory().await.expect("directory").iter().any(|e| e.peer_id == target && e.connected);
        let deadline = Instant::now() + Duration::from_secs(10);
        while connected().await {
            assert!(Instant::now() < deadline, "the banned node still connected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // … and the gate denies its next dial.
        let refused = || status().and_then(|v| v["rejected"]["blocked connection"].as_u64()).unwrap_or(0);
        let before = refused();
        let _ = x.dial(boot.parse().expect("multiaddr")).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while refused() <= before {
            assert!(Instant::now() < deadline, "the dial was not denied: {:?}", status());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!connected().await);
    });
    // The ingest's TLS deny list holds it too.
    let after = handshake();
    assert!(connect_failed(&after), "after the ban the handshake fails: {after:?}");
}

/// Who may aggregate is the ledger's: a `vain node` client takes a round open from an
/// aggregator of the genesis (here refused only for naming another model), and refuses one
/// from an aggregator outside it that has not reached the aggregating tier — before looking at
/// anything else it says.
#[test]
fn a_client_refuses_opens_from_an_aggregator_below_the_aggregating_tier() {
    let dir = tempfile::tempdir().expect("tmp");
    let genesis = [0x81u8, 0x82].map(|b| ed25519_dalek::SigningKey::from_bytes(&[b; 32]).verifying_key().to_bytes());
    let (_boot, s0) = start(&dir.path().join("boot"), None, &genesis[..1]);
    let status = |s: &std::path::Path| control::request(s, &json!({"cmd": "status"})).ok();
    wait("the bootstrap node up", 60, || status(&s0).is_some_and(|s| s["listen"][0].is_string()));
    let boot = status(&s0).expect("status")["listen"][0].as_str().expect("listen").to_string();
    let (_client, s1) = start_with(
        &dir.path().join("client"),
        Some(&boot),
        &genesis[..1],
        "models = [\"mnist-mlp\"]\nroles = [\"client\"]\n",
        "",
    );
    wait("the client up", 60, || status(&s1).is_some_and(|s| s["listen"][0].is_string()));
    let client: PeerId = status(&s1).expect("status")["peer_id"].as_str().expect("peer id").parse().expect("peer id");
    let open = |seed: u8| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let deadline_ms = vain_schema::clock::unix_ms() + 60_000;
        let body = vain_round::msg::Open {
            model_id: "another-model".into(),
            layout: [0; 32],
            round: 0,
            base: [0; 32],
            deadline_ms,
            rule: "fedavg".into(),
            codec: "f32".into(),
            zstd: 0,
            clip: 0.0,
            noise_multiplier: 0.0,
            participants: Vec::new(),
        };
        Message::Open(Signed::sign(&key, body)).encode()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let roles = ["aggregator"];
        let inside = in_process_as(&dir.path().join("inside"), &boot, 0x81, &[client], &roles).await;
        let outside = in_process_as(&dir.path().join("outside"), &boot, 0x82, &[client], &roles).await;
        // The client answers as an aggregator's peer once it holds both announcements.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = inside.request(client, open(0x81)).await.expect("an answer");
            let b = outside.request(client, open(0x82)).await.expect("an answer");
            if a != [Ack::NotAggregator as u8] && b != [Ack::NotAggregator as u8] {
                assert_eq!(a, vec![Ack::WrongModel as u8], "the genesis aggregator's open is looked at");
                assert_eq!(b, vec![Ack::Ineligible as u8], "the other's is refused unread");
                break;
            }
            assert!(Instant::now() < deadline, "the client never knew the aggregators: {a:?} {b:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// A node that was not there when a governance input was passed on (here an equivocation
/// proof) gets it from a peer's pool within a few seconds of joining, so it can carry it.
#[test]
fn a_node_that_joins_late_takes_the_governance_its_peers_hold() {
    use vain_core::ledger::{Fork, Governed};
    let dir = tempfile::tempdir().expect("tmp");
    let cheat = ed25519_dalek::SigningKey::from_bytes(&[0x61; 32]);
    let pool = |s: &std::path::Path| {
        control::request(s, &json!({"cmd": "ledger"})).ok().and_then(|v| v["pool"].as_u64()).unwrap_or(0)
    };
    let status = |s: &std::path::Path| control::request(s, &json!({"cmd": "status"})).ok();
    // The genesis makes the cheat a reporter: a proof against a key whose reports nobody takes
    // is not held.
    let genesis = [cheat.verifying_key().to_bytes()];
    let (_n1, s1) = start(&dir.path().join("n1"), None, &genesis);
    wait("node 1 up", 60, || status(&s1).is_some_and(|s| s["listen"][0].is_string()));
    let v = status(&s1).expect("status");
    let boot = v["listen"][0].as_str().expect("listen").to_string();
    let p1: PeerId = v["peer_id"].as_str().expect("peer id").parse().expect("peer id");
    let report = |what| Signed::sign(&cheat, Report::new(4, vec![Observation { subject: [9; 32], what }]));
    let proof = Governed::Fork(Box::new(Fork::new(&report(Observed::Participated), &report(Observed::Missed))));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let me = in_process(&dir.path().join("peer"), &boot, 0x62, &[p1]).await;
        let answer = me.request(p1, Message::Govern(proof).encode()).await.expect("answer");
        assert_eq!(answer, vec![Ack::Taken as u8]);
    });
    drop(rt);
    assert_eq!(pool(&s1), 1);
    let (_n2, s2) = start(&dir.path().join("n2"), Some(&boot), &genesis);
    wait("the late node holds the proof", 60, || pool(&s2) == 1);
}
