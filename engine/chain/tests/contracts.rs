//! The contracts' behaviour, through the node's chain client, on the embedded chain and on anvil
//! (the same scenarios on both): every happy path and each refusal the contracts promise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::{SolCall, SolValue};
use ed25519_dalek::{Signer as _, SigningKey};
use vain_chain::client::{Role, model_key};
use vain_chain::contracts::{LiquidityPool, ReentrantToken, Rewards, Staking, VainGovernor, VainToken};
use vain_chain::deploy::{Deployment, Genesis, VAIN, deploy, dev_account};
use vain_chain::devnet::Devnet;
use vain_chain::rpc::Server;
use vain_chain::{Client, Error};
use vain_round::merkle;
use vain_testkit::Need;

/// A chain with the contracts deployed.
struct Net {
    url: String,
    deployment: Deployment,
    _server: Option<Server>,
    _anvil: Option<Anvil>,
}

impl Net {
    async fn client(&self, i: u32) -> Client {
        Client::connect(&self.url, dev_account(i).expect("dev account"), self.deployment.clone())
            .await
            .expect("connect")
    }
}

fn genesis() -> Genesis {
    Genesis { publishers: vec![dev_account(0).expect("dev").address()], pool_seed: None, ..Genesis::default() }
}

async fn embedded() -> Net {
    let funded: Vec<Address> = (0..10).map(|i| dev_account(i).expect("dev").address()).collect();
    let server =
        Server::spawn("127.0.0.1:0".parse().expect("addr"), Devnet::in_memory(&funded, U256::from(10_000u64) * VAIN))
            .expect("serve");
    let url = server.url();
    let (deployment, _) = deploy(&url, dev_account(0).expect("dev"), &genesis()).await.expect("deploy");
    Net { url, deployment, _server: Some(server), _anvil: None }
}

struct Anvil(Child);

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// anvil's own binary: the npm launcher in .bin would start it as a child that outlives a
/// killed launcher.
fn anvil_bin() -> PathBuf {
    let scope = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts/node_modules/@foundry-rs");
    std::fs::read_dir(&scope)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/anvil"))
        .find(|p| p.exists())
        .unwrap_or_else(|| scope.join("anvil-linux-amd64/bin/anvil"))
}

/// anvil on a free loopback port, with the contracts deployed; `None` (logged, or a failure
/// when this run requires it) when the contracts' npm packages are not installed.
async fn on_anvil(test: &str) -> Option<Net> {
    let bin = anvil_bin();
    if !bin.exists() {
        vain_testkit::unavailable(Need::Contracts, test, format!("{} missing (npm ci in contracts/)", bin.display()));
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1", "--silent", "--accounts", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start anvil");
    let anvil = Anvil(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "anvil did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://{addr}");
    let (deployment, _) = deploy(&url, dev_account(0).expect("dev"), &genesis()).await.expect("deploy on anvil");
    Some(Net { url, deployment, _server: None, _anvil: Some(anvil) })
}

fn vain(n: u64) -> U256 {
    U256::from(n) * VAIN
}

fn reverted(r: Result<impl std::fmt::Debug, Error>, name: &str) {
    match r {
        Err(Error::Reverted { revert, .. }) => assert_eq!(revert.name, name, "reverted with {revert}"),
        other => panic!("expected a {name} revert, got {other:?}"),
    }
}

fn node_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Fund account `i` from the deployer, stake `stake` and register it for a node in `role`.
async fn staked_node(net: &Net, i: u32, stake: u64, role: Role) -> (Client, SigningKey) {
    let deployer = net.client(0).await;
    let c = net.client(i).await;
    deployer.transfer(c.account(), vain(stake)).await.expect("fund");
    c.stake(vain(stake)).await.expect("stake");
    let key = node_key(i as u8 + 1);
    let message = c.registration_message(c.account(), role).await.expect("message");
    let sig =
        key.sign(vain_schema::sign::SigningInput::new(vain_schema::sign::CHAIN_REGISTRATION, &message).as_bytes());
    c.register(key.verifying_key().to_bytes(), role, sig.to_bytes()).await.expect("register");
    (c, key)
}

