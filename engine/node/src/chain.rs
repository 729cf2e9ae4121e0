//! `vain chain`: the embedded chain, deployment, the node's Ethereum account, stake and
//! registration, anchoring and inclusion proofs; and the aggregator's anchoring task that
//! `vain node` runs when node.toml has a `[chain]` section.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::utils::{format_units, parse_units};
use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use vain_chain::client::Role;
use vain_chain::deploy::{self, Deployment, Genesis, VAIN};
use vain_chain::devnet::Devnet;
use vain_chain::{Client, Error as ChainError, account, rpc};

/// `[chain]` in node.toml: where this node anchors.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    /// JSON-RPC endpoint (`vain chain serve`, anvil, or a real chain).
    pub rpc_url: String,
    /// The deployment file `vain chain serve` / `vain chain deploy` wrote.
    pub deployment: PathBuf,
    /// The node's Ethereum keystore (`vain chain account new`).
    pub keystore: PathBuf,
    /// File holding the keystore's password.
    pub password_file: PathBuf,
    /// Whether an aggregator anchors every round it closes.
    #[serde(default = "yes")]
    pub anchor: bool,
    /// VAIN an aggregator whose account holds the publisher role pays per round it closes, split
    /// among the round's contributors by reputation (none: no rewards).
    #[serde(default)]
    pub rewards_per_round: Option<String>,
}

fn yes() -> bool {
    true
}

impl ChainSection {
    /// The node's account (its keystore opened), the deployment and the endpoint.
    fn open(&self) -> Result<(PrivateKeySigner, Deployment, String)> {
        let signer = account::open(&self.keystore, &read_secret(&self.password_file)?)?;
        Ok((signer, Deployment::load(&self.deployment)?, self.rpc_url.clone()))
    }
}

/// Where to reach the chain and as whom.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// The deployment file.
    #[arg(long, default_value = ".vain/chain/deployment.json")]
    deployment: PathBuf,
    #[command(flatten)]
    account: AccountArgs,
}

/// The signing account: a keystore, a BIP-39 mnemonic, or a public development account.
#[derive(Args, Clone, Debug)]
pub struct AccountArgs {
    /// Encrypted keystore (with --password-file).
    #[arg(long, conflicts_with_all = ["mnemonic_file", "dev_account"])]
    keystore: Option<PathBuf>,
    /// File holding the keystore's password.
    #[arg(long, requires = "keystore")]
    password_file: Option<PathBuf>,
    /// File holding a BIP-39 mnemonic (account m/44'/60'/0'/0/0).
    #[arg(long, conflicts_with = "dev_account")]
    mnemonic_file: Option<PathBuf>,
    /// Development account N of the public test mnemonic (embedded chain and anvil only).
    #[arg(long)]
    dev_account: Option<u32>,
}

impl AccountArgs {
    fn signer(&self) -> Result<Option<PrivateKeySigner>> {
        if let Some(k) = &self.keystore {
            let pw = self.password_file.as_ref().context("--keystore needs --password-file")?;
            return Ok(Some(account::open(k, &read_secret(pw)?)?));
        }
        if let Some(m) = &self.mnemonic_file {
            return Ok(Some(account::from_mnemonic(&String::from_utf8_lossy(&read_secret(m)?))?));
        }
        if let Some(i) = self.dev_account {
            return Ok(Some(deploy::dev_account(i)?));
        }
        Ok(None)
    }

    fn required(&self) -> Result<PrivateKeySigner> {
        self.signer()?.context("this command signs: give --keystore, --mnemonic-file or --dev-account")
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let mut b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
        b.pop();
    }
    Ok(b)
}

/// An amount of VAIN ("1500", "0.25").
fn vain_amount(s: &str) -> Result<U256> {
    let v: U256 = parse_units(s, 18).with_context(|| format!("{s:?} is not an amount of VAIN"))?.into();
    if v.is_zero() {
        bail!("the amount must be above zero");
    }
    Ok(v)
}

fn show(v: U256) -> String {
    format_units(v, 18).map(|s| s.trim_end_matches('0').trim_end_matches('.').to_string()).unwrap_or_default()
}

