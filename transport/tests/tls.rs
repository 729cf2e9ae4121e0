//! Identity-bound TLS 1.3 handshakes, in memory: the right keys connect and learn each other's
//! identity; a server with the wrong key, a client not on the allow list, and a denied client
//! are refused during the handshake.

use ed25519_dalek::SigningKey;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use vain_transport::tls::{self, Policy};

fn public(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// Runs the handshake to completion or to the first error; returns what each side saw.
fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig) -> Result<([u8; 32], [u8; 32]), String> {
    let name = ServerName::try_from("aggregator").map_err(|e| e.to_string())?;
    let mut c = ClientConnection::new(Arc::new(client), name).map_err(|e| e.to_string())?;
    let mut s = ServerConnection::new(Arc::new(server)).map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        s.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        s.process_new_packets().map_err(|e| format!("server: {e}"))?;
        let mut back = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut back).map_err(|e| e.to_string())?;
        }
        c.read_tls(&mut &back[..]).map_err(|e| e.to_string())?;
        c.process_new_packets().map_err(|e| format!("client: {e}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
            let server_key = tls::peer_key(c.peer_certificates()).ok_or("no server key")?;
            let client_key = tls::peer_key(s.peer_certificates()).ok_or("no client key")?;
            assert_eq!(c.alpn_protocol(), Some(tls::ALPN));
            return Ok((server_key, client_key));
        }
    }
    Err("handshake did not finish".into())
}

const AGG: [u8; 32] = [1; 32];
const CLIENT: [u8; 32] = [2; 32];
const OTHER: [u8; 32] = [3; 32];

fn deny(keys: &[[u8; 32]]) -> Policy {
    Policy::AnyExcept(Arc::new(RwLock::new(keys.iter().copied().collect())))
}

#[test]
fn matching_identities_connect_and_learn_each_other() {
    let client = tls::client_config(&CLIENT, Policy::Only(BTreeSet::from([public(&AGG)]))).expect("client");
    let server = tls::server_config(&AGG, deny(&[])).expect("server");
    let (server_key, client_key) = handshake(client, server).expect("handshake");
    assert_eq!(server_key, public(&AGG));
    assert_eq!(client_key, public(&CLIENT));
}

#[test]
fn a_server_with_the_wrong_key_is_refused_by_the_client() {
    let client = tls::client_config(&CLIENT, Policy::Only(BTreeSet::from([public(&AGG)]))).expect("client");
    let server = tls::server_config(&OTHER, deny(&[])).expect("server");
    let err = handshake(client, server).expect_err("wrong server key");
    assert!(err.starts_with("client:") && err.contains("certificate"), "{err}");
}

#[test]
fn denied_and_unlisted_clients_are_refused_by_the_server() {
    let client = || tls::client_config(&CLIENT, Policy::Only(BTreeSet::from([public(&AGG)]))).expect("client");
    let list = Arc::new(RwLock::new(BTreeSet::from([public(&CLIENT)])));
    let err = handshake(client(), tls::server_config(&AGG, Policy::AnyExcept(list.clone())).expect("server"))
        .expect_err("denied");
    assert!(err.starts_with("server:"), "{err}");
    // The deny list is live: lifting the ban lets the same client in, with the same config.
    let server = tls::server_config(&AGG, Policy::AnyExcept(list.clone())).expect("server");
    list.write().expect("lock").clear();
    handshake(client(), server).expect("allowed after the ban is lifted");
    let only = tls::server_config(&AGG, Policy::Only(BTreeSet::from([public(&OTHER)]))).expect("server");
    assert!(handshake(client(), only).expect_err("not listed").starts_with("server:"));
}

#[test]
fn spki_encoding_round_trips_and_rejects_other_keys() {
    let k = public(&AGG);
    let s = tls::spki(&k);
    assert_eq!(s.len(), 44);
    assert_eq!(tls::key_of(&s), Some(k));
    assert_eq!(tls::key_of(&s[..43]), None);
    let mut p256ish = s.clone();
    p256ish[8] = 0x71;
    assert_eq!(tls::key_of(&p256ish), None);
}
