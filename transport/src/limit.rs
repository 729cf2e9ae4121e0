//! Admission and rate limits for the ingest transport, sans-IO: time comes in as `now`
//! (nanoseconds on any monotonic clock), decisions come out. Every table is bounded.
//!
//! * [`Bucket`]: a token bucket (rate per second, burst).
//! * [`Peers`]: per-identity buckets for bytes and new streams, in a bounded table.
//! * [`Admission`]: caps on concurrent connections in total, per address and per identity, and
//!   the switch to address validation (QUIC retry) when handshakes pile up.

use std::collections::BTreeMap;
use std::net::IpAddr;
use thiserror::Error;

const NS: u64 = 1_000_000_000;

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: u64,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: u64) -> Self {
        Self { rate: rate.max(0.0), burst: burst.max(0.0), tokens: burst.max(0.0), at: now }
    }

    fn refill(&mut self, now: u64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) as f64 / NS as f64 * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// Takes `n` tokens, or says when they will be there (`Err(ns from now)`); an amount over
    /// the burst can never be taken and waits forever (`Err(u64::MAX)`).
    pub fn take(&mut self, n: f64, now: u64) -> Result<(), u64> {
        self.refill(now);
        if n <= self.tokens {
            self.tokens -= n;
            Ok(())
        } else if n > self.burst || self.rate == 0.0 {
            Err(u64::MAX)
        } else {
            Err(((n - self.tokens) / self.rate * NS as f64).ceil() as u64)
        }
    }
}

/// Per-peer rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Payload bytes per second.
    pub bytes_per_s: f64,
    /// Burst of bytes (at least the largest update).
    pub bytes_burst: f64,
    /// New streams (updates) per second.
    pub streams_per_s: f64,
    /// Burst of streams.
    pub streams_burst: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Self { bytes_per_s: 2e9, bytes_burst: 4e9, streams_per_s: 50.0, streams_burst: 200.0 }
    }
}

/// Why a peer's stream or bytes were refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Throttle {
    /// Over its rate; retry after this many nanoseconds (`u64::MAX`: never, too large).
    #[error("rate limited; retry in {0} ns")]
    Wait(u64),
    /// The peer table is full of other peers.
    #[error("too many peers tracked")]
    Full,
}

/// Per-identity token buckets, at most `max_peers` tracked; idle peers are evicted first.
#[derive(Debug)]
pub struct Peers<K: Ord + Copy> {
    rates: Rates,
    max_peers: usize,
    idle_ns: u64,
    table: BTreeMap<K, (Bucket, Bucket, u64)>,
}

impl<K: Ord + Copy> Peers<K> {
    /// A table with `rates` for every peer; a peer unseen for `idle_ns` may be evicted.
    pub fn new(rates: Rates, max_peers: usize, idle_ns: u64) -> Self {
        Self { rates, max_peers, idle_ns, table: BTreeMap::new() }
    }

    fn entry(&mut self, peer: K, now: u64) -> Result<&mut (Bucket, Bucket, u64), Throttle> {
        if !self.table.contains_key(&peer) {
            if self.table.len() >= self.max_peers {
                let idle = self.idle_ns;
                self.table.retain(|_, (_, _, seen)| now.saturating_sub(*seen) < idle);
                if self.table.len() >= self.max_peers {
                    return Err(Throttle::Full);
                }
            }
            let r = self.rates;
            self.table.insert(
                peer,
                (
                    Bucket::new(r.bytes_per_s, r.bytes_burst, now),
                    Bucket::new(r.streams_per_s, r.streams_burst, now),
                    now,
                ),
            );
        }
        let e = self.table.get_mut(&peer).ok_or(Throttle::Full)?;
        e.2 = now;
        Ok(e)
    }

    /// A new stream from `peer` declaring `bytes` of payload: both buckets must allow it.
    pub fn stream(&mut self, peer: K, bytes: u64, now: u64) -> Result<(), Throttle> {
        let (b, s, _) = self.entry(peer, now)?;
        // Check both before taking either, so a refusal costs the peer nothing.
        let (mut b2, mut s2) = (*b, *s);
        s2.take(1.0, now).map_err(Throttle::Wait)?;
        b2.take(bytes as f64, now).map_err(Throttle::Wait)?;
        *b = b2;
        *s = s2;
        Ok(())
    }

    /// Peers tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Per-address budgets of connection attempts, at most `max` addresses tracked; addresses
/// unseen for `idle_ns` make room first, and when every slot is busy a new address passes
/// unbudgeted (the caps and address validation still apply to it).
#[derive(Debug)]
pub struct Attempts {
    rate: f64,
    max: usize,
    idle_ns: u64,
    table: BTreeMap<u128, (Bucket, u64)>,
    /// When a full table may next be swept for idle addresses: at most once per `idle_ns / 4`,
    /// so a flood from forged addresses does not cost a pass over the table per datagram.
    next_sweep: u64,
}

impl Attempts {
    /// `per_s` attempts per second per address, bursts of twice that.
    pub fn new(per_s: u32, max: usize, idle_ns: u64) -> Self {
        Self { rate: f64::from(per_s), max, idle_ns, table: BTreeMap::new(), next_sweep: 0 }
    }