/// `vain chain …`.
#[derive(Subcommand)]
pub enum Command {
    /// Run the embedded chain (an in-process EVM) over JSON-RPC; deploys the contracts at its
    /// first start and writes the deployment file.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8545")]
        listen: std::net::SocketAddr,
        /// Where the chain keeps its journal and deployment file.
        #[arg(long, default_value = ".vain/chain")]
        dir: PathBuf,
        /// Accounts funded with ether at genesis (besides the development accounts).
        #[arg(long)]
        fund: Vec<Address>,
    },
    /// Deploy the contracts on the chain at --rpc-url and write the deployment file.
    Deploy {
        /// JSON-RPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc_url: String,
        /// Where to write the deployment.
        #[arg(long, default_value = ".vain/chain/deployment.json")]
        out: PathBuf,
        #[command(flatten)]
        account: AccountArgs,
    },
    /// The node's Ethereum account.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Balances, stake and registration of an account (yours by default).
    Status {
        #[command(flatten)]
        conn: Conn,
        /// Another account to show.
        #[arg(long)]
        address: Option<Address>,
    },
    /// Send ether and/or VAIN.
    Fund {
        #[command(flatten)]
        conn: Conn,
        /// Recipient.
        #[arg(long)]
        to: Address,
        /// Ether to send.
        #[arg(long)]
        eth: Option<String>,
        /// VAIN to send.
        #[arg(long)]
        vain: Option<String>,
    },
    /// Bond VAIN in Staking.
    Stake {
        #[command(flatten)]
        conn: Conn,
        /// VAIN to bond.
        #[arg(long)]
        amount: String,
    },
    /// Start unbonding VAIN.
    Unstake {
        #[command(flatten)]
        conn: Conn,
        /// VAIN to unbond.
        #[arg(long)]
        amount: String,
    },
    /// Withdraw VAIN that finished unbonding.
    Withdraw {
        #[command(flatten)]
        conn: Conn,
    },
    /// Register a node (its identity in --data-dir signs the binding) for this account.
    Register {
        #[command(flatten)]
        conn: Conn,
        /// The node's data directory (its identity).
        #[arg(long)]
        data_dir: PathBuf,
        /// client, aggregator or validator.
        #[arg(long)]
        role: String,
    },
    /// Anchor a round by hand (aggregators anchor every round themselves).
    Anchor {
        #[command(flatten)]
        conn: Conn,
        /// Model id.
        #[arg(long)]
        model: String,
        /// Round number.
        #[arg(long)]
        round: u64,
        /// Merkle root of the accepted updates (hex).
        #[arg(long)]
        root: String,
        /// Checkpoint digest (hex).
        #[arg(long)]
        checkpoint: String,
    },
    /// Write the inclusion proof of an update from a node's journaled closes.
    Proof {
        /// The node's data directory (an aggregator's or a validator's).
        #[arg(long)]
        data_dir: PathBuf,
        /// Round number.
        #[arg(long)]
        round: u64,
        /// The update's digest (hex).
        #[arg(long)]
        update: String,
        /// Where to write the proof (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Delegate your VAIN votes to yourself (needed once before voting).
    Delegate {
        #[command(flatten)]
        conn: Conn,
    },
    /// Propose, through the governor, a slash of an account's stake or a new minimum stake.
    Propose {
        #[command(flatten)]
        conn: Conn,
        /// Slash this account's stake (sent to the timelock).
        #[arg(long, conflicts_with = "minimum", required_unless_present = "minimum")]
        slash: Option<Address>,
        /// Set this role's minimum stake (client, aggregator, validator).
        #[arg(long)]
        minimum: Option<String>,
        /// VAIN to slash, or the new minimum.
        #[arg(long)]
        amount: String,
        /// Why (part of the proposal's identity: the same text twice is the same proposal).
        #[arg(long)]
        description: String,
    },
    /// Vote on a proposal.
    Vote {
        #[command(flatten)]
        conn: Conn,
        /// The proposal id (decimal, as `propose` printed it).
        #[arg(long)]
        proposal: U256,
        /// for, against or abstain.
        #[arg(long)]
        support: String,
    },
    /// Queue a passed proposal, or execute a queued one whose delay is over.
    Execute {
        #[command(flatten)]
        conn: Conn,
        /// The proposal id.
        #[arg(long)]
        proposal: U256,
    },
    /// Swap VAIN for the pool's other token, or back.
    Swap {
        #[command(flatten)]
        conn: Conn,
        /// What to sell: vain or quote.
        #[arg(long)]
        sell: String,
        /// How much to sell.
        #[arg(long)]
        amount: String,
        /// The least to receive (slippage bound).
        #[arg(long)]
        min_out: String,
        /// Seconds from the chain's latest block after which the swap must not happen.
        #[arg(long, default_value_t = 600)]
        deadline_secs: u64,
    },
    /// Claim a reward: the account's leaf from a rewards file an aggregator kept
    /// (`<data_dir>/rewards/<round>.json`), or a leaf given in full.
    Claim {
        #[command(flatten)]
        conn: Conn,
        /// A rewards file (takes the epoch, index, amount and proof from it).
        #[arg(long, conflicts_with_all = ["epoch", "index", "amount", "proof"])]
        rewards_file: Option<PathBuf>,
        /// The account the leaf pays (yours by default).
        #[arg(long)]
        account: Option<Address>,
        /// Epoch.
        #[arg(long, required_unless_present = "rewards_file")]
        epoch: Option<u64>,
        /// The leaf's index.
        #[arg(long, required_unless_present = "rewards_file")]
        index: Option<u64>,
        /// The leaf's amount of VAIN.
        #[arg(long, required_unless_present = "rewards_file")]
        amount: Option<String>,
        /// Sibling hashes, hex, comma-separated.
        #[arg(long, value_delimiter = ',')]
        proof: Vec<String>,
    },
    /// Development chains only (the embedded chain, anvil): move the clock and mine blocks.
    Mine {
        /// JSON-RPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc_url: String,
        /// The deployment file.
        #[arg(long, default_value = ".vain/chain/deployment.json")]
        deployment: PathBuf,
        /// Blocks to mine.
        #[arg(long, default_value_t = 1)]
        blocks: u32,
        /// Seconds to move the clock forward first.
        #[arg(long, default_value_t = 0)]
        seconds: u64,
    },
    /// Check an inclusion proof against the chain alone.
    Verify {
        /// JSON-RPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc_url: String,
        /// The deployment file.
        #[arg(long, default_value = ".vain/chain/deployment.json")]
        deployment: PathBuf,
        /// The proof `vain chain proof` wrote (what a third party holds).
        #[arg(long, conflicts_with_all = ["data_dir", "round", "update"], required_unless_present = "data_dir")]
        proof: Option<PathBuf>,
        /// Or: build the proof from this node's journaled closes (with --round and --update).
        #[arg(long, requires_all = ["round", "update"])]
        data_dir: Option<PathBuf>,
        /// Round number.
        #[arg(long)]
        round: Option<u64>,
        /// The update's digest (hex).
        #[arg(long)]
        update: Option<String>,
    },
}

/// `vain chain account …`.
#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an encrypted keystore from OS randomness, or from a BIP-39 mnemonic.
    New {
        /// The keystore to create.
        #[arg(long)]
        keystore: PathBuf,
        /// File holding its password.
        #[arg(long)]
        password_file: PathBuf,
        /// Derive the key from this mnemonic (m/44'/60'/0'/0/0) instead.
        #[arg(long)]
        mnemonic_file: Option<PathBuf>,
    },
    /// Print the address of a keystore.
    Show {
        /// The keystore.
        #[arg(long)]
        keystore: PathBuf,
        /// File holding its password.
        #[arg(long)]
        password_file: PathBuf,
    },
}

/// An update's inclusion proof, as `vain chain proof` writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Proof {
    /// Model id.
    pub model: String,
    /// Round.
    pub round: u64,
    /// The sender's node key (hex).
    pub sender: String,
    /// The update digest (hex).
    pub update: String,
    /// The round's Merkle root (hex).
    pub root: String,
    /// Sibling hashes from the leaf up (hex).
    pub proof: Vec<String>,
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn connect(conn: &Conn, signer: PrivateKeySigner) -> Result<Client> {
    let d = Deployment::load(&conn.deployment)?;
    Ok(Client::connect(&conn.rpc_url, signer, d).await?)
}

