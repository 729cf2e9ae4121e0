//! A client's participant answering opens sent over the control plane (libp2p's memory
//! transport): forged, foreign, misaddressed, stale and valid opens each get their typed answer,
//! and a valid one makes the client fetch the base checkpoint by digest — refusing the
//! aggregator's corrupted copy and taking it from another holder listed under `ckpt/`.

use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use vain_core::signed::Signed;
use vain_learn::model::{self, Arch, Model};
use vain_learn::{DType, Device};
use vain_net::node::{self, Handle, Identity, Inbound, Transport};
use vain_net::records::Key;
use vain_round::msg::{self, Ack, Message, Open};
use vain_round::participant::Participant;
use vain_round::store::Store;

mod common;
use common::{config, seed, trainer};

/// Answers round-protocol requests: fetches from `store` (with one bit flipped when `corrupt`),
/// opens and closes through `participant`.
fn serve(mut rx: mpsc::Receiver<Inbound>, store: Option<Store>, participant: Option<Participant>, corrupt: bool) {
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let answer = match Message::decode(&req.request) {
                Err(_) => vec![Ack::Malformed as u8],
                Ok(Message::Fetch(d)) => {
                    let mut b = store.as_ref().and_then(|s| s.get(&d));
                    if corrupt && let Some(b) = b.as_mut() {
                        b[10] ^= 1;
                    }
                    msg::encode_checkpoint(b.as_deref())
                }
                Ok(m) => match &participant {
                    Some(p) => p.answer(m, &req).await,
                    None => vec![Ack::NotSelected as u8],
                },
            };
            let _ = req.reply.send(answer);
        }
    });
}

async fn wait_until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn open(round: u64, base: [u8; 32], participants: Vec<[u8; 32]>) -> Open {
    Open {
        model_id: "mnist-mlp".into(),
        layout: Arch::MnistMlp.layout_digest(),
        round,
        base,
        deadline_ms: vain_schema::clock::unix_ms() + 60_000,
        rule: "fedavg".into(),
        codec: "f32".into(),
        zstd: 0,
        clip: 0.0,
        noise_multiplier: 0.0,
        participants,
    }
}

async fn ask(from: &Handle, to: &Handle, m: Message) -> Option<Ack> {
    let a = from.request(to.peer_id, m.encode()).await.expect("answer");
    a.first().copied().and_then(Ack::from_byte)
}