async fn anchoring(net: &Net) {
    let (agg, key) = staked_node(net, 1, 10_000, Role::Aggregator).await;
    // The registration is the node's, and only its key verifies it.
    let reg = agg.registration(agg.account()).await.expect("read").expect("registered");
    assert_eq!((reg.node_id, reg.role), (key.verifying_key().to_bytes(), Role::Aggregator));
    assert!(reg.verify(&key.verifying_key().to_bytes()));
    assert!(!reg.verify(&node_key(99).verifying_key().to_bytes()));

    // Rounds of 1 to 64 updates: one transaction each, gas independent of the count.
    let mut rounds = Vec::new();
    let mut gas = Vec::new();
    for (round, n) in [1usize, 2, 5, 16, 64].into_iter().enumerate() {
        let leaves: Vec<merkle::Hash> =
            (0..n).map(|j| merkle::leaf(&[j as u8 + 1; 32], &keccak256([round as u8, j as u8]).0)).collect();
        let root = merkle::root(&leaves);
        let checkpoint = keccak256([0xc0, round as u8]).0;
        let m = agg.anchor_round("mnist-mlp", round as u64, root, checkpoint).await.expect("anchor");
        gas.push(m.gas_used);
        rounds.push((leaves, root, checkpoint));
    }
    assert!(gas.iter().all(|g| *g <= 100_000), "anchoring gas {gas:?} above 100k");
    // After the first anchor of a model (which creates its round counter), the cost is the same
    // for 2 or 64 updates, but for calldata: a zero byte of the arguments costs 12 gas less.
    let steady = &gas[1..];
    let spread = steady.iter().max().unwrap_or(&0) - steady.iter().min().unwrap_or(&0);
    assert!(spread <= 200, "gas depends on the update count: {gas:?}");
    assert_eq!(agg.next_round("mnist-mlp").await.expect("next"), 5);

    // A third party with only the URL and the addresses verifies every update of every round.
    let third = net.client(9).await;
    for (round, (leaves, root, checkpoint)) in rounds.iter().enumerate() {
        let anchored = third.round("mnist-mlp", round as u64).await.expect("round").expect("anchored");
        assert_eq!((anchored.root.0, anchored.checkpoint.0, anchored.aggregator), (*root, *checkpoint, agg.account()));
        for (j, leaf) in leaves.iter().enumerate() {
            let proof = merkle::proof(leaves, j).expect("proof");
            assert!(third.verify_inclusion("mnist-mlp", round as u64, *leaf, &proof).await.expect("verify"));
        }
    }
    // A leaf of another round, a doctored proof, another model, a round never anchored.
    let (l4, _, _) = &rounds[4];
    let p = merkle::proof(l4, 3).expect("proof");
    assert!(!third.verify_inclusion("mnist-mlp", 3, l4[3], &p).await.expect("verify"));
    let mut bad = p.clone();
    bad[0][0] ^= 1;
    assert!(!third.verify_inclusion("mnist-mlp", 4, l4[3], &bad).await.expect("verify"));
    assert!(!third.verify_inclusion("mnist-cnn", 4, l4[3], &p).await.expect("verify"));
    assert!(!third.verify_inclusion("mnist-mlp", 7, l4[3], &p).await.expect("verify"));

    // Refusals: a duplicate or earlier round, an unregistered or unstaked account, a
    // registration without the stake its role needs.
    reverted(agg.anchor_round("mnist-mlp", 4, [1; 32], [2; 32]).await, "RoundOutOfOrder");
    reverted(agg.anchor_round("mnist-mlp", 2, [1; 32], [2; 32]).await, "RoundOutOfOrder");
    agg.anchor_round("mnist-mlp", 9, [1; 32], [2; 32]).await.expect("a later round, after a gap");
    reverted(third.anchor_round("mnist-mlp", 10, [1; 32], [2; 32]).await, "NotAuthorized");
    let (client, _) = staked_node(net, 2, 100, Role::Client).await;
    reverted(client.anchor_round("mnist-mlp", 10, [1; 32], [2; 32]).await, "NotAuthorized");
    reverted(client.attest_epoch(0, [3; 32]).await, "NotAuthorized");
    let poor = net.client(3).await;
    net.client(0).await.transfer(poor.account(), vain(50)).await.expect("fund");
    poor.stake(vain(50)).await.expect("stake");
    reverted(poor.register([7; 32], Role::Client, [0; 64]).await, "NotStaked");
    reverted(agg.register([8; 32], Role::Aggregator, [0; 64]).await, "AlreadyRegistered");

    // Validators attest epochs, once each.
    let (v1, _) = staked_node(net, 4, 5_000, Role::Validator).await;
    let (v2, _) = staked_node(net, 5, 5_000, Role::Validator).await;
    v1.attest_epoch(0, [5; 32]).await.expect("attest");
    v2.attest_epoch(0, [5; 32]).await.expect("attest");
    reverted(v1.attest_epoch(0, [5; 32]).await, "AlreadyAttested");
    assert_eq!(v1.attestations(0, [5; 32]).await.expect("count"), 2);
    assert_eq!(v1.attestations(0, [6; 32]).await.expect("count"), 0);
    // Unstaking below the minimum deactivates an aggregator at once.
    agg.request_unstake(vain(1)).await.expect("unstake");
    reverted(agg.anchor_round("mnist-mlp", 10, [1; 32], [2; 32]).await, "NotAuthorized");
}

