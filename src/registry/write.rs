//! Registrations and deregistrations: staged, committed, then applied.
//!
//! A write is made under the writer lock on top of the writes still waiting for their commit
//! (`Writer::staged`), queued to the journal, and applied to what readers see (the instance
//! map, the service entries, DNS answers, watchers) only once its commit succeeded, in the order
//! the writes were made. A failed commit leaves the registry as it was, and the write gets the
//! store's error. The answer to the client comes after the write is applied, so what was
//! acknowledged is both durable and already answered in DNS.
//!
//! Check state is merged when a write is applied, not when it is made: a heartbeat or probe
//! result that lands while a registration waits for its commit is kept by it.
//!
//! With a shared store (etcd) the store is the log: a commit is not applied by the writer but
//! comes back, with every other server's writes, through the store's watch ([`Follower`]), and
//! the write is acknowledged once the registry has applied the revision it was committed at.
//! Check status is then part of the record like everything else (status transitions are writes
//! too); only the local timers (TTL deadlines, which definition runs) are kept from the view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::{CheckEvent, Registry, RegistryError, Writer};
use crate::model::{CheckSpec, Instance, InstanceId};
use crate::store::{Change, StoreError, StoredInstance};

/// The services a batch of changes touched, with the instances that joined each, and whether
/// the catalog (names and tags) changed.
#[derive(Default)]
pub(super) struct Touched {
    pub(super) services: std::collections::HashMap<crate::model::ServiceKey, Vec<Arc<Instance>>>,
    pub(super) catalog: bool,
}

/// When a write was acknowledged by the store, and when the failing result it carries came:
/// timed until the write is published.
pub(super) struct Timing {
    acked: Instant,
    failed_at: Option<Instant>,
}

impl Timing {
    /// A write acknowledged now, for no failing result.
    pub(super) fn now() -> Self {
        Self {
            acked: Instant::now(),
            failed_at: None,
        }
    }
}

/// How long a write committed to a shared store waits to come back through the watch before
/// the client is told it is not served yet.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A write the registry made, to wait for before acknowledging it.
#[must_use = "a write is acknowledged only once it is durable"]
pub struct Written(Outcome, Option<oneshot::Receiver<Result<(), StoreError>>>);

enum Outcome {
    Applied(u64),
    /// The commit's outcome; with a shared store, the view's applied index to wait on too.
    Waiting(
        oneshot::Receiver<Result<u64, RegistryError>>,
        Option<watch::Receiver<u64>>,
    ),
}

impl Written {
    /// The same write, acknowledged once a heartbeat's lease is renewed too.
    pub(super) fn with_heartbeat(self, heartbeat: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        Self(self.0, Some(heartbeat))
    }

    /// A write waiting for its commit's outcome (a store only this server writes).
    pub(super) fn waiting(receiver: oneshot::Receiver<Result<u64, RegistryError>>) -> Self {
        Self(Outcome::Waiting(receiver, None), None)
    }

    /// A write to a shared store made outside the journal: its outcome, then the view's
    /// applied index to wait on.
    pub(super) fn waiting_applied(
        receiver: oneshot::Receiver<Result<u64, RegistryError>>,
        applied: watch::Receiver<u64>,
    ) -> Self {
        Self(Outcome::Waiting(receiver, Some(applied)), None)
    }

    /// A write the journal did not take (it is closed): its error, when waited for.
    pub(super) fn failed(error: StoreError) -> Self {
        let (done, receiver) = oneshot::channel();
        let _ = done.send(Err(RegistryError::Store(error)));
        Self::waiting(receiver)
    }

    /// A write already applied at `index` (or nothing to write).
    pub(super) fn applied(index: u64) -> Self {
        Self(Outcome::Applied(index), None)
    }