/// Asks until the client has found `from` under `agg/<model>` (its directory lookup may not
/// have found the provider record yet): the first other answer.
async fn ask_once_listed(from: &Handle, to: &Handle, m: Message) -> Option<Ack> {
    let mut answer = None;
    for _ in 0..50 {
        answer = ask(from, to, m.clone()).await;
        if answer != Some(Ack::NotAggregator) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_are_checked_and_a_valid_one_fetches_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The aggregator: serves checkpoints, provides agg/mnist-mlp.
    let (atx, arx) = mpsc::channel(16);
    let agg =
        node::spawn_serving(config(9100, &["aggregator"], None), Identity::from_seed(seed(1)), Transport::Memory, atx)
            .await
            .expect("aggregator");
    let store = Store::open(&dir.path().join("agg")).expect("store");
    let global = Model::init(Arch::MnistMlp, 1, &Device::Cpu, DType::F32).expect("model").flat().expect("flat");
    let base = store.put(&global).expect("put");
    assert_eq!(base, model::digest(&global));
    serve(arx, Some(store.clone()), None, true);
    let boot = format!("/memory/9100/p2p/{}", agg.peer_id);

    // The client, training on 100 embedded digits.
    let (ctx, crx) = mpsc::channel(16);
    let client = node::spawn_serving(
        config(9101, &["client"], Some(boot.clone())),
        Identity::from_seed(seed(2)),
        Transport::Memory,
        ctx,
    )
    .await
    .expect("client");
    let mut pcfg = trainer(0..100, 200, 3, dir.path().join("client"));
    // It keeps a personal head, tuned on its items and measured on its held-out ones.
    pcfg.held = (100..140).collect();
    pcfg.personal_steps = 3;
    // The client's ledger keeps the aggregator out once `kept_out` is set.
    let kept_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = kept_out.clone();
    pcfg.kept_out = Some(Arc::new(move |_| flag.load(std::sync::atomic::Ordering::Relaxed)));
    let p = Participant::start(pcfg, client.clone(), seed(2)).expect("participant");
    serve(crx, None, Some(p.clone()), false);

    // A third node, a validator: it holds the intact checkpoint and provides ckpt/<base>; it
    // does not announce the aggregator role.
    let (otx, orx) = mpsc::channel(16);
    let other = node::spawn_serving(
        config(9102, &["validator"], Some(boot)),
        Identity::from_seed(seed(3)),
        Transport::Memory,
        otx,
    )
    .await
    .expect("other");
    serve(orx, Some(store), None, false);

    wait_until("the client knows both announcements", 20, async || {
        client.directory().await.map(|d| d.len() >= 2).unwrap_or(false)
    })
    .await;
    agg.provide(Key::aggregators("mnist-mlp")).await.expect("provide");
    other.provide(Key::Checkpoint(base)).await.expect("provide");

    let agg_key = SigningKey::from_bytes(&seed(1));
    let me = SigningKey::from_bytes(&seed(2)).verifying_key().to_bytes();

    // Signed by a key other than the one the sender announced.
    let forged = Signed::sign(&SigningKey::from_bytes(&seed(9)), open(1, base, vec![me]));
    assert_eq!(ask(&agg, &client, Message::Open(forged)).await, Some(Ack::BadSignature));
    // A tampered body.
    let mut tampered = Signed::sign(&agg_key, open(1, base, vec![me]));
    tampered.body.round = 2;
    assert_eq!(ask(&agg, &client, Message::Open(tampered)).await, Some(Ack::BadSignature));
    // Another model.
    let mut o = open(1, base, vec![me]);
    o.model_id = "mnist-cnn".into();
    assert_eq!(ask(&agg, &client, Message::Open(Signed::sign(&agg_key, o))).await, Some(Ack::WrongModel));
    // Not among the participants.
    let o = open(1, base, vec![[7; 32]]);
    assert_eq!(ask(&agg, &client, Message::Open(Signed::sign(&agg_key, o))).await, Some(Ack::NotSelected));
    // From a node that does not announce the aggregator role, signed by its own key.
    let o = Signed::sign(&SigningKey::from_bytes(&seed(3)), open(1, base, vec![me]));
    assert_eq!(ask(&other, &client, Message::Open(o)).await, Some(Ack::NotAggregator));
    // Bytes that do not decode.
    let a = agg.request(client.peer_id, vec![1, 2, 3]).await.expect("answer");
    assert_eq!(a, vec![Ack::Malformed as u8]);

    // A valid open is taken; the same round again is stale.
    let valid = Signed::sign(&agg_key, open(1, base, vec![me]));
    assert_eq!(ask_once_listed(&agg, &client, Message::Open(valid)).await, Some(Ack::Taken));
    // The same round with another base, or an earlier round: stale.
    let other_base = Signed::sign(&agg_key, open(1, [9; 32], vec![me]));
    assert_eq!(ask(&agg, &client, Message::Open(other_base)).await, Some(Ack::Stale));
    let earlier = Signed::sign(&agg_key, open(0, base, vec![me]));
    assert_eq!(ask(&agg, &client, Message::Open(earlier)).await, Some(Ack::Stale));

    // The client refused the aggregator's corrupted copy, fetched the base from the validator
    // (it is now in its cache, intact) and, finding no ingest endpoint in the aggregator's
    // announcement, logged why it could not send.
    let log = dir.path().join("client/participant.jsonl");
    wait_until("the client's round", 60, async || std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())).await;
    let cache = Store::open(&dir.path().join("client/checkpoints")).expect("cache");
    assert_eq!(cache.get(&base).map(|b| b.len()), Some(4 * Arch::MnistMlp.dim()));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("no ingest endpoint"), "{text}");
    assert_eq!(p.counts().get("taken"), Some(&1));
    // Building the update, it also tuned its personal head (kept for the next rounds) and
    // measured the base and its own model on its held-out items.
    let row: serde_json::Value = serde_json::from_str(text.lines().last().expect("row")).expect("json");
    for k in ["local_accuracy", "personal_accuracy"] {
        assert!(row[k].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{k}: {row}");
    }
    let head = std::fs::read(dir.path().join("client/personal-head-mnist-mlp.f32")).expect("head");
    assert_eq!(head.len(), 4 * Arch::MnistMlp.range_of("fc2.").len());

    // Closes: checked like opens, and against the history the client saw.
    let closed = |round: u64, base: [u8; 32], checkpoint: [u8; 32]| msg::Close {
        model_id: "mnist-mlp".into(),
        round,
        base,
        checkpoint,
        outcome: msg::Outcome::Aggregated,
        rule: "fedavg".into(),
        root: [round as u8; 32],
        accepted: Vec::new(),
        rejected: Vec::new(),
        missing: vec![me],
        suspects: Vec::new(),
        verdicts: Vec::new(),
        noise: None,
        epsilon: f64::NAN,
    };
    let close = |c: msg::Close| Message::Close(Signed::sign(&agg_key, c));
    let forged = Message::Close(Signed::sign(&SigningKey::from_bytes(&seed(9)), closed(1, base, [5; 32])));
    assert_eq!(ask(&agg, &client, forged).await, Some(Ack::BadSignature));
    let mut foreign = closed(1, base, [5; 32]);
    foreign.model_id = "mnist-cnn".into();
    assert_eq!(ask(&agg, &client, close(foreign)).await, Some(Ack::WrongModel));
    assert_eq!(ask(&agg, &client, close(closed(1, base, [5; 32]))).await, Some(Ack::Taken));
    // The same close again is taken; another close of round 1 is stale.
    assert_eq!(ask(&agg, &client, close(closed(1, base, [5; 32]))).await, Some(Ack::Taken));
    assert_eq!(ask(&agg, &client, close(closed(1, base, [6; 32]))).await, Some(Ack::Stale));
    // Round 2 must build on round 1's checkpoint.
    assert_eq!(ask(&agg, &client, close(closed(2, base, [7; 32]))).await, Some(Ack::WrongBase));
    // A close of a round this client never took (here one far ahead) changes nothing it
    // checks later: only the closes of rounds it took make its history.
    assert_eq!(ask(&agg, &client, close(closed(1 << 60, [5; 32], [9; 32]))).await, Some(Ack::Taken));
    // So must an open: round 1 is closed, and round 2 from another base is refused.
    let again = Signed::sign(&agg_key, open(1, base, vec![me]));
    assert_eq!(ask(&agg, &client, Message::Open(again)).await, Some(Ack::Stale));
    let wrong = Signed::sign(&agg_key, open(2, base, vec![me]));
    assert_eq!(ask(&agg, &client, Message::Open(wrong)).await, Some(Ack::WrongBase));
    assert_eq!(p.counts().get("wrong base"), Some(&2));

    // An aggregator the client's ledger keeps out: its next open, valid as it is, is refused.
    kept_out.store(true, std::sync::atomic::Ordering::Relaxed);
    let next = Signed::sign(&agg_key, open(2, [5; 32], vec![me]));
    assert_eq!(ask(&agg, &client, Message::Open(next)).await, Some(Ack::Ineligible));
    assert_eq!(p.counts().get("ineligible"), Some(&1));
}

