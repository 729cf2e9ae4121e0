use std::path::PathBuf;
use thiserror::Error;

/// Identity errors. `Io`, `Pkcs11` and `Random` are local failures; the others mean the input
/// (a file, a passphrase, a certificate, a message) is wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A secret file that others may read; it is refused rather than used.
    #[error("{path} has mode {mode:o}: secret key files must not be readable by group or others (chmod 600)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The passphrase does not decrypt the key file.
    #[error("wrong passphrase for {path}")]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is encrypted and no passphrase was given.
    #[error("{path} is encrypted: give a passphrase (VAIN_PASSPHRASE, --passphrase-file or the prompt)")]
    PassphraseRequired {
        /// The key file.
        path: PathBuf,
    },
    /// A key file that is not in the vAIn key format.
    #[error("{path} is not a valid key file: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file that would be overwritten.
    #[error("{path} already exists; refusing to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The directory holds no identity.
    #[error("no identity in {dir}: create one with `vain identity new`")]
    NotFound {
        /// The directory.
        dir: PathBuf,
    },
    /// A BIP-39 mnemonic that does not parse or whose checksum fails.
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    /// A SLIP-10 derivation path that is malformed or not fully hardened.
    #[error("invalid derivation path {path:?}: {reason}")]
    DerivationPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A wire-format error (certificates, announcements).
    #[error(transparent)]
    Schema(#[from] vain_schema::Error),
    /// A signature that does not verify.
    #[error("signature does not verify under {key}")]
    BadSignature {
        /// Hex of the key.
        key: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {op} failed: {source}")]
    Pkcs11 {
        /// The operation.
        op: &'static str,
        /// The library's error.
        #[source]
        source: cryptoki::error::Error,
    },
    /// No PKCS#11 token carries the label.
    #[error("no PKCS#11 token labelled {label:?}")]
    TokenNotFound {
        /// The label searched for.
        label: String,
    },
    /// No Ed25519 key with the label in the token.
    #[error("no Ed25519 key labelled {label:?} in the token")]
    KeyNotFound {
        /// The label searched for.
        label: String,
    },
    /// A key with the label already exists in the token.
    #[error("a key labelled {label:?} already exists in the token")]
    KeyExists {
        /// The label.
        label: String,
    },
    /// The token returned something that is not an Ed25519 public key or signature.
    #[error("PKCS#11 token returned a malformed {what}")]
    Pkcs11Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// A sealed message that is malformed or does not decrypt with this node's key.
    #[error("cannot open sealed message: {0}")]
    Sealed(String),
    /// The rotation chain of this identity has expired: the node can no longer sign for its id.
    #[error("the current key expired at {expired_at_ms} ms; peers refuse it (rotate sooner next time or re-enrol)")]
    Expired {
        /// End of the current key's window.
        expired_at_ms: u64,
    },
    /// The OS CSPRNG failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
