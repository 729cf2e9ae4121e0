//! The aggregator service: the transport's shards, the ingest pipeline's checks on each shard,
//! and one aggregation stage per round.
//!
//! Each shard's frames go through [`ShardHandler`], which runs the round's
//! [`vain_ingest::Checker`] on the shard's own thread (frame → header → round → payload BLAKE3
//! → signature → sender allowed and equal to the connection's identity → zstd → layout) and
//! sends the checked update, still in the transport's aligned buffer, through a bounded channel
//! to the [`Stage`]. The stage owns the backend's round ([`vain_ingest::Ingest`]): replay check,
//! backend ingest, and at round close the rule, clipping, noise, anomaly report and the signed
//! result. A full channel makes the shard wait, and QUIC flow control pushes that back to the
//! senders.
//!
//! One stage, not per-shard partial aggregates: a GPU backend is one device, and the robust
//! rules (median, trimmed mean, Krum, Bulyan) need every row in one place. The per-byte work
//! (decryption, reassembly, hashing, signature checks, decompression) is what the shards split.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vain_ingest::{Accepted, Checked, Checker, Ingest, Refused, Rejection};
use vain_schema::PublicKey;
use vain_transport::buf::{AlignedBuf, Pinner, Pool, PoolLimits};
use vain_transport::frame::Frame;
use vain_transport::quic::{self, Peer, Stats};

/// Why the service could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] quic::Error),
    /// The shards' thread could not be started.
    #[error("starting the shards' thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// Every shard stopped (its channel closed) while the stage waited for updates.
    #[error("every shard stopped")]
    ShardsGone,
    /// The service was stopped already.
    #[error("the service was stopped already")]
    Stopped,
    /// A shard thread panicked.
    #[error("a shard thread panicked")]
    ShardPanicked,
}

/// What a shard sends the stage.
// Moving a few hundred bytes through the bounded channel is cheaper than an allocation per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Item {
    /// An update that passed the shard's checks.
    Checked {
        /// The shard.
        shard: usize,
        /// The update.
        update: Checked<AlignedBuf>,
    },
    /// An update the shard refused.
    Refused {
        /// The shard.
        shard: usize,
        /// Why.
        refused: Box<Refused>,
    },
}

/// The round's checker as published to the shards: a generation number the handler reads on
/// every frame (one atomic load) and the checker it takes when the number moved.
struct Published {
    generation: AtomicU64,
    checker: Mutex<Option<Arc<Checker>>>,
    /// Nanoseconds each shard spent in the checks (hashing, signature, decompression).
    check_ns: Vec<AtomicU64>,
}

/// The frame handler of one shard.
pub struct ShardHandler {
    shard: usize,
    published: Arc<Published>,
    seen: u64,
    checker: Option<Arc<Checker>>,
    tx: SyncSender<Item>,
}

impl ShardHandler {
    /// Checks one frame against the current round and hands it to the stage.
    pub fn handle(&mut self, peer: Peer, frame: Frame) {
        // The connection's key (its TLS-verified Ed25519 key) on whatever this frame logs.
        let _span = tracing::debug_span!("connection", shard = self.shard, peer = %short(&peer)).entered();
        let generation = self.published.generation.load(Ordering::Acquire);
        if generation != self.seen {
            if let Ok(c) = self.published.checker.lock() {
                self.checker = c.clone();
            }
            self.seen = generation;
        }
        let start = Instant::now();
        let item = match &self.checker {
            // No round open: nothing could match it; the stage has no round to count it in.
            None => return,
            Some(c) => match c.check_from(Some(peer), &frame.header, frame.payload) {
                Ok(update) => Item::Checked { shard: self.shard, update },
                Err(refused) => Item::Refused { shard: self.shard, refused },
            },
        };
        if let Some(ns) = self.published.check_ns.get(self.shard) {
            ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // The stage gone means the service is stopping.
        let _ = self.tx.send(item);
    }
}

/// Per-update figures the stage reports to its caller.
#[derive(Debug)]
pub enum Event {
    /// Accepted into the round.
    Accepted {
        /// Index, sender, weight.
        accepted: Accepted,
        /// The shard it came through.
        shard: usize,
        /// Payload bytes as received.
        wire_bytes: u64,
        /// When the backend had it (Unix ns).
        at_unix_ns: u64,
    },
    /// Refused, by a shard or the stage.
    Rejected(Box<Rejection>),
}

/// The aggregation stage: receives what the shards checked.
pub struct Stage {
    published: Arc<Published>,
    rx: Receiver<Item>,
    scratch: Pool,
}

/// Page-locks the transport's buffers for `backend` when it has a device (see
/// [`vain_kernels::backend::PageLock`]): set it as [`quic::Config::page_lock`] so a payload is
/// copied to the device straight from the buffer it arrived in.
pub fn page_lock(backend: &dyn vain_kernels::backend::Backend) -> Option<Arc<dyn Pinner>> {
    backend.page_lock().map(|l| Arc::new(PageLocked(l)) as Arc<dyn Pinner>)
}

/// The kernels' page lock as the transport's pinner (neither crate depends on the other).
#[derive(Debug)]
struct PageLocked(Arc<dyn vain_kernels::backend::PageLock>);

impl Pinner for PageLocked {
    fn pin(&self, region: &[u8]) -> bool {
        self.0.lock(region)
    }

