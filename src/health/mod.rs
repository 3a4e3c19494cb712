//! Health checking: runs every registered check on its own schedule and reports the results
//! through the registry, which rebuilds the answers DNS and the API serve.
//!
//! The registry tells the checker which checks exist ([`CheckEvent`]s, in the order of its
//! writes) and the checker reports only through registry methods, so data still flows one way.
//! HTTP and TCP checks are probed, each by a task of its own ([`runner`], [`probe`]); TTL checks
//! are pushed by their service and only expire or reap here, from one timer queue ([`ttl`]).
//! Every task is tracked and stops with its check.

mod grpc;
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

use crate::model::{CheckId, CheckSpec};
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
    /// Probe durations by kind and result.
    probe_times: crate::metrics::ProbeTimes,
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
            probe_times: registry.write_side().probes.clone(),
        });
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        if registry.flap_damping().is_some() {
            let (registry, stop) = (registry.clone(), stop.clone());
            tasks.spawn(async move { registry.release_flapping(stop).await });
        }
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
        key: Option<Key>,
    },
}

/// A check the registry holds, and how it runs here: `None` while another server runs it.
struct Known {
    spec: CheckSpec,
    generation: u64,
    handle: Option<Handle>,
}

impl Handle {
    fn stop(&self, ttl: &mut TtlTimers) {
        match self {
            Self::Runner { stop } => stop.cancel(),
            Self::Ttl { key } => key.iter().for_each(|key| ttl.cancel(key)),
        }
    }
}

/// What starts and stops checks.
struct Supervisor {
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    stop: CancellationToken,
    ttl: TtlTimers,
    checks: HashMap<CheckId, Known>,
}

impl Supervisor {
    /// Runs a check here: a runner for a probed one, a queued deadline for a TTL one.
    fn start(&mut self, spec: &CheckSpec, generation: u64, run_now: bool) -> Handle {
        self.shared.running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if spec.kind.schedule().is_some() {
            let stop = self.stop.child_token();
            let runner = Runner {
                registry: self.registry.clone(),
                shared: self.shared.clone(),
                spec: spec.clone(),
                generation,
                run_now,
                stop: stop.clone(),
            };
            self.tasks.spawn(runner.run());
            Handle::Runner { stop }
        } else {
            Handle::Ttl {
                key: self.ttl.schedule(&self.registry, &spec.id, generation),
            }
        }
    }

    fn handle(&mut self, event: CheckEvent) {
        match event {
            CheckEvent::Start {
                spec,
                generation,
                run_now,
            } => {
                let handle = self
                    .registry
                    .runs_here(&spec.id)
                    .then(|| self.start(&spec, generation, run_now));
                let known = Known {
                    spec,
                    generation,
                    handle,
                };
                if let Some(replaced) = self.checks.insert(known.spec.id.clone(), known)
                    && let Some(handle) = replaced.handle
                {
                    self.stop_running(handle);
                }
            }
            CheckEvent::Stop { check } => {
                if let Some(handle) = self.checks.remove(&check).and_then(|known| known.handle) {
                    self.stop_running(handle);
                }
            }
            // Only TTL checks are updated through the API (the registry refuses the others).
            CheckEvent::Touched { check } => {
                if let Some(Known {
                    generation,
                    handle: Some(Handle::Ttl { key }),
                    ..
                }) = self.checks.get_mut(&check)
                {
                    if let Some(old) = key.take() {
                        self.ttl.cancel(&old);
                    }
                    *key = self.ttl.schedule(&self.registry, &check, *generation);
                }
            }
        }
    }

    /// The live servers changed: runs the checks that are this server's now (at once: their
    /// last run elsewhere may be a while ago) and stops those that went to another.
    fn deal(&mut self) {
        let (mut taken, mut given) = (0, 0);
        let ids: Vec<CheckId> = self.checks.keys().cloned().collect();
        for id in ids {
            let here = self.registry.runs_here(&id);
            let known = &self.checks[&id];
            match (&known.handle, here) {
                (None, true) => {
                    let (spec, generation) = (known.spec.clone(), known.generation);
                    let handle = self.start(&spec, generation, true);
                    self.checks.get_mut(&id).expect("listed").handle = Some(handle);
                    taken += 1;
                }
                (Some(_), false) => {
                    if let Some(handle) = self.checks.get_mut(&id).and_then(|k| k.handle.take()) {
                        self.stop_running(handle);
                    }
                    given += 1;
                }
                _ => {}
            }
        }
        let running = self.shared.running.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            taken,
            given,
            running,
            elsewhere = self.checks.len() - running,
            "checks dealt among the servers"
        );
    }

    /// Stops a check running here; [`Shared::running`] counts those [`Self::start`] started.
    fn stop_running(&mut self, handle: Handle) {
        handle.stop(&mut self.ttl);
        self.shared.running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Turns the registry's check events into started and stopped runners (probing checks) and
/// queued deadlines (TTL checks), and acts on those deadlines as they come. With a shared store
/// only the checks this server owns run here, dealt again whenever the servers change.
async fn supervise(
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    mut events: UnboundedReceiver<CheckEvent>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut membership = registry.membership();
    let mut supervisor = Supervisor {
        registry,
        shared,
        tasks,
        stop: stop.clone(),
        ttl: TtlTimers::default(),
        checks: HashMap::new(),
    };
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => supervisor.handle(event),
                None => break,
            },
            changed = changed(&mut membership) => {
                if changed {
                    supervisor.deal();
                } else {
                    membership = None; // the registry is gone: stopping
                }
            }
            (check, due) = supervisor.ttl.next() => {
                if let Some(Known { generation, handle: Some(Handle::Ttl { key }), .. }) =
                    supervisor.checks.get_mut(&check)
                    && *generation == due
                {
                    *key = supervisor.ttl.fire(&supervisor.registry, &check, due);
                }
                continue;
            }
        }
    }
    for handle in supervisor.checks.into_values().filter_map(|k| k.handle) {
        handle.stop(&mut supervisor.ttl);
    }
    supervisor.shared.running.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// Waits for the servers to change; never, with a store of its own.
async fn changed(membership: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match membership {
        Some(membership) => membership.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
