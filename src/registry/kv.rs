//! The key/value store (`/v1/kv/<key>`): entries kept in key order (a prefix is a range), made
//! durable through the same journal as registrations (committed and fsynced before the write is
//! acknowledged, in the same index space, so `X-Consul-Index` means one thing everywhere), and
//! blocking queries on a key or a prefix that wake only for changes under it.
//!
//! Writes are staged under the writer lock on top of the writes still waiting for their commit,
//! as registrations are: a check-and-set (`?cas=<index>`) is decided against what the entry will
//! be once everything acknowledged before it is applied, so two writers racing with the same
//! index never both win.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use tokio::sync::{oneshot, watch};

use super::{Registry, RegistryError, Watch, Writer, Written};
use crate::store::{Change, KvCondition, KvOp, KvRecord, StoreError};

/// Consul's largest value.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;
/// The longest key (Consul sets none below its request size; a bound keeps the index small).
pub const MAX_KEY_BYTES: usize = 1024;

/// One entry, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: Box<str>,
    pub value: Box<[u8]>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The entries and the blocking queries waiting on prefixes.
#[derive(Default)]
pub(super) struct Kv {
    entries: RwLock<Entries>,
    /// A channel per watched prefix (a key is a prefix too), holding the index of the last
    /// change under it; made by its first watcher, dropped with its last.
    watches: DashMap<Box<str>, watch::Sender<u64>>,
    /// The index of the last key/value change, deletions included: what a prefix nobody
    /// watches reports, so a deletion is never missed, and health changes (which move the
    /// registry's index) never wake a key's watchers.
    last: AtomicU64,
}

/// What a write does to an entry.
pub enum KvChange {
    Set { value: Box<[u8]>, flags: u64 },
    Delete,
}

/// Why a key is refused, in the words the API answers with.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("the key is {} bytes long; at most {MAX_KEY_BYTES}", key.len()));
    }
    if key.starts_with('/') {
        return Err("a key cannot start with '/'".into());
    }
    Ok(())
}

/// The entries in key order, and the bytes their keys and values take ([`super::bounds`]).
#[derive(Default)]
struct Entries {
    map: BTreeMap<Box<str>, Arc<KvEntry>>,
    bytes: usize,
}

impl Entries {
    fn insert(&mut self, key: Box<str>, entry: Arc<KvEntry>) {
        self.bytes += entry_bytes(&key, &entry.value);
        if let Some(old) = self.map.insert(key, entry) {
            self.bytes -= entry_bytes(&old.key, &old.value);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= entry_bytes(&old.key, &old.value);
        }
    }
}

impl std::ops::Deref for Entries {
    type Target = BTreeMap<Box<str>, Arc<KvEntry>>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// What an entry counts against `--max-kv-bytes`: what it holds in memory, its key twice (the
/// map's and the entry's), its value, and the entry's and the map slot's own bytes, so that
/// empty values under short keys cannot be many more than the bound says.
fn entry_bytes(key: &str, value: &[u8]) -> usize {
    2 * key.len() + value.len() + ENTRY_OVERHEAD
}

/// An entry's bytes besides its key and value (the `Arc`, the entry's fields, a map slot).
const ENTRY_OVERHEAD: usize = 128;

impl Kv {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registry {
    /// One entry.
    pub fn kv_get(&self, key: &str) -> Option<Arc<KvEntry>> {
        self.kv.read().get(key).cloned()
    }

