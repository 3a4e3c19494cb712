//! A registry shared with other servers through etcd: the changes that come back from the store
//! (every server's, this one's included), the servers alive and which of them runs each check,
//! the heartbeat leases that keep TTL checks alive, and whether etcd can be reached.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::write::Touched;
use super::{CheckEvent, Held, Registry, RegistryError, Writer};
use crate::model::{CheckId, CheckKind, Health, Instance, InstanceId};
use crate::store::{Cluster, Follower, Lease, Logged, StoreError, StoredInstance};

/// How long without contact with etcd before writes are refused at once instead of tried (a
/// leader election takes a second or two, and writes wait it out).
const REFUSE_WRITES_AFTER: Duration = Duration::from_secs(5);

/// What this server knows of the cluster; empty, and never consulted, with a store of its own.
pub(super) struct ClusterView {
    /// This server's name and the live servers', sorted.
    servers: Mutex<(String, Vec<String>)>,
    /// Bumped when the live servers change: the health checker deals its checks again.
    membership: watch::Sender<u64>,
    /// The TTL checks whose heartbeat lease is alive.
    pub(super) leases: DashMap<CheckId, Lease>,
    reachable: AtomicBool,
    /// When etcd was last reached, in milliseconds after `born`.
    last_contact: AtomicU64,
    born: Instant,
}

impl Default for ClusterView {
    fn default() -> Self {
        Self {
            servers: Mutex::default(),
            membership: watch::Sender::new(0),
            leases: DashMap::new(),
            reachable: AtomicBool::new(true),
            last_contact: AtomicU64::new(0),
            born: Instant::now(),
        }
    }
}

impl ClusterView {
    fn servers(&self) -> std::sync::MutexGuard<'_, (String, Vec<String>)> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    /// Whether this server runs a check (probes it, expires its TTL, reaps its instance): with
    /// a shared store, the live server that ranks highest for it (rendezvous hashing, so a
    /// server coming or going moves only its share of the checks); this server counts itself
    /// alive even when etcd cannot tell (its results are then held until etcd is back).
    pub fn runs_here(&self, check: &CheckId) -> bool {
        if !self.shared {
            return true;
        }
        let servers = self.cluster.servers();
        let (me, others) = &*servers;
        if me.is_empty() {
            // The servers are not read yet: nothing runs until they are (a server joining a
            // cluster does not probe every check at once, then hand most of them back).
            return false;
        }
        let mine = rank(me, check);
        others.iter().all(|other| other == me || rank(other, check) < mine)
    }

    /// Changes when the live servers change, so that checks are dealt again; `None` with a
    /// store of its own (every check runs here).
    pub fn membership(&self) -> Option<watch::Receiver<u64>> {
        self.shared.then(|| self.cluster.membership.subscribe())
    }

    /// Whether the store is shared with other servers (etcd).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// `None` while what is served is known to be current; with a shared store out of reach,
    /// how long since it was last reached: what is served may be stale.
    pub fn staleness(&self) -> Option<Duration> {
        if !self.shared || self.cluster.reachable.load(Ordering::Acquire) {
            return None;
        }
        let contact = Duration::from_millis(self.cluster.last_contact.load(Ordering::Acquire));
        Some(self.cluster.born.elapsed().saturating_sub(contact))
    }

    /// Refuses a write at once when etcd has been out of reach for a while (instead of having it
    /// wait for etcd for seconds, then fail); never with a store of its own.
    pub(super) fn refuse_if_cut_off(&self) -> Result<(), crate::store::StoreError> {
        match self.staleness() {
            Some(stale) if stale >= REFUSE_WRITES_AFTER => Err(crate::store::StoreError::EtcdOutOfReach {
                millis: u64::try_from(stale.as_millis()).unwrap_or(u64::MAX),
            }),
            _ => Ok(()),
        }
    }