#[tokio::test]
async fn aggregators_anchor_and_anyone_verifies_embedded() {
    anchoring(&embedded().await).await;
}

#[tokio::test]
async fn aggregators_anchor_and_anyone_verifies_on_anvil() {
    if let Some(net) = on_anvil("aggregators_anchor_and_anyone_verifies_on_anvil").await {
        anchoring(&net).await;
    }
}

async fn staking_and_governance(net: &Net) {
    let d = net.deployment.clone();
    let deployer = net.client(0).await;
    let (agg, _) = staked_node(net, 1, 20_000, Role::Aggregator).await;
    // Unstaking waits the unbonding delay.
    agg.request_unstake(vain(5_000)).await.expect("unstake");
    reverted(agg.withdraw().await, "StillBonding");
    agg.advance(7 * 24 * 3600 + 60).await.expect("advance");
    let before = agg.standing(agg.account()).await.expect("standing");
    agg.withdraw().await.expect("withdraw");
    let after = agg.standing(agg.account()).await.expect("standing");
    assert_eq!(after.vain - before.vain, vain(5_000));
    assert_eq!(after.staked, vain(15_000));
    reverted(agg.withdraw().await, "NothingToWithdraw");

    // Nobody slashes but governance: not the deployer, not a staker.
    let staking = Staking::new(d.staking, deployer.provider().clone());
    let slash = staking.slash(agg.account(), vain(4_000), d.timelock).into_transaction_request();
    reverted(deployer.send("Staking.slash", slash.clone()).await, "OwnableUnauthorizedAccount");
    let token = VainToken::new(d.token, deployer.provider().clone());
    reverted(
        deployer.send("VainToken.mint", token.mint(deployer.account(), vain(1)).into_transaction_request()).await,
        "OwnableUnauthorizedAccount",
    );

    // Through the governor: delegate, propose, vote, queue, wait out the timelock, execute.
    deployer
        .send("VainToken.delegate", token.delegate(deployer.account()).into_transaction_request())
        .await
        .expect("delegate");
    let governor = deployer.governor();
    let calldata = Bytes::from(
        Staking::slashCall { account: agg.account(), amount: vain(4_000), recipient: d.timelock }.abi_encode(),
    );
    let description = "slash aggregator 1 for a banned node".to_string();
    let propose = governor
        .propose(vec![d.staking], vec![U256::ZERO], vec![calldata.clone()], description.clone())
        .into_transaction_request();
    deployer.send("VainGovernor.propose", propose).await.expect("propose");
    let id = governor
        .hashProposal(vec![d.staking], vec![U256::ZERO], vec![calldata.clone()], keccak256(description.as_bytes()))
        .call()
        .await
        .expect("id");
    agg.advance(1).await.expect("mine");
    agg.advance(1).await.expect("mine");
    deployer.send("VainGovernor.castVote", governor.castVote(id, 1).into_transaction_request()).await.expect("vote");
    // Executing before the vote ends is refused.
    let execute = governor
        .execute(vec![d.staking], vec![U256::ZERO], vec![calldata.clone()], keccak256(description.as_bytes()))
        .into_transaction_request();
    reverted(deployer.send("VainGovernor.execute", execute.clone()).await, "GovernorUnexpectedProposalState");
    for _ in 0..50 {
        agg.advance(1).await.expect("mine");
    }
    let queue = governor
        .queue(vec![d.staking], vec![U256::ZERO], vec![calldata.clone()], keccak256(description.as_bytes()))
        .into_transaction_request();
    deployer.send("VainGovernor.queue", queue).await.expect("queue");
    reverted(deployer.send("VainGovernor.execute", execute.clone()).await, "TimelockUnexpectedOperationState");
    agg.advance(3600 + 1).await.expect("advance");
    deployer.send("VainGovernor.execute", execute).await.expect("execute");
    let slashed = agg.standing(agg.account()).await.expect("standing");
    assert_eq!(slashed.staked, vain(11_000));
    let tl = deployer.standing(d.timelock).await.expect("timelock");
    assert_eq!(tl.vain, vain(4_000));
}

