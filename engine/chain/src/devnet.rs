//! The embedded chain: an in-process EVM (revm) that mines every transaction into a block of
//! its own, the way a development node does, and journals each one so a restart replays to the
//! same state. [`crate::rpc`] serves it over Ethereum JSON-RPC, so the node, `vain chain` and
//! any Ethereum tool talk to it exactly as to a real chain.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use alloy::consensus::transaction::SignerRecoverable;
use alloy::consensus::{Transaction as _, TxEnvelope};
use alloy::eips::{Decodable2718, Typed2718};
use alloy::primitives::{Address, B256, Bloom, Bytes, Log, TxKind, U256, keccak256, logs_bloom};
use revm::context::result::{ExecutionResult, Output};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::database::InMemoryDB;
use revm::primitives::hardfork::SpecId;
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};

use crate::Error;

/// Chain id of the embedded chain ("va" in ASCII): distinct from public chains and from anvil's
/// 31337, so a transaction signed for one is refused by the others.
pub const CHAIN_ID: u64 = 0x7661;
/// Gas limit of every block.
pub const BLOCK_GAS_LIMIT: u64 = 30_000_000;
/// The gas price the chain asks (1 gwei); the base fee is zero.
pub const GAS_PRICE: u128 = 1_000_000_000;
/// Largest transaction the chain takes, in bytes (a deployment of the largest contract is
/// about 20 KiB; 128 KiB is the geth default).
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Largest journal record read back: a length above this is a torn or foreign file.
const MAX_RECORD: u32 = MAX_TX_BYTES as u32 + 16;
/// Most blocks one log query may span.
pub const MAX_LOG_BLOCKS: u64 = 10_000;
/// Journal magic: a different file in its place is refused rather than replayed.
const MAGIC: &[u8; 8] = b"vAInEVM1";

/// A mined block: one transaction, or none for a block mined on request.
#[derive(Clone, Debug)]
pub struct Block {
    /// Height (genesis is 0).
    pub number: u64,
    /// The block's hash (keccak of its number, parent and transaction: the chain is a
    /// development chain, there is no header to hash).
    pub hash: B256,
    /// Hash of the previous block.
    pub parent: B256,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    /// Its transaction, if any.
    pub tx: Option<B256>,
    /// Gas its transaction used.
    pub gas_used: u64,
}

/// The outcome of a mined transaction.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// Transaction hash.
    pub hash: B256,
    /// Block it was mined in.
    pub block: u64,
    /// Hash of that block.
    pub block_hash: B256,
    /// Signer.
    pub from: Address,
    /// Callee (`None` for a deployment).
    pub to: Option<Address>,
    /// Address of the deployed contract.
    pub contract: Option<Address>,
    /// Whether it succeeded.
    pub success: bool,
    /// Gas used after refunds.
    pub gas_used: u64,
    /// Price paid per gas.
    pub gas_price: u128,
    /// Logs (none when it reverted).
    pub logs: Vec<Log>,
    /// The revert data, when it reverted.
    pub revert: Option<Bytes>,
    /// EIP-2718 type of the transaction.
    pub ty: u8,
}

impl Receipt {
    /// The bloom filter of its logs.
    pub fn bloom(&self) -> Bloom {
        logs_bloom(self.logs.iter())
    }
}

/// A call that did not succeed, as JSON-RPC reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The contract reverted; the data is its error (ABI-encoded).
    Reverted(Bytes),
    /// The EVM halted (out of gas, invalid opcode, …).
    Halted(String),
    /// The transaction itself is invalid (nonce, funds, gas limit, chain id).
    Invalid(String),
}

/// A call to run without committing (eth_call, eth_estimateGas).
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// Caller (zero when not given).
    pub from: Option<Address>,
    /// Callee; `None` deploys `data`.
    pub to: Option<Address>,
    /// Input.
    pub data: Bytes,
    /// Value sent.
    pub value: U256,
    /// Gas limit (the block's when not given).
    pub gas: Option<u64>,
}

/// The embedded chain's state.
pub struct Devnet {
    db: InMemoryDB,
    blocks: Vec<Block>,
    receipts: HashMap<B256, Receipt>,
    /// Seconds added to the wall clock (`evm_increaseTime`).
    offset: u64,
    journal: Option<File>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet").field("height", &self.height()).field("journal", &self.path).finish()
    }
}

