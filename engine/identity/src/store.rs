//! The identity directory: metadata, the current signing key and the X25519 key.
//!
//! ```text
//! <dir>/identity.meta   rkyv IdentityMetadata (public: node id, current key, rotation chain, key source)
//! <dir>/ed25519.key     current Ed25519 secret (absent when the key lives in a PKCS#11 token)
//! <dir>/x25519.key      X25519 secret for HPKE
//! ```
//!
//! Rotation writes the new key to `ed25519.key.next`, then the metadata, then renames the key
//! into place; [`Identity::open`] finishes a rotation interrupted between the last two steps.
//! Every file goes through a [`Storage`] and is durable before the next step starts, so power
//! lost at any point leaves the old identity or the new one (tested on [`vain_storage::Sim`]).

use crate::hpke::KeyPair;
use crate::keyfile::{self, KdfParams, Kind};
use crate::rotation::{self, Policy, Status};
use crate::signer::FileSigner;
use crate::{Error, Signer, pkcs11};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vain_schema::node::{Announcement, Resources, RotationCertificate};
use vain_schema::persist::{self, IdentityMetadata, KeySource};
use vain_schema::{PublicKey, Signature, sign};
use vain_storage::{Disk, Storage};
use zeroize::Zeroizing;

/// Metadata file name.
pub const META_FILE: &str = "identity.meta";
/// Ed25519 key file name.
pub const KEY_FILE: &str = "ed25519.key";
/// X25519 key file name.
pub const X25519_FILE: &str = "x25519.key";
const NEXT_KEY_FILE: &str = "ed25519.key.next";

/// Where a new signing key comes from.
pub enum NewKey {
    /// Fresh randomness from the OS.
    Random,
    /// SLIP-10 derivation from a BIP-39 seed.
    Derived {
        /// The 64-byte BIP-39 seed.
        seed: Zeroizing<[u8; 64]>,
        /// The derivation path.
        path: String,
    },
    /// Generated inside a PKCS#11 token.
    Hsm(pkcs11::Config),
}

/// A node identity with its signer unlocked.
pub struct Identity {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    meta: IdentityMetadata,
    signer: Box<dyn Signer>,
    x25519: KeyPair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("dir", &self.dir).field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// A new signer, where its key lives, and its derivation path.
type MadeSigner = (Box<dyn Signer>, KeySource, Option<String>);

fn make_signer(
    storage: &dyn Storage,
    dir: &Path,
    key: NewKey,
    key_file: &str,
    passphrase: Option<&[u8]>,
    kdf: KdfParams,
) -> Result<MadeSigner, Error> {
    let write_file =
        |s: &FileSigner| keyfile::write(storage, &dir.join(key_file), Kind::Ed25519, &s.seed(), passphrase, kdf, true);
    Ok(match key {
        NewKey::Random => {
            let s = FileSigner::generate()?;
            write_file(&s)?;
            (Box::new(s), KeySource::File { encrypted: passphrase.is_some() }, None)
        }
        NewKey::Derived { seed, path } => {
            let k = crate::slip10::derive(seed.as_ref(), &path)?;
            let s = FileSigner::from_seed(&k.secret);
            write_file(&s)?;
            (Box::new(s), KeySource::File { encrypted: passphrase.is_some() }, Some(path))
        }
        NewKey::Hsm(cfg) => {
            let s = pkcs11::Pkcs11Signer::generate(&cfg)?;
            let src = KeySource::Pkcs11 { token_label: cfg.token_label.clone(), key_label: cfg.key_label.clone() };
            (Box::new(s), src, None)
        }
    })
}

fn write_meta(storage: &dyn Storage, dir: &Path, meta: &IdentityMetadata) -> Result<(), Error> {
    let path = dir.join(META_FILE);
    vain_storage::replace(storage, &path, &persist::encode(meta)?, 0o644).map_err(Error::io(path))
}

/// Renames `from` over `to` and makes the rename durable.
fn rename_durably(storage: &dyn Storage, from: &Path, to: &Path) -> Result<(), Error> {
    storage.rename(from, to).map_err(Error::io(to))?;
    let dir = vain_storage::parent(to);
    storage.sync_dir(dir).map_err(Error::io(dir))
}

impl Identity {
    /// Creates a new identity in `dir` (created if missing, mode 0700). Refuses to overwrite one.
    pub fn create(
        dir: &Path,
        key: NewKey,
        passphrase: Option<&[u8]>,
        kdf: KdfParams,
        now_ms: u64,
    ) -> Result<Self, Error> {
        Self::create_in(Arc::new(Disk), dir, key, passphrase, kdf, now_ms)
    }

