//! A byte buffer whose start is aligned to 64 bytes, so payload views can be read as `f32`, `u32`
//! or SIMD lanes in place and copied to a device without re-alignment; and a bounded [`Pool`] of
//! them, so a shard receiving update after update reuses memory that is already mapped instead
//! of faulting in fresh pages for every multi-megabyte payload.
//!
//! A pool can page-lock what it allocates through a [`Pinner`] (the aggregator passes the CUDA
//! backend's), so the device's copy engine reads a payload straight from its pool buffer
//! rather than the driver first copying it into a page-locked bounce buffer of its own.

use bytemuck::{Pod, Zeroable};
use std::sync::{Arc, Mutex};

/// Alignment of [`AlignedBuf`] in bytes.
pub const ALIGN: usize = 64;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; ALIGN]);

/// A fixed-length, 64-byte aligned byte buffer; from [`AlignedBuf::zeroed`] or a [`Pool`], to
/// which it returns when dropped.
pub struct AlignedBuf {
    block: Block,
    len: usize,
    pool: Option<Arc<Shared>>,
}

/// Page-locks host memory for a device's DMA engine.
///
/// A [`Pool`] calls [`Pinner::pin`] on each buffer it allocates and, if that succeeded,
/// [`Pinner::unpin`] on the same region before the buffer is freed; between the two the
/// memory does not move.
pub trait Pinner: Send + Sync + std::fmt::Debug {
    /// Page-locks `region`; false if it could not (the buffer is then used as it is).
    fn pin(&self, region: &[u8]) -> bool;
    /// Undoes a successful [`Pinner::pin`] of exactly `region`.
    fn unpin(&self, region: &[u8]);
}

/// Page size assumed for page-locking (the smallest on the platforms we run on).
const PAGE: usize = 4096;

/// A buffer's memory, never resized while it lives (so a page-locked region stays what was
/// locked): `cap` lines from line `start` on are the buffer's; `pinned` says they are locked.
///
/// A block meant for locking is allocated with a page of slack at each end, and its usable
/// lines are whole pages from the first page boundary in it: page locking works on whole pages,
/// and a page shared with a neighbouring allocation could already be locked by that one (the
/// driver then refuses the second lock).
#[derive(Default)]
struct Block {
    lines: Vec<Line>,
    start: usize,
    cap: usize,
    pinned: bool,
}

impl Block {
    fn plain(lines: usize) -> Self {
        Self { lines: bytemuck::zeroed_vec::<Line>(lines), start: 0, cap: lines, pinned: false }
    }

    fn page_aligned(lines: usize) -> Self {
        let per_page = PAGE / ALIGN;
        let cap = lines.div_ceil(per_page) * per_page;
        let v = bytemuck::zeroed_vec::<Line>(cap + 2 * per_page);
        let misalign = (v.as_ptr() as usize % PAGE) / ALIGN;
        let start = (per_page - misalign) % per_page;
        Self { lines: v, start, cap, pinned: false }
    }

    /// The buffer's usable bytes (the locked region when locked).
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.lines[self.start..self.start + self.cap])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.lines[self.start..self.start + self.cap])
    }

    fn size(&self) -> usize {
        self.lines.len() * ALIGN
    }
}

impl Clone for AlignedBuf {
    /// A copy outside any pool (and not page-locked).
    fn clone(&self) -> Self {
        let mut block = Block::plain(self.len.div_ceil(ALIGN));
        block.bytes_mut()[..self.len].copy_from_slice(self.as_slice());
        Self { block, len: self.len, pool: None }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.block));
        }
    }
}

impl AlignedBuf {
    /// `len` zero bytes. The caller checks `len` against its limits first.
    pub fn zeroed(len: usize) -> Self {
        Self { block: Block::plain(len.div_ceil(ALIGN)), len, pool: None }
    }

    /// Whether the buffer is page-locked (see [`Pinner`]).
    pub fn is_pinned(&self) -> bool {
        self.block.pinned
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.block.bytes()[..self.len]
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.block.bytes_mut()[..len]
    }
}

/// Bounds of a [`Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle buffers kept.
    pub buffers: usize,
    /// Idle bytes kept.
    pub bytes: usize,
}

