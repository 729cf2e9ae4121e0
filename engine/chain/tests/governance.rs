//! The owner functions of every contract, reached the only way they can be: one governance
//! proposal that passes, waits out the timelock and executes; the registry's life cycle; and
//! EIP-2612 permit on the token.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::sol_types::{SolCall, SolValue};
use vain_chain::Client;
use vain_chain::client::Role;
use vain_chain::contracts::{NodeRegistry, Rewards, Staking, VainToken};
use vain_chain::deploy::{Genesis, VAIN, deploy, dev_account};
use vain_chain::devnet::Devnet;
use vain_chain::rpc::Server;

fn vain(n: u64) -> U256 {
    U256::from(n) * VAIN
}

#[tokio::test]
async fn governance_reaches_every_owner_function_and_permit_spends_by_signature() {
    let funded: Vec<Address> = (0..8).map(|i| dev_account(i).expect("dev").address()).collect();
    let server =
        Server::spawn("127.0.0.1:0".parse().expect("addr"), Devnet::in_memory(&funded, vain(1_000))).expect("serve");
    let url = server.url();
    let (d, _) = deploy(&url, dev_account(0).expect("dev"), &Genesis::default()).await.expect("deploy");
    let client = |i: u32| {
        let (url, d) = (url.clone(), d.clone());
        async move { Client::connect(&url, dev_account(i).expect("dev"), d).await.expect("connect") }
    };
    let gov = client(0).await;
    gov.delegate_self().await.expect("delegate");

    // One proposal, five actions on three contracts.
    let lucky = dev_account(5).expect("dev").address();
    let targets = vec![d.staking, d.staking, d.token, d.token, d.rewards];
    let calldatas: Vec<Bytes> = vec![
        Staking::setMinimumStakeCall { role: Role::Aggregator as u8, amount: vain(20_000) }.abi_encode().into(),
        Staking::setUnbondingDelayCall { delay: 86_400 }.abi_encode().into(),
        VainToken::setMintingEnabledCall { enabled: true }.abi_encode().into(),
        VainToken::mintCall { to: lucky, amount: vain(1_000) }.abi_encode().into(),
        Rewards::setMaxPerEpochCall { cap: vain(5) }.abi_encode().into(),
    ];
    let values = vec![U256::ZERO; targets.len()];
    let description = "raise the aggregator minimum, shorten unbonding, mint a grant, cap rewards".to_string();
    let g = gov.governor();
    gov.send(
        "propose",
        g.propose(targets.clone(), values.clone(), calldatas.clone(), description.clone()).into_transaction_request(),
    )
    .await
    .expect("propose");
    let id = g
        .hashProposal(targets.clone(), values.clone(), calldatas.clone(), keccak256(description.as_bytes()))
        .call()
        .await
        .expect("id");
    gov.advance(0).await.expect("mine");
    gov.advance(0).await.expect("mine");
    gov.vote(id, 1).await.expect("vote");
    for _ in 0..51 {
        gov.advance(0).await.expect("mine");
    }
    assert_eq!(gov.proposal_state(id).await.expect("state"), 4, "succeeded");
    assert_eq!(gov.advance_proposal(id).await.expect("queue").0, "queued");
    gov.advance(3_601).await.expect("wait");
    assert_eq!(gov.advance_proposal(id).await.expect("execute").0, "executed");
    assert_eq!(gov.proposal_state(id).await.expect("state"), 7, "executed");

    let p = gov.provider().clone();
    let staking = Staking::new(d.staking, p.clone());
    assert_eq!(staking.minimumStake(Role::Aggregator as u8).call().await.expect("min"), vain(20_000));
    assert_eq!(staking.unbondingDelay().call().await.expect("delay"), 86_400);
    let token = VainToken::new(d.token, p.clone());
    assert!(token.mintingEnabled().call().await.expect("switch"));
    assert_eq!(token.balanceOf(lucky).call().await.expect("balance"), vain(1_000));
    assert_eq!(Rewards::new(d.rewards, p.clone()).maxPerEpoch().call().await.expect("cap"), vain(5));

    // The registry's life cycle: register, listed among the id's claims, deregister, again.
    let node = client(2).await;
    gov.transfer(node.account(), vain(200)).await.expect("fund");
    node.stake(vain(100)).await.expect("stake");
    node.register([9; 32], Role::Client, [1; 64]).await.expect("register");
    let registry = NodeRegistry::new(d.registry, p.clone());
    assert_eq!(registry.claimCount(B256::from([9; 32])).call().await.expect("count"), U256::from(1));
    let listed = registry.claimsOf(B256::from([9; 32]), U256::ZERO, U256::from(10)).call().await.expect("claims");
    assert_eq!(listed, vec![node.account()]);
    assert!(registry.isActive(node.account(), Role::Client as u8).call().await.expect("active"));
    // A signature that is not the node's is stored, and every reader drops it.
    assert!(node.accounts_of([9; 32]).await.expect("accounts").is_empty());
    let reg = NodeRegistry::new(d.registry, node.provider().clone());
    node.send("deregister", reg.deregister().into_transaction_request()).await.expect("deregister");
    assert!(node.registration(node.account()).await.expect("read").is_none());
    match node.send("deregister", reg.deregister().into_transaction_request()).await {
        Err(vain_chain::Error::Reverted { revert, .. }) => assert_eq!(revert.name, "NotRegistered"),
        other => panic!("{other:?}"),
    }

    // EIP-2612: account 3 signs a permit; account 4 submits it and spends.
    let owner = dev_account(3).expect("dev");
    gov.transfer(owner.address(), vain(10)).await.expect("fund");
    let spender = client(4).await;
    let sp_token = VainToken::new(d.token, spender.provider().clone());
    let domain = token.DOMAIN_SEPARATOR().call().await.expect("domain");
    let nonce = token.nonces(owner.address()).call().await.expect("nonce");
    let deadline = U256::from(spender.chain_time().await.expect("time") + 600);
    let typehash = keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    let st = keccak256((typehash, owner.address(), spender.account(), vain(7), nonce, deadline).abi_encode());
    let digest = keccak256([&[0x19u8, 0x01][..], domain.as_slice(), st.as_slice()].concat());
    let sig = owner.sign_hash_sync(&digest).expect("sign");
    let v = 27 + sig.v() as u8;
    let permit =
        sp_token.permit(owner.address(), spender.account(), vain(7), deadline, v, sig.r().into(), sig.s().into());
    spender.send("permit", permit.into_transaction_request()).await.expect("permit");
    let pull = sp_token.transferFrom(owner.address(), spender.account(), vain(7));
    spender.send("transferFrom", pull.into_transaction_request()).await.expect("spend");
    assert_eq!(token.balanceOf(owner.address()).call().await.expect("balance"), vain(3));
    // The same permit again: its nonce is spent.
    let again =
        sp_token.permit(owner.address(), spender.account(), vain(7), deadline, v, sig.r().into(), sig.s().into());
    match spender.send("permit", again.into_transaction_request()).await {
        Err(vain_chain::Error::Reverted { revert, .. }) => assert_eq!(revert.name, "ERC2612InvalidSigner"),
        other => panic!("{other:?}"),
    }
}