    /// The bytes the entries take, as `--max-kv-bytes` counts them.
    pub fn kv_bytes(&self) -> usize {
        self.kv.read().bytes
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn kv_list(&self, prefix: &str) -> Vec<Arc<KvEntry>> {
        self.kv
            .read()
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    /// The index a blocking query on `prefix` compares with: the last change under it while a
    /// watcher follows it, else the last key/value change of all (a deletion under it leaves
    /// no entry to read an index from).
    pub fn kv_index(&self, prefix: &str) -> u64 {
        match self.kv.watches.get(prefix) {
            Some(watch) => *watch.borrow(),
            None => self.kv_last(),
        }
    }

    fn kv_last(&self) -> u64 {
        self.kv.last.load(Ordering::Acquire).max(1)
    }

    /// Waits on changes under `prefix`.
    pub fn watch_kv(&self, prefix: &str) -> Watch<'_> {
        // Read under the map's shard lock: a write applied meanwhile has either moved `last`
        // already or finds this channel when it wakes the watchers.
        let changes = self
            .kv
            .watches
            .entry(prefix.into())
            .or_insert_with(|| watch::Sender::new(self.kv_last()))
            .subscribe();
        Watch::kv(changes, self, prefix.into())
    }

    pub(super) fn drop_kv_watch(&self, prefix: &str) {
        self.kv
            .watches
            .remove_if(prefix, |_, channel| channel.receiver_count() == 0);
    }

    /// Restores the stored entries (at start, before anything is served).
    pub(super) fn restore_kv(&self, store: &dyn crate::store::Store) -> Result<u64, RegistryError> {
        let mut entries = self.kv.write();
        let mut index = 0;
        store.load_kv(&mut |record: KvRecord| {
            if let Err(error) = check_key(&record.key) {
                // A shared store is written by others too: an entry no write here could make
                // is left out, rather than keeping every server from starting.
                if self.shared {
                    tracing::error!(key = ?record.key, %error, "a key/value entry in etcd is not valid: skipped");
                    return Ok(());
                }
                return Err(format!("key: {error}"));
            }
            index = index.max(record.modify_index);
            let entry = entry_of(record);
            entries.insert(entry.key.clone(), Arc::new(entry));
            Ok(())
        })?;
        self.kv.last.fetch_max(index, Ordering::AcqRel);
        Ok(index)
    }

    /// Sets or deletes `key` (with `recurse`, every key under it), if `cas` (when given) is the
    /// entry's modify index (0: the entry must not exist). `Ok(None)`: the check-and-set failed,
    /// nothing written.
    pub fn kv_write(
        &self,
        key: &str,
        change: KvChange,
        recurse: bool,
        cas: Option<u64>,
    ) -> Result<Option<Written>, RegistryError> {
        if self.journal.as_ref().is_some_and(|j| !j.keeps_kv()) {
            return Err(RegistryError::KvNotKept);
        }
        self.refuse_if_cut_off()?;
        if self.shared {
            // Counted on what is served: etcd decides every server's writes.
            if let KvChange::Set { value, .. } = &change {
                let replaced = self.kv_get(key).map_or(0, |e| entry_bytes(key, &e.value));
                self.check_kv_room(self.kv_bytes(), entry_bytes(key, value), replaced)?;
            }
            return Ok(Some(self.kv_write_shared(key, change, recurse, cas)));
        }
        let mut w = self.lock();
        let current = self.kv_now(&w, key);
        // Consul checks `cas` against the key itself, which a recursive delete does not need.
        let cas = cas.filter(|_| !(recurse && matches!(change, KvChange::Delete)));
        if let Some(cas) = cas {
            let at = current.as_ref().map_or(0, |e| e.modify_index);
            if at != cas {
                return Ok(None);
            }
        }
        if let KvChange::Set { value, .. } = &change {
            let replaced = current.as_ref().map_or(0, |e| entry_bytes(key, &e.value));
            self.check_kv_room(self.kv_bytes_now(&w), entry_bytes(key, value), replaced)?;
        }
        let index = w.next_index();
        let mut writes: Vec<(Box<str>, Option<Arc<KvEntry>>)> = Vec::new();
        match change {
            KvChange::Set { value, flags } => {
                let entry = KvEntry {
                    key: key.into(),
                    value,
                    flags,
                    create_index: current.as_ref().map_or(index, |e| e.create_index),
                    modify_index: index,
                };
                writes.push((key.into(), Some(Arc::new(entry))));
            }
            KvChange::Delete if recurse => {
                let mut keys: Vec<Box<str>> = self.kv_list(key).iter().map(|e| e.key.clone()).collect();
                keys.extend(w.kv_staged.keys().filter(|k| k.starts_with(key)).cloned());
                keys.sort();
                keys.dedup();
                writes.extend(keys.into_iter().map(|k| (k, None)));
            }
            KvChange::Delete => writes.push((key.into(), None)),
        }
        Ok(Some(self.stage_kv(&mut w, writes, index)))
    }

    /// A write to a shared store (etcd): made there at once, the check-and-set decided by it (an
    /// etcd transaction on the entry's modify revision, so writers on every server race fairly),
    /// and acknowledged once it has come back through the watch. A check-and-set that fails is
    /// [`RegistryError::CasFailed`].
    fn kv_write_shared(&self, key: &str, change: KvChange, recurse: bool, cas: Option<u64>) -> Written {
        let Some(journal) = &self.journal else {
            return Written::failed(StoreError::Closed); // a shared registry always has its store
        };
        let (op, cas) = match change {
            KvChange::Set { value, flags } => {
                let record = KvRecord {
                    key: key.to_owned(),
                    value: value.into_vec(),
                    flags,
                    create_index: 0,
                    modify_index: 0,
                };
                (KvOp::Put(record), cas)
            }
            // Consul checks `cas` against the key itself, which a recursive delete does not need.
            KvChange::Delete if recurse => (KvOp::DeletePrefix(key.to_owned()), None),
            KvChange::Delete => (KvOp::Delete(key.to_owned()), cas),
        };
        let condition = cas.map(|index| KvCondition {
            key: key.to_owned(),
            index,
        });
        let (done, receiver) = oneshot::channel();
        journal.write_kv(
            vec![op],
            condition,
            Box::new(move |written| {
                let _ = done.send(match written {
                    Ok(Some(revision)) => Ok(revision),
                    Ok(None) => Err(RegistryError::CasFailed),
                    Err(error) => Err(RegistryError::Store(error)),
                });
            }),
        );
        Written::waiting_applied(receiver, self.applied.subscribe())
    }

    /// Key/value changes that came from a shared store at `index`, its indexes in the records.
    pub(super) fn apply_kv_followed(&self, changes: Vec<(String, Option<KvRecord>)>, index: u64) {
        {
            let mut entries = self.kv.write();
            for (key, record) in &changes {
                match record {
                    Some(record) => {
                        entries.insert(key.as_str().into(), Arc::new(entry_of(record.clone())));
                    }
                    None => {
                        entries.remove(key.as_str());
                    }
                }
            }
        }
        self.kv_changed(changes.iter().map(|(key, _)| key.as_str()), index);
    }

    /// Every entry, as a shared store read whole again holds them (its watch had lost its place).
    pub(super) fn replace_kv(&self, records: Vec<KvRecord>, index: u64) {
        let mut entries = Entries::default();
        for record in records {
            entries.insert(record.key.as_str().into(), Arc::new(entry_of(record)));
        }
        *self.kv.write() = entries;
        self.kv.last.fetch_max(index, Ordering::AcqRel);
        for watch in self.kv.watches.iter() {
            watch.value().send_replace(index);
        }
    }

    /// The entries were read at `index` (a shared store's revision at start): what a prefix
    /// nobody watches reports from then on, whatever the entries' own indexes.
    pub(super) fn kv_read_at(&self, index: u64) {
        self.kv.last.fetch_max(index, Ordering::AcqRel);
    }

    /// Wakes the watchers of every prefix of `keys`, changed at `index`.
    fn kv_changed<'k>(&self, keys: impl Iterator<Item = &'k str> + Clone, index: u64) {
        self.kv.last.fetch_max(index, Ordering::AcqRel);
        for watch in self.kv.watches.iter() {
            if keys.clone().any(|key| key.starts_with(&**watch.key())) {
                watch.value().send_replace(index);
            }
        }
    }

