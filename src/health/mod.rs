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
use tokio::task::{AbortHandle, JoinHandle};
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
    stop: Stop,
    touched: Arc<Notify>,
}

/// How a check's task is stopped. A probing runner watches a token, so a probe in flight ends
/// cleanly; a TTL check's task holds nothing between its waits and is aborted, so it needs no
/// token of its own (one per check) nor a branch for one in its future.
enum Stop {
    Token(CancellationToken),
    Abort(AbortHandle),
}

impl Handle {
    fn stop(&self) {
        match &self.stop {
            Stop::Token(token) => token.cancel(),
            Stop::Abort(task) => task.abort(),
        }
    }
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
                let touched = Arc::new(Notify::new());
                // A task is allocated at the size of its future, and a runner's holds a probe in
                // flight (1.5 KiB a task): a TTL check, never probed, gets a task that only waits
                // for its deadlines (384 B).
                let task_stop = if spec.kind.schedule().is_some() {
                    let token = stop.child_token();
                    let runner = Runner {
                        registry: registry.clone(),
                        shared: shared.clone(),
                        spec: spec.clone(),
                        generation,
                        run_now,
                        touched: touched.clone(),
                        stop: token.clone(),
                    };
                    tasks.spawn(runner.run());
                    Stop::Token(token)
                } else {
                    let task = tasks.spawn(runner::run_ttl(
                        registry.clone(),
                        spec.id.clone(),
                        generation,
                        touched.clone(),
                    ));
                    Stop::Abort(task.abort_handle())
                };
                let handle = Handle {
                    stop: task_stop,
                    touched,
                };
                if let Some(replaced) = running.insert(spec.id, handle) {
                    replaced.stop();
                }
            }
            CheckEvent::Stop { check } => {
                if let Some(handle) = running.remove(&check) {
                    handle.stop();
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
        handle.stop();
    }
}