/// A signer for reads: reads need no key, any address will do.
fn reader() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

fn mined(what: &str, m: vain_chain::client::Mined) {
    println!("{what}: transaction {} in block {} ({} gas)", m.tx, m.block, m.gas_used);
}

/// Run the embedded chain until interrupted.
fn serve(listen: std::net::SocketAddr, dir: &Path, fund: &[Address]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut funded: Vec<Address> =
        (0..10).map(deploy::dev_account).collect::<Result<Vec<_>, _>>()?.iter().map(|s| s.address()).collect();
    funded.extend_from_slice(fund);
    let chain = Devnet::open(&dir.join("chain.log"), &funded, U256::from(10_000u64) * VAIN)?;
    let fresh = chain.height() == 0;
    let server = rpc::Server::spawn(listen, chain)?;
    let path = dir.join("deployment.json");
    let rt = rt()?;
    if fresh {
        let (d, gas) = rt.block_on(deploy::deploy(&server.url(), deploy::dev_account(0)?, &Genesis::default()))?;
        d.save(&path)?;
        let total: u64 = gas.iter().map(|(_, g)| g).sum();
        println!("deployed {} contracts ({total} gas) → {}", d.contracts().len(), path.display());
    } else if !path.exists() {
        bail!("{} holds a chain but no deployment file", dir.display());
    }
    println!("embedded chain (id {}) on {} — Ctrl-C stops it", vain_chain::devnet::CHAIN_ID, server.url());
    rt.block_on(async { tokio::signal::ctrl_c().await })?;
    drop(server);
    Ok(())
}

