//! The genesis deployment: every contract, wired so that governance (the timelock) owns what
//! only governance may change, and a file naming where each contract lives.

use std::path::Path;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};

use crate::Error;
use crate::client::Client;
use crate::contracts::{
    LiquidityPool, NodeRegistry, ReputationAnchor, Rewards, Staking, TestToken, VainGovernor, VainTimelock, VainToken,
};

/// One VAIN in its smallest unit (18 decimals).
pub const VAIN: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);

/// The mnemonic of development chains (anvil's and the embedded chain's): its keys are public
/// and worthless anywhere else.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// The `index`-th development account (m/44'/60'/0'/0/index of [`DEV_MNEMONIC`]); account 0
/// deploys and holds the supply at genesis.
pub fn dev_account(index: u32) -> Result<PrivateKeySigner, Error> {
    MnemonicBuilder::<English>::default()
        .phrase(DEV_MNEMONIC)
        .index(index)
        .map_err(|source| Error::Mnemonic { source })?
        .build()
        .map_err(|source| Error::Mnemonic { source })
}

/// The parameters of a deployment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    /// VAIN minted to the deployer (smallest units).
    pub supply: U256,
    /// Seconds between an unstake request and the withdrawal.
    pub unbonding_secs: u64,
    /// Minimum stake of a client, an aggregator and a validator.
    pub minimum_stake: [U256; 3],
    /// Blocks between a proposal and the start of its vote.
    pub voting_delay_blocks: u64,
    /// Blocks a vote lasts.
    pub voting_period_blocks: u64,
    /// Votes needed to propose.
    pub proposal_threshold: U256,
    /// Quorum as a percentage of the supply.
    pub quorum_percent: u64,
    /// Seconds a passed proposal waits in the timelock.
    pub timelock_secs: u64,
    /// VAIN moved to the rewards contract at genesis.
    pub rewards_reserve: U256,
    /// Most VAIN one epoch's rewards may pay.
    pub rewards_cap: U256,
    /// Accounts allowed to publish rewards (more are granted by governance).
    pub publishers: Vec<Address>,
    /// The pool's swap fee in basis points.
    pub pool_fee_bps: u64,
    /// Supply of the pool's second token, deployed with the network (a test token: a real
    /// network names an existing ERC-20 instead).
    pub quote_supply: U256,
    /// VAIN and second token the deployer puts in the pool at genesis (none: an empty pool).
    pub pool_seed: Option<(U256, U256)>,
}

impl Default for Genesis {
    fn default() -> Self {
        Genesis {
            supply: VAIN * U256::from(1_000_000_000u64),
            unbonding_secs: 7 * 24 * 3600,
            minimum_stake: [VAIN * U256::from(100u64), VAIN * U256::from(10_000u64), VAIN * U256::from(5_000u64)],
            voting_delay_blocks: 1,
            voting_period_blocks: 50,
            proposal_threshold: U256::ZERO,
            quorum_percent: 4,
            timelock_secs: 3600,
            rewards_reserve: VAIN * U256::from(10_000_000u64),
            rewards_cap: VAIN * U256::from(1_000_000u64),
            publishers: Vec::new(),
            pool_fee_bps: 30,
            quote_supply: VAIN * U256::from(1_000_000_000u64),
            pool_seed: Some((VAIN * U256::from(1_000_000u64), VAIN * U256::from(1_000_000u64))),
        }
    }
}

/// Where a deployment's contracts live.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// The chain.
    pub chain_id: u64,
    /// The account that deployed (and held the supply at genesis).
    pub deployer: Address,
    /// VainToken.
    pub token: Address,
    /// Staking.
    pub staking: Address,
    /// NodeRegistry.
    pub registry: Address,
    /// ReputationAnchor.
    pub anchor: Address,
    /// VainTimelock (owns Staking, the token's minting, the rewards' admin role).
    pub timelock: Address,
    /// VainGovernor.
    pub governor: Address,
    /// Rewards.
    pub rewards: Address,
    /// LiquidityPool.
    pub pool: Address,
    /// The pool's second token.
    pub quote: Address,
    /// Block of the last deployment transaction.
    pub block: u64,
}

impl Deployment {
    /// A deployment on chain `chain_id` with every address zero (none deployed yet).
    pub fn unset(chain_id: u64) -> Deployment {
        Deployment {
            chain_id,
            deployer: Address::ZERO,
            token: Address::ZERO,
            staking: Address::ZERO,
            registry: Address::ZERO,
            anchor: Address::ZERO,
            timelock: Address::ZERO,
            governor: Address::ZERO,
            rewards: Address::ZERO,
            pool: Address::ZERO,
            quote: Address::ZERO,
            block: 0,
        }
    }

