//! The LAN beacon: a small signed datagram sent to the subnet broadcast address at an interval,
//! so nodes with no bootstrap list find each other. Layout (docs/protocol.md §9.2):
//! `"vAInBCN" ‖ version 1 (1 byte) ‖ SignedAnnouncement`, at most [`MAX_DATAGRAM`] bytes.
//! A receiver rate-limits per source address before reading further, then verifies the
//! announcement (signature, rotation chain, age) and only then dials the addresses in it.

use crate::records::{Invalid, check_announcement};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;
use vain_schema::node::Announcement;

/// Magic and version.
pub const MAGIC: &[u8; 8] = b"vAInBCN\x01";
/// Largest beacon sent or read.
pub const MAX_DATAGRAM: usize = 1400;

/// Builds a beacon around `SignedAnnouncement` bytes; `None` if it would exceed the limit.
pub fn encode(signed_announcement: &[u8]) -> Option<Vec<u8>> {
    let mut d = Vec::with_capacity(MAGIC.len() + signed_announcement.len());
    d.extend_from_slice(MAGIC);
    d.extend_from_slice(signed_announcement);
    (d.len() <= MAX_DATAGRAM).then_some(d)
}

/// Why a beacon was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Bogus {
    /// Not our magic or version, or over the size limit.
    Malformed,
    /// The announcement failed its checks.
    Announcement(Invalid),
}

/// Opens a beacon datagram received at `now_ms`.
pub fn decode(datagram: &[u8], now_ms: u64, max_age_ms: u64) -> Result<(Announcement, &[u8]), Bogus> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Bogus::Malformed);
    }
    let body = datagram.strip_prefix(MAGIC.as_slice()).ok_or(Bogus::Malformed)?;
    let a = check_announcement(body, now_ms, max_age_ms).map_err(Bogus::Announcement)?;
    Ok((a, body))
}

/// Per-source token buckets, at most `max_sources` tracked (the stalest evicted first).
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    max_sources: usize,
    table: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimit {
    /// `rate` datagrams per second per source, bursts of twice that.
    pub fn new(rate: f64, max_sources: usize) -> Self {
        Self { rate, burst: (2.0 * rate).max(1.0), max_sources, table: HashMap::new() }
    }

    /// Whether one more datagram from `ip` at `now` is allowed.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.table.contains_key(&ip) && self.table.len() >= self.max_sources {
            let oldest = self.table.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.table.remove(&k);
            }
        }
        let (tokens, at) = self.table.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn malformed_and_unsigned_beacons_are_refused() {
        assert_eq!(decode(b"hello", 0, 1).map(|_| ()), Err(Bogus::Malformed));
        assert_eq!(decode(&[0u8; 2000], 0, 1).map(|_| ()), Err(Bogus::Malformed));
        let mut d = MAGIC.to_vec();
        d.extend_from_slice(&[7; 100]);
        assert!(matches!(decode(&d, 0, 1), Err(Bogus::Announcement(Invalid::Announcement(_)))));
        assert!(encode(&[0; MAX_DATAGRAM]).is_none());
    }

    #[test]
    fn each_source_gets_its_rate_and_no_more() {
        let mut r = RateLimit::new(2.0, 2);
        let t0 = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!((0..10).filter(|_| r.allow(a, t0)).count(), 4, "burst of 2 × rate");
        assert!(r.allow(b, t0), "another source is unaffected");
        assert!(r.allow(a, t0 + Duration::from_millis(600)), "refilled at 2/s");
        // A third source evicts the stalest entry instead of growing the table.
        assert!(r.allow([10, 0, 0, 3].into(), t0 + Duration::from_millis(700)));
        assert_eq!(r.table.len(), 2);
    }
}