    /// A check result whose write is under way: held if etcd does not take it.
    pub(super) fn hold_if_refused(&self, check: CheckId, held: Held, written: super::Written) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        runtime.spawn(async move {
            match written.durable().await {
                // Taken (if not yet seen back): nothing to hold.
                Ok(_) | Err(RegistryError::Store(StoreError::NotYetApplied { .. })) => {}
                Err(_) => {
                    if let Some(registry) = me.upgrade() {
                        registry.lock().held.entry(check).or_insert(held);
                    }
                }
            }
        });
    }

    /// etcd is back: writes the check results held meanwhile (each as a result of the
    /// definition it was made for, so one redefined since is dropped).
    fn write_held(&self) {
        let mut w = self.lock();
        let held = std::mem::take(&mut w.held);
        if held.is_empty() {
            return;
        }
        tracing::info!(
            results = held.len(),
            "writing the check results held while etcd was out of reach"
        );
        for (check, held) in held {
            let _ = self.update_check(
                &mut w,
                &check,
                |c| Ok(c.generation == held.generation && c.set_status(held.status, &held.output, Instant::now())),
                true,
            );
        }
    }

    /// The lease a TTL check's heartbeats renew, if one is alive.
    pub(super) fn heartbeat_lease(&self, check: &CheckId) -> Option<Lease> {
        self.cluster.leases.get(check).map(|l| *l)
    }

    fn set_servers(&self, me: Option<String>, servers: Vec<String>) {
        let mut sorted = servers;
        sorted.sort();
        sorted.dedup();
        let mut current = self.cluster.servers();
        let mut changed = current.1 != sorted;
        if let Some(me) = me.filter(|me| *me != current.0) {
            current.0 = me;
            changed = true;
        }
        if changed {
            tracing::info!(servers = ?sorted, "sextant servers on this prefix changed");
            current.1 = sorted;
            drop(current);
            self.cluster.membership.send_modify(|generation| *generation += 1);
        }
    }

    /// A heartbeat lease appeared (`Some`) or ran out: a TTL check with a live lease has no
    /// deadline of its own; one whose lease ran out expires now.
    fn lease_changed(&self, w: &Writer, check: &CheckId, lease: Option<Lease>) {
        match lease {
            Some(lease) => {
                self.cluster.leases.insert(check.clone(), lease);
                self.set_ttl_deadline(w, check, None);
            }
            None => {
                self.cluster.leases.remove(check);
                self.set_ttl_deadline(w, check, Some(Instant::now()));
            }
        }
    }

    /// Moves a TTL check's deadline in the served instance (timers are this server's own: no new
    /// index), and tells the health checker. A check already critical is left alone.
    fn set_ttl_deadline(&self, w: &Writer, check: &CheckId, deadline: Option<Instant>) {
        let Some(owner) = self.check_owner.get(check).map(|e| e.value().clone()) else {
            return;
        };
        let Some(instance) = self.instance(&owner) else {
            return;
        };
        let moves = |c: &crate::model::Check| {
            c.spec.id == *check
                && matches!(c.spec.kind, CheckKind::Ttl { .. })
                && c.ttl_deadline != deadline
                && !(deadline.is_some() && c.status == Health::Critical)
        };
        if !instance.checks.iter().any(moves) {
            return;
        }
        let mut timed = Instance::clone(&instance);
        for c in timed.checks.iter_mut().filter(|c| moves(c)) {
            c.ttl_deadline = deadline;
        }
        self.instances.insert(owner, Arc::new(timed));
        w.emit(CheckEvent::Touched { check: check.clone() });
    }
}

