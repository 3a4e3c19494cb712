//! Health checking: runs every registered check on its own schedule and reports the results
//! through the registry, which rebuilds the answers DNS and the API serve.
//!
//! The registry tells the checker which checks exist ([`CheckEvent`]s, in the order of its
//! writes) and the checker reports only through registry methods, so data still flows one way.
//! HTTP and TCP checks are probed, each by a task of its own ([`runner`], [`probe`]); TTL checks
//! are pushed by their service and only expire or reap here, from one timer queue ([`ttl`]).
//! Every task is tracked and stops with its check.

mod lateness;
mod probe;
mod runner;
mod thresholds;
mod ttl;

pub use lateness::{Lateness, LatenessSummary};
pub use thresholds::Thresholds;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::delay_queue::Key;

use crate::model::CheckId;
use crate::registry::{CheckEvent, Registry};
use probe::Prober;
use runner::Runner;
use ttl::TtlTimers;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot set up the HTTP client for health checks: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// When a check whose reap could not be committed (or waits for another write to its
/// instance) is looked at again.
const REAP_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What every check's task shares.
struct Shared {
    prober: Prober,
    /// Bounds the probes running at once.
    in_flight: Semaphore,
    lateness: Lateness,
    /// How many checks the supervisor runs (see [`HealthChecker::running`]).
    running: std::sync::atomic::AtomicUsize,
}

/// The running health checker.
pub struct HealthChecker {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    supervisor: JoinHandle<()>,
    stop: CancellationToken,
}

impl HealthChecker {
    /// Starts checking every check the registry holds now or gets later.
    pub fn start(registry: Arc<Registry>, max_in_flight: usize) -> Result<Self, HealthError> {
        let shared = Arc::new(Shared {
            prober: Prober::new()?,
            in_flight: Semaphore::new(max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
            lateness: Lateness::default(),
            running: Default::default(),
        });
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let events = registry.subscribe_checks();
        let supervisor = tokio::spawn(supervise(registry, shared.clone(), events, tasks.clone(), stop.clone()));
        Ok(Self {
            shared,
            tasks,
            supervisor,
            stop,
        })
    }

    /// How many checks are being run: a task for each probed check, a queued deadline for each
    /// TTL check.
    pub fn running(&self) -> usize {
        self.shared.running.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How late probes have started against their schedule.
    pub fn lateness(&self) -> &Lateness {
        &self.shared.lateness
    }

    /// Stops every check and waits for their tasks to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.shared.in_flight.close();
        if let Err(error) = self.supervisor.await {
            tracing::warn!(%error, "health check supervisor failed");
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A running check: a probing one's task, or a TTL check's place in the timer queue.
enum Handle {
    Runner {
        stop: CancellationToken,
    },
    /// Queued while it has a deadline to wait for.
    Ttl {
        generation: u64,
        key: Option<Key>,
    },
}

impl Handle {
    fn stop(&self, ttl: &mut TtlTimers) {
        match self {
            Self::Runner { stop } => stop.cancel(),
            Self::Ttl { key, .. } => key.iter().for_each(|key| ttl.cancel(key)),
        }
    }
}

/// Turns the registry's check events into started and stopped runners (probing checks) and
/// queued deadlines (TTL checks), and acts on those deadlines as they come.
async fn supervise(
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    mut events: UnboundedReceiver<CheckEvent>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut running: HashMap<CheckId, Handle> = HashMap::new();
    let mut ttl = TtlTimers::default();
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            (check, due) = ttl.next() => {
                if let Some(Handle::Ttl { generation, key }) = running.get_mut(&check)
                    && *generation == due
                {
                    *key = ttl.fire(&registry, &check, due);
                }
                continue;
            }
        };
        match event {
            CheckEvent::Start {
                spec,
                generation,
                run_now,
            } => {
                let handle = if spec.kind.schedule().is_some() {
                    let stop = stop.child_token();
                    let runner = Runner {
                        registry: registry.clone(),
                        shared: shared.clone(),
                        spec: spec.clone(),
                        generation,
                        run_now,
                        stop: stop.clone(),
                    };
                    tasks.spawn(runner.run());
                    Handle::Runner { stop }
                } else {
                    let key = ttl.schedule(&registry, &spec.id, generation);
                    Handle::Ttl { generation, key }
                };
                if let Some(replaced) = running.insert(spec.id, handle) {
                    replaced.stop(&mut ttl);
                }
            }
            CheckEvent::Stop { check } => {
                if let Some(handle) = running.remove(&check) {
                    handle.stop(&mut ttl);
                }
            }
            // Only TTL checks are updated through the API (the registry refuses the others).
            CheckEvent::Touched { check } => {
                if let Some(Handle::Ttl { generation, key }) = running.get_mut(&check) {
                    if let Some(old) = key.take() {
                        ttl.cancel(&old);
                    }
                    *key = ttl.schedule(&registry, &check, *generation);
                }
            }
        }
        shared
            .running
            .store(running.len(), std::sync::atomic::Ordering::Relaxed);
    }
    for handle in running.into_values() {
        handle.stop(&mut ttl);
    }
    shared.running.store(0, std::sync::atomic::Ordering::Relaxed);
}
