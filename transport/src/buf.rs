//! A byte buffer whose start is aligned to 64 bytes, so payload views can be read as `f32`, `u32`
//! or SIMD lanes in place and copied to a device without re-alignment; and a bounded [`Pool`] of
//! them, so a shard receiving update after update reuses memory that is already mapped instead
//! of faulting in fresh pages for every multi-megabyte payload.

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
    lines: Vec<Line>,
    len: usize,
    pool: Option<Arc<Shared>>,
}

impl Clone for AlignedBuf {
    /// A copy outside any pool.
    fn clone(&self) -> Self {
        Self { lines: self.lines.clone(), len: self.len, pool: None }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.lines));
        }
    }
}

impl AlignedBuf {
    /// `len` zero bytes. The caller checks `len` against its limits first.
    pub fn zeroed(len: usize) -> Self {
        Self { lines: vec![Line([0; ALIGN]); len.div_ceil(ALIGN)], len, pool: None }
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
        &bytemuck::cast_slice::<Line, u8>(&self.lines)[..self.len]
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<Line, u8>(&mut self.lines)[..len]
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
}

struct Idle {
    free: Vec<Vec<Line>>,
    bytes: usize,
    stats: PoolStats,
}

struct Shared {
    limits: PoolLimits,
    idle: Mutex<Idle>,
}

impl Shared {
    fn give_back(&self, lines: Vec<Line>) {
        let size = lines.len() * ALIGN;
        let Ok(mut idle) = self.idle.lock() else { return };
        if idle.free.len() < self.limits.buffers && idle.bytes + size <= self.limits.bytes {
            idle.bytes += size;
            idle.free.push(lines);
        } else {
            idle.stats.dropped += 1;
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
        Self {
            shared: Arc::new(Shared {
                limits,
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
                .filter(|(_, l)| l.len() >= need && l.len() <= need.saturating_mul(2).max(16))
                .min_by_key(|(_, l)| l.len())
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    let mut lines = idle.free.swap_remove(i);
                    idle.bytes -= lines.len() * ALIGN;
                    idle.stats.reused += 1;
                    lines.truncate(need);
                    Some(lines)
                }
                None => {
                    idle.stats.allocated += 1;
                    None
                }
            }
        });
        let lines = reused.unwrap_or_else(|| vec![Line([0; ALIGN]); need]);
        AlignedBuf { lines, len, pool: Some(self.shared.clone()) }
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
