//! `vain identity …`

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use vain_identity::keyfile::{self, KdfParams};
use vain_identity::rotation::{Policy, Status};
use vain_identity::store::{self, NewKey};
use vain_identity::{Identity, hpke, pkcs11, signer::hex_key, slip10};
use vain_schema::node::{Announcement, Resources, roles};
use vain_schema::{Limits, sign};
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum Command {
    /// Create a new identity (random key, BIP-39 mnemonic, or a key generated inside an HSM).
    New {
        #[command(flatten)]
        common: Common,
        /// Encrypt the key files with a passphrase (argon2id + XChaCha20-Poly1305).
        #[arg(long)]
        encrypt: bool,
        /// Derive the key from a new 24-word BIP-39 mnemonic, printed once: write it down.
        #[arg(long, conflicts_with = "hsm")]
        mnemonic: bool,
        /// SLIP-10 path for --mnemonic.
        #[arg(long, default_value = slip10::DEFAULT_PATH)]
        path: String,
        /// Generate the key inside a PKCS#11 token (needs --pkcs11-module, --token, --key-label).
        #[arg(long)]
        hsm: bool,
        #[command(flatten)]
        hsm_args: HsmArgs,
    },
    /// Show the node id, current key, rotation chain and expiry of an identity.
    Show {
        #[command(flatten)]
        common: Common,
    },
    /// Derive a key from an existing BIP-39 mnemonic (SLIP-10); with --create, make it an identity.
    Derive {
        #[command(flatten)]
        common: Common,
        /// File holding the mnemonic ("-" for standard input).
        #[arg(long, value_name = "FILE", default_value = "-")]
        mnemonic_file: PathBuf,
        /// SLIP-10 path (hardened segments only).
        #[arg(long, default_value = slip10::DEFAULT_PATH)]
        path: String,
        /// BIP-39 passphrase ("25th word"); empty by default.
        #[arg(long, env = "VAIN_MNEMONIC_PASSPHRASE", default_value = "", hide_env_values = true)]
        bip39_passphrase: String,
        /// Create an identity in --dir from the derived key.
        #[arg(long)]
        create: bool,
        /// Encrypt the key files (with --create).
        #[arg(long)]
        encrypt: bool,
    },
    /// Replace the signing key by a new one certified by the current key; the node id stays.
    Rotate {
        #[command(flatten)]
        common: Common,
        /// Validity of the new key in days.
        #[arg(long, default_value_t = 90)]
        validity_days: u64,
        /// Generate the new key inside the PKCS#11 token under this label.
        #[arg(long, value_name = "LABEL")]
        hsm_key_label: Option<String>,
        #[command(flatten)]
        hsm_args: HsmArgs,
    },
    /// Sign a file with the current key (Ed25519 over the vain/message/v1 tag and its BLAKE3).
    Sign {
        #[command(flatten)]
        common: Common,
        /// File to sign.
        file: PathBuf,
        /// Write the hex signature here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        hsm_args: HsmArgs,
    },
    /// Verify a file's signature made by `vain identity sign`.
    Verify {
        /// The signed file.
        file: PathBuf,
        /// Hex signature, or @FILE holding it.
        #[arg(long)]
        signature: String,
        /// Hex Ed25519 public key of the signer (the current key shown by `show`).
        #[arg(long)]
        key: String,
    },
    /// Write this node's signed announcement (node id, current key, rotation chain, X25519 key).
    Announce {
        #[command(flatten)]
        common: Common,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Listen addresses to announce (multiaddrs); repeatable.
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// Roles: any of client, aggregator, validator, comma-separated.
        #[arg(long, default_value = "client", value_delimiter = ',')]
        roles: Vec<String>,
        #[command(flatten)]
        hsm_args: HsmArgs,
    },
    /// Encrypt a file to a node (HPKE, RFC 9180) given its announcement or X25519 key.
    Seal {
        /// File to encrypt.
        file: PathBuf,
        /// The recipient's announcement file (verified, then its X25519 key is used).
        #[arg(long, value_name = "FILE", required_unless_present = "to_key", conflicts_with = "to_key")]
        to: Option<PathBuf>,
        /// The recipient's X25519 public key in hex (trust it only if you got it authentically).
        #[arg(long, value_name = "HEX")]
        to_key: Option<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Associated data bound to the ciphertext (must be given again to open).
        #[arg(long, default_value = "")]
        aad: String,
    },
    /// Decrypt a file sealed to this node.
    Open {
        #[command(flatten)]
        common: Common,
        /// Sealed file.
        file: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Associated data given when sealing.
        #[arg(long, default_value = "")]
        aad: String,
        #[command(flatten)]
        hsm_args: HsmArgs,
    },
}

