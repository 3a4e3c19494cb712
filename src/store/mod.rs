//! Durable storage of the registry: every registration, deregistration and check definition is
//! committed before the write is acknowledged, and the registry is rebuilt from it at start.
//!
//! The registry talks to a [`Journal`], which orders changes as the registry made them and
//! commits them in batches (one fsync for every change that arrived while the last one ran:
//! group commit). The journal writes through the [`Store`] trait: the local redb file by default,
//! or etcd (`--etcd`).

mod etcd_store;
mod journal;
mod record;
mod redb_store;

pub use etcd_store::{EtcdSettings, EtcdStore};
pub use journal::{Journal, Then};
pub use record::{StoredCheck, StoredInstance};
pub use redb_store::RedbStore;

/// One change to the stored registry.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Box<StoredInstance>),
    Delete(String),
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
pub trait Store: Send + Sync + 'static {
    /// Hands every stored instance to `each`, one at a time (the registry is never held twice
    /// in memory, as records and as instances: 100,000 records held at once left 50 MB with the
    /// allocator), and returns the index of the last change. Stops at the first error, the
    /// store's or `each`'s (which names what is wrong with that record): a start never goes on
    /// with part of the registry.
    fn load(&self, each: &mut dyn FnMut(StoredInstance) -> Result<(), String>) -> Result<u64, StoreError>;
    /// Applies a batch atomically.
    fn write(&self, batch: &Batch<'_>) -> Result<(), StoreError>;
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
    #[error("the registry database is closed (sextant is stopping)")]
    Closed,
}
