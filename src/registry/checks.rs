//! Check state: TTL heartbeats, probe results, expiry and reaping, and the event stream that tells
//! the health checker which checks to run.
//!
//! Every change that depends on time is conditional on what the registry holds when it is applied
//! (the definition's generation, the TTL deadline, how long the check has been critical), so a
//! timer that fires late or races a heartbeat can never apply a stale decision.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::Instant;

use super::{Held, Registry, RegistryError, Writer, Written};
use crate::model::{Check, CheckId, CheckKind, CheckSpec, Health, Instance, bounded_output};

/// What the health checker must do, sent in the order of the registry's writes.
#[derive(Debug, Clone)]
pub enum CheckEvent {
    /// A check definition was stored: run it. `generation` identifies this definition.
    /// `run_now`: probe at once (a restored check: its status is from before the restart)
    /// rather than at a staggered moment within the interval.
    Start {
        spec: CheckSpec,
        generation: u64,
        run_now: bool,
    },
    /// A check was removed, or redefined (a `Start` follows): stop running it.
    Stop { check: CheckId },
    /// A TTL check was updated through the API: its deadlines moved.
    Touched { check: CheckId },
}

/// The moments a check's runner must act on, as the registry holds them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTimers {
    /// TTL checks: when the check expires unless a heartbeat comes first.
    pub ttl_deadline: Option<Instant>,
    /// When the instance is to be deregistered for having been critical too long.
    pub reap_at: Option<Instant>,
}

/// The output Consul gives a TTL check that nobody updated in time.
pub const TTL_EXPIRED: &str = "TTL expired";

impl Registry {
    /// The stream of check starts and stops, beginning with a `Start` for every check already
    /// registered (restored ones, at start: they run at once). A second subscription replaces
    /// the first.
    pub fn subscribe_checks(&self) -> UnboundedReceiver<CheckEvent> {
        let mut w = self.lock();
        let (events, receiver) = unbounded_channel();
        let local = self.local_node();
        let instances = self.instances.iter();
        let checks = local.checks.iter().filter(|c| super::nodes::runs(c)).cloned();
        for check in instances.flat_map(|i| i.checks.to_vec()).chain(checks) {
            let _ = events.send(CheckEvent::Start {
                spec: check.spec.clone(),
                generation: check.generation,
                run_now: true,
            });
        }
        w.check_events = Some(events);
        receiver
    }

    /// Runs `f` on one definition of a check (and its instance) as they are now; `None` once the
    /// check is removed or redefined.
    fn with_check<R>(&self, check: &CheckId, generation: u64, f: impl FnOnce(&Instance, &Check) -> R) -> Option<R> {
        let owner = self.check_owner.get(check)?.value().clone();
        let instance = self.instance(&owner)?;
        let found = instance
            .checks
            .iter()
            .find(|c| c.spec.id == *check && c.generation == generation)?;
        Some(f(&instance, found))
    }

    /// The current deadlines of one definition of a check; `None` once it is removed or redefined.
    /// (A check of this server's node is never reaped: only services are deregistered.)
    pub fn check_timers(&self, check: &CheckId, generation: u64) -> Option<CheckTimers> {
        self.with_check(check, generation, |_, c| CheckTimers {
            ttl_deadline: c.ttl_deadline,
            reap_at: c.reap_at(),
        })
        .or_else(|| {
            self.with_node_check(check, generation, |c| CheckTimers {
                ttl_deadline: c.ttl_deadline,
                reap_at: None,
            })
        })
    }

