//! Ethereum JSON-RPC over the embedded chain: the subset a wallet, alloy and `cast` need to
//! deploy, call and transact (plus anvil's `evm_increaseTime` and `evm_mine`, so the same tests
//! run against anvil), served by axum on a loopback address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, Log, U256};
use alloy::rpc::types::{Filter, FilterBlockOption};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use serde_json::{Value, json};

use crate::Error;
use crate::devnet::{BLOCK_GAS_LIMIT, CHAIN_ID, Call, CallError, Devnet, GAS_PRICE, MAX_TX_BYTES, Receipt};

/// Largest request body: a transaction in hex, with room for the envelope.
const MAX_BODY: usize = 2 * MAX_TX_BYTES + 4096;
/// Most requests in one batch.
const MAX_BATCH: usize = 64;

/// The chain as the server shares it.
pub type Shared = Arc<Mutex<Devnet>>;

/// A JSON-RPC error object.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn params(what: impl std::fmt::Display) -> Self {
        RpcError { code: -32602, message: format!("invalid params: {what}"), data: None }
    }
    fn server(what: impl std::fmt::Display) -> Self {
        RpcError { code: -32000, message: what.to_string(), data: None }
    }
}

impl From<CallError> for RpcError {
    fn from(e: CallError) -> Self {
        match e {
            // geth's and anvil's shape, which alloy decodes into the contract's error.
            CallError::Reverted(data) => {
                RpcError { code: 3, message: "execution reverted".into(), data: Some(json!(data)) }
            }
            CallError::Halted(reason) => RpcError::server(format!("execution halted: {reason}")),
            CallError::Invalid(reason) => RpcError::server(format!("invalid transaction: {reason}")),
        }
    }
}

fn hex_u64(n: u64) -> Value {
    json!(format!("{n:#x}"))
}

fn param<T: serde::de::DeserializeOwned>(params: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let v = params.get(i).ok_or_else(|| RpcError::params(format!("missing {what}")))?;
    serde_json::from_value(v.clone()).map_err(|e| RpcError::params(format!("{what}: {e}")))
}

/// A block tag or number names the latest state; the embedded chain keeps no history.
fn latest_only(chain: &Devnet, params: &[Value], i: usize) -> Result<(), RpcError> {
    match params.get(i) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if matches!(s.as_str(), "latest" | "pending" | "safe" | "finalized") => Ok(()),
        Some(Value::String(s)) => {
            let n = u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| RpcError::params("block"))?;
            if n == chain.height() {
                Ok(())
            } else {
                Err(RpcError::server(format!("state at block {n} is not kept (latest is {})", chain.height())))
            }
        }
        Some(Value::Object(_)) => Err(RpcError::server("state by block hash is not kept")),
        Some(_) => Err(RpcError::params("block")),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallObject {
    from: Option<Address>,
    to: Option<Address>,
    data: Option<Bytes>,
    input: Option<Bytes>,
    value: Option<U256>,
    gas: Option<U256>,
}

impl CallObject {
    fn into_call(self) -> Call {
        Call {
            from: self.from,
            to: self.to,
            data: self.input.or(self.data).unwrap_or_default(),
            value: self.value.unwrap_or_default(),
            gas: self.gas.map(|g| g.saturating_to::<u64>()),
        }
    }
}

fn block_json(chain: &Devnet, n: u64) -> Value {
    let Some(b) = chain.block(n) else { return Value::Null };
    let bloom = b.tx.and_then(|h| chain.receipt(&h)).map(|r| r.bloom()).unwrap_or_default();
    json!({
        "number": hex_u64(b.number),
        "hash": b.hash,
        "parentHash": b.parent,
        "timestamp": hex_u64(b.timestamp),
        "gasLimit": hex_u64(BLOCK_GAS_LIMIT),
        "gasUsed": hex_u64(b.gas_used),
        "baseFeePerGas": "0x0",
        "miner": Address::ZERO,
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "logsBloom": bloom,
        "nonce": "0x0000000000000000",
        "mixHash": B256::ZERO,
        "sha3Uncles": B256::ZERO,
        "stateRoot": B256::ZERO,
        "transactionsRoot": B256::ZERO,
        "receiptsRoot": B256::ZERO,
        "size": "0x0",
        "transactions": b.tx.map(|h| vec![h]).unwrap_or_default(),
        "uncles": [],
    })
}

