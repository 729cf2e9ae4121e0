//! The aggregator's coordinator in one process, on the control plane's memory transport and a
//! real QUIC ingest service: updates from a node that was not selected, relayed over another
//! node's connection, or for a closed round are refused with their reasons in the signed close;
//! a participant that never sends is listed as missing; and a round with fewer updates than the
//! minimum at its deadline closes as "too few", keeping its base.

use ed25519_dalek::{Signer, SigningKey};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use vain_ingest::update::{Encoder, Round as UpdateRound, Tensor};
use vain_kernels::backend::{Backend, Error as BackendError, Kind, Update};
use vain_kernels::cpu::CpuBackend;
use vain_kernels::encode::Codec;
use vain_learn::model::{self, Arch, Model};
use vain_learn::{DType, Device};
use vain_net::node::{self, Identity, Inbound, Transport};
use vain_net::records::Key;
use vain_round::coordinator::{self, Coordinator, Link};
use vain_round::msg::{self, Ack, Close, Message, Outcome};
use vain_round::participant::Participant;
use vain_round::store::Store;
use vain_transport::client::{Client, Config as ClientConfig};
use vain_transport::quic;
use vain_transport::tls::{self, Policy};

mod common;
use common::{config, seed, trainer};

/// The node's request handler: fetches from `store`, status and closes to `link`, opens to
/// `participant` — or, for a node that takes opens and then never sends, `Taken` and a signal.
fn serve(
    mut rx: mpsc::Receiver<Inbound>,
    store: Option<Store>,
    link: Option<Link>,
    participant: Option<Participant>,
    opened: Option<mpsc::Sender<u64>>,
) {
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let answer = match Message::decode(&req.request) {
                Err(_) => vec![Ack::Malformed as u8],
                Ok(Message::Fetch(d)) => msg::encode_checkpoint(store.as_ref().and_then(|s| s.get(&d)).as_deref()),
                Ok(Message::Status(m)) => match &link {
                    Some(l) => l.status(&m).encode(),
                    None => msg::Status { serves: false, leading: false, tier: 0, round: 0 }.encode(),
                },
                Ok(Message::Close(c)) if link.is_some() => match &link {
                    Some(l) => vec![l.offer(c, &req) as u8],
                    None => vec![Ack::NotAggregator as u8],
                },
                Ok(Message::Open(o)) if opened.is_some() => {
                    if let Some(tx) = &opened {
                        let _ = tx.send(o.body.round).await;
                    }
                    vec![Ack::Taken as u8]
                }
                Ok(m) => match &participant {
                    Some(p) => p.answer(m, &req).await,
                    None => vec![Ack::Taken as u8],
                },
            };
            let _ = req.reply.send(answer);
        }
    });
}

/// An aggregator on memory port `port`: its QUIC ingest first, then the control plane
/// announcing it, its coordinator, and the request handler serving its store and link. Returns
/// the control plane's handle, the coordinator and the node's bootstrap address.
async fn aggregator(
    port: u64,
    seed: [u8; 32],
    ccfg: coordinator::Config,
    dir: &std::path::Path,
    backend: Box<dyn Backend>,
) -> (node::Handle, Coordinator, String) {
    let deny = Arc::new(std::sync::RwLock::new(std::collections::BTreeSet::new()));
    let q = quic::Config::new(
        "127.0.0.1:0".parse().expect("addr"),
        tls::server_config(&seed, Policy::AnyExcept(deny)).expect("tls"),
    );
    let service = vain_aggregator::Service::start(q, 1, 16).expect("service");
    let mut acfg = config(port, &["aggregator"], None);
    acfg.ingest = vec![service.local_addr().to_string()];
    let (atx, arx) = mpsc::channel(64);
    let agg = node::spawn_serving(acfg, Identity::from_seed(seed), Transport::Memory, atx).await.expect("agg");
    let boot = format!("/memory/{port}/p2p/{}", agg.peer_id);
    let c = Coordinator::new(
        ccfg,
        agg.clone(),
        tokio::runtime::Handle::current(),
        service,
        backend,
        SigningKey::from_bytes(&seed),
        dir.to_path_buf(),
    )
    .expect("coordinator");
    serve(arx, Some(c.store()), Some(c.link()), None, None);
    (agg, c, boot)
}

