//! The local store: one redb file, `<data-dir>/registry.redb`. redb commits are atomic and, at
//! `Durability::Immediate`, fsynced before `commit` returns; a crash leaves the last commit.

use std::path::{Path, PathBuf};

use redb::{Builder, Database, Durability, ReadableTable, TableDefinition};

use super::{Batch, Change, Snapshot, Store, StoreError, StoredInstance};

/// Instance ID → the instance as JSON ([`StoredInstance`]).
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// "index": the registry index of the last commit; "format": the record format.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: u64 = 1;
/// redb's page cache, in bytes.
const STORE_CACHE: usize = 16 << 20;

pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the folder. Fails at once when the folder
    /// or the file cannot be written, or the file is not a registry database.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::DataDir {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = dir.join("registry.redb");
        let open_error = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        // redb caches the pages it reads and writes in memory, up to 1 GiB by default: with
        // 100,000 instances that cache outgrew the registry itself. The registry holds every
        // instance already, and the store is read once (at start), so a small cache is enough.
        let db = Builder::new()
            .set_cache_size(STORE_CACHE)
            .create(&path)
            .map_err(|e| open_error(e.to_string()))?;
        // A first write proves the file writable now, not at the first registration.
        let tx = db.begin_write().map_err(|e| open_error(e.to_string()))?;
        {
            tx.open_table(INSTANCES).map_err(|e| open_error(e.to_string()))?;
            let mut meta = tx.open_table(META).map_err(|e| open_error(e.to_string()))?;
            let format = meta
                .get("format")
                .map_err(|e| open_error(e.to_string()))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT).map_err(|e| open_error(e.to_string()))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(open_error(format!(
                        "record format {other}; this sextant reads {FORMAT}"
                    )));
                }
            }
        }
        tx.commit().map_err(|e| open_error(e.to_string()))?;
        Ok(Self { db, path })
    }

    fn corrupt(&self, key: &str, message: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }

    fn read_error(&self, message: impl ToString) -> StoreError {
        StoreError::Open {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    fn write_error(&self, message: impl ToString) -> StoreError {
        StoreError::Write {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.read_error(e))?;
        let table = tx.open_table(INSTANCES).map_err(|e| self.read_error(e))?;
        let mut instances = Vec::new();
        for row in table.iter().map_err(|e| self.read_error(e))? {
            let (key, value) = row.map_err(|e| self.read_error(e))?;
            let key = key.value();
            let instance: StoredInstance = serde_json::from_slice(value.value()).map_err(|e| self.corrupt(key, e))?;
            if instance.id != key {
                return Err(self.corrupt(key, format!("holds instance {:?}", instance.id)));
            }
            instances.push(instance);
        }
        let meta = tx.open_table(META).map_err(|e| self.read_error(e))?;
        let index = meta
            .get("index")
            .map_err(|e| self.read_error(e))?
            .map_or(0, |v| v.value());
        Ok(Snapshot { instances, index })
    }

    fn write(&self, batch: &Batch<'_>) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.write_error(e))?;
        tx.set_durability(if batch.durable {
            Durability::Immediate
        } else {
            // Written through to the file (a crash of the process keeps it), not synced.
            Durability::Eventual
        });
        {
            let mut table = tx.open_table(INSTANCES).map_err(|e| self.write_error(e))?;
            for change in batch.changes {
                match change {
                    Change::Put(instance) => {
                        let json = serde_json::to_vec(instance).map_err(|e| self.write_error(e))?;
                        table
                            .insert(instance.id.as_str(), json.as_slice())
                            .map_err(|e| self.write_error(e))?;
                    }
                    Change::Delete(id) => {
                        table.remove(id.as_str()).map_err(|e| self.write_error(e))?;
                    }
                }
            }
            let mut meta = tx.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert("index", batch.index).map_err(|e| self.write_error(e))?;
        }
        tx.commit().map_err(|e| self.write_error(e))
    }
}
