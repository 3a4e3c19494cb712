//! The live registry: the only writer of service state.
//!
//! Instances live in a `DashMap` keyed by ID; each service has an immutable [`ServiceEntry`] (its
//! instances), rebuilt whenever one of its instances changes, so readers (DNS, HTTP) take one
//! snapshot and never see a half-applied change; a [`ServiceListener`] (DNS, which compiles its
//! answers) hears of each change before it is acknowledged. Writers are serialized by one mutex:
//! a write touches a handful of entries and never waits on I/O while holding it.

mod bounds;
mod check_writes;
mod checks;
mod cluster;
mod error;
mod flaps;
pub mod kv;
mod nodes;
mod watches;
mod write;

pub use bounds::{Bound, Bounds};
pub use checks::{CheckEvent, CheckTimers};
pub use error::RegistryError;
pub use flaps::FlapDamping;
pub use nodes::{CatalogRegistration, CatalogRemoval, NODE_MAINTENANCE};
pub use watches::Watch;
pub use write::Written;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use dashmap::DashMap;
use tokio::sync::watch;

use crate::model::{Address, CheckId, Health, Instance, InstanceId, Node, ServiceKey, ServiceName};
use crate::store::{Journal, Store, StoredInstance};

/// With a shared store, how soon a TTL check's expiry is looked at again while it is not yet
/// served (its write on its way, or not taken).
const EXPIRY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// One service as readers see it: a consistent snapshot of its instances.
#[derive(Debug)]
pub struct ServiceEntry {
    pub name: ServiceName,
    /// Sorted by instance ID so every listing is stable.
    pub instances: Vec<Arc<Instance>>,
    pub create_index: u64,
    pub modify_index: u64,
    /// Instances held out of DNS and of `?passing` for flapping, sorted ([`flaps`]).
    pub flapping: Box<[InstanceId]>,
}

impl ServiceEntry {
    /// Held out of DNS for flapping.
    pub fn is_flapping(&self, id: &InstanceId) -> bool {
        self.flapping.binary_search(id).is_ok()
    }

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

/// Told of every change to a service that DNS shows (its instances, their health), under the
/// writer lock and before the write is acknowledged: DNS compiles its answers from it, so a
/// registration is in DNS before its 200. `None`: the service has no instance left.
pub trait ServiceListener: Send + Sync {
    fn service_changed(&self, key: &ServiceKey, service: Option<&ServiceEntry>);
}

/// What only writers touch, behind the writer lock.
#[derive(Default)]
struct Writer {
    /// Where check starts and stops go (the health checker), once it has subscribed.
    check_events: Option<tokio::sync::mpsc::UnboundedSender<CheckEvent>>,
    /// Registrations and deregistrations waiting for their commit, by instance: the instance as
    /// it will be (`None`: removed) and how many writes to it are waiting. A write is made on top
    /// of them; readers see none of them until they are applied.
    staged: HashMap<InstanceId, (Option<Arc<Instance>>, usize)>,
    /// The last index given to a write, staged or applied; the published index trails it.
    last_index: u64,
    /// With a shared store: the instances of writes committed at each revision that has not
    /// come back through the watch yet (they stay staged until it has).
    pending: BTreeMap<u64, Vec<(InstanceId, write::Timing)>>,
    /// With a shared store: the nodes of catalog writes committed at each revision that has
    /// not come back through the watch yet.
    pending_nodes: BTreeMap<u64, Vec<ServiceKey>>,
    /// With a shared store: check results etcd did not take, to write once it is back.
    held: HashMap<CheckId, Held>,
    /// Key/value writes waiting for their commit, by key: the entry as it will be (`None`:
    /// deleted) and how many writes to it are waiting.
    kv_staged: HashMap<Box<str>, (Option<Arc<kv::KvEntry>>, usize)>,
    /// Node writes waiting for their commit.
    nodes_staged: nodes::StagedNodes,
}

/// A check's result that could not be written.
struct Held {
    /// The definition it is a result of.
    generation: u64,
    status: crate::model::Health,
    output: String,
}

impl Writer {
    /// Sent under the writer lock, so the health checker sees changes in the registry's order.
    fn emit(&self, event: CheckEvent) {
        if let Some(events) = &self.check_events {
            // A closed channel means the checker has stopped (shutdown): nothing left to tell.
            let _ = events.send(event);
        }
    }

