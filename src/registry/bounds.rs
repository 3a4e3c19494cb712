//! How much the registry holds at most, so that no client can make it a memory sink: a write
//! that would pass a bound is refused ([`RegistryError::Full`], which names the setting) and
//! nothing of it is stored. Replacing what is there (a re-registration, a key written again with
//! a value no larger) is never refused.
//!
//! The bounds are counted on what this server serves plus the writes waiting for their commit.
//! With etcd every server counts the shared registry as served, and servers writing at once near
//! a bound may pass it by the writes in flight.

use std::collections::HashSet;

use super::{Registry, RegistryError, Writer};
use crate::model::{Instance, ServiceKey, rules};

/// The bounds, each a setting of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Service instances, on every node.
    pub instances: usize,
    /// Service names.
    pub services: usize,
    /// External nodes (registered through the catalog).
    pub nodes: usize,
    /// Key/value bytes held (keys twice, values, and 128 bytes an entry).
    pub kv_bytes: usize,
    /// Tags, `Meta` keys and checks of one instance, at most (each at most the rules' own
    /// maximum, [`crate::model::rules`], which is what a store may hold).
    pub tags: usize,
    pub meta_keys: usize,
    pub checks: usize,
}

impl Bounds {
    /// A registry without bounds (benchmarks, tests of other things).
    pub const NONE: Self = Self {
        instances: usize::MAX,
        services: usize::MAX,
        nodes: usize::MAX,
        kv_bytes: usize::MAX,
        tags: usize::MAX,
        meta_keys: usize::MAX,
        checks: usize::MAX,
    };
}

impl Default for Bounds {
    /// Far above what a deployment holds (100,000 instances take about 190 MB), below what
    /// would take a small machine's memory.
    fn default() -> Self {
        Self {
            instances: 250_000,
            services: 50_000,
            nodes: 50_000,
            kv_bytes: 256 * 1024 * 1024,
            tags: rules::MAX_TAGS,
            meta_keys: rules::MAX_META_KEYS,
            checks: rules::MAX_CHECKS,
        }
    }
}

/// The bound a write would pass, for its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Instances,
    Services,
    Nodes,
    KvBytes,
}

impl Bound {
    /// The setting that raises it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Instances => "--max-instances",
            Self::Services => "--max-services",
            Self::Nodes => "--max-nodes",
            Self::KvBytes => "--max-kv-bytes",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Instances => "service instances",
            Self::Services => "services",
            Self::Nodes => "external nodes",
            Self::KvBytes => "bytes of key/value entries",
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what())
    }
}

impl Registry {
    /// Sets the bounds (before anything is served; a registry has none until then). What a
    /// store already holds is restored whole, even past them.
    pub fn set_bounds(&self, bounds: Bounds) {
        let _ = self.bounds.set(bounds);
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds.get().copied().unwrap_or(Bounds::NONE)
    }

    /// Refuses `instance` if it is new and there is no room for another instance, or if its
    /// service is new and there is no room for another service.
    pub(super) fn check_room(&self, w: &Writer, instance: &Instance) -> Result<(), RegistryError> {
        let bounds = self.bounds();
        if bounds == Bounds::NONE {
            return Ok(());
        }
        let per_instance = [
            (
                "Tags",
                instance.tags.len(),
                bounds.tags,
                "tags",
                "--max-tags-per-instance",
            ),
            (
                "Meta",
                instance.meta.len(),
                bounds.meta_keys,
                "keys",
                "--max-meta-per-instance",
            ),
            (
                "Checks",
                instance.checks.len(),
                bounds.checks,
                "checks",
                "--max-checks-per-instance",
            ),
        ];
        for (field, count, limit, what, flag) in per_instance {
            if count > limit {
                return Err(RegistryError::Invalid(format!(
                    "{field}: at most {limit} {what} an instance on this server ({flag})"
                )));
            }
        }
        // Waiting for their commit: instances not served yet, and the new services among them.
        let coming = || {
            w.staged
                .iter()
                .filter(|(id, (instance, _))| instance.is_some() && !self.instances.contains_key(*id))
                .filter_map(|(_, (instance, _))| instance.as_deref())
        };
        if self.instance_now(w, &instance.id).is_none() {
            let held = self.instances.len() + coming().count();
            if held >= bounds.instances {
                return Err(RegistryError::Full {
                    bound: Bound::Instances,
                    limit: bounds.instances,
                });
            }
        }
        let key = instance.service.key();
        let known = |key: &ServiceKey| self.service_by_key(key).is_some();
        if !known(&key) && !coming().any(|i| i.service.key() == key) {
            let new: HashSet<ServiceKey> = coming().map(|i| i.service.key()).filter(|k| !known(k)).collect();
            if self.services.len() + new.len() >= bounds.services {
                return Err(RegistryError::Full {
                    bound: Bound::Services,
                    limit: bounds.services,
                });
            }
        }
        Ok(())
    }

    /// Refuses a new external node when there is no room for another.
    pub(super) fn check_node_room(&self, w: &Writer) -> Result<(), RegistryError> {
        let limit = self.bounds().nodes;
        let coming = w
            .nodes_staged
            .iter()
            .filter(|(key, (node, _))| node.is_some() && !self.nodes.contains_key(*key))
            .count();
        if self.nodes.len() + coming >= limit {
            return Err(RegistryError::Full {
                bound: Bound::Nodes,
                limit,
            });
        }
        Ok(())
    }

    /// Refuses a key/value entry of `bytes` in place of one of `replaced` bytes when the
    /// entries, `held` bytes, would pass their bound.
    pub(super) fn check_kv_room(&self, held: usize, bytes: usize, replaced: usize) -> Result<(), RegistryError> {
        let limit = self.bounds().kv_bytes;
        if bytes > replaced && held.saturating_add(bytes - replaced) > limit {
            return Err(RegistryError::Full {
                bound: Bound::KvBytes,
                limit,
            });
        }
        Ok(())
    }
}