/// A rival aggregator that serves the model and answers every status request with `status`
/// (counting them), and a client that takes every open and signals its round; returns once
/// `agg` is connected to both.
async fn rival_and_client(
    agg: &node::Handle,
    port: u64,
    boot: &str,
    (rival, client): (u8, u8),
    status: msg::Status,
) -> ([node::Handle; 2], Arc<std::sync::atomic::AtomicU64>, mpsc::Receiver<u64>) {
    let (ptx, mut prx) = mpsc::channel::<Inbound>(64);
    let peer = node::spawn_serving(
        config(port, &["aggregator"], Some(boot.to_string())),
        Identity::from_seed(seed(rival)),
        Transport::Memory,
        ptx,
    )
    .await
    .expect("rival aggregator");
    let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while let Some(req) = prx.recv().await {
            let answer = match Message::decode(&req.request) {
                Ok(Message::Status(_)) => {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    status.encode()
                }
                _ => vec![Ack::Taken as u8],
            };
            let _ = req.reply.send(answer);
        }
    });
    let (ctx, crx) = mpsc::channel(64);
    let taker = node::spawn_serving(
        config(port + 1, &["client"], Some(boot.to_string())),
        Identity::from_seed(seed(client)),
        Transport::Memory,
        ctx,
    )
    .await
    .expect("client");
    let (otx, opened) = mpsc::channel(8);
    serve(crx, None, None, None, Some(otx));
    let deadline = Instant::now() + Duration::from_secs(20);
    while agg.directory().await.map(|d| d.iter().filter(|e| e.connected).count()).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "the nodes did not find each other");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ([peer, taker], asked, opened)
}

/// A client node on memory port `port` training `mnist-mlp` on 100 embedded digits, its state
/// in `dir`, answering opens and closes.
async fn training_client(port: u64, boot: &str, key: u8, dir: std::path::PathBuf) -> node::Handle {
    let (tx, rx) = mpsc::channel(64);
    let client = node::spawn_serving(
        config(port, &["client"], Some(boot.to_string())),
        Identity::from_seed(seed(key)),
        Transport::Memory,
        tx,
    )
    .await
    .expect("client");
    let p = Participant::start(trainer(0..100, 200, 3, dir), client.clone(), seed(key)).expect("participant");
    serve(rx, None, None, Some(p), None);
    client
}