    /// Whether an attempt from `ip` at `now` is within its address's budget.
    pub fn allow(&mut self, ip: IpAddr, now: u64) -> bool {
        let k = address_key(ip);
        if !self.table.contains_key(&k) && self.table.len() >= self.max {
            if now < self.next_sweep {
                return true;
            }
            let idle = self.idle_ns;
            self.table.retain(|_, (_, seen)| now.saturating_sub(*seen) < idle);
            self.next_sweep = now.saturating_add(idle / 4);
            if self.table.len() >= self.max {
                return true;
            }
        }
        let (rate, burst) = (self.rate, 2.0 * self.rate);
        let (bucket, seen) = self.table.entry(k).or_insert_with(|| (Bucket::new(rate, burst, now), now));
        *seen = now;
        bucket.take(1.0, now).is_ok()
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Connection caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Concurrent connections in total.
    pub total: usize,
    /// Per IP address (IPv6 counted per /64).
    pub per_address: usize,
    /// Per identity (an identity may hold a few connections, e.g. one per shard).
    pub per_identity: usize,
    /// Handshakes in progress above which new connections must validate their address (QUIC
    /// retry) before any state is kept for them.
    pub retry_above: usize,
    /// Connection attempts (client Initial packets for a connection not yet known) taken per
    /// second from one address (IPv6: /64), twice as many in a burst; the excess is dropped
    /// unread, before any key is derived or anything is sent, so a flood from a few addresses
    /// costs the connections already open little. Off by default, for what it cannot do: honest
    /// clients that share an address with a flooder (NAT, one host) are shed with it; a flooder
    /// that forges source addresses can spend an honest client's budget (the check comes before
    /// any address validation); and an Initial whose destination ID has the form of the shard's
    /// own (8 bytes, first byte the shard's index) is taken for a handshake under way and passes,
    /// so a flooder that knows the form gets past the budget to quinn-proto's usual checks.
    /// 0: no budget.
    pub attempts_per_address: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Self { total: 4096, per_address: 16, per_identity: 4, retry_above: 256, attempts_per_address: 0 }
    }
}

/// Why a connection was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refuse {
    /// The endpoint is at its total.
    #[error("connection limit reached ({0})")]
    Total(usize),
    /// This address (or /64) holds too many.
    #[error("too many connections from this address ({0})")]
    Address(usize),
    /// This identity holds too many.
    #[error("too many connections for this identity ({0})")]
    Identity(usize),
}

/// The address key connections are counted under: the IPv4 address, or the IPv6 /64.
pub fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) << 64 | 1,
    }
}

/// Counts of open connections and handshakes.
#[derive(Debug)]
pub struct Admission<I: Ord + Copy> {
    caps: Caps,
    total: usize,
    handshakes: usize,
    by_address: BTreeMap<u128, usize>,
    by_identity: BTreeMap<I, usize>,
}

impl<I: Ord + Copy> Admission<I> {
    /// No connections yet.
    pub fn new(caps: Caps) -> Self {
        Self { caps, total: 0, handshakes: 0, by_address: BTreeMap::new(), by_identity: BTreeMap::new() }
    }

    /// Whether a new connection attempt must first prove its address (QUIC retry token).
    pub fn must_validate(&self) -> bool {
        self.handshakes >= self.caps.retry_above
    }

    /// A handshake from `ip` starts; refused at the total or the address cap.
    pub fn begin(&mut self, ip: IpAddr) -> Result<(), Refuse> {
        if self.total >= self.caps.total {
            return Err(Refuse::Total(self.caps.total));
        }
        let k = address_key(ip);
        let n = self.by_address.get(&k).copied().unwrap_or(0);
        if n >= self.caps.per_address {
            return Err(Refuse::Address(self.caps.per_address));
        }
        self.by_address.insert(k, n + 1);
        self.total += 1;
        self.handshakes += 1;
        Ok(())
    }

    /// The handshake from `ip` authenticated `identity`; refused at the identity cap (the
    /// caller then closes, and calls [`Admission::end`]).
    pub fn authenticated(&mut self, identity: I) -> Result<(), Refuse> {
        self.handshakes = self.handshakes.saturating_sub(1);
        let n = self.by_identity.get(&identity).copied().unwrap_or(0);
        if n >= self.caps.per_identity {
            return Err(Refuse::Identity(self.caps.per_identity));
        }
        self.by_identity.insert(identity, n + 1);
        Ok(())
    }