#[derive(Args)]
pub struct Common {
    /// Identity directory.
    #[arg(long, env = "VAIN_IDENTITY_DIR", default_value_os_t = default_dir())]
    dir: PathBuf,
    /// Read the key-file passphrase from this file (else $VAIN_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct HsmArgs {
    /// PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "VAIN_PKCS11_MODULE", value_name = "PATH")]
    pkcs11_module: Option<PathBuf>,
    /// Token label.
    #[arg(long, env = "VAIN_PKCS11_TOKEN", value_name = "LABEL")]
    token: Option<String>,
    /// Key label inside the token.
    #[arg(long, env = "VAIN_PKCS11_KEY", value_name = "LABEL", default_value = "vain-node")]
    key_label: String,
    /// File holding the user PIN (else $VAIN_PKCS11_PIN).
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
}

/// The clock, in Unix ms. `VAIN_NOW_MS` overrides it so expiry paths can be exercised end to end
/// (tests, and operators rehearsing a rotation schedule).
pub(crate) fn now_ms() -> u64 {
    std::env::var("VAIN_NOW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(vain_schema::clock::unix_ms)
}

/// The identity `vain node` uses with its default data directory (`.vain`), so both commands
/// find the same key.
fn default_dir() -> PathBuf {
    PathBuf::from(".vain/identity")
}

impl HsmArgs {
    /// The token settings, when a module is named.
    pub(crate) fn config(&self) -> Result<Option<pkcs11::Config>> {
        let Some(module) = &self.pkcs11_module else { return Ok(None) };
        let pin = match &self.pin_file {
            Some(f) => read_secret_file(f)?,
            None => Zeroizing::new(
                std::env::var("VAIN_PKCS11_PIN").context("PKCS#11 PIN: set VAIN_PKCS11_PIN or --pin-file")?,
            ),
        };
        Ok(Some(pkcs11::Config {
            module: module.clone(),
            token_label: self.token.clone().unwrap_or_default(),
            key_label: self.key_label.clone(),
            pin: pin.to_string(),
        }))
    }

    fn required(&self) -> Result<pkcs11::Config> {
        let cfg = self.config()?.context("--pkcs11-module (or VAIN_PKCS11_MODULE) is required")?;
        if cfg.token_label.is_empty() {
            bail!("--token (or VAIN_PKCS11_TOKEN) is required");
        }
        Ok(cfg)
    }
}

fn read_secret_file(f: &Path) -> Result<Zeroizing<String>> {
    let s = Zeroizing::new(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?);
    Ok(Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned()))
}

/// The passphrase from --passphrase-file, $VAIN_PASSPHRASE or a prompt (`confirm` asks twice).
fn passphrase(common: &Common, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(f) = &common.passphrase_file {
        return read_secret_file(f);
    }
    if let Ok(p) = std::env::var("VAIN_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("a passphrase is needed: set VAIN_PASSPHRASE or use --passphrase-file");
    }
    let p = Zeroizing::new(rpassword::prompt_password("passphrase: ")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
        if *again != *p {
            bail!("passphrases differ");
        }
        if p.is_empty() {
            bail!("empty passphrase");
        }
    }
    Ok(p)
}

/// The passphrase if the identity's key file is encrypted.
fn unlock_passphrase(common: &Common) -> Result<Option<Zeroizing<String>>> {
    let x = common.dir.join(store::X25519_FILE);
    if keyfile::is_encrypted(&vain_core::storage::Disk, &x)? { Ok(Some(passphrase(common, false)?)) } else { Ok(None) }
}