    fn next_index(&mut self) -> u64 {
        self.last_index += 1;
        self.last_index
    }
}

pub struct Registry {
    /// Itself, for the callbacks that apply a write once it is committed.
    me: Weak<Registry>,
    writer: Mutex<Writer>,
    /// Where changes are made durable; `None`: the registry lives in memory only.
    journal: Option<Journal>,
    /// The store is shared with other servers (etcd): changes are applied as they come back
    /// from it ([`crate::store::Follower`]), and the index is its revision.
    shared: bool,
    /// The index applied whole (every change of that revision), for writes waiting to be served.
    applied: watch::Sender<u64>,
    /// With a shared store: the servers, heartbeat leases, and whether etcd can be reached.
    cluster: cluster::ClusterView,
    instances: DashMap<InstanceId, Arc<Instance>>,
    /// This server's own node, as it is now (maintenance changes it).
    local_node: arc_swap::ArcSwap<Node>,
    /// External nodes (registered through the catalog), by lower-case name.
    nodes: DashMap<ServiceKey, Arc<Node>>,
    services: papaya::HashMap<ServiceKey, Arc<ServiceEntry>>,
    /// Who is told of service changes (DNS's answers).
    listener: Arc<dyn ServiceListener>,
    /// The address of instances registered without one (this node's), for the address index.
    node_addr: IpAddr,
    check_owner: DashMap<CheckId, InstanceId>,
    /// The instances at each address (node-address instances under the node's), for PTR answers.
    by_address: DashMap<IpAddr, Vec<(InstanceId, ServiceKey)>>,
    /// Blocking queries on one service wait on its channel (the index of its last change),
    /// which lives while a query waits on it ([`Watch`]): a change wakes only the watchers of
    /// that service, and a read of a name nobody watches leaves nothing behind.
    service_watches: DashMap<ServiceKey, watch::Sender<u64>>,
    /// The index of the last change to the set of instances (registrations, deregistrations);
    /// `/v1/catalog/services` watchers wait on it, health changes do not wake them.
    catalog: watch::Sender<u64>,
    /// The index of the last change of any kind (health included): what the dashboard's list
    /// and `/v1/health/state/*` watchers wait on.
    everything: watch::Sender<u64>,
    index: AtomicU64,
    /// Check status changes by (from, to) health, for the metrics.
    transitions: [[AtomicU64; 3]; 3],
    /// Flap damping's view of recent health changes (off unless configured).
    flaps: flaps::Flaps,
    /// The write side's histograms (see [`crate::metrics::WriteSide`]).
    write_side: crate::metrics::WriteSide,
    /// The key/value store.
    kv: kv::Kv,
    /// How much it holds at most ([`bounds`]); none until set.
    bounds: std::sync::OnceLock<Bounds>,
}

impl Registry {
    /// An in-memory registry (benchmarks, tests of the answer path) on this server's node
    /// `local` (instances without an address are at its address); `listener` hears of every
    /// service change.
    pub fn new(local: Node, listener: Arc<dyn ServiceListener>) -> Arc<Self> {
        Self::build(local, listener, None)
    }

    /// A registry whose changes go to `journal`.
    pub fn with_journal(local: Node, listener: Arc<dyn ServiceListener>, journal: Journal) -> Arc<Self> {
        Self::build(local, listener, Some(journal))
    }