    /// A connection from `ip` closed (`identity` if it had authenticated and been admitted;
    /// `in_handshake` if it never finished its handshake).
    pub fn end(&mut self, ip: IpAddr, identity: Option<I>, in_handshake: bool) {
        let k = address_key(ip);
        if let Some(n) = self.by_address.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&k);
            }
        }
        if let Some(id) = identity
            && let Some(n) = self.by_identity.get_mut(&id)
        {
            *n -= 1;
            if *n == 0 {
                self.by_identity.remove(&id);
            }
        }
        if in_handshake {
            self.handshakes = self.handshakes.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Open connections.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn bucket_refills_at_its_rate_and_caps_at_its_burst() {
        let mut b = Bucket::new(100.0, 10.0, 0);
        assert_eq!(b.take(10.0, 0), Ok(()));
        assert_eq!(b.take(1.0, 0), Err(NS / 100));
        assert_eq!(b.take(5.0, NS / 20), Ok(()));
        assert_eq!(b.take(11.0, 10 * NS), Err(u64::MAX), "over the burst never fits");
        assert_eq!(b.take(10.0, 10 * NS), Ok(()), "refill stops at the burst");
        assert!(b.take(0.5, 10 * NS).is_err());
    }

    #[test]
    fn a_flooding_peer_is_throttled_and_others_are_not() {
        let rates = Rates { bytes_per_s: 1000.0, bytes_burst: 1000.0, streams_per_s: 2.0, streams_burst: 2.0 };
        let mut p: Peers<u8> = Peers::new(rates, 2, NS);
        assert_eq!(p.stream(1, 400, 0), Ok(()));
        assert_eq!(p.stream(1, 400, 0), Ok(()));
        assert!(matches!(p.stream(1, 1, 0), Err(Throttle::Wait(_))), "third stream in a burst of 2");
        assert_eq!(p.stream(2, 900, 0), Ok(()), "another peer has its own buckets");
        assert!(matches!(p.stream(1, 100, NS / 4), Err(Throttle::Wait(_))), "half a stream token refilled");
        assert_eq!(p.stream(1, 900, NS), Ok(()), "bytes refill to the burst, streams to 2");
        assert!(matches!(p.stream(1, 200, NS), Err(Throttle::Wait(_))), "100 bytes left");
        // A refusal costs nothing: the stream token it would have used is still there.
        assert_eq!(p.stream(1, 100, NS), Ok(()));
        assert_eq!(p.stream(3, 1, 0), Err(Throttle::Full), "table of 2, nobody idle");
        assert_eq!(p.stream(3, 1, 3 * NS), Ok(()), "idle peers are evicted");
        assert!(p.len() <= 2);
    }

    #[test]
    fn attempts_are_budgeted_per_address_and_a_full_table_fails_open() {
        let v4 = |d: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, d));
        let mut a = Attempts::new(10, 2, NS);
        let taken = (0..100).filter(|_| a.allow(v4(1), 0)).count();
        assert_eq!(taken, 20, "a burst of twice the rate");
        assert!(a.allow(v4(2), 0), "another address has its own budget");
        assert!(!a.allow(v4(1), NS / 20), "half a token refilled");
        assert!(a.allow(v4(1), NS / 10), "one token refilled");
        // Two addresses tracked, both active: a third passes unbudgeted.
        assert!((0..50).all(|_| a.allow(v4(3), NS / 10)));
        assert_eq!(a.len(), 2);
        // Once the others go idle, the third gets a budget of its own.
        assert_eq!((0..50).filter(|_| a.allow(v4(3), 5 * NS)).count(), 20);
    }

    #[test]
    fn connection_caps_per_address_identity_and_total() {
        let caps = Caps { total: 5, per_address: 2, per_identity: 1, retry_above: 2, attempts_per_address: 0 };
        let mut a: Admission<u8> = Admission::new(caps);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.begin(ip), Ok(()));
        assert_eq!(a.begin(ip), Ok(()));
        assert_eq!(a.begin(ip), Err(Refuse::Address(2)));
        assert_eq!(a.authenticated(7), Ok(()));
        assert_eq!(a.authenticated(7), Err(Refuse::Identity(1)));
        a.end(ip, None, false);
        // IPv6 neighbours in one /64 share a cap.
        let v6 = |x: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, x));
        assert_eq!(a.begin(v6(1)), Ok(()));
        assert_eq!(a.begin(v6(2)), Ok(()));
        assert_eq!(a.begin(v6(3)), Err(Refuse::Address(2)));
        assert!(a.must_validate(), "two handshakes pending ≥ retry_above");
        assert_eq!(a.begin(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))), Ok(()));
        assert_eq!(a.begin(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))), Ok(()));
        assert_eq!(a.begin(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4))), Err(Refuse::Total(5)));
        a.end(ip, Some(7), false);
        assert_eq!(a.authenticated(7), Ok(()), "the identity's slot is free again");
        assert_eq!(a.total(), 4);
    }
}
