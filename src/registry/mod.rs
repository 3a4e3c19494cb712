//! The live registry: the only writer of service state.
//!
//! Instances live in a `DashMap` keyed by ID; each service has an immutable [`ServiceEntry`] (its
//! instances and its compiled DNS answers) that is rebuilt whenever one of its instances changes, so
//! readers (DNS, HTTP) take one `Arc` and never see a half-applied change. Writers are serialized by
//! one mutex: a write touches a handful of entries and never waits on I/O while holding it.

mod error;

pub use error::RegistryError;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use crate::dns::answers::{AnswerCompiler, ServiceAnswers};
use crate::model::{CheckId, Health, Instance, InstanceId, ServiceKey, ServiceName};

/// One service as readers see it: a consistent snapshot of its instances and answers.
#[derive(Debug)]
pub struct ServiceEntry {
    pub name: ServiceName,
    /// Sorted by instance ID so every listing is stable.
    pub instances: Vec<Arc<Instance>>,
    pub create_index: u64,
    pub modify_index: u64,
    pub answers: ServiceAnswers,
}

impl ServiceEntry {
    /// The union of the instances' tags, sorted, without duplicates (Consul's catalog listing).
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .instances
            .iter()
            .flat_map(|i| i.tags.iter().map(|t| t.to_string()))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

pub struct Registry {
    writer: Mutex<()>,
    instances: DashMap<InstanceId, Arc<Instance>>,
    /// Read on every DNS query: lock-free reads of immutable entries.
    services: papaya::HashMap<ServiceKey, Arc<ServiceEntry>>,
    check_owner: DashMap<CheckId, InstanceId>,
    index: AtomicU64,
    compiler: AnswerCompiler,
}

impl Registry {
    pub fn new(compiler: AnswerCompiler) -> Self {
        Self {
            writer: Mutex::new(()),
            instances: DashMap::new(),
            services: papaya::HashMap::new(),
            check_owner: DashMap::new(),
            index: AtomicU64::new(1),
            compiler,
        }
    }

    // === reads ===

    /// The index of the last change (Consul's `X-Consul-Index`); starts at 1, as Consul never reports 0.
    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    pub fn instance(&self, id: &InstanceId) -> Option<Arc<Instance>> {
        self.instances.get(id).map(|e| e.value().clone())
    }

    /// Every instance, sorted by ID.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        let mut all: Vec<_> = self.instances.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// A service by name, case-insensitively.
    pub fn service(&self, name: &str) -> Option<Arc<ServiceEntry>> {
        self.service_by_key(&ServiceKey::new(name))
    }

    pub fn service_by_key(&self, key: &ServiceKey) -> Option<Arc<ServiceEntry>> {
        self.services.pin().get(key).cloned()
    }

    /// Runs `f` on a service found by its lower-case name, without taking a lock or a reference
    /// count: the DNS answer path.
    pub fn with_service<R>(&self, lower_name: &str, f: impl FnOnce(Option<&ServiceEntry>) -> R) -> R {
        let services = self.services.pin();
        f(services.get(lower_name).map(|e| &**e))
    }

