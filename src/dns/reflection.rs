//! What UDP sends a source, so that sextant is no tool for a reflection attack (queries with a
//! victim's address as their source, to flood it with the answers):
//! - **Response-rate limiting** (knot's RRL as the model): each source network (a /24, or a /56
//!   for IPv6) gets `rate` responses a second; past it, every second response slips (goes out
//!   truncated, no larger than its query, so a real client retries over TCP) and the others are
//!   dropped.
//! - **An amplification bound**: to a source that has not shown it is real, an answer larger
//!   than [`AMPLIFICATION`] times its query goes out truncated (RFC 8482's spirit, as for ANY).
//!   A source is real once it has opened a TCP connection (a handshake cannot be spoofed) in the
//!   last [`PROOF_LIFETIME`], or when it is in an exempt network (loopback by default: no packet
//!   from outside can claim it); a query is, when it carries a server cookie made for its
//!   source (`cookies.rs`).
//!
//! A query that shows its source is real is neither limited nor bounded (as BIND does): its
//! response goes where the query came from, so it reflects nothing.
//!
//! Both tables are fixed arrays of atomics, written without a lock or an allocation per query,
//! so no flood of sources can grow them. Two networks that fall in one slot share its count
//! (rarely, with 65,536 slots and a hash keyed at start, and in the direction of limiting); a
//! proof is kept with a 32-bit tag of its address, so one only a colliding address could reuse.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::stats::DnsStats;

/// The largest answer, in times its query's size, an unproven source is sent.
pub const AMPLIFICATION: usize = 3;
/// How long a TCP connection from an address proves it real.
pub const PROOF_LIFETIME: Duration = Duration::from_secs(3600);
/// Every this-many responses past the rate, one slips (goes out truncated).
pub const SLIP: u32 = 2;
/// Responses a second to one source network, by default: more than a resolver sends for a
/// whole rack of hosts, far less than a flood.
pub const DEFAULT_RATE: u32 = 10_000;
/// Slots in each table (a power of two).
const SLOTS: usize = 1 << 16;

/// The settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Responses a second per source network; 0: no rate limit.
    pub rate: u32,
    /// Networks whose sources are neither limited nor bounded.
    pub exempt: Vec<IpNet>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RATE,
            exempt: default_exempt(),
        }
    }
}

/// Loopback, which no packet from outside the machine can claim.
pub fn default_exempt() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::from([127, 0, 0, 0]), 8).expect("a valid prefix"),
        IpNet::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128).expect("a valid prefix"),
    ]
}

/// What becomes of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Past the rate, sent truncated (header and question, TC set).
    Slip,
    /// Larger than the amplification bound allows, sent truncated.
    Bound,
    /// Past the rate, not sent.
    Drop,
}

pub struct ReflectionGuard {
    settings: RateLimit,
    hasher: foldhash::fast::RandomState,
    /// Per network slot: the second (since `start`) of its count, high 32 bits, and the count.
    counts: Box<[AtomicU64]>,
    /// Per address slot: the address's tag, high 32 bits, and the second it was proven.
    proofs: Box<[AtomicU64]>,
    start: Instant,
    /// Where responses slipped, dropped and bounded are counted.
    stats: Arc<DnsStats>,
    /// The line saying a network went over the rate: one a second at most.
    log: crate::log_throttle::LogThrottle,
}

impl ReflectionGuard {
    pub fn new(settings: RateLimit, stats: Arc<DnsStats>) -> Self {
        let slots = || (0..SLOTS).map(|_| AtomicU64::new(0)).collect();
        Self {
            settings,
            hasher: foldhash::fast::RandomState::default(),
            counts: slots(),
            proofs: slots(),
            start: Instant::now(),
            stats,
            log: crate::log_throttle::LogThrottle::new(1),
        }
    }