    fn build(local: Node, listener: Arc<dyn ServiceListener>, journal: Option<Journal>) -> Arc<Self> {
        let node_addr = match local.address {
            Address::Ip(ip) => ip,
            // `Node::local` gives it an IP address.
            _ => IpAddr::from([127, 0, 0, 1]),
        };
        let shared = journal.as_ref().is_some_and(Journal::shared);
        let mut write_side = crate::metrics::WriteSide::default();
        if let Some(journal) = &journal {
            write_side.commit_seconds = journal.commit_seconds.clone();
            write_side.commit_batch = journal.commit_batch.clone();
        }
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            journal,
            shared,
            applied: watch::Sender::new(1),
            cluster: cluster::ClusterView::default(),
            writer: Mutex::new(Writer {
                last_index: 1,
                ..Writer::default()
            }),
            instances: DashMap::new(),
            local_node: arc_swap::ArcSwap::from_pointee(local),
            nodes: DashMap::new(),
            services: papaya::HashMap::new(),
            listener,
            node_addr,
            check_owner: DashMap::new(),
            by_address: DashMap::new(),
            service_watches: DashMap::new(),
            catalog: watch::Sender::new(1),
            everything: watch::Sender::new(1),
            index: AtomicU64::new(1),
            transitions: Default::default(),
            flaps: flaps::Flaps::default(),
            write_side,
            kv: kv::Kv::default(),
            bounds: std::sync::OnceLock::new(),
        })
    }

    // === reads ===

    /// The index of the last change (Consul's `X-Consul-Index`); starts at 1, as Consul never reports 0.
    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// The histograms the write side observes into, for the metrics.
    pub fn write_side(&self) -> &crate::metrics::WriteSide {
        &self.write_side
    }

    /// How many times a check went from one status to another since the start, by
    /// `[from][to]` in [`Health`] order (passing, warning, critical).
    pub fn transitions(&self) -> [[u64; 3]; 3] {
        self.transitions
            .each_ref()
            .map(|row| row.each_ref().map(|n| n.load(Ordering::Relaxed)))
    }

    fn count_transition(&self, from: Health, to: Health) {
        self.transitions[from as usize][to as usize].fetch_add(1, Ordering::Relaxed);
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

    /// Every service, sorted by name.
    pub fn services(&self) -> Vec<Arc<ServiceEntry>> {
        let mut all: Vec<_> = self.services.pin().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The services with an instance at `ip` (registered with that address, or, for the node's
    /// address, without one), sorted, each once.
    pub fn services_at(&self, ip: IpAddr) -> Vec<Arc<ServiceEntry>> {
        let mut keys: Vec<ServiceKey> = self
            .by_address
            .get(&ip)
            .map(|e| e.value().iter().map(|(_, key)| key.clone()).collect())
            .unwrap_or_default();
        keys.sort();
        keys.dedup();
        keys.iter().filter_map(|key| self.service_by_key(key)).collect()
    }

    /// Rebuilds the registry from what the store holds, before anything is served. Check
    /// statuses come back as last known (TTLs restart from now); the health checker, started
    /// after, runs every probe at once.
    pub fn restore(&self, store: &dyn Store) -> Result<usize, RegistryError> {
        let mut w = self.lock();
        let mut by_service: HashMap<ServiceKey, Vec<Arc<Instance>>> = HashMap::new();
        let mut index = 0;
        let nodes_index = self.restore_nodes(store)?;
        let stored_index = store.load(&mut |stored: StoredInstance| {
            let id = stored.id.clone();
            let node = self.stored_node(stored.node.as_deref());
            let mut instance = match node.and_then(|node| stored.into_instance(node)) {
                Ok(instance) => instance,
                // A shared store is written by other servers (perhaps newer ones): a record this
                // one cannot take is left out, as the watch leaves it out, rather than keeping
                // every server from starting.
                Err(error) if self.shared => {
                    tracing::error!(instance = %id, %error, "an instance record in etcd is not valid: skipped");
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            for check in instance.checks.iter_mut() {
                check.generation = instance.modify_index;
                if let Some(owner) = self.check_owner.insert(check.spec.id.clone(), instance.id.clone()) {
                    let taken = format!(
                        "check {:?} also belongs to instance {:?}",
                        check.spec.id.as_str(),
                        owner.as_str()
                    );
                    // Two servers can each take one check ID for two instances at once: the
                    // later instance's check answers to the ID, and the servers still start.
                    if !self.shared {
                        return Err(taken);
                    }
                    tracing::error!(instance = %instance.id, "{taken}: its heartbeats go to this instance");
                }
            }
            index = index.max(instance.modify_index);
            let instance = Arc::new(instance);
            self.index_address(&instance);
            self.instances.insert(instance.id.clone(), instance.clone());
            by_service.entry(instance.service.key()).or_default().push(instance);
            Ok(())
        })?;
        let kv_index = self.restore_kv(store)?;
        let index = index.max(stored_index).max(kv_index).max(nodes_index).max(1);
        if self.shared {
            // The revision read at: every server reports the same for key/value reads.
            self.kv_read_at(index);
        }
        let restored = self.instances.len();
        for (key, instances) in by_service {
            let modify_index = instances.iter().map(|i| i.modify_index).max().unwrap_or(index);
            let create_index = instances.iter().map(|i| i.create_index).min().unwrap_or(index);
            self.publish_service(&key, instances, None, create_index, modify_index, true);
        }
        w.last_index = index;
        self.publish(index);
        self.applied.send_replace(index);
        self.catalog.send_replace(index);
        Ok(restored)
    }

    /// Commits what is queued and stops the journal (at shutdown, once nothing writes any more).
    pub fn close(&self) {
        if let Some(journal) = &self.journal {
            journal.close();
        }
    }

    fn address_of(&self, instance: &Instance) -> Option<IpAddr> {
        match instance.reach_address() {
            Address::Host(_) => None,
            Address::Ip(ip) => Some(*ip),
            Address::Node => Some(self.node_addr),
        }
    }

    fn index_address(&self, instance: &Instance) {
        if let Some(ip) = self.address_of(instance) {
            let entry = (instance.id.clone(), instance.service.key());
            self.by_address.entry(ip).or_default().push(entry);
        }
    }

    fn unindex_address(&self, instance: &Instance) {
        let Some(ip) = self.address_of(instance) else {
            return;
        };
        if let dashmap::Entry::Occupied(mut entry) = self.by_address.entry(ip) {
            entry.get_mut().retain(|(id, _)| *id != instance.id);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the writer lock leaves no partial state behind it (every write
        // publishes whole entries), so a poisoned lock is safe to take over.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes readers see only grow.
    fn publish(&self, index: u64) {
        if self.index.fetch_max(index, Ordering::AcqRel) < index {
            self.everything.send_if_modified(|last| {
                let grew = *last < index;
                *last = (*last).max(index);
                grew
            });
        }
    }

    /// Recompiles one service's entry (or drops it when it has no instance left). The members are
    /// the previous entry's, refreshed from the instance map, plus `joined`: the cost is that
    /// service's size, never the registry's. Without `recompile` (nothing DNS shows changed, as
    /// when only a check's output did) the published answers stay as they are.
    fn rebuild_service(&self, key: &ServiceKey, index: u64, joined: &[Arc<Instance>], recompile: bool) {
        let previous = self.service_by_key(key);
        let mut instances: Vec<Arc<Instance>> = previous
            .iter()
            .flat_map(|e| e.instances.iter())
            .filter_map(|i| self.instance(&i.id))
            .filter(|i| i.service.key() == *key)
            .collect();
        if !joined.is_empty() {
            // Each once (an instance written twice in a batch joins twice), as the map holds it
            // now; `publish_service` sorts them.
            let mut listed: std::collections::HashSet<InstanceId> = instances.iter().map(|i| i.id.clone()).collect();
            let new: Vec<Arc<Instance>> = joined
                .iter()
                .filter(|j| listed.insert(j.id.clone()))
                .filter_map(|j| self.instance(&j.id))
                .filter(|i| i.service.key() == *key)
                .collect();
            instances.extend(new);
        }
        if instances.is_empty() {
            self.listener.service_changed(key, None);
            self.services.pin().remove(key);
            self.notify_service(key, index);
            return;
        }
        let create_index = previous.as_ref().map_or(index, |p| p.create_index);
        let recompile = recompile || previous.is_none();
        self.publish_service(key, instances, previous.as_deref(), create_index, index, recompile);
    }

    /// Publishes a service again as it is, its answers compiled anew and its watchers woken (an
    /// instance's flapping hold ended). With a shared store the index stays etcd's revision.
    fn republish(&self, key: &ServiceKey) {
        let mut w = self.lock();
        if self.service_by_key(key).is_none() {
            return;
        }
        let index = if self.shared { self.index() } else { w.next_index() };
        self.rebuild_service(key, index, &[], true);
        self.publish(index);
    }

    /// Publishes a service's entry in place of `previous`: its instances sorted, and its answers
    /// compiled (without `recompile`, the published answers stay).
    fn publish_service(
        &self,
        key: &ServiceKey,
        mut instances: Vec<Arc<Instance>>,
        previous: Option<&ServiceEntry>,
        create_index: u64,
        modify_index: u64,
        recompile: bool,
    ) {
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        instances.shrink_to_fit();
        let name = instances[0].service.clone();
        let flapping = self.flaps.observe(previous, &instances);
        let entry = ServiceEntry {
            name,
            create_index,
            modify_index,
            instances,
            flapping,
        };
        // DNS first: the moment a service is listed over HTTP, DNS answers it too.
        if recompile {
            self.listener.service_changed(key, Some(&entry));
        }
        self.services.pin().insert(key.clone(), Arc::new(entry));
        self.notify_service(key, modify_index);
    }
}
