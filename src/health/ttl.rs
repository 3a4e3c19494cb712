//! TTL checks' deadlines, all in one timer queue. A TTL check is pushed by its service and never
//! probed, so it needs no task of its own, only to be looked at when its TTL runs out or its
//! instance is due to be reaped: an entry here (about 100 bytes) instead of a task per check
//! (384 bytes, and 1.5 KiB when it was a probing runner's), which at 100,000 checks is most of
//! what checks cost.

use std::future::poll_fn;

use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use super::REAP_RETRY;
use crate::model::CheckId;
use crate::registry::Registry;

#[derive(Default)]
pub(super) struct TtlTimers {
    queue: DelayQueue<(CheckId, u64)>,
}

impl TtlTimers {
    /// Queues one definition of a check for its next deadline, as the registry holds it now;
    /// `None` when it has none (it has expired and its instance is not to be reaped).
    pub fn schedule(&mut self, registry: &Registry, check: &CheckId, generation: u64) -> Option<Key> {
        let timers = registry.check_timers(check, generation)?;
        let at = timers.ttl_deadline.into_iter().chain(timers.reap_at).min()?;
        Some(self.queue.insert_at((check.clone(), generation), at))
    }

    pub fn cancel(&mut self, key: &Key) {
        self.queue.try_remove(key);
    }

    /// The next check whose deadline has come; waits for ever while none is queued.
    pub async fn next(&mut self) -> (CheckId, u64) {
        match poll_fn(|cx| self.queue.poll_expired(cx)).await {
            Some(expired) => expired.into_inner(),
            None => std::future::pending().await,
        }
    }

    /// Does what is due for a check whose deadline came (reap its instance, or expire its TTL;
    /// the registry checks both again as it applies them) and queues it for what comes next.
    pub fn fire(&mut self, registry: &Registry, check: &CheckId, generation: u64) -> Option<Key> {
        let timers = registry.check_timers(check, generation)?;
        let now = Instant::now();
        if timers.reap_at.is_some_and(|at| at <= now) && registry.reap_critical(check, generation) {
            // The deregistration stops the check once applied; should its commit fail, look
            // again shortly.
            return Some(self.queue.insert_at((check.clone(), generation), now + REAP_RETRY));
        }
        if timers.ttl_deadline.is_some_and(|at| at <= now) {
            registry.expire_ttl(check, generation);
        }
        self.schedule(registry, check, generation)
    }
}