/// A journal record: its offset, the block's timestamp and the raw transaction (empty for an
/// empty block).
pub type Record<'a> = (usize, u64, &'a [u8]);

/// A journal's records and the length of its whole records (a torn tail lies beyond); `None`
/// when the magic is wrong.
pub fn parse_journal(bytes: &[u8]) -> Option<(Vec<Record<'_>>, usize)> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    while bytes.len() - at >= 12 {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[at + 4..at + 12]);
        if len > MAX_RECORD || bytes.len() - at - 12 < len as usize {
            break;
        }
        records.push((at, u64::from_le_bytes(ts), &bytes[at + 12..at + 12 + len as usize]));
        at += 12 + len as usize;
    }
    Some((records, at))
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadTransaction { reason: reason.into() }
}

fn unix_now() -> u64 {
    vain_schema::clock::unix_ms() / 1000
}

impl Devnet {
    /// A chain that lives in memory only, with `funded` accounts holding `balance` wei each.
    pub fn in_memory(funded: &[Address], balance: U256) -> Self {
        let mut chain = Devnet {
            db: InMemoryDB::default(),
            blocks: Vec::new(),
            receipts: HashMap::new(),
            offset: 0,
            journal: None,
            path: None,
        };
        for a in funded {
            chain.db.insert_account_info(*a, AccountInfo { balance, ..Default::default() });
        }
        let genesis = Block {
            number: 0,
            hash: keccak256(b"vAIn devnet genesis"),
            parent: B256::ZERO,
            timestamp: unix_now(),
            tx: None,
            gas_used: 0,
        };
        chain.blocks.push(genesis);
        chain
    }

    /// A chain journaled in `path`: replays every transaction the file holds (at the time it
    /// was mined), then appends each new one, fsynced before it is acknowledged. A torn last
    /// record — a crash while writing it — is cut off; the transaction it held was never
    /// acknowledged.
    pub fn open(path: &Path, funded: &[Address], balance: U256) -> Result<Self, Error> {
        let mut chain = Self::in_memory(funded, balance);
        let io = |source| Error::Journal { path: path.to_owned(), source };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
        } else {
            let (records, good) = parse_journal(&bytes).ok_or_else(|| Error::NotAJournal { path: path.to_owned() })?;
            for (offset, ts, raw) in records {
                if raw.is_empty() {
                    chain.mine_empty(ts);
                } else {
                    chain.apply_raw(raw, ts).map_err(|e| Error::Replay {
                        path: path.to_owned(),
                        offset,
                        source: Box::new(e),
                    })?;
                }
            }
            if good < bytes.len() {
                tracing::warn!(path = %path.display(), kept = good, dropped = bytes.len() - good, "chain journal: cut a torn last record");
                file.set_len(good as u64).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
        }
        chain.journal = Some(file);
        chain.path = Some(path.to_owned());
        Ok(chain)
    }

    /// The latest block's number.
    pub fn height(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }

    /// Block `n`, if mined.
    pub fn block(&self, n: u64) -> Option<&Block> {
        self.blocks.get(usize::try_from(n).ok()?)
    }

    /// A receipt by transaction hash.
    pub fn receipt(&self, hash: &B256) -> Option<&Receipt> {
        self.receipts.get(hash)
    }

    /// The account's balance.
    pub fn balance(&self, a: Address) -> U256 {
        self.db.cache.accounts.get(&a).map(|acc| acc.info.balance).unwrap_or_default()
    }

    /// The account's next nonce.
    pub fn nonce(&self, a: Address) -> u64 {
        self.db.cache.accounts.get(&a).map(|acc| acc.info.nonce).unwrap_or(0)
    }

    /// The code at an address (empty for none).
    pub fn code(&self, a: Address) -> Bytes {
        self.db
            .cache
            .accounts
            .get(&a)
            .and_then(|acc| self.db.cache.contracts.get(&acc.info.code_hash))
            .map(|c| c.original_bytes())
            .unwrap_or_default()
    }

    /// Timestamp the next block gets: the wall clock plus the offset, and always after the
    /// latest block.
    fn next_timestamp(&self) -> u64 {
        let last = self.blocks.last().map(|b| b.timestamp).unwrap_or(0);
        (unix_now() + self.offset).max(last + 1)
    }

