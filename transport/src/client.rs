//! The sending side: a client connection to an aggregator over quinn on tokio, with the same
//! raw-public-key TLS and transport settings as the shards. One frame per unidirectional stream;
//! a lost connection is re-established with exponential backoff.

use crate::quic;
use crate::tls::{self, Policy};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Client settings.
#[derive(Clone)]
pub struct Config {
    /// The aggregator.
    pub server: SocketAddr,
    /// The aggregator's Ed25519 public key (the handshake fails for any other).
    pub server_key: [u8; 32],
    /// This client's Ed25519 secret.
    pub secret: [u8; 32],
    /// UDP payload size to start with (1472 fits Ethernet).
    pub initial_mtu: u16,
    /// Largest UDP payload path-MTU discovery probes for (at least `initial_mtu`; see
    /// [`quic::Config::max_udp_payload`]). Where the path is smaller the probes are lost and
    /// the connection keeps the size it has.
    pub max_udp_payload: u16,
    /// Stream and connection windows (the server's settings mirror these).
    pub stream_window: u32,
    /// Connection attempts per send before giving up.
    pub attempts: u32,
    /// First backoff between attempts; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Handshake timeout per attempt.
    pub connect_timeout: Duration,
}

impl Config {
    /// Defaults: Ethernet-sized datagrams at first, probing up to jumbo frames (8952), 64 MiB
    /// windows, 6 attempts from 100 ms to 5 s.
    pub fn new(server: SocketAddr, server_key: [u8; 32], secret: [u8; 32]) -> Self {
        Self {
            server,
            server_key,
            secret,
            initial_mtu: 1472,
            max_udp_payload: 8952,
            stream_window: 64 << 20,
            attempts: 6,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a client could not be set up or a send failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The aggregator's key is not an Ed25519 point.
    #[error("the aggregator's key is not an Ed25519 point")]
    ServerKey,
    /// The TLS configuration could not be built.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS configuration has no cipher suite QUIC can start with.
    #[error("tls: {0}")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A QUIC setting is out of range.
    #[error("quic settings: {0}")]
    Settings(#[from] quic::Error),
    /// The local UDP socket could not be opened.
    #[error("local UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The client was made outside a tokio runtime.
    #[error("no tokio runtime is running")]
    NoRuntime,
    /// No connection after every attempt.
    #[error("could not connect to {server} after {attempts} attempts: {last}")]
    Connect {
        /// The aggregator.
        server: SocketAddr,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Attempt,
    },
    /// The aggregator stopped the stream: 1 = bad frame, 2 = over the rate limit.
    #[error("the aggregator refused the frame (code {0})")]
    Refused(u64),
    /// The connection broke during the send.
    #[error("send: {0}")]
    Send(#[from] Broken),
}

/// Why a connection attempt failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Attempt {
    /// The endpoint would not start the connection.
    #[error("{0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed.
    #[error("{0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// The handshake did not finish within the connect timeout.
    #[error("the handshake timed out")]
    TimedOut,
}

/// How an established connection broke during a send.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Broken {
    /// The connection was lost.
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing the stream failed.
    #[error("{0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was already closed.
    #[error("{0}")]
    Closed(#[from] quinn::ClosedStream),
    /// Waiting for the aggregator's acknowledgement failed.
    #[error("{0}")]
    Stopped(#[from] quinn::StoppedError),
}

/// A delivered frame.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Wall-clock time of the first byte written (Unix ns), to match against the receiver.
    pub first_byte_unix_ns: u64,
    /// From the first byte written to the aggregator acknowledging all of it.
    pub elapsed: Duration,
}

/// A client; call from inside a tokio runtime.
pub struct Client {
    cfg: Config,
    endpoint: quinn::Endpoint,
    conn: Option<quinn::Connection>,
}

impl Client {
    /// Opens the local endpoint (a UDP socket); connects on the first send.
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let server_public =
            ed25519_dalek::VerifyingKey::from_bytes(&cfg.server_key).map_err(|_| Error::ServerKey)?.to_bytes();
        let tls = tls::client_config(&cfg.secret, Policy::Only(BTreeSet::from([server_public])))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
        let initial = cfg.initial_mtu.max(1200);
        let mtu = cfg.max_udp_payload.max(initial);
        let transport = quic::transport_config(cfg.stream_window, 256, Duration::from_secs(30), initial, mtu)?;
        cc.transport_config(Arc::new(transport));
        let local = if cfg.server.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        let socket = std::net::UdpSocket::bind(local).map_err(Error::Socket)?;
        let runtime = quinn::default_runtime().ok_or(Error::NoRuntime)?;
        let endpoint_cfg = quic::endpoint_config(mtu)?;
        let socket = gso_capped(socket, mtu, &runtime).map_err(Error::Socket)?;
        let mut endpoint =
            quinn::Endpoint::new_with_abstract_socket(endpoint_cfg, None, socket, runtime).map_err(Error::Socket)?;
        endpoint.set_default_client_config(cc);
        Ok(Self { cfg, endpoint, conn: None })
    }

    /// The connection, (re)established with backoff.
    async fn connection(&mut self) -> Result<quinn::Connection, Error> {
        if let Some(c) = &self.conn
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let mut backoff = self.cfg.backoff;
        let mut last = Attempt::TimedOut;
        for attempt in 0..self.cfg.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.cfg.max_backoff);
            }
            let connecting = match self.endpoint.connect(self.cfg.server, "aggregator") {
                Ok(c) => c,
                Err(e) => {
                    last = e.into();
                    continue;
                }
            };
            match tokio::time::timeout(self.cfg.connect_timeout, connecting).await {
                Ok(Ok(c)) => {
                    self.conn = Some(c.clone());
                    return Ok(c);
                }
                Ok(Err(e)) => last = e.into(),
                Err(_) => last = Attempt::TimedOut,
            }
        }
        Err(Error::Connect { server: self.cfg.server, attempts: self.cfg.attempts.max(1), last })
    }

    /// Sends one frame on its own stream and waits until the aggregator has all of it (or
    /// refuses it). A connection lost before the first byte is re-established.
    pub async fn send(&mut self, frame: &[u8]) -> Result<Sent, Error> {
        match self.send_once(frame).await {
            // The connection died under us (aggregator restarted, path lost): once more on a
            // fresh one. A refusal is an answer, not a failure, and is not retried.
            Err(Error::Send(_)) => {
                self.conn = None;
                self.send_once(frame).await
            }
            r => r,
        }
    }

    async fn send_once(&mut self, frame: &[u8]) -> Result<Sent, Error> {
        let conn = self.connection().await?;
        let mut stream = match conn.open_uni().await {
            Ok(s) => s,
            Err(_) => {
                self.conn = None;
                self.connection().await?.open_uni().await.map_err(Broken::from)?
            }
        };
        let first_byte_unix_ns = vain_schema::clock::unix_ns();
        let start = Instant::now();
        match stream.write_all(frame).await {
            Ok(()) => {}
            Err(quinn::WriteError::Stopped(code)) => return Err(Error::Refused(code.into_inner())),
            Err(e) => return Err(Broken::from(e).into()),
        }
        stream.finish().map_err(Broken::from)?;
        match stream.stopped().await {
            Ok(None) => Ok(Sent { first_byte_unix_ns, elapsed: start.elapsed() }),
            Ok(Some(code)) => Err(Error::Refused(code.into_inner())),
            Err(e) => Err(Broken::from(e).into()),
        }
    }

    /// Closes the connection and waits for the endpoint to finish.
    pub async fn close(self) {
        if let Some(c) = self.conn {
            c.close(0u32.into(), b"done");
        }
        self.endpoint.wait_idle().await;
    }
}