    /// Waits until the write is durable and applied (at once without a store); the index it
    /// was applied at.
    pub async fn durable(self) -> Result<u64, RegistryError> {
        if let Some(heartbeat) = self.1 {
            heartbeat.await.unwrap_or(Err(StoreError::Closed))?;
        }
        match self.0 {
            Outcome::Applied(index) => Ok(index),
            Outcome::Waiting(receiver, applied) => {
                let index = receiver
                    .await
                    .unwrap_or(Err(RegistryError::Store(StoreError::Closed)))?;
                let Some(mut applied) = applied else {
                    return Ok(index);
                };
                let seen = tokio::time::timeout(APPLY_TIMEOUT, applied.wait_for(|applied| *applied >= index)).await;
                match seen {
                    Ok(Ok(_)) => Ok(index),
                    Ok(Err(_)) => Err(RegistryError::Store(StoreError::Closed)),
                    Err(_) => Err(RegistryError::Store(StoreError::NotYetApplied { revision: index })),
                }
            }
        }
    }
}

impl Registry {
    /// Adds or replaces an instance. A check whose definition is unchanged keeps its state (status,
    /// timers, the running probe).
    pub fn register(&self, mut instance: Instance) -> Result<Written, RegistryError> {
        let mut w = self.lock();
        if let Some(previous) = self.instance_now(&w, &instance.id) {
            // An external node's service is its registrar's, not this node's to take over.
            if !previous.node.local {
                return Err(RegistryError::IdOnOtherNode {
                    id: previous.id.to_string(),
                    node: previous.node.name.to_string(),
                });
            }
            // A service registering itself again does not take itself out of maintenance.
            super::check_writes::keep_maintenance(&mut instance, &previous);
        }
        self.register_locked(&mut w, instance)
    }

    pub(super) fn register_locked(&self, w: &mut Writer, instance: Instance) -> Result<Written, RegistryError> {
        self.check_instance(w, &instance)?;
        let index = w.next_index();
        let instance = self.prepared(w, instance, index);
        let id = instance.id.clone();
        self.stage(w, id, Some(instance), index, None, None)
    }

    /// Refuses an instance that breaks a rule (what is stored must read back at start: one
    /// that grew past a rule, by a check added on its own or maintenance kept over a
    /// re-registration, is refused here) or takes another instance's check ID.
    pub(super) fn check_instance(&self, w: &Writer, instance: &Instance) -> Result<(), RegistryError> {
        instance.validate().map_err(RegistryError::Invalid)?;
        self.check_room(w, instance)?;
        let local = self.local_node();
        for check in &instance.checks {
            if instance.node.local && local.checks.iter().any(|c| c.spec.id == check.spec.id) {
                return Err(RegistryError::Invalid(format!(
                    "check ID {:?} is a check of this server's node",
                    check.spec.id.as_str()
                )));
            }
            if let Some(owner) = self.check_owner_now(w, &check.spec.id)
                && owner != instance.id
            {
                return Err(RegistryError::CheckIdTaken {
                    check: check.spec.id.clone(),
                    owner,
                });
            }
        }
        Ok(())
    }

    /// The instance as written at `index`: its indexes set, and the state of its unchanged
    /// checks kept (it is stored with the state it will most likely keep; `apply` merges again
    /// with what is served then).
    pub(super) fn prepared(&self, w: &Writer, mut instance: Instance, index: u64) -> Arc<Instance> {
        let previous = self.instance_now(w, &instance.id);
        instance.modify_index = index;
        instance.create_index = previous.as_ref().map_or(index, |old| old.create_index);
        keep_check_state(&mut instance, previous.as_deref(), index);
        Arc::new(instance)
    }

    /// Removes an instance and its checks; `None` if unknown.
    pub fn deregister(&self, id: &InstanceId) -> Result<Option<Written>, RegistryError> {
        let mut w = self.lock();
        self.remove_instance(&mut w, id).transpose()
    }

    pub(super) fn remove_instance(&self, w: &mut Writer, id: &InstanceId) -> Option<Result<Written, RegistryError>> {
        self.instance_now(w, id)?;
        let index = w.next_index();
        Some(self.stage(w, id.clone(), None, index, None, None))
    }

    /// The instance as the next write sees it: with the writes waiting for their commit.
    pub(super) fn instance_now(&self, w: &Writer, id: &InstanceId) -> Option<Arc<Instance>> {
        match w.staged.get(id) {
            Some((staged, _)) => staged.clone(),
            None => self.instance(id),
        }
    }