    fn unpin(&self, region: &[u8]) {
        self.0.unlock(region)
    }
}

/// A stage and `shards` handlers joined by a channel holding at most `capacity` updates; the
/// stage's zstd output buffers are page-locked by `page_lock` (see [`page_lock`]).
pub fn channels(shards: usize, capacity: usize, page_lock: Option<Arc<dyn Pinner>>) -> (Stage, Vec<ShardHandler>) {
    let (tx, rx) = sync_channel(capacity.max(1));
    let published = Arc::new(Published {
        generation: AtomicU64::new(0),
        checker: Mutex::new(None),
        check_ns: (0..shards).map(|_| AtomicU64::new(0)).collect(),
    });
    let handlers = (0..shards)
        .map(|shard| ShardHandler { shard, published: published.clone(), seen: 0, checker: None, tx: tx.clone() })
        .collect();
    (Stage { published, rx, scratch: Pool::with_pinner(PoolLimits::default(), page_lock) }, handlers)
}

impl Stage {
    /// Publishes the checker of the round about to open to every shard; frames arriving from
    /// now on are checked against it. Call before telling clients the round is open.
    pub fn open(&self, checker: Checker) {
        // zstd output goes into pooled aligned buffers too, returned when the stage drops the
        // update.
        let pool = self.scratch.clone();
        let checker = checker.with_scratch(Arc::new(move |n| Box::new(pool.take(n))));
        if let Ok(mut c) = self.published.checker.lock() {
            *c = Some(Arc::new(checker));
        }
        self.published.generation.fetch_add(1, Ordering::Release);
    }

    /// Feeds `ingest` until it holds `want` updates or `deadline` passes; `on` sees every
    /// accepted and rejected update. Returns the updates accepted during the call.
    pub fn collect(
        &self,
        ingest: &mut Ingest<'_>,
        want: usize,
        deadline: Instant,
        mut on: impl FnMut(Event),
    ) -> Result<usize, Error> {
        if ingest.accepted() >= want {
            return Ok(0);
        }
        self.collect_while(
            ingest,
            deadline,
            |_| {},
            |ingest, ev| {
                on(ev);
                ingest.accepted() < want
            },
        )
    }

