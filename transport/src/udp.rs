//! The UDP socket work glommio does not offer (Linux only, as glommio is): receive offload
//! (UDP_GRO: the kernel hands over up to 64 KiB of same-sized datagrams from one sender in one
//! `recvmsg`), segmentation offload on send (UDP_SEGMENT), and a classic BPF program on the
//! SO_REUSEPORT group that routes short-header QUIC packets to the shard named in the first byte
//! of their connection ID. glommio's io_uring operations carry no control messages, so datagrams
//! move with `recvmsg`/`sendmsg` on the shard's own thread; the shard waits for readability on
//! io_uring (docs/transport-design.md).

#![allow(unsafe_code)]

use bytes::BytesMut;
use socket2::{MaybeUninitSlice, MsgHdr, MsgHdrMut, SockAddr, Socket};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

const SOL_UDP: i32 = 17;
const UDP_SEGMENT: i32 = 103;
const UDP_GRO: i32 = 104;
/// Largest buffer one GRO receive fills (the kernel caps coalescing at 64 KiB).
pub(crate) const MAX_GRO: usize = 65_536;
/// A `cmsghdr` on 64-bit Linux: `cmsg_len: usize`, `cmsg_level: i32`, `cmsg_type: i32`.
const CMSG_HDR: usize = 16;

fn setsockopt_int(sock: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed; the fd is a valid socket
    // borrowed from `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Turns on receive offload (Linux ≥ 5.0).
pub(crate) fn enable_gro(sock: &Socket) -> io::Result<()> {
    setsockopt_int(sock, SOL_UDP, UDP_GRO, 1)
}

/// Installs, on the SO_REUSEPORT group `sock` belongs to, a program that sends a short-header
/// QUIC packet (first bit 0) to socket `dcid[0] % shards` of the group — the sockets in bind
/// order — and leaves every long-header packet to the kernel's 4-tuple hash (an index out of
/// range falls back to it), which keeps a handshake on one socket.
pub(crate) fn attach_shard_router(sock: &Socket, shards: u32) -> io::Result<()> {
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const MOD_K: u16 = 0x94; // BPF_ALU | BPF_MOD | BPF_K
    const RET_A: u16 = 0x16; // BPF_RET | BPF_A
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // The program sees the UDP payload at offset 0. Jumps count from the next instruction:
    // a long header (bit 0x80 set) skips to the last one.
    let mut prog = [
        ins(LD_B_ABS, 0, 0, 0),
        ins(JSET_K, 3, 0, 0x80),
        ins(LD_B_ABS, 0, 0, 1),
        ins(MOD_K, 0, 0, shards.max(1)),
        ins(RET_A, 0, 0, 0),
        ins(RET_K, 0, 0, u32::MAX),
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: `fprog` points at `prog`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// CPU time the calling thread has used, in nanoseconds.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// One receive: what arrived, from whom, and the segment size when the kernel coalesced
/// several datagrams (each `stride` bytes, the last possibly shorter).
pub(crate) struct Received {
    pub(crate) data: BytesMut,
    pub(crate) from: SocketAddr,
    pub(crate) stride: Option<usize>,
}

/// Receives into `arena`'s spare capacity without blocking (MSG_DONTWAIT: the socket itself
/// stays blocking, which glommio's io_uring operations on it need in order to wait); `None` when nothing is queued.
/// The returned bytes are split off the arena (no copy; the arena's allocation is reused once
/// every datagram cut from it is dropped).
pub(crate) fn recv(sock: &Socket, arena: &mut BytesMut, family: &SockAddr) -> io::Result<Option<Received>> {
    if arena.capacity() - arena.len() < MAX_GRO {
        arena.reserve(MAX_GRO * 16);
    }
    let mut addr = family.clone();
    let mut control = [MaybeUninit::<u8>::uninit(); 64];
    let n;
    let control_len;
    {
        let spare = &mut arena.spare_capacity_mut()[..MAX_GRO];
        let mut bufs = [MaybeUninitSlice::new(spare)];
        let mut msg = MsgHdrMut::new().with_addr(&mut addr).with_buffers(&mut bufs).with_control(&mut control);
        n = match sock.recvmsg(&mut msg, libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e),
        };
        control_len = msg.control_len();
    }
    // SAFETY: `recvmsg` initialised the first `n` bytes of the spare capacity (n ≤ MAX_GRO,
    // which the spare capacity holds).
    unsafe { arena.set_len(arena.len() + n) };
    let data = arena.split_to(arena.len());
    let from = addr.as_socket().ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
    // SAFETY: the kernel wrote `control_len` bytes of control messages at the buffer's start.
    let control: &[u8] =
        unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), control_len.min(control.len())) };
    Ok(Some(Received { data, from, stride: gro_segment(control) }))
}