    /// Whether a registration or deregistration of the instance is waiting for its commit.
    pub(super) fn is_staged(&self, w: &Writer, id: &InstanceId) -> bool {
        w.staged.contains_key(id)
    }

    /// Which instance owns a check ID, with the writes waiting for their commit.
    pub(super) fn check_owner_now(&self, w: &Writer, check: &crate::model::CheckId) -> Option<InstanceId> {
        let staged_owner = w.staged.values().find_map(|(instance, _)| {
            let instance = instance.as_ref()?;
            instance
                .checks
                .iter()
                .any(|c| c.spec.id == *check)
                .then(|| instance.id.clone())
        });
        if staged_owner.is_some() {
            return staged_owner;
        }
        // An applied owner whose staged version no longer has the check has let it go.
        let owner = self.check_owner.get(check)?.value().clone();
        (!w.staged.contains_key(&owner)).then_some(owner)
    }

    /// Queues a write for its commit, to be applied once committed; without a store, applies it.
    /// With `unless_changed_since`, the write is made only if the stored record is still at that
    /// index (see [`Change::PutIfUnchanged`]). `failed_at`: the write takes its instance out of
    /// DNS for a check's failing result, timed from then until it is.
    pub(super) fn stage(
        &self,
        w: &mut Writer,
        id: InstanceId,
        instance: Option<Arc<Instance>>,
        index: u64,
        unless_changed_since: Option<u64>,
        failed_at: Option<Instant>,
    ) -> Result<Written, RegistryError> {
        self.refuse_if_cut_off()?;
        let Some(journal) = &self.journal else {
            let index = index.max(self.index() + 1);
            return Ok(Written::applied(self.apply(w, &id, instance, index)));
        };
        let change = match (&instance, unless_changed_since) {
            (Some(instance), None) => Change::Put(Box::new(StoredInstance::from_instance(instance))),
            (Some(instance), Some(at)) => Change::PutIfUnchanged(Box::new(StoredInstance::from_instance(instance)), at),
            (None, _) => Change::Delete(id.to_string()),
        };
        let (done, receiver) = oneshot::channel();
        let me = self.me.clone();
        let staged = (id.clone(), instance.clone());
        let then = Box::new(move |committed: Result<u64, StoreError>| {
            let timing = Timing {
                acked: Instant::now(),
                failed_at,
            };
            let (id, instance) = staged;
            let outcome = match me.upgrade() {
                Some(registry) => registry.committed(&id, instance, index, committed, timing),
                None => Err(RegistryError::Store(StoreError::Closed)),
            };
            // The client may have gone: the write stands all the same.
            let _ = done.send(outcome);
        });
        journal.append(change, index, true, Some(then))?;
        let slot = w.staged.entry(id).or_insert((None, 0));
        slot.0 = instance;
        slot.1 += 1;
        let applied = journal.shared().then(|| self.applied.subscribe());
        Ok(Written(Outcome::Waiting(receiver, applied), None))
    }

    /// One write fewer waits for the instance.
    pub(super) fn unstage(w: &mut Writer, id: &InstanceId) {
        if let Some(slot) = w.staged.get_mut(id) {
            slot.1 -= 1;
            if slot.1 == 0 {
                w.staged.remove(id);
            }
        }
    }

    /// A staged write's commit finished: apply it if it succeeded, drop it if not.
    fn committed(
        &self,
        id: &InstanceId,
        instance: Option<Arc<Instance>>,
        index: u64,
        committed: Result<u64, StoreError>,
        timing: Timing,
    ) -> Result<u64, RegistryError> {
        let mut w = self.lock();
        if self.shared {
            // Applied when it comes back through the watch; staged until then, so that the
            // next write builds on it.
            match committed {
                Ok(revision) if revision > self.index() => {
                    w.pending.entry(revision).or_default().push((id.clone(), timing));
                }
                Ok(_) => {
                    // Back through the watch already.
                    Self::unstage(&mut w, id);
                    self.timed(timing);
                }
                Err(_) => Self::unstage(&mut w, id),
            }
            return Ok(committed?);
        }
        Self::unstage(&mut w, id);
        committed?;
        let index = index.max(self.index() + 1);
        let index = self.apply(&mut w, id, instance, index);
        self.timed(timing);
        Ok(index)
    }

