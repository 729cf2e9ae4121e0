//! A hostile peer answers peer exchange with junk: the honest node counts every bad entry,
//! scores the peer down and, below the floor, disconnects and blocks it.

use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Transport as _, identify, noise, yamux};
use std::time::{Duration, Instant};
use vain_net::Config;
use vain_net::codec::{self, Codec};
use vain_net::node::{self, Identity, Transport};

#[derive(NetworkBehaviour)]
struct Hostile {
    identify: identify::Behaviour,
    pex: request_response::Behaviour<Codec>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_exchange_with_junk_is_scored_down_and_blocked() {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut hostile = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|k| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            Ok(MemoryTransport::new()
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(k)?)
                .multiplex(yamux::Config::default()))
        })
        .expect("transport")
        .with_behaviour(|k| Hostile {
            identify: identify::Behaviour::new(identify::Config::new("/vain/0.1.0".into(), k.public())),
            pex: request_response::Behaviour::with_codec(
                Codec { max: 1 << 20 },
                [(StreamProtocol::new("/vain/pex/1.0.0"), ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let addr: Multiaddr = "/memory/60001".parse().expect("addr");
    hostile.listen_on(addr.clone()).expect("listen");
    let hostile_id = *hostile.local_peer_id();

    let mut cfg = Config {
        listen: vec!["/memory/60002".into()],
        bootstrap: vec![format!("{addr}/p2p/{hostile_id}")],
        ..Default::default()
    };
    cfg.mdns.enabled = false;
    cfg.beacon.enabled = false;
    cfg.pex.interval = 0.2;
    let honest = node::spawn(cfg, Identity::from_seed([9; 32]), Transport::Memory).await.expect("node");

    // The hostile peer answers every exchange with six entries of garbage.
    let junk = codec::encode_list(&vec![vec![0xEE; 64]; 6]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = 0;
    loop {
        tokio::select! {
            ev = hostile.select_next_some() => {
                if let SwarmEvent::Behaviour(HostileEvent::Pex(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. }, ..
                })) = ev
                {
                    let _ = hostile.behaviour_mut().pex.send_response(channel, junk.clone());
                    answered += 1;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let s = honest.status().await.expect("status");
                if s.rejected.get("blocked") == Some(&1) {
                    assert!(answered >= 1);
                    assert!(s.rejected.get("pex bad announcement").copied().unwrap_or(0) >= 5, "{:?}", s.rejected);
                    let peers = honest.peers().await.expect("peers");
                    let h = peers.iter().find(|p| p.peer_id == hostile_id.to_string()).expect("hostile in table");
                    assert!(h.score < -20 && !h.connected, "{h:?}");
                    return;
                }
                assert!(Instant::now() < deadline, "never blocked: {:?}", s.rejected);
            }
        }
    }
}
