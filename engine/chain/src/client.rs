//! The node's chain client: one Ethereum account, one deployment, any JSON-RPC endpoint (the
//! embedded chain, anvil, or a real network). Every transaction is estimated first, so a call
//! the contracts refuse fails with the contract's own error, decoded, before anything is sent.

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use alloy::transports::TransportError;

use crate::contracts::{LiquidityPool, NodeRegistry, ReputationAnchor, Rewards, Staking, VainGovernor, VainToken};
use crate::deploy::Deployment;
use crate::{Error, revert};

/// How long a transaction may take to be mined.
const MINE_TIMEOUT: Duration = Duration::from_secs(60);

/// The roles a stake backs, numbered as in `Staking.Role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Trains and sends updates.
    Client = 0,
    /// Aggregates rounds and anchors them.
    Aggregator = 1,
    /// Checks results and attests epochs.
    Validator = 2,
}

impl Role {
    /// From the node's role name (the names of `node.toml`'s `roles`).
    pub fn parse(s: &str) -> Option<Role> {
        use vain_schema::node::roles;
        match roles::parse(s)? {
            roles::CLIENT => Some(Role::Client),
            roles::AGGREGATOR => Some(Role::Aggregator),
            roles::VALIDATOR => Some(Role::Validator),
            _ => None,
        }
    }

    /// From the contract's number.
    pub fn from_u8(n: u8) -> Option<Role> {
        [Role::Client, Role::Aggregator, Role::Validator].get(n as usize).copied()
    }

    /// The node's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Aggregator => "aggregator",
            Role::Validator => "validator",
        }
    }
}

/// Whether `signature` is the node key `key`'s signature binding it to the account and role
/// that `message` (`NodeRegistry.registrationMessage`) names. The EVM cannot check Ed25519, so
/// every reader of the registry checks this before trusting a registration.
pub fn verify_registration(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else { return false };
    let input = vain_schema::sign::SigningInput::new(vain_schema::sign::CHAIN_REGISTRATION, message);
    key.verify_strict(input.as_bytes(), &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}

/// A model's id on chain: keccak-256 of its name, so a contract or any tool computes it too.
pub fn model_key(model: &str) -> B256 {
    keccak256(model.as_bytes())
}

/// What a mined transaction cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mined {
    /// Its hash.
    pub tx: B256,
    /// The block it is in.
    pub block: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// The contract it deployed.
    pub contract: Option<Address>,
}

/// One account's standing on chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Standing {
    /// The account.
    pub account: Address,
    /// Ether for gas, in wei.
    pub eth: U256,
    /// VAIN held.
    pub vain: U256,
    /// VAIN bonded in Staking.
    pub staked: U256,
    /// VAIN unbonding, and when it is released (Unix seconds).
    pub unbonding: (U256, u64),
    /// The node id and role the account registered, if it did.
    pub registration: Option<(B256, Role)>,
}

/// A registration read from the registry (not yet verified: see [`Registration::verify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The registered account.
    pub account: Address,
    /// The node id it claims.
    pub node_id: [u8; 32],
    /// The role it claims.
    pub role: Role,
    /// The node's signature over `message`.
    pub signature: [u8; 64],
    /// What the node must have signed.
    pub message: Vec<u8>,
}

impl Registration {
    /// Whether the node whose current key is `key` signed this registration.
    pub fn verify(&self, key: &[u8; 32]) -> bool {
        verify_registration(key, &self.message, &self.signature)
    }
}

/// A round as anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Anchored {
    /// Merkle root of the accepted updates.
    pub root: B256,
    /// Digest of the checkpoint the round produced.
    pub checkpoint: B256,
    /// The account that anchored it.
    pub aggregator: Address,
    /// The block it was anchored in.
    pub block: u64,
}

/// A connection to a deployment through one account.
#[derive(Clone, Debug)]
pub struct Client {
    provider: DynProvider,
    url: String,
    account: Address,
    deployment: Deployment,
}