#[tokio::test]
async fn unstaking_waits_and_only_governance_slashes_embedded() {
    staking_and_governance(&embedded().await).await;
}

#[tokio::test]
async fn unstaking_waits_and_only_governance_slashes_on_anvil() {
    if let Some(net) = on_anvil("unstaking_waits_and_only_governance_slashes_on_anvil").await {
        staking_and_governance(&net).await;
    }
}

fn reward_leaf(index: u64, account: Address, amount: U256) -> merkle::Hash {
    keccak256(keccak256((U256::from(index), account, amount).abi_encode())).0
}

#[tokio::test]
async fn rewards_are_claimed_once_with_a_proof_embedded() {
    rewards(&embedded().await).await;
}

#[tokio::test]
async fn rewards_are_claimed_once_with_a_proof_on_anvil() {
    if let Some(net) = on_anvil("rewards_are_claimed_once_with_a_proof_on_anvil").await {
        rewards(&net).await;
    }
}

async fn rewards(net: &Net) {
    let publisher = net.client(0).await;
    let rewards = publisher.rewards();
    let accounts: Vec<Address> = (3..6).map(|i| dev_account(i).expect("dev").address()).collect();
    let amounts = [vain(100), vain(250), vain(1)];
    let leaves: Vec<merkle::Hash> =
        accounts.iter().zip(amounts).enumerate().map(|(i, (a, v))| reward_leaf(i as u64, *a, v)).collect();
    let root = B256::from(merkle::root(&leaves));
    let total = vain(351);
    publisher
        .send("Rewards.publish", rewards.publish(1, root, total).into_transaction_request())
        .await
        .expect("publish");
    reverted(
        publisher.send("Rewards.publish", rewards.publish(1, root, total).into_transaction_request()).await,
        "EpochAlreadyPublished",
    );
    reverted(
        publisher.send("Rewards.publish", rewards.publish(2, root, vain(2_000_000)).into_transaction_request()).await,
        "OverCap",
    );
    let stranger = net.client(7).await;
    let r7 = stranger.rewards();
    reverted(
        stranger.send("Rewards.publish", r7.publish(3, root, total).into_transaction_request()).await,
        "AccessControlUnauthorizedAccount",
    );
    // Anyone may submit a claim; the tokens go to the leaf's account.
    let proof = |i: usize| merkle::proof(&leaves, i).expect("proof").into_iter().map(B256::from).collect::<Vec<_>>();
    let before = stranger.standing(accounts[1]).await.expect("standing").vain;
    let claim = r7.claim(1, U256::from(1), accounts[1], amounts[1], proof(1)).into_transaction_request();
    stranger.send("Rewards.claim", claim.clone()).await.expect("claim");
    assert_eq!(stranger.standing(accounts[1]).await.expect("standing").vain - before, amounts[1]);
    reverted(stranger.send("Rewards.claim", claim).await, "AlreadyClaimed");
    // A different amount or account under the same proof is refused.
    let forged = r7.claim(1, U256::from(0), accounts[0], vain(1_000), proof(0)).into_transaction_request();
    reverted(stranger.send("Rewards.claim", forged).await, "InvalidProof");
    let stolen = r7.claim(1, U256::from(2), stranger.account(), amounts[2], proof(2)).into_transaction_request();
    reverted(stranger.send("Rewards.claim", stolen).await, "InvalidProof");
    reverted(
        stranger
            .send(
                "Rewards.claim",
                r7.claim(5, U256::ZERO, accounts[0], amounts[0], proof(0)).into_transaction_request(),
            )
            .await,
        "UnknownEpoch",
    );
    let r = Rewards::new(net.deployment.rewards, stranger.provider().clone());
    assert!(r.isClaimed(1, U256::from(1)).call().await.expect("claimed"));
    assert!(!r.isClaimed(1, U256::from(0)).call().await.expect("claimed"));
}