/// Waits until `client` knows `n` nodes, then has `agg` provide the model's directory key (so
/// the client finds it listed when the first open comes).
async fn meet(client: &node::Handle, agg: &node::Handle, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.directory().await.map(|d| d.len()).unwrap_or(0) < n {
        assert!(Instant::now() < deadline, "the nodes did not find each other");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agg.provide(Key::aggregators("mnist-mlp")).await.expect("provide");
}

/// A signed update frame of `key` for `round` on `base` (a small random-looking delta).
fn frame(key: &SigningKey, round: u64, base: [u8; 32]) -> Vec<u8> {
    let arch = Arch::MnistMlp;
    let values: Vec<f32> = (0..arch.dim()).map(|i| ((i % 7) as f32 - 3.0) * 1e-4).collect();
    let layout = arch.layout();
    let mut tensors = Vec::new();
    let mut at = 0;
    for l in &layout {
        let k = l.shape.iter().product::<u64>() as usize;
        tensors.push(Tensor { name: &l.name, shape: &l.shape, values: &values[at..at + k] });
        at += k;
    }
    let r = UpdateRound { model_id: "mnist-mlp".into(), round, base_model: base, num_examples: 10, timestamp_ms: 1 };
    let mut nonce = [0u8; 16];
    nonce[0] = round as u8;
    let mut enc = Encoder::new(Codec::F32, None);
    enc.build_with(key.verifying_key().to_bytes(), &mut |m| Ok(key.sign(m).to_bytes()), &r, nonce, &tensors)
        .expect("frame")
        .frame
}

fn closes(dir: &std::path::Path) -> Vec<Close> {
    let b = std::fs::read(dir.join("closes.bin")).unwrap_or_default();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let n = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        if let Ok(Message::Close(c)) = Message::decode(&b[at + 4..at + 4 + n]) {
            assert!(c.verify().is_ok());
            out.push(c.body);
        }
        at += 4 + n;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_missing_participants_and_too_few_updates_are_in_the_signed_close() {
    use vain_core::ledger::{Observed, Report};
    use vain_core::signed::Signed;
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "round: coordinator refusals", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");

    let agg_seed = seed(11);
    let ccfg = coordinator::Config {
        rounds: 2,
        round_time: Duration::from_secs(6),
        min_clients: 2,
        min_updates: 2,
        failover_after: Duration::from_millis(200),
        ..coordinator::Config::new(Arch::MnistMlp)
    };
    let (agg, c, boot) = aggregator(9200, agg_seed, ccfg, &dir.path().join("agg"), Box::new(CpuBackend::new(1))).await;
    let ingest_addr = c.local_addr();
    // The ledger bans the silent participant once round 1 is open.
    let banned = Arc::new(AtomicBool::new(false));
    let flag = banned.clone();
    let silent_key = SigningKey::from_bytes(&seed(13)).verifying_key().to_bytes();
    let c = c.with_exclusions(Arc::new(move |k| *k == silent_key && flag.load(std::sync::atomic::Ordering::Relaxed)));
    // The evidence each closed round hands the ledger.
    let reports: Arc<std::sync::Mutex<Vec<Signed<Report>>>> = Arc::default();
    let took = reports.clone();
    let c = c.with_evidence(Arc::new(move |r| took.lock().expect("reports").push(r)));

    // An honest client.
    let client = training_client(9201, &boot, 12, dir.path().join("client")).await;

    // A participant that takes every open and never sends.
    let (stx, srx) = mpsc::channel(64);
    let _silent = node::spawn_serving(
        config(9202, &["client"], Some(boot.clone())),
        Identity::from_seed(seed(13)),
        Transport::Memory,
        stx,
    )
    .await
    .expect("silent");
    let (otx, mut opened) = mpsc::channel(8);
    serve(srx, None, None, None, Some(otx));

    // A node that announces no client role (so it is never selected) and sends anyway.
    let (rtx, rrx) = mpsc::channel(64);
    let _rogue =
        node::spawn_serving(config(9203, &[], Some(boot)), Identity::from_seed(seed(14)), Transport::Memory, rtx)
            .await
            .expect("rogue");
    serve(rrx, None, None, None, None);

    meet(&client, &agg, 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || c.run(&s, |_| {}));

    // Round 0 is open once the silent participant has its open.
    let r = tokio::time::timeout(Duration::from_secs(30), opened.recv()).await.expect("round 0 opens");
    assert_eq!(r, Some(0));
    let base =
        model::digest(&Model::init(Arch::MnistMlp, 1, &Device::Cpu, DType::F32).expect("model").flat().expect("flat"));
    let rogue_key = SigningKey::from_bytes(&seed(14));
    let send_as = |who: u8, f: Vec<u8>| async move {
        let mut c = Client::new(ClientConfig::new(
            ingest_addr,
            SigningKey::from_bytes(&agg_seed).verifying_key().to_bytes(),
            seed(who),
        ))
        .expect("client");
        c.send(&f).await.expect("sent");
        c.close().await;
    };
    let send = |f: Vec<u8>| send_as(14, f);
    // Not selected.
    send(frame(&rogue_key, 0, base)).await;
    // Signed by someone else than the connection's identity.
    send(frame(&SigningKey::from_bytes(&seed(15)), 0, base)).await;

    // Round 1: an update for the closed round 0.
    let r = tokio::time::timeout(Duration::from_secs(30), opened.recv()).await.expect("round 1 opens");
    assert_eq!(r, Some(1));
    send(frame(&rogue_key, 0, base)).await;
    // Selected for round 1, banned while it is open: its update is refused.
    banned.store(true, std::sync::atomic::Ordering::Relaxed);
    send_as(13, frame(&SigningKey::from_bytes(&seed(13)), 1, base)).await;

    let result = tokio::task::spawn_blocking(move || run.join()).await.expect("join");
    result.expect("thread").expect("coordinator");
    let cs = closes(&dir.path().join("agg"));
    assert_eq!(cs.len(), 2, "{cs:?}");
    let me = |i: u8| SigningKey::from_bytes(&seed(i)).verifying_key().to_bytes();

    // Round 0: the honest update accepted, the silent participant missing, two refusals with
    // their reasons; fewer than two updates: "too few", the base stays.
    let c0 = &cs[0];
    assert_eq!(c0.outcome, Outcome::TooFew);
    assert_eq!(c0.checkpoint, c0.base);
    assert_eq!(c0.base, base);
    assert_eq!(c0.accepted.iter().map(|a| a.sender).collect::<Vec<_>>(), vec![me(12)]);
    assert_eq!(c0.missing, vec![me(13)]);
    assert!(c0.rejected.contains(&(me(14), "not allowed".to_string())), "{:?}", c0.rejected);
    assert!(c0.rejected.contains(&(me(15), "relayed".to_string())), "{:?}", c0.rejected);
    assert_eq!(c0.root, vain_round::merkle::root(&c0.leaves()));
    // Its evidence: the honest client took part, the silent one missed the round.
    let r0 = reports.lock().expect("reports")[0].body.clone();
    assert_eq!(r0.epoch, 0);
    let said = |k: [u8; 32], what: Observed| r0.observations.iter().any(|o| o.subject == k && o.what == what);
    assert!(said(me(12), Observed::Participated), "{:?}", r0.observations);
    assert!(said(me(13), Observed::Missed), "{:?}", r0.observations);
    assert!(!said(me(13), Observed::Participated));
    // Round 1: the update for round 0 is refused as such.
    let c1 = &cs[1];
    assert_eq!(c1.base, base, "round 0 kept its base");
    assert!(c1.rejected.contains(&(me(14), "wrong round".to_string())), "{:?}", c1.rejected);
    assert!(c1.rejected.contains(&(me(13), "not allowed".to_string())), "{:?}", c1.rejected);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Leadership among a model's aggregators follows the ledger's tiers, not what a peer claims:
/// another aggregator of the model that announces the top tier in its status (and is not
/// leading) would rank first by its claim; the ledger puts it at tier 0 and this aggregator at
/// tier 1, so this one leads and opens the rounds. After its last round, governance that
/// arrives (an audit request) gets an evidence epoch of its own; testimony alone, or what a
/// report already carried, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_not_a_peers_claim_decides_who_leads_and_later_governance_gets_an_epoch() {
    use vain_core::ledger::{AuditRequest, Governed, Report};
    use vain_core::signed::Signed;
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "round: leader by ledger tier", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_seed = seed(21);
    let ccfg = coordinator::Config {
        rounds: 1,
        round_time: Duration::from_secs(2),
        min_clients: 1,
        failover_after: Duration::from_millis(200),
        evidence_interval: Duration::from_millis(300),
        ..coordinator::Config::new(Arch::MnistMlp)
    };
    let (agg, c, boot) = aggregator(9300, agg_seed, ccfg, &dir.path().join("agg"), Box::new(CpuBackend::new(1))).await;
    let me = SigningKey::from_bytes(&agg_seed).verifying_key().to_bytes();
    let c = c.with_tiers(Arc::new(move |k| u8::from(*k == me)));
    // A ledger stand-in: the reports it took, and the pool the reports carry from.
    let reports: Arc<std::sync::Mutex<Vec<Signed<Report>>>> = Arc::default();
    let pool: Arc<std::sync::Mutex<Vec<Governed>>> = Arc::default();
    let (took, next, held) = (reports.clone(), reports.clone(), pool.clone());
    let c = c
        .with_evidence(Arc::new(move |r| took.lock().expect("reports").push(r)))
        .with_epochs(Arc::new(move || next.lock().expect("reports").last().map_or(0, |r| r.body.epoch + 1)))
        .with_governance(Arc::new(move || held.lock().expect("pool").clone()));
    let link = c.link();

    // The other aggregator: serves the model, not leading, claims tier 255; and a client that
    // takes the open.
    let status = msg::Status { serves: true, leading: false, tier: 255, round: 0 };
    let (_nodes, claims, mut opened) = rival_and_client(&agg, 9301, &boot, (22, 23), status).await;

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || c.run(&s, |_| {}));
    let r = tokio::time::timeout(Duration::from_secs(30), opened.recv()).await.expect("this aggregator opens round 0");
    assert_eq!(r, Some(0));
    assert!(claims.load(std::sync::atomic::Ordering::Relaxed) > 0, "the peer's status was asked and weighed");
    // Its own status publishes the ledger's tier.
    assert_eq!(link.status("mnist-mlp").tier, 1);
    assert!(link.leading().0);

    let count = || reports.lock().expect("reports").len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() < 1 {
        assert!(Instant::now() < deadline, "round 0 closed with its report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Testimony alone starts no epoch.
    let validator = SigningKey::from_bytes(&seed(24));
    let testimony = Governed::Testimony(Signed::sign(&validator, Report::new(1, Vec::new())));
    pool.lock().expect("pool").push(testimony.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), 1, "no epoch for testimony alone");
    // An audit request does, carrying the testimony with it, at the ledger's next epoch.
    let request =
        Governed::RequestAudit(Signed::sign(&validator, AuditRequest { subject: [9; 32], round: 0, nonce: 1 }));
    pool.lock().expect("pool").push(request.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() < 2 {
        assert!(Instant::now() < deadline, "an evidence epoch for the audit request");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let r = reports.lock().expect("reports");
        assert_eq!(r[0].body.epoch, 0);
        assert_eq!(r[1].body.epoch, 1);
        assert_eq!(r[1].body.governance, vec![testimony, request]);
        assert!(r[1].verify().is_ok());
    }
    // What a report carried starts no other epoch, though the pool still holds it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), 2, "nothing new, no epoch");
    assert_eq!(link.leading().1, 2, "the next round follows the evidence epoch");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let result = tokio::task::spawn_blocking(move || run.join()).await.expect("join");
    result.expect("thread").expect("coordinator");
}

/// A leader the node's ledger keeps out (here: a proof that it forked is held) is neither
/// followed nor ranked: this aggregator opens the rounds although the other claims to lead.
/// Kept out itself, it steps down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_the_ledger_keeps_out_is_not_followed_and_one_kept_out_steps_down() {
    use std::sync::atomic::Ordering;
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "round: kept-out leader", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_seed = seed(51);
    let ccfg = coordinator::Config {
        rounds: 0,
        round_time: Duration::from_secs(1),
        min_clients: 1,
        failover_after: Duration::from_millis(200),
        ..coordinator::Config::new(Arch::MnistMlp)
    };
    let (agg, c, boot) = aggregator(9600, agg_seed, ccfg, &dir.path().join("agg"), Box::new(CpuBackend::new(1))).await;
    let me = SigningKey::from_bytes(&agg_seed).verifying_key().to_bytes();
    let other = SigningKey::from_bytes(&seed(52)).verifying_key().to_bytes();
    // The other aggregator ranks first by the ledger's tiers and says it leads.
    let keep_out_me = Arc::new(AtomicBool::new(false));
    let flag = keep_out_me.clone();
    let c = c
        .with_tiers(Arc::new(move |k| if *k == other { 2 } else { 1 }))
        .with_kept_out(Arc::new(move |k| *k == other || (*k == me && flag.load(Ordering::Relaxed))));
    let link = c.link();
    let status = msg::Status { serves: true, leading: true, tier: 2, round: 0 };
    let (_nodes, asked, mut opened) = rival_and_client(&agg, 9601, &boot, (52, 53), status).await;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || c.run(&s, |_| {}));
    let r = tokio::time::timeout(Duration::from_secs(30), opened.recv()).await.expect("this aggregator opens round 0");
    assert_eq!(r, Some(0));
    assert!(link.leading().0);
    // Not even asked: a kept-out aggregator is not among those whose status counts.
    assert_eq!(asked.load(Ordering::Relaxed), 0);
    keep_out_me.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while link.leading().0 {
        assert!(Instant::now() < deadline, "a kept-out aggregator steps down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And opens nothing more.
    while opened.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(opened.try_recv().is_err(), "no round opened while kept out");

    // Closes it does not adopt are answered or ignored, each counted by why: a forged one, one
    // of another model, one of a round already past, and one from the kept-out peer it does not
    // follow.
    let rival = SigningKey::from_bytes(&seed(52));
    let next = link.leading().1;
    let close = |round: u64, model: &str| msg::Close {
        model_id: model.into(),
        round,
        base: [9; 32],
        checkpoint: [8; 32],
        outcome: msg::Outcome::TooFew,
        rule: "fedavg".into(),
        root: [0; 32],
        accepted: Vec::new(),
        rejected: Vec::new(),
        missing: Vec::new(),
        suspects: Vec::new(),
        verdicts: Vec::new(),
        noise: None,
        epsilon: f64::NAN,
    };
    let send = async |signed: vain_core::signed::Signed<msg::Close>| {
        let a = _nodes[0].request(agg.peer_id, Message::Close(signed).encode()).await.expect("answer");
        a.first().copied().and_then(Ack::from_byte)
    };
    let forged = vain_core::signed::Signed::sign(&SigningKey::from_bytes(&seed(99)), close(next, "mnist-mlp"));
    assert_eq!(send(forged).await, Some(Ack::BadSignature));
    for c in [close(next, "mnist-cnn"), close(0, "mnist-mlp"), close(next, "mnist-mlp")] {
        assert_eq!(send(vain_core::signed::Signed::sign(&rival, c)).await, Some(Ack::Taken));
    }
    let want: std::collections::BTreeMap<&str, u64> =
        [("bad signature", 1), ("wrong model", 1), ("stale", 1), ("not serving the model", 1)].into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while link.ignored() != want {
        assert!(Instant::now() < deadline, "closes ignored: {:?}", link.ignored());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!link.leading().0 && link.leading().1 == next, "nothing adopted");
    stop.store(true, Ordering::Relaxed);
    let result = tokio::task::spawn_blocking(move || run.join()).await.expect("join");
    result.expect("thread").expect("coordinator");
}

/// A device that faults: the CPU backend behind a `Cuda` kind, whose `fail_at`-th update (ingest
/// or stored row) or `prepare_fail_at`-th preparation reports a driver error, as would every
/// operation after it (a sticky fault).
struct Faulty {
    inner: CpuBackend,
    updates: usize,
    fail_at: usize,
    prepares: usize,
    prepare_fail_at: usize,
    failed: bool,
}

impl Faulty {
    fn check(&mut self) -> Result<(), BackendError> {
        if self.failed {
            Err(BackendError::Cuda("an illegal memory access was encountered (injected)".into()))
        } else {
            Ok(())
        }
    }
    fn update(&mut self) -> Result<(), BackendError> {
        self.updates += 1;
        if self.updates >= self.fail_at {
            self.failed = true;
        }
        self.check()
    }
}

impl Backend for Faulty {
    fn kind(&self) -> Kind {
        Kind::Cuda
    }
    fn prepare(&mut self, dim: usize, rows: usize) -> Result<(), BackendError> {
        self.prepares += 1;
        if self.prepares >= self.prepare_fail_at {
            self.failed = true;
        }
        self.check()?;
        self.inner.prepare(dim, rows)
    }
    fn ingest(&mut self, update: &Update<'_>, weight: f32, clip: Option<f32>) -> Result<f64, BackendError> {
        self.update()?;
        self.inner.ingest(update, weight, clip)
    }
    fn store_row(&mut self, row: usize, update: &Update<'_>) -> Result<f64, BackendError> {
        self.update()?;
        self.inner.store_row(row, update)
    }
    fn scale_rows(&mut self, factors: &[f32]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.scale_rows(factors)
    }
    fn mix_rows(&mut self, n: usize, targets: &[u32], mix: &[f32]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.mix_rows(n, targets, mix)
    }
    fn gram(&mut self, n: usize) -> Result<Vec<f64>, BackendError> {
        self.check()?;
        self.inner.gram(n)
    }
    fn weighted_sum(&mut self, rows: &[u32], weights: &[f32]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.weighted_sum(rows, weights)
    }
    fn median(&mut self, rows: &[u32]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.median(rows)
    }
    fn trimmed_mean(&mut self, rows: &[u32], trim: usize) -> Result<(), BackendError> {
        self.check()?;
        self.inner.trimmed_mean(rows, trim)
    }
    fn closest_to_median_mean(&mut self, rows: &[u32], beta: usize) -> Result<(), BackendError> {
        self.check()?;
        self.inner.closest_to_median_mean(rows, beta)
    }
    fn dist_sq_to_out(&mut self, n: usize) -> Result<Vec<f64>, BackendError> {
        self.check()?;
        self.inner.dist_sq_to_out(n)
    }
    fn centered_clip_step(&mut self, factors: &[f32]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.centered_clip_step(factors)
    }
    fn dots_with_out(&mut self, n: usize) -> Result<(Vec<f64>, f64), BackendError> {
        self.check()?;
        self.inner.dots_with_out(n)
    }
    fn out_from_acc(&mut self, scale: f32) -> Result<(), BackendError> {
        self.check()?;
        self.inner.out_from_acc(scale)
    }
    fn add_noise(&mut self, std: f32, seed: u64, round: u64) -> Result<(), BackendError> {
        self.check()?;
        self.inner.add_noise(std, seed, round)
    }
    fn read_out(&mut self, dst: &mut [f32]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.read_out(dst)
    }
}

/// The aggregation device faults in the middle of a round (its second update): the update is not
/// held against its sender, the round is rebuilt on the CPU from the journal with every update
/// it took, closes as if nothing had happened, and the next round runs on the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_faults_mid_round_hands_the_round_to_the_cpu_and_loses_no_update() {
    let faulty = Faulty {
        inner: CpuBackend::new(1),
        updates: 0,
        fail_at: 2,
        prepares: 0,
        prepare_fail_at: usize::MAX,
        failed: false,
    };
    device_fault(9400, 31, faulty, ["cpu", "cpu"]).await;
}

/// The device faults between two rounds (round 0 closed on it; its next preparation fails):
/// round 1 opens on the CPU instead and aggregates every update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_faults_between_rounds_is_replaced_before_the_next_opens() {
    // Round 0 prepares twice (the health check, then the round); round 1's check is the third.
    let faulty = Faulty {
        inner: CpuBackend::new(1),
        updates: 0,
        fail_at: usize::MAX,
        prepares: 0,
        prepare_fail_at: 3,
        failed: false,
    };
    device_fault(9500, 41, faulty, ["cuda", "cpu"]).await;
}

/// Two rounds of three clients on an aggregator whose device is `faulty` (ports from `port`, keys
/// from seed `key_seed`): both aggregate every update once, refuse nobody, and run on `backends`.
async fn device_fault(port: u64, key_seed: u8, faulty: Faulty, backends: [&str; 2]) {
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "round: device fault", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_seed = seed(key_seed);
    let ccfg = coordinator::Config {
        rounds: 2,
        round_time: Duration::from_secs(20),
        min_clients: 3,
        min_updates: 3,
        failover_after: Duration::from_millis(200),
        ..coordinator::Config::new(Arch::MnistMlp)
    };
    let (agg, c, boot) = aggregator(port, agg_seed, ccfg, &dir.path().join("agg"), Box::new(faulty)).await;
    let mut clients = Vec::new();
    for i in 0..3u8 {
        let (tx, rx) = mpsc::channel(64);
        let client = node::spawn_serving(
            config(port + 1 + u64::from(i), &["client"], Some(boot.clone())),
            Identity::from_seed(seed(key_seed + 1 + i)),
            Transport::Memory,
            tx,
        )
        .await
        .expect("client");
        let at = 100 * usize::from(i);
        let cfg = trainer(at..at + 100, 300, u64::from(i), dir.path().join(format!("client-{i}")));
        let p = Participant::start(cfg, client.clone(), seed(key_seed + 1 + i)).expect("participant");
        serve(rx, None, None, Some(p), None);
        clients.push(client);
    }
    meet(&clients[0], &agg, 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let rows: Arc<std::sync::Mutex<Vec<coordinator::Row>>> = Arc::default();
    let seen = rows.clone();
    let run = std::thread::spawn(move || c.run(&s, move |r| seen.lock().expect("rows").push(r.clone())));
    let result = tokio::task::spawn_blocking(move || run.join()).await.expect("join");
    result.expect("thread").expect("coordinator");
    let cs = closes(&dir.path().join("agg"));
    assert_eq!(cs.len(), 2, "{cs:?}");
    let ids: Vec<[u8; 32]> =
        (0..3).map(|i| SigningKey::from_bytes(&seed(key_seed + 1 + i)).verifying_key().to_bytes()).collect();
    for c in &cs {
        assert_eq!(c.outcome, Outcome::Aggregated, "round {}: {c:?}", c.round);
        let mut senders: Vec<[u8; 32]> = c.accepted.iter().map(|a| a.sender).collect();
        senders.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(senders, want, "round {}: every update counted once", c.round);
        assert!(c.rejected.is_empty(), "round {}: a device fault held against a sender: {:?}", c.round, c.rejected);
        assert_ne!(c.checkpoint, c.base, "round {} aggregated", c.round);
    }
    let rows = rows.lock().expect("rows");
    assert_eq!(rows.iter().map(|r| r.backend.as_str()).collect::<Vec<_>>(), backends);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A graceful stop (what `vain node` does on SIGTERM) in the middle of a round leaves the
/// acknowledged update in the journal; the aggregator started again on the same directory
/// re-opens the round, re-ingests the update and closes with it, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_round_keeps_the_journal_and_the_restart_closes_the_round_with_it() {
    use std::sync::atomic::Ordering;
    if let Err(e) = quic::probe() {
        vain_testkit::unavailable(vain_testkit::Need::IoUring, "round: stop mid-round", e);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agg_dir = dir.path().join("agg");
    let agg_seed = seed(71);
    let ccfg = |round_time: u64| coordinator::Config {
        rounds: 1,
        round_time: Duration::from_secs(round_time),
        min_clients: 2,
        failover_after: Duration::from_millis(200),
        ..coordinator::Config::new(Arch::MnistMlp)
    };
    let (agg, c, boot) = aggregator(9700, agg_seed, ccfg(60), &agg_dir, Box::new(CpuBackend::new(1))).await;
    let link = c.link();
    // A client training on 100 digits: it sends its update as soon as round 0 opens.
    let client = training_client(9701, &boot, 72, dir.path().join("client")).await;
    // And one that takes every open and never sends: the round stays open to its deadline.
    let (stx, srx) = mpsc::channel(64);
    let _silent = node::spawn_serving(
        config(9702, &["client"], Some(format!("/memory/9700/p2p/{}", agg.peer_id))),
        Identity::from_seed(seed(73)),
        Transport::Memory,
        stx,
    )
    .await
    .expect("silent");
    serve(srx, None, None, None, Some(mpsc::channel(8).0));
    meet(&client, &agg, 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || c.run(&s, |_| {}));
    let base =
        model::digest(&Model::init(Arch::MnistMlp, 1, &Device::Cpu, DType::F32).expect("model").flat().expect("flat"));
    // Journaled (the receipt is sent only after): the round is still open, 60 s to go.
    let journal = agg_dir.join("journal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&journal).into_iter().flatten().flatten().all(|e| e.metadata().map_or(0, |m| m.len()) == 0)
    {
        assert!(Instant::now() < deadline, "the update was never journaled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let result = tokio::task::spawn_blocking(move || run.join()).await.expect("join");
    result.expect("thread").expect("a graceful stop");
    assert!(stopped.elapsed() < Duration::from_secs(10), "the stop waited for the round: {:?}", stopped.elapsed());
    assert!(closes(&agg_dir).is_empty(), "the round was not closed by the stop");
    assert_eq!(link.leading().1, 0);

    // Started again on the same directory (same control plane; a new ingest service): round 0
    // again, with the journaled update in it.
    let deny = Arc::new(std::sync::RwLock::new(std::collections::BTreeSet::new()));
    let q = quic::Config::new(
        "127.0.0.1:0".parse().expect("addr"),
        tls::server_config(&agg_seed, Policy::AnyExcept(deny)).expect("tls"),
    );
    let service = vain_aggregator::Service::start(q, 1, 16).expect("service");
    let c = Coordinator::new(
        ccfg(2),
        agg.clone(),
        tokio::runtime::Handle::current(),
        service,
        Box::new(CpuBackend::new(1)),
        SigningKey::from_bytes(&agg_seed),
        agg_dir.clone(),
    )
    .expect("coordinator");
    let rows = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = rows.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || {
        c.run(&s, move |r| {
            if let Ok(mut v) = seen.lock() {
                v.push(r.clone());
            }
        })
    });
    let result = tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || run.join()))
        .await
        .expect("the resumed round closes")
        .expect("join");
    result.expect("thread").expect("coordinator");
    let cs = closes(&agg_dir);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0].round, 0);
    assert_eq!(cs[0].base, base);
    let me = SigningKey::from_bytes(&seed(72)).verifying_key().to_bytes();
    assert_eq!(cs[0].accepted.iter().map(|a| a.sender).collect::<Vec<_>>(), vec![me], "counted once");
    let rows = rows.lock().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recovered, 1, "re-ingested from the journal");
    // The client, holding the aggregator's receipt, did not send it again.
    let log = std::fs::read_to_string(dir.path().join("client/participant.jsonl")).expect("log");
    assert_eq!(log.lines().filter(|l| l.contains("\"status\":\"sent\"")).count(), 1, "{log}");
}
