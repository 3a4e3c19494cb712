//! Health checking: runs every registered check on its own schedule and reports the results
//! through the registry, which rebuilds the answers DNS and the API serve.
//!
//! The registry tells the checker which checks exist ([`CheckEvent`]s, in the order of its
//! writes); the checker owns one task per check and reports only through registry methods, so
//! data still flows one way. HTTP and TCP checks are probed ([`probe`]); TTL checks are pushed by
//! their service and only expire here. Every task is tracked and stops with its check.

mod lateness;
mod probe;
mod runner;
mod thresholds;

pub use lateness::{Lateness, LatenessSummary};
pub use thresholds::Thresholds;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::CheckId;
use crate::registry::{CheckEvent, Registry};
use probe::Prober;
use runner::Runner;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot set up the HTTP client for health checks: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// What every check's task shares.
struct Shared {
    prober: Prober,
    /// Bounds the probes running at once.
    in_flight: Semaphore,
    lateness: Lateness,
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

    /// How many checks have a running task (one per registered check).
    pub fn running(&self) -> usize {
        self.tasks.len()
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

/// A running check: how to stop it, how to tell it its deadlines moved.
struct Handle {
    stop: CancellationToken,
    touched: Arc<Notify>,
}

/// Turns the registry's check events into started and stopped tasks.
async fn supervise(
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    mut events: UnboundedReceiver<CheckEvent>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut running: HashMap<CheckId, Handle> = HashMap::new();
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            CheckEvent::Start {
                spec,
                generation,
                run_now,
            } => {
                let handle = Handle {
                    stop: stop.child_token(),
                    touched: Arc::new(Notify::new()),
                };
                let runner = Runner {
                    registry: registry.clone(),
                    shared: shared.clone(),
                    spec: spec.clone(),
                    generation,
                    run_now,
                    touched: handle.touched.clone(),
                    stop: handle.stop.clone(),
                };
                if let Some(replaced) = running.insert(spec.id, handle) {
                    replaced.stop.cancel();
                }
                tasks.spawn(runner.run());
            }
            CheckEvent::Stop { check } => {
                if let Some(handle) = running.remove(&check) {
                    handle.stop.cancel();
                }
            }
            CheckEvent::Touched { check } => {
                if let Some(handle) = running.get(&check) {
                    handle.touched.notify_one();
                }
            }
        }
    }
    for handle in running.into_values() {
        handle.stop.cancel();
    }
}