    /// A committed write is published: how long it took since its acknowledgement, and since
    /// the failing result it was made for.
    fn timed(&self, timing: Timing) {
        self.write_side
            .write_published
            .observe(timing.acked.elapsed().as_secs_f64());
        if let Some(failed_at) = timing.failed_at {
            self.write_side
                .failure_published
                .observe(failed_at.elapsed().as_secs_f64());
        }
    }

    /// Makes a committed write visible at `index`: instance map, check ownership and runners,
    /// the services it left and joined, watchers. Returns `index`.
    pub(super) fn apply(&self, w: &mut Writer, id: &InstanceId, instance: Option<Arc<Instance>>, index: u64) -> u64 {
        let mut touched = Touched::default();
        self.apply_change(w, id, instance, index, &mut touched);
        self.rebuild_touched(touched, index);
        index
    }

    /// The instance side of [`Self::apply`]: the services it touched are rebuilt by the caller,
    /// once for all the changes of a batch (a transaction of 100 registrations to one service
    /// rebuilds it once, not 100 times).
    pub(super) fn apply_change(
        &self,
        w: &mut Writer,
        id: &InstanceId,
        instance: Option<Arc<Instance>>,
        index: u64,
        touched: &mut Touched,
    ) {
        w.last_index = w.last_index.max(index);
        let previous = self.instances.get(id).map(|e| e.value().clone());
        if let Some(old) = &previous {
            self.unindex_address(old);
            for check in &old.checks {
                self.check_owner.remove(&check.spec.id);
                let kept = instance
                    .as_ref()
                    .is_some_and(|new| new.checks.iter().any(|c| c.spec == check.spec));
                if !kept {
                    w.emit(CheckEvent::Stop {
                        check: check.spec.id.clone(),
                    });
                }
            }
        }
        let Some(staged) = instance else {
            if let Some(old) = previous {
                self.instances.remove(id);
                touched.services.entry(old.service.key()).or_default();
                touched.catalog = true;
            }
            return;
        };
        let mut instance = Arc::unwrap_or_clone(staged.clone());
        instance.modify_index = index;
        // Made on the node as it was then: the node as it is now.
        if let Some(node) = self.applied_node(&instance.node) {
            instance.node = node;
        }
        let new_checks = if self.shared {
            // The record is the truth, its create index etcd's; only local timers are kept.
            keep_check_timers(&mut instance, previous.as_deref(), index, |check| {
                self.cluster.leases.contains_key(check)
            })
        } else {
            instance.create_index = previous.as_ref().map_or(index, |old| old.create_index);
            keep_check_state(&mut instance, previous.as_deref(), index)
        };
        // A change of health alone leaves the catalog (names and tags) as it was.
        touched.catalog |= previous
            .as_ref()
            .is_none_or(|old| old.service != instance.service || old.tags != instance.tags);
        let started: Vec<CheckEvent> = new_checks
            .into_iter()
            .map(|spec| CheckEvent::Start {
                spec,
                generation: index,
                run_now: false,
            })
            .collect();
        for check in &instance.checks {
            self.check_owner.insert(check.spec.id.clone(), instance.id.clone());
        }
        // What is stored was made before the merge: store what is served, best effort, as any
        // health update is.
        if !self.shared && instance != *staged {
            self.journal_status(w, &instance);
        }
        let key = instance.service.key();
        let instance = Arc::new(instance);
        self.instances.insert(instance.id.clone(), instance.clone());
        self.index_address(&instance);
        if let Some(old) = previous {
            let old_key = old.service.key();
            if old_key != key {
                touched.services.entry(old_key).or_default();
            }
        }
        touched.services.entry(key).or_default().push(instance);
        // Once the instance is in the map: a runner looks its check up there as it starts.
        started.into_iter().for_each(|event| w.emit(event));
    }

    /// Rebuilds the services a batch of changes touched, each once, and publishes `index`.
    pub(super) fn rebuild_touched(&self, touched: Touched, index: u64) {
        for (key, joined) in touched.services {
            self.rebuild_service(&key, index, &joined, true);
        }
        self.publish(index);
        if touched.catalog {
            self.catalog.send_replace(index);
        }
    }