fn log_json(r: &Receipt, index: usize, l: &Log) -> Value {
    json!({
        "address": l.address,
        "topics": l.data.topics(),
        "data": l.data.data,
        "blockNumber": hex_u64(r.block),
        "blockHash": r.block_hash,
        "transactionHash": r.hash,
        "transactionIndex": "0x0",
        "logIndex": hex_u64(index as u64),
        "removed": false,
    })
}

fn block_number(chain: &Devnet, tag: Option<&BlockNumberOrTag>) -> u64 {
    match tag {
        Some(BlockNumberOrTag::Number(n)) => *n,
        Some(BlockNumberOrTag::Earliest) => 0,
        _ => chain.height(),
    }
}

fn receipt_json(chain: &Devnet, hash: &B256) -> Value {
    let Some(r) = chain.receipt(hash) else { return Value::Null };
    let logs: Vec<Value> = r.logs.iter().enumerate().map(|(i, l)| log_json(r, i, l)).collect();
    json!({
        "transactionHash": r.hash,
        "transactionIndex": "0x0",
        "blockHash": r.block_hash,
        "blockNumber": hex_u64(r.block),
        "from": r.from,
        "to": r.to,
        "cumulativeGasUsed": hex_u64(r.gas_used),
        "gasUsed": hex_u64(r.gas_used),
        "effectiveGasPrice": format!("{:#x}", r.gas_price),
        "contractAddress": r.contract,
        "logs": logs,
        "logsBloom": r.bloom(),
        "type": hex_u64(r.ty as u64),
        "status": if r.success { "0x1" } else { "0x0" },
    })
}