    /// Move the chain's clock `secs` past its present time — the later of the wall clock (plus
    /// earlier moves) and the latest block, which runs ahead of the wall clock when many
    /// transactions come in one second (anvil's `evm_increaseTime`); returns the total offset.
    pub fn increase_time(&mut self, secs: u64) -> u64 {
        let now = unix_now();
        let present = self.next_timestamp() - 1;
        self.offset = (present + secs).saturating_sub(now);
        self.offset
    }

    /// Logs of blocks `from..=to` (at most [`MAX_LOG_BLOCKS`] blocks) that `keep` accepts, with
    /// their receipt and index in it.
    pub fn logs(&self, from: u64, to: u64, keep: impl Fn(&Log) -> bool) -> Result<Vec<(&Receipt, usize, &Log)>, Error> {
        let to = to.min(self.height());
        if to >= from && to - from >= MAX_LOG_BLOCKS {
            return Err(Error::Argument { what: "a log query over more than 10,000 blocks" });
        }
        let mut out = Vec::new();
        for n in from..=to {
            let Some(r) = self.block(n).and_then(|b| b.tx).and_then(|h| self.receipts.get(&h)) else { continue };
            for (i, l) in r.logs.iter().enumerate() {
                if keep(l) {
                    out.push((r, i, l));
                }
            }
        }
        Ok(out)
    }

    fn block_env(&self, number: u64, timestamp: u64) -> BlockEnv {
        BlockEnv {
            number: U256::from(number),
            timestamp: U256::from(timestamp),
            gas_limit: BLOCK_GAS_LIMIT,
            basefee: 0,
            difficulty: U256::ZERO,
            prevrandao: Some(keccak256(number.to_be_bytes())),
            ..Default::default()
        }
    }

