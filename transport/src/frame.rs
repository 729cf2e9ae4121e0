//! Incremental reader of one envelope frame (docs/protocol.md §3).
//!
//! Feed bytes with [`Decoder::push`] as they arrive; call [`Decoder::finish`] at end of stream.
//! Memory is bounded by the limits: the header buffer is allocated only after the preamble's
//! `header_len` passed `max_header_bytes`, the payload buffer only after `payload_len` passed
//! `max_payload_bytes` — and only then, so a peer that announces a large frame and stalls holds
//! no more than the preamble until it actually sends the header.

use crate::buf::{AlignedBuf, Pool};
use thiserror::Error;
use vain_schema::Limits;
use vain_schema::frame::{PREAMBLE_LEN, Preamble};

/// Why a frame was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The preamble failed its checks (magic, version, limits).
    #[error(transparent)]
    Preamble(#[from] vain_schema::Error),
    /// The stream ended before the frame was complete.
    #[error("stream ended in the {stage} after {have} of {need} bytes")]
    Truncated {
        /// Which part was being read.
        stage: &'static str,
        /// Bytes of that part received.
        have: u64,
        /// Bytes of that part expected.
        need: u64,
    },
    /// Bytes arrived after the payload; one frame per stream.
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The padding between header and payload is not zero.
    #[error("non-zero padding byte between header and payload")]
    Padding,
    /// The frame was already complete or failed.
    #[error("decoder already finished")]
    Finished,
}

/// A complete frame: the envelope bytes and the aligned payload.
#[derive(Debug)]
pub struct Frame {
    /// `DeltaEnvelope` flatbuffer bytes.
    pub header: Vec<u8>,
    /// Payload bytes, 64-byte aligned.
    pub payload: AlignedBuf,
}

#[derive(Debug)]
enum State {
    Preamble { buf: [u8; PREAMBLE_LEN], have: usize },
    Header { pre: Preamble, buf: Vec<u8> },
    Padding { pre: Preamble, header: Vec<u8>, left: usize },
    Payload { header: Vec<u8>, buf: Option<AlignedBuf>, need: usize, have: usize },
    Failed,
}

/// Reads one frame from a byte stream.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
    pool: Option<Pool>,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, state: State::Preamble { buf: [0; PREAMBLE_LEN], have: 0 }, pool: None }
    }

    /// A decoder that takes its payload buffer from `pool`.
    pub fn with_pool(limits: Limits, pool: Pool) -> Self {
        Self { pool: Some(pool), ..Self::new(limits) }
    }

    /// The payload length the preamble declared, once the preamble is in (it passed the
    /// limits), so a rate limiter can charge a stream before its payload arrives.
    pub fn declared_payload(&self) -> Option<u64> {
        match &self.state {
            State::Preamble { .. } | State::Failed => None,
            State::Header { pre, .. } | State::Padding { pre, .. } => Some(pre.payload_len),
            State::Payload { need, .. } => Some(*need as u64),
        }
    }

    /// Consumes `data`, all of it or fails. On error the decoder is finished.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            match self.step(data) {
                Ok(used) => data = &data[used..],
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Consumes a prefix of `data`, returns how many bytes it used (at least one).
    fn step(&mut self, data: &[u8]) -> Result<usize, Error> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (next, used) = match state {
            State::Preamble { mut buf, have } => {
                let n = (PREAMBLE_LEN - have).min(data.len());
                buf[have..have + n].copy_from_slice(&data[..n]);
                if have + n < PREAMBLE_LEN {
                    (State::Preamble { buf, have: have + n }, n)
                } else {
                    let pre = Preamble::parse(&buf, &self.limits)?;
                    (State::Header { pre, buf: Vec::with_capacity(pre.header_len as usize) }, n)
                }
            }
            State::Header { pre, mut buf } => {
                let n = (pre.header_len as usize - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..n]);
                if buf.len() < pre.header_len as usize {
                    (State::Header { pre, buf }, n)
                } else {
                    (State::Padding { pre, header: buf, left: pre.padding() }, n)
                }
            }
            State::Padding { pre, header, left } => {
                let n = left.min(data.len());
                if data[..n].iter().any(|&b| b != 0) {
                    return Err(Error::Padding);
                }
                if left > n {
                    (State::Padding { pre, header, left: left - n }, n)
                } else {
                    // `payload_len` passed the limit check in `Preamble::parse`; on 32-bit targets
                    // a limit above usize::MAX could still overflow, so convert checked.
                    let need = usize::try_from(pre.payload_len).map_err(|_| vain_schema::Error::TooLarge {
                        what: "frame payload",
                        len: pre.payload_len,
                        max: usize::MAX as u64,
                    })?;
                    (State::Payload { header, buf: None, need, have: 0 }, n)
                }
            }
            State::Payload { header, buf, need, have } => {
                if have == need {
                    return Err(Error::TrailingBytes { extra: data.len() });
                }
                let mut buf = buf.unwrap_or_else(|| match &self.pool {
                    Some(p) => p.take(need),
                    None => AlignedBuf::zeroed(need),
                });
                let n = (need - have).min(data.len());
                buf.as_mut_slice()[have..have + n].copy_from_slice(&data[..n]);
                (State::Payload { header, buf: Some(buf), need, have: have + n }, n)
            }
            State::Failed => return Err(Error::Finished),
        };
        self.state = next;
        Ok(used)
    }

    /// Ends the stream: returns the frame, or why it is incomplete.
    pub fn finish(mut self) -> Result<Frame, Error> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Preamble { have, .. } => {
                Err(Error::Truncated { stage: "preamble", have: have as u64, need: PREAMBLE_LEN as u64 })
            }
            State::Header { pre, buf } => {
                Err(Error::Truncated { stage: "header", have: buf.len() as u64, need: u64::from(pre.header_len) })
            }
            State::Padding { pre, left, .. } => Err(Error::Truncated {
                stage: "padding",
                have: (pre.padding() - left) as u64,
                need: pre.padding() as u64,
            }),
            State::Payload { header, buf, need, have } => {
                if have < need {
                    return Err(Error::Truncated { stage: "payload", have: have as u64, need: need as u64 });
                }
                Ok(Frame { header, payload: buf.unwrap_or_else(|| AlignedBuf::zeroed(0)) })
            }
            State::Failed => Err(Error::Finished),
        }
    }
}