async fn approve(c: &Client, token: Address, spender: Address) {
    let t = VainToken::new(token, c.provider().clone());
    c.send("approve", t.approve(spender, U256::MAX).into_transaction_request()).await.expect("approve");
}

async fn deadline(c: &Client) -> U256 {
    use alloy::providers::Provider;
    let b = c.provider().get_block_number().await.expect("block");
    let block = c.provider().get_block_by_number(b.into()).await.expect("block").expect("latest");
    U256::from(block.header.timestamp + 600)
}

#[tokio::test]
async fn the_pool_enforces_deadline_slippage_and_refuses_reentrancy_embedded() {
    pool(&embedded().await).await;
}

#[tokio::test]
async fn the_pool_enforces_deadline_slippage_and_refuses_reentrancy_on_anvil() {
    if let Some(net) = on_anvil("the_pool_enforces_deadline_slippage_and_refuses_reentrancy_on_anvil").await {
        pool(&net).await;
    }
}

async fn pool(net: &Net) {
    let d = net.deployment.clone();
    let lp = net.client(0).await;
    approve(&lp, d.token, d.pool).await;
    approve(&lp, d.quote, d.pool).await;
    let pool = lp.pool();
    let far = deadline(&lp).await;
    let add = pool.addLiquidity(vain(100_000), vain(50_000), U256::ZERO, lp.account(), far).into_transaction_request();
    lp.send("LiquidityPool.addLiquidity", add).await.expect("add");
    let quote = pool.quote(d.token, vain(100)).call().await.expect("quote");
    // x·y = k with 0.3 % fee: 100 in against 100k/50k pays a little under 50.
    assert!(quote < vain(50) && quote > vain(49), "quote {quote}");
    let past = U256::from(1u64);
    reverted(
        lp.send("swap", pool.swap(d.token, vain(100), U256::ZERO, lp.account(), past).into_transaction_request()).await,
        "Expired",
    );
    reverted(
        lp.send(
            "swap",
            pool.swap(d.token, vain(100), quote + U256::from(1), lp.account(), far).into_transaction_request(),
        )
        .await,
        "SlippageExceeded",
    );
    reverted(
        lp.send(
            "swap",
            pool.swap(Address::repeat_byte(7), vain(1), U256::ZERO, lp.account(), far).into_transaction_request(),
        )
        .await,
        "UnknownToken",
    );
    let before = lp.standing(lp.account()).await.expect("standing");
    lp.send("swap", pool.swap(d.token, vain(100), quote, lp.account(), far).into_transaction_request())
        .await
        .expect("swap");
    let after = lp.standing(lp.account()).await.expect("standing");
    assert_eq!(before.vain - after.vain, vain(100));

    // A hostile token that calls back into its pool during transferFrom.
    let evil = lp
        .send(
            "ReentrantToken",
            ReentrantToken::deploy_builder(lp.provider().clone(), lp.account(), vain(1_000_000))
                .into_transaction_request(),
        )
        .await
        .expect("deploy")
        .contract
        .expect("address");
    let pool2 = lp
        .send(
            "LiquidityPool",
            LiquidityPool::deploy_builder(lp.provider().clone(), d.token, evil, U256::from(30u64))
                .into_transaction_request(),
        )
        .await
        .expect("deploy")
        .contract
        .expect("address");
    approve(&lp, d.token, pool2).await;
    approve(&lp, evil, pool2).await;
    let p2 = LiquidityPool::new(pool2, lp.provider().clone());
    lp.send("add", p2.addLiquidity(vain(1_000), vain(1_000), U256::ZERO, lp.account(), far).into_transaction_request())
        .await
        .expect("add");
    let reenter = LiquidityPool::swapCall {
        tokenIn: d.token,
        amountIn: vain(1),
        minOut: U256::ZERO,
        to: lp.account(),
        deadline: far,
    };
    let e = ReentrantToken::new(evil, lp.provider().clone());
    lp.send("arm", e.arm(pool2, Bytes::from(reenter.abi_encode())).into_transaction_request()).await.expect("arm");
    reverted(
        lp.send("swap", p2.swap(evil, vain(10), U256::ZERO, lp.account(), far).into_transaction_request()).await,
        "ReentrancyGuardReentrantCall",
    );
}

