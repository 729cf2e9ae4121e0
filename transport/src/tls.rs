//! TLS 1.3 bound to node identities: each side presents its Ed25519 key as an RFC 7250 raw
//! public key (no X.509, no CA), and each side's verifier accepts only the keys its [`Policy`]
//! allows — an expected key, or any key not on the deny list. A peer whose key does not match,
//! or is denied, fails the handshake. Resumption is off, so every connection is checked against
//! the current deny list. The configs are plain rustls configs for quinn-proto's QUIC crypto.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// ALPN of the ingest protocol.
pub const ALPN: &[u8] = b"vain-ingest/1";

/// The SPKI DER of an Ed25519 public key.
pub fn spki(key: &[u8; 32]) -> Vec<u8> {
    let mut v = ED25519_SPKI_PREFIX.to_vec();
    v.extend_from_slice(key);
    v
}

/// The Ed25519 key inside an SPKI, if it is exactly one.
pub fn key_of(spki: &[u8]) -> Option<[u8; 32]> {
    if spki.len() != 44 || spki[..12] != ED25519_SPKI_PREFIX {
        return None;
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&spki[12..]);
    Some(k)
}

/// Which peer keys a side accepts.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Exactly these keys (a client dialling a known aggregator).
    Only(BTreeSet<[u8; 32]>),
    /// Any key not on the shared deny list (an aggregator taking clients; the list is the
    /// ledger's bans and can change while the endpoint runs).
    AnyExcept(Arc<RwLock<BTreeSet<[u8; 32]>>>),
}

impl Policy {
    fn allows(&self, key: &[u8; 32]) -> bool {
        match self {
            Policy::Only(keys) => keys.contains(key),
            // A poisoned lock means a writer panicked mid-update: refuse rather than guess.
            Policy::AnyExcept(deny) => deny.read().map(|d| !d.contains(key)).unwrap_or(false),
        }
    }
}

#[derive(Debug)]
struct Verifier {
    policy: Policy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn check(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Result<(), Error> {
        let bad = || Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        if !intermediates.is_empty() {
            return Err(bad());
        }
        let key = key_of(end_entity.as_ref()).ok_or_else(bad)?;
        if self.policy.allows(&key) { Ok(()) } else { Err(bad()) }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity, intermediates).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity, intermediates).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node's own identity for TLS, from its 32-byte Ed25519 secret (seed).
pub fn certified_key(secret: &[u8; 32]) -> Result<Arc<CertifiedKey>, Error> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(secret);
    let key = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(der))?;
    let spki = key.public_key().ok_or(Error::General("no public key for the Ed25519 secret".into()))?;
    Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(spki.as_ref().to_vec())], key)))
}

/// A TLS 1.3 server config presenting `secret`'s key and accepting clients by `policy`.
pub fn server_config(secret: &[u8; 32], policy: Policy) -> Result<rustls::ServerConfig, Error> {
    let p = provider();
    let verifier = Arc::new(Verifier { policy, algorithms: p.signature_verification_algorithms });
    let mut c = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified_key(secret)?)));
    // Resumed sessions would skip the key check and a deny list updated since.
    c.send_tls13_tickets = 0;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// A TLS 1.3 client config presenting `secret`'s key and accepting servers by `policy`.
pub fn client_config(secret: &[u8; 32], policy: Policy) -> Result<rustls::ClientConfig, Error> {
    let p = provider();
    let verifier = Arc::new(Verifier { policy, algorithms: p.signature_verification_algorithms });
    let mut c = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified_key(
            secret,
        )?)));
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// The peer's Ed25519 key after a handshake, from its presented raw public key.
pub fn peer_key(certs: Option<&[CertificateDer<'_>]>) -> Option<[u8; 32]> {
    certs.and_then(|c| c.first()).and_then(|c| key_of(c.as_ref()))
}
