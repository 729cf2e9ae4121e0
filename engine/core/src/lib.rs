//! vAIn's protocol logic with no I/O, in the style of quinn-proto: inputs and `now` go in
//! ([`ledger::Ledger::handle`], [`ledger::Ledger::tick`]), decisions come out
//! ([`ledger::Ledger::poll`]). Nothing here reads a clock, a socket or a file, so the whole
//! protocol runs inside the deterministic [`sim`]ulator.
//!
//! * [`signed`]: signed messages (Ed25519 over a domain tag and the BLAKE3 of canonical bytes).
//! * [`reputation`]: decaying evidence per source and the score formula.
//! * [`trust`]: EigenTrust over signed local-trust edges with a pre-trusted set.
//! * [`tier`]: tiers with thresholds, hysteresis and a minimum time in tier.
//! * [`governance`]: proposals, tier/stake-weighted votes, quorum and > 2/3 commit, equivocation.
//! * [`challenge`]: resource challenges (matrix products checked with Freivalds' algorithm).
//! * [`audit`]: verifiable audit-team selection and majority verdicts.
//! * [`ledger`]: the state machine that joins them, with penalties, suspensions and bans;
//!   [`params`]: the parameters of it that governance may change.
//! * [`codec`], [`journal`], [`store`]: the ledger's crash-safe append-only journal (the one
//!   module with file I/O is `store`); recovery replays the committed entries.
//! * [`sim`]: virtual clock, N nodes, delay/loss/partitions, behaviours, scenarios, SVG.
//!
//! The formula, tiers, voting rules and their Byzantine assumptions are in docs/architecture.md.

pub mod audit;
pub mod challenge;
pub mod codec;
pub mod governance;
pub mod journal;
pub mod ledger;
pub mod params;
pub mod reputation;
pub mod signed;
pub mod sim;
pub use vain_storage as storage;
pub mod store;
pub mod tier;
pub mod trust;

/// A node's identity: its Ed25519 root public key.
pub type NodeId = [u8; 32];

/// Time in milliseconds (virtual in the simulator, Unix time in a node).
pub type Time = u64;

/// One hour in [`Time`] units.
pub const HOUR: Time = 3_600_000;
/// One day in [`Time`] units.
pub const DAY: Time = 24 * HOUR;