    /// The guard's clock, in whole seconds: taken once per batch of queries.
    pub fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }

    /// Whether a source's responses are neither limited nor bounded.
    fn exempt(&self, ip: IpAddr) -> bool {
        self.settings.exempt.iter().any(|net| net.contains(&ip))
    }

    /// `ip` has shown it is real (it opened a TCP connection).
    pub fn prove(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let hash = self.hasher.hash_one(ip);
        let slot = &self.proofs[hash as usize & (SLOTS - 1)];
        slot.store((hash >> 32) << 32 | u64::from(self.now()), Ordering::Relaxed);
    }

    fn proven(&self, ip: IpAddr, now: u32) -> bool {
        let hash = self.hasher.hash_one(ip);
        let proof = self.proofs[hash as usize & (SLOTS - 1)].load(Ordering::Relaxed);
        proof >> 32 == hash >> 32 && now.wrapping_sub(proof as u32) < PROOF_LIFETIME.as_secs() as u32
    }

    /// Counts a response to `ip`'s network at second `now`: how many it has had this second.
    fn count(&self, ip: IpAddr, now: u32) -> u32 {
        let network = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xFFFF_FF00),
            // A distinct high bit: an IPv6 network never shares a key with an IPv4 one.
            IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | 1,
        };
        let slot = &self.counts[self.hasher.hash_one(network) as usize & (SLOTS - 1)];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let count = if (current >> 32) as u32 == now {
                (current as u32).saturating_add(1)
            } else {
                1
            };
            let next = u64::from(now) << 32 | u64::from(count);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return count,
                Err(seen) => current = seen,
            }
        }
    }

    /// What to do with a response of `response_len` bytes to a query of `query_len` from `ip`,
    /// at second `now` ([`Self::now`]); `cookie_proves` tells whether the query carries a valid
    /// server cookie, asked only of a response that would not go as it is.
    pub fn judge(
        &self,
        ip: IpAddr,
        query_len: usize,
        response_len: usize,
        now: u32,
        cookie_proves: impl FnOnce() -> bool,
    ) -> Verdict {
        let ip = ip.to_canonical();
        if self.exempt(ip) {
            return Verdict::Send;
        }
        if self.settings.rate > 0 {
            let count = self.count(ip, now);
            if count > self.settings.rate {
                if cookie_proves() {
                    return Verdict::Send;
                }
                let past = count - self.settings.rate;
                if past == 1
                    && let Some(left_out) = self.log.admit()
                {
                    tracing::warn!(%ip, rate = self.settings.rate, other_networks = left_out, "DNS responses to a source network over the rate limit this second: every second one slips (TC), the rest are dropped");
                }
                return if past.is_multiple_of(SLIP) {
                    Verdict::Slip
                } else {
                    Verdict::Drop
                };
            }
        }
        if response_len > AMPLIFICATION * query_len && !self.proven(ip, now) && !cookie_proves() {
            return Verdict::Bound;
        }
        Verdict::Send
    }

    /// Counts what was done with a response judged `verdict`: `sent` whether anything went.
    pub fn counted(&self, verdict: Verdict, sent: bool) {
        let counter = match (verdict, sent) {
            (Verdict::Send, _) => return,
            (Verdict::Slip, true) => &self.stats.slipped,
            (Verdict::Bound, true) => &self.stats.bounded,
            _ => &self.stats.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::stats::ServiceIds;

    /// A query without a server cookie.
    fn judge(guard: &ReflectionGuard, ip: IpAddr, query_len: usize, response_len: usize, now: u32) -> Verdict {
        guard.judge(ip, query_len, response_len, now, || false)
    }

    fn guard(rate: u32) -> ReflectionGuard {
        let stats = Arc::new(DnsStats::new(Arc::new(ServiceIds::default())));
        ReflectionGuard::new(
            RateLimit {
                rate,
                exempt: default_exempt(),
            },
            stats,
        )
    }

    #[test]
    fn past_the_rate_every_second_response_slips_and_the_rest_are_dropped() {
        let guard = guard(10);
        let flooder: IpAddr = "192.0.2.7".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..20).map(|_| judge(&guard, flooder, 50, 50, 5)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Send), "{verdicts:?}");
        assert_eq!(
            verdicts[10..14],
            [Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        // Its whole /24 shares the count; another network does not.
        assert_eq!(judge(&guard, "192.0.2.200".parse().unwrap(), 50, 50, 5), Verdict::Drop);
        assert_eq!(judge(&guard, "198.51.100.1".parse().unwrap(), 50, 50, 5), Verdict::Send);
        // The next second starts afresh.
        assert_eq!(judge(&guard, flooder, 50, 50, 6), Verdict::Send);
        // IPv6: a /56 is one network.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..10 {
            assert_eq!(judge(&guard, v6("2001:db8:0:100::1"), 50, 50, 5), Verdict::Send);
        }
        assert_eq!(judge(&guard, v6("2001:db8:0:1ff::2"), 50, 50, 5), Verdict::Drop);
        assert_eq!(judge(&guard, v6("2001:db8:0:200::1"), 50, 50, 5), Verdict::Send);
    }

    #[test]
    fn a_large_answer_is_truncated_until_the_source_has_used_tcp() {
        let guard = guard(0);
        let source: IpAddr = "203.0.113.9".parse().unwrap();
        let now = guard.now();
        assert_eq!(judge(&guard, source, 50, 150, now), Verdict::Send);
        assert_eq!(judge(&guard, source, 50, 151, now), Verdict::Bound);
        guard.prove(source);
        assert_eq!(judge(&guard, source, 50, 1200, now), Verdict::Send);
        // As an IPv4-mapped IPv6 address too; the proof lapses.
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(judge(&guard, mapped, 50, 1200, now), Verdict::Send);
        let later = now + PROOF_LIFETIME.as_secs() as u32;
        assert_eq!(judge(&guard, source, 50, 1200, later), Verdict::Bound);
        // Another address of the same network is not proven.
        assert_eq!(
            judge(&guard, "203.0.113.10".parse().unwrap(), 50, 1200, now),
            Verdict::Bound
        );
    }

    #[test]
    fn exempt_networks_are_neither_limited_nor_bounded() {
        let guard = guard(1);
        for _ in 0..10 {
            assert_eq!(judge(&guard, "127.0.0.2".parse().unwrap(), 50, 4000, 1), Verdict::Send);
            assert_eq!(judge(&guard, "::1".parse().unwrap(), 50, 4000, 1), Verdict::Send);
        }
    }

    #[test]
    fn a_query_with_a_valid_server_cookie_is_neither_limited_nor_bounded() {
        let guard = guard(5);
        let source: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(judge(&guard, source, 50, 50, 7), Verdict::Send);
        }
        assert_eq!(guard.judge(source, 50, 1200, 7, || true), Verdict::Send);
        assert_eq!(judge(&guard, source, 50, 50, 7), Verdict::Slip);
        // The cookie is only looked at when the response would not go as it is.
        let guard = self::guard(0);
        let looked = std::cell::Cell::new(false);
        let proves = || {
            looked.set(true);
            true
        };
        assert_eq!(guard.judge(source, 50, 150, 7, proves), Verdict::Send);
        assert!(!looked.get());
        assert_eq!(guard.judge(source, 50, 151, 7, || true), Verdict::Send);
        assert_eq!(judge(&guard, source, 50, 151, 7), Verdict::Bound);
    }
}
