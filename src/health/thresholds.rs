//! Consul's consecutive-result thresholds: `SuccessBeforePassing` and `FailuresBeforeCritical`.

use crate::model::Health;

/// Counts consecutive probe results and decides which of them are reported. As in Consul, a
/// warning counts as a success, a result that has not yet reached its threshold changes nothing
/// (neither status nor output), and 0 means the same as 1.
#[derive(Debug, Clone)]
pub struct Thresholds {
    success_before_passing: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl Thresholds {
    pub fn new(success_before_passing: u32, failures_before_critical: u32) -> Self {
        Self {
            success_before_passing,
            failures_before_critical,
            successes: 0,
            failures: 0,
        }
    }

    /// True when this result should be written to the registry.
    pub fn observe(&mut self, result: Health) -> bool {
        if result == Health::Critical {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            self.failures >= self.failures_before_critical
        } else {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            self.successes >= self.success_before_passing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn run(thresholds: &mut Thresholds, results: &[Health]) -> Vec<bool> {
        results.iter().map(|r| thresholds.observe(*r)).collect()
    }

    #[test]
    fn zero_and_one_report_every_result() {
        for n in [0, 1] {
            let mut t = Thresholds::new(n, n);
            assert_eq!(run(&mut t, &[Passing, Critical, Warning, Critical]), [true; 4]);
        }
    }

    #[test]
    fn failures_must_be_consecutive_to_reach_critical() {
        let mut t = Thresholds::new(1, 3);
        assert_eq!(
            run(
                &mut t,
                &[Critical, Critical, Passing, Critical, Critical, Critical, Critical]
            ),
            [false, false, true, false, false, true, true]
        );
    }

    #[test]
    fn successes_must_be_consecutive_to_reach_passing_and_warning_counts_as_one() {
        let mut t = Thresholds::new(3, 1);
        assert_eq!(
            run(
                &mut t,
                &[Passing, Passing, Critical, Passing, Warning, Passing, Passing]
            ),
            [false, false, true, false, false, true, true]
        );
    }
}
