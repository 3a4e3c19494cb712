//! The local store: one redb file, `<data-dir>/registry.redb`. redb commits are atomic and, at
//! `Durability::Immediate`, fsynced before `commit` returns; a crash leaves the last commit.
//!
//! After a failed write (disk full, read-only, I/O error) redb refuses every later transaction
//! until the file is opened again, so the store drops the database and reopens it (repairing
//! it, as after a crash) at the next write, at most once a second, until the disk takes writes.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{Builder, Database, Durability, ReadableTable, TableDefinition};

use super::{Batch, Change, KvOp, KvRecord, Store, StoreError, StoredInstance, StoredNode};

/// Instance ID → the instance as JSON ([`StoredInstance`]).
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// Node name (empty: this server's own) → the node as JSON ([`StoredNode`]).
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Key → a key/value entry ([`KvRecord::encode`]).
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "index": the registry index of the last commit; "format": the record format.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: u64 = 1;
/// redb's page cache, in bytes.
const STORE_CACHE: usize = 16 << 20;
/// How long a store that failed waits before opening its file again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// What a user can do about a database that cannot be read.
const DAMAGED_HINT: &str = "restore it from a backup, or move it away to start with an empty registry";

pub struct RedbStore {
    state: Mutex<State>,
    dir: PathBuf,
    path: PathBuf,
}

