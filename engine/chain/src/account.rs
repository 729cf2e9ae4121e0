//! A node's Ethereum account: an encrypted keystore (Web3 Secret Storage, scrypt), created from
//! OS randomness or from a BIP-39 mnemonic on the standard path m/44'/60'/0'/0/0. The key is
//! never printed; only the address is.

use std::path::Path;

use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};

use crate::Error;

/// The standard Ethereum derivation path of the first account.
pub const PATH: &str = "m/44'/60'/0'/0/0";

/// The account of `phrase` (BIP-39, English) on [`PATH`].
pub fn from_mnemonic(phrase: &str) -> Result<PrivateKeySigner, Error> {
    MnemonicBuilder::<English>::default()
        .phrase(phrase.trim())
        .derivation_path(PATH)
        .map_err(|source| Error::Mnemonic { source })?
        .build()
        .map_err(|source| Error::Mnemonic { source })
}

/// Write `signer`'s key to a new keystore at `path`, encrypted under `password`; refuses to
/// overwrite an existing file.
pub fn create(path: &Path, signer: &PrivateKeySigner, password: &[u8]) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Keystore { path: path.to_owned(), source: e.into() };
    if path.exists() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the keystore exists already")));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the keystore path has no file name"))
    })?;
    PrivateKeySigner::encrypt_keystore(dir, &mut rand08::rngs::OsRng, signer.to_bytes(), password, Some(name))
        .map_err(|source| Error::Keystore { path: path.to_owned(), source })?;
    Ok(())
}

/// Open the keystore at `path` with `password`.
pub fn open(path: &Path, password: &[u8]) -> Result<PrivateKeySigner, Error> {
    PrivateKeySigner::decrypt_keystore(path, password)
        .map_err(|source| Error::Keystore { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_path_gives_the_well_known_first_account() {
        // The first account of the development mnemonic, as every Ethereum wallet derives it.
        let a = from_mnemonic(crate::deploy::DEV_MNEMONIC).expect("derive");
        assert_eq!(a.address().to_string(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert!(matches!(from_mnemonic("not a mnemonic"), Err(Error::Mnemonic { .. })));
    }

    #[test]
    fn a_keystore_round_trips_and_refuses_a_wrong_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys").join("account.json");
        let signer = PrivateKeySigner::random();
        create(&path, &signer, b"pw").expect("create");
        assert_eq!(open(&path, b"pw").expect("open").address(), signer.address());
        assert!(matches!(open(&path, b"wrong"), Err(Error::Keystore { .. })));
        assert!(matches!(create(&path, &signer, b"pw"), Err(Error::Keystore { .. })));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&alloy::hex::encode(signer.to_bytes())), "the key is stored in the clear");
    }
}
