//! How one envelope travels on a QUIC unidirectional stream.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "vAIn" (76 41 49 6e)
//!      4     2  frame version, u16 LE = 1
//!      6     2  flags, u16 LE, must be 0
//!      8     4  header_len, u32 LE: bytes of the DeltaEnvelope flatbuffer
//!     12     4  reserved, must be 0
//!     16     8  payload_len, u64 LE: bytes of the payload (equals the header's payload_len)
//!     24     h  DeltaEnvelope flatbuffer (h = header_len)
//!   24+h     p  zero padding so the payload starts at a multiple of 64 bytes from offset 0
//! 24+h+p     n  payload (n = payload_len); the stream ends right after it
//! ```
//!
//! The preamble's two lengths are checked against [`Limits`] before the receiver allocates
//! anything, and the payload can be read straight into a 64-byte aligned buffer.

use crate::{Error, Limits};

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"vAIn";
/// Frame layout version.
pub const FRAME_VERSION: u16 = 1;
/// Fixed preamble size.
pub const PREAMBLE_LEN: usize = 24;
/// The payload starts at a multiple of this from the start of the frame.
pub const PAYLOAD_ALIGN: usize = 64;

/// The fixed-size start of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Length of the envelope flatbuffer.
    pub header_len: u32,
    /// Length of the payload.
    pub payload_len: u64,
}

impl Preamble {
    /// Serialises the preamble.
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.header_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Parses and bounds-checks a preamble.
    pub fn parse(b: &[u8; PREAMBLE_LEN], limits: &Limits) -> Result<Self, Error> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if b[0..4] != MAGIC {
            return Err(Error::invalid("frame.magic", format!("{:02x?} is not \"vAIn\"", &b[0..4])));
        }
        let version = u16_at(4);
        if version != FRAME_VERSION {
            return Err(Error::UnsupportedVersion { what: "frame", found: version, expected: FRAME_VERSION });
        }
        if u16_at(6) != 0 {
            return Err(Error::invalid("frame.flags", "reserved bits set"));
        }
        if u32_at(12) != 0 {
            return Err(Error::invalid("frame.reserved", "must be zero"));
        }
        let header_len = u32_at(8);
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[16..24]);
        let payload_len = u64::from_le_bytes(p);
        if header_len == 0 {
            return Err(Error::invalid("frame.header_len", "zero"));
        }
        if header_len as usize > limits.max_header_bytes {
            return Err(Error::TooLarge {
                what: "frame header",
                len: u64::from(header_len),
                max: limits.max_header_bytes as u64,
            });
        }
        if payload_len > limits.max_payload_bytes {
            return Err(Error::TooLarge { what: "frame payload", len: payload_len, max: limits.max_payload_bytes });
        }
        Ok(Self { header_len, payload_len })
    }

    /// Zero bytes between the header and the payload.
    pub fn padding(&self) -> usize {
        let end = PREAMBLE_LEN + self.header_len as usize;
        end.next_multiple_of(PAYLOAD_ALIGN) - end
    }

    /// Offset of the payload from the start of the frame.
    pub fn payload_offset(&self) -> usize {
        PREAMBLE_LEN + self.header_len as usize + self.padding()
    }
}

/// Writes a whole frame into one buffer (for tools and tests; senders normally write the parts).
pub fn encode(envelope: &[u8], payload: &[u8]) -> Result<Vec<u8>, Error> {
    let header_len = u32::try_from(envelope.len()).map_err(|_| Error::TooLarge {
        what: "frame header",
        len: envelope.len() as u64,
        max: u64::from(u32::MAX),
    })?;
    let pre = Preamble { header_len, payload_len: payload.len() as u64 };
    let mut out = Vec::with_capacity(pre.payload_offset() + payload.len());
    out.extend_from_slice(&pre.encode());
    out.extend_from_slice(envelope);
    out.resize(pre.payload_offset(), 0);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits a complete frame held in memory into (envelope bytes, payload), checking every length
/// and that the padding is zero.
pub fn split<'a>(frame: &'a [u8], limits: &Limits) -> Result<(&'a [u8], &'a [u8]), Error> {
    let pre_bytes: &[u8; PREAMBLE_LEN] = frame
        .get(..PREAMBLE_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Truncated { what: "frame preamble", need: PREAMBLE_LEN as u64, have: frame.len() as u64 })?;
    let pre = Preamble::parse(pre_bytes, limits)?;
    let hdr_end = PREAMBLE_LEN + pre.header_len as usize;
    let off = pre.payload_offset();
    let total = (off as u64).saturating_add(pre.payload_len);
    if (frame.len() as u64) < total {
        return Err(Error::Truncated { what: "frame", need: total, have: frame.len() as u64 });
    }
    if (frame.len() as u64) > total {
        return Err(Error::invalid(
            "frame",
            format!("{} trailing bytes after the payload", frame.len() as u64 - total),
        ));
    }
    if frame[hdr_end..off].iter().any(|&b| b != 0) {
        return Err(Error::invalid("frame.padding", "must be zero"));
    }
    Ok((&frame[PREAMBLE_LEN..hdr_end], &frame[off..]))
}