/// The open database, or why there is none and when to try again.
struct State {
    db: Option<Database>,
    failure: String,
    retry_at: Instant,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the folder. Fails at once when the folder
    /// or the file cannot be written, or the file is not a whole registry database.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::DataDir {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = dir.join("registry.redb");
        let shown = path.display().to_string();
        let open_error = |message: String| StoreError::Open {
            path: shown.clone(),
            message,
        };
        // redb takes an empty file for a new one; but sextant made this one, and it was emptied
        // (truncated, a failed copy): starting empty would drop every registration silently.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(open_error(format!("the file is empty (0 bytes); {DAMAGED_HINT}")));
        }
        let db = open_database(&path).map_err(open_error)?;
        let store = Self {
            state: Mutex::new(State {
                db: None,
                failure: String::new(),
                retry_at: Instant::now(),
            }),
            dir: dir.to_owned(),
            path,
        };
        // A first write proves the file writable now, not at the first registration.
        let format = catch_panic(|| store.check_format(&db)).and_then(|r| r);
        format.map_err(open_error)?;
        store.lock().db = Some(db);
        Ok(store)
    }

    fn check_format(&self, db: &Database) -> Result<(), String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        {
            tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
            tx.open_table(KV).map_err(|e| e.to_string())?;
            tx.open_table(NODES).map_err(|e| e.to_string())?;
            let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
            let format = meta.get("format").map_err(|e| e.to_string())?.map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT).map_err(|e| e.to_string())?;
                }
                Some(FORMAT) => {}
                Some(other) => return Err(format!("record format {other}; this sextant reads {FORMAT}")),
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn corrupt(&self, key: &str, message: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            key: key.to_owned(),
            message: format!("{}; {DAMAGED_HINT}", message.to_string()),
        }
    }

    fn read_error(&self, message: impl ToString) -> StoreError {
        StoreError::Open {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    fn read(
        &self,
        db: &Database,
        each: &mut dyn FnMut(StoredInstance) -> Result<(), String>,
    ) -> Result<u64, StoreError> {
        let tx = db.begin_read().map_err(|e| self.read_error(e))?;
        let table = tx.open_table(INSTANCES).map_err(|e| self.read_error(e))?;
        for row in table.iter().map_err(|e| self.read_error(e))? {
            let (key, value) = row.map_err(|e| self.read_error(e))?;
            let key = key.value();
            let instance: StoredInstance = serde_json::from_slice(value.value()).map_err(|e| self.corrupt(key, e))?;
            if instance.id != key {
                return Err(self.corrupt(key, format!("holds instance {:?}", instance.id)));
            }
            each(instance).map_err(|message| self.corrupt(key, message))?;
        }
        let meta = tx.open_table(META).map_err(|e| self.read_error(e))?;
        let index = meta
            .get("index")
            .map_err(|e| self.read_error(e))?
            .map_or(0, |v| v.value());
        Ok(index)
    }

    fn commit(db: &Database, batch: &Batch<'_>) -> Result<(), String> {
        let mut tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(if batch.durable {
            Durability::Immediate
        } else {
            // Written through to the file (a crash of the process keeps it), not synced.
            Durability::Eventual
        });
        {
            let mut table = tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
            let mut kv = tx.open_table(KV).map_err(|e| e.to_string())?;
            let mut nodes = tx.open_table(NODES).map_err(|e| e.to_string())?;
            for change in batch.changes.iter().flat_map(Change::members) {
                match change {
                    // This server alone writes the file: what it built on is what is stored.
                    Change::Put(instance) | Change::PutIfUnchanged(instance, _) => {
                        let json = serde_json::to_vec(instance).map_err(|e| e.to_string())?;
                        table
                            .insert(instance.id.as_str(), json.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                    Change::Delete(id) => {
                        table.remove(id.as_str()).map_err(|e| e.to_string())?;
                    }
                    // Keyed by the lower-case name, as node names compare.
                    Change::PutNode(node) => {
                        let json = serde_json::to_vec(node).map_err(|e| e.to_string())?;
                        nodes
                            .insert(node.name.to_ascii_lowercase().as_str(), json.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                    Change::DeleteNode(name) => {
                        nodes.remove(name.as_str()).map_err(|e| e.to_string())?;
                    }
                    Change::Group(_) => return Err("a group of changes inside a group".into()),
                    Change::Kv(ops) => {
                        for op in ops {
                            match op {
                                KvOp::Put(record) => {
                                    kv.insert(record.key.as_str(), record.encode().as_slice())
                                        .map_err(|e| e.to_string())?;
                                }
                                KvOp::Delete(key) => {
                                    kv.remove(key.as_str()).map_err(|e| e.to_string())?;
                                }
                                KvOp::DeletePrefix(prefix) => {
                                    let under: Vec<String> = kv
                                        .range(prefix.as_str()..)
                                        .map_err(|e| e.to_string())?
                                        .map(|row| row.map(|(key, _)| key.value().to_owned()))
                                        .take_while(|key| key.as_ref().map_or(true, |k| k.starts_with(prefix.as_str())))
                                        .collect::<Result<_, _>>()
                                        .map_err(|e| e.to_string())?;
                                    for key in under {
                                        kv.remove(key.as_str()).map_err(|e| e.to_string())?;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
            meta.insert("index", batch.index).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl Store for RedbStore {
    fn load(&self, each: &mut dyn FnMut(StoredInstance) -> Result<(), String>) -> Result<u64, StoreError> {
        let state = self.lock();
        let db = state.db.as_ref().ok_or_else(|| self.read_error(&state.failure))?;
        catch_panic(|| self.read(db, each)).unwrap_or_else(|message| Err(self.corrupt("", message)))
    }

    fn load_kv(&self, each: &mut dyn FnMut(KvRecord) -> Result<(), String>) -> Result<(), StoreError> {
        let state = self.lock();
        let db = state.db.as_ref().ok_or_else(|| self.read_error(&state.failure))?;
        let read = || -> Result<(), StoreError> {
            let tx = db.begin_read().map_err(|e| self.read_error(e))?;
            let table = tx.open_table(KV).map_err(|e| self.read_error(e))?;
            for row in table.iter().map_err(|e| self.read_error(e))? {
                let (key, value) = row.map_err(|e| self.read_error(e))?;
                let key = key.value();
                let record = KvRecord::decode(key, value.value()).map_err(|e| self.corrupt(key, e))?;
                each(record).map_err(|message| self.corrupt(key, message))?;
            }
            Ok(())
        };
        catch_panic(read).unwrap_or_else(|message| Err(self.corrupt("", message)))
    }

    fn keeps_kv(&self) -> bool {
        true
    }

    fn load_nodes(&self, each: &mut dyn FnMut(StoredNode) -> Result<(), String>) -> Result<(), StoreError> {
        let state = self.lock();
        let db = state.db.as_ref().ok_or_else(|| self.read_error(&state.failure))?;
        let read = || -> Result<(), StoreError> {
            let tx = db.begin_read().map_err(|e| self.read_error(e))?;
            let table = tx.open_table(NODES).map_err(|e| self.read_error(e))?;
            for row in table.iter().map_err(|e| self.read_error(e))? {
                let (name, value) = row.map_err(|e| self.read_error(e))?;
                let name = name.value();
                let node: StoredNode = serde_json::from_slice(value.value()).map_err(|e| self.corrupt(name, e))?;
                each(node).map_err(|message| self.corrupt(name, message))?;
            }
            Ok(())
        };
        catch_panic(read).unwrap_or_else(|message| Err(self.corrupt("", message)))
    }

    fn keeps_nodes(&self) -> bool {
        true
    }

    fn write(&self, batch: &Batch<'_>) -> Result<u64, StoreError> {
        let mut state = self.lock();
        if state.db.is_none() {
            if Instant::now() < state.retry_at {
                return Err(StoreError::Unavailable {
                    dir: self.dir.display().to_string(),
                    message: state.failure.clone(),
                });
            }
            match open_database(&self.path) {
                Ok(db) => state.db = Some(db),
                Err(message) => state.failure = message,
            }
        }
        let result = match &state.db {
            Some(db) => catch_panic(|| Self::commit(db, batch)).and_then(|r| r),
            None => Err(state.failure.clone()),
        };
        result.map(|()| batch.index).map_err(|message| {
            // redb takes no transaction after a failed one until the file is opened again.
            state.db = None;
            state.failure = message.clone();
            state.retry_at = Instant::now() + REOPEN_EVERY;
            StoreError::Unavailable {
                dir: self.dir.display().to_string(),
                message,
            }
        })
    }
}

fn open_database(path: &Path) -> Result<Database, String> {
    // redb caches the pages it reads and writes in memory, up to 1 GiB by default: with
    // 100,000 instances that cache outgrew the registry itself. The registry holds every
    // instance already, and the store is read once (at start), so a small cache is enough.
    let opened = catch_panic(|| Builder::new().set_cache_size(STORE_CACHE).create(path));
    match opened {
        Ok(Ok(db)) => Ok(db),
        // Not damage: another process holds it, or the file system refused.
        Ok(Err(error @ redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(format!("{error} (is another sextant using this data directory?)"))
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(error))))
            if error.kind() != std::io::ErrorKind::InvalidData =>
        {
            Err(error.to_string())
        }
        Ok(Err(error)) => Err(format!(
            "the file is damaged or not a registry database ({error}); {DAMAGED_HINT}"
        )),
        Err(message) => Err(message),
    }
}

/// Runs `f`, turning a panic into an error. redb panics on some damaged files (an
/// `unreachable!`, an assertion on the file's length, a slice index out of range) instead of
/// returning an error; a damaged file must refuse the start with a message, never crash it.
fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    quiet_panics::run(f).map_err(|message| format!("the file is damaged ({message}); {DAMAGED_HINT}"))
}

/// Panics caught here are reported as errors, so the default hook's message and backtrace note
/// would only mislead: a hook that stays silent for the thread running [`run`].
mod quiet_panics {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Once;

    thread_local!(static QUIET: Cell<bool> = const { Cell::new(false) });

    pub fn run<T>(f: impl FnOnce() -> T) -> Result<T, String> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.get() {
                    previous(info);
                }
            }));
        });
        QUIET.set(true);
        let result = catch_unwind(AssertUnwindSafe(f));
        QUIET.set(false);
        result.map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic in the database library".into())
        })
    }
}