pub(crate) fn open(common: &Common, hsm: Option<&HsmArgs>) -> Result<Identity> {
    let pass = unlock_passphrase(common)?;
    let cfg = match hsm {
        Some(h) => h.config()?,
        None => None,
    };
    Ok(Identity::open(&common.dir, pass.as_ref().map(|p| p.as_bytes()), cfg)?)
}

fn print_identity(id: &vain_schema::persist::IdentityMetadata) -> Result<()> {
    let policy = Policy::default();
    let now = now_ms();
    println!("node id:      {}", hex_key(&id.root_key));
    println!("current key:  {}", hex_key(&id.current_key));
    println!("rotations:    {}", id.rotation_chain.len());
    match &id.key_source {
        vain_schema::persist::KeySource::File { encrypted } => {
            println!("key source:   file ({})", if *encrypted { "passphrase-encrypted" } else { "unencrypted" })
        }
        vain_schema::persist::KeySource::Pkcs11 { token_label, key_label } => {
            println!("key source:   PKCS#11 token {token_label:?}, key {key_label:?}")
        }
    }
    if let Some(p) = &id.derivation_path {
        println!("derivation:   {p}");
    }
    let days = |ms: u64| ms as f64 / 86_400_000.0;
    match store::status_of(id, now, &policy)? {
        Status::Valid { expires_at_ms } => println!("status:       valid, {:.1} days left", days(expires_at_ms - now)),
        Status::ExpiringSoon { expires_at_ms } => {
            println!("status:       expiring in {:.1} days", days(expires_at_ms - now));
            eprintln!(
                "warning: the current key expires in {:.1} days: run `vain identity rotate`",
                days(expires_at_ms - now)
            );
        }
        Status::Expired { expired_at_ms } => {
            println!("status:       EXPIRED {:.1} days ago", days(now - expired_at_ms));
            eprintln!("warning: the current key has expired; peers refuse its signatures");
        }
        Status::RotationOverdue { due_at_ms } => {
            println!("status:       rotation overdue by {:.1} days", days(now - due_at_ms));
            eprintln!(
                "warning: the root key has signed for more than {} days: run `vain identity rotate`",
                policy.validity_days()
            );
        }
    }
    Ok(())
}