    /// Every service, sorted by name.
    pub fn services(&self) -> Vec<Arc<ServiceEntry>> {
        let mut all: Vec<_> = self.services.pin().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn compiler(&self) -> &AnswerCompiler {
        &self.compiler
    }

    // === writes ===

    /// Adds or replaces an instance. A check whose definition is unchanged keeps its status.
    /// Returns the index of the change.
    pub fn register(&self, mut instance: Instance) -> Result<u64, RegistryError> {
        let _w = self.lock();
        for check in &instance.checks {
            if let Some(owner) = self.check_owner.get(&check.spec.id)
                && *owner != instance.id
            {
                return Err(RegistryError::CheckIdTaken {
                    check: check.spec.id.clone(),
                    owner: owner.clone(),
                });
            }
        }
        let index = self.next_index();
        let previous = self.instances.get(&instance.id).map(|e| e.value().clone());
        instance.modify_index = index;
        instance.create_index = index;
        if let Some(old) = &previous {
            instance.create_index = old.create_index;
            for check in &mut instance.checks {
                if let Some(kept) = old.checks.iter().find(|c| c.spec == check.spec) {
                    check.status = kept.status;
                    check.output = kept.output.clone();
                    check.last_update = kept.last_update;
                }
            }
            for check in &old.checks {
                self.check_owner.remove(&check.spec.id);
            }
        }
        for check in &instance.checks {
            self.check_owner.insert(check.spec.id.clone(), instance.id.clone());
        }
        let key = instance.service.key();
        let instance = Arc::new(instance);
        self.instances.insert(instance.id.clone(), instance.clone());
        if let Some(old) = previous {
            let old_key = old.service.key();
            if old_key != key {
                self.rebuild_service(&old_key, index, None);
            }
        }
        self.rebuild_service(&key, index, Some(&instance));
        self.publish(index);
        Ok(index)
    }

    /// Removes an instance and its checks. Returns the index of the change, or `None` if unknown.
    pub fn deregister(&self, id: &InstanceId) -> Option<u64> {
        let _w = self.lock();
        let (_, old) = self.instances.remove(id)?;
        for check in &old.checks {
            self.check_owner.remove(&check.spec.id);
        }
        let index = self.next_index();
        self.rebuild_service(&old.service.key(), index, None);
        self.publish(index);
        Some(index)
    }

    /// Sets a check's status and output (TTL updates; probe results).
    pub fn set_check_status(&self, check: &CheckId, status: Health, output: &str) -> Result<u64, RegistryError> {
        let _w = self.lock();
        let owner = self
            .check_owner
            .get(check)
            .map(|e| e.value().clone())
            .ok_or_else(|| RegistryError::UnknownCheck(check.clone()))?;
        let current = self
            .instance(&owner)
            .ok_or_else(|| RegistryError::UnknownCheck(check.clone()))?;
        let mut updated = Instance::clone(&current);
        let Some(slot) = updated.checks.iter_mut().find(|c| c.spec.id == *check) else {
            return Err(RegistryError::UnknownCheck(check.clone()));
        };
        if slot.status == status && slot.output == output {
            return Ok(self.index());
        }
        slot.status = status;
        slot.output = output.to_owned();
        slot.last_update = std::time::SystemTime::now();
        let index = self.next_index();
        updated.modify_index = index;
        let key = updated.service.key();
        self.instances.insert(owner, Arc::new(updated));
        self.rebuild_service(&key, index, None);
        self.publish(index);
        Ok(index)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the writer lock leaves no partial state behind it (every write
        // publishes whole entries), so a poisoned lock is safe to take over.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_index(&self) -> u64 {
        self.index.load(Ordering::Acquire) + 1
    }

    fn publish(&self, index: u64) {
        self.index.store(index, Ordering::Release);
    }

    /// Recompiles one service's entry (or drops it when it has no instance left). The members are
    /// the previous entry's, refreshed from the instance map, plus `joined`: the cost is that
    /// service's size, never the registry's.
    fn rebuild_service(&self, key: &ServiceKey, index: u64, joined: Option<&Arc<Instance>>) {
        let previous = self.service_by_key(key);
        let mut instances: Vec<Arc<Instance>> = previous
            .iter()
            .flat_map(|e| e.instances.iter())
            .filter_map(|i| self.instance(&i.id))
            .filter(|i| i.service.key() == *key)
            .collect();
        if let Some(joined) = joined
            && !instances.iter().any(|i| i.id == joined.id)
        {
            instances.push(joined.clone());
        }
        if instances.is_empty() {
            self.services.pin().remove(key);
            return;
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        instances.shrink_to_fit();
        let name = instances[0].service.clone();
        let answers = self.compiler.compile(&name, &instances);
        let entry = ServiceEntry {
            name,
            create_index: previous.as_ref().map_or(index, |p| p.create_index),
            modify_index: index,
            instances,
            answers,
        };
        self.services.pin().insert(key.clone(), Arc::new(entry));
    }
}
