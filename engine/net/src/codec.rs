//! Our request-response framing: a u32 big-endian length, checked against the protocol's limit
//! before anything is allocated, then that many bytes (a signed flatbuffer of ours, or a list of
//! them). One request and one response per stream.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;

/// Length-prefixed byte messages, at most `max` bytes each way.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// Largest message accepted or sent.
    pub max: usize,
}

async fn read<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message of {len} bytes, limit {max}")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, msg: &[u8], max: usize) -> io::Result<()> {
    if msg.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "message over the protocol's limit"));
    }
    io.write_all(&(msg.len() as u32).to_be_bytes()).await?;
    io.write_all(msg).await?;
    io.close().await
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read(io, self.max).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read(io, self.max).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write(io, &req, self.max).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write(io, &res, self.max).await
    }
}

/// Several messages in one: each as u32 BE length ‖ bytes, at most `max_items`.
pub fn encode_list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_be_bytes());
        out.extend_from_slice(i);
    }
    out
}

/// The inverse of [`encode_list`]; `None` when the bytes are malformed or hold more than
/// `max_items`.
pub fn decode_list(mut b: &[u8], max_items: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if out.len() == max_items || b.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes(b[..4].try_into().ok()?) as usize;
        let item = b.get(4..4usize.checked_add(len)?)?;
        out.push(item);
        b = &b[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_malformed_ones_are_refused() {
        let items = vec![vec![1u8, 2, 3], vec![], vec![9; 300]];
        let b = encode_list(&items);
        let got = decode_list(&b, 8).expect("decodes");
        assert_eq!(got, items.iter().map(|v| v.as_slice()).collect::<Vec<_>>());
        assert!(decode_list(&b, 2).is_none(), "over max_items");
        assert!(decode_list(&b[..b.len() - 1], 8).is_none(), "truncated");
        assert!(decode_list(&[0, 0, 0], 8).is_none(), "short length");
        assert!(decode_list(&[255, 255, 255, 255, 0], 8).is_none(), "length past the end");
    }
}