    /// The bytes the entries will take once the writes waiting for their commit are applied.
    fn kv_bytes_now(&self, w: &Writer) -> usize {
        let entries = self.kv.read();
        let mut bytes = entries.bytes;
        for (key, (staged, _)) in &w.kv_staged {
            let served = entries.get(key).map_or(0, |e| entry_bytes(key, &e.value));
            let coming = staged.as_ref().map_or(0, |e| entry_bytes(key, &e.value));
            bytes = (bytes + coming).saturating_sub(served);
        }
        bytes
    }

    /// An entry as the next write sees it: with the writes waiting for their commit.
    fn kv_now(&self, w: &Writer, key: &str) -> Option<Arc<KvEntry>> {
        match w.kv_staged.get(key) {
            Some((staged, _)) => staged.clone(),
            None => self.kv_get(key),
        }
    }

    /// Queues the writes for their commit, as one entry of the journal, and applies them once
    /// committed (at once without a store).
    fn stage_kv(&self, w: &mut Writer, writes: Vec<(Box<str>, Option<Arc<KvEntry>>)>, index: u64) -> Written {
        let Some(journal) = &self.journal else {
            self.apply_kv(w, &writes, index, index);
            return Written::applied(index);
        };
        if writes.is_empty() {
            return Written::applied(self.index()); // a recursive delete of nothing
        }
        let ops: Box<[KvOp]> = writes.iter().map(|(key, entry)| op(key, entry.as_deref())).collect();
        let (done, receiver) = oneshot::channel();
        let me = self.me.clone();
        let staged = writes.clone();
        let then = Box::new(move |committed: Result<u64, StoreError>| {
            let outcome = match me.upgrade() {
                Some(registry) => registry.kv_committed(staged, index, committed),
                None => Err(RegistryError::Store(StoreError::Closed)),
            };
            // The client may have gone: the write stands all the same.
            let _ = done.send(outcome);
        });
        if let Err(error) = journal.append(Change::Kv(ops), index, true, Some(then)) {
            return Written::failed(error);
        }
        // The commit's callback waits for the writer lock, held here: it runs after this.
        for (key, entry) in writes {
            let slot = w.kv_staged.entry(key).or_insert((None, 0));
            slot.0 = entry;
            slot.1 += 1;
        }
        Written::waiting(receiver)
    }