#[tokio::test]
async fn genesis_hands_every_power_to_governance() {
    let net = embedded().await;
    let d = net.deployment.clone();
    let c = net.client(0).await;
    let p = c.provider().clone();
    let token = VainToken::new(d.token, p.clone());
    assert_eq!(token.owner().call().await.expect("owner"), d.timelock);
    assert_eq!(Staking::new(d.staking, p.clone()).owner().call().await.expect("owner"), d.timelock);
    let rewards = Rewards::new(d.rewards, p.clone());
    assert!(rewards.hasRole(B256::ZERO, d.timelock).call().await.expect("role"));
    assert!(!rewards.hasRole(B256::ZERO, d.deployer).call().await.expect("role"));
    let tl = vain_chain::contracts::VainTimelock::new(d.timelock, p.clone());
    assert!(tl.hasRole(keccak256("PROPOSER_ROLE"), d.governor).call().await.expect("role"));
    assert!(!tl.hasRole(B256::ZERO, d.deployer).call().await.expect("role"));
    let g = Genesis::default();
    let me = c.standing(d.deployer).await.expect("standing");
    assert_eq!(me.vain, g.supply - g.rewards_reserve);
    assert_eq!(c.standing(d.rewards).await.expect("standing").vain, g.rewards_reserve);
    let gov = VainGovernor::new(d.governor, p.clone());
    assert_eq!(gov.votingPeriod().call().await.expect("period"), U256::from(g.voting_period_blocks));
    // The wrong chain or an address with no contract is caught at connect.
    let mut wrong = d.clone();
    wrong.chain_id = 1;
    assert!(matches!(
        Client::connect(&net.url, dev_account(0).expect("dev"), wrong).await,
        Err(Error::ChainMismatch { expected: 1, .. })
    ));
    let mut missing = d.clone();
    missing.anchor = Address::repeat_byte(0x42);
    assert!(matches!(
        Client::connect(&net.url, dev_account(0).expect("dev"), missing).await,
        Err(Error::NotDeployed { contract: "ReputationAnchor", .. })
    ));
    assert_eq!(model_key("mnist-mlp"), keccak256(b"mnist-mlp"));
}