impl Default for PoolLimits {
    /// 32 buffers, 1 GiB.
    fn default() -> Self {
        Self { buffers: 32, bytes: 1 << 30 }
    }
}

/// What a pool has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers handed out from the idle set.
    pub reused: u64,
    /// Buffers newly allocated.
    pub allocated: u64,
    /// Buffers freed on return because the idle set was full.
    pub dropped: u64,
    /// Of the allocated buffers, those the pool's [`Pinner`] page-locked.
    pub pinned: u64,
}

struct Idle {
    free: Vec<Block>,
    bytes: usize,
    stats: PoolStats,
}

struct Shared {
    limits: PoolLimits,
    pinner: Option<Arc<dyn Pinner>>,
    idle: Mutex<Idle>,
}

impl Shared {
    fn give_back(&self, block: Block) {
        let size = block.size();
        let rest = match self.idle.lock() {
            Ok(mut idle) if idle.free.len() < self.limits.buffers && idle.bytes + size <= self.limits.bytes => {
                idle.bytes += size;
                idle.free.push(block);
                None
            }
            Ok(mut idle) => {
                idle.stats.dropped += 1;
                Some(block)
            }
            Err(_) => Some(block),
        };
        if let Some(b) = rest {
            self.free(b);
        }
    }

    /// Frees a block, unlocking it first if it was locked.
    fn free(&self, block: Block) {
        if block.pinned
            && let Some(p) = &self.pinner
        {
            p.unpin(block.bytes());
        }
    }
}

impl Drop for Shared {
    /// The last holder is gone (the pool and every buffer): free the idle blocks.
    fn drop(&mut self) {
        let free = self.idle.get_mut().map(|i| std::mem::take(&mut i.free)).unwrap_or_default();
        for b in free {
            self.free(b);
        }
    }
}

/// A bounded set of idle [`AlignedBuf`]s shared by the threads that take and drop them (a shard
/// takes one per frame, the aggregation stage drops it). Buffers return on drop; beyond the
/// limits they are freed.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("limits", &self.shared.limits).field("stats", &self.stats()).finish()
    }
}

impl Pool {
    /// An empty pool keeping at most `limits` idle.
    pub fn new(limits: PoolLimits) -> Self {
        Self::with_pinner(limits, None)
    }