/// A server's rank for a check: the highest runs it. FNV-1a over both names, then a 64-bit
/// finalizer (splitmix64's) so that similar names rank apart. Written here because every
/// server must compute the same ranks, across processes and versions, which std's and
/// foldhash's hashers do not promise.
fn rank(server: &str, check: &CheckId) -> u64 {
    let bytes = server.bytes().chain([0xff]).chain(check.as_str().bytes());
    let mut h = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The registry follows a shared store: every change, its own included, is applied from here.
impl Follower for Registry {
    fn changed(&self, index: u64, changes: Vec<Logged>) {
        let mut w = self.lock();
        if index <= self.index() {
            return; // seen already (a watch opened again from an older revision)
        }
        let mut touched = Touched::default();
        let mut kv = Vec::new();
        // Nodes first: the instances written with them name them.
        let (nodes, changes): (Vec<Logged>, Vec<Logged>) =
            changes.into_iter().partition(|c| matches!(c, Logged::Node(..)));
        for change in nodes.into_iter().chain(changes) {
            match change {
                Logged::Node(name, record) => {
                    self.node_followed(&mut w, &name, record.map(|r| *r), index, &mut touched)
                }
                Logged::Kv(key, record) => kv.push((key, record)),
                Logged::Instance(id, record) => {
                    let Ok(id) = InstanceId::parse(&id) else { continue };
                    match record {
                        Some(record) => {
                            if let Some(instance) = self.instance_of_record(*record) {
                                self.apply_change(&mut w, &id, Some(instance), index, &mut touched);
                            }
                        }
                        None => self.apply_change(&mut w, &id, None, index, &mut touched),
                    }
                }
                Logged::Server(name, present) => {
                    let mut servers = self.cluster.servers().1.clone();
                    servers.retain(|s| *s != name);
                    if present {
                        servers.push(name);
                    }
                    self.set_servers(None, servers);
                }
                Logged::Heartbeat(check, lease) => {
                    if let Ok(check) = CheckId::parse(&check) {
                        self.lease_changed(&w, &check, lease);
                    }
                }
            }
        }
        self.rebuild_touched(touched, index);
        if !kv.is_empty() {
            self.apply_kv_followed(kv, index);
        }
        self.applied_up_to(&mut w, index);
    }

    fn modify_index(&self, id: &str) -> Option<u64> {
        let id = InstanceId::parse(id).ok()?;
        self.instance(&id).map(|instance| instance.modify_index)
    }

    fn reloaded(&self, index: u64, instances: Option<(Vec<StoredInstance>, HashSet<String>)>, mut cluster: Cluster) {
        // Nodes first: the instances name them.
        if let Some(nodes) = cluster.nodes.take() {
            self.nodes_reloaded(nodes, index);
        }
        let changed: Option<(Vec<_>, _)> = instances.map(|(changed, present)| {
            (
                changed
                    .into_iter()
                    .filter_map(|record| self.instance_of_record(record))
                    .collect(),
                present,
            )
        });
        let mut w = self.lock();
        if let Some((changed, present)) = changed {
            let gone: Vec<InstanceId> = self
                .instances
                .iter()
                .filter(|e| !present.contains(e.key().as_str()))
                .map(|e| e.key().clone())
                .collect();
            let mut touched = Touched::default();
            for id in gone {
                self.apply_change(&mut w, &id, None, index, &mut touched);
            }
            for instance in changed {
                // At the revision it was last written at, as the watch would have applied it: a
                // result made on it later is conditional on that revision.
                let (id, at) = (instance.id.clone(), instance.modify_index);
                self.apply_change(&mut w, &id, Some(instance), at, &mut touched);
            }
            self.rebuild_touched(touched, index);
        }
        if let Some(records) = cluster.kv {
            self.replace_kv(records, index);
        }
        self.set_servers(Some(cluster.me), cluster.servers);
        let alive: HashSet<CheckId> = cluster
            .heartbeats
            .iter()
            .filter_map(|(check, _)| CheckId::parse(check).ok())
            .collect();
        let known: Vec<CheckId> = self.cluster.leases.iter().map(|e| e.key().clone()).collect();
        for check in known.into_iter().filter(|c| !alive.contains(c)) {
            self.lease_changed(&w, &check, None);
        }
        for (check, lease) in cluster.heartbeats {
            if let Ok(check) = CheckId::parse(&check) {
                self.lease_changed(&w, &check, Some(lease));
            }
        }
        self.applied_up_to(&mut w, index.max(self.index()));
    }

    fn reachable(&self, reachable: bool) {
        if reachable {
            let now = u64::try_from(self.cluster.born.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.cluster.last_contact.store(now, Ordering::Release);
        }
        let was = self.cluster.reachable.swap(reachable, Ordering::AcqRel);
        if reachable && !was {
            self.write_held();
        }
    }
}