/// Runs the command.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Serve { listen, dir, fund } => serve(listen, &dir, &fund),
        Command::Deploy { rpc_url, out, account } => {
            let signer = account.required()?;
            let (d, gas) = rt()?.block_on(deploy::deploy(&rpc_url, signer, &Genesis::default()))?;
            if let Some(p) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(p)?;
            }
            d.save(&out)?;
            for (step, g) in &gas {
                println!("{step:<36} {g:>9} gas");
            }
            println!("deployment → {}", out.display());
            Ok(())
        }
        Command::Account(AccountCommand::New { keystore, password_file, mnemonic_file }) => {
            let signer = match mnemonic_file {
                Some(m) => account::from_mnemonic(&String::from_utf8_lossy(&read_secret(&m)?))?,
                None => PrivateKeySigner::random(),
            };
            account::create(&keystore, &signer, &read_secret(&password_file)?)?;
            println!("{}", signer.address());
            Ok(())
        }
        Command::Account(AccountCommand::Show { keystore, password_file }) => {
            println!("{}", account::open(&keystore, &read_secret(&password_file)?)?.address());
            Ok(())
        }
        Command::Status { conn, address } => rt()?.block_on(async {
            let signer = conn.account.signer()?;
            let me = signer.as_ref().map(|s| s.address());
            let c = connect(&conn, signer.unwrap_or_else(reader)).await?;
            let who = address.or(me).context("give --address, or the account to show")?;
            let s = c.standing(who).await?;
            println!("account      {}", s.account);
            println!("ether        {}", show(s.eth));
            println!("VAIN         {}", show(s.vain));
            println!("staked       {}", show(s.staked));
            if !s.unbonding.0.is_zero() {
                println!("unbonding    {} (released at {})", show(s.unbonding.0), s.unbonding.1);
            }
            match c.registration(who).await? {
                Some(r) => println!("registered   {} as {}", hex::encode(r.node_id), r.role.name()),
                None => println!("registered   no"),
            }
            Ok(())
        }),
        Command::Fund { conn, to, eth, vain } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            if eth.is_none() && vain.is_none() {
                bail!("give --eth and/or --vain");
            }
            if let Some(e) = eth {
                mined("ether", c.send_eth(to, vain_amount(&e)?).await?);
            }
            if let Some(v) = vain {
                mined("VAIN", c.transfer(to, vain_amount(&v)?).await?);
            }
            Ok(())
        }),
        Command::Stake { conn, amount } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            mined("staked", c.stake(vain_amount(&amount)?).await?);
            Ok(())
        }),
        Command::Unstake { conn, amount } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            mined("unbonding", c.request_unstake(vain_amount(&amount)?).await?);
            Ok(())
        }),
        Command::Withdraw { conn } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            mined("withdrawn", c.withdraw().await?);
            Ok(())
        }),
        Command::Register { conn, data_dir, role } => rt()?.block_on(async {
            let role = Role::parse(&role).with_context(|| format!("role {role:?} (client, aggregator, validator)"))?;
            if !data_dir.join("identity").exists() {
                bail!("{} holds no node identity", data_dir.display());
            }
            let id = crate::net::identity_with(&data_dir, None)?;
            let key = ed25519_dalek::SigningKey::from_bytes(&id.seed);
            let c = connect(&conn, conn.account.required()?).await?;
            let message = c.registration_message(c.account(), role).await?;
            let input = vain_schema::sign::SigningInput::new(vain_schema::sign::CHAIN_REGISTRATION, &message);
            use ed25519_dalek::Signer as _;
            let sig = key.sign(input.as_bytes());
            let node = key.verifying_key().to_bytes();
            mined("registered", c.register(node, role, sig.to_bytes()).await?);
            println!("node {} is {} for {}", hex::encode(node), role.name(), c.account());
            Ok(())
        }),
        Command::Anchor { conn, model, round, root, checkpoint } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            let root = crate::identity::parse_hex::<32>(&root, "root")?;
            let cp = crate::identity::parse_hex::<32>(&checkpoint, "checkpoint")?;
            mined("anchored", c.anchor_round(&model, round, root, cp).await?);
            Ok(())
        }),
        Command::Mine { rpc_url, deployment, blocks, seconds } => rt()?.block_on(async {
            let c = Client::connect(&rpc_url, reader(), Deployment::load(&deployment)?).await?;
            c.advance(seconds).await?;
            for _ in 1..blocks {
                c.advance(0).await?;
            }
            println!("mined {blocks} block(s), clock +{seconds} s");
            Ok(())
        }),
        Command::Delegate { conn } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            mined("delegated", c.delegate_self().await?);
            Ok(())
        }),
        Command::Propose { conn, slash, minimum, amount, description } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            let amount = vain_amount(&amount)?;
            let (id, m) = match (slash, minimum) {
                (Some(a), _) => c.propose_slash(a, amount, &description).await?,
                (None, Some(r)) => {
                    let role =
                        Role::parse(&r).with_context(|| format!("role {r:?} (client, aggregator, validator)"))?;
                    c.propose_minimum(role, amount, &description).await?
                }
                (None, None) => bail!("give --slash ADDRESS or --minimum ROLE"),
            };
            mined("proposed", m);
            println!("proposal {id}");
            Ok(())
        }),
        Command::Vote { conn, proposal, support } => rt()?.block_on(async {
            let support = match support.as_str() {
                "against" => 0,
                "for" => 1,
                "abstain" => 2,
                other => bail!("--support {other:?} (for, against, abstain)"),
            };
            let c = connect(&conn, conn.account.required()?).await?;
            mined("voted", c.vote(proposal, support).await?);
            Ok(())
        }),
        Command::Execute { conn, proposal } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            let (what, m) = c.advance_proposal(proposal).await?;
            mined(what, m);
            Ok(())
        }),
        Command::Swap { conn, sell, amount, min_out, deadline_secs } => rt()?.block_on(async {
            let sell_vain = match sell.as_str() {
                "vain" => true,
                "quote" => false,
                other => bail!("--sell {other:?} (vain, quote)"),
            };
            let amount = vain_amount(&amount)?;
            let min_out: U256 = parse_units(&min_out, 18).with_context(|| format!("--min-out {min_out:?}"))?.into();
            let c = connect(&conn, conn.account.required()?).await?;
            // Deadlines are measured against the chain's clock, not this machine's.
            let deadline = c.chain_time().await? + deadline_secs;
            mined("swapped", c.swap(sell_vain, amount, min_out, deadline).await?);
            Ok(())
        }),
        Command::Claim { conn, rewards_file, account, epoch, index, amount, proof } => rt()?.block_on(async {
            let c = connect(&conn, conn.account.required()?).await?;
            let to = account.unwrap_or(c.account());
            let (epoch, index, amount, proof) = match rewards_file {
                Some(f) => {
                    let text = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                    let tree: RewardTree = serde_json::from_slice(&text)
                        .with_context(|| format!("{} is not a rewards file", f.display()))?;
                    let leaf = tree
                        .leaves
                        .into_iter()
                        .find(|l| l.account == to)
                        .with_context(|| format!("{to} has no reward in epoch {} ({})", tree.epoch, f.display()))?;
                    let amount: U256 = leaf.amount.parse().with_context(|| format!("amount {:?}", leaf.amount))?;
                    (tree.epoch, leaf.index, amount, leaf.proof)
                }
                None => (
                    epoch.context("--epoch")?,
                    index.context("--index")?,
                    vain_amount(amount.as_deref().context("--amount")?)?,
                    proof,
                ),
            };
            let siblings: Vec<[u8; 32]> =
                proof.iter().map(|h| crate::identity::parse_hex::<32>(h, "proof")).collect::<Result<_>>()?;
            mined("claimed", c.claim(epoch, index, to, amount, &siblings).await?);
            println!("{} VAIN to {to} (epoch {epoch})", show(amount));
            Ok(())
        }),
        Command::Proof { data_dir, round, update, out } => {
            let digest = crate::identity::parse_hex::<32>(&update, "update")?;
            let p = proof_from_closes(&data_dir, round, &digest)?;
            std::fs::write(&out, serde_json::to_vec_pretty(&p)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("proof of {} in round {round} ({} siblings) → {}", update, p.proof.len(), out.display());
            Ok(())
        }
        Command::Verify { rpc_url, deployment, proof, data_dir, round, update } => rt()?.block_on(async {
            let p: Proof = match (proof, data_dir, round, update) {
                (Some(proof), ..) => {
                    let text = std::fs::read(&proof).with_context(|| format!("reading {}", proof.display()))?;
                    serde_json::from_slice(&text).with_context(|| format!("{} is not a proof", proof.display()))?
                }
                (None, Some(dir), Some(round), Some(update)) => {
                    proof_from_closes(&dir, round, &crate::identity::parse_hex::<32>(&update, "update")?)?
                }
                _ => bail!("give --proof FILE, or --data-dir, --round and --update"),
            };
            let sender = crate::identity::parse_hex::<32>(&p.sender, "sender")?;
            let update = crate::identity::parse_hex::<32>(&p.update, "update")?;
            let siblings: Vec<[u8; 32]> =
                p.proof.iter().map(|h| crate::identity::parse_hex::<32>(h, "proof")).collect::<Result<_>>()?;
            let c = Client::connect(&rpc_url, reader(), Deployment::load(&deployment)?).await?;
            let anchored = c.round(&p.model, p.round).await?;
            let Some(a) = anchored else { bail!("round {} of {} is not anchored on this chain", p.round, p.model) };
            let leaf = vain_round::merkle::leaf(&sender, &update);
            if !c.verify_inclusion(&p.model, p.round, leaf, &siblings).await? {
                bail!(
                    "NOT included: the chain's root for round {} of {} is {} and the proof does not lead to it",
                    p.round,
                    p.model,
                    a.root
                );
            }
            println!(
                "included: update {} of {} in round {} of {} (root {}, anchored by {} in block {}, checkpoint {})",
                p.update, p.sender, p.round, p.model, a.root, a.aggregator, a.block, a.checkpoint
            );
            Ok(())
        }),
    }
}

