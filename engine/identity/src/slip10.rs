//! BIP-39 mnemonics and SLIP-10 hierarchical derivation for Ed25519.
//!
//! SLIP-10 over Ed25519 supports hardened children only: every path segment must be hardened
//! (`0'`, `0H` or `0h`). vAIn's default node key lives at [`DEFAULT_PATH`].

use crate::Error;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Default derivation path of a node key (purpose 44', vAIn's coin type 7331', account 0', key 0').
pub const DEFAULT_PATH: &str = "m/44'/7331'/0'/0'";
const HARDENED: u32 = 0x8000_0000;

/// A private key and chain code at some node of the derivation tree.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ExtendedKey {
    /// The Ed25519 seed (RFC 8032 secret key).
    pub secret: [u8; 32],
    /// The chain code.
    pub chain_code: [u8; 32],
}

impl std::fmt::Debug for ExtendedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtendedKey { .. }")
    }
}

fn hmac512(key: &[u8], parts: &[&[u8]]) -> ExtendedKey {
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    let mut digest = mac.finalize().into_bytes();
    let out: &mut [u8] = digest.as_mut_slice();
    let mut k = ExtendedKey { secret: [0; 32], chain_code: [0; 32] };
    k.secret.copy_from_slice(&out[..32]);
    k.chain_code.copy_from_slice(&out[32..]);
    out.zeroize();
    k
}

impl ExtendedKey {
    /// The master key of `seed` (16 to 64 bytes; a BIP-39 seed is 64).
    pub fn master(seed: &[u8]) -> Self {
        hmac512(b"ed25519 seed", &[seed])
    }

    /// The hardened child `index` (`index` < 2^31; the hardened bit is added here).
    pub fn child(&self, index: u32) -> Self {
        let i = (index | HARDENED).to_be_bytes();
        hmac512(&self.chain_code, &[&[0u8], &self.secret, &i])
    }

    /// The Ed25519 public key, prefixed with 0x00 as SLIP-10 writes it.
    pub fn public_key_slip10(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[1..].copy_from_slice(&ed25519_dalek::SigningKey::from_bytes(&self.secret).verifying_key().to_bytes());
        out
    }
}

/// Parses `m/44'/7331'/0'/0'` into child indices (without the hardened bit).
pub fn parse_path(path: &str) -> Result<Vec<u32>, Error> {
    let err = |reason| Error::DerivationPath { path: path.to_owned(), reason };
    let mut parts = path.split('/');
    if parts.next() != Some("m") {
        return Err(err("must start with \"m\""));
    }
    let mut out = Vec::new();
    for seg in parts {
        let num = seg
            .strip_suffix('\'')
            .or_else(|| seg.strip_suffix('H'))
            .or_else(|| seg.strip_suffix('h'))
            .ok_or_else(|| err("Ed25519 supports hardened segments only (write 0' or 0H)"))?;
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("segments are decimal numbers"));
        }
        let i: u32 = num.parse().map_err(|_| err("segment too large"))?;
        if i >= HARDENED {
            return Err(err("segment must be below 2^31"));
        }
        out.push(i);
    }
    if out.len() > 255 {
        return Err(err("more than 255 levels"));
    }
    Ok(out)
}

/// Derives the key at `path` from `seed`.
pub fn derive(seed: &[u8], path: &str) -> Result<ExtendedKey, Error> {
    let mut k = ExtendedKey::master(seed);
    for i in parse_path(path)? {
        k = k.child(i);
    }
    Ok(k)
}

/// A new 24-word English mnemonic from 256 bits of OS randomness.
pub fn generate_mnemonic() -> Result<Zeroizing<String>, Error> {
    let entropy = Zeroizing::new(crate::random32()?);
    let m = bip39::Mnemonic::from_entropy(entropy.as_ref()).map_err(|e| Error::Mnemonic(e.to_string()))?;
    Ok(Zeroizing::new(m.to_string()))
}

/// The BIP-39 seed of an English `phrase` (checksum verified) and optional passphrase.
pub fn seed_from_mnemonic(phrase: &str, passphrase: &str) -> Result<Zeroizing<[u8; 64]>, Error> {
    let normalized = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
    let m = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized.to_lowercase())
        .map_err(|e| Error::Mnemonic(e.to_string()))?;
    Ok(Zeroizing::new(m.to_seed(passphrase)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_reject_soft_segments() {
        assert_eq!(parse_path("m").expect("m"), Vec::<u32>::new());
        assert_eq!(parse_path("m/44'/7331H/0h").expect("ok"), vec![44, 7331, 0]);
        for bad in ["", "x/0'", "m/0", "m/'", "m/2147483648'", "m/-1'", "m//0'"] {
            assert!(matches!(parse_path(bad), Err(Error::DerivationPath { .. })), "{bad:?}");
        }
    }

    #[test]
    fn mnemonic_round_trips_and_checksum_is_checked() {
        let m = generate_mnemonic().expect("mnemonic");
        assert_eq!(m.split(' ').count(), 24);
        let a = seed_from_mnemonic(&m, "").expect("seed");
        let b = seed_from_mnemonic(&m.to_uppercase().replace(' ', "  "), "").expect("seed");
        assert_eq!(*a, *b, "case and spacing do not matter");
        assert_ne!(*a, *seed_from_mnemonic(&m, "extra").expect("seed"), "passphrase changes the seed");
        // A fixed bad checksum: swapping words of a random phrase still passes the 8-bit
        // checksum once in 256 runs. "abandon" × 12 fails it ("… about" is the valid phrase).
        let bad = ["abandon"; 12].join(" ");
        assert!(matches!(seed_from_mnemonic(&bad, ""), Err(Error::Mnemonic(_))));
    }

    #[test]
    fn bip39_reference_seed() {
        // BIP-39 reference vector (Trezor): all-zero entropy, passphrase "TREZOR".
        let phrase = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let seed = seed_from_mnemonic(phrase, "TREZOR").expect("seed");
        assert_eq!(
            hex::encode(seed),
            "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
        );
    }
}