    /// Every contract with its name.
    pub fn contracts(&self) -> [(&'static str, Address); 9] {
        [
            ("VainToken", self.token),
            ("Staking", self.staking),
            ("NodeRegistry", self.registry),
            ("ReputationAnchor", self.anchor),
            ("VainTimelock", self.timelock),
            ("VainGovernor", self.governor),
            ("Rewards", self.rewards),
            ("LiquidityPool", self.pool),
            ("TestToken", self.quote),
        ]
    }

    /// Read a deployment file.
    pub fn load(path: &Path) -> Result<Deployment, Error> {
        let text = std::fs::read(path).map_err(|source| Error::DeploymentFile { path: path.to_owned(), source })?;
        serde_json::from_slice(&text).map_err(|source| Error::BadDeployment { path: path.to_owned(), source })
    }

    /// Write it (to a temporary file, synced, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::DeploymentFile { path: path.to_owned(), source };
        let mut text =
            serde_json::to_vec_pretty(self).map_err(|source| Error::BadDeployment { path: path.to_owned(), source })?;
        text.push(b'\n');
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).map_err(io)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Gas each step of a deployment used, by name.
pub type GasReport = Vec<(&'static str, u64)>;

fn role(name: &str) -> B256 {
    keccak256(name.as_bytes())
}

/// Deploy every contract on the chain at `url` from `deployer`, as `genesis` says.
pub async fn deploy(
    url: &str,
    deployer: PrivateKeySigner,
    genesis: &Genesis,
) -> Result<(Deployment, GasReport), Error> {
    let me = deployer.address();
    let c = Client::bare(url, deployer, Deployment::unset(0))?;
    let p = c.provider().clone();
    let mut gas = GasReport::new();
    let mut last = 0;
    let mut create = async |name: &'static str, tx: TransactionRequest| -> Result<Address, Error> {
        let m = c.send(name, tx).await?;
        gas.push((name, m.gas_used));
        last = m.block;
        m.contract.ok_or(Error::Argument { what: "a deployment transaction created no contract" })
    };
    let voting_delay = u64::min(genesis.voting_delay_blocks, (1u64 << 48) - 1);
    let voting_period = u32::try_from(genesis.voting_period_blocks)
        .map_err(|_| Error::Argument { what: "voting period above 2^32 blocks" })?;
    let token =
        create("VainToken", VainToken::deploy_builder(p.clone(), me, genesis.supply, me).into_transaction_request())
            .await?;
    let timelock = create(
        "VainTimelock",
        VainTimelock::deploy_builder(p.clone(), U256::from(genesis.timelock_secs), vec![], vec![Address::ZERO], me)
            .into_transaction_request(),
    )
    .await?;
    let governor = create(
        "VainGovernor",
        VainGovernor::deploy_builder(
            p.clone(),
            token,
            timelock,
            alloy::primitives::Uint::<48, 1>::from(voting_delay),
            voting_period,
            genesis.proposal_threshold,
            U256::from(genesis.quorum_percent),
        )
        .into_transaction_request(),
    )
    .await?;
    let staking = create(
        "Staking",
        Staking::deploy_builder(p.clone(), token, genesis.unbonding_secs, genesis.minimum_stake, timelock)
            .into_transaction_request(),
    )
    .await?;
    let registry =
        create("NodeRegistry", NodeRegistry::deploy_builder(p.clone(), staking).into_transaction_request()).await?;
    let anchor =
        create("ReputationAnchor", ReputationAnchor::deploy_builder(p.clone(), registry).into_transaction_request())
            .await?;
    let rewards = create(
        "Rewards",
        Rewards::deploy_builder(p.clone(), token, genesis.rewards_cap, me).into_transaction_request(),
    )
    .await?;
    let quote = create(
        "TestToken",
        TestToken::deploy_builder(p.clone(), "Test USD".into(), "tUSD".into(), me, genesis.quote_supply)
            .into_transaction_request(),
    )
    .await?;
    let pool = create(
        "LiquidityPool",
        LiquidityPool::deploy_builder(p.clone(), token, quote, U256::from(genesis.pool_fee_bps))
            .into_transaction_request(),
    )
    .await?;

    // Hand every power to governance, then give up the deployer's.
    let tl = VainTimelock::new(timelock, p.clone());
    let rw = Rewards::new(rewards, p.clone());
    let tk = VainToken::new(token, p.clone());
    let mut wire: Vec<(&'static str, TransactionRequest)> = vec![
        ("VainTimelock.grantRole(proposer)", tl.grantRole(role("PROPOSER_ROLE"), governor).into_transaction_request()),
        (
            "VainTimelock.grantRole(canceller)",
            tl.grantRole(role("CANCELLER_ROLE"), governor).into_transaction_request(),
        ),
    ];
    for p in &genesis.publishers {
        wire.push((
            "Rewards.grantRole(publisher)",
            rw.grantRole(role("PUBLISHER_ROLE"), *p).into_transaction_request(),
        ));
    }
    wire.extend([
        ("Rewards.grantRole(admin)", rw.grantRole(B256::ZERO, timelock).into_transaction_request()),
        ("Rewards.renounceRole(admin)", rw.renounceRole(B256::ZERO, me).into_transaction_request()),
        ("VainToken.transfer(rewards)", tk.transfer(rewards, genesis.rewards_reserve).into_transaction_request()),
        ("VainToken.transferOwnership", tk.transferOwnership(timelock).into_transaction_request()),
        ("VainTimelock.renounceRole(admin)", tl.renounceRole(B256::ZERO, me).into_transaction_request()),
    ]);
    if let Some((v, q)) = genesis.pool_seed {
        let lp = LiquidityPool::new(pool, p.clone());
        let qt = TestToken::new(quote, p.clone());
        wire.extend([
            ("VainToken.approve(pool)", tk.approve(pool, v).into_transaction_request()),
            ("TestToken.approve(pool)", qt.approve(pool, q).into_transaction_request()),
            ("LiquidityPool.addLiquidity", lp.addLiquidity(v, q, U256::ZERO, me, U256::MAX).into_transaction_request()),
        ]);
    }
    for (name, tx) in wire {
        let m = c.send(name, tx).await?;
        gas.push((name, m.gas_used));
        last = m.block;
    }
    let chain_id = c
        .provider()
        .get_chain_id()
        .await
        .map_err(|source| Error::Rpc { url: url.to_owned(), source: Box::new(source) })?;
    let deployment = Deployment {
        chain_id,
        deployer: me,
        token,
        staking,
        registry,
        anchor,
        timelock,
        governor,
        rewards,
        pool,
        quote,
        block: last,
    };
    Ok((deployment, gas))
}