    /// [`Identity::create`] on `storage`. The metadata is written last: until it is durable there
    /// is no identity, and creating it again starts over.
    pub fn create_in(
        storage: Arc<dyn Storage>,
        dir: &Path,
        key: NewKey,
        passphrase: Option<&[u8]>,
        kdf: KdfParams,
        now_ms: u64,
    ) -> Result<Self, Error> {
        let st = storage.as_ref();
        if st.exists(&dir.join(META_FILE)) {
            return Err(Error::Exists { path: dir.join(META_FILE) });
        }
        st.create_dir_all(dir, 0o700).map_err(Error::io(dir))?;
        let (signer, key_source, derivation_path) = make_signer(st, dir, key, KEY_FILE, passphrase, kdf)?;
        let x25519 = KeyPair::generate()?;
        keyfile::write(st, &dir.join(X25519_FILE), Kind::X25519, x25519.secret(), passphrase, kdf, true)?;
        let root = signer.public_key();
        let meta = IdentityMetadata {
            root_key: root,
            current_key: root,
            created_at_ms: now_ms,
            current_since_ms: now_ms,
            rotation_chain: Vec::new(),
            derivation_path,
            key_source,
        };
        write_meta(st, dir, &meta)?;
        Ok(Self { storage, dir: dir.to_owned(), meta, signer, x25519 })
    }

    /// Reads the public metadata of the identity in `dir` without unlocking any secret.
    pub fn metadata(dir: &Path) -> Result<IdentityMetadata, Error> {
        Self::metadata_in(&Disk, dir)
    }

    /// [`Identity::metadata`] on `storage`.
    pub fn metadata_in(storage: &dyn Storage, dir: &Path) -> Result<IdentityMetadata, Error> {
        let path = dir.join(META_FILE);
        let bytes = match storage.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound { dir: dir.to_owned() }),
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let meta: IdentityMetadata = persist::decode(&bytes)?;
        // The chain must lead from root to the recorded current key (validity is not checked here:
        // an expired identity can still be shown).
        let at = rotation_last(&meta)?.map_or(0, |c| c.not_before_ms);
        let (_, current) = rotation::verify_chain(&meta.root_key, &meta.rotation_chain, at)?;
        if current != meta.current_key {
            return Err(vain_schema::Error::InvalidField {
                field: "identity.current_key".into(),
                reason: "does not match the rotation chain".into(),
            }
            .into());
        }
        Ok(meta)
    }

    /// Unlocks the identity in `dir`. `hsm` supplies the module and PIN when the key is in a token
    /// (its labels come from the metadata).
    pub fn open(dir: &Path, passphrase: Option<&[u8]>, hsm: Option<pkcs11::Config>) -> Result<Self, Error> {
        Self::open_in(Arc::new(Disk), dir, passphrase, hsm)
    }