/// The UDP_GRO segment size among control messages, parsed by hand (64-bit Linux layout).
fn gro_segment(mut control: &[u8]) -> Option<usize> {
    while control.len() >= CMSG_HDR {
        let len = usize::from_ne_bytes(control[..8].try_into().ok()?);
        let level = i32::from_ne_bytes(control[8..12].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[12..16].try_into().ok()?);
        if len < CMSG_HDR || len > control.len() {
            return None;
        }
        if level == SOL_UDP && kind == UDP_GRO && len >= CMSG_HDR + 4 {
            let seg = i32::from_ne_bytes(control[16..20].try_into().ok()?);
            return usize::try_from(seg).ok().filter(|s| *s > 0);
        }
        control = control.get(len.next_multiple_of(8)..).unwrap_or(&[]);
    }
    None
}

/// Sends `data` to `to`, as one datagram or, with `segment`, as datagrams of that size in one
/// call (UDP_SEGMENT). A full socket buffer drops the datagrams: QUIC recovers the loss.
pub(crate) fn send(sock: &Socket, data: &[u8], to: SocketAddr, segment: Option<usize>) -> io::Result<()> {
    let addr = SockAddr::from(to);
    let bufs = [IoSlice::new(data)];
    // One cmsghdr and a u16, padded to CMSG_SPACE(2) = 24; u64s keep it 8-aligned.
    let mut control = [0u64; 3];
    let mut msg = MsgHdr::new().with_addr(&addr).with_buffers(&bufs);
    if let Some(seg) = segment.filter(|s| *s < data.len()) {
        let seg = u16::try_from(seg).map_err(|_| io::Error::other("segment size over 65535"))?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut control);
        bytes[..8].copy_from_slice(&(CMSG_HDR + 2).to_ne_bytes());
        bytes[8..12].copy_from_slice(&SOL_UDP.to_ne_bytes());
        bytes[12..16].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
        bytes[16..18].copy_from_slice(&seg.to_ne_bytes());
        msg = msg.with_control(bytemuck::cast_slice(&control));
    }
    match sock.sendmsg(&msg, libc::MSG_DONTWAIT) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_control_message_parses() {
        let mut c = Vec::new();
        c.extend_from_slice(&(CMSG_HDR + 4).to_ne_bytes());
        c.extend_from_slice(&SOL_UDP.to_ne_bytes());
        c.extend_from_slice(&UDP_GRO.to_ne_bytes());
        c.extend_from_slice(&1472i32.to_ne_bytes());
        c.extend_from_slice(&[0; 4]);
        assert_eq!(gro_segment(&c), Some(1472));
        assert_eq!(gro_segment(&c[..10]), None);
        c[0] = 200; // longer than the buffer
        assert_eq!(gro_segment(&c), None);
    }

    #[test]
    fn gso_send_arrives_as_gro_segments() {
        let rx = Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        rx.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0)))).expect("bind");
        let gro = enable_gro(&rx).is_ok();
        let to = rx.local_addr().expect("addr").as_socket().expect("ip");
        let tx = Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        send(&tx, &data, to, Some(1200)).expect("send");
        let mut arena = BytesMut::new();
        let family = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < data.len() && std::time::Instant::now() < deadline {
            match recv(&rx, &mut arena, &family).expect("recv") {
                Some(r) => {
                    if gro && r.data.len() > 1200 {
                        assert_eq!(r.stride, Some(1200));
                    }
                    got.extend_from_slice(&r.data);
                }
                None => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(got, data);
    }
}
