//! Nodes: this server's own (where the agent API registers) and external ones that a third
//! party registers through the catalog (`PUT /v1/catalog/register`: consul-esm, Terraform, a
//! registrar of services sextant does not run next to).
//!
//! A node's checks count in the health of every service on it (a critical node check takes
//! them all out of DNS, as in Consul), so each instance holds its node as the registry has it,
//! and a change of a node is applied to every instance on it. Node writes are staged, committed
//! and applied like registrations, in the same journal, ahead of the instances that name them.
//!
//! Service and check IDs stay unique across nodes (Consul's are per node): an ID taken on one
//! node is refused on another with a message saying so.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::write::{Timing, Touched};
use super::{CheckEvent, Registry, RegistryError, Writer, Written};
use crate::model::{Address, Check, CheckId, CheckKind, Instance, InstanceId, Node, NodeName, ServiceKey};
use crate::store::{Change, StoreError, StoredInstance, StoredNode};

/// The ID of the local node's maintenance check (Consul's).
pub const NODE_MAINTENANCE: &str = "_node_maintenance";
/// Its output when enabled without a reason (Consul's words).
const NODE_NO_REASON: &str =
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";

/// What `PUT /v1/catalog/register` asks for: a node (added or updated), perhaps a service on
/// it, and checks to add or replace.
#[derive(Debug)]
pub struct CatalogRegistration {
    /// Without checks: those of the request are in `checks`.
    pub node: Arc<Node>,
    /// On `node`, without checks: a service registered again keeps the checks it has.
    pub service: Option<Instance>,
    /// Each on the node (`None`) or on one of its services (its `ServiceID`).
    pub checks: Vec<(Option<InstanceId>, Check)>,
    /// Consul's `SkipNodeUpdate`: a node that exists keeps its address and metadata.
    pub skip_node_update: bool,
}

/// What `PUT /v1/catalog/deregister` takes off a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogRemoval {
    /// The node and every service and check on it.
    Node,
    Service(InstanceId),
    Check(CheckId),
}

/// `checks` with `check` in place of the one of its ID (added when there is none).
pub(super) fn with_check(checks: &[Check], check: Check) -> Box<[Check]> {
    let mut list: Vec<Check> = without_check(checks, &check.spec.id).into_vec();
    list.push(check);
    list.into_boxed_slice()
}

/// `checks` without the one of ID `id`.
pub(super) fn without_check(checks: &[Check], id: &CheckId) -> Box<[Check]> {
    checks.iter().filter(|c| c.spec.id != *id).cloned().collect()
}

/// Whether the health checker runs a check: a probe, or a TTL check's deadline (maintenance
/// and a registrar's checks just are what they are).
pub(super) fn runs(check: &Check) -> bool {
    check.spec.kind.schedule().is_some() || matches!(check.spec.kind, CheckKind::Ttl { .. })
}

/// Adds `check` to `checks`, or replaces the check of its ID; one that is unchanged (the same
/// definition, status and output) keeps its state, so its `LastUpdate` stays.
fn merge_check(checks: &mut Vec<Check>, check: Check) {
    match checks.iter_mut().find(|c| c.spec.id == check.spec.id) {
        Some(old) if old.spec == check.spec && old.status == check.status && old.output == check.output => {}
        Some(old) => *old = check,
        None => checks.push(check),
    }
}

impl Registry {
    // === reads ===

    /// This server's own node, as it is now (its maintenance check, if any).
    pub fn local_node(&self) -> Arc<Node> {
        self.local_node.load_full()
    }

