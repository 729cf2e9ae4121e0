//! The process's heap policy for bulk transfer.
//!
//! glibc's malloc returns freed memory at the top of a heap to the kernel once more than
//! `M_TRIM_THRESHOLD` is free there, and serves large requests with their own `mmap`. A shard
//! receiving gigabytes frees and reallocates its receive arenas (1 MiB, cut into datagrams that
//! quinn-proto holds until their stream is read) all the time, so with the defaults every new
//! arena is fresh pages: on the 2-vCPU benchmark VM a shard spent about an eighth of its time in
//! page faults and `brk` calls. [`retain_freed`] keeps freed memory in the process instead.

// mallopt is a C function; calling it is sound at any time (see below).
#![allow(unsafe_code)]

/// Freed memory above this much at the top of a heap is returned to the kernel.
pub const TRIM_THRESHOLD: usize = 512 << 20;
/// Requests from this size on get their own mapping (glibc's largest allowed value on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Keeps freed heap memory in the process for reuse ([`TRIM_THRESHOLD`], [`MMAP_THRESHOLD`]);
/// returns whether the allocator took the settings (false off glibc). Process-wide: call it
/// once at start-up, in a process whose job is moving bulk data (`vain bench` and its client
/// processes do). The cost is resident memory: up to [`TRIM_THRESHOLD`] of free space per malloc
/// arena stays mapped. A process of many small allocations is better off without it: 1000
/// in-process DHT nodes spent 14 % of their time in `_int_malloc` with it.
pub fn retain_freed() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |param, value: usize| {
            // SAFETY: mallopt only changes malloc's tunables, under malloc's own lock; any
            // value is accepted or refused with 0, and no memory is touched.
            unsafe { libc::mallopt(param, i32::try_from(value).unwrap_or(i32::MAX)) == 1 }
        };
        set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) & set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::retain_freed());
    }
}
