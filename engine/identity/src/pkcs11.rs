//! Ed25519 keys held in a PKCS#11 token (an HSM, or SoftHSM2 in tests).
//!
//! Keys are `CKK_EC_EDWARDS` objects with `CKA_EC_PARAMS` = the DER OID of Ed25519 (1.3.101.112);
//! signatures use `CKM_EDDSA` without parameters (pure Ed25519), so they verify with any RFC 8032
//! implementation. The secret key is generated inside the token and never leaves it.

use crate::{Error, Signer};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use vain_schema::{PublicKey, Signature};

/// DER encoding of OID 1.3.101.112 (id-Ed25519).
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where the key lives and how to log in.
#[derive(Clone)]
pub struct Config {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// Label of the token.
    pub token_label: String,
    /// Label of the key pair inside the token.
    pub key_label: String,
    /// User PIN.
    pub pin: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

/// A logged-in session holding one Ed25519 private key.
pub struct Pkcs11Signer {
    // Field order matters: the session must close before the library is finalised.
    session: Session,
    key: ObjectHandle,
    public: PublicKey,
    _ctx: Pkcs11,
}

fn p11(op: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Error {
    move |source| Error::Pkcs11 { op, source }
}

/// One initialised context per module for the whole process: PKCS#11 allows a single
/// `C_Initialize` per library, and the last clone dropped finalises it.
fn context(module: &Path) -> Result<Pkcs11, Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(p11("load module"))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(p11("initialize"))?;
    map.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

fn login(cfg: &Config) -> Result<(Pkcs11, Session), Error> {
    let ctx = context(&cfg.module)?;
    let slot = ctx
        .get_slots_with_token()
        .map_err(p11("list slots"))?
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|t| t.label().trim_end() == cfg.token_label).unwrap_or(false))
        .ok_or_else(|| Error::TokenNotFound { label: cfg.token_label.clone() })?;
    let session = ctx.open_rw_session(slot).map_err(p11("open session"))?;
    // Login state is shared by all sessions of the application: a second signer finds it logged in.
    match session.login(UserType::User, Some(&AuthPin::from(cfg.pin.clone()))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(p11("login")(e)),
    }
    Ok((ctx, session))
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>, Error> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(p11("find objects"))?;
    Ok(found.into_iter().next())
}

fn public_of(session: &Session, label: &str) -> Result<PublicKey, Error> {
    let h = find(session, ObjectClass::PUBLIC_KEY, label)?.ok_or_else(|| Error::KeyNotFound { label: label.into() })?;
    let attrs = session.get_attributes(h, &[AttributeType::EcPoint]).map_err(p11("read public key"))?;
    let point = attrs
        .into_iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
        .ok_or(Error::Pkcs11Malformed { what: "public key" })?;
    // Tokens return either the raw 32 bytes or a DER OCTET STRING around them.
    let raw = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => return Err(Error::Pkcs11Malformed { what: "public key" }),
    };
    let mut pk = [0u8; 32];
    pk.copy_from_slice(raw);
    Ok(pk)
}

impl Pkcs11Signer {
    /// Logs in and opens the key labelled `cfg.key_label`.
    pub fn open(cfg: &Config) -> Result<Self, Error> {
        let (ctx, session) = login(cfg)?;
        let key = find(&session, ObjectClass::PRIVATE_KEY, &cfg.key_label)?
            .ok_or_else(|| Error::KeyNotFound { label: cfg.key_label.clone() })?;
        let public = public_of(&session, &cfg.key_label)?;
        Ok(Self { session, key, public, _ctx: ctx })
    }

    /// Generates a new non-extractable Ed25519 key pair labelled `cfg.key_label` in the token.
    pub fn generate(cfg: &Config) -> Result<Self, Error> {
        let (ctx, session) = login(cfg)?;
        if find(&session, ObjectClass::PRIVATE_KEY, &cfg.key_label)?.is_some() {
            return Err(Error::KeyExists { label: cfg.key_label.clone() });
        }
        let label = cfg.key_label.as_bytes().to_vec();
        let public_tmpl = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_OID.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private_tmpl = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
        ];
        let (_, key) = session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_tmpl, &private_tmpl)
            .map_err(p11("generate key pair"))?;
        let public = public_of(&session, &cfg.key_label)?;
        Ok(Self { session, key, public, _ctx: ctx })
    }
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> PublicKey {
        self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, Error> {
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = self.session.sign(&mech, self.key, message).map_err(p11("sign"))?;
        sig.try_into().map_err(|_| Error::Pkcs11Malformed { what: "signature" })
    }
}