    /// An empty pool keeping at most `limits` idle whose buffers `pinner` page-locks.
    pub fn with_pinner(limits: PoolLimits, pinner: Option<Arc<dyn Pinner>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                pinner,
                idle: Mutex::new(Idle { free: Vec::new(), bytes: 0, stats: PoolStats::default() }),
            }),
        }
    }

    /// A buffer of `len` bytes: the smallest idle one that fits, or a new zeroed one. A reused
    /// buffer holds old bytes; the caller overwrites all `len` of them (the frame decoder does,
    /// and refuses a frame that ends early).
    pub fn take(&self, len: usize) -> AlignedBuf {
        let need = len.div_ceil(ALIGN);
        let reused = self.shared.idle.lock().ok().and_then(|mut idle| {
            let best = idle
                .free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.cap >= need && b.cap <= need.saturating_mul(2).max(64))
                .min_by_key(|(_, b)| b.cap)
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    // Kept whole, not truncated: a locked region must stay what was locked.
                    let block = idle.free.swap_remove(i);
                    idle.bytes -= block.size();
                    idle.stats.reused += 1;
                    Some(block)
                }
                None => {
                    idle.stats.allocated += 1;
                    None
                }
            }
        });
        let block = reused.unwrap_or_else(|| match &self.shared.pinner {
            Some(p) => {
                let mut b = Block::page_aligned(need);
                b.pinned = p.pin(b.bytes());
                if b.pinned
                    && let Ok(mut idle) = self.shared.idle.lock()
                {
                    idle.stats.pinned += 1;
                }
                b
            }
            None => Block::plain(need),
        });
        AlignedBuf { block, len, pool: Some(self.shared.clone()) }
    }

    /// Counters so far.
    pub fn stats(&self) -> PoolStats {
        self.shared.idle.lock().map(|i| i.stats).unwrap_or_default()
    }

    /// Idle buffers now.
    pub fn idle(&self) -> usize {
        self.shared.idle.lock().map(|i| i.free.len()).unwrap_or(0)
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).finish()
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_are_reused_and_the_idle_set_is_bounded() {
        let pool = Pool::new(PoolLimits { buffers: 2, bytes: 1 << 20 });
        let a = pool.take(100_000);
        let p = a.as_slice().as_ptr();
        assert_eq!((a.len(), p as usize % ALIGN), (100_000, 0));
        drop(a);
        assert_eq!(pool.idle(), 1);
        // A slightly smaller request reuses the same memory.
        let b = pool.take(99_000);
        assert_eq!((b.as_slice().as_ptr(), b.len()), (p, 99_000));
        // A much smaller one does not pin a large buffer.
        drop(b);
        let small = pool.take(64);
        assert_ne!(small.as_slice().as_ptr(), p);
        let (c, d, e) = (pool.take(1000), pool.take(1000), pool.take(1000));
        drop((small, c, d, e));
        assert_eq!(pool.idle(), 2);
        let s = pool.stats();
        assert_eq!((s.reused, s.allocated, s.dropped), (1, 5, 3));
        // A clone leaves the pool's accounting alone.
        let f = pool.take(10);
        let g = f.clone();
        drop(g);
        assert_eq!(pool.idle(), 1);
        drop(f);
        // Over the byte bound: freed, not kept.
        let big = pool.take(2 << 20);
        drop(big);
        assert_eq!(pool.stats().dropped, 4);
    }

    /// Records what is locked; refuses every `refuse`-th lock, as a memlock limit would.
    #[derive(Debug, Default)]
    struct Recorder {
        locked: Mutex<Vec<(usize, usize)>>,
        calls: Mutex<usize>,
        refuse: usize,
    }

    impl Pinner for Recorder {
        fn pin(&self, region: &[u8]) -> bool {
            let mut calls = self.calls.lock().expect("lock");
            *calls += 1;
            if self.refuse > 0 && (*calls).is_multiple_of(self.refuse) {
                return false;
            }
            // Whole pages, so no page is shared with another allocation's lock.
            assert_eq!((region.as_ptr() as usize % PAGE, region.len() % PAGE), (0, 0));
            self.locked.lock().expect("lock").push((region.as_ptr() as usize, region.len()));
            true
        }

        fn unpin(&self, region: &[u8]) {
            let mut l = self.locked.lock().expect("lock");
            let at = l.iter().position(|&r| r == (region.as_ptr() as usize, region.len()));
            // Exactly a region that was locked, once.
            l.swap_remove(at.expect("unpin of a region that is not locked"));
        }
    }

    #[test]
    fn page_locked_buffers_are_unlocked_exactly_once_before_they_are_freed() {
        let rec = Arc::new(Recorder { refuse: 3, ..Default::default() });
        let pool = Pool::with_pinner(PoolLimits { buffers: 2, bytes: 1 << 20 }, Some(rec.clone()));
        let bufs: Vec<AlignedBuf> = (0..4).map(|i| pool.take(1000 * (i + 1))).collect();
        // The third lock was refused; that buffer works unlocked.
        assert_eq!(bufs.iter().map(AlignedBuf::is_pinned).collect::<Vec<_>>(), [true, true, false, true]);
        assert_eq!(rec.locked.lock().expect("lock").len(), 3);
        assert_eq!(pool.stats().pinned, 3);
        // The first two return to the idle set still locked; the other two are beyond the
        // bound: freed, the locked one unlocked first.
        drop(bufs);
        assert_eq!(pool.idle(), 2);
        assert_eq!(rec.locked.lock().expect("lock").len(), 2);
        // A reused buffer keeps its lock and its whole region, even for a smaller payload.
        let b = pool.take(1500);
        assert!(b.is_pinned());
        assert_eq!((b.len(), pool.stats().reused), (1500, 1));
        drop(b);
        let c = pool.take(900);
        assert!(c.is_pinned());
        // A clone is a plain copy.
        assert!(!c.clone().is_pinned());
        // Dropping the pool while a buffer is out: its memory lives on until the last buffer
        // comes back, then everything is unlocked.
        drop(pool);
        assert_eq!(rec.locked.lock().expect("lock").len(), 2);
        drop(c);
        assert!(rec.locked.lock().expect("lock").is_empty());
    }

    #[test]
    fn buffers_are_aligned_and_sized() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }
}