impl Client {
    /// Connect to `url` as `signer`, and check that the endpoint is the deployment's chain and
    /// holds its contracts.
    pub async fn connect(url: &str, signer: PrivateKeySigner, deployment: Deployment) -> Result<Client, Error> {
        let client = Client::bare(url, signer, deployment)?;
        let chain = client.provider.get_chain_id().await.map_err(|e| client.rpc(e))?;
        if chain != client.deployment.chain_id {
            return Err(Error::ChainMismatch { expected: client.deployment.chain_id, got: chain });
        }
        for (contract, address) in client.deployment.contracts() {
            if client.provider.get_code_at(address).await.map_err(|e| client.rpc(e))?.is_empty() {
                return Err(Error::NotDeployed { contract, address });
            }
        }
        Ok(client)
    }

    /// A client that checks nothing: for the deployment itself.
    pub(crate) fn bare(url: &str, signer: PrivateKeySigner, deployment: Deployment) -> Result<Client, Error> {
        // HTTPS endpoints use rustls with ring, the provider the rest of the node uses (a
        // second install is refused harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let account = signer.address();
        let parsed = url.parse().map_err(|_| Error::Argument { what: "the RPC URL does not parse" })?;
        // Nonces are read from the chain for every transaction: a cached nonce is lost when
        // estimation refuses a call after the nonce was taken, and every later send fails.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(parsed)
            .erased();
        Ok(Client { provider, url: url.to_owned(), account, deployment })
    }

    /// The account this client signs with.
    pub fn account(&self) -> Address {
        self.account
    }

