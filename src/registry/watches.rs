//! What blocking queries wait on: a channel per watched service, and one for the catalog.
//!
//! A service's channel is made by its first watcher and dropped with its last one, so the map of
//! channels is as large as the number of queries waiting, never the number of names ever asked
//! for (a client reading 250,000 unknown names once grew it by 200 MB when channels stayed).

use tokio::sync::watch;

use super::Registry;
use crate::model::ServiceKey;

/// A blocking query's subscription: the index of the last change to what it watches. For a
/// service, the channel goes when the last `Watch` on it is dropped.
pub struct Watch<'a> {
    changes: Option<watch::Receiver<u64>>,
    /// The service or key/value prefix watched, whose channel may have to go with this watch;
    /// `None` for the catalog and for everything.
    owner: Option<(&'a Registry, Watched)>,
}

/// What a watch's channel belongs to.
enum Watched {
    Service(ServiceKey),
    KvPrefix(Box<str>),
}

impl<'a> Watch<'a> {
    /// A watch on a key/value prefix's channel.
    pub(super) fn kv(changes: watch::Receiver<u64>, registry: &'a Registry, prefix: Box<str>) -> Self {
        Self {
            changes: Some(changes),
            owner: Some((registry, Watched::KvPrefix(prefix))),
        }
    }

    pub fn changes(&mut self) -> &mut watch::Receiver<u64> {
        self.changes.as_mut().expect("present until dropped")
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // The receiver first, so that the count below no longer includes it.
        self.changes.take();
        // Under the map's shard lock, as subscriptions are: a watcher arriving now either
        // subscribed before (the channel stays) or makes a new one.
        match &self.owner {
            Some((registry, Watched::Service(key))) => {
                registry
                    .service_watches
                    .remove_if(key, |_, channel| channel.receiver_count() == 0);
            }
            Some((registry, Watched::KvPrefix(prefix))) => registry.drop_kv_watch(prefix),
            None => {}
        }
    }
}

impl Registry {
    /// The index a blocking query on a service compares with: its last change, including its
    /// removal while somebody watches; for a name never seen, the registry's index.
    pub fn service_index(&self, name: &str) -> u64 {
        let key = ServiceKey::new(name);
        if let Some(entry) = self.service_by_key(&key) {
            return entry.modify_index;
        }
        match self.service_watches.get(&key) {
            Some(watch) => *watch.borrow(),
            None => self.index(),
        }
    }

    /// Waits on changes of one service; its value is [`Self::service_index`].
    pub fn watch_service(&self, name: &str) -> Watch<'_> {
        let key = ServiceKey::new(name);
        let current = self.service_index(name);
        let changes = self
            .service_watches
            .entry(key.clone())
            .or_insert_with(|| watch::Sender::new(current))
            .subscribe();
        Watch {
            changes: Some(changes),
            owner: Some((self, Watched::Service(key))),
        }
    }

    /// How many services have a blocking query waiting on them.
    pub fn watched_services(&self) -> usize {
        self.service_watches.len()
    }

    /// The index of the last registration or deregistration (`/v1/catalog/services`).
    pub fn catalog_index(&self) -> u64 {
        *self.catalog.borrow()
    }

    /// Waits on registrations and deregistrations.
    pub fn watch_catalog(&self) -> Watch<'_> {
        Watch {
            changes: Some(self.catalog.subscribe()),
            owner: None,
        }
    }

    /// Waits on every change, health included; its value is [`Self::index`].
    pub fn watch_everything(&self) -> Watch<'_> {
        Watch {
            changes: Some(self.everything.subscribe()),
            owner: None,
        }
    }

    /// Wakes the watchers of a service that changed at `index`, if it has any.
    pub(super) fn notify_service(&self, key: &ServiceKey, index: u64) {
        if let Some(watch) = self.service_watches.get(key) {
            watch.send_replace(index);
        }
    }
}
