//! Group commit: changes queue in the registry's order, and a writer thread commits everything
//! queued in one transaction, then hands each change's outcome, in order, to a second thread
//! that reports them: applying a batch (recompiling DNS answers) overlaps the next batch's
//! commit instead of delaying it.
//!
//! A failed commit fails the changes in it and nothing else: the next batch tries again, so the
//! journal recovers by itself once the disk can be written (space freed, remounted writable).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use prometheus_client::metrics::histogram::Histogram;

use super::{Batch, Change, Store, StoreError};

/// Most changes in one transaction.
const MAX_BATCH: usize = 4096;

/// What to do once a change's batch is committed (or has failed). Called on the journal's
/// reporting thread, in the order the changes were appended.
/// Given the index the change was committed at (see [`Store::write`]).
pub type Then = Box<dyn FnOnce(Result<u64, StoreError>) + Send>;

struct Entry {
    change: Change,
    index: u64,
    durable: bool,
    then: Option<Then>,
}

pub struct Journal {
    sender: Mutex<Option<Sender<Entry>>>,
    /// How long each commit took, and how many changes it held.
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
    /// The committing thread, then the reporting one.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// For what does not queue (heartbeats), and what kind of store it is.
    store: std::sync::Arc<dyn Store>,
}

/// A batch's outcome and the callbacks of its changes, in order.
type Outcome = (Result<u64, StoreError>, Vec<Then>);

impl Journal {
    pub fn start(store: std::sync::Arc<dyn Store>) -> std::io::Result<Self> {
        let (sender, receiver) = channel();
        let (outcomes, reported) = channel::<Outcome>();
        let reporter = std::thread::Builder::new()
            .name("journal-apply".into())
            .spawn(move || {
                for (result, thens) in reported {
                    for then in thens {
                        then(result.clone());
                    }
                }
            })?;
        let (commit_seconds, commit_batch) = (crate::metrics::latency_histogram(), crate::metrics::batch_histogram());
        let committer = {
            let store = store.clone();
            let timed = Timed {
                seconds: commit_seconds.clone(),
                batch: commit_batch.clone(),
            };
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || commit_loop(&*store, &receiver, &outcomes, &timed))?
        };
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            commit_seconds,
            commit_batch,
            threads: Mutex::new(vec![committer, reporter]),
            store,
        })
    }

    /// Whether the store is written by other servers too: changes are applied as they come
    /// back from it, not as they are committed.
    pub fn shared(&self) -> bool {
        self.store.shared()
    }

    /// Whether the store keeps key/value entries.
    pub fn keeps_kv(&self) -> bool {
        self.store.keeps_kv()
    }

    /// A key/value write to a shared store (see [`Store::write_kv`]): not queued behind the
    /// registry's writes.
    pub fn write_kv(
        &self,
        ops: Vec<super::KvOp>,
        condition: Option<super::KvCondition>,
        then: Box<dyn FnOnce(Result<Option<u64>, StoreError>) + Send>,
    ) {
        self.store.write_kv(ops, condition, then);
    }

    /// Whether the store keeps nodes.
    pub fn keeps_nodes(&self) -> bool {
        self.store.keeps_nodes()
    }

    /// A TTL check's heartbeat, for a shared store (see [`Store::heartbeat`]): not queued
    /// behind the writes, as it changes no record.
    pub fn heartbeat(
        &self,
        check: &str,
        ttl: std::time::Duration,
        lease: Option<super::Lease>,
        then: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    ) {
        self.store.heartbeat(check, ttl, lease, then);
    }

    /// Queues a change; `then` learns whether it was committed. Call in the order the changes
    /// were made (under the registry's writer lock). Refused once the journal is closed, and
    /// then `then` is never called.
    pub fn append(&self, change: Change, index: u64, durable: bool, then: Option<Then>) -> Result<(), StoreError> {
        let entry = Entry {
            change,
            index,
            durable,
            then,
        };
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        match sender.as_ref().map(|s| s.send(entry)) {
            Some(Ok(())) => Ok(()),
            _ => Err(StoreError::Closed),
        }
    }

    /// Commits what is queued (durably), reports it, and stops the threads.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(PoisonError::into_inner).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            // The last owner of the registry may be a callback on the reporting thread: it
            // cannot wait for itself, and it is finishing the queue anyway.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where the commit loop records each commit.
struct Timed {
    seconds: Histogram,
    batch: Histogram,
}

fn commit_loop(store: &dyn Store, receiver: &Receiver<Entry>, outcomes: &Sender<Outcome>, timed: &Timed) {
    let mut changes: Vec<Change> = Vec::new();
    let mut thens = Vec::new();
    let mut unsynced = false;
    let mut failing = false;
    let mut last_index = 0;
    // Blocks for the first change, then takes whatever else queued meanwhile.
    while let Ok(first) = receiver.recv() {
        let mut durable = false;
        let mut next = Some(first);
        while let Some(entry) = next {
            durable |= entry.durable;
            last_index = last_index.max(entry.index);
            changes.push(entry.change);
            thens.push(entry.then);
            next = if changes.len() < MAX_BATCH {
                receiver.try_recv().ok()
            } else {
                None
            };
        }
        let started = std::time::Instant::now();
        let result = store.write(&Batch {
            changes: &changes,
            index: last_index,
            durable,
        });
        timed.seconds.observe(started.elapsed().as_secs_f64());
        timed.batch.observe(changes.len() as f64);
        match &result {
            Err(error) if !failing => {
                failing = true;
                tracing::error!(%error, "the registry database cannot be written: registrations and \
                    deregistrations are refused (503), health updates go on in memory (with etcd, \
                    they are held until it takes writes again)");
            }
            Ok(_) if failing => {
                failing = false;
                tracing::warn!("the registry database can be written again");
            }
            _ => {}
        }
        unsynced = if durable { false } else { unsynced || result.is_ok() };
        let _ = outcomes.send((result, thens.drain(..).flatten().collect()));
        changes.clear();
    }
    // Closing: make the best-effort changes durable too.
    if unsynced {
        let batch = Batch {
            changes: &[],
            index: last_index,
            durable: true,
        };
        if let Err(error) = store.write(&batch) {
            tracing::error!(%error, "could not sync the registry database at shutdown");
        }
    }
}