/// Answer one method call.
fn dispatch(chain: &Shared, method: &str, params: &[Value]) -> Result<Value, RpcError> {
    let mut chain = chain.lock().map_err(|_| RpcError::server("chain state poisoned by an earlier panic"))?;
    Ok(match method {
        "web3_clientVersion" => json!(concat!("vain-devnet/", env!("CARGO_PKG_VERSION"))),
        "net_version" => json!(CHAIN_ID.to_string()),
        "eth_chainId" => hex_u64(CHAIN_ID),
        "eth_syncing" => json!(false),
        "eth_accounts" => json!([]),
        "eth_blockNumber" => hex_u64(chain.height()),
        "eth_gasPrice" => json!(format!("{GAS_PRICE:#x}")),
        "eth_maxPriorityFeePerGas" => json!("0x0"),
        "eth_feeHistory" => {
            let count: U256 = param(params, 0, "block count")?;
            let count = count.saturating_to::<u64>().clamp(1, 1024).min(chain.height() + 1);
            let oldest = chain.height() + 1 - count;
            json!({
                "oldestBlock": hex_u64(oldest),
                "baseFeePerGas": vec!["0x0"; count as usize + 1],
                "gasUsedRatio": vec![0.0; count as usize],
                "reward": vec![vec!["0x0"; params.get(2).and_then(|p| p.as_array()).map_or(0, |a| a.len())]; count as usize],
            })
        }
        "eth_getBalance" => {
            let a: Address = param(params, 0, "address")?;
            latest_only(&chain, params, 1)?;
            json!(format!("{:#x}", chain.balance(a)))
        }
        "eth_getTransactionCount" => {
            let a: Address = param(params, 0, "address")?;
            latest_only(&chain, params, 1)?;
            hex_u64(chain.nonce(a))
        }
        "eth_getCode" => {
            let a: Address = param(params, 0, "address")?;
            latest_only(&chain, params, 1)?;
            json!(chain.code(a))
        }
        "eth_call" => {
            let c: CallObject = param(params, 0, "call")?;
            latest_only(&chain, params, 1)?;
            json!(chain.call(&c.into_call())?.0)
        }
        "eth_estimateGas" => {
            let c: CallObject = param(params, 0, "call")?;
            hex_u64(chain.estimate_gas(&c.into_call())?)
        }
        "eth_sendRawTransaction" => {
            let raw: Bytes = param(params, 0, "transaction")?;
            json!(chain.send_raw(&raw).map_err(RpcError::server)?)
        }
        "eth_getTransactionReceipt" => {
            let h: B256 = param(params, 0, "hash")?;
            receipt_json(&chain, &h)
        }
        "eth_getLogs" => {
            let f: Filter = param(params, 0, "filter")?;
            let (from, to) = match &f.block_option {
                FilterBlockOption::Range { from_block, to_block } => {
                    (block_number(&chain, from_block.as_ref()), block_number(&chain, to_block.as_ref()))
                }
                FilterBlockOption::AtBlockHash(h) => {
                    let n = (0..=chain.height())
                        .find(|n| chain.block(*n).is_some_and(|b| b.hash == *h))
                        .ok_or_else(|| RpcError::server(format!("unknown block {h}")))?;
                    (n, n)
                }
            };
            let logs = chain.logs(from, to, |l| f.matches(l)).map_err(RpcError::server)?;
            Value::Array(logs.into_iter().map(|(r, i, l)| log_json(r, i, l)).collect())
        }
        "eth_getBlockByNumber" => {
            let tag: String = param(params, 0, "block")?;
            let n = match tag.as_str() {
                "latest" | "pending" | "safe" | "finalized" => chain.height(),
                "earliest" => 0,
                s => u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| RpcError::params("block"))?,
            };
            block_json(&chain, n)
        }
        "evm_increaseTime" => {
            let secs: U256 = param(params, 0, "seconds")?;
            hex_u64(chain.increase_time(secs.saturating_to::<u64>()))
        }
        "evm_mine" => {
            chain.mine().map_err(RpcError::server)?;
            json!("0x0")
        }
        _ => return Err(RpcError { code: -32601, message: format!("method not found: {method}"), data: None }),
    })
}

fn answer(chain: &Shared, req: &Value) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "invalid request"}});
    };
    let params = match req.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "params must be an array"}});
        }
    };
    match dispatch(chain, method, &params) {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => {
            let mut error = json!({"code": e.code, "message": e.message});
            if let Some(d) = e.data {
                error["data"] = d;
            }
            json!({"jsonrpc": "2.0", "id": id, "error": error})
        }
    }
}

async fn handle(State(chain): State<Shared>, body: axum::body::Bytes) -> axum::Json<Value> {
    axum::Json(respond(&chain, &body))
}

/// The reply to a request body (one request or a batch), as the server sends it.
pub fn respond(chain: &Shared, body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Err(_) => json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
        Ok(Value::Array(batch)) if batch.is_empty() || batch.len() > MAX_BATCH => json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": -32600, "message": format!("a batch holds 1 to {MAX_BATCH} requests")}
        }),
        Ok(Value::Array(batch)) => Value::Array(batch.iter().map(|r| answer(chain, r)).collect()),
        Ok(req) => answer(chain, &req),
    }
}

/// The JSON-RPC router over `chain` (POST /).
pub fn router(chain: Shared) -> Router {
    Router::new().route("/", post(handle)).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(chain)
}

