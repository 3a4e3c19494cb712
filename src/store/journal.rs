//! Group commit: changes queue in the registry's order, and a writer thread commits everything
//! queued in one transaction, then tells each waiting writer.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{Batch, Change, Store, StoreError};

/// Most changes in one transaction.
const MAX_BATCH: usize = 4096;

struct Entry {
    change: Change,
    index: u64,
    durable: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

pub struct Journal {
    sender: Mutex<Option<Sender<Entry>>>,
    /// Set by the first failed commit: nothing is written after it (the disk's state is unknown;
    /// a restart rebuilds from what was committed).
    failed: Arc<OnceLock<StoreError>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A change's commit, to wait for before acknowledging it.
#[must_use = "a write is acknowledged only once it is durable"]
pub struct Pending(Option<oneshot::Receiver<Result<(), StoreError>>>);

impl Pending {
    /// Nothing to wait for (no journal: an in-memory registry).
    pub fn ready() -> Self {
        Self(None)
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(receiver) => receiver
                .await
                .unwrap_or_else(|_| Err(StoreError::Failed("the journal stopped".into()))),
        }
    }
}

impl Journal {
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (sender, receiver) = channel();
        let failed = Arc::new(OnceLock::new());
        let thread = std::thread::Builder::new().name("journal".into()).spawn({
            let failed = failed.clone();
            move || commit_loop(&*store, &receiver, &failed)
        })?;
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            failed,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The error that stopped the journal, if one did.
    pub fn failure(&self) -> Option<StoreError> {
        self.failed.get().map(|e| StoreError::Failed(e.to_string()))
    }

    /// Queues a change. Call in the order the changes were made (under the registry's writer lock).
    pub fn append(&self, change: Change, index: u64, durable: bool) -> Pending {
        let (done, receiver) = oneshot::channel();
        let entry = Entry {
            change,
            index,
            durable,
            done,
        };
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        match sender.as_ref().map(|s| s.send(entry)) {
            Some(Ok(())) => Pending(Some(receiver)),
            _ => {
                let (done, receiver) = oneshot::channel();
                let _ = done.send(Err(StoreError::Failed("the journal is closed".into())));
                Pending(Some(receiver))
            }
        }
    }

    /// Commits what is queued (durably) and stops the writer thread.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(store: &dyn Store, receiver: &Receiver<Entry>, failed: &OnceLock<StoreError>) {
    let mut changes: Vec<Change> = Vec::new();
    let mut waiters = Vec::new();
    let mut unsynced = false;
    let mut last_index = 0;
    // Blocks for the first change, then takes whatever else queued meanwhile.
    while let Ok(first) = receiver.recv() {
        let mut durable = false;
        let mut next = Some(first);
        while let Some(entry) = next {
            durable |= entry.durable;
            last_index = last_index.max(entry.index);
            changes.push(entry.change);
            waiters.push(entry.done);
            next = if changes.len() < MAX_BATCH {
                receiver.try_recv().ok()
            } else {
                None
            };
        }
        let result = match failed.get() {
            Some(error) => Err(StoreError::Failed(error.to_string())),
            None => store.write(&Batch {
                changes: &changes,
                index: last_index,
                durable,
            }),
        };
        if let Err(error) = &result
            && failed.get().is_none()
        {
            tracing::error!(%error, "the registry database failed; writes are refused until restart");
            let _ = failed.set(error.clone());
        }
        unsynced = if durable { false } else { unsynced || result.is_ok() };
        for done in waiters.drain(..) {
            let _ = done.send(result.clone());
        }
        changes.clear();
    }
    // Closing: make the best-effort changes durable too.
    if unsynced && failed.get().is_none() {
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