pub(crate) fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let v = hex::decode(s.trim()).with_context(|| format!("{what} is not hex"))?;
    v.try_into().map_err(|v: Vec<u8>| anyhow::anyhow!("{what} is {} bytes, expected {N}", v.len()))
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::New { common, encrypt, mnemonic, path, hsm, hsm_args } => {
            let pass = if encrypt { Some(passphrase(&common, true)?) } else { None };
            let key = if hsm {
                NewKey::Hsm(hsm_args.required()?)
            } else if mnemonic {
                slip10::parse_path(&path)?;
                let phrase = slip10::generate_mnemonic()?;
                println!("mnemonic (write it down; it is shown only once and recreates this key):\n  {}\n", *phrase);
                NewKey::Derived { seed: slip10::seed_from_mnemonic(&phrase, "")?, path }
            } else {
                NewKey::Random
            };
            let id = Identity::create(
                &common.dir,
                key,
                pass.as_ref().map(|p| p.as_bytes()),
                KdfParams::default(),
                now_ms(),
            )?;
            println!("created identity in {}", common.dir.display());
            print_identity(id.meta())
        }
        Command::Show { common } => print_identity(&Identity::metadata(&common.dir)?),
        Command::Derive { common, mnemonic_file, path, bip39_passphrase, create, encrypt } => {
            let mut phrase = Zeroizing::new(String::new());
            if mnemonic_file == Path::new("-") {
                std::io::stdin().read_to_string(&mut phrase)?;
            } else {
                phrase = read_secret_file(&mnemonic_file)?;
            }
            let seed = slip10::seed_from_mnemonic(&phrase, &bip39_passphrase)?;
            let k = slip10::derive(seed.as_ref(), &path)?;
            println!("path:        {path}");
            println!("public key:  {}", hex_key(&k.public_key_slip10()[1..]));
            if create {
                let pass = if encrypt { Some(passphrase(&common, true)?) } else { None };
                let id = Identity::create(
                    &common.dir,
                    NewKey::Derived { seed, path },
                    pass.as_ref().map(|p| p.as_bytes()),
                    KdfParams::default(),
                    now_ms(),
                )?;
                println!("created identity in {}", common.dir.display());
                print_identity(id.meta())?;
            }
            Ok(())
        }
        Command::Rotate { common, validity_days, hsm_key_label, hsm_args } => {
            if validity_days == 0 || validity_days > 3650 {
                bail!("--validity-days must be between 1 and 3650");
            }
            let pass = unlock_passphrase(&common)?;
            let mut id = Identity::open(&common.dir, pass.as_ref().map(|p| p.as_bytes()), hsm_args.config()?)?;
            let key = match hsm_key_label {
                Some(label) => {
                    let mut cfg = hsm_args.required()?;
                    cfg.key_label = label;
                    NewKey::Hsm(cfg)
                }
                None => NewKey::Random,
            };
            let policy = Policy { validity_ms: validity_days * 86_400_000, ..Policy::default() };
            let cert = id.rotate(key, pass.as_ref().map(|p| p.as_bytes()), KdfParams::default(), now_ms(), &policy)?;
            println!(
                "rotated: certificate {} hands {} over to {}",
                cert.sequence,
                hex_key(&cert.old_key),
                hex_key(&cert.new_key)
            );
            print_identity(id.meta())
        }
        Command::Sign { common, file, out, hsm_args } => {
            let id = open(&common, Some(&hsm_args))?;
            let data = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sig = hex::encode(id.sign_message(&data)?);
            match out {
                Some(o) => {
                    std::fs::write(&o, format!("{sig}\n")).with_context(|| format!("writing {}", o.display()))?
                }
                None => println!("{sig}"),
            }
            eprintln!("signed by {}", hex_key(&id.current_key()));
            Ok(())
        }
        Command::Verify { file, signature, key } => {
            let sig_text = match signature.strip_prefix('@') {
                Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
                None => signature,
            };
            let sig: [u8; 64] = parse_hex(&sig_text, "signature")?;
            let key: [u8; 32] = parse_hex(&key, "key")?;
            let data = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let input = sign::SigningInput::new(sign::MESSAGE, &data);
            vain_identity::signer::verify(&key, input.as_bytes(), &sig)?;
            println!("good signature by {}", hex_key(&key));
            Ok(())
        }
        Command::Announce { common, out, addresses, roles: role_names, hsm_args } => {
            let id = open(&common, Some(&hsm_args))?;
            let mut bits = 0u8;
            for r in &role_names {
                bits |= roles::parse(r).with_context(|| format!("unknown role {r:?} ({})", roles::KNOWN))?;
            }
            let bytes = id.announcement(addresses, bits, Resources::default(), now_ms())?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} ({} bytes) for node {}", out.display(), bytes.len(), hex_key(&id.node_id()));
            Ok(())
        }
        Command::Seal { file, to, to_key, out, aad } => {
            let recipient: [u8; 32] = match (to, to_key) {
                (Some(a), _) => {
                    let bytes = std::fs::read(&a).with_context(|| format!("reading {}", a.display()))?;
                    let ann = Announcement::open(&bytes, &Limits::default(), now_ms())
                        .with_context(|| format!("announcement {} does not verify", a.display()))?;
                    eprintln!("sealing to node {}", hex_key(&ann.node_id));
                    ann.x25519_key
                }
                (None, Some(k)) => parse_hex(&k, "--to-key")?,
                (None, None) => bail!("give --to ANNOUNCEMENT or --to-key HEX"),
            };
            let data = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sealed = hpke::seal(&recipient, &data, aad.as_bytes())?;
            std::fs::write(&out, &sealed).with_context(|| format!("writing {}", out.display()))?;
            println!("sealed {} bytes into {}", data.len(), out.display());
            Ok(())
        }
        Command::Open { common, file, out, aad, hsm_args } => {
            let id = open(&common, Some(&hsm_args))?;
            let sealed = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let plain = hpke::open(id.x25519(), &sealed, aad.as_bytes())?;
            std::fs::write(&out, &plain).with_context(|| format!("writing {}", out.display()))?;
            println!("opened {} bytes into {}", plain.len(), out.display());
            Ok(())
        }
    }
}
