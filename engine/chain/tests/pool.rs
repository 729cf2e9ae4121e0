//! Property test of the constant-product pool on the embedded chain: across random swaps,
//! deposits and withdrawals, k never decreases on a swap, the value of a share never decreases,
//! and swap fees raise it (they accrue to the liquidity providers).

use alloy::primitives::{Address, U256, Uint};
use proptest::prelude::*;
use vain_chain::deploy::{Genesis, VAIN, deploy, dev_account};
use vain_chain::devnet::Devnet;
use vain_chain::rpc::Server;
use vain_chain::{Client, contracts::LiquidityPool, contracts::VainToken};

type U512 = Uint<512, 8>;

#[derive(Clone, Debug)]
enum Op {
    Swap { zero_for_one: bool, milli: u64 },
    Add { a0: u64, a1: u64 },
    Remove { permille: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 1u64..5_000_000).prop_map(|(zero_for_one, milli)| Op::Swap { zero_for_one, milli }),
        1 => (1u64..50_000, 1u64..50_000).prop_map(|(a0, a1)| Op::Add { a0, a1 }),
        1 => (1u64..500).prop_map(|permille| Op::Remove { permille }),
    ]
}

struct State {
    r0: U256,
    r1: U256,
    supply: U256,
}

async fn state(pool: &LiquidityPool::LiquidityPoolInstance<alloy::providers::DynProvider>) -> State {
    State {
        r0: pool.reserve0().call().await.expect("r0"),
        r1: pool.reserve1().call().await.expect("r1"),
        supply: pool.totalSupply().call().await.expect("supply"),
    }
}

/// k / supply², widened: the square of a share's value.
fn share_value_sq_ge(new: &State, old: &State) -> bool {
    let k_new = U512::from(new.r0) * U512::from(new.r1);
    let k_old = U512::from(old.r0) * U512::from(old.r1);
    k_new * U512::from(old.supply) * U512::from(old.supply) >= k_old * U512::from(new.supply) * U512::from(new.supply)
}

async fn run(ops: Vec<Op>) {
    let me = dev_account(0).expect("dev");
    let server = Server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        Devnet::in_memory(&[me.address()], U256::from(1_000u64) * VAIN),
    )
    .expect("serve");
    let (d, _) = deploy(&server.url(), me.clone(), &Genesis::default()).await.expect("deploy");
    let c = Client::connect(&server.url(), me, d.clone()).await.expect("connect");
    for t in [d.token, d.quote] {
        let token = VainToken::new(t, c.provider().clone());
        c.send("approve", token.approve(d.pool, U256::MAX).into_transaction_request()).await.expect("approve");
    }
    let pool = c.pool();
    let far = U256::from(u64::MAX);
    let to: Address = c.account();
    c.send(
        "add",
        pool.addLiquidity(U256::from(1_000_000u64) * VAIN, U256::from(400_000u64) * VAIN, U256::ZERO, to, far)
            .into_transaction_request(),
    )
    .await
    .expect("first deposit");
    let start = state(&pool).await;
    let mut before = state(&pool).await;
    let mut swapped = false;
    for op in ops {
        let tx = match op {
            Op::Swap { zero_for_one, milli } => {
                let token = if zero_for_one { d.token } else { d.quote };
                pool.swap(token, U256::from(milli) * VAIN / U256::from(1000u64), U256::ZERO, to, far)
                    .into_transaction_request()
            }
            Op::Add { a0, a1 } => pool
                .addLiquidity(U256::from(a0) * VAIN, U256::from(a1) * VAIN, U256::ZERO, to, far)
                .into_transaction_request(),
            Op::Remove { permille } => {
                let mine = pool.balanceOf(to).call().await.expect("shares");
                pool.removeLiquidity(mine * U256::from(permille) / U256::from(1000u64), U256::ZERO, U256::ZERO, to, far)
                    .into_transaction_request()
            }
        };
        // A deposit too small to mint a share, or a swap too small to pay out, is refused: the
        // invariants must hold whether or not the operation went through.
        let went = c.send("op", tx).await.is_ok();
        if let Op::Swap { milli, .. } = op {
            assert!(went || milli < 1000, "a swap of {milli} milli-tokens was refused");
        }
        let after = state(&pool).await;
        if went && matches!(op, Op::Swap { .. }) {
            swapped = true;
            assert!(
                U512::from(after.r0) * U512::from(after.r1) >= U512::from(before.r0) * U512::from(before.r1),
                "k decreased on {op:?}"
            );
        }
        assert!(share_value_sq_ge(&after, &before), "a share lost value on {op:?}");
        before = after;
    }
    if swapped {
        assert!(share_value_sq_ge(&before, &start));
        let k_gain =
            U512::from(before.r0) * U512::from(before.r1) * U512::from(start.supply) * U512::from(start.supply);
        let k_start =
            U512::from(start.r0) * U512::from(start.r1) * U512::from(before.supply) * U512::from(before.supply);
        assert!(k_gain > k_start, "swaps paid no fee to the providers");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn the_pool_never_loses_value_for_providers(ops in proptest::collection::vec(op(), 1..24)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(run(ops));
    }
}