    /// A node by name, case-insensitively: this server's or an external one.
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        let local = self.local_node();
        if local.name.as_str().eq_ignore_ascii_case(name) {
            return Some(local);
        }
        self.nodes
            .get(name.to_ascii_lowercase().as_str())
            .map(|e| e.value().clone())
    }

    /// Every node, this server's first, the external ones sorted by name.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        let mut external: Vec<Arc<Node>> = self.nodes.iter().map(|e| e.value().clone()).collect();
        external.sort_by_key(|n| n.name.key());
        let mut all = vec![self.local_node()];
        all.extend(external);
        all
    }

    /// The instances on a node, sorted by ID.
    pub fn node_instances(&self, node: &Node) -> Vec<Arc<Instance>> {
        let key = node.name.key();
        let mut on: Vec<Arc<Instance>> = self
            .instances
            .iter()
            .filter(|e| e.value().node.name.key() == key)
            .map(|e| e.value().clone())
            .collect();
        on.sort_by(|a, b| a.id.cmp(&b.id));
        on
    }

    /// The address of an external node for `<node>.node.<domain>`, by its lower-case name;
    /// `None` for a node unknown or known by a host name.
    pub fn node_address(&self, lower_name: &str) -> Option<IpAddr> {
        match self.nodes.get(lower_name)?.value().address {
            Address::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    // === writes ===

    /// Adds or updates an external node, perhaps with a service on it, and adds or replaces
    /// the checks given. Everything is checked before anything is written, and what is written
    /// is one entry of the journal: a refused or failed request changes nothing.
    pub fn catalog_register(&self, registration: CatalogRegistration) -> Result<Written, RegistryError> {
        self.refuse_unless_nodes_kept()?;
        let mut w = self.lock();
        let CatalogRegistration {
            node: given,
            service,
            checks,
            skip_node_update,
        } = registration;
        let key = self.external_key(&given.name)?;
        let current = self.node_now(&w, &key);
        if current.is_none() {
            self.check_node_room(&w)?;
        }
        // With `SkipNodeUpdate`, a known node keeps its address and metadata (Consul's).
        let mut node = match (&current, skip_node_update) {
            (Some(current), true) => Node::clone(current),
            _ => Node {
                checks: current.as_ref().map(|c| c.checks.clone()).unwrap_or_default(),
                create_index: 0,
                modify_index: 0,
                ..Node::clone(&given)
            },
        };
        let mut node_checks = node.checks.to_vec();
        let mut service_checks = Vec::new();
        for (service_id, check) in checks {
            match service_id {
                None => merge_check(&mut node_checks, check),
                Some(id) => service_checks.push((id, check)),
            }
        }
        node.checks = node_checks.into_boxed_slice();
        node.validate().map_err(RegistryError::Invalid)?;
        // The instances the request changes, as they will be.
        let mut instances: Vec<Instance> = Vec::new();
        if let Some(mut service) = service {
            if let Some(previous) = self.instance_now(&w, &service.id) {
                self.refuse_if_elsewhere(&previous, &key)?;
                service.checks = previous.checks.clone();
            }
            instances.push(service);
        }
        for (id, check) in service_checks {
            let at = match instances.iter().position(|i| i.id == id) {
                Some(at) => at,
                None => {
                    let previous = self
                        .instance_now(&w, &id)
                        .filter(|p| p.node.name.key() == key)
                        .ok_or_else(|| RegistryError::NoSuchServiceOnNode {
                            id: id.to_string(),
                            node: node.name.to_string(),
                        })?;
                    instances.push(Instance::clone(&previous));
                    instances.len() - 1
                }
            };
            let mut list = instances[at].checks.to_vec();
            merge_check(&mut list, check);
            instances[at].checks = list.into_boxed_slice();
        }
        // A check ID names one check on a node: its own or one of its services'.
        let others: Vec<Arc<Instance>> = self
            .node_instance_ids_now(&w, &key)
            .iter()
            .filter(|id| !instances.iter().any(|i| i.id == **id))
            .filter_map(|id| self.instance_now(&w, id))
            .collect();
        let mut ids: HashSet<&CheckId> = node.checks.iter().map(|c| &c.spec.id).collect();
        let on_node = instances.iter().chain(others.iter().map(|i| &**i));
        for check in on_node.flat_map(|i| i.checks.iter()) {
            if !ids.insert(&check.spec.id) {
                return Err(RegistryError::Invalid(format!(
                    "check ID {:?} is used twice on node {:?}",
                    check.spec.id.as_str(),
                    node.name.as_str()
                )));
            }
        }
        // A node written again while its last write waits for its commit is written again, so
        // that the answer waits for a commit too.
        let node_changed = current.as_ref().is_none_or(|c| !same_node(c, &node)) || w.nodes_staged.contains_key(&key);
        if !node_changed && instances.is_empty() {
            return Ok(Written::applied(self.index()));
        }
        let index = w.next_index();
        let node = match current {
            Some(current) if !node_changed => current,
            current => {
                node.create_index = current.as_ref().map_or(index, |c| c.create_index);
                node.modify_index = index;
                Arc::new(node)
            }
        };
        for instance in &mut instances {
            instance.node = node.clone();
            self.check_instance(&w, instance)?;
        }
        let instances = instances
            .into_iter()
            .map(|i| (i.id.clone(), Some(self.prepared(&w, i, index))))
            .collect();
        let group = Group {
            node: node_changed.then_some((key, Some(node))),
            instances,
        };
        Ok(self.stage_group(&mut w, group, index))
    }

    /// Takes a service, a check or a whole external node off, as one entry of the journal.
    /// Nothing to do (an unknown node, service or check) is no error, as in Consul.
    pub fn catalog_deregister(&self, name: &NodeName, removal: CatalogRemoval) -> Result<Written, RegistryError> {
        self.refuse_unless_nodes_kept()?;
        let mut w = self.lock();
        let key = self.external_key(name)?;
        let nothing = Ok(Written::applied(self.index()));
        let Some(node) = self.node_now(&w, &key) else {
            // A removal still waiting for its commit is made again: the answer waits for one.
            if !w.nodes_staged.contains_key(&key) {
                return nothing;
            }
            let index = w.next_index();
            let group = Group {
                node: Some((key, None)),
                instances: Vec::new(),
            };
            return Ok(self.stage_group(&mut w, group, index));
        };
        let on_node = |w: &Writer, id: &InstanceId| self.instance_now(w, id).filter(|i| i.node.name.key() == key);
        let group = match removal {
            CatalogRemoval::Service(id) => {
                let removing = w.staged.get(&id).is_some_and(|(staged, _)| staged.is_none())
                    && self.instance(&id).is_some_and(|i| i.node.name.key() == key);
                if on_node(&w, &id).is_none() && !removing {
                    return nothing;
                }
                Group {
                    node: None,
                    instances: vec![(id, None)],
                }
            }
            CatalogRemoval::Check(check) if node.checks.iter().any(|c| c.spec.id == check) => {
                let mut updated = Node::clone(&node);
                updated.checks = without_check(&node.checks, &check);
                Group {
                    node: Some((key, Some(Arc::new(updated)))),
                    instances: Vec::new(),
                }
            }
            CatalogRemoval::Check(check) => {
                let owner = self.node_instance_ids_now(&w, &key).into_iter().find_map(|id| {
                    let instance = on_node(&w, &id)?;
                    instance.checks.iter().any(|c| c.spec.id == check).then_some(instance)
                });
                let Some(owner) = owner else {
                    return nothing;
                };
                let mut updated = Instance::clone(&owner);
                updated.checks = without_check(&owner.checks, &check);
                let index = w.next_index();
                // A node still waiting for its commit goes with the instance that names it.
                let staged_node = w
                    .nodes_staged
                    .contains_key(&key)
                    .then(|| (key.clone(), Some(node.clone())));
                let group = Group {
                    node: staged_node,
                    instances: vec![(owner.id.clone(), Some(self.prepared(&w, updated, index)))],
                };
                return Ok(self.stage_group(&mut w, group, index));
            }
            CatalogRemoval::Node => Group {
                node: Some((key.clone(), None)),
                instances: self
                    .node_instance_ids_now(&w, &key)
                    .into_iter()
                    .map(|id| (id, None))
                    .collect(),
            },
        };
        let index = w.next_index();
        let group = Group {
            node: group.node.map(|(key, node)| {
                let node = node.map(|n| {
                    let mut n = Node::clone(&n);
                    n.modify_index = index;
                    Arc::new(n)
                });
                (key, node)
            }),
            ..group
        };
        Ok(self.stage_group(&mut w, group, index))
    }

    /// Puts this server's node into maintenance (with `reason`, or Consul's default words) or
    /// takes it out (`None`): Consul's `_node_maintenance` check, critical, on every service
    /// registered here.
    pub fn set_node_maintenance(&self, reason: Option<&str>) -> Result<Written, RegistryError> {
        if self.shared {
            return Err(RegistryError::NodeMaintenanceShared);
        }
        self.refuse_unless_nodes_kept()?;
        let mut w = self.lock();
        let (key, current) = self.local_node_now(&w);
        let mut checks: Vec<Check> = current
            .checks
            .iter()
            .filter(|c| !matches!(c.spec.kind, CheckKind::Maintenance))
            .cloned()
            .collect();
        if let Some(reason) = reason {
            let id = CheckId::parse(NODE_MAINTENANCE).expect("a constant ID is valid");
            checks.push(super::check_writes::maintenance_check(
                id,
                "Node Maintenance Mode",
                reason,
                NODE_NO_REASON,
            ));
        }
        if checks.len() == current.checks.len() && reason.is_none() && !w.nodes_staged.contains_key(&key) {
            return Ok(Written::applied(self.index())); // not in maintenance: nothing to do
        }
        tracing::info!(node = %current.name, reason = ?reason, enabled = reason.is_some(), "node maintenance mode");
        Ok(self.stage_local_checks(&mut w, key, &current, checks.into_boxed_slice()))
    }

    fn refuse_unless_nodes_kept(&self) -> Result<(), RegistryError> {
        if self.journal.as_ref().is_some_and(|j| !j.keeps_nodes()) {
            return Err(RegistryError::NodesNotKept);
        }
        Ok(self.refuse_if_cut_off()?)
    }

    /// The key of an external node; this server's own is refused (the agent API registers there).
    fn external_key(&self, name: &NodeName) -> Result<ServiceKey, RegistryError> {
        let key = name.key();
        if key == self.local_node().name.key() {
            return Err(RegistryError::LocalNode(name.to_string()));
        }
        Ok(key)
    }

    fn refuse_if_elsewhere(&self, instance: &Instance, key: &ServiceKey) -> Result<(), RegistryError> {
        if instance.node.name.key() != *key {
            return Err(RegistryError::IdOnOtherNode {
                id: instance.id.to_string(),
                node: instance.node.name.to_string(),
            });
        }
        Ok(())
    }

    /// A node as the next write sees it: with the writes waiting for their commit.
    fn node_now(&self, w: &Writer, key: &ServiceKey) -> Option<Arc<Node>> {
        match w.nodes_staged.get(key) {
            Some((staged, _)) => staged.clone(),
            None => self.node(key.as_str()),
        }
    }

    /// The instances on a node, with the writes waiting for their commit.
    fn node_instance_ids_now(&self, w: &Writer, key: &ServiceKey) -> Vec<InstanceId> {
        let mut ids: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|e| e.value().node.name.key() == *key)
            .map(|e| e.key().clone())
            .collect();
        ids.extend(w.staged.keys().cloned());
        ids.sort();
        ids.dedup();
        ids.retain(|id| self.instance_now(w, id).is_some_and(|i| i.node.name.key() == *key));
        ids
    }

    /// Queues a catalog write for its commit, as one entry of the journal, and applies it
    /// once committed (at once without a store).
    fn stage_group(&self, w: &mut Writer, group: Group, index: u64) -> Written {
        let Some(journal) = &self.journal else {
            let index = index.max(self.index() + 1);
            self.apply_group(w, group, index);
            return Written::applied(index);
        };
        // A node written goes before the instances that name it; a node removed, after them
        // (so that no store, however it splits the entry, holds an instance without its node).
        let node_change = group.node.as_ref().map(|(key, node)| match node {
            Some(node) => Change::PutNode(Box::new(StoredNode::from_node(node))),
            None => Change::DeleteNode(key.as_str().to_owned()),
        });
        let removed = matches!(node_change, Some(Change::DeleteNode(_)));
        let mut changes: Vec<Change> = node_change.iter().filter(|_| !removed).cloned().collect();
        for (id, instance) in &group.instances {
            changes.push(match instance {
                Some(instance) => Change::Put(Box::new(StoredInstance::from_instance(instance))),
                None => Change::Delete(id.to_string()),
            });
        }
        changes.extend(node_change.filter(|_| removed));
        let (done, receiver) = oneshot::channel();
        let me = self.me.clone();
        let staged = group.clone();
        let then = Box::new(move |committed: Result<u64, StoreError>| {
            let outcome = match me.upgrade() {
                Some(registry) => registry.group_committed(staged, index, committed),
                None => Err(RegistryError::Store(StoreError::Closed)),
            };
            // The client may have gone: the write stands all the same.
            let _ = done.send(outcome);
        });
        if let Err(error) = journal.append(Change::Group(changes.into_boxed_slice()), index, true, Some(then)) {
            return Written::failed(error);
        }
        // The commit's callback waits for the writer lock, held here: it runs after this.
        if let Some((key, node)) = group.node {
            let slot = w.nodes_staged.entry(key).or_insert((None, 0));
            slot.0 = node;
            slot.1 += 1;
        }
        for (id, instance) in group.instances {
            let slot = w.staged.entry(id).or_insert((None, 0));
            slot.0 = instance;
            slot.1 += 1;
        }
        if self.shared {
            return Written::waiting_applied(receiver, self.applied.subscribe());
        }
        Written::waiting(receiver)
    }

    fn group_committed(
        &self,
        group: Group,
        index: u64,
        committed: Result<u64, StoreError>,
    ) -> Result<u64, RegistryError> {
        let mut w = self.lock();
        if self.shared {
            // Applied when it comes back through the watch; staged until then, so that the
            // next write builds on it.
            match committed {
                Ok(revision) if revision > self.index() => {
                    let node = group.node.as_ref().map(|(key, _)| key.clone());
                    w.pending_nodes.entry(revision).or_default().extend(node);
                    let ids = group.instances.iter().map(|(id, _)| (id.clone(), Timing::now()));
                    w.pending.entry(revision).or_default().extend(ids);
                }
                // Back through the watch already, or not made.
                _ => Self::unstage_group(&mut w, &group),
            }
            return Ok(committed?);
        }
        Self::unstage_group(&mut w, &group);
        committed?;
        let applied = index.max(self.index() + 1);
        self.apply_group(&mut w, group, applied);
        Ok(applied)
    }

    /// One write fewer waits for the group's node and instances.
    fn unstage_group(w: &mut Writer, group: &Group) {
        if let Some((key, _)) = &group.node {
            Self::unstage_node(w, key);
        }
        for (id, _) in &group.instances {
            Self::unstage(w, id);
        }
    }

    /// One write fewer waits for the node.
    pub(super) fn unstage_node(w: &mut Writer, key: &ServiceKey) {
        if let Some(slot) = w.nodes_staged.get_mut(key) {
            slot.1 -= 1;
            if slot.1 == 0 {
                w.nodes_staged.remove(key);
            }
        }
    }

    /// Makes a committed catalog write visible at `index`: the node first (the instances that
    /// name it take it as it is now), then the instances.
    fn apply_group(&self, w: &mut Writer, group: Group, index: u64) {
        let mut touched = Touched::default();
        if let Some((key, node)) = group.node {
            self.apply_node(w, &key, node, index, &mut touched);
        }
        for (id, instance) in group.instances {
            self.apply_change(w, &id, instance, index, &mut touched);
        }
        self.rebuild_touched(touched, index);
    }

    /// A node write, in the node map and in every instance on the node (whose services the
    /// caller publishes again: their health or address may have changed).
    pub(super) fn apply_node(
        &self,
        w: &mut Writer,
        key: &ServiceKey,
        node: Option<Arc<Node>>,
        index: u64,
        touched: &mut Touched,
    ) {
        w.last_index = w.last_index.max(index);
        let previous = self.node(key.as_str());
        let mut started = Vec::new();
        let node = node.map(|node| {
            let mut node = Node::clone(&node);
            node.modify_index = index;
            if node.create_index > index || node.create_index == 0 {
                node.create_index = index;
            }
            if node.local {
                started = self.keep_local_check_state(w, &mut node, previous.as_deref(), index);
            }
            Arc::new(node)
        });
        // The node list changes with nodes added, removed or moved; not with their health.
        touched.catalog |= match (&previous, &node) {
            (Some(old), Some(new)) => old.address != new.address || old.meta != new.meta || old.id != new.id,
            _ => true,
        };
        match &node {
            Some(node) if node.local => self.local_node.store(node.clone()),
            Some(node) => {
                self.nodes.insert(key.clone(), node.clone());
            }
            None => {
                self.nodes.remove(key);
            }
        }
        let Some(node) = node else {
            return;
        };
        self.attach_node(key, &node, touched);
        // Once the node is in place: a runner looks its check up there as it starts.
        started.into_iter().for_each(|event| w.emit(event));
    }

    /// Puts `node` in every instance on it (their services are the caller's to publish).
    fn attach_node(&self, key: &ServiceKey, node: &Arc<Node>, touched: &mut Touched) {
        let on: Vec<Arc<Instance>> = self
            .instances
            .iter()
            .filter(|e| e.value().node.name.key() == *key)
            .map(|e| e.value().clone())
            .collect();
        for old in on {
            let mut instance = Instance::clone(&old);
            instance.node = node.clone();
            self.unindex_address(&old);
            let instance = Arc::new(instance);
            self.instances.insert(instance.id.clone(), instance.clone());
            self.index_address(&instance);
            touched.services.entry(instance.service.key()).or_default();
        }
    }

    /// This server's node as a committed write makes it: a check whose definition is unchanged
    /// keeps its state as served (a probe's result that came while the write waited stands);
    /// checks gone are stopped; new ones get `index` as their generation and are returned, to
    /// be started. When the merge changed what the write stored, it is stored again as served.
    fn keep_local_check_state(
        &self,
        w: &Writer,
        node: &mut Node,
        previous: Option<&Node>,
        index: u64,
    ) -> Vec<CheckEvent> {
        let written = node.checks.clone();
        let mut started = Vec::new();
        for check in node.checks.iter_mut() {
            match previous.and_then(|p| p.checks.iter().find(|c| c.spec == check.spec)) {
                Some(kept) => *check = kept.clone(),
                None => {
                    check.generation = index;
                    if runs(check) {
                        started.push(CheckEvent::Start {
                            spec: check.spec.clone(),
                            generation: index,
                            run_now: false,
                        });
                    }
                }
            }
        }
        for old in previous.iter().flat_map(|p| p.checks.iter()) {
            if !node.checks.iter().any(|c| c.spec == old.spec) {
                w.emit(CheckEvent::Stop {
                    check: old.spec.id.clone(),
                });
            }
        }
        let served_differs = node
            .checks
            .iter()
            .zip(written.iter())
            .any(|(a, b)| a.status != b.status || a.output != b.output);
        if served_differs {
            self.journal_node(w, node);
        }
        started
    }

    /// Stores this server's node as served, best effort (as an instance's health is), unless a
    /// write of it waits for its commit (which stores what it applies).
    fn journal_node(&self, w: &Writer, node: &Node) {
        if let Some(journal) = &self.journal
            && !w.nodes_staged.contains_key(&node.name.key())
        {
            let record = Box::new(StoredNode::from_node(node));
            // A closed journal means the server is stopping: the status is probed again.
            let _ = journal.append(Change::PutNode(record), node.modify_index, false, None);
        }
    }

    /// Runs `f` on one definition of a check of this server's node; `None` once it is removed
    /// or redefined.
    pub(super) fn with_node_check<R>(
        &self,
        check: &CheckId,
        generation: u64,
        f: impl FnOnce(&Check) -> R,
    ) -> Option<R> {
        let local = self.local_node();
        let found = local
            .checks
            .iter()
            .find(|c| c.spec.id == *check && c.generation == generation)?;
        Some(f(found))
    }

    /// [`Registry::update_check`] for a check of this server's node: a new status or output is
    /// served at once, in every instance here, and stored best effort, as an instance's is.
    pub(super) fn update_node_check(
        &self,
        w: &mut Writer,
        check: &CheckId,
        change: impl FnOnce(&mut Check) -> Result<bool, RegistryError>,
    ) -> Result<Written, RegistryError> {
        let unknown = || RegistryError::UnknownCheck(check.clone());
        let served = self.local_node();
        let mut updated = Node::clone(&served);
        let slot = updated
            .checks
            .iter_mut()
            .find(|c| c.spec.id == *check)
            .ok_or_else(unknown)?;
        let before = slot.status;
        let visible = change(slot)?;
        let after = slot.status;
        if !visible {
            // Timers only: served, never stored (read from the node itself, not its instances).
            self.local_node.store(Arc::new(updated));
            return Ok(Written::applied(self.index()));
        }
        if after != before {
            self.count_transition(before, after);
            tracing::info!(node = %updated.name, check = %check, from = before.as_str(), to = after.as_str(), "node check status changed");
        }
        let index = w.next_index();
        w.last_index = w.last_index.max(index);
        updated.modify_index = index;
        self.journal_node(w, &updated);
        let updated = Arc::new(updated);
        self.local_node.store(updated.clone());
        let mut touched = Touched::default();
        self.attach_node(&updated.name.key(), &updated, &mut touched);
        self.rebuild_touched(touched, index);
        Ok(Written::applied(index))
    }

    /// Adds a check to this server's node (`PUT /v1/agent/check/register` without a
    /// `ServiceID`), or replaces its check of the same ID: while it is critical, every service
    /// registered here is (Consul's node-level checks).
    pub fn add_node_check(&self, spec: crate::model::CheckSpec) -> Result<Written, RegistryError> {
        if self.shared {
            return Err(RegistryError::NodeMaintenanceShared);
        }
        self.refuse_unless_nodes_kept()?;
        let mut w = self.lock();
        if let Some(owner) = self.check_owner_now(&w, &spec.id) {
            return Err(RegistryError::CheckIdTaken { check: spec.id, owner });
        }
        let (key, current) = self.local_node_now(&w);
        let checks = with_check(&current.checks, Check::new(spec));
        let mut updated = Node::clone(&current);
        updated.checks = checks.clone();
        updated.validate().map_err(RegistryError::Invalid)?;
        Ok(self.stage_local_checks(&mut w, key, &current, checks))
    }

    /// Takes a check off this server's node; `None` when it has none of that ID.
    pub(super) fn remove_node_check(&self, w: &mut Writer, check: &CheckId) -> Option<Written> {
        let (key, current) = self.local_node_now(w);
        if !current.checks.iter().any(|c| c.spec.id == *check) {
            return None;
        }
        Some(self.stage_local_checks(w, key, &current, without_check(&current.checks, check)))
    }

    /// This server's node as the next write sees it, and its key.
    fn local_node_now(&self, w: &Writer) -> (ServiceKey, Arc<Node>) {
        let local = self.local_node();
        let key = local.name.key();
        let now = self.node_now(w, &key).unwrap_or(local);
        (key, now)
    }

    /// Writes this server's node with `checks` in place of its own.
    fn stage_local_checks(&self, w: &mut Writer, key: ServiceKey, current: &Node, checks: Box<[Check]>) -> Written {
        let index = w.next_index();
        let updated = Node {
            checks,
            modify_index: index,
            ..current.clone()
        };
        let group = Group {
            node: Some((key, Some(Arc::new(updated)))),
            instances: Vec::new(),
        };
        self.stage_group(w, group, index)
    }

    /// A node written to or removed from a shared store, applied at `index` as it came back.
    pub(super) fn node_followed(
        &self,
        w: &mut Writer,
        name: &str,
        record: Option<StoredNode>,
        index: u64,
        touched: &mut Touched,
    ) {
        let local = self.local_node();
        let key = ServiceKey::new(name);
        if key == local.name.key() || name.is_empty() {
            // This server's own node is not kept in a shared store.
            tracing::error!(node = %name, "a node record in etcd has this server's name: skipped");
            return;
        }
        let node = match record.map(|r| r.into_node(&local)) {
            None => None,
            Some(Ok(node)) => Some(Arc::new(node)),
            Some(Err(error)) => {
                tracing::error!(node = %name, %error, "a node record in etcd is not valid: skipped");
                return;
            }
        };
        self.apply_node(w, &key, node, index, touched);
    }

    /// The nodes as a shared store read whole again holds them.
    pub(super) fn nodes_reloaded(&self, records: Vec<StoredNode>, index: u64) {
        let mut w = self.lock();
        let mut touched = Touched::default();
        let present: HashSet<ServiceKey> = records.iter().map(|r| ServiceKey::new(&r.name)).collect();
        let gone: Vec<ServiceKey> = self
            .nodes
            .iter()
            .filter(|e| !present.contains(e.key()))
            .map(|e| e.key().clone())
            .collect();
        for key in gone {
            self.apply_node(&mut w, &key, None, index, &mut touched);
        }
        for record in records {
            let (name, at) = (record.name.to_ascii_lowercase(), record.modify_index);
            if self.node(&name).is_some_and(|n| n.modify_index == at) {
                continue;
            }
            self.node_followed(&mut w, &name, Some(record), at, &mut touched);
        }
        self.rebuild_touched(touched, index);
    }

    /// The node an instance is on, as applied now (a write made on an older version of it
    /// takes the current one); `None` for an external node that is gone.
    pub(super) fn applied_node(&self, node: &Node) -> Option<Arc<Node>> {
        if node.local {
            return Some(self.local_node());
        }
        self.nodes.get(node.name.key().as_str()).map(|e| e.value().clone())
    }

    /// Reads the stored nodes back, before the instances that name them.
    pub(super) fn restore_nodes(&self, store: &dyn crate::store::Store) -> Result<u64, RegistryError> {
        let local = self.local_node();
        let mut index = 0;
        store.load_nodes(&mut |stored: StoredNode| {
            let node = stored.into_node(&local)?;
            index = index.max(node.modify_index);
            if !node.local && node.name.key() == local.name.key() {
                return Err(format!(
                    "an external node is named {:?}, as this server is: start it with another --node-name, \
                     or with the old one and deregister that node",
                    node.name.as_str()
                ));
            }
            if node.local {
                self.local_node.store(Arc::new(node));
            } else {
                self.nodes.insert(node.name.key(), Arc::new(node));
            }
            Ok(())
        })?;
        Ok(index)
    }

    /// The node a stored instance names: this server's (none named) or a stored external one.
    pub(super) fn stored_node(&self, name: Option<&str>) -> Result<Arc<Node>, String> {
        match name {
            None => Ok(self.local_node()),
            Some(name) => self
                .nodes
                .get(name.to_ascii_lowercase().as_str())
                .map(|e| e.value().clone())
                .ok_or_else(|| format!("it is on node {name:?}, which is not stored")),
        }
    }
}

/// Whether a node as registered again is the node as it is (checks included, indexes not).
fn same_node(a: &Node, b: &Node) -> bool {
    a.name.as_str() == b.name.as_str()
        && a.id == b.id
        && a.address == b.address
        && a.meta == b.meta
        && a.checks == b.checks
}

/// Nodes waiting for their commit, by key: the node as it will be (`None`: removed) and how
/// many writes to it are waiting.
pub(super) type StagedNodes = HashMap<ServiceKey, (Option<Arc<Node>>, usize)>;

/// One catalog write: a node's change and its instances', committed and applied together.
#[derive(Clone)]
struct Group {
    node: Option<(ServiceKey, Option<Arc<Node>>)>,
    instances: Vec<(InstanceId, Option<Arc<Instance>>)>,
}