    /// [`Identity::open`] on `storage`.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        dir: &Path,
        passphrase: Option<&[u8]>,
        hsm: Option<pkcs11::Config>,
    ) -> Result<Self, Error> {
        let st = storage.as_ref();
        let meta = Self::metadata_in(st, dir)?;
        let signer: Box<dyn Signer> = match &meta.key_source {
            KeySource::File { .. } => {
                let main = dir.join(KEY_FILE);
                let next = dir.join(NEXT_KEY_FILE);
                // The main key is missing only when a rotation from a token to a file stopped
                // before its rename; the pending key is then the current one.
                let s = if st.exists(&main) || !st.exists(&next) {
                    Some(FileSigner::from_seed(&*keyfile::read(st, &main, Kind::Ed25519, passphrase)?))
                } else {
                    None
                };
                if let Some(s) = s.filter(|s| s.public_key() == meta.current_key) {
                    Box::new(s)
                } else if st.exists(&next) {
                    // A rotation stopped after committing the metadata: finish it.
                    let n = FileSigner::from_seed(&*keyfile::read(st, &next, Kind::Ed25519, passphrase)?);
                    if n.public_key() != meta.current_key {
                        return Err(Error::BadKeyFile {
                            path: main,
                            reason: "does not match the identity's current key".into(),
                        });
                    }
                    rename_durably(st, &next, &main)?;
                    Box::new(n)
                } else {
                    return Err(Error::BadKeyFile {
                        path: main,
                        reason: "does not match the identity's current key".into(),
                    });
                }
            }
            KeySource::Pkcs11 { token_label, key_label } => {
                let mut cfg = hsm.ok_or_else(|| Error::BadKeyFile {
                    path: dir.join(META_FILE),
                    reason: "the key is in a PKCS#11 token: give --pkcs11-module and the PIN".into(),
                })?;
                cfg.token_label = token_label.clone();
                cfg.key_label = key_label.clone();
                let s = pkcs11::Pkcs11Signer::open(&cfg)?;
                if s.public_key() != meta.current_key {
                    return Err(Error::KeyNotFound {
                        label: format!("{key_label} (public key differs from the identity)"),
                    });
                }
                // A rotation into the token stopped before the retired key's file was removed.
                let old = dir.join(KEY_FILE);
                if st.exists(&old) {
                    st.remove(&old).map_err(Error::io(&old))?;
                    st.sync_dir(dir).map_err(Error::io(dir))?;
                }
                Box::new(s)
            }
        };
        let x = keyfile::read(st, &dir.join(X25519_FILE), Kind::X25519, passphrase)?;
        Ok(Self { storage, dir: dir.to_owned(), meta, signer, x25519: KeyPair::from_secret(&x) })
    }

    /// The node id (root key).
    pub fn node_id(&self) -> PublicKey {
        self.meta.root_key
    }
    /// The key that signs now.
    pub fn current_key(&self) -> PublicKey {
        self.meta.current_key
    }
    /// The public metadata.
    pub fn meta(&self) -> &IdentityMetadata {
        &self.meta
    }
    /// The signer of the current key.
    pub fn signer(&self) -> &dyn Signer {
        self.signer.as_ref()
    }
    /// The X25519 key pair for HPKE.
    pub fn x25519(&self) -> &KeyPair {
        &self.x25519
    }

    /// Status of the current key under `policy`.
    pub fn status(&self, now_ms: u64, policy: &Policy) -> Result<Status, Error> {
        status_of(&self.meta, now_ms, policy)
    }

    /// Signs an arbitrary message under the `vain/message/v1` tag (see [`vain_schema::sign`]).
    pub fn sign_message(&self, message: &[u8]) -> Result<Signature, Error> {
        self.signer.sign(sign::SigningInput::new(sign::MESSAGE, message).as_bytes())
    }

    /// Replaces the signing key by a new one certified by the current key. The new key file is
    /// encrypted with `passphrase` when given. Fails with [`Error::Expired`] if the current key
    /// has already expired (a certificate from it would be refused by every peer).
    pub fn rotate(
        &mut self,
        key: NewKey,
        passphrase: Option<&[u8]>,
        kdf: KdfParams,
        now_ms: u64,
        policy: &Policy,
    ) -> Result<RotationCertificate, Error> {
        if let Status::Expired { expired_at_ms } = status_of(&self.meta, now_ms, policy)? {
            return Err(Error::Expired { expired_at_ms });
        }
        let st = self.storage.as_ref();
        let (signer, key_source, derivation_path) = make_signer(st, &self.dir, key, NEXT_KEY_FILE, passphrase, kdf)?;
        let sequence = self.meta.rotation_chain.len() as u32;
        let cert = rotation::issue(self.signer.as_ref(), signer.public_key(), sequence, now_ms, policy)?;
        let mut meta = self.meta.clone();
        meta.rotation_chain.push(cert.bytes.clone());
        meta.current_key = signer.public_key();
        meta.current_since_ms = now_ms;
        meta.key_source = key_source;
        meta.derivation_path = derivation_path;
        rotation::verify_chain(&meta.root_key, &meta.rotation_chain, now_ms)?;
        write_meta(st, &self.dir, &meta)?;
        // The rotation is committed: from here on this identity signs with the new key, even if
        // tidying the key files fails below (opening the directory again finishes that).
        let to_file = matches!(meta.key_source, KeySource::File { .. });
        self.meta = meta;
        self.signer = signer;
        if to_file {
            rename_durably(st, &self.dir.join(NEXT_KEY_FILE), &self.dir.join(KEY_FILE))?;
        } else {
            let main = self.dir.join(KEY_FILE);
            match st.remove(&main) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(main)(e)),
                _ => st.sync_dir(&self.dir).map_err(Error::io(&self.dir))?,
            }
        }
        Ok(cert.cert)
    }

    /// A signed announcement of this node (`SignedAnnouncement` bytes).
    pub fn announcement(
        &self,
        addresses: Vec<String>,
        roles: u8,
        resources: Resources,
        now_ms: u64,
    ) -> Result<Vec<u8>, Error> {
        let a = Announcement {
            node_id: self.meta.root_key,
            signing_key: self.meta.current_key,
            rotation_chain: self.meta.rotation_chain.clone(),
            addresses,
            roles,
            resources,
            x25519_key: self.x25519.public(),
            timestamp_ms: now_ms,
            ingest: Vec::new(),
            region: String::new(),
        };
        let body = a.encode();
        let sig = self.signer.sign(Announcement::signing_input(&body).as_bytes())?;
        Ok(Announcement::wrap(&body, &sig))
    }
}

fn rotation_last(meta: &IdentityMetadata) -> Result<Option<RotationCertificate>, Error> {
    match meta.rotation_chain.last() {
        None => Ok(None),
        Some(b) => Ok(Some(RotationCertificate::open(b, &vain_schema::Limits::default())?.cert)),
    }
}

/// Status of the identity described by `meta` under `policy`.
pub fn status_of(meta: &IdentityMetadata, now_ms: u64, policy: &Policy) -> Result<Status, Error> {
    Ok(rotation::status(meta.current_since_ms, rotation_last(meta)?.as_ref(), now_ms, policy))
}
