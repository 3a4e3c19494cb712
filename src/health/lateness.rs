//! How late probes start compared with their schedule: the health checker's own health.
//!
//! Every probe records its lateness, so recording is one atomic add into a histogram (no lock
//! for thousands of probes a second to meet on); percentiles are read from the buckets, each
//! 1/8 of a power of two wide (within 12.5% of the true value), and the maximum exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two.
const SUB: usize = 8;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Enough buckets for any `u64` of nanoseconds: `SUB` below `SUB`, then `SUB` per power of two
/// from `2^SUB_BITS` to `2^63`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Probe start delays since the start (or the last [`Lateness::clear`]).
#[derive(Debug)]
pub struct Lateness {
    buckets: Box<[AtomicU64]>,
    max_nanos: AtomicU64,
}

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_nanos: AtomicU64::new(0),
        }
    }
}

/// Percentiles over the samples recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatenessSummary {
    pub samples: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The bucket of `nanos`: below `SUB`, one per value; above, `SUB` per power of two.
fn bucket(nanos: u64) -> usize {
    if nanos < SUB as u64 {
        return nanos as usize;
    }
    let power = 63 - nanos.leading_zeros();
    let sub = (nanos >> (power - SUB_BITS)) as usize & (SUB - 1);
    (power - SUB_BITS + 1) as usize * SUB + sub
}

/// The smallest value in bucket `index`.
fn bucket_floor(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let (octave, sub) = (index / SUB - 1, index % SUB);
    ((SUB + sub) as u64) << octave
}

impl Lateness {
    pub fn record(&self, late: Duration) {
        let nanos = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Forgets every sample (a benchmark's warm-up).
    pub fn clear(&self) {
        self.buckets.iter().for_each(|b| b.store(0, Ordering::Relaxed));
        self.max_nanos.store(0, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Option<LatenessSummary> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let samples: u64 = counts.iter().sum();
        if samples == 0 {
            return None;
        }
        // The value below which a share `q` of the samples lie: the floor of its bucket.
        let at = |q: f64| {
            let rank = ((samples - 1) as f64 * q).round() as u64;
            let mut seen = 0;
            let index = counts
                .iter()
                .position(|count| {
                    seen += count;
                    seen > rank
                })
                .unwrap_or(BUCKETS - 1);
            Duration::from_nanos(bucket_floor(index))
        };
        Some(LatenessSummary {
            samples,
            p50: at(0.5),
            p99: at(0.99),
            max: Duration::from_nanos(self.max_nanos.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values() {
        for nanos in (0..5000).chain([1 << 20, 123_456_789, u64::MAX / 3, u64::MAX]) {
            let index = bucket(nanos);
            assert!(index < BUCKETS, "{nanos}");
            assert!(bucket_floor(index) <= nanos, "{nanos}");
            assert!(index + 1 == BUCKETS || nanos < bucket_floor(index + 1), "{nanos}");
        }
    }

    #[test]
    fn percentiles_within_an_eighth() {
        let lateness = Lateness::default();
        assert_eq!(lateness.summary(), None);
        for ms in 1..=100 {
            lateness.record(Duration::from_millis(ms));
        }
        let s = lateness.summary().unwrap();
        assert_eq!(s.samples, 100);
        let near = |got: Duration, want_ms: u64| {
            let want = Duration::from_millis(want_ms);
            got <= want && got >= want.mul_f64(0.875)
        };
        assert!(near(s.p50, 51), "{:?}", s.p50);
        assert!(near(s.p99, 99), "{:?}", s.p99);
        assert_eq!(s.max, Duration::from_millis(100));
        lateness.clear();
        assert_eq!(lateness.summary(), None);
    }
}