    /// A TTL heartbeat (`PUT /v1/agent/check/pass|warn|fail|update/<id>`): sets the status and
    /// restarts the TTL. Refused for checks that are probed, as Consul does. A new status or
    /// output is a write, to wait for like a registration.
    pub fn ttl_update(&self, check: &CheckId, status: Health, output: &str) -> Result<Written, RegistryError> {
        self.refuse_if_cut_off()?;
        let mut w = self.lock();
        let now = Instant::now();
        // With a shared store, a live heartbeat lease is what keeps the check alive, not a
        // deadline here (see `cluster.rs`).
        let lease = self.shared.then(|| self.heartbeat_lease(check)).flatten();
        let mut ttl_of = None;
        let written = self.update_check(
            &mut w,
            check,
            |c| {
                let CheckKind::Ttl { ttl } = c.spec.kind else {
                    return Err(RegistryError::NotTtl(check.clone()));
                };
                ttl_of = Some(ttl);
                if lease.is_none() {
                    c.ttl_deadline = Some(now + ttl);
                }
                Ok(c.set_status(status, output, now))
            },
            false,
        )?;
        w.emit(CheckEvent::Touched { check: check.clone() });
        match (&self.journal, ttl_of) {
            (Some(journal), Some(ttl)) if self.shared => {
                let (done, renewed) = tokio::sync::oneshot::channel();
                journal.heartbeat(
                    check.as_str(),
                    ttl,
                    lease,
                    Box::new(move |result| {
                        let _ = done.send(result);
                    }),
                );
                Ok(written.with_heartbeat(renewed))
            }
            _ => Ok(written),
        }
    }

    /// A probe's result, already past its thresholds. Ignored when the check has been removed or
    /// redefined since the probe started.
    pub fn record_probe(&self, check: &CheckId, generation: u64, status: Health, output: &str) {
        let mut w = self.lock();
        // Most probes repeat the last result: settle those without copying the instance.
        let same = |c: &Check| c.status == status && c.output == bounded_output(output);
        let unchanged = self
            .with_check(check, generation, |_, c| same(c))
            .or_else(|| self.with_node_check(check, generation, same));
        if unchanged != Some(false) {
            return;
        }
        let _ = self.update_check(
            &mut w,
            check,
            |c| Ok(c.generation == generation && c.set_status(status, output, Instant::now())),
            true,
        );
    }

    /// Turns a TTL check critical if its deadline has passed with no heartbeat.
    pub fn expire_ttl(&self, check: &CheckId, generation: u64) {
        let mut w = self.lock();
        let now = Instant::now();
        let _ = self.update_check(
            &mut w,
            check,
            |c| {
                if c.generation != generation || c.ttl_deadline.is_none_or(|deadline| deadline > now) {
                    return Ok(false);
                }
                let expired = c.set_status(Health::Critical, TTL_EXPIRED, now);
                // With a shared store the expiry is a write that etcd may not take (another
                // server changed the record meanwhile): look again shortly, until it is served.
                c.ttl_deadline = (expired && self.shared).then(|| now + super::EXPIRY_RETRY);
                Ok(expired)
            },
            true,
        );
    }

    /// Deregisters the check's instance if the check has been critical for longer than its
    /// `DeregisterCriticalServiceAfter`. True when a write to the instance is on its way (a
    /// deregistration stops the check once applied; if its commit fails, or the write was another,
    /// the next call looks again).
    pub fn reap_critical(&self, check: &CheckId, generation: u64) -> bool {
        let mut w = self.lock();
        let now = Instant::now();
        let due = self.with_check(check, generation, |instance, c| {
            let due = c.reap_at().is_some_and(|at| at <= now);
            due.then(|| (instance.id.clone(), instance.service.clone()))
        });
        let Some(Some((owner, service))) = due else {
            return false;
        };
        // A write to the instance is on its way: look again once it is applied.
        if self.is_staged(&w, &owner) {
            return true;
        }
        tracing::warn!(
            service = %service,
            instance = %owner,
            check = %check,
            "check critical for longer than DeregisterCriticalServiceAfter: deregistering"
        );
        // Nobody waits for this write: the runner sees its outcome in the registry.
        self.remove_instance(&mut w, &owner)
            .is_some_and(|written| written.is_ok())
    }