/// The signed closes (signature checked) an aggregator or a validator journaled in `data_dir`.
fn closes(data_dir: &Path) -> Vec<([u8; 32], vain_round::msg::Close)> {
    use vain_round::msg::Message;
    let mut out = Vec::new();
    for sub in ["aggregator", "validator"] {
        let Ok(bytes) = std::fs::read(data_dir.join(sub).join("closes.bin")) else { continue };
        let mut at = 0usize;
        while bytes.len() - at >= 4 {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
            if bytes.len() - at - 4 < len {
                break;
            }
            if let Ok(Message::Close(c)) = Message::decode(&bytes[at + 4..at + 4 + len])
                && c.verify().is_ok()
            {
                out.push((c.signer, c.body));
            }
            at += 4 + len;
        }
    }
    out
}

/// The proof of `update` in `round` from the signed closes a node journaled.
pub fn proof_from_closes(data_dir: &Path, round: u64, update: &[u8; 32]) -> Result<Proof> {
    let (_, close) = closes(data_dir)
        .into_iter()
        .rfind(|(_, c)| c.round == round)
        .with_context(|| format!("no signed close of round {round} in {}", data_dir.display()))?;
    let i = close
        .accepted
        .iter()
        .position(|a| a.digest == *update)
        .with_context(|| format!("update {} was not accepted in round {round}", hex::encode(update)))?;
    let leaves = close.leaves();
    let siblings = vain_round::merkle::proof(&leaves, i).context("proof")?;
    Ok(Proof {
        model: close.model_id.clone(),
        round,
        sender: hex::encode(close.accepted[i].sender),
        update: hex::encode(update),
        root: hex::encode(close.root),
        proof: siblings.iter().map(hex::encode).collect(),
    })
}

/// A round to anchor.
#[derive(Clone, Debug)]
pub struct Anchor {
    /// Round number.
    pub round: u64,
    /// Merkle root of its accepted updates.
    pub root: [u8; 32],
    /// The checkpoint it produced.
    pub checkpoint: [u8; 32],
}

/// Rounds waiting to be anchored; beyond this the oldest are anchored late, never dropped:
/// the coordinator blocks on a full queue only after this many unanchored rounds.
const QUEUE: usize = 1024;

