//! Flap damping (off by default, so Consul's semantics stay the default; hashicorp/consul#2890
//! asks for it): an instance whose health changes more than `threshold` times within `window`
//! is held out of DNS and of `?passing` until its health has not changed for a whole window.
//! The hold is this server's view, never stored: a restart forgets it, as it forgets timers.
//!
//! Changes are seen where every service is published ([`Registry::publish_service`]), whatever
//! made them (a probe, a heartbeat, another server through etcd), by comparing each instance's
//! health with the entry it replaces. Only instances that changed within the window have a
//! state here, so its size follows the churn, not the registry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Registry, ServiceEntry};
use crate::model::{Health, Instance, InstanceId, ServiceKey};

/// When an instance is held for flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapDamping {
    /// More changes than this within the window start a hold.
    pub threshold: u32,
    pub window: Duration,
}

/// One instance's recent changes.
struct Recent {
    service: ServiceKey,
    /// When its health changed, oldest first, within the window.
    changes: VecDeque<Instant>,
    /// Held out of DNS until then (moved on by every further change).
    held_until: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Flaps {
    settings: OnceLock<FlapDamping>,
    recent: Mutex<HashMap<InstanceId, Recent>>,
    /// Wakes the release loop when a hold starts.
    held: Notify,
    /// Holds started since the start, for the metrics.
    holds: AtomicU64,
}

impl Flaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Recent>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the health changes between a service's previous entry and its new instances; the
    /// instances held now, sorted.
    pub(super) fn observe(&self, previous: Option<&ServiceEntry>, instances: &[Arc<Instance>]) -> Box<[InstanceId]> {
        let Some(settings) = self.settings.get() else {
            return Box::default();
        };
        let now = Instant::now();
        let before: HashMap<&InstanceId, Health> = previous
            .map(|p| p.instances.iter().map(|i| (&i.id, i.health())).collect())
            .unwrap_or_default();
        let mut recent = self.lock();
        let mut held = Vec::new();
        for instance in instances {
            let changed = before.get(&instance.id).is_some_and(|&was| was != instance.health());
            if changed {
                let state = recent.entry(instance.id.clone()).or_insert_with(|| Recent {
                    service: instance.service.key(),
                    changes: VecDeque::new(),
                    held_until: None,
                });
                state.service = instance.service.key();
                state.changes.push_back(now);
                while state.changes.front().is_some_and(|&t| now - t > settings.window) {
                    state.changes.pop_front();
                }
                // A bound on what one instance keeps, whatever the threshold.
                while state.changes.len() > settings.threshold as usize + 1 {
                    state.changes.pop_front();
                }
                if state.changes.len() > settings.threshold as usize || state.held_until.is_some() {
                    if state.held_until.is_none() {
                        self.holds.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            service = %instance.service,
                            instance = %instance.id,
                            changes = state.changes.len(),
                            window = %crate::model::format_go_duration(settings.window),
                            "instance flapping: held out of DNS until its health is stable for a window"
                        );
                        self.held.notify_one();
                    }
                    state.held_until = Some(now + settings.window);
                }
            }
            if recent
                .get(&instance.id)
                .and_then(|s| s.held_until)
                .is_some_and(|until| until > now)
            {
                held.push(instance.id.clone());
            }
        }
        held.into_boxed_slice()
    }

    /// When the release loop must look next: the first hold to end, or the first change to
    /// leave its window.
    fn next_review(&self) -> Option<Instant> {
        let window = self.settings.get()?.window;
        self.lock()
            .values()
            .filter_map(|s| s.held_until.or_else(|| s.changes.front().map(|&t| t + window)))
            .min()
    }

    /// Ends the holds that are due and forgets changes out of the window; the services whose
    /// answers must be compiled again.
    fn review(&self) -> HashSet<ServiceKey> {
        let Some(settings) = self.settings.get() else {
            return HashSet::new();
        };
        let now = Instant::now();
        let mut released = HashSet::new();
        self.lock().retain(|id, state| {
            while state.changes.front().is_some_and(|&t| now - t >= settings.window) {
                state.changes.pop_front();
            }
            if state.held_until.is_some_and(|until| until <= now) {
                state.held_until = None;
                tracing::info!(service = %state.service.as_str(), instance = %id, "instance stable again: back in DNS");
                released.insert(state.service.clone());
            }
            state.held_until.is_some() || !state.changes.is_empty()
        });
        released
    }

    /// Instances held now.
    pub(super) fn held_now(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|s| s.held_until.is_some_and(|u| u > now))
            .count()
    }
}

impl Registry {
    /// Turns flap damping on (before anything is registered or restored).
    pub fn damp_flapping(&self, settings: FlapDamping) {
        let _ = self.flaps.settings.set(settings);
    }

    /// Flap damping's settings, if it is on.
    pub fn flap_damping(&self) -> Option<FlapDamping> {
        self.flaps.settings.get().copied()
    }

    /// Instances held out of DNS for flapping now, and holds started since the start.
    pub fn flapping(&self) -> (usize, u64) {
        (self.flaps.held_now(), self.flaps.holds.load(Ordering::Relaxed))
    }

    /// Lets held instances back into DNS once stable for the window: runs until `stop`. The
    /// health checker runs it when damping is on.
    pub async fn release_flapping(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            // Registered before the deadline is read, so a hold started meanwhile wakes it.
            let held = self.flaps.held.notified();
            let next = self.flaps.next_review();
            tokio::select! {
                () = stop.cancelled() => return,
                () = held => {}
                () = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))) => {
                    for key in self.flaps.review() {
                        self.republish(&key);
                    }
                }
            }
        }
    }
}
