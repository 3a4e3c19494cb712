//! Checks added to or taken from a registered instance on their own, each a write of the
//! instance's record (as durable as a registration, and made the same way):
//!
//! - `PUT /v1/agent/check/register` with a `ServiceID` and `/v1/agent/check/deregister/<id>`
//!   (Nomad and consul-esm add checks to instances this way);
//! - maintenance mode (`PUT /v1/agent/service/maintenance/<id>?enable=true`): Consul's
//!   `_service_maintenance:<id>` check, critical while it exists, so the instance leaves DNS and
//!   `?passing` until it is taken off. A re-registration keeps it: the operator put it there,
//!   not the service.

use super::{Registry, RegistryError, Written};
use crate::model::{Check, CheckId, CheckKind, CheckSpec, Health, Instance, InstanceId};

/// The output of a maintenance check enabled without a reason (Consul's words).
const NO_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// The maintenance check's ID for an instance.
pub fn maintenance_check_id(instance: &InstanceId) -> Option<CheckId> {
    CheckId::parse(&format!("_service_maintenance:{}", instance.as_str())).ok()
}

/// A maintenance check: critical, with the operator's reason (or `default`) as its notes.
pub(super) fn maintenance_check(id: CheckId, name: &str, reason: &str, default: &str) -> Check {
    let notes = if reason.is_empty() { default } else { reason };
    let mut check = Check::new(CheckSpec {
        id,
        name: name.into(),
        notes: notes.into(),
        kind: CheckKind::Maintenance,
        initial_status: Health::Critical,
        success_before_passing: 0,
        failures_before_critical: 0,
        deregister_critical_after: None,
    });
    check.output = notes.into();
    check
}

fn is_maintenance(check: &Check) -> bool {
    matches!(check.spec.kind, CheckKind::Maintenance)
}

/// A re-registration keeps the maintenance check of the instance it replaces.
pub(super) fn keep_maintenance(instance: &mut Instance, previous: &Instance) {
    if instance.checks.iter().any(is_maintenance) {
        return;
    }
    if let Some(kept) = previous.checks.iter().find(|c| is_maintenance(c)) {
        let mut checks = instance.checks.to_vec();
        checks.push(kept.clone());
        instance.checks = checks.into_boxed_slice();
    }
}

impl Registry {
    /// Adds a check to an instance, or replaces its check of the same ID (a definition that is
    /// unchanged keeps its state). `None` when the instance is unknown.
    pub fn add_check(&self, id: &InstanceId, spec: CheckSpec) -> Result<Option<Written>, RegistryError> {
        let mut w = self.lock();
        let Some(current) = self.instance_now(&w, id) else {
            return Ok(None);
        };
        let mut updated = Instance::clone(&current);
        updated.checks = super::nodes::with_check(&current.checks, Check::new(spec));
        self.register_locked(&mut w, updated).map(Some)
    }

    /// Takes a check off its instance on this server's node (the agent's; an external node's
    /// checks are its registrar's). `None` when no instance here has it.
    pub fn remove_check(&self, check: &CheckId) -> Result<Option<Written>, RegistryError> {
        let mut w = self.lock();
        let Some(owner) = self.check_owner_now(&w, check) else {
            return Ok(self.remove_node_check(&mut w, check));
        };
        let Some(current) = self.instance_now(&w, &owner).filter(|i| i.node.local) else {
            return Ok(None);
        };
        let mut updated = Instance::clone(&current);
        updated.checks = super::nodes::without_check(&current.checks, check);
        self.register_locked(&mut w, updated).map(Some)
    }

    /// Puts an instance into maintenance (with `reason`, or Consul's default words) or takes it
    /// out (`None`). `None` when the instance is unknown; a write to wait for otherwise.
    pub fn set_maintenance(&self, id: &InstanceId, reason: Option<&str>) -> Result<Option<Written>, RegistryError> {
        let mut w = self.lock();
        let Some(current) = self.instance_now(&w, id) else {
            return Ok(None);
        };
        let mut updated = Instance::clone(&current);
        let mut checks: Vec<Check> = updated.checks.iter().filter(|c| !is_maintenance(c)).cloned().collect();
        if let Some(reason) = reason {
            let check_id = maintenance_check_id(id).ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "the maintenance check's ID, _service_maintenance:{}, would be longer than {} bytes",
                    id.as_str(),
                    InstanceId::MAX_LEN
                ))
            })?;
            checks.push(maintenance_check(
                check_id,
                "Service Maintenance Mode",
                reason,
                NO_REASON,
            ));
        }
        if checks.len() == current.checks.len() && reason.is_none() {
            return Ok(Some(Written::applied(self.index()))); // not in maintenance: nothing to do
        }
        updated.checks = checks.into_boxed_slice();
        tracing::info!(service = %updated.service, instance = %id, reason = ?reason, enabled = reason.is_some(), "maintenance mode");
        self.register_locked(&mut w, updated).map(Some)
    }
}