    /// Feeds `ingest` until `go_on` (called after each update with the round and the event)
    /// says stop or `deadline` passes; `before` sees each checked update before the round takes
    /// it (a journal writes it there, so nothing is acknowledged that a crash could lose).
    /// Returns the updates accepted during the call.
    pub fn collect_while(
        &self,
        ingest: &mut Ingest<'_>,
        deadline: Instant,
        before: impl FnMut(&Checked<AlignedBuf>),
        go_on: impl FnMut(&Ingest<'_>, Event) -> bool,
    ) -> Result<usize, Error> {
        self.collect_until(ingest, deadline, &AtomicBool::new(false), before, go_on)
    }

    /// [`Stage::collect_while`] that also returns within a fifth of a second of `stop` being
    /// set (a node shutting down mid-round: what was journaled stays for its restart).
    pub fn collect_until(
        &self,
        ingest: &mut Ingest<'_>,
        deadline: Instant,
        stop: &AtomicBool,
        mut before: impl FnMut(&Checked<AlignedBuf>),
        mut go_on: impl FnMut(&Ingest<'_>, Event) -> bool,
    ) -> Result<usize, Error> {
        let mut got = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let item = match self.rx.recv_timeout(left.min(STOP_POLL)) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Err(Error::ShardsGone),
            };
            let ev = match item {
                Item::Checked { shard, update } => {
                    let wire_bytes = update.wire_bytes;
                    before(&update);
                    match ingest.accept(update) {
                        Ok(accepted) => {
                            got += 1;
                            Event::Accepted { accepted, shard, wire_bytes, at_unix_ns: vain_schema::clock::unix_ns() }
                        }
                        Err(r) => Event::Rejected(r),
                    }
                }
                Item::Refused { refused, .. } => Event::Rejected(ingest.refused(*refused)),
            };
            if !go_on(ingest, ev) {
                break;
            }
        }
        Ok(got)
    }

    /// Seconds each shard has spent in the checks so far.
    pub fn check_seconds(&self) -> Vec<f64> {
        self.published.check_ns.iter().map(|n| n.load(Ordering::Relaxed) as f64 / 1e9).collect()
    }

    /// What the pool of decompression buffers has done.
    pub fn scratch_stats(&self) -> vain_transport::buf::PoolStats {
        self.scratch.stats()
    }

    /// Drops whatever the shards queued (updates for a round that closed).
    pub fn drain(&self) -> usize {
        self.rx.try_iter().count()
    }
}

/// How often a collection looks at its stop flag while no update arrives.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// A running service: the shards on their threads, and the stage.
pub struct Service {
    /// The stage (drive rounds with it).
    pub stage: Stage,
    addr: std::net::SocketAddr,
    routed: bool,
    stop: Arc<AtomicBool>,
    shards: Option<JoinHandle<Result<Vec<Stats>, quic::Error>>>,
    live: quic::Live,
}

impl Service {
    /// Binds `shards` shards with `cfg` and starts them; the stage's channel holds `capacity`
    /// updates.
    pub fn start(cfg: quic::Config, shards: usize, capacity: usize) -> Result<Self, Error> {
        let page_lock = cfg.page_lock.clone();
        let server = quic::Server::bind(cfg, shards)?;
        let (addr, routed, live) = (server.local_addr(), server.routed(), server.live());
        let (stage, handlers) = channels(shards, capacity, page_lock);
        let handlers: Vec<_> = handlers.into_iter().map(|mut h| move |p: Peer, f: Frame| h.handle(p, f)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let join = std::thread::Builder::new()
            .name("vain-shards".into())
            .spawn(move || server.run(handlers, s))
            .map_err(Error::Spawn)?;
        Ok(Self { stage, addr, routed, stop, shards: Some(join), live })
    }

    /// Where the shards listen.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The shards' QUIC figures while they run (connections, handshakes, datagrams).
    pub fn live(&self) -> quic::Live {
        self.live.clone()
    }

    /// Whether the kernel routes packets to shards by connection ID.
    pub fn routed(&self) -> bool {
        self.routed
    }

    /// Stops the shards; returns each one's figures.
    pub fn stop(mut self) -> Result<Vec<Stats>, Error> {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock shards waiting on a full channel.
        self.stage.drain();
        let join = self.shards.take().ok_or(Error::Stopped)?;
        // Keep draining while the shards wind down, so none stays blocked on a send.
        while !join.is_finished() {
            self.stage.drain();
            std::thread::sleep(Duration::from_millis(5));
        }
        join.join().map_err(|_| Error::ShardPanicked)?.map_err(Error::from)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The sender key of a rejection, for logs.
pub fn short(key: &PublicKey) -> String {
    hex::encode(&key[..6])
}