    /// The deployment.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The provider, for reads the client does not wrap.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn rpc(&self, source: TransportError) -> Error {
        Error::Rpc { url: self.url.clone(), source: Box::new(source) }
    }

    fn refused(&self, call: &'static str, e: TransportError) -> Error {
        match e.as_error_resp().and_then(|p| p.as_revert_data()) {
            Some(data) => Error::Reverted { call, revert: revert::decode(&data) },
            None => self.rpc(e),
        }
    }

    fn view_error(&self, call: &'static str, e: alloy::contract::Error) -> Error {
        match e {
            alloy::contract::Error::TransportError(t) => self.refused(call, t),
            source => Error::Contract { call, source: Box::new(source) },
        }
    }

    /// Send `tx`, wait until it is mined, and return what it cost; a refusal at estimation is
    /// the contract's error.
    pub async fn send(&self, call: &'static str, tx: TransactionRequest) -> Result<Mined, Error> {
        let gas_price = self.provider.get_gas_price().await.map_err(|e| self.rpc(e))?;
        let tx = tx.with_from(self.account).with_gas_price(gas_price);
        let pending = self.provider.send_transaction(tx).await.map_err(|e| self.refused(call, e))?;
        let hash = *pending.tx_hash();
        let receipt = self.wait(call, hash).await?;
        if !receipt.status() {
            return Err(Error::Failed { call, tx: hash });
        }
        Ok(Mined {
            tx: hash,
            block: receipt.block_number.unwrap_or_default(),
            gas_used: receipt.gas_used,
            contract: receipt.contract_address,
        })
    }

    /// The receipt of `hash`, polling until it is mined.
    pub async fn wait(&self, call: &'static str, hash: B256) -> Result<TransactionReceipt, Error> {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(r) = self.provider.get_transaction_receipt(hash).await.map_err(|e| self.rpc(e))? {
                return Ok(r);
            }
            if start.elapsed() > MINE_TIMEOUT {
                return Err(Error::NotMined { call, tx: hash, secs: MINE_TIMEOUT.as_secs() });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    fn token(&self) -> VainToken::VainTokenInstance<DynProvider> {
        VainToken::new(self.deployment.token, self.provider.clone())
    }
    fn staking(&self) -> Staking::StakingInstance<DynProvider> {
        Staking::new(self.deployment.staking, self.provider.clone())
    }
    fn registry(&self) -> NodeRegistry::NodeRegistryInstance<DynProvider> {
        NodeRegistry::new(self.deployment.registry, self.provider.clone())
    }
    fn anchor(&self) -> ReputationAnchor::ReputationAnchorInstance<DynProvider> {
        ReputationAnchor::new(self.deployment.anchor, self.provider.clone())
    }
    /// The governor contract.
    pub fn governor(&self) -> VainGovernor::VainGovernorInstance<DynProvider> {
        VainGovernor::new(self.deployment.governor, self.provider.clone())
    }
    /// The rewards contract.
    pub fn rewards(&self) -> Rewards::RewardsInstance<DynProvider> {
        Rewards::new(self.deployment.rewards, self.provider.clone())
    }
    /// The liquidity pool.
    pub fn pool(&self) -> LiquidityPool::LiquidityPoolInstance<DynProvider> {
        LiquidityPool::new(self.deployment.pool, self.provider.clone())
    }

    /// The account's standing: balances, stake and registration.
    pub async fn standing(&self, account: Address) -> Result<Standing, Error> {
        let eth = self.provider.get_balance(account).await.map_err(|e| self.rpc(e))?;
        let vain =
            self.token().balanceOf(account).call().await.map_err(|e| self.view_error("VainToken.balanceOf", e))?;
        let staked = self.staking().stakeOf(account).call().await.map_err(|e| self.view_error("Staking.stakeOf", e))?;
        let u =
            self.staking().unbondingOf(account).call().await.map_err(|e| self.view_error("Staking.unbondingOf", e))?;
        let r = self
            .registry()
            .registrationOf(account)
            .call()
            .await
            .map_err(|e| self.view_error("NodeRegistry.registrationOf", e))?;
        let registration = (r.nodeId != B256::ZERO).then(|| (r.nodeId, Role::from_u8(r.role).unwrap_or(Role::Client)));
        Ok(Standing { account, eth, vain, staked, unbonding: (u.amount, u.releaseAt), registration })
    }

    /// The registration of `account` with its signature, if it registered.
    pub async fn registration(&self, account: Address) -> Result<Option<Registration>, Error> {
        let r = self
            .registry()
            .registrationOf(account)
            .call()
            .await
            .map_err(|e| self.view_error("NodeRegistry.registrationOf", e))?;
        if r.nodeId == B256::ZERO {
            return Ok(None);
        }
        let role = Role::from_u8(r.role).ok_or(Error::Argument { what: "the registry holds an unknown role" })?;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(r.sigR.as_slice());
        signature[32..].copy_from_slice(r.sigS.as_slice());
        let message = self.registration_message(account, role).await?;
        Ok(Some(Registration { account, node_id: r.nodeId.0, role, signature, message: message.to_vec() }))
    }

    /// Send `amount` wei of ether to `to`.
    pub async fn send_eth(&self, to: Address, amount: U256) -> Result<Mined, Error> {
        self.send("transfer", TransactionRequest::default().with_to(to).with_value(amount)).await
    }

    /// Send `amount` VAIN to `to`.
    pub async fn transfer(&self, to: Address, amount: U256) -> Result<Mined, Error> {
        let token = self.token();
        self.send("VainToken.transfer", token.transfer(to, amount).into_transaction_request()).await
    }

    /// Bond `amount` VAIN (approving Staking first when its allowance is short).
    pub async fn stake(&self, amount: U256) -> Result<Mined, Error> {
        let allowance = self
            .token()
            .allowance(self.account, self.deployment.staking)
            .call()
            .await
            .map_err(|e| self.view_error("VainToken.allowance", e))?;
        if allowance < amount {
            let token = self.token();
            let approve = token.approve(self.deployment.staking, amount).into_transaction_request();
            self.send("VainToken.approve", approve).await?;
        }
        let staking = self.staking();
        self.send("Staking.stake", staking.stake(amount).into_transaction_request()).await
    }

    /// Start unbonding `amount`.
    pub async fn request_unstake(&self, amount: U256) -> Result<Mined, Error> {
        let staking = self.staking();
        self.send("Staking.requestUnstake", staking.requestUnstake(amount).into_transaction_request()).await
    }

    /// Withdraw what finished unbonding.
    pub async fn withdraw(&self) -> Result<Mined, Error> {
        let staking = self.staking();
        self.send("Staking.withdraw", staking.withdraw().into_transaction_request()).await
    }

    /// The bytes a node signs to bind itself to `account` in `role`.
    pub async fn registration_message(&self, account: Address, role: Role) -> Result<Bytes, Error> {
        self.registry()
            .registrationMessage(account, role as u8)
            .call()
            .await
            .map_err(|e| self.view_error("NodeRegistry.registrationMessage", e))
    }

    /// Register this account for `node_id` in `role`, with the node's Ed25519 `signature` over
    /// [`Client::registration_message`].
    pub async fn register(&self, node_id: [u8; 32], role: Role, signature: [u8; 64]) -> Result<Mined, Error> {
        let (r, s) = signature.split_at(32);
        let registry = self.registry();
        let call = registry.register(B256::from(node_id), role as u8, B256::from_slice(r), B256::from_slice(s));
        self.send("NodeRegistry.register", call.into_transaction_request()).await
    }

    /// Anchor round `round` of `model`: the Merkle root of its accepted updates and the
    /// checkpoint it produced.
    pub async fn anchor_round(
        &self,
        model: &str,
        round: u64,
        root: [u8; 32],
        checkpoint: [u8; 32],
    ) -> Result<Mined, Error> {
        let anchor = self.anchor();
        let call = anchor.anchorRound(model_key(model), round, B256::from(root), B256::from(checkpoint));
        self.send("ReputationAnchor.anchorRound", call.into_transaction_request()).await
    }

    /// The next round of `model` the chain takes (0 when none was anchored).
    pub async fn next_round(&self, model: &str) -> Result<u64, Error> {
        self.anchor()
            .nextRound(model_key(model))
            .call()
            .await
            .map_err(|e| self.view_error("ReputationAnchor.nextRound", e))
    }

    /// What was anchored for a round (`None` when nothing was): the root from the contract's
    /// storage, the checkpoint and the aggregator from its `RoundAnchored` event.
    pub async fn round(&self, model: &str, round: u64) -> Result<Option<Anchored>, Error> {
        let key = model_key(model);
        let filter = Filter::new()
            .address(self.deployment.anchor)
            .event_signature(ReputationAnchor::RoundAnchored::SIGNATURE_HASH)
            .topic1(key)
            .topic2(B256::from(U256::from(round)))
            .from_block(self.deployment.block);
        let logs = self.provider.get_logs(&filter).await.map_err(|e| self.rpc(e))?;
        let Some(log) = logs.first() else { return Ok(None) };
        let event = log
            .log_decode::<ReputationAnchor::RoundAnchored>()
            .map_err(|_| Error::Argument { what: "a RoundAnchored event that does not decode" })?;
        let root =
            self.anchor().rootOf(key, round).call().await.map_err(|e| self.view_error("ReputationAnchor.rootOf", e))?;
        Ok(Some(Anchored {
            root,
            checkpoint: event.inner.checkpoint,
            aggregator: event.inner.aggregator,
            block: log.block_number.unwrap_or_default(),
        }))
    }

    /// Whether the chain accepts `proof` for `leaf` in round `round` of `model`.
    pub async fn verify_inclusion(
        &self,
        model: &str,
        round: u64,
        leaf: [u8; 32],
        proof: &[[u8; 32]],
    ) -> Result<bool, Error> {
        let proof: Vec<B256> = proof.iter().map(|p| B256::from(*p)).collect();
        self.anchor()
            .verifyInclusion(model_key(model), round, B256::from(leaf), proof)
            .call()
            .await
            .map_err(|e| self.view_error("ReputationAnchor.verifyInclusion", e))
    }

    /// Attest the ledger's state digest at the end of `epoch`.
    pub async fn attest_epoch(&self, epoch: u64, digest: [u8; 32]) -> Result<Mined, Error> {
        let anchor = self.anchor();
        let call = anchor.attestEpoch(epoch, B256::from(digest));
        self.send("ReputationAnchor.attestEpoch", call.into_transaction_request()).await
    }

    /// How many validators attested `digest` for `epoch`.
    pub async fn attestations(&self, epoch: u64, digest: [u8; 32]) -> Result<u64, Error> {
        let n = self
            .anchor()
            .attestations(epoch, B256::from(digest))
            .call()
            .await
            .map_err(|e| self.view_error("ReputationAnchor.attestations", e))?;
        Ok(n.saturating_to())
    }

    /// Delegate this account's VAIN votes to itself (votes count only once delegated).
    pub async fn delegate_self(&self) -> Result<Mined, Error> {
        let token = self.token();
        self.send("VainToken.delegate", token.delegate(self.account).into_transaction_request()).await
    }

    /// Propose that governance slash `amount` of `account`'s stake (sent to the timelock);
    /// returns the proposal id. The same proposal twice is refused by the governor.
    pub async fn propose_slash(
        &self,
        account: Address,
        amount: U256,
        description: &str,
    ) -> Result<(U256, Mined), Error> {
        let call = Staking::slashCall { account, amount, recipient: self.deployment.timelock };
        self.propose(vec![self.deployment.staking], vec![Bytes::from(call.abi_encode())], description).await
    }

    /// Propose that governance set `role`'s minimum stake; returns the proposal id.
    pub async fn propose_minimum(&self, role: Role, amount: U256, description: &str) -> Result<(U256, Mined), Error> {
        let call = Staking::setMinimumStakeCall { role: role as u8, amount };
        self.propose(vec![self.deployment.staking], vec![Bytes::from(call.abi_encode())], description).await
    }

    async fn propose(
        &self,
        targets: Vec<Address>,
        calldatas: Vec<Bytes>,
        description: &str,
    ) -> Result<(U256, Mined), Error> {
        let g = self.governor();
        let values = vec![U256::ZERO; targets.len()];
        let id = g
            .hashProposal(targets.clone(), values.clone(), calldatas.clone(), keccak256(description.as_bytes()))
            .call()
            .await
            .map_err(|e| self.view_error("VainGovernor.hashProposal", e))?;
        let tx = g.propose(targets, values, calldatas, description.to_owned()).into_transaction_request();
        Ok((id, self.send("VainGovernor.propose", tx).await?))
    }

    /// Vote on proposal `id`: 0 against, 1 for, 2 abstain.
    pub async fn vote(&self, id: U256, support: u8) -> Result<Mined, Error> {
        let g = self.governor();
        self.send("VainGovernor.castVote", g.castVote(id, support).into_transaction_request()).await
    }

    /// The state of proposal `id` (OpenZeppelin's `ProposalState`: 0 pending, 1 active,
    /// 2 canceled, 3 defeated, 4 succeeded, 5 queued, 6 expired, 7 executed).
    pub async fn proposal_state(&self, id: U256) -> Result<u8, Error> {
        self.governor().state(id).call().await.map_err(|e| self.view_error("VainGovernor.state", e))
    }

    /// Move proposal `id` on: queue it when it succeeded, execute it when queued (the timelock
    /// refuses until its delay is over). Its parameters come from its `ProposalCreated` event.
    pub async fn advance_proposal(&self, id: U256) -> Result<(&'static str, Mined), Error> {
        let filter = Filter::new()
            .address(self.deployment.governor)
            .event_signature(VainGovernor::ProposalCreated::SIGNATURE_HASH)
            .from_block(self.deployment.block);
        let logs = self.provider.get_logs(&filter).await.map_err(|e| self.rpc(e))?;
        let created = logs
            .iter()
            .filter_map(|l| l.log_decode::<VainGovernor::ProposalCreated>().ok())
            .find(|e| e.inner.proposalId == id)
            .ok_or(Error::Argument { what: "no such proposal on this chain" })?;
        let p = created.inner.data;
        let hash = keccak256(p.description.as_bytes());
        let g = self.governor();
        if self.proposal_state(id).await? == 4 {
            let tx = g.queue(p.targets, p.values, p.calldatas, hash).into_transaction_request();
            Ok(("queued", self.send("VainGovernor.queue", tx).await?))
        } else {
            let tx = g.execute(p.targets, p.values, p.calldatas, hash).into_transaction_request();
            Ok(("executed", self.send("VainGovernor.execute", tx).await?))
        }
    }

    /// Accounts registered for `node_id` whose registration the node's key `node_id` signed
    /// (the registry cannot check Ed25519: squatters' claims are dropped here).
    pub async fn accounts_of(&self, node_id: [u8; 32]) -> Result<Vec<Address>, Error> {
        let claims = self
            .registry()
            .claimsOf(B256::from(node_id), U256::ZERO, U256::from(256u64))
            .call()
            .await
            .map_err(|e| self.view_error("NodeRegistry.claimsOf", e))?;
        let mut out = Vec::new();
        for a in claims {
            if let Some(r) = self.registration(a).await?
                && r.node_id == node_id
                && r.verify(&node_id)
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Swap `amount` of VAIN (or of the pool's other token when `sell_vain` is false) for at
    /// least `min_out` of the other, before `deadline` (Unix seconds).
    pub async fn swap(&self, sell_vain: bool, amount: U256, min_out: U256, deadline: u64) -> Result<Mined, Error> {
        let sold = if sell_vain { self.deployment.token } else { self.deployment.quote };
        let token = VainToken::new(sold, self.provider.clone());
        let allowance = token
            .allowance(self.account, self.deployment.pool)
            .call()
            .await
            .map_err(|e| self.view_error("allowance", e))?;
        if allowance < amount {
            self.send("approve", token.approve(self.deployment.pool, amount).into_transaction_request()).await?;
        }
        let pool = self.pool();
        let tx = pool.swap(sold, amount, min_out, self.account, U256::from(deadline)).into_transaction_request();
        self.send("LiquidityPool.swap", tx).await
    }

    /// Claim leaf `index` of `epoch`'s rewards: `amount` to `account`, with its Merkle proof.
    pub async fn claim(
        &self,
        epoch: u64,
        index: u64,
        account: Address,
        amount: U256,
        proof: &[[u8; 32]],
    ) -> Result<Mined, Error> {
        let r = self.rewards();
        let proof: Vec<B256> = proof.iter().map(|p| B256::from(*p)).collect();
        self.send("Rewards.claim", r.claim(epoch, U256::from(index), account, amount, proof).into_transaction_request())
            .await
    }

    /// The latest block's timestamp (Unix seconds): the chain's clock, which deadlines and
    /// unbonding delays are measured against.
    pub async fn chain_time(&self) -> Result<u64, Error> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| self.rpc(e))?
            .ok_or(Error::Argument { what: "the endpoint has no latest block" })?;
        Ok(block.header.timestamp)
    }

    /// Move the chain's clock forward and mine a block (the embedded chain and anvil only).
    pub async fn advance(&self, secs: u64) -> Result<(), Error> {
        let _: U256 =
            self.provider.raw_request("evm_increaseTime".into(), (U256::from(secs),)).await.map_err(|e| self.rpc(e))?;
        let _: serde_json::Value = self.provider.raw_request("evm_mine".into(), ()).await.map_err(|e| self.rpc(e))?;
        Ok(())
    }
}
