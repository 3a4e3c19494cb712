//! Durable storage of the registry: every registration, deregistration and check definition is
//! committed before the write is acknowledged, and the registry is rebuilt from it at start.
//!
//! The registry talks to a [`Journal`], which orders changes as the registry made them and
//! commits them in batches (one fsync for every change that arrived while the last one ran:
//! group commit). The journal writes through the [`Store`] trait: the local redb file by default,
//! or etcd (`--etcd`).

mod etcd_store;
mod journal;
mod kv;
mod record;
mod redb_store;

pub use etcd_store::{EtcdSettings, EtcdStore};
pub use journal::{Journal, Then};
pub use kv::{KvCondition, KvOp, KvRecord};
pub use record::{StoredCheck, StoredInstance, StoredNode};
pub use redb_store::RedbStore;

use std::collections::HashSet;
use std::time::Duration;

/// One change to the stored registry.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Box<StoredInstance>),
    /// Written only if the stored record is still at this index (a check's result, made on the
    /// record this server had seen): a record another server changed meanwhile keeps that change,
    /// and the result is made again on it. The same as `Put` for a store only this server writes.
    PutIfUnchanged(Box<StoredInstance>, u64),
    Delete(String),
    /// A node written (an external one, or this server's own under the empty name).
    PutNode(Box<StoredNode>),
    /// A node removed, by its lower-case name.
    DeleteNode(String),
    /// The changes of one catalog write (a node and its instances): one entry of the journal,
    /// committed together or not at all. Never nested.
    Group(Box<[Change]>),
    /// The key/value changes of one write (a recursive delete may hold thousands): one entry
    /// of the journal, so they are committed together or not at all.
    Kv(Box<[KvOp]>),
}

impl Change {
    /// The changes it stands for: a group's members, or itself.
    pub fn members(&self) -> &[Change] {
        match self {
            Self::Group(members) => members,
            other => std::slice::from_ref(other),
        }
    }
}

/// Changes committed together, and the registry index after them.
#[derive(Debug)]
pub struct Batch<'a> {
    pub changes: &'a [Change],
    pub index: u64,
    /// Synced to disk before `write` returns; otherwise (check status changes) written through
    /// without a sync: a crash of the process keeps it, a power loss may not.
    pub durable: bool,
}

/// Where the registry is kept.
///
/// A store this server alone writes (the embedded one) is applied as its commits succeed. A
/// store other servers write too (etcd) is the log the registry follows: every change, this
/// server's own included, comes back through [`Store::follow`] and is applied from there, in the
/// store's order.
pub trait Store: Send + Sync + 'static {
    /// Hands every stored instance to `each`, one at a time (the registry is never held twice
    /// in memory, as records and as instances: 100,000 records held at once left 50 MB with the
    /// allocator), and returns the index of the last change. Stops at the first error, the
    /// store's or `each`'s (which names what is wrong with that record): a start never goes on
    /// with part of the registry.
    fn load(&self, each: &mut dyn FnMut(StoredInstance) -> Result<(), String>) -> Result<u64, StoreError>;
    /// Hands every stored node to `each`, at start (before [`load`](Self::load): instances
    /// name their node).
    fn load_nodes(&self, _each: &mut dyn FnMut(StoredNode) -> Result<(), String>) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether it keeps nodes (external ones; this server's maintenance in a store only it
    /// writes).
    fn keeps_nodes(&self) -> bool {
        false
    }
    /// Hands every key/value entry to `each`, at start (after [`load`](Self::load)).
    fn load_kv(&self, _each: &mut dyn FnMut(KvRecord) -> Result<(), String>) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether it keeps key/value entries.
    fn keeps_kv(&self) -> bool {
        false
    }

    /// A key/value write to a shared store, made at once (not queued behind the registry's
    /// writes: the keys are apart from them) and only if `condition` holds; `then` learns the
    /// revision it was made at (0 when it changed nothing), or `None` when the condition did
    /// not hold. The write comes back
    /// through [`Store::follow`] like any other. A store only this server writes takes its
    /// key/value writes through the journal instead.
    fn write_kv(
        &self,
        _ops: Vec<KvOp>,
        _condition: Option<KvCondition>,
        then: Box<dyn FnOnce(Result<Option<u64>, StoreError>) + Send>,
    ) {
        then(Err(StoreError::Closed));
    }

    /// Applies a batch atomically; returns the index it was committed at (the batch's own, or
    /// for a shared store the store's: etcd's revision).
    fn write(&self, batch: &Batch<'_>) -> Result<u64, StoreError>;

    /// Whether other servers write it too: then the registry applies changes from
    /// [`Store::follow`] only, its own commits included.
    fn shared(&self) -> bool {
        false
    }

    /// For a shared store: hands every change after `from` (the index `load` returned) to
    /// `follower`, in order, until the store is dropped. Nothing for a store only this server
    /// writes (its commits are all the changes there are).
    fn follow(&self, _from: u64, _follower: std::sync::Weak<dyn Follower>) {}

    /// A TTL check's heartbeat, for a shared store: renews the check's lease (`lease`, the one
    /// the follower knows of), or takes a new one when there is none or it ran out. `then`
    /// learns the outcome. Nothing to do for a store only this server writes.
    fn heartbeat(
        &self,
        _check: &str,
        _ttl: Duration,
        _lease: Option<Lease>,
        then: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    ) {
        then(Ok(()));
    }
}

/// One change read from a shared store.
#[derive(Debug)]
pub enum Logged {
    /// An instance written (its record, with the indexes the store gives it) or removed.
    Instance(String, Option<Box<StoredInstance>>),
    /// A server came (its key was written) or went (its lease ran out, or it stopped).
    Server(String, bool),
    /// A TTL check's heartbeat lease: taken (by the first heartbeat after none), or run out
    /// (no heartbeat reached any server for the TTL) and so removed.
    Heartbeat(String, Option<Lease>),
    /// A key/value entry written (with the indexes the store gives it) or removed.
    Kv(String, Option<KvRecord>),
    /// A node written (with the indexes the store gives it) or removed, by its lower-case name.
    Node(String, Option<Box<StoredNode>>),
}

/// The etcd lease that a TTL check's heartbeats renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Its TTL in whole seconds (the check's, rounded up).
    pub ttl_secs: u64,
}