/// Start the task that anchors, in order, every round this aggregator closes. A round the
/// chain already holds (anchored before a restart, or by the aggregator that took over) is
/// skipped; an unreachable endpoint is retried with backoff, so no round is lost.
pub fn spawn_anchoring(
    section: &ChainSection,
    model: String,
    data_dir: PathBuf,
    me: [u8; 32],
    live: Arc<std::sync::Mutex<vain_trust::Live>>,
    metrics: Arc<crate::metrics::Metrics>,
    rt: &tokio::runtime::Handle,
) -> Result<mpsc::Sender<Anchor>> {
    let per_round = match &section.rewards_per_round {
        Some(v) => Some(vain_amount(v).context("[chain] rewards_per_round")?),
        None => None,
    };
    let (signer, deployment, url) = section.open()?;
    let (tx, mut rx) = mpsc::channel::<Anchor>(QUEUE);
    rt.spawn(async move {
        let mut client = None;
        let mut pause = Duration::from_millis(500);
        // First the rounds this aggregator closed but the chain lacks: a crash between the
        // close and its anchor loses nothing, the close is journaled.
        let mut backlog: std::collections::VecDeque<Anchor> = closes(&data_dir)
            .into_iter()
            .filter(|(signer, c)| *signer == me && c.model_id == model)
            .map(|(_, c)| Anchor { round: c.round, root: c.root, checkpoint: c.checkpoint })
            .collect();
        loop {
            let a = match backlog.pop_front() {
                Some(a) => a,
                None => match rx.recv().await {
                    Some(a) => a,
                    None => break,
                },
            };
            loop {
                if client.is_none() {
                    match Client::connect(&url, signer.clone(), deployment.clone()).await {
                        Ok(c) => {
                            tracing::info!(%url, account = %c.account(), "chain connected");
                            client = Some(c);
                        }
                        Err(e) => {
                            tracing::warn!(%url, error = %e, "chain unreachable; retrying");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(10));
                            continue;
                        }
                    }
                }
                let Some(c) = client.as_ref() else { continue };
                // A round the chain holds already is not sent again.
                if let Ok(next) = c.next_round(&model).await
                    && a.round < next
                {
                    if let Some(p) = per_round {
                        publish_rewards(c, &data_dir, &me, a.round, p, &live, &metrics).await;
                    }
                    break;
                }
                match c.anchor_round(&model, a.round, a.root, a.checkpoint).await {
                    Ok(m) => {
                        metrics.chain("anchorRound", "ok", m.gas_used);
                        tracing::info!(round = a.round, gas = m.gas_used, tx = %m.tx, "round anchored");
                        pause = Duration::from_millis(500);
                        if let Some(p) = per_round {
                            publish_rewards(c, &data_dir, &me, a.round, p, &live, &metrics).await;
                        }
                        break;
                    }
                    Err(ChainError::Reverted { revert, .. }) if revert.name == "RoundOutOfOrder" => {
                        metrics.chain("anchorRound", "already", 0);
                        tracing::info!(round = a.round, "round already anchored");
                        break;
                    }
                    Err(ChainError::Reverted { revert, .. }) => {
                        // Not registered, or not enough stake: nothing retrying fixes.
                        metrics.chain("anchorRound", "reverted", 0);
                        tracing::error!(round = a.round, %revert, "the chain refused the anchor");
                        break;
                    }
                    Err(e) => {
                        metrics.chain("anchorRound", "failed", 0);
                        tracing::warn!(round = a.round, error = %e, "anchoring failed; retrying");
                        client = None;
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    });
    Ok(tx)
}

/// The demo's chain: the embedded chain in the demo's own process, the contracts deployed, and
/// every aggregator staked and registered with an account of its own.
pub struct DemoChain {
    server: rpc::Server,
    deployment: Deployment,
    path: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// What the demo's chain shows at the end.
#[derive(Debug, Serialize)]
pub struct DemoChainSummary {
    /// Rounds the chain holds for the model.
    pub anchored: u64,
    /// The update proven from the chain alone: round, sender and digest (hex).
    pub proven: Option<(u64, String, String)>,
    /// Validators that attested the ledger's final digest.
    pub attested: u64,
    /// The latest published rewards: epoch, contributors paid, and the first one's claim
    /// (node, VAIN received).
    pub rewarded: Option<(u64, usize, String, String)>,
    /// The deployment file.
    pub deployment: PathBuf,
}

impl DemoChain {
    /// Start the chain in `dir`, deploy, and give each node (by data dir, with its role) an
    /// account funded from the development account, its role's minimum stake bonded and its
    /// node registered; returns each node's `[chain]` section.
    pub fn start(dir: &Path, nodes: &[(PathBuf, Role)]) -> Result<(DemoChain, Vec<String>)> {
        std::fs::create_dir_all(dir)?;
        let funded: Vec<Address> =
            (0..10).map(deploy::dev_account).collect::<Result<Vec<_>, _>>()?.iter().map(|s| s.address()).collect();
        let server = rpc::Server::spawn(
            "127.0.0.1:0".parse()?,
            Devnet::open(&dir.join("chain.log"), &funded, U256::from(10_000u64) * VAIN)?,
        )?;
        let rt = rt()?;
        let url = server.url();
        // Every node's account first: the aggregators' may publish rewards from genesis.
        let mut signers = Vec::new();
        for (data, _) in nodes {
            let keystore = data.join("chain-account.json");
            let password = data.join("chain-password");
            write_private(&password, &hex::encode(rand_bytes()?))?;
            let signer = PrivateKeySigner::random();
            account::create(&keystore, &signer, &read_secret(&password)?)?;
            signers.push((signer, keystore, password));
        }
        let genesis = Genesis {
            publishers: nodes
                .iter()
                .zip(&signers)
                .filter(|((_, r), _)| *r == Role::Aggregator)
                .map(|(_, s)| s.0.address())
                .collect(),
            ..Genesis::default()
        };
        let (deployment, _) = rt.block_on(deploy::deploy(&url, deploy::dev_account(0)?, &genesis))?;
        let path = dir.join("deployment.json");
        deployment.save(&path)?;
        let mut sections = Vec::new();
        for ((data, role), (signer, keystore, password)) in nodes.iter().zip(signers) {
            let stake = genesis.minimum_stake[*role as usize];
            let id = crate::net::identity(data)?;
            let key = ed25519_dalek::SigningKey::from_bytes(&id.seed);
            rt.block_on(async {
                let bank = Client::connect(&url, deploy::dev_account(0)?, deployment.clone()).await?;
                bank.send_eth(signer.address(), VAIN * U256::from(10u64)).await?;
                bank.transfer(signer.address(), stake).await?;
                let me = Client::connect(&url, signer.clone(), deployment.clone()).await?;
                me.stake(stake).await?;
                let message = me.registration_message(me.account(), *role).await?;
                let input = vain_schema::sign::SigningInput::new(vain_schema::sign::CHAIN_REGISTRATION, &message);
                use ed25519_dalek::Signer as _;
                let sig = key.sign(input.as_bytes());
                me.register(key.verifying_key().to_bytes(), *role, sig.to_bytes()).await?;
                anyhow::Ok(())
            })?;
            sections.push(format!(
                "\n[chain]\nrpc_url = \"{url}\"\ndeployment = {:?}\nkeystore = {:?}\npassword_file = {:?}\n{}",
                path.display().to_string(),
                keystore.display().to_string(),
                password.display().to_string(),
                if *role == Role::Aggregator { "rewards_per_round = \"100\"\n" } else { "" },
            ));
        }
        Ok((DemoChain { server, deployment, path, rt }, sections))
    }

    /// The chain's URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Wait (up to 20 s) until `rounds` rounds of `model` are anchored, then prove, from the
    /// chain alone, the last accepted update of the latest anchored round with one.
    pub fn check(
        &self,
        model: &str,
        rounds: u64,
        data_dirs: &[PathBuf],
        ledger: Option<(u64, [u8; 32])>,
    ) -> Result<DemoChainSummary> {
        self.rt.block_on(async {
            let c = Client::connect(&self.server.url(), reader(), self.deployment.clone()).await?;
            let start = std::time::Instant::now();
            let mut anchored = c.next_round(model).await?;
            while anchored < rounds && start.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                anchored = c.next_round(model).await?;
            }
            let mut all: Vec<vain_round::msg::Close> =
                data_dirs.iter().flat_map(|d| closes(d)).map(|(_, c)| c).collect();
            all.sort_by_key(|c| std::cmp::Reverse(c.round));
            let mut proven = None;
            for close in all.iter().filter(|c| c.round < anchored && !c.accepted.is_empty()) {
                let Some(a) = c.round(model, close.round).await? else { continue };
                if a.root.0 != close.root {
                    continue;
                }
                let i = close.accepted.len() - 1;
                let leaves = close.leaves();
                let siblings = vain_round::merkle::proof(&leaves, i).context("proof")?;
                let u = &close.accepted[i];
                if c.verify_inclusion(model, close.round, leaves[i], &siblings).await? {
                    proven = Some((close.round, hex::encode(u.sender), hex::encode(u.digest)));
                    break;
                }
            }
            // The validators' attestation of the ledger's final digest (they attest within a
            // second of applying the epoch).
            let mut attested = 0;
            if let Some((epoch, digest)) = ledger {
                let start = std::time::Instant::now();
                attested = c.attestations(epoch, digest).await?;
                while attested == 0 && start.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    attested = c.attestations(epoch, digest).await?;
                }
            }
            // Rewards: the latest round's tree an aggregator kept; its first leaf claimed (anyone
            // may submit a claim: the tokens go to the leaf's account).
            let mut rewarded = None;
            let latest = data_dirs
                .iter()
                .filter_map(|d| std::fs::read_dir(d.join("rewards")).ok())
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter_map(|p| std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<RewardTree>(&b).ok()))
                .max_by_key(|t| t.epoch);
            if let Some(tree) = latest
                && let Some(leaf) = tree.leaves.first()
            {
                let amount: U256 = leaf.amount.parse().unwrap_or_default();
                let siblings: Vec<[u8; 32]> = leaf
                    .proof
                    .iter()
                    .filter_map(|h| hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()))
                    .collect();
                let bank =
                    Client::connect(&self.server.url(), deploy::dev_account(0)?, self.deployment.clone()).await?;
                let before = bank.standing(leaf.account).await?.vain;
                bank.claim(tree.epoch, leaf.index, leaf.account, amount, &siblings).await?;
                let after = bank.standing(leaf.account).await?.vain;
                rewarded = Some((tree.epoch, tree.leaves.len(), leaf.node.clone(), show(after - before)));
            }
            Ok(DemoChainSummary { anchored, proven, attested, rewarded, deployment: self.path.clone() })
        })
    }
}

