//! The Merkle tree of a round's accepted updates, built so that OpenZeppelin's `MerkleProof`
//! verifies its proofs on chain: keccak-256, sorted pairs, and leaves whose preimage (65 bytes)
//! can never be an inner node's (64 bytes). Layout in docs/protocol.md ("Round protocol").

use sha3::{Digest as _, Keccak256};

/// A 32-byte keccak-256 hash.
pub type Hash = [u8; 32];

/// keccak-256 of `parts`, concatenated.
fn keccak(parts: &[&[u8]]) -> Hash {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The leaf of an accepted update: keccak256(0x00 ‖ sender ‖ update digest).
pub fn leaf(sender: &[u8; 32], update: &[u8; 32]) -> Hash {
    keccak(&[&[0u8], sender, update])
}

/// An inner node: keccak256 of the two children, smaller first.
pub fn node(a: &Hash, b: &Hash) -> Hash {
    if a <= b { keccak(&[a, b]) } else { keccak(&[b, a]) }
}

/// The root over `leaves` in their order; an odd node at the end of a level moves up as it
/// is. The root of no leaves is all zeros.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if p.len() == 2 { node(&p[0], &p[1]) } else { p[0] }).collect();
    }
    level[0]
}

/// The sibling hashes from leaf `index` up to the root (empty for a single leaf, `None` when
/// `index` is out of range).
pub fn proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            out.push(level[sibling]);
        }
        level = level.chunks(2).map(|p| if p.len() == 2 { node(&p[0], &p[1]) } else { p[0] }).collect();
        i /= 2;
    }
    Some(out)
}

/// Whether `proof` leads from `leaf` to `root` (what `MerkleProof.verify` computes).
pub fn verify(root: &Hash, leaf: Hash, proof: &[Hash]) -> bool {
    proof.iter().fold(leaf, |acc, p| node(&acc, p)) == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keccak_is_keccak_not_sha3() {
        // keccak256("") as the EVM computes it.
        assert_eq!(
            keccak(&[]),
            [
                0xc5, 0xd2, 0x46, 0x01, 0x86, 0xf7, 0x23, 0x3c, 0x92, 0x7e, 0x7d, 0xb2, 0xdc, 0xc7, 0x03, 0xc0, 0xe5,
                0x00, 0xb6, 0x53, 0xca, 0x82, 0x27, 0x3b, 0x7b, 0xfa, 0xd8, 0x04, 0x5d, 0x85, 0xa4, 0x70
            ]
        );
        assert_eq!(root(&[]), [0; 32]);
        let l = leaf(&[1; 32], &[2; 32]);
        assert_eq!(root(&[l]), l);
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_no_other_does(n in 1usize..40, seed in any::<u8>()) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf(&[seed; 32], &[i as u8; 32])).collect();
            let r = root(&leaves);
            for i in 0..n {
                let p = proof(&leaves, i).expect("in range");
                prop_assert!(verify(&r, leaves[i], &p));
                let stranger = leaf(&[seed; 32], &[200; 32]);
                prop_assert!(!verify(&r, stranger, &p));
            }
            prop_assert!(proof(&leaves, n).is_none());
        }
    }
}
