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

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{CheckEvent, Registry, RegistryError, Writer};
use crate::model::{CheckSpec, Instance, InstanceId};
use crate::store::{Change, StoreError, StoredInstance};

/// A write the registry made, to wait for before acknowledging it.
#[must_use = "a write is acknowledged only once it is durable"]
pub struct Written(Outcome);

enum Outcome {
    Applied(u64),
    Waiting(oneshot::Receiver<Result<u64, RegistryError>>),
}

impl Written {
    /// Waits until the write is durable and applied (at once without a store); the index it
    /// was applied at.
    pub async fn durable(self) -> Result<u64, RegistryError> {
        match self.0 {
            Outcome::Applied(index) => Ok(index),
            Outcome::Waiting(receiver) => receiver.await.unwrap_or(Err(RegistryError::Store(StoreError::Closed))),
        }
    }
}

impl Registry {
    /// Adds or replaces an instance. A check whose definition is unchanged keeps its state (status,
    /// timers, the running probe).
    pub fn register(&self, mut instance: Instance) -> Result<Written, RegistryError> {
        let mut w = self.lock();
        for check in &instance.checks {
            if let Some(owner) = self.check_owner_now(&w, &check.spec.id)
                && owner != instance.id
            {
                return Err(RegistryError::CheckIdTaken {
                    check: check.spec.id.clone(),
                    owner,
                });
            }
        }
        let index = w.next_index();
        let previous = self.instance_now(&w, &instance.id);
        instance.modify_index = index;
        instance.create_index = previous.as_ref().map_or(index, |old| old.create_index);
        // Stored with the state it will most likely keep; `apply` merges again with what is
        // served then.
        keep_check_state(&mut instance, previous.as_deref(), index);
        let id = instance.id.clone();
        self.stage(&mut w, id, Some(Arc::new(instance)), index)
    }

    /// Removes an instance and its checks; `None` if unknown.
    pub fn deregister(&self, id: &InstanceId) -> Result<Option<Written>, RegistryError> {
        let mut w = self.lock();
        self.remove_instance(&mut w, id).transpose()
    }

    pub(super) fn remove_instance(&self, w: &mut Writer, id: &InstanceId) -> Option<Result<Written, RegistryError>> {
        self.instance_now(w, id)?;
        let index = w.next_index();
        Some(self.stage(w, id.clone(), None, index))
    }

    /// The instance as the next write sees it: with the writes waiting for their commit.
    fn instance_now(&self, w: &Writer, id: &InstanceId) -> Option<Arc<Instance>> {
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
    fn check_owner_now(&self, w: &Writer, check: &crate::model::CheckId) -> Option<InstanceId> {
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
    fn stage(
        &self,
        w: &mut Writer,
        id: InstanceId,
        instance: Option<Arc<Instance>>,
        index: u64,
    ) -> Result<Written, RegistryError> {
        let Some(journal) = &self.journal else {
            return Ok(Written(Outcome::Applied(self.apply(w, &id, instance, index))));
        };
        let change = match &instance {
            Some(instance) => Change::Put(Box::new(StoredInstance::from_instance(instance))),
            None => Change::Delete(id.to_string()),
        };
        let (done, receiver) = oneshot::channel();
        let me = self.me.clone();
        let staged = (id.clone(), instance.clone());
        let then = Box::new(move |committed: Result<(), StoreError>| {
            let (id, instance) = staged;
            let outcome = match me.upgrade() {
                Some(registry) => registry.committed(&id, instance, index, committed),
                None => Err(RegistryError::Store(StoreError::Closed)),
            };
            // The client may have gone: the write stands all the same.
            let _ = done.send(outcome);
        });
        journal.append(change, index, true, Some(then))?;
        let slot = w.staged.entry(id).or_insert((None, 0));
        slot.0 = instance;
        slot.1 += 1;
        Ok(Written(Outcome::Waiting(receiver)))
    }

    /// A staged write's commit finished: apply it if it succeeded, drop it if not.
    fn committed(
        &self,
        id: &InstanceId,
        instance: Option<Arc<Instance>>,
        index: u64,
        committed: Result<(), StoreError>,
    ) -> Result<u64, RegistryError> {
        let mut w = self.lock();
        if let Some(slot) = w.staged.get_mut(id) {
            slot.1 -= 1;
            if slot.1 == 0 {
                w.staged.remove(id);
            }
        }
        committed?;
        Ok(self.apply(&mut w, id, instance, index))
    }

    /// Makes a committed write visible: instance map, check ownership and runners, the services
    /// it left and joined, watchers. Returns the index it was published at: the one it was
    /// staged with, or the next one if a health update was published since (indexes seen by
    /// readers only grow).
    fn apply(&self, w: &mut Writer, id: &InstanceId, instance: Option<Arc<Instance>>, staged_index: u64) -> u64 {
        let index = staged_index.max(self.index() + 1);
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
                self.rebuild_service(&old.service.key(), index, None, true);
            }
            self.publish(index);
            self.catalog.send_replace(index);
            return index;
        };
        let mut instance = Arc::unwrap_or_clone(staged.clone());
        instance.modify_index = index;
        instance.create_index = previous.as_ref().map_or(index, |old| old.create_index);
        let started: Vec<CheckEvent> = keep_check_state(&mut instance, previous.as_deref(), index)
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
        if instance != *staged {
            self.journal_status(w, &instance);
        }
        let key = instance.service.key();
        let instance = Arc::new(instance);
        self.instances.insert(instance.id.clone(), instance.clone());
        self.index_address(&instance);
        if let Some(old) = previous {
            let old_key = old.service.key();
            if old_key != key {
                self.rebuild_service(&old_key, index, None, true);
            }
        }
        self.rebuild_service(&key, index, Some(&instance), true);
        // Once the instance is in the map: a runner looks its check up there as it starts.
        started.into_iter().for_each(|event| w.emit(event));
        self.publish(index);
        self.catalog.send_replace(index);
        index
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
/// which have to be started.
fn keep_check_state(instance: &mut Instance, previous: Option<&Instance>, index: u64) -> Vec<CheckSpec> {
    let mut new = Vec::new();
    for check in instance.checks.iter_mut() {
        match previous.and_then(|old| old.checks.iter().find(|c| c.spec == check.spec)) {
            Some(kept) => *check = kept.clone(),
            None => {
                check.generation = index;
                new.push(check.spec.clone());
            }
        }
    }
    new
}