fn rand_bytes() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
    Ok(b)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Start the task by which a validator attests, on chain, the ledger's state digest after each
/// epoch it applied (an epoch applied while a previous attestation was in flight is attested
/// with the digest of the latest one; an epoch the chain already holds from this account is
/// not sent again).
pub fn spawn_attesting(
    section: &ChainSection,
    live: Arc<std::sync::Mutex<vain_trust::Live>>,
    metrics: Arc<crate::metrics::Metrics>,
    rt: &tokio::runtime::Handle,
) -> Result<()> {
    let (signer, deployment, url) = section.open()?;
    rt.spawn(async move {
        let mut client: Option<Client> = None;
        let mut done: Option<u64> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some((epoch, digest)) = live.lock().ok().and_then(|l| {
                let s = l.status();
                let d = hex::decode(&s.digest).ok().and_then(|d| <[u8; 32]>::try_from(d).ok())?;
                s.next_epoch.checked_sub(1).map(|e| (e, d))
            }) else {
                continue;
            };
            if done.is_some_and(|d| d >= epoch) {
                continue;
            }
            if client.is_none() {
                match Client::connect(&url, signer.clone(), deployment.clone()).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "chain unreachable; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_ref() else { continue };
            match c.attest_epoch(epoch, digest).await {
                Ok(m) => {
                    metrics.chain("attestEpoch", "ok", m.gas_used);
                    tracing::info!(epoch, digest = %hex::encode(digest), gas = m.gas_used, "epoch attested");
                    done = Some(epoch);
                }
                Err(ChainError::Reverted { revert, .. }) if revert.name == "AlreadyAttested" => {
                    metrics.chain("attestEpoch", "already", 0);
                    done = Some(epoch);
                }
                Err(ChainError::Reverted { revert, .. }) => {
                    metrics.chain("attestEpoch", "reverted", 0);
                    tracing::error!(epoch, %revert, "the chain refused the attestation");
                    done = Some(epoch);
                }
                Err(e) => {
                    metrics.chain("attestEpoch", "failed", 0);
                    tracing::warn!(epoch, error = %e, "attesting failed; retrying");
                    client = None;
                }
            }
        }
    });
    Ok(())
}

/// File, through the governor, a proposal to slash the whole stake of every account a banned
/// node registered (signature checked). Every node with `[chain]` may file it; the governor
/// refuses the same proposal twice, so the first one counts and the others are no-ops.
pub fn file_slashing(
    section: &ChainSection,
    banned: Vec<[u8; 32]>,
    metrics: Arc<crate::metrics::Metrics>,
    rt: &tokio::runtime::Handle,
) -> Result<()> {
    let (signer, deployment, url) = section.open()?;
    rt.spawn(async move {
        let c = match Client::connect(&url, signer, deployment).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%url, error = %e, "chain unreachable: no slashing proposal filed");
                return;
            }
        };
        for node in banned {
            let accounts = match c.accounts_of(node).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(node = %hex::encode(node), error = %e, "reading the registry");
                    continue;
                }
            };
            for account in accounts {
                let staked = match c.standing(account).await {
                    Ok(s) => s.staked + s.unbonding.0,
                    Err(_) => continue,
                };
                if staked.is_zero() {
                    continue;
                }
                let description = format!("vAIn: slash {account} (node {}) banned by the ledger", hex::encode(node));
                match c.propose_slash(account, staked, &description).await {
                    Ok((id, m)) => {
                        metrics.chain("propose", "ok", m.gas_used);
                        tracing::warn!(node = %hex::encode(node), %account, proposal = %id, "slashing proposal filed");
                    }
                    Err(ChainError::Reverted { revert, .. }) if revert.name == "GovernorUnexpectedProposalState" => {
                        metrics.chain("propose", "already", 0);
                    }
                    Err(e) => {
                        metrics.chain("propose", "failed", 0);
                        tracing::warn!(node = %hex::encode(node), error = %e, "filing a slashing proposal");
                    }
                }
            }
        }
    });
    Ok(())
}

/// The chain's stakes of the nodes this node knows (the ledger's and its peers), read in the
/// background; an aggregator's reports carry the ones that changed, so every ledger takes its
/// stake from the Staking contract rather than from a node's own word.
#[derive(Default)]
pub struct Stakes {
    current: std::sync::Mutex<std::collections::BTreeMap<[u8; 32], u64>>,
    reported: std::sync::Mutex<std::collections::BTreeMap<[u8; 32], u64>>,
}

impl Stakes {
    /// Stake observations for the nodes whose stake changed since the last call.
    pub fn changes(&self) -> Vec<vain_core::ledger::Observation> {
        let (Ok(current), Ok(mut reported)) = (self.current.lock(), self.reported.lock()) else { return Vec::new() };
        let mut out = Vec::new();
        for (id, total) in current.iter() {
            if reported.get(id) != Some(total) {
                reported.insert(*id, *total);
                out.push(vain_core::ledger::Observation {
                    subject: *id,
                    what: vain_core::ledger::Observed::Staked { total: *total },
                });
            }
        }
        out
    }
}

/// Most nodes whose stake one pass reads.
const MAX_STAKE_READS: usize = 1024;

