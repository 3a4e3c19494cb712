//! Consul's JSON responses, built from registry snapshots.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::model::{Check, CheckKind, Instance, Node, format_go_duration};
use crate::registry::ServiceEntry;

/// This server as a Consul node: what the agent endpoints report about it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
}

fn meta_map(meta: &crate::model::Meta) -> Value {
    Value::Object(meta.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

/// A node in Consul's `Node` shape (`/v1/catalog/nodes`, health entries).
pub fn catalog_node(node: &Node, datacenter: &str) -> Value {
    let address = node.address.to_wire();
    json!({
        "ID": node.id,
        "Node": node.name.as_str(),
        "Address": address,
        "Datacenter": datacenter,
        "TaggedAddresses": {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address},
        "Meta": meta_map(&node.meta),
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    })
}

fn tagged_addresses(instance: &Instance) -> Value {
    let map: Map<String, Value> = instance
        .tagged_addresses
        .iter()
        .map(|(name, (address, port))| (name.clone(), json!({"Address": address, "Port": port})))
        .collect();
    Value::Object(map)
}

fn meta_json(instance: &Instance) -> Value {
    meta_map(&instance.meta)
}

fn weights(instance: &Instance) -> Value {
    json!({"Passing": instance.weights.passing, "Warning": instance.weights.warning})
}

/// `/v1/agent/services` and `/v1/agent/service/<id>`.
pub fn agent_service(instance: &Instance, node: &NodeInfo) -> Value {
    json!({
        "ID": instance.id.as_str(),
        "Service": instance.service.as_str(),
        "Tags": instance.tags,
        "Meta": meta_json(instance),
        "Port": instance.port,
        "Address": instance.address.to_wire(),
        "TaggedAddresses": tagged_addresses(instance),
        "Weights": weights(instance),
        "EnableTagOverride": instance.enable_tag_override,
        "Datacenter": node.datacenter,
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

/// One entry of `/v1/catalog/service/<name>`: the instance with its node.
pub fn catalog_service(instance: &Instance, datacenter: &str) -> Value {
    let node = &instance.node;
    let address = node.address.to_wire();
    json!({
        "ID": node.id,
        "Node": node.name.as_str(),
        "Address": address,
        "Datacenter": datacenter,
        "TaggedAddresses": {"lan": address, "wan": address},
        "NodeMeta": meta_map(&node.meta),
        "ServiceKind": "",
        "ServiceID": instance.id.as_str(),
        "ServiceName": instance.service.as_str(),
        "ServiceTags": instance.tags,
        "ServiceAddress": instance.address.to_wire(),
        "ServiceTaggedAddresses": tagged_addresses(instance),
        "ServiceWeights": weights(instance),
        "ServiceMeta": meta_json(instance),
        "ServicePort": instance.port,
        "ServiceEnableTagOverride": instance.enable_tag_override,
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

/// One entry of `/v1/health/service/<name>`: `{Node, Service, Checks}` (the node's checks
/// first), and `Flapping: true` (sextant's addition) for an instance held out of DNS for flapping.
pub fn health_entry(instance: &Instance, info: &NodeInfo, flapping: bool) -> Value {
    let mut service = agent_service(instance, info);
    if let Value::Object(map) = &mut service {
        map.remove("Datacenter");
    }
    let mut checks = node_checks(&instance.node);
    checks.extend(instance.checks.iter().map(|c| check_json(c, instance)));
    let node = catalog_node(&instance.node, &info.datacenter);
    let mut entry = json!({"Node": node, "Service": service, "Checks": checks});
    if flapping {
        entry["Flapping"] = json!(true);
    }
    entry
}

/// A node's own checks: for this server, Consul's `serfHealth` (always passing: it answers)
/// and its maintenance check when it has one; for an external node, those its registrar gave.
pub fn node_checks(node: &Node) -> Vec<Value> {
    let mut checks = Vec::new();
    if node.local {
        checks.push(json!({
            "Node": node.name.as_str(),
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Definition": {},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }));
    }
    checks.extend(node.checks.iter().map(|c| check_fields(c, node, None)));
    checks
}

/// A service check in Consul's `HealthCheck` shape. `LastUpdate` is sextant's addition: when the
/// status last changed (the design documents' client reads it).
pub fn check_json(check: &Check, instance: &Instance) -> Value {
    check_fields(check, &instance.node, Some(instance))
}

/// A check of `instance`, or of the node itself (`None`: `ServiceID` empty).
fn check_fields(check: &Check, node: &Node, instance: Option<&Instance>) -> Value {
    let spec = &check.spec;
    let (interval, timeout) = spec.kind.schedule().map_or((String::new(), String::new()), |(i, t)| {
        (format_go_duration(i), format_go_duration(t))
    });
    let mut definition = Map::new();
    match &spec.kind {
        CheckKind::Http(http) => {
            definition.insert("HTTP".into(), json!(http.url));
            definition.insert("Method".into(), json!(http.method));
            definition.insert("TLSSkipVerify".into(), json!(http.tls_skip_verify));
        }
        CheckKind::Tcp { target, .. } => {
            definition.insert("TCP".into(), json!(target));
        }
        CheckKind::Ttl { ttl } => {
            definition.insert("TTL".into(), json!(format_go_duration(*ttl)));
        }
        CheckKind::Maintenance | CheckKind::External => {}
        CheckKind::Grpc {
            target, service, tls, ..
        } => {
            let address = if service.is_empty() {
                target.clone()
            } else {
                format!("{target}/{service}")
            };
            definition.insert("GRPC".into(), json!(address));
            definition.insert("GRPCUseTLS".into(), json!(tls));
        }
    }
    if !interval.is_empty() {
        definition.insert("Interval".into(), json!(interval));
        definition.insert("Timeout".into(), json!(timeout));
    }
    if let Some(after) = spec.deregister_critical_after {
        definition.insert(
            "DeregisterCriticalServiceAfter".into(),
            json!(format_go_duration(after)),
        );
    }
    // Checked, not `OffsetDateTime::from`: that panics on a time outside its range.
    let last_update = check
        .last_update
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|since| {
            let micros = i128::try_from(since.as_micros()).ok()?;
            OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok()
        })
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    let no_tags: &[Box<str>] = &[];
    let (service_id, service_name, tags) =
        instance.map_or(("", "", no_tags), |i| (i.id.as_str(), i.service.as_str(), &i.tags[..]));
    let (create_index, modify_index) = instance.map_or((node.create_index, node.modify_index), |i| {
        (i.create_index, i.modify_index)
    });
    json!({
        "Node": node.name.as_str(),
        "CheckID": spec.id.as_str(),
        "Name": spec.name,
        "Status": check.status.as_str(),
        "Notes": spec.notes,
        "Output": check.output,
        "ServiceID": service_id,
        "ServiceName": service_name,
        "ServiceTags": tags,
        "Type": spec.kind.type_name(),
        "Interval": interval,
        "Timeout": timeout,
        "ExposedPort": 0,
        "Definition": Value::Object(definition),
        "LastUpdate": last_update,
        "CreateIndex": create_index,
        "ModifyIndex": modify_index,
    })
}

/// One service as Consul's UI lists it (`/v1/internal/ui/services`), with the counts sextant's
/// dashboard shows: its instances by health (`InstancesPassing`…, sextant's addition) and its
/// checks by status (Consul's).
pub fn ui_service_summary(service: &ServiceEntry, datacenter: &str) -> Value {
    let mut instances = [0u64; 3];
    let mut checks = [0u64; 3];
    let flapping = service.flapping.len();
    for instance in &service.instances {
        instances[instance.health() as usize] += 1;
        for check in &instance.checks {
            checks[check.status as usize] += 1;
        }
    }
    let mut nodes: Vec<&str> = service.instances.iter().map(|i| i.node.name.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    json!({
        "Name": service.name.as_str(),
        "Datacenter": datacenter,
        "Tags": service.tags(),
        "Nodes": nodes,
        "Kind": "",
        "ExternalSources": [],
        "InstanceCount": service.instances.len(),
        "InstancesPassing": instances[0],
        "InstancesWarning": instances[1],
        "InstancesCritical": instances[2],
        "InstancesFlapping": flapping,
        "ChecksPassing": checks[0],
        "ChecksWarning": checks[1],
        "ChecksCritical": checks[2],
        "ModifyIndex": service.modify_index,
    })
}
