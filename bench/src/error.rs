//! Why a benchmark could not run or finish.

use thiserror::Error;

/// Errors of the benchmark harnesses.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The options are out of range.
    #[error("options: {0}")]
    Options(&'static str),
    /// A client process could not be started, written to or read from.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A client process answered something the harness does not understand, or failed.
    #[error("client {client}: {line:?}")]
    Client {
        /// The client process.
        client: usize,
        /// Its line.
        line: String,
    },
    /// A client process was given a line it does not understand.
    #[error("bad line {0:?}")]
    BadLine(String),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Our QUIC transport failed.
    #[error("QUIC: {0}")]
    Quic(#[from] vain_transport::quic::Error),
    /// Our sending client failed.
    #[error("sending: {0}")]
    Send(#[from] vain_transport::client::Error),
    /// The aggregator service failed.
    #[error("service: {0}")]
    Service(#[from] vain_aggregator::Error),
    /// Aggregation failed.
    #[error("aggregation: {0}")]
    Aggregate(#[from] vain_kernels::aggregate::Error),
    /// Encoding the synthetic updates failed.
    #[error("encoding: {0}")]
    Encode(#[from] vain_kernels::encode::Error),
    /// A baseline (quinn) connection could not be opened.
    #[error("quinn connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// A baseline (quinn) connection failed.
    #[error("quinn connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A baseline (quinn) stream write failed.
    #[error("quinn write: {0}")]
    Write(#[from] quinn::WriteError),
    /// A baseline (quinn) stream was closed already.
    #[error("quinn stream: {0}")]
    Closed(#[from] quinn::ClosedStream),
    /// The baseline's TLS configuration has no QUIC cipher suite.
    #[error("quinn crypto: {0}")]
    Crypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A baseline task failed.
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Socket or runtime I/O.
    #[error("io: {0}")]
    Os(#[from] std::io::Error),
    /// A round in which no update arrived (a report of it would be all zeros).
    #[error("{transport}: round {round}: no update arrived within {timeout_s:.0} s ({rejected} rejected: {rejects})")]
    NothingArrived {
        /// The transport measured.
        transport: String,
        /// The round.
        round: u64,
        /// The round timeout.
        timeout_s: f64,
        /// Updates rejected.
        rejected: usize,
        /// Rejections by reason.
        rejects: String,
    },
    /// The rule cannot aggregate this many clients (e.g. Krum needs n > 2f + 2).
    #[error("rule {rule} with {clients} clients: {source}")]
    Rule {
        /// The rule.
        rule: String,
        /// Clients.
        clients: usize,
        /// Why.
        #[source]
        source: vain_kernels::aggregate::Error,
    },
    /// A client could not build its update.
    #[error("building an update: {0}")]
    Update(#[from] vain_ingest::update::Error),
    /// A frame could not be encoded.
    #[error("frame: {0}")]
    Frame(#[from] vain_schema::Error),
    /// No async runtime for quinn.
    #[error("no async runtime for quinn")]
    NoRuntime,
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}
