use thiserror::Error;

/// Why a message was rejected. Variants name the field at fault; every one of them is the
/// sender's fault unless stated otherwise.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A length exceeds the configured limit; nothing was allocated for it.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Declared or actual length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// The buffer ended before the structure it declares.
    #[error("{what} is truncated: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes required.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// The FlatBuffers verifier refused the buffer (bad offsets, nesting too deep, too many tables, …).
    #[error("{what} is not a valid flatbuffer: {source}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// The verifier's finding.
        #[source]
        source: flatbuffers::InvalidFlatbuffer,
    },
    /// A message of a format version this build does not speak.
    #[error("{what} has format version {found}, this build speaks {expected}")]
    UnsupportedVersion {
        /// Which message.
        what: &'static str,
        /// Version in the message.
        found: u16,
        /// Version this build speaks.
        expected: u16,
    },
    /// An enum field holds a value outside the schema.
    #[error("{field} holds unknown value {value}")]
    UnknownEnum {
        /// Field path, such as `encoding.kind`.
        field: String,
        /// The raw value.
        value: u64,
    },
    /// A field holds a value the protocol forbids.
    #[error("{field} is invalid: {reason}")]
    InvalidField {
        /// Field path, such as `tensors[3].offset`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A public key that is not a valid Ed25519 point.
    #[error("{field} is not a valid Ed25519 public key")]
    BadPublicKey {
        /// Field path.
        field: String,
    },
    /// The signature does not verify under the key the message names.
    #[error("signature on {what} does not verify")]
    BadSignature {
        /// Which message.
        what: &'static str,
    },
    /// The payload's BLAKE3 digest differs from the one the signed header commits to.
    #[error("payload digest does not match the header")]
    PayloadDigest,
    /// The payload's length differs from the one the signed header commits to.
    #[error("payload is {actual} bytes but the header declares {declared}")]
    PayloadLength {
        /// Length in the header.
        declared: u64,
        /// Length received.
        actual: u64,
    },
    /// The (sender, round, nonce) triple was seen before.
    #[error("replayed envelope: nonce already used by this sender in round {round}")]
    Replay {
        /// The round of the replayed envelope.
        round: u64,
    },
    /// The round is outside the window the receiver tracks.
    #[error("round {round} is outside the accepted window {oldest}..={newest}")]
    StaleRound {
        /// Round of the envelope.
        round: u64,
        /// Oldest round accepted.
        oldest: u64,
        /// Newest round accepted.
        newest: u64,
    },
    /// The receiver's replay table is full for this round (a local bound, not the sender's fault
    /// unless the sender floods).
    #[error("replay table for round {round} is full ({capacity} entries)")]
    ReplayTableFull {
        /// The round.
        round: u64,
        /// Entries allowed per round.
        capacity: usize,
    },
    /// The rotation chain's last key is past its validity window.
    #[error("rotation chain expired at {not_after_ms} ms (now {now_ms} ms)")]
    RotationExpired {
        /// End of the current key's window.
        not_after_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The rotation chain's last key is not valid yet.
    #[error("rotation certificate {sequence} is not valid before {not_before_ms} ms (now {now_ms} ms)")]
    RotationNotYetValid {
        /// Position of the certificate.
        sequence: u32,
        /// Start of its window.
        not_before_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// Two chains from the same root name different successors for the same key.
    #[error("rotation chains fork at certificate {sequence}")]
    RotationFork {
        /// First position where the chains differ.
        sequence: u32,
    },
    /// A persisted file failed its checksum or its archive validation.
    #[error("persisted {what} is corrupt: {reason}")]
    Corrupt {
        /// Which file kind.
        what: &'static str,
        /// What failed.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField { field: field.into(), reason: reason.into() }
    }
}
