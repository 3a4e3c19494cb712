//! A probed (HTTP or TCP) check's life: probing on its schedule and reaping, until it is
//! stopped. TTL checks have no task: they wait in the timer queue of `ttl.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::probe::Probe;
use super::thresholds::Thresholds;
use super::{REAP_RETRY, Shared};
use crate::model::CheckSpec;
use crate::registry::Registry;

pub(super) struct Runner {
    pub registry: Arc<Registry>,
    pub shared: Arc<Shared>,
    pub spec: CheckSpec,
    pub generation: u64,
    /// Probe at once instead of at a staggered moment (a check restored at start).
    pub run_now: bool,
    pub stop: CancellationToken,
}

impl Runner {
    /// Sleeps until the next thing to do (a probe, a reap), does it, repeats.
    /// Deadlines are re-read from the registry each time round, so they are never stale; the
    /// registry re-checks them when they are applied.
    pub async fn run(self) {
        let schedule = self.spec.kind.schedule();
        let mut thresholds = Thresholds::new(self.spec.success_before_passing, self.spec.failures_before_critical);
        // The first run is staggered over the interval, so a bulk registration does not probe
        // everything at once; a restored check runs at once, its status being from before the
        // restart (the in-flight limit spreads those).
        let first_delay = |interval| {
            if self.run_now {
                Duration::ZERO
            } else {
                stagger(interval)
            }
        };
        let mut next_probe = schedule.map(|(interval, _)| Instant::now() + first_delay(interval));
        let probe = self.shared.prober.prepare(&self.spec.kind);
        loop {
            let Some(timers) = self.registry.check_timers(&self.spec.id, self.generation) else {
                return; // removed or redefined: a Stop is on its way
            };
            // A probed check has no TTL: its deadlines are its next probe and its reap.
            let wake = [next_probe, timers.reap_at].into_iter().flatten().min();
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                () = sleep_until_some(wake) => {}
            }
            let now = Instant::now();
            if timers.reap_at.is_some_and(|at| at <= now) && self.registry.reap_critical(&self.spec.id, self.generation)
            {
                // The deregistration stops this runner once applied; should its commit fail,
                // look again shortly.
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(REAP_RETRY) => continue,
                }
            }
            if let (Some(due), Some((interval, _))) = (next_probe, schedule)
                && due <= now
            {
                if !self.probe(&probe, due, &mut thresholds).await {
                    return;
                }
                next_probe = Some(next_after(due, interval, Instant::now()));
            }
        }
    }

    /// Runs the probe once, when a slot is free, and reports what passes the thresholds.
    /// False when stopped meanwhile.
    async fn probe(&self, probe: &Probe, due: Instant, thresholds: &mut Thresholds) -> bool {
        let permit = tokio::select! {
            biased;
            () = self.stop.cancelled() => return false,
            permit = self.shared.in_flight.acquire() => permit,
        };
        let Ok(_permit) = permit else {
            return false; // closed: shutting down
        };
        self.shared
            .lateness
            .record(Instant::now().saturating_duration_since(due));
        let started = std::time::Instant::now();
        let result = tokio::select! {
            biased;
            () = self.stop.cancelled() => return false,
            result = probe.run() => result,
        };
        if let (Some(kind), Some((status, _))) = (probe.kind(), &result) {
            let labels = crate::metrics::ProbeLabels {
                kind,
                result: status.as_str(),
            };
            let took = started.elapsed().as_secs_f64();
            self.shared.probe_times.get_or_create(&labels).observe(took);
        }
        if let Some((status, output)) = result
            && thresholds.observe(status)
        {
            self.registry
                .record_probe(&self.spec.id, self.generation, status, &output);
        }
        true
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn stagger(interval: Duration) -> Duration {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(rand::random_range(0..nanos))
}

/// The first slot of the schedule after `now`: a probe that ran late does not shift the schedule,
/// and slots missed meanwhile are skipped rather than run back to back.
fn next_after(due: Instant, interval: Duration, now: Instant) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let mut next = due + interval;
    while next <= now {
        next += interval;
    }
    next
}
