//! Revert data made readable: the custom errors of every vAIn contract (and the OpenZeppelin
//! errors they inherit), `Error(string)` and `Panic(uint256)`, decoded by selector from the
//! committed ABIs.

use std::collections::HashMap;
use std::sync::OnceLock;

use alloy::dyn_abi::{DynSolValue, ErrorExt as _};
use alloy::json_abi::{Error as AbiError, JsonAbi};
use alloy::primitives::{Bytes, Selector};

use crate::contracts::ARTIFACTS;

/// A decoded revert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revert {
    /// The error's name (`RoundOutOfOrder`, `Error` for a require message, `Panic`), or
    /// `unknown` when the selector is none of the contracts'.
    pub name: String,
    /// Its arguments, rendered (`model=0x…`), or the raw data when unknown.
    pub args: Vec<String>,
}

impl std::fmt::Display for Revert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name, self.args.join(", "))
    }
}

fn errors() -> &'static HashMap<Selector, AbiError> {
    static ERRORS: OnceLock<HashMap<Selector, AbiError>> = OnceLock::new();
    ERRORS.get_or_init(|| {
        let mut all = HashMap::new();
        for (_, json) in ARTIFACTS {
            #[derive(serde::Deserialize)]
            struct Artifact {
                abi: JsonAbi,
            }
            // The artifacts are built into the binary and checked by the suite.
            if let Ok(a) = serde_json::from_str::<Artifact>(json) {
                for e in a.abi.errors() {
                    all.insert(e.selector(), e.clone());
                }
            }
        }
        all
    })
}

fn render(v: &DynSolValue) -> String {
    match v {
        DynSolValue::Address(a) => a.to_string(),
        DynSolValue::FixedBytes(w, n) => format!("0x{}", alloy::hex::encode(&w[..*n])),
        DynSolValue::Bytes(b) => format!("0x{}", alloy::hex::encode(b)),
        DynSolValue::Uint(u, _) => u.to_string(),
        DynSolValue::Int(i, _) => i.to_string(),
        DynSolValue::Bool(b) => b.to_string(),
        DynSolValue::String(s) => format!("{s:?}"),
        DynSolValue::Array(a) | DynSolValue::FixedArray(a) | DynSolValue::Tuple(a) => {
            format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// Decode revert `data`.
pub fn decode(data: &Bytes) -> Revert {
    if data.len() >= 4 {
        let sel = Selector::from_slice(&data[..4]);
        if let Ok(msg) = <alloy::sol_types::Revert as alloy::sol_types::SolError>::abi_decode(data) {
            return Revert { name: "Error".into(), args: vec![format!("{:?}", msg.reason)] };
        }
        if let Ok(p) = <alloy::sol_types::Panic as alloy::sol_types::SolError>::abi_decode(data) {
            return Revert { name: "Panic".into(), args: vec![format!("{:#x}", p.code)] };
        }
        if let Some(e) = errors().get(&sel)
            && let Ok(decoded) = e.decode_error(data)
        {
            let args = e
                .inputs
                .iter()
                .zip(decoded.body.iter())
                .map(|(p, v)| if p.name.is_empty() { render(v) } else { format!("{}={}", p.name, render(v)) })
                .collect();
            return Revert { name: e.name.clone(), args };
        }
    }
    Revert { name: "unknown".into(), args: vec![format!("0x{}", alloy::hex::encode(data))] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolError;

    #[test]
    fn custom_errors_are_named_with_their_arguments() {
        let e = crate::contracts::ReputationAnchor::RoundOutOfOrder {
            model: alloy::primitives::B256::repeat_byte(1),
            round: 3,
            next: 5,
        };
        let r = decode(&Bytes::from(e.abi_encode()));
        assert_eq!(r.name, "RoundOutOfOrder");
        assert_eq!(r.args[1..], ["round=3".to_string(), "next=5".to_string()]);
        assert!(r.args[0].starts_with("model=0x0101"));
    }

    #[test]
    fn require_messages_panics_and_unknown_data() {
        let msg = alloy::sol_types::Revert::from("no");
        assert_eq!(decode(&Bytes::from(msg.abi_encode())).to_string(), "Error(\"no\")");
        let p = alloy::sol_types::Panic::from(alloy::sol_types::PanicKind::Assert);
        assert_eq!(decode(&Bytes::from(p.abi_encode())).to_string(), "Panic(0x1)");
        assert_eq!(decode(&Bytes::from(vec![1, 2])).to_string(), "unknown(0x0102)");
        assert_eq!(decode(&Bytes::from(vec![0xde, 0xad, 0xbe, 0xef, 9])).name, "unknown");
    }

    #[test]
    fn inherited_openzeppelin_errors_decode() {
        // OwnableUnauthorizedAccount(address) is in the ABI of every Ownable contract.
        let mut data = alloy::primitives::keccak256("OwnableUnauthorizedAccount(address)")[..4].to_vec();
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(&[0x11; 20]);
        let r = decode(&Bytes::from(data));
        assert_eq!(r.name, "OwnableUnauthorizedAccount");
    }
}
