//! Nodes on libp2p's in-process memory transport: discovery from one bootstrap, verified DHT
//! records, rejected forgeries, stale-node cleanup.

use std::time::{Duration, Instant};
use vain_net::Config;
use vain_net::node::{self, Found, Handle, Identity, Transport};
use vain_net::records::Key;

fn config(port: u64, bootstrap: Option<String>) -> Config {
    let mut c = Config {
        listen: vec![format!("/memory/{port}")],
        bootstrap: bootstrap.into_iter().collect(),
        ..Default::default()
    };
    c.mdns.enabled = false;
    c.beacon.enabled = false;
    c.liveness.heartbeat_interval = 0.2;
    c.liveness.stale_after = 2.0;
    c.pex.interval = 0.3;
    c
}

fn seed(i: u64) -> [u8; 32] {
    let mut s = [0x33u8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    s
}

fn node_id(i: u64) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&seed(i)).verifying_key().to_bytes()
}

/// A signed announcement of node `i` (no addresses).
fn announcement(i: u64) -> Vec<u8> {
    use ed25519_dalek::Signer;
    use vain_schema::node::{Announcement, Resources};
    let key = ed25519_dalek::SigningKey::from_bytes(&seed(i));
    let a = Announcement {
        node_id: node_id(i),
        signing_key: node_id(i),
        rotation_chain: Vec::new(),
        addresses: Vec::new(),
        roles: 1,
        resources: Resources::default(),
        x25519_key: [0; 32],
        timestamp_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis()
            as u64,
        ingest: Vec::new(),
        region: String::new(),
    };
    let body = a.encode();
    let sig = key.sign(Announcement::signing_input(&body).as_bytes()).to_bytes();
    Announcement::wrap(&body, &sig)
}

