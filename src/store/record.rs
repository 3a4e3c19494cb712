//! How an instance is written down: a plain serde form of [`Instance`], read back through the same
//! validation the HTTP edge applies, so a stored record can never produce an instance that a
//! registration could not.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use std::sync::Arc;

use crate::model::{
    Address, Check, CheckId, CheckKind, CheckSpec, Health, Instance, InstanceId, Node, NodeName, ServiceName, Weights,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredInstance {
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Vec<(String, String)>,
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    pub weights: (u16, u16),
    pub enable_tag_override: bool,
    pub checks: Vec<StoredCheck>,
    /// The external node it is on; none: this server's own node (and records written before
    /// there were external nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// How a node is written down: an external node registered through the catalog, or this
/// server's own node when it has checks of its own (maintenance), under the empty name (its
/// name is the configuration's, which may change between runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredNode {
    pub name: String,
    pub id: String,
    pub address: String,
    pub meta: Vec<(String, String)>,
    pub checks: Vec<StoredCheck>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl StoredNode {
    pub fn from_node(node: &Node) -> Self {
        let (now, wall) = (Instant::now(), SystemTime::now());
        Self {
            name: if node.local {
                String::new()
            } else {
                node.name.to_string()
            },
            id: node.id.to_string(),
            address: node.address.to_wire(),
            meta: node.meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            checks: node
                .checks
                .iter()
                .map(|check| StoredCheck::from_check(check, now, wall))
                .collect(),
            create_index: node.create_index,
            modify_index: node.modify_index,
        }
    }

    /// The node again, validated as a catalog registration is; the record of this server's own
    /// node (empty name) takes its name and address from `local`.
    pub fn into_node(self, local: &Node) -> Result<Node, String> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let checks = self
            .checks
            .into_iter()
            .map(|c| c.into_check(now, wall))
            .collect::<Result<Vec<_>, _>>()?;
        let node = if self.name.is_empty() {
            Node {
                checks: checks.into(),
                create_index: self.create_index,
                modify_index: self.modify_index,
                ..local.clone()
            }
        } else {
            Node {
                name: NodeName::parse(&self.name).map_err(|e| format!("node name: {e}"))?,
                id: self.id.into(),
                address: Address::parse(&self.address).map_err(|e| format!("address: {e}"))?,
                meta: self.meta.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                checks: checks.into(),
                local: false,
                create_index: self.create_index,
                modify_index: self.modify_index,
            }
        };
        node.validate()?;
        Ok(node)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCheck {
    pub id: String,
    pub name: String,
    pub notes: String,
    pub kind: CheckKind,
    pub initial_status: Health,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub deregister_critical_after: Option<Duration>,
    /// The last known state, restored as it was.
    pub status: Health,
    pub output: String,
    pub last_update: SystemTime,
    /// Wall-clock time the check turned critical, so DeregisterCriticalServiceAfter keeps
    /// counting across a restart.
    pub critical_since: Option<SystemTime>,
}

impl StoredInstance {
    pub fn from_instance(instance: &Instance) -> Self {
        let (now, wall) = (Instant::now(), SystemTime::now());
        Self {
            id: instance.id.to_string(),
            service: instance.service.to_string(),
            tags: instance.tags.iter().map(|t| t.to_string()).collect(),
            address: instance.address.to_wire(),
            port: instance.port,
            meta: instance
                .meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tagged_addresses: instance.tagged_addresses.clone(),
            weights: (instance.weights.passing, instance.weights.warning),
            enable_tag_override: instance.enable_tag_override,
            checks: instance
                .checks
                .iter()
                .map(|check| StoredCheck::from_check(check, now, wall))
                .collect(),
            node: (!instance.node.local).then(|| instance.node.name.to_string()),
            create_index: instance.create_index,
            modify_index: instance.modify_index,
        }
    }

    /// The instance again, on `node` (the one [`Self::node`] names), validated as a
    /// registration is; statuses as they were, TTLs restarted from now (nobody could heartbeat
    /// while the server was down).
    pub fn into_instance(self, node: Arc<Node>) -> Result<Instance, String> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let checks = self
            .checks
            .into_iter()
            .map(|c| c.into_check(now, wall))
            .collect::<Result<Vec<_>, _>>()?;
        let instance = Instance {
            id: InstanceId::parse(&self.id).map_err(|e| format!("ID: {e}"))?,
            service: ServiceName::parse(&self.service).map_err(|e| format!("service name: {e}"))?,
            tags: self.tags.into_iter().map(Into::into).collect(),
            address: Address::parse(&self.address).map_err(|e| format!("address: {e}"))?,
            port: self.port,
            meta: self.meta.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            tagged_addresses: self.tagged_addresses,
            weights: Weights {
                passing: self.weights.0,
                warning: self.weights.1,
            },
            enable_tag_override: self.enable_tag_override,
            checks: checks.into(),
            node,
            create_index: self.create_index,
            modify_index: self.modify_index,
        };
        instance.validate()?;
        Ok(instance)
    }
}

impl StoredCheck {
    fn from_check(check: &Check, now: Instant, wall: SystemTime) -> Self {
        let spec = &check.spec;
        Self {
            id: spec.id.to_string(),
            name: spec.name.clone(),
            notes: spec.notes.clone(),
            kind: spec.kind.clone(),
            initial_status: spec.initial_status,
            success_before_passing: spec.success_before_passing,
            failures_before_critical: spec.failures_before_critical,
            deregister_critical_after: spec.deregister_critical_after,
            status: check.status,
            output: check.output.clone(),
            last_update: check.last_update,
            critical_since: check
                .critical_since
                .map(|since| wall - now.saturating_duration_since(since)),
        }
    }

    fn into_check(self, now: Instant, wall: SystemTime) -> Result<Check, String> {
        let spec = CheckSpec {
            id: CheckId::parse(&self.id).map_err(|e| format!("check ID: {e}"))?,
            name: self.name,
            notes: self.notes,
            kind: self.kind,
            initial_status: self.initial_status,
            success_before_passing: self.success_before_passing,
            failures_before_critical: self.failures_before_critical,
            deregister_critical_after: self.deregister_critical_after,
        };
        let mut check = Check::new(spec);
        check.status = self.status;
        check.output = crate::model::bounded_output(&self.output).into_owned();
        check.last_update = self.last_update;
        check.critical_since = match self.status {
            Health::Critical => {
                // Time spent critical before the restart still counts toward the reap.
                let critical_for = self
                    .critical_since
                    .and_then(|since| wall.duration_since(since).ok())
                    .unwrap_or_default();
                Some(now.checked_sub(critical_for).unwrap_or(now))
            }
            _ => None,
        };
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{parse_json, parse_registration};

    fn local_node() -> Arc<Node> {
        Arc::new(Node::local(
            NodeName::parse("node1").unwrap(),
            "127.0.0.1".parse().unwrap(),
        ))
    }

    #[test]
    fn every_field_survives_the_round_trip() {
        let body = serde_json::json!({
            "ID": "web-1", "Name": "Web", "Tags": ["primary", "v=2"], "Address": "db.example.com", "Port": 8443,
            "Meta": {"build": "42"}, "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
            "Weights": {"Passing": 7, "Warning": 2}, "EnableTagOverride": true,
            "Checks": [
                {"CheckID": "web-http", "Name": "http", "Notes": "n", "HTTP": "https://10.0.0.1/health",
                 "Method": "POST", "Header": {"X-A": ["1", "2"]}, "Body": "{}", "TLSSkipVerify": true,
                 "Interval": "5s", "Timeout": "2s", "SuccessBeforePassing": 2, "FailuresBeforeCritical": 3,
                 "DeregisterCriticalServiceAfter": "1m", "Status": "critical"},
                {"CheckID": "web-tcp", "TCP": "10.0.0.1:80", "Interval": "10s"},
                {"CheckID": "web-ttl", "TTL": "30s", "Status": "warning"}
            ]
        });
        let node = local_node();
        let mut instance = parse_registration(&parse_json(body.to_string().as_bytes()).unwrap(), &node).unwrap();
        instance.create_index = 3;
        instance.modify_index = 9;
        instance.checks[2].output = "slow".into();
        let json = serde_json::to_vec(&StoredInstance::from_instance(&instance)).unwrap();
        // The stored form of a check kind (files written now must read later).
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.contains(r#""kind":{"Http":{"url":"https://10.0.0.1/health","method":"POST""#),
            "{text}"
        );
        assert!(text.contains(r#""kind":{"Tcp":{"target":"10.0.0.1:80""#), "{text}");
        assert!(
            text.contains(r#""kind":{"Ttl":{"ttl":{"secs":30,"nanos":0}}}"#),
            "{text}"
        );
        let restored = serde_json::from_slice::<StoredInstance>(&json)
            .unwrap()
            .into_instance(node)
            .unwrap();
        let specs = |i: &Instance| i.checks.iter().map(|c| c.spec.clone()).collect::<Vec<_>>();
        let states = |i: &Instance| {
            i.checks
                .iter()
                .map(|c| (c.status, c.output.clone(), c.critical_since.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(specs(&restored), specs(&instance));
        assert_eq!(states(&restored), states(&instance));
        let without_checks = |i: &Instance| Instance {
            checks: Box::new([]),
            ..i.clone()
        };
        assert_eq!(without_checks(&restored), without_checks(&instance));
    }

    #[test]
    fn a_record_that_a_registration_could_not_make_is_refused() {
        let body = serde_json::json!({"ID": "web-1", "Name": "web", "Port": 80, "Check": {"TTL": "10s"}});
        let node = local_node();
        let instance = parse_registration(&parse_json(body.to_string().as_bytes()).unwrap(), &node).unwrap();
        let stored = StoredInstance::from_instance(&instance);
        let refused = |change: &dyn Fn(&mut StoredInstance)| {
            let mut record = stored.clone();
            change(&mut record);
            record.into_instance(node.clone()).unwrap_err()
        };
        assert!(refused(&|r| r.service = "not a label".into()).contains("service name"));
        assert!(refused(&|r| r.tags = vec!["has space".into()]).contains("Tags[0]"));
        assert!(refused(&|r| r.meta = vec![("consul-x".into(), "v".into())]).contains("Meta"));
        assert!(refused(&|r| r.weights = (0, 1)).contains("Weights.Passing"));
        assert!(
            refused(&|r| r.checks[0].kind = CheckKind::Ttl {
                ttl: Duration::from_nanos(30)
            })
            .contains("TTL")
        );
        assert!(refused(&|r| r.checks[0].id = "serfHealth".into()).contains("reserved"));
        assert!(
            refused(&|r| r.checks[0].deregister_critical_after = Some(Duration::from_nanos(1)))
                .contains("DeregisterCriticalServiceAfter")
        );
        // A LastUpdate no response could show (it panicked the API once).
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert!(refused(&|r| r.checks[0].last_update = far).contains("LastUpdate"));
        assert!(stored.clone().into_instance(node).is_ok());
    }
}