/// A client in region `eu` whose aggregator is in `us` takes the base from a holder in its own
/// region: a hostile one serving corrupted bytes is scored down and passed over; when no
/// holder there has the next base, the aggregator serves it, well within the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_takes_the_base_from_its_own_region_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A node on the memory transport announcing `region`, with the inbox of its requests.
    async fn spawn(
        port: u64,
        roles: &[&str],
        boot: Option<String>,
        region: &str,
        key: u8,
    ) -> (Handle, mpsc::Receiver<Inbound>) {
        let mut c = config(port, roles, boot);
        c.region = region.into();
        let (tx, rx) = mpsc::channel(16);
        let h = node::spawn_serving(c, Identity::from_seed(seed(key)), Transport::Memory, tx).await.expect("node");
        (h, rx)
    }
    let (agg, arx) = spawn(9110, &["aggregator"], None, "us", 11).await;
    let store = Store::open(&dir.path().join("agg")).expect("store");
    let global = Model::init(Arch::MnistMlp, 1, &Device::Cpu, DType::F32).expect("model").flat().expect("flat");
    let base = store.put(&global).expect("put");
    serve(arx, Some(store.clone()), None, false);
    let boot = format!("/memory/9110/p2p/{}", agg.peer_id);

    // In eu: a hostile "standby" serving corrupted bytes (aggregators are asked first), and a
    // validator holding the first base only.
    let (bad, brx) = spawn(9111, &["aggregator"], Some(boot.clone()), "eu", 12).await;
    serve(brx, Some(store.clone()), None, true);
    let (_validator, vrx) = spawn(9112, &["validator"], Some(boot.clone()), "eu", 13).await;
    let first_only = Store::open(&dir.path().join("validator")).expect("store");
    first_only.put(&global).expect("put");
    serve(vrx, Some(first_only), None, false);

    let (client, crx) = spawn(9113, &["client"], Some(boot), "eu", 14).await;
    let mut pcfg = trainer(0..100, 200, 3, dir.path().join("client"));
    pcfg.region = "eu".into();
    let p = Participant::start(pcfg, client.clone(), seed(14)).expect("participant");
    serve(crx, None, Some(p.clone()), false);
    wait_until("the client is connected to all three", 20, async || {
        client.directory().await.map(|d| d.iter().filter(|e| e.connected).count() >= 3).unwrap_or(false)
    })
    .await;
    agg.provide(Key::aggregators("mnist-mlp")).await.expect("provide");

    let agg_key = SigningKey::from_bytes(&seed(11));
    let me = SigningKey::from_bytes(&seed(14)).verifying_key().to_bytes();
    let log = dir.path().join("client/participant.jsonl");
    let rows = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let run_round = async |round: u64, base: [u8; 32]| -> serde_json::Value {
        let valid = Signed::sign(&agg_key, open(round, base, vec![me]));
        assert_eq!(ask_once_listed(&agg, &client, Message::Open(valid)).await, Some(Ack::Taken));
        wait_until("the client's round", 60, async || rows().iter().any(|r| r["round"] == round)).await;
        rows().into_iter().find(|r| r["round"] == round).expect("row")
    };

    // Round 1: the hostile holder's bytes are refused, the validator's taken.
    let row = run_round(1, base).await;
    let validator_key = SigningKey::from_bytes(&seed(13)).verifying_key().to_bytes();
    assert_eq!(row["base_from"], format!("nearby {}", vain_round::short(&validator_key)), "{row}");
    let peers = client.peers().await.expect("peers");
    let hostile = peers.iter().find(|r| r.peer_id == bad.peer_id.to_string()).expect("hostile peer");
    assert!(hostile.score < 0, "the holder of corrupted bytes is scored down: {}", hostile.score);

    // Round 2: a base nobody in eu holds (the hostile one's copy is corrupted): from the
    // aggregator, after at most the nearby budget.
    let mut next = global.clone();
    next[0] += 1.0;
    let next_base = store.put(&next).expect("put");
    let started = Instant::now();
    let row = run_round(2, next_base).await;
    assert_eq!(row["base_from"], "aggregator", "{row}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let cache = Store::open(&dir.path().join("client/checkpoints")).expect("cache");
    assert_eq!(cache.get(&next_base).map(|b| b.len()), Some(4 * Arch::MnistMlp.dim()));
}
