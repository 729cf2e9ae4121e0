//! The wall clock, in the units the wire and the logs use. One place reads it, so every
//! timestamp a node writes (announcements, certificates, round rows, latency stamps) agrees on
//! what "now" means; a clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix nanoseconds.
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_units_read_the_same_clock() {
        let (ms, ns) = (unix_ms(), unix_ns());
        // 2025-01-01 in ms: any machine running this is past it.
        assert!(ms > 1_735_689_600_000);
        assert!((ns / 1_000_000).abs_diff(ms) < 1_000);
    }
}