#[tokio::test]
async fn the_embedded_chain_replays_its_journal_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.log");
    let funded = [dev_account(0).expect("dev").address(), dev_account(1).expect("dev").address()];
    let balance = U256::from(1_000u64) * VAIN;
    let (deployment, height) = {
        let server =
            Server::spawn("127.0.0.1:0".parse().expect("addr"), Devnet::open(&path, &funded, balance).expect("open"))
                .expect("serve");
        let (d, _) = deploy(&server.url(), dev_account(0).expect("dev"), &genesis()).await.expect("deploy");
        let h = server.chain.lock().expect("lock").height();
        (d, h)
    };
    // Half a record at the end: a crash while appending.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("write");
    }
    let len_torn = std::fs::metadata(&path).expect("meta").len();
    let server =
        Server::spawn("127.0.0.1:0".parse().expect("addr"), Devnet::open(&path, &funded, balance).expect("reopen"))
            .expect("serve");
    assert_eq!(server.chain.lock().expect("lock").height(), height);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), len_torn - 7);
    let c = Client::connect(&server.url(), dev_account(0).expect("dev"), deployment.clone()).await.expect("connect");
    let g = Genesis::default();
    assert_eq!(c.standing(deployment.deployer).await.expect("standing").vain, g.supply - g.rewards_reserve);
    // And it goes on: a transaction after the replay lands and survives the next restart.
    c.transfer(funded[1], vain(5)).await.expect("transfer");
    drop(server);
    let server =
        Server::spawn("127.0.0.1:0".parse().expect("addr"), Devnet::open(&path, &funded, balance).expect("reopen"))
            .expect("serve");
    let c = Client::connect(&server.url(), dev_account(1).expect("dev"), deployment).await.expect("connect");
    assert_eq!(c.standing(funded[1]).await.expect("standing").vain, vain(5));
    // Not a journal: refused, not overwritten.
    let other = dir.path().join("other.log");
    std::fs::write(&other, b"something else entirely").expect("write");
    assert!(matches!(Devnet::open(&other, &funded, balance), Err(Error::NotAJournal { .. })));
}

#[tokio::test]
async fn an_https_endpoint_is_spoken_to_over_tls_and_its_certificate_checked() {
    use std::io::Read as _;
    use std::sync::Arc;
    // A TLS server with a self-signed certificate: the client must speak TLS to it, and refuse
    // the certificate (no CA vouches for it).
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let conn = rustls::ServerConnection::new(Arc::new(config)).expect("server");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 64];
        // The handshake runs inside read; the client aborts it over the certificate.
        let r = tls.read(&mut buf);
        (tls.conn.server_name().map(str::to_owned), format!("{r:?}"))
    });
    let d = Deployment::unset(1);
    let e = Client::connect(&format!("https://localhost:{port}"), dev_account(0).expect("dev"), d)
        .await
        .expect_err("a self-signed endpoint is refused");
    let (sni, read) = server.join().expect("server thread");
    assert_eq!(sni.as_deref(), Some("localhost"), "the client sent a TLS ClientHello naming the host ({read})");
    let text = format!("{e:?}");
    assert!(matches!(e, Error::Rpc { .. }), "{text}");
    assert!(text.contains("certificate") || text.contains("UnknownIssuer"), "{text}");
}