    fn cfg(&self) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(SpecId::CANCUN);
        cfg.chain_id = CHAIN_ID;
        cfg
    }

    /// Run `call` against the latest state without committing it: its output, or why it failed.
    pub fn call(&self, call: &Call) -> Result<(Bytes, u64), CallError> {
        let caller = call.from.unwrap_or_default();
        let tx = TxEnv::builder()
            .caller(caller)
            .kind(call.to.map_or(TxKind::Create, TxKind::Call))
            .data(call.data.clone())
            .value(call.value)
            .gas_limit(call.gas.unwrap_or(BLOCK_GAS_LIMIT).min(BLOCK_GAS_LIMIT))
            .gas_price(0)
            .nonce(self.nonce(caller))
            .chain_id(Some(CHAIN_ID))
            .build()
            .map_err(|e| CallError::Invalid(format!("{e:?}")))?;
        let cfg = self.cfg();
        // A view runs on a copy: nothing it writes may reach the chain.
        let mut db = self.db.clone();
        let mut evm = Context::mainnet()
            .with_db(&mut db)
            .with_cfg(cfg)
            .with_block(self.block_env(self.height() + 1, self.next_timestamp()))
            .build_mainnet();
        let result = evm.transact(tx).map_err(|e| CallError::Invalid(format!("{e}")))?.result;
        match result {
            ExecutionResult::Success { output, gas, .. } => {
                let bytes = match output {
                    Output::Call(b) => b,
                    Output::Create(b, _) => b,
                };
                Ok((bytes, gas.total_gas_spent()))
            }
            ExecutionResult::Revert { output, .. } => Err(CallError::Reverted(output)),
            ExecutionResult::Halt { reason, .. } => Err(CallError::Halted(format!("{reason:?}"))),
        }
    }

    /// Gas to give `call` so that it succeeds: what it spent before refunds, with a margin for
    /// the 63/64 rule of nested calls.
    pub fn estimate_gas(&self, call: &Call) -> Result<u64, CallError> {
        let (_, spent) = self.call(call)?;
        Ok((spent + spent / 4 + 10_000).min(BLOCK_GAS_LIMIT))
    }

    /// Take a signed transaction (EIP-2718 bytes), mine it into a new block and journal it.
    /// A transaction that reverts is mined (and journaled) with a failed receipt, as on
    /// Ethereum; one that is invalid (bad signature, nonce, chain id, funds) is refused.
    pub fn send_raw(&mut self, raw: &[u8]) -> Result<B256, Error> {
        if raw.len() > MAX_TX_BYTES {
            return Err(Error::TxTooLarge { len: raw.len(), max: MAX_TX_BYTES });
        }
        let ts = self.next_timestamp();
        let hash = self.apply_raw(raw, ts)?;
        self.append(raw, ts)?;
        Ok(hash)
    }

    /// Mine an empty block (anvil's `evm_mine`).
    pub fn mine(&mut self) -> Result<u64, Error> {
        let ts = self.next_timestamp();
        self.mine_empty(ts);
        self.append(&[], ts)?;
        Ok(self.height())
    }

    fn mine_empty(&mut self, timestamp: u64) {
        let parent = self.blocks.last().map(|b| b.hash).unwrap_or_default();
        let number = self.height() + 1;
        let hash = keccak256([parent.as_slice(), &number.to_be_bytes()].concat());
        self.blocks.push(Block { number, hash, parent, timestamp, tx: None, gas_used: 0 });
    }

    fn append(&mut self, raw: &[u8], ts: u64) -> Result<(), Error> {
        let Some(file) = self.journal.as_mut() else { return Ok(()) };
        let path = self.path.clone().unwrap_or_default();
        let io = |source| Error::Journal { path: path.clone(), source };
        let mut rec = Vec::with_capacity(12 + raw.len());
        rec.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        rec.extend_from_slice(&ts.to_le_bytes());
        rec.extend_from_slice(raw);
        file.write_all(&rec).map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// Apply a journaled record as a replay does (no journal write): for tools and fuzzing.
    pub fn replay_record(&mut self, raw: &[u8], timestamp: u64) -> Result<(), Error> {
        if raw.is_empty() {
            self.mine_empty(timestamp);
            Ok(())
        } else {
            self.apply_raw(raw, timestamp).map(|_| ())
        }
    }

    fn apply_raw(&mut self, raw: &[u8], timestamp: u64) -> Result<B256, Error> {
        let tx = TxEnvelope::decode_2718_exact(raw).map_err(|e| bad(e.to_string()))?;
        if tx.is_eip4844() {
            return Err(bad("blob transactions are not supported"));
        }
        let from = tx.recover_signer().map_err(|e| bad(e.to_string()))?;
        let hash = *tx.tx_hash();
        if self.receipts.contains_key(&hash) {
            return Err(bad(format!("transaction {hash} is known already")));
        }
        match tx.chain_id() {
            Some(id) if id == CHAIN_ID => {}
            other => return Err(Error::WrongChain { expected: CHAIN_ID, got: other }),
        }
        let expected = self.nonce(from);
        if tx.nonce() != expected {
            return Err(Error::BadNonce { account: from, expected, got: tx.nonce() });
        }
        let gas_price = tx.effective_gas_price(Some(0));
        let env = TxEnv::builder()
            .tx_type(Some(tx.ty()))
            .caller(from)
            .kind(tx.kind())
            .data(tx.input().clone())
            .value(tx.value())
            .gas_limit(tx.gas_limit())
            .gas_price(tx.max_fee_per_gas())
            .gas_priority_fee(tx.max_priority_fee_per_gas())
            .nonce(tx.nonce())
            .chain_id(Some(CHAIN_ID))
            .access_list(tx.access_list().cloned().unwrap_or_default())
            .build()
            .map_err(|e| bad(format!("{e:?}")))?;
        let number = self.height() + 1;
        let block_env = self.block_env(number, timestamp);
        let cfg = self.cfg();
        let mut evm = Context::mainnet().with_db(&mut self.db).with_cfg(cfg).with_block(block_env).build_mainnet();
        let result = evm.transact_commit(env).map_err(|e| bad(e.to_string()))?;
        let gas_used = result.tx_gas_used();
        let (success, logs, revert, contract) = match result {
            ExecutionResult::Success { logs, output, .. } => {
                let contract = match output {
                    Output::Create(_, addr) => addr,
                    Output::Call(_) => None,
                };
                (true, logs, None, contract)
            }
            ExecutionResult::Revert { output, .. } => (false, Vec::new(), Some(output), None),
            ExecutionResult::Halt { .. } => (false, Vec::new(), None, None),
        };
        let parent = self.blocks.last().map(|b| b.hash).unwrap_or_default();
        let block_hash = keccak256([parent.as_slice(), &number.to_be_bytes(), hash.as_slice()].concat());
        self.blocks.push(Block { number, hash: block_hash, parent, timestamp, tx: Some(hash), gas_used });
        self.receipts.insert(
            hash,
            Receipt {
                hash,
                block: number,
                block_hash,
                from,
                to: tx.to(),
                contract,
                success,
                gas_used,
                gas_price,
                logs,
                revert,
                ty: tx.ty(),
            },
        );
        Ok(hash)
    }
}
