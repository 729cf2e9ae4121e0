//! The embedded chain's JSON-RPC: any request body (a request, a batch, a raw transaction in
//! eth_sendRawTransaction, a call, a log filter) gets a JSON-RPC answer, never a panic; and any
//! revert data decodes to a name.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vain_chain::devnet::Devnet;

fuzz_target!(|data: &[u8]| {
    let chain = Arc::new(Mutex::new(Devnet::in_memory(&[], Default::default())));
    let reply = vain_chain::rpc::respond(&chain, data);
    assert!(reply.is_object() || reply.is_array());
    // The same bytes as the parameter of the methods that decode untrusted input.
    let hex = format!("0x{}", data.iter().map(|b| format!("{b:02x}")).collect::<String>());
    for method in ["eth_sendRawTransaction", "eth_call", "eth_getLogs", "eth_estimateGas"] {
        let param = if method == "eth_sendRawTransaction" {
            serde_json::json!(hex)
        } else {
            serde_json::from_slice(data).unwrap_or(serde_json::json!({"data": hex}))
        };
        let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": [param]});
        let _ = vain_chain::rpc::respond(&chain, req.to_string().as_bytes());
    }
    let r = vain_chain::revert::decode(&data.to_vec().into());
    assert!(!r.name.is_empty());
});