async fn cluster(base: u64, n: u64, tier_of: impl Fn(u64) -> u8) -> Vec<Handle> {
    let first =
        node::spawn(config(base, None), Identity::from_seed(seed(base)), Transport::Memory).await.expect("node 0");
    let boot = format!("/memory/{base}/p2p/{}", first.peer_id);
    let mut nodes = vec![first];
    for i in 1..n {
        let mut c = config(base + i, Some(boot.clone()));
        c.tier = tier_of(i);
        nodes.push(node::spawn(c, Identity::from_seed(seed(base + i)), Transport::Memory).await.expect("node"));
    }
    nodes
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_from_one_bootstrap_and_every_announcement_is_found() {
    let n = 12;
    let nodes = cluster(10_000, n, |_| 2).await;
    wait_until("every node to know every other", 30, async || {
        for h in &nodes {
            let s = h.status().await.expect("status");
            if s.live < (n - 1) as usize || s.routing == 0 {
                return false;
            }
        }
        true
    })
    .await;
    // Tier-2 nodes relayed announcements onward.
    let mut relayed = 0;
    for h in &nodes {
        relayed += h.status().await.expect("status").relayed;
    }
    assert!(relayed > 0);
    // Each node's announcement, put by that node, is found (and verified) by every other.
    for (i, h) in nodes.iter().enumerate() {
        let target = (i as u64 + 5) % n;
        let found = h.get(Key::Node(node_id(10_000 + target))).await.expect("get");
        match found {
            Found::Node(r) => {
                assert_eq!(r.node_id, hex::encode(node_id(10_000 + target)));
                assert!(r.addresses.iter().all(|a| a.contains("/p2p/12D3KooW")), "{:?}", r.addresses);
            }
            other => panic!("{other:?}"),
        }
        // Each lookup is counted, with its duration in one bucket.
        let l = h.status().await.expect("status").lookups;
        assert!(l.ok >= 1, "{l:?}");
        assert_eq!(l.buckets.iter().sum::<u64>(), l.ok + l.failed);
        assert_eq!(l.buckets.len(), vain_net::node::LOOKUP_BUCKETS_MS.len() + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misplaced_records_are_refused_and_counted() {
    let nodes = cluster(20_000, 6, |_| 0).await;
    wait_until("a connected network", 30, async || {
        let mut ok = true;
        for h in &nodes {
            ok &= h.status().await.expect("status").routing >= 2;
        }
        ok
    })
    .await;
    // Node 1 puts garbage under node 2's key, a validly signed announcement of its own under
    // node 4's key, and a value under a provider-only key.
    let liar = &nodes[1];
    liar.put_raw(Key::Node(node_id(20_002)).record_key().to_vec(), vec![7; 300]).await.expect("put");
    liar.put_raw(Key::Node(node_id(20_004)).record_key().to_vec(), announcement(20_001)).await.expect("put");
    liar.put_raw(Key::aggregators("m").record_key().to_vec(), vec![1; 10]).await.expect("put");
    wait_until("the refusals to be counted", 20, async || {
        let mut seen = std::collections::BTreeSet::new();
        for h in nodes.iter().filter(|h| h.peer_id != liar.peer_id) {
            for (reason, n) in h.status().await.expect("status").rejected {
                if n > 0 {
                    seen.insert(reason);
                }
            }
        }
        ["record bad announcement", "record wrong node", "record provider-only key"].iter().all(|r| seen.contains(*r))
    })
    .await;
    // Tier-0 nodes never relay.
    for h in &nodes {
        assert_eq!(h.status().await.expect("status").relayed, 0);
    }
    // The honest record for node 2 is still what a lookup returns.
    match nodes[5].get(Key::Node(node_id(20_002))).await.expect("get") {
        Found::Node(r) => assert_eq!(r.node_id, hex::encode(node_id(20_002))),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_marked_stale_and_dropped_within_its_timeout() {
    let mut nodes = cluster(30_000, 5, |_| 0).await;
    wait_until("all live", 30, async || {
        let mut ok = true;
        for h in &nodes {
            ok &= h.status().await.expect("status").live >= 4;
        }
        ok
    })
    .await;
    let gone = nodes.pop().expect("node").peer_id;
    let stopped = Instant::now();
    wait_until("the others to mark it stale", 10, async || {
        let mut ok = true;
        for h in &nodes {
            let peers = h.peers().await.expect("peers");
            ok &= peers.iter().any(|p| p.peer_id == gone.to_string() && p.state == node::State::Stale);
        }
        ok
    })
    .await;
    // stale_after is 2 s; heartbeats every 0.2 s.
    assert!(stopped.elapsed() < Duration::from_secs(5), "{:?}", stopped.elapsed());
    for h in &nodes {
        assert!(h.status().await.expect("status").live <= 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregators_are_found_through_the_directory() {
    let nodes = cluster(40_000, 5, |_| 0).await;
    wait_until("a connected network", 30, async || {
        let mut ok = true;
        for h in &nodes {
            ok &= h.status().await.expect("status").routing >= 2;
        }
        ok
    })
    .await;
    nodes[2].provide(Key::aggregators("mnist")).await.expect("provide");
    nodes[3].provide(Key::aggregators("mnist")).await.expect("provide");
    let want = {
        let mut v = vec![nodes[2].peer_id.to_string(), nodes[3].peer_id.to_string()];
        v.sort();
        v
    };
    wait_until(
        "both providers",
        20,
        async || matches!(nodes[4].get(Key::aggregators("mnist")).await, Ok(Found::Providers(p)) if p == want),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_node_is_disconnected_and_its_next_dial_refused() {
    let nodes = cluster(45_000, 3, |_| 0).await;
    let (a, c) = (&nodes[0], &nodes[2]);
    let c_pid = c.peer_id.to_string();
    let connected =
        async |h: &Handle, pid: &str| h.peers().await.expect("peers").iter().any(|p| p.peer_id == pid && p.connected);
    wait_until("node 2 connected to node 0", 30, async || connected(a, &c_pid).await).await;
    assert!(a.ban(vec![node_id(45_002)]).await.expect("ban") >= 1);
    wait_until("node 2 disconnected", 10, async || !connected(a, &c_pid).await).await;
    // Node 2 dials node 0 again: the connection is dropped as soon as it is established.
    let addr: libp2p::Multiaddr = format!("/memory/45000/p2p/{}", a.peer_id).parse().expect("addr");
    let _ = c.dial(addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!connected(a, &c_pid).await, "a banned node stays disconnected");
    let s = a.status().await.expect("status");
    assert_eq!(s.rejected.get("banned"), Some(&1), "{:?}", s.rejected);
    assert!(s.rejected.get("blocked connection").is_some_and(|n| *n >= 1), "the dial was refused: {:?}", s.rejected);
    // Its record, put by another node, is not stored: node 0 serves no banned node's addresses.
    nodes[1].put_raw(Key::Node(node_id(45_002)).record_key().to_vec(), announcement(45_002)).await.expect("put");
    wait_until("the banned node's record refused", 10, async || {
        a.status().await.expect("status").rejected.get("record banned").is_some_and(|n| *n >= 1)
    })
    .await;
    // Node 1 is untouched.
    let b_pid = nodes[1].peer_id.to_string();
    assert!(connected(a, &b_pid).await);
    // A lifted ban (a passed unban proposal): node 2 may connect again.
    assert_eq!(a.unban(vec![node_id(45_002)]).await.expect("unban"), 1);
    let addr: libp2p::Multiaddr = format!("/memory/45000/p2p/{}", a.peer_id).parse().expect("addr");
    let _ = c.dial(addr).await;
    wait_until("node 2 connected again", 10, async || connected(a, &c_pid).await).await;
    assert_eq!(a.status().await.expect("status").rejected.get("unbanned"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agg_provider_records_need_the_tier_the_policy_requires() {
    let mut c0 = config(46_000, None);
    c0.dht.aggregate_from = 1;
    let a = node::spawn(c0, Identity::from_seed(seed(46_000)), Transport::Memory).await.expect("node 0");
    let boot = format!("/memory/46000/p2p/{}", a.peer_id);
    let mut c1 = config(46_001, Some(boot));
    c1.roles = vec!["aggregator".into()];
    c1.region = "eu-west".into();
    let b = node::spawn(c1, Identity::from_seed(seed(46_001)), Transport::Memory).await.expect("node 1");
    wait_until("node 0 knows node 1's announcement", 20, async || {
        a.peers().await.expect("peers").iter().any(|p| p.peer_id == b.peer_id.to_string() && p.node_id.is_some())
    })
    .await;
    // The announced region is in the peer row (node 0 announced none).
    let row = a.peers().await.expect("peers").into_iter().find(|p| p.peer_id == b.peer_id.to_string());
    assert_eq!(row.map(|p| p.region), Some("eu-west".to_string()));
    let back = b.peers().await.expect("peers").into_iter().find(|p| p.peer_id == a.peer_id.to_string());
    assert_eq!(back.map(|p| p.region), Some(String::new()));
    // Tier 0 in node 0's ledger: node 0 does not store node 1's agg/ record.
    b.provide(Key::aggregators("mnist")).await.expect("provide");
    wait_until("the refusal", 10, async || {
        a.status().await.expect("status").rejected.get("provider tier").is_some_and(|n| *n >= 1)
    })
    .await;
    assert!(!a.holds(Key::aggregators("mnist")).await.expect("holds"));
    // At tier 1 it does.
    a.set_tiers(std::collections::HashMap::from([(node_id(46_001), 1)])).await.expect("tiers");
    b.provide(Key::aggregators("mnist")).await.expect("provide");
    wait_until("the record stored", 10, async || a.holds(Key::aggregators("mnist")).await.expect("holds")).await;
    // The ledger's set of nodes that may aggregate decides too: outside it, refused …
    let refused = || async { a.status().await.expect("status").rejected.get("provider tier").copied().unwrap_or(0) };
    let before = refused().await;
    a.set_aggregators(std::collections::HashSet::new()).await.expect("aggregators");
    b.provide(Key::aggregators("mnist-cnn")).await.expect("provide");
    wait_until("the refusal", 10, async || refused().await > before).await;
    assert!(!a.holds(Key::aggregators("mnist-cnn")).await.expect("holds"));
    // … in it, stored.
    a.set_aggregators(std::collections::HashSet::from([node_id(46_001)])).await.expect("aggregators");
    b.provide(Key::aggregators("mnist-cnn")).await.expect("provide");
    wait_until("the record stored", 10, async || a.holds(Key::aggregators("mnist-cnn")).await.expect("holds")).await;
}

/// A directory lists only the roles it is for: a client's agg/ and ckpt/ provider records are
/// refused (and counted), a validator's ckpt/ record is stored and its agg/ record refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_need_the_role_the_directory_is_for() {
    let a =
        node::spawn(config(46_100, None), Identity::from_seed(seed(46_100)), Transport::Memory).await.expect("node 0");
    let boot = format!("/memory/46100/p2p/{}", a.peer_id);
    let client = node::spawn(config(46_101, Some(boot.clone())), Identity::from_seed(seed(46_101)), Transport::Memory)
        .await
        .expect("client");
    let mut v = config(46_102, Some(boot));
    v.roles = vec!["validator".into()];
    let validator = node::spawn(v, Identity::from_seed(seed(46_102)), Transport::Memory).await.expect("validator");
    wait_until("node 0 knows both announcements", 20, async || {
        let peers = a.peers().await.expect("peers");
        [&client, &validator]
            .iter()
            .all(|h| peers.iter().any(|p| p.peer_id == h.peer_id.to_string() && p.node_id.is_some()))
    })
    .await;
    let refused = async || a.status().await.expect("status").rejected.get("provider role").copied().unwrap_or(0);
    client.provide(Key::aggregators("mnist")).await.expect("provide");
    client.provide(Key::Checkpoint([7; 32])).await.expect("provide");
    wait_until("both refusals", 10, async || refused().await >= 2).await;
    assert!(!a.holds(Key::aggregators("mnist")).await.expect("holds"));
    assert!(!a.holds(Key::Checkpoint([7; 32])).await.expect("holds"));
    validator.provide(Key::Checkpoint([7; 32])).await.expect("provide");
    wait_until("the validator's ckpt/ record stored", 10, async || {
        a.holds(Key::Checkpoint([7; 32])).await.expect("holds")
    })
    .await;
    validator.provide(Key::aggregators("mnist")).await.expect("provide");
    wait_until("the validator's agg/ record refused", 10, async || refused().await >= 3).await;
    assert!(!a.holds(Key::aggregators("mnist")).await.expect("holds"));
}

/// Whether a node relays is its tier in the ledger its owner pushes, whatever it started with:
/// nodes that start at tier 2 and that the ledger puts at 0 stop; the one it puts at 2 relays a
/// newcomer's announcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledgers_tier_decides_who_relays() {
    let nodes = cluster(47_000, 4, |_| 2).await;
    wait_until("every node to know every other", 30, async || {
        for h in &nodes {
            if h.status().await.expect("status").live < 3 {
                return false;
            }
        }
        true
    })
    .await;
    let tiers = std::collections::HashMap::from([(node_id(47_001), 2)]);
    for h in &nodes {
        h.set_tiers(tiers.clone()).await.expect("tiers");
    }
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for h in &nodes {
            v.push(h.status().await.expect("status").relayed);
        }
        v
    };
    // A newcomer, known to node 0 only at first: its announcement reaches the others through
    // their connections to it, and node 1 forwards it.
    let boot = format!("/memory/47000/p2p/{}", nodes[0].peer_id);
    let newcomer = node::spawn(config(47_009, Some(boot)), Identity::from_seed(seed(47_009)), Transport::Memory)
        .await
        .expect("node");
    wait_until("every node to know the newcomer", 30, async || {
        for h in &nodes {
            if h.status().await.expect("status").live < 4 {
                return false;
            }
        }
        true
    })
    .await;
    wait_until("node 1 to relay", 10, async || nodes[1].status().await.expect("status").relayed > before[1]).await;
    for (i, h) in nodes.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(h.status().await.expect("status").relayed, before[i], "node {i} is at tier 0 in its ledger");
    }
    drop(newcomer);
}

/// Relaying others' announcements is the tier's privilege on the receiving side too: a node
/// whose own ledger lets it relay, but which its peers' ledgers put below the relaying tier,
/// has its relays refused by them (counted), while its own announcement still reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_from_a_peer_below_the_relaying_tier_is_refused() {
    let nodes = cluster(47_100, 3, |_| 2).await;
    wait_until("every node to know every other", 30, async || {
        for h in &nodes {
            if h.status().await.expect("status").live < 2 {
                return false;
            }
        }
        true
    })
    .await;
    // Node 1 thinks it may relay; nodes 0 and 2 do not think so.
    nodes[1].set_tiers(std::collections::HashMap::from([(node_id(47_101), 2)])).await.expect("tiers");
    for i in [0, 2] {
        nodes[i].set_tiers(std::collections::HashMap::new()).await.expect("tiers");
    }
    let boot = format!("/memory/47101/p2p/{}", nodes[1].peer_id);
    let newcomer = node::spawn(config(47_109, Some(boot)), Identity::from_seed(seed(47_109)), Transport::Memory)
        .await
        .expect("node");
    let refused =
        async |h: &node::Handle| h.status().await.expect("status").rejected.get("relay tier").copied().unwrap_or(0);
    wait_until("node 1's relay refused", 30, async || refused(&nodes[0]).await + refused(&nodes[2]).await > 0).await;
    assert!(nodes[1].status().await.expect("status").relayed > 0);
    assert_eq!(refused(&nodes[1]).await, 0, "node 1 takes what others hand over of themselves");
    drop(newcomer);
}

/// A peer of another implementation: identify and the standard ping only, no vAIn heartbeats.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Foreign {
    identify: libp2p::identify::Behaviour,
    ping: libp2p::ping::Behaviour,
}

/// A vAIn node answers the standard ping (other DHTs ping a new contact before routing to it);
/// a peer that stays connected without ever answering a heartbeat is reported as unresponsive
/// and dropped, and the node does not dial it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_peer_gets_pongs_and_one_that_never_answers_heartbeats_is_reported_not_redialled() {
    use futures::StreamExt;
    use libp2p::core::transport::MemoryTransport;
    use libp2p::core::upgrade::Version;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Transport as _, identify, noise, ping, yamux};
    let vain =
        node::spawn(config(9_500, None), Identity::from_seed(seed(9_500)), Transport::Memory).await.expect("node");
    let mut foreign = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            Ok(MemoryTransport::new()
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .expect("transport")
        .with_behaviour(|key| Foreign {
            identify: identify::Behaviour::new(identify::Config::new("/vain/0.1.0".into(), key.public())),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200))),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let me = *foreign.local_peer_id();
    foreign.listen_on("/memory/9599".parse().expect("addr")).expect("listen");
    foreign
        .dial(format!("/memory/9500/p2p/{}", vain.peer_id).parse::<libp2p::Multiaddr>().expect("addr"))
        .expect("dial");

    let (mut pongs, mut connections, mut closed_at) = (0, 0, None::<Instant>);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // After the drop, watch a few heartbeat periods for a redial.
        if closed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(4)) {
            break;
        }
        let Ok(ev) = tokio::time::timeout(Duration::from_millis(200), foreign.select_next_some()).await else {
            continue;
        };
        match ev {
            SwarmEvent::Behaviour(ForeignEvent::Ping(ping::Event { result: Ok(_), .. })) => pongs += 1,
            SwarmEvent::ConnectionEstablished { .. } => connections += 1,
            SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                closed_at.get_or_insert(Instant::now());
            }
            _ => {}
        }
    }
    assert!(pongs >= 1, "the vAIn node answered no ping");
    assert!(closed_at.is_some(), "the silent peer was never dropped");
    assert_eq!(connections, 1, "the vAIn node dialled the unresponsive peer again");
    let row = vain.peers().await.expect("peers").into_iter().find(|p| p.peer_id == me.to_string()).expect("listed");
    assert_eq!(row.state, node::State::Unresponsive);
    let st = vain.status().await.expect("status");
    assert_eq!(st.unresponsive, 1);
    assert_eq!(st.rejected.get("unresponsive to heartbeats"), Some(&1));
}

/// The round protocol has its own per-peer budget: a burst beyond it is dropped and counted,
/// the rest answered. A peer its owner scores down for junk below the floor is disconnected,
/// and its next requests are not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_requests_are_rate_limited_and_a_junk_sender_is_blocked() {
    let mut c0 = config(48_000, None);
    c0.limits.round_requests_per_s = 10.0;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<node::Inbound>(1024);
    let a = node::spawn_serving(c0, Identity::from_seed(seed(48_000)), Transport::Memory, tx).await.expect("node 0");
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let _ = req.reply.send(vec![1]);
        }
    });
    let boot = format!("/memory/48000/p2p/{}", a.peer_id);
    let b = node::spawn(config(48_001, Some(boot)), Identity::from_seed(seed(48_001)), Transport::Memory)
        .await
        .expect("node 1");
    wait_until("a connection", 20, async || {
        b.directory().await.expect("directory").iter().any(|e| e.peer_id == a.peer_id && e.connected)
    })
    .await;
    // 60 at once against a burst of 20.
    let asks = (0..60).map(|_| {
        let b = b.clone();
        let to = a.peer_id;
        async move { b.request(to, vec![7]).await.is_ok() }
    });
    let answered = futures::future::join_all(asks).await.into_iter().filter(|ok| *ok).count();
    assert!((20..=30).contains(&answered), "{answered} answered");
    let dropped = a.status().await.expect("status").rejected.get("round rate").copied().unwrap_or(0);
    assert_eq!(dropped as usize, 60 - answered);

    // Junk: 25 points against a floor of −20.
    a.junk(b.peer_id, 25, "round malformed").await.expect("junk");
    wait_until("the block", 10, async || {
        a.status().await.expect("status").rejected.get("blocked").is_some_and(|n| *n >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.request(a.peer_id, vec![7]).await.is_err(), "a blocked peer is not served");
}