/// `socket` for quinn with at most as many datagrams per send as fit in one 64 KiB GSO send.
///
/// quinn 0.11 batches up to 10 datagrams per send whatever their size. The kernel refuses a
/// GSO send over 64 KiB; quinn counts the refusal as loss, so with jumbo-frame datagrams the path
/// looked like a black hole and fell back to 1200-byte datagrams.
pub fn gso_capped(
    socket: std::net::UdpSocket,
    mtu: u16,
    runtime: &Arc<dyn quinn::Runtime>,
) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
    let inner = runtime.wrap_udp_socket(socket)?;
    let max = quic::gso_segments(mtu).min(inner.max_transmit_segments().max(1));
    Ok(Arc::new(GsoCapped { inner, max }))
}

#[derive(Debug)]
struct GsoCapped {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    max: usize,
}

impl quinn::AsyncUdpSocket for GsoCapped {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.max
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_sends_stay_within_64_kib() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = rt.enter();
        let runtime = quinn::default_runtime().expect("tokio runtime");
        for (mtu, most) in [(1472u16, 10usize), (8952, 7), (9216, 7), (16384, 3), (65507, 1)] {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let s = gso_capped(socket, mtu, &runtime).expect("wrap");
            let n = s.max_transmit_segments();
            assert!(n >= 1 && n <= most && n * usize::from(mtu) <= 65_507, "mtu {mtu}: {n}");
        }
    }
}