    fn kv_committed(
        &self,
        writes: Vec<(Box<str>, Option<Arc<KvEntry>>)>,
        index: u64,
        committed: Result<u64, StoreError>,
    ) -> Result<u64, RegistryError> {
        let mut w = self.lock();
        for (key, _) in &writes {
            if let Some(slot) = w.kv_staged.get_mut(key) {
                slot.1 -= 1;
                if slot.1 == 0 {
                    w.kv_staged.remove(key);
                }
            }
        }
        committed?;
        // Indexes readers see only grow: a health change applied while this write waited for
        // its commit took a later index, so this one is applied after it.
        let applied = index.max(self.index() + 1);
        w.last_index = w.last_index.max(applied);
        self.apply_kv(&w, &writes, index, applied);
        Ok(applied)
    }

    /// Makes writes staged at `staged` visible at `applied` and wakes the watchers of every
    /// prefix of them. When the index moved, the entries are stored again as served (best
    /// effort, as a health change is), unless a later write to the key is on its way.
    fn apply_kv(&self, w: &Writer, writes: &[(Box<str>, Option<Arc<KvEntry>>)], staged: u64, applied: u64) {
        let mut restore = Vec::new();
        {
            let mut entries = self.kv.write();
            for (key, entry) in writes {
                let Some(entry) = entry else {
                    entries.remove(key);
                    continue;
                };
                let mut entry = KvEntry::clone(entry);
                entry.modify_index = applied;
                // Made by this write, or by an earlier one (applied before it, at its own index).
                entry.create_index = if entry.create_index == staged {
                    applied
                } else {
                    entries.get(key).map_or(entry.create_index, |e| e.create_index)
                };
                if applied != staged && !w.kv_staged.contains_key(key) {
                    restore.push(op(key, Some(&entry)));
                }
                entries.insert(key.clone(), Arc::new(entry));
            }
        }
        if let Some(journal) = &self.journal
            && !restore.is_empty()
        {
            // A closed journal means the server is stopping: the entry keeps its staged index.
            let _ = journal.append(Change::Kv(restore.into_boxed_slice()), applied, false, None);
        }
        self.kv_changed(writes.iter().map(|(key, _)| &**key), applied);
        self.publish(applied);
    }
}

fn entry_of(record: KvRecord) -> KvEntry {
    KvEntry {
        key: record.key.into_boxed_str(),
        value: record.value.into_boxed_slice(),
        flags: record.flags,
        create_index: record.create_index,
        modify_index: record.modify_index,
    }
}

/// A write to `key` as the store keeps it.
fn op(key: &str, entry: Option<&KvEntry>) -> KvOp {
    match entry {
        Some(entry) => KvOp::Put(KvRecord {
            key: entry.key.to_string(),
            value: entry.value.to_vec(),
            flags: entry.flags,
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        }),
        None => KvOp::Delete(key.to_owned()),
    }
}