/// What a whole read of a shared store found besides the instances.
#[derive(Debug, Default)]
pub struct Cluster {
    /// This server's name.
    pub me: String,
    /// The live servers, by name.
    pub servers: Vec<String>,
    /// The TTL checks whose heartbeat lease is alive.
    pub heartbeats: Vec<(String, Lease)>,
    /// Every key/value entry, when the store was read whole again (the follower's own are
    /// replaced by these); `None` when they were loaded at start.
    pub kv: Option<Vec<KvRecord>>,
    /// Every node, likewise.
    pub nodes: Option<Vec<StoredNode>>,
}

/// What follows a shared store (the registry): hears every change in the store's order, and
/// whether the store can be reached.
pub trait Follower: Send + Sync {
    /// The changes made at `index` (one etcd revision), in order.
    fn changed(&self, index: u64, changes: Vec<Logged>);
    /// The index of the last change to an instance as the follower holds it, so a reload reads
    /// again only what differs.
    fn modify_index(&self, id: &str) -> Option<u64>;
    /// The store was read whole at `index`: the servers and heartbeats as they are, and, when
    /// the follower had fallen behind what the store keeps (`Some`), every instance that
    /// differs from its view and the IDs of all there are. Applied at once, as one change.
    fn reloaded(&self, index: u64, instances: Option<(Vec<StoredInstance>, HashSet<String>)>, cluster: Cluster);
    /// Whether the store could be reached just now (told about once a second).
    fn reachable(&self, reachable: bool);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("cannot open the registry database {path}: {message}")]
    Open { path: String, message: String },
    #[error("corrupt record {key:?} in {path}: {message}")]
    Corrupt { path: String, key: String, message: String },
    /// The disk refused a write (full, read-only, failing): the change was not made. The store
    /// tries again with the next change.
    #[error("the data directory {dir} cannot be written ({message})")]
    Unavailable { dir: String, message: String },
    /// etcd did not take a change (out of reach, no quorum, or the prefix held by another
    /// server): the change was not made. The store tries again with the next change.
    #[error("etcd at {endpoints}: {message}")]
    Etcd { endpoints: String, message: String },
    /// etcd took the change, but this server has not seen it come back through its watch in
    /// time (the watch is reconnecting): it will be served once it does.
    #[error(
        "etcd took the change (revision {revision}), but this server has not seen it back yet: it will show once its watch catches up"
    )]
    NotYetApplied { revision: u64 },
    /// This server has had no contact with etcd for a while: the change is refused at once.
    #[error("etcd cannot be reached from this server (no contact for {millis} ms)")]
    EtcdOutOfReach { millis: u64 },
    #[error("the registry database is closed (sextant is stopping)")]
    Closed,
}
