/// Bounds applied to untrusted bytes before and during decoding.
///
/// The defaults suit an aggregator on a datacenter network; a node may lower them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest FlatBuffers header (envelope, announcement, …) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Deepest table nesting the verifier follows.
    pub max_depth: usize,
    /// Most tables the verifier visits in one buffer.
    pub max_tables: usize,
    /// Most tensors in one envelope.
    pub max_tensors: usize,
    /// Most dimensions of one tensor.
    pub max_rank: usize,
    /// Longest tensor name or model id, in bytes.
    pub max_name_len: usize,
    /// Largest payload as carried on the wire, in bytes.
    pub max_payload_bytes: u64,
    /// Largest payload after decompression, in bytes.
    pub max_decoded_bytes: u64,
    /// Most rotation certificates in one chain.
    pub max_chain_len: usize,
    /// Most addresses in one announcement.
    pub max_addresses: usize,
    /// Most GPUs claimed in one announcement.
    pub max_gpus: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 1 << 20,
            max_depth: 16,
            max_tables: 16_384,
            max_tensors: 4_096,
            max_rank: 8,
            max_name_len: 256,
            max_payload_bytes: 4 << 30,
            max_decoded_bytes: 4 << 30,
            max_chain_len: 64,
            max_addresses: 32,
            max_gpus: 64,
        }
    }
}
