//! How late probes start compared with their schedule: the health checker's own health.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// The most recent probe start delays, kept exactly (a ring of the last [`Self::CAPACITY`]).
#[derive(Debug, Default)]
pub struct Lateness {
    samples: Mutex<VecDeque<Duration>>,
}

/// Percentiles over the samples held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatenessSummary {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Lateness {
    pub const CAPACITY: usize = 1 << 17;

    pub fn record(&self, late: Duration) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == Self::CAPACITY {
            samples.pop_front();
        }
        samples.push_back(late);
    }

    /// Forgets every sample (a benchmark's warm-up).
    pub fn clear(&self) {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn summary(&self) -> Option<LatenessSummary> {
        let mut sorted: Vec<Duration> = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        (!sorted.is_empty()).then(|| LatenessSummary {
            samples: sorted.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_the_samples_held() {
        let lateness = Lateness::default();
        assert_eq!(lateness.summary(), None);
        for ms in 1..=100 {
            lateness.record(Duration::from_millis(ms));
        }
        let s = lateness.summary().unwrap();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50, Duration::from_millis(51));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
    }
}
