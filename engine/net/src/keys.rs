//! Node keys in libp2p terms: the PeerId of an Ed25519 key is the identity multihash of its
//! protobuf encoding, `00 24 08 01 12 20 ‖ key` — so a node's PeerId follows from the signing key
//! in its announcement, and a verifier can check one against the other without libp2p state.

use crate::Error;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};

/// The libp2p keypair of an Ed25519 secret (the 32-byte RFC 8032 seed).
pub fn keypair(seed: &[u8; 32]) -> Result<Keypair, Error> {
    // libp2p zeroizes the bytes it is given: hand it a copy.
    let mut copy = *seed;
    Ok(Keypair::ed25519_from_bytes(&mut copy)?)
}

/// The PeerId of a raw Ed25519 public key.
pub fn peer_id(public: &[u8; 32]) -> Result<PeerId, Error> {
    let pk = ed25519::PublicKey::try_from_bytes(public)?;
    Ok(PublicKey::from(pk).to_peer_id())
}

/// The raw Ed25519 key inside a PeerId, when it is an identity-multihash Ed25519 PeerId.
pub fn public_key(peer: &PeerId) -> Option<[u8; 32]> {
    let bytes = peer.to_bytes();
    let prefix = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    (bytes.len() == 38 && bytes[..6] == prefix).then(|| bytes[6..].try_into().ok()).flatten()
}

/// The raw Ed25519 key of the peer a multiaddr names (its `/p2p/…` part), if it names one.
pub fn public_key_of_addr(addr: &str) -> Option<[u8; 32]> {
    let a: libp2p::Multiaddr = addr.parse().ok()?;
    a.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => public_key(&peer),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_follow_from_raw_keys_and_back() {
        let seed = [7u8; 32];
        let kp = keypair(&seed).expect("keypair");
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let pid = peer_id(&public).expect("peer id");
        assert_eq!(kp.public().to_peer_id(), pid);
        assert_eq!(public_key(&pid), Some(public));
        assert_eq!(public_key_of_addr(&format!("/ip4/192.0.2.7/tcp/4001/p2p/{pid}")), Some(public));
        assert_eq!(public_key_of_addr("/ip4/192.0.2.7/tcp/4001"), None);
        assert_eq!(public_key_of_addr("not an address"), None);
        assert!(pid.to_base58().starts_with("12D3KooW"));
        assert_eq!(public_key(&PeerId::random()), None);
    }
}