    /// Applies `change` to one check. When it reports a visible change (status or output), the
    /// instance gets a new index and its service is rebuilt; answers are recompiled only if the
    /// instance's health changed. Timer-only changes are kept in the served instance without a
    /// new index: timers are this server's own, never stored.
    ///
    /// With a shared store a visible change is a write, made on top of the writes still waiting
    /// (so a status never undoes a registration on its way), and served once it comes back.
    /// With `hold` (a check's own result, which nobody waits for), a write that etcd does not
    /// take is held and made again once etcd is back.
    pub(super) fn update_check(
        &self,
        w: &mut Writer,
        check: &CheckId,
        change: impl FnOnce(&mut Check) -> Result<bool, RegistryError>,
        hold: bool,
    ) -> Result<Written, RegistryError> {
        if self.check_owner_now(w, check).is_none() && self.local_node().checks.iter().any(|c| c.spec.id == *check) {
            return self.update_node_check(w, check, change);
        }
        // The failing result's moment, for the time until its instance is out of DNS.
        let arrived = std::time::Instant::now();
        let unknown = || RegistryError::UnknownCheck(check.clone());
        let (owner, base) = if self.shared {
            let owner = self.check_owner_now(w, check).ok_or_else(unknown)?;
            let base = self.instance_now(w, &owner);
            (owner, base)
        } else {
            let owner = self
                .check_owner
                .get(check)
                .map(|e| e.value().clone())
                .ok_or_else(unknown)?;
            let base = self.instance(&owner);
            (owner, base)
        };
        let base = base.ok_or_else(unknown)?;
        let served = self.instance(&owner);
        let served_check = |spec: &CheckSpec| {
            served
                .as_ref()
                .and_then(|i| i.checks.iter().find(|c| c.spec == *spec).cloned())
        };
        let mut updated = Instance::clone(&base);
        let slot = updated
            .checks
            .iter_mut()
            .find(|c| c.spec.id == *check)
            .ok_or_else(unknown)?;
        // The timers as this server runs them (a staged write carries older ones).
        if let Some(running) = served_check(&slot.spec) {
            slot.generation = running.generation;
            slot.ttl_deadline = running.ttl_deadline;
        }
        let before = slot.status;
        let visible = change(slot)?;
        let (after, output) = (slot.status, slot.output.clone());
        let (spec, deadline, generation) = (slot.spec.clone(), slot.ttl_deadline, slot.generation);
        if (!visible || self.shared)
            && let Some(served) = &served
            && served_check(&spec).is_some_and(|c| c.ttl_deadline != deadline)
        {
            let mut timed = Instance::clone(served);
            for c in timed.checks.iter_mut().filter(|c| c.spec == spec) {
                c.ttl_deadline = deadline;
            }
            self.instances.insert(owner.clone(), Arc::new(timed));
        }
        if !visible {
            return Ok(Written::applied(self.index()));
        }
        if after != before {
            self.count_transition(before, after);
            tracing::info!(
                service = %updated.service,
                instance = %updated.id,
                check = %check,
                from = before.as_str(),
                to = after.as_str(),
                output = ?output,
                "check status changed"
            );
        }
        let index = w.next_index();
        updated.modify_index = index;
        let leaves_dns = base.health() != Health::Critical && updated.health() == Health::Critical;
        let failed_at = leaves_dns.then_some(arrived);
        if self.shared {
            // A newer result replaces one held.
            w.held.remove(check);
            let held = hold.then_some(Held {
                generation,
                status: after,
                output,
            });
            // A check's own result is made on the record as last seen from etcd (unless on a write
            // of this server's still on its way): if another server changed it meanwhile
            // (deregistered it, registered it again), that change stands, and the result is
            // dropped, to be found again on it. A client's update is written as it asked.
            let unless_changed_since = (hold && !self.is_staged(w, &owner)).then_some(base.modify_index);
            return match (
                self.stage(
                    w,
                    owner,
                    Some(Arc::new(updated)),
                    index,
                    unless_changed_since,
                    failed_at,
                ),
                held,
            ) {
                (Ok(written), Some(held)) => {
                    self.hold_if_refused(check.clone(), held, written);
                    Ok(Written::applied(self.index()))
                }
                (Ok(written), None) => Ok(written),
                (Err(error), held) => {
                    if let Some(held) = held {
                        w.held.insert(check.clone(), held);
                    }
                    Err(error)
                }
            };
        }
        let recompile = updated.health() != base.health();
        let key = updated.service.key();
        // Statuses are kept best effort (restored as last known, then re-checked).
        self.journal_status(w, &updated);
        self.instances.insert(owner, Arc::new(updated));
        self.rebuild_service(&key, index, &[], recompile);
        self.publish(index);
        if let Some(failed_at) = failed_at {
            let took = failed_at.elapsed().as_secs_f64();
            self.write_side.failure_published.observe(took);
        }
        Ok(Written::applied(index))
    }
}