/// Start reading stakes every 3 s; returns the shared table the coordinator's reports take
/// from.
pub fn spawn_stake_reader(
    section: &ChainSection,
    live: Arc<std::sync::Mutex<vain_trust::Live>>,
    net: vain_net::node::Handle,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<Stakes>> {
    let deployment = Deployment::load(&section.deployment)?;
    let url = section.rpc_url.clone();
    let stakes = Arc::new(Stakes::default());
    let table = stakes.clone();
    rt.spawn(async move {
        let mut client: Option<Client> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if client.is_none() {
                client = Client::connect(&url, reader(), deployment.clone()).await.ok();
            }
            let Some(c) = client.as_ref() else { continue };
            let mut ids: std::collections::BTreeSet<[u8; 32]> =
                live.lock().map(|l| l.ledger().nodes().map(|(id, _)| *id).collect()).unwrap_or_default();
            if let Ok(peers) = net.peers().await {
                ids.extend(
                    peers
                        .iter()
                        .filter_map(|p| p.node_id.as_deref())
                        .filter_map(|h| hex::decode(h).ok())
                        .filter_map(|b| <[u8; 32]>::try_from(b).ok()),
                );
            }
            for id in ids.into_iter().take(MAX_STAKE_READS) {
                let Ok(accounts) = c.accounts_of(id).await else {
                    client = None;
                    break;
                };
                let mut total = U256::ZERO;
                for a in accounts {
                    if let Ok(s) = c.standing(a).await {
                        total += s.staked;
                    }
                }
                let whole = u64::try_from(total / VAIN).unwrap_or(u64::MAX);
                if let Ok(mut t) = table.current.lock() {
                    if whole == 0 && !t.contains_key(&id) {
                        continue;
                    }
                    t.insert(id, whole);
                }
            }
        }
    });
    Ok(stakes)
}

/// One round's rewards as the publishing aggregator keeps them (`<data_dir>/rewards/<round>.json`):
/// everything a contributor needs to claim.
#[derive(Debug, Serialize, Deserialize)]
pub struct RewardTree {
    /// The epoch (= the round).
    pub epoch: u64,
    /// Root of the tree (hex).
    pub root: String,
    /// VAIN paid in all, smallest units (decimal).
    pub total: String,
    /// The leaves with their proofs.
    pub leaves: Vec<RewardLeaf>,
}

/// One contributor's reward.
#[derive(Debug, Serialize, Deserialize)]
pub struct RewardLeaf {
    /// Its index in the tree.
    pub index: u64,
    /// The account paid.
    pub account: Address,
    /// The node it registered (hex).
    pub node: String,
    /// VAIN, smallest units (decimal).
    pub amount: String,
    /// Sibling hashes (hex).
    pub proof: Vec<String>,
}

/// OpenZeppelin's standard leaf: keccak256(keccak256(abi.encode(index, account, amount))).
pub fn reward_leaf(index: u64, account: Address, amount: U256) -> [u8; 32] {
    use alloy::sol_types::SolValue as _;
    alloy::primitives::keccak256(alloy::primitives::keccak256((U256::from(index), account, amount).abi_encode())).0
}

/// Split `per_round` among the contributors of this aggregator's close of `round` that
/// registered an account, by their reputation score (equally when every score is zero), keep
/// the tree on disk, and publish its root. A round published before (a restart) is left alone.
async fn publish_rewards(
    c: &Client,
    data_dir: &Path,
    me: &[u8; 32],
    round: u64,
    per_round: U256,
    live: &Arc<std::sync::Mutex<vain_trust::Live>>,
    metrics: &crate::metrics::Metrics,
) {
    let Some((_, close)) = closes(data_dir).into_iter().rfind(|(s, c)| s == me && c.round == round) else { return };
    let mut senders: Vec<[u8; 32]> = close.accepted.iter().map(|a| a.sender).collect();
    senders.dedup();
    let mut paid: Vec<(Address, [u8; 32], f64)> = Vec::new();
    for node in senders {
        let Ok(accounts) = c.accounts_of(node).await else { return };
        let Some(account) = accounts.first() else { continue };
        let score = live.lock().ok().and_then(|l| l.ledger().record(&node).map(|r| r.score)).unwrap_or(0.0);
        paid.push((*account, node, if score.is_finite() { score.max(0.0) } else { 0.0 }));
    }
    if paid.is_empty() {
        return;
    }
    let sum: f64 = paid.iter().map(|p| p.2).sum();
    // Shares in parts per million of the round's budget, so the arithmetic stays in integers.
    let shares: Vec<u64> =
        paid.iter().map(|p| if sum > 0.0 { (p.2 / sum * 1e6) as u64 } else { 1_000_000 / paid.len() as u64 }).collect();
    let amounts: Vec<U256> = shares.iter().map(|s| per_round * U256::from(*s) / U256::from(1_000_000u64)).collect();
    let leaves: Vec<[u8; 32]> =
        paid.iter().zip(&amounts).enumerate().map(|(i, (p, a))| reward_leaf(i as u64, p.0, *a)).collect();
    let root = vain_round::merkle::root(&leaves);
    let total: U256 = amounts.iter().fold(U256::ZERO, |t, a| t + *a);
    let tree = RewardTree {
        epoch: round,
        root: hex::encode(root),
        total: total.to_string(),
        leaves: paid
            .iter()
            .zip(&amounts)
            .enumerate()
            .map(|(i, (p, a))| RewardLeaf {
                index: i as u64,
                account: p.0,
                node: hex::encode(p.1),
                amount: a.to_string(),
                proof: vain_round::merkle::proof(&leaves, i).unwrap_or_default().iter().map(hex::encode).collect(),
            })
            .collect(),
    };
    let dir = data_dir.join("rewards");
    let path = dir.join(format!("{round}.json"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(&tree).unwrap_or_default()));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "keeping the rewards tree");
        return;
    }
    let rewards = c.rewards();
    let tx = rewards.publish(round, alloy::primitives::B256::from(root), total).into_transaction_request();
    match c.send("Rewards.publish", tx).await {
        Ok(m) => {
            metrics.chain("publish", "ok", m.gas_used);
            tracing::info!(round, contributors = leaves.len(), total = %show(total), "rewards published");
        }
        Err(ChainError::Reverted { revert, .. }) if revert.name == "EpochAlreadyPublished" => {
            metrics.chain("publish", "already", 0);
        }
        Err(e) => {
            metrics.chain("publish", "failed", 0);
            tracing::warn!(round, error = %e, "publishing rewards");
        }
    }
}