/// A JSON-RPC server running on its own thread.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The chain it serves.
    pub chain: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serve `chain` on `addr` (port 0 picks a free one) from a thread of its own.
    pub fn spawn(addr: SocketAddr, chain: Devnet) -> Result<Server, Error> {
        let listener = std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| Error::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        let chain: Shared = Arc::new(Mutex::new(chain));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(chain.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
        let thread = std::thread::Builder::new()
            .name("vain-devnet".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "embedded chain: listener");
                            return;
                        }
                    };
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "embedded chain: server stopped");
                    }
                });
            })
            .map_err(Error::Runtime)?;
        Ok(Server { addr, chain, stop: Some(stop), thread: Some(thread) })
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Shared {
        Arc::new(Mutex::new(Devnet::in_memory(&[Address::repeat_byte(1)], U256::from(5u64))))
    }

    fn call(c: &Shared, method: &str, params: Value) -> Value {
        respond(c, json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string().as_bytes())
    }

    #[test]
    fn answers_reads_and_names_every_mistake() {
        let c = chain();
        assert_eq!(call(&c, "eth_chainId", json!([]))["result"], "0x7661");
        assert_eq!(call(&c, "eth_blockNumber", json!([]))["result"], "0x0");
        assert_eq!(call(&c, "eth_getBalance", json!([Address::repeat_byte(1), "latest"]))["result"], "0x5");
        assert_eq!(call(&c, "eth_getBalance", json!([Address::repeat_byte(1), "0x0"]))["result"], "0x5");
        assert_eq!(call(&c, "eth_getBalance", json!([Address::repeat_byte(1), "0x9"]))["error"]["code"], -32000);
        assert_eq!(call(&c, "eth_getBalance", json!(["not an address"]))["error"]["code"], -32602);
        assert_eq!(call(&c, "eth_getBalance", json!([]))["error"]["code"], -32602);
        assert_eq!(call(&c, "eth_nothing", json!([]))["error"]["code"], -32601);
        assert_eq!(call(&c, "eth_chainId", json!({"a": 1}))["error"]["code"], -32602);
        assert_eq!(call(&c, "eth_getTransactionReceipt", json!([B256::ZERO]))["result"], Value::Null);
        assert_eq!(call(&c, "eth_getBlockByNumber", json!(["latest", false]))["result"]["number"], "0x0");
        assert_eq!(call(&c, "eth_getBlockByNumber", json!(["0x5", false]))["result"], Value::Null);
        // Garbage and odd shapes.
        assert_eq!(respond(&c, b"{nope")["error"]["code"], -32700);
        assert_eq!(respond(&c, b"[]")["error"]["code"], -32600);
        assert_eq!(respond(&c, b"{\"id\": 1}")["error"]["code"], -32600);
        let batch: Vec<Value> = (0..MAX_BATCH + 1).map(|i| json!({"id": i, "method": "eth_chainId"})).collect();
        assert_eq!(respond(&c, Value::Array(batch).to_string().as_bytes())["error"]["code"], -32600);
        let two = json!([{"id": 1, "method": "eth_chainId"}, {"id": 2, "method": "eth_blockNumber"}]);
        let r = respond(&c, two.to_string().as_bytes());
        assert_eq!((r[0]["id"].clone(), r[1]["result"].clone()), (json!(1), json!("0x0")));
    }

    #[test]
    fn refuses_bad_transactions_with_a_reason() {
        let c = chain();
        let e = call(&c, "eth_sendRawTransaction", json!(["0x02f8"]));
        assert_eq!(e["error"]["code"], -32000);
        assert!(e["error"]["message"].as_str().unwrap_or("").contains("invalid transaction"), "{e}");
        let big = format!("0x{}", "00".repeat(MAX_TX_BYTES + 1));
        let e = call(&c, "eth_sendRawTransaction", json!([big]));
        assert!(e["error"]["message"].as_str().unwrap_or("").contains("above the limit"), "{e}");
        // A call that reverts reports code 3 with the revert data, as geth does.
        let revert = Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xfd]); // PUSH 0 PUSH 0 REVERT
        let e = call(&c, "eth_call", json!([{"data": revert}]));
        assert_eq!(e["error"]["code"], 3, "{e}");
        assert_eq!(e["error"]["data"], "0x");
    }
}