    /// A revision of the shared store applied: the writes committed at or before it are
    /// served now, and no longer staged.
    pub(super) fn applied_up_to(&self, w: &mut Writer, index: u64) {
        let later = w.pending.split_off(&(index + 1));
        let done = std::mem::replace(&mut w.pending, later);
        for (id, timing) in done.into_values().flatten() {
            Self::unstage(w, &id);
            self.timed(timing);
        }
        let later = w.pending_nodes.split_off(&(index + 1));
        let done = std::mem::replace(&mut w.pending_nodes, later);
        for key in done.into_values().flatten() {
            Self::unstage_node(w, &key);
        }
        self.publish(index);
        self.applied.send_replace(index);
    }

    /// A record from the shared store as an instance; a record no registration could make
    /// (written by a newer or broken server) is logged and left out.
    pub(super) fn instance_of_record(&self, record: StoredInstance) -> Option<Arc<Instance>> {
        let id = record.id.clone();
        match self
            .stored_node(record.node.as_deref())
            .and_then(|node| record.into_instance(node))
        {
            Ok(instance) => Some(Arc::new(instance)),
            Err(error) => {
                tracing::error!(instance = %id, %error, "an instance record in etcd is not valid: skipped");
                None
            }
        }
    }

    /// Stores an instance's health, best effort: a heartbeat does not wait for a disk sync, and a
    /// disk that cannot be written does not stop health from changing in memory. Skipped while a
    /// registration or deregistration of the instance waits for its commit: the record queued
    /// after it would undo it on disk (the write stores the health it applies).
    pub(super) fn journal_status(&self, w: &Writer, instance: &Instance) {
        if let Some(journal) = &self.journal
            && !self.is_staged(w, &instance.id)
        {
            let record = Box::new(StoredInstance::from_instance(instance));
            // A closed journal means the server is stopping: the health is restored as last
            // committed and probed again.
            let _ = journal.append(Change::Put(record), instance.modify_index, false, None);
        }
    }
}

/// A check whose definition is unchanged keeps its state (status, timers, generation: its running
/// probe) from `previous`; a new one gets `index` as its generation. Returns the new definitions,
/// which have to be started. A check whose status its registrar gives keeps the state it is
/// written with (its status and output are what the write says).
fn keep_check_state(instance: &mut Instance, previous: Option<&Instance>, index: u64) -> Vec<CheckSpec> {
    let mut new = Vec::new();
    for check in instance.checks.iter_mut() {
        match previous.and_then(|old| old.checks.iter().find(|c| c.spec == check.spec)) {
            Some(kept)
                if matches!(kept.spec.kind, crate::model::CheckKind::External) && kept.output != check.output =>
            {
                check.generation = kept.generation;
            }
            Some(kept) => *check = kept.clone(),
            None => {
                check.generation = index;
                new.push(check.spec.clone());
            }
        }
    }
    new
}

/// For a record that comes from the shared store: a check whose definition is unchanged keeps
/// its local timers (the TTL deadline, the generation its runner goes by) and takes everything
/// else (status, output, since when critical) from the record. Returns the new definitions.
///
/// A new TTL check whose heartbeat lease is alive already (its ID was heartbeaten before) has
/// no deadline of its own: the lease is what counts.
fn keep_check_timers(
    instance: &mut Instance,
    previous: Option<&Instance>,
    index: u64,
    has_lease: impl Fn(&crate::model::CheckId) -> bool,
) -> Vec<CheckSpec> {
    let mut new = Vec::new();
    for check in instance.checks.iter_mut() {
        match previous.and_then(|old| old.checks.iter().find(|c| c.spec == check.spec)) {
            Some(kept) => {
                check.generation = kept.generation;
                check.ttl_deadline = kept.ttl_deadline;
            }
            None => {
                check.generation = index;
                if has_lease(&check.spec.id) {
                    check.ttl_deadline = None;
                }
                new.push(check.spec.clone());
            }
        }
    }
    new
}
