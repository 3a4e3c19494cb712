//! Consul's JSON requests, decoded into validated model types.
//!
//! Requests are decoded as Consul decodes them: field names match without regard to case, and the
//! snake_case spellings (`deregister_critical_service_after`) are the same fields. Every value is
//! checked here, so the registry only ever sees a valid [`Instance`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::fields::Fields;
use crate::api::error::ApiError;
use crate::model::rules::{
    MAX_CHECKS, MAX_META_KEYS, MAX_TAGS, MIN_CHECK_INTERVAL, check_check_id, check_deregister_after, check_header,
    check_http_url, check_meta, check_method, check_min_duration, check_tag, check_tcp_target,
};
use crate::model::{
    Address, Check, CheckId, CheckKind, CheckSpec, Health, HttpCheck, Instance, InstanceId, Meta, Node, NodeName,
    ServiceName, Weights, check_text,
};
use crate::registry::{CatalogRegistration, CatalogRemoval};

/// Consul's default check timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The fields of a registration sextant reads.
const REGISTRATION_FIELDS: &[&str] = &[
    "Name",
    "ID",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "TaggedAddresses",
    "Weights",
    "EnableTagOverride",
    "Check",
    "Checks",
    "Kind",
];
/// Fields Consul defines for a registration that sextant has no use for (Connect, namespaces,
/// Unix sockets): accepted and ignored, as the clients that send them expect.
const REGISTRATION_IGNORED: &[&str] = &[
    "SocketPath",
    "Proxy",
    "Connect",
    "Namespace",
    "Partition",
    "Locality",
    "Token",
    "PeerName",
];
/// The fields of a check sextant reads, and the check kinds it refuses by name.
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "HTTP",
    "TCP",
    "TTL",
    "GRPC",
    "GRPCUseTLS",
    "Interval",
    "Timeout",
    "Method",
    "Header",
    "Body",
    "TLSSkipVerify",
    "Status",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "DeregisterCriticalServiceAfter",
];
const UNSUPPORTED_CHECK_KINDS: &[&str] = &[
    "Args",
    "ScriptArgs",
    "Script",
    "H2PING",
    "DockerContainerID",
    "AliasService",
    "AliasNode",
    "UDP",
    "OSService",
];
/// Check fields Consul defines that sextant does not act on.
const CHECK_IGNORED: &[&str] = &[
    "Shell",
    "TCPUseTLS",
    "TLSServerName",
    "H2PingUseTLS",
    "FailuresBeforeWarning",
    "OutputMaxSize",
    "DisableRedirects",
    "ServiceID",
    "Token",
    "Type",
];
/// `PUT /v1/agent/service/register`: the body as an instance on `node` (this server's), or a
/// 400 naming the bad field.
pub fn parse_registration(body: &Value, node: &Arc<Node>) -> Result<Instance, ApiError> {
    let f = Fields::new(body, "")?;
    f.refuse_unknown(&[REGISTRATION_FIELDS, REGISTRATION_IGNORED])?;
    let mut instance = parse_service(&f, "Name", node)?;
    instance.checks = parse_checks(&f, &instance.id, &instance.service)?;
    Ok(instance)
}

/// A service's own fields (its name under `name_field`), without its checks.
fn parse_service(f: &Fields, name_field: &str, node: &Arc<Node>) -> Result<Instance, ApiError> {
    let name = f
        .string(name_field)?
        .ok_or_else(|| ApiError::field(&f.name(name_field), "missing service name"))?;
    let service = ServiceName::parse(name).map_err(|e| ApiError::field(&f.name(name_field), e))?;
    let id = match f.string("ID")? {
        Some(id) if !id.is_empty() => InstanceId::parse(id).map_err(|e| ApiError::field(&f.name("ID"), e))?,
        _ => InstanceId::parse(name).map_err(|e| ApiError::field(&f.name(name_field), e))?,
    };
    if let Some(kind) = f.string("Kind")?
        && !kind.is_empty()
    {
        return Err(ApiError::field(
            &f.name("Kind"),
            format!("{kind:?} services are not supported; leave Kind empty"),
        ));
    }
    let address =
        Address::parse(f.string("Address")?.unwrap_or("")).map_err(|e| ApiError::field(&f.name("Address"), e))?;
    let port = f.uint("Port", u16::MAX as u64)?.unwrap_or(0) as u16;
    let weights = match parse_weights(f) {
        // Go's `AgentService` always sends its `Weights`, zero when unset: the catalog takes
        // that as the default, as Consul's does.
        Err(_) if name_field == "Service" && f.get("Weights").is_some_and(|w| !is_set_weights(w)) => Weights::default(),
        weights => weights?,
    };
    Ok(Instance {
        tags: parse_tags(f)?,
        meta: parse_meta(f, "Meta")?,
        tagged_addresses: parse_tagged_addresses(f)?,
        enable_tag_override: f.bool("EnableTagOverride")?,
        id,
        service,
        address,
        port,
        weights,
        checks: Box::default(),
        node: node.clone(),
        create_index: 0,
        modify_index: 0,
    })
}

/// Tags are free text, as in Consul (`secure=false`, `traefik.enable=true`); those that are DNS
/// labels can also be asked for in DNS.
fn parse_tags(f: &Fields) -> Result<Box<[Box<str>]>, ApiError> {
    let Some(value) = f.get("Tags") else {
        return Ok(Box::default());
    };
    let Value::Array(items) = value else {
        return Err(ApiError::field(&f.name("Tags"), "must be an array of strings"));
    };
    if items.len() > MAX_TAGS {
        return Err(ApiError::field(&f.name("Tags"), format!("at most {MAX_TAGS} tags")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, tag)| match tag {
            Value::String(s) => check_tag(s)
                .map(|()| s.as_str().into())
                .map_err(|e| ApiError::field(&f.name(&format!("Tags[{i}]")), e)),
            _ => Err(ApiError::field(&f.name(&format!("Tags[{i}]")), "must be a string")),
        })
        .collect()
}

/// Consul's rules for metadata keys and values (`Meta` of a service, `NodeMeta` of a node).
fn parse_meta(f: &Fields, field: &str) -> Result<Meta, ApiError> {
    let meta = f.string_map(field)?;
    if meta.len() > MAX_META_KEYS {
        return Err(ApiError::field(&f.name(field), format!("at most {MAX_META_KEYS} keys")));
    }
    for (key, value) in &meta {
        check_meta(key, value).map_err(|e| ApiError::field(&f.name(&format!("{field}[{key:?}]")), e))?;
    }
    Ok(meta
        .into_iter()
        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
        .collect())
}

fn parse_tagged_addresses(f: &Fields) -> Result<BTreeMap<String, (String, u16)>, ApiError> {
    let Some(value) = f.get("TaggedAddresses") else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(map) = value else {
        return Err(ApiError::field(&f.name("TaggedAddresses"), "must be an object"));
    };
    map.iter()
        .map(|(name, entry)| {
            let path = f.name(&format!("TaggedAddresses[{name:?}]"));
            let e = Fields::new(entry, &path)?;
            e.refuse_unknown(&[&["Address", "Port"]])?;
            let address = e.string("Address")?.unwrap_or("").to_owned();
            Address::parse(&address).map_err(|err| ApiError::field(&e.name("Address"), err))?;
            let port = e.uint("Port", u16::MAX as u64)?.unwrap_or(0) as u16;
            Ok((name.clone(), (address, port)))
        })
        .collect()
}

fn parse_weights(f: &Fields) -> Result<Weights, ApiError> {
    let Some(value) = f.get("Weights") else {
        return Ok(Weights::default());
    };
    let w = Fields::new(value, &f.name("Weights"))?;
    w.refuse_unknown(&[&["Passing", "Warning"]])?;
    let passing = w.uint("Passing", u16::MAX as u64)?.unwrap_or(1) as u16;
    if passing == 0 {
        return Err(ApiError::field(&w.name("Passing"), "must be greater than 0"));
    }
    let warning = w.uint("Warning", u16::MAX as u64)?.unwrap_or(1) as u16;
    Ok(Weights { passing, warning })
}

fn parse_checks(f: &Fields, id: &InstanceId, service: &ServiceName) -> Result<Box<[Check]>, ApiError> {
    let mut bodies: Vec<(String, &Value)> = Vec::new();
    if let Some(check) = f.get("Check") {
        bodies.push(("Check".into(), check));
    }
    match f.get("Checks") {
        None => {}
        Some(Value::Array(list)) => bodies.extend(list.iter().enumerate().map(|(i, v)| (format!("Checks[{i}]"), v))),
        Some(_) => return Err(ApiError::field("Checks", "must be an array of checks")),
    }
    if bodies.len() > MAX_CHECKS {
        return Err(ApiError::field(
            "Checks",
            format!("at most {MAX_CHECKS} checks per instance"),
        ));
    }
    let mut parsed = Vec::new();
    for (path, body) in &bodies {
        let fields = Fields::new(body, path)?;
        fields.refuse_unknown(&[CHECK_FIELDS, UNSUPPORTED_CHECK_KINDS, CHECK_IGNORED])?;
        if let Some(spec) = parse_check(&fields, service)? {
            parsed.push((fields, spec));
        }
    }
    // Consul's check IDs: the given CheckID, else service:<id>, numbered when there are several.
    let several = parsed.len() > 1;
    let mut checks: Vec<Check> = Vec::new();
    for (n, (fields, mut spec)) in parsed.into_iter().enumerate() {
        let given = fields
            .string("CheckID")?
            .or(fields.string("ID")?)
            .filter(|s| !s.is_empty());
        let check_id = match given {
            Some(given) => given.to_owned(),
            None if several => format!("service:{id}:{}", n + 1),
            None => format!("service:{id}"),
        };
        spec.id = CheckId::parse(&check_id).map_err(|e| ApiError::field(&fields.name("CheckID"), e))?;
        check_check_id(&check_id).map_err(|e| ApiError::field(&fields.name("CheckID"), e))?;
        if checks.iter().any(|c| c.spec.id == spec.id) {
            return Err(ApiError::field(
                &fields.name("CheckID"),
                format!("{check_id:?} is used twice"),
            ));
        }
        checks.push(Check::new(spec));
    }
    Ok(checks.into_boxed_slice())
}

/// `PUT /v1/agent/check/register`: the instance the check belongs to (`ServiceID`; none: this
/// server's node) and the check, or a 400 naming the field. `service_of` names a registered
/// instance's service.
pub fn parse_agent_check(
    body: &Value,
    service_of: impl Fn(&InstanceId) -> Option<ServiceName>,
) -> Result<(Option<InstanceId>, CheckSpec), ApiError> {
    let f = Fields::new(body, "check")?;
    f.refuse_unknown(&[CHECK_FIELDS, UNSUPPORTED_CHECK_KINDS, CHECK_IGNORED])?;
    let name = f
        .string("Name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Missing check name".into()))?;
    let (instance, service) = match f.string("ServiceID")?.filter(|s| !s.is_empty()) {
        Some(service_id) => {
            let unknown = || ApiError::BadRequest(format!("ServiceID {service_id:?} does not exist"));
            let instance = InstanceId::parse(service_id).map_err(|_| unknown())?;
            let service = service_of(&instance).ok_or_else(unknown)?;
            (Some(instance), service)
        }
        // A check of the node itself (its name is required, so the default never shows).
        None => (None, ServiceName::parse("node").expect("a constant name is valid")),
    };
    let mut spec = parse_check(&f, &service)?
        .ok_or_else(|| ApiError::BadRequest("check: must have one of HTTP, TCP, TTL or GRPC".into()))?;
    let id = f
        .string("CheckID")?
        .or(f.string("ID")?)
        .filter(|s| !s.is_empty())
        .unwrap_or(name);
    check_check_id(id).map_err(|e| ApiError::field(&f.name("CheckID"), e))?;
    spec.id = CheckId::parse(id).map_err(|e| ApiError::field(&f.name("CheckID"), e))?;
    Ok((instance, spec))
}

/// One check definition; `None` for an empty object (Consul ignores those). The ID is set by the
/// caller. Empty values are unset ones, as in Consul (Go clients send every field).
fn parse_check(f: &Fields, service: &ServiceName) -> Result<Option<CheckSpec>, ApiError> {
    for unsupported in UNSUPPORTED_CHECK_KINDS {
        if f.get(unsupported).is_some_and(is_set) {
            return Err(ApiError::field(
                &f.name(unsupported),
                "this check kind is not supported; use HTTP, TCP, TTL or GRPC",
            ));
        }
    }
    let set = |field| -> Result<Option<&str>, ApiError> { Ok(f.string(field)?.filter(|s| !s.is_empty())) };
    let kind = match (set("HTTP")?, set("TCP")?, f.duration("TTL")?, set("GRPC")?) {
        (Some(url), None, None, None) => parse_http_check(f, url)?,
        (None, None, None, Some(address)) => parse_grpc_check(f, address)?,
        (None, Some(target), None, None) => {
            let (interval, timeout) = interval_and_timeout(f)?;
            check_tcp_target(target).map_err(|e| ApiError::field(&f.name("TCP"), e))?;
            CheckKind::Tcp {
                target: target.to_owned(),
                interval,
                timeout,
            }
        }
        (None, None, Some(ttl), None) => CheckKind::Ttl {
            ttl: at_least_min(f, "TTL", ttl)?,
        },
        (None, None, None, None) if !f.map.values().any(is_set) => return Ok(None),
        (None, None, None, None) => {
            return Err(ApiError::BadRequest(format!(
                "{}: must have one of HTTP, TCP, TTL or GRPC",
                f.path
            )));
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
                "{}: give only one of HTTP, TCP, TTL or GRPC",
                f.path
            )));
        }
    };
    let initial_status = match f.string("Status")? {
        None | Some("") => Health::Critical, // Consul: a check is critical until it first passes
        Some(s) => Health::parse(s)
            .ok_or_else(|| ApiError::field(&f.name("Status"), format!("{s:?} is not passing, warning or critical")))?,
    };
    // Consul: zero means never; a real duration is honoured to the second, so less is refused.
    let deregister_critical_after = match f.duration("DeregisterCriticalServiceAfter")? {
        Some(after) if after.is_zero() => None,
        Some(after) => {
            check_deregister_after(after).map_err(|e| ApiError::field(&f.name("DeregisterCriticalServiceAfter"), e))?;
            Some(after)
        }
        None => None,
    };
    let name = f.string("Name")?.filter(|n| !n.is_empty());
    if let Some(name) = name {
        check_text(name).map_err(|e| ApiError::field(&f.name("Name"), e))?;
    }
    Ok(Some(CheckSpec {
        id: CheckId::parse("pending").expect("a constant ID is valid"),
        name: name.map_or_else(|| format!("Service '{service}' check"), str::to_owned),
        notes: f.string("Notes")?.unwrap_or("").to_owned(),
        kind,
        initial_status,
        success_before_passing: f.uint("SuccessBeforePassing", u32::MAX as u64)?.unwrap_or(0) as u32,
        failures_before_critical: f.uint("FailuresBeforeCritical", u32::MAX as u64)?.unwrap_or(0) as u32,
        deregister_critical_after,
    }))
}

/// Whether `Weights` holds anything but zeros.
fn is_set_weights(weights: &Value) -> bool {
    match weights {
        Value::Object(map) => map.values().any(is_set),
        other => is_set(other),
    }
}

/// Whether a field holds a value: Go clients send unset fields as `""`, `null`, `false` or `0`.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Bool(true) => true,
    }
}

/// `GRPC: "host:port/service"` (the service is optional), `GRPCUseTLS`. TLS is verified against
/// the system's CAs: `TLSSkipVerify` with it is refused rather than silently ignored.
fn parse_grpc_check(f: &Fields, address: &str) -> Result<CheckKind, ApiError> {
    let (interval, timeout) = interval_and_timeout(f)?;
    let (target, service) = address.split_once('/').unwrap_or((address, ""));
    check_tcp_target(target).map_err(|e| ApiError::field(&f.name("GRPC"), e))?;
    let tls = f.bool("GRPCUseTLS")?;
    if tls && f.bool("TLSSkipVerify")? {
        return Err(ApiError::field(
            &f.name("TLSSkipVerify"),
            "not supported with GRPCUseTLS: sextant verifies a gRPC server's certificate against the system's CAs",
        ));
    }
    Ok(CheckKind::Grpc {
        target: target.to_owned(),
        service: service.to_owned(),
        tls,
        interval,
        timeout,
    })
}

fn parse_http_check(f: &Fields, url: &str) -> Result<CheckKind, ApiError> {
    check_http_url(url).map_err(|e| ApiError::field(&f.name("HTTP"), e))?;
    let method = f
        .string("Method")?
        .filter(|m| !m.is_empty())
        .unwrap_or("GET")
        .to_ascii_uppercase();
    check_method(&method).map_err(|e| ApiError::field(&f.name("Method"), e))?;
    let header = match f.get("Header") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let values = match v {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>(),
                    Value::String(s) => Some(vec![s.clone()]),
                    _ => None,
                };
                let values = values.ok_or_else(|| {
                    ApiError::field(&f.name("Header"), format!("{k:?} must map to a list of strings"))
                })?;
                check_header(k, &values).map_err(|e| ApiError::field(&f.name("Header"), e))?;
                Ok((k.clone(), values))
            })
            .collect::<Result<_, ApiError>>()?,
        Some(_) => {
            return Err(ApiError::field(
                &f.name("Header"),
                "must be an object of header → [values]",
            ));
        }
    };
    let (interval, timeout) = interval_and_timeout(f)?;
    Ok(CheckKind::Http(Box::new(HttpCheck {
        url: url.to_owned(),
        method,
        header,
        body: f.string("Body")?.unwrap_or("").to_owned(),
        tls_skip_verify: f.bool("TLSSkipVerify")?,
        interval,
        timeout,
    })))
}

/// Interval is required for probes; below Consul's minimum it is raised to it. The timeout
/// defaults to 10 s and never exceeds the interval.
fn interval_and_timeout(f: &Fields) -> Result<(Duration, Duration), ApiError> {
    let interval = f
        .duration("Interval")?
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ApiError::field(&f.name("Interval"), "required for HTTP and TCP checks (e.g. \"10s\")"))?;
    let interval = at_least_min(f, "Interval", interval)?.max(MIN_CHECK_INTERVAL);
    let timeout = match f.duration("Timeout")?.filter(|d| !d.is_zero()) {
        Some(timeout) => at_least_min(f, "Timeout", timeout)?,
        None => DEFAULT_CHECK_TIMEOUT,
    };
    Ok((interval, timeout.min(interval)))
}

/// Refuses a duration below the shortest: most likely a number meant as seconds.
fn at_least_min(f: &Fields, field: &str, duration: Duration) -> Result<Duration, ApiError> {
    check_min_duration(duration).map_err(|e| ApiError::field(&f.name(field), e))?;
    Ok(duration)
}

/// `PUT /v1/agent/check/update/<id>`: `{"Status": …, "Output": …}`.
pub fn parse_check_update(body: &Value) -> Result<(Health, String), ApiError> {
    let f = Fields::new(body, "")?;
    f.refuse_unknown(&[&["Status", "Output"]])?;
    let status = f
        .string("Status")?
        .ok_or_else(|| ApiError::field("Status", "missing"))?;
    let status = Health::parse(status)
        .ok_or_else(|| ApiError::field("Status", format!("{status:?} is not passing, warning or critical")))?;
    Ok((status, f.string("Output")?.unwrap_or("").to_owned()))
}

/// The fields of `PUT /v1/catalog/register` sextant reads, and those it accepts and ignores.
const CATALOG_FIELDS: &[&str] = &[
    "Node",
    "ID",
    "Address",
    "NodeMeta",
    "Service",
    "Check",
    "Checks",
    "Datacenter",
    "TaggedAddresses",
    "SkipNodeUpdate",
];
const CATALOG_IGNORED: &[&str] = &[
    "Token",
    "WriteRequest",
    "Namespace",
    "Partition",
    "Locality",
    "PeerName",
    "EnterpriseMeta",
];
/// A catalog registration's `Service` (Consul's `AgentService`: the name is `Service`).
const CATALOG_SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Service",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "TaggedAddresses",
    "Weights",
    "EnableTagOverride",
    "Kind",
];
const CATALOG_SERVICE_IGNORED: &[&str] = &["CreateIndex", "ModifyIndex", "ContentHash", "Datacenter"];
/// A catalog check (Consul's `HealthCheck`).
const CATALOG_CHECK_FIELDS: &[&str] = &[
    "Node",
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "Output",
    "ServiceID",
    "Definition",
];
const CATALOG_CHECK_IGNORED: &[&str] = &[
    "ServiceName",
    "ServiceTags",
    "Type",
    "Interval",
    "Timeout",
    "ExposedPort",
    "Namespace",
    "Partition",
    "PeerName",
    "CreateIndex",
    "ModifyIndex",
];
/// A catalog check's `Definition` (Consul's `HealthCheckDefinition`): what sextant runs.
const DEFINITION_FIELDS: &[&str] = &[
    "HTTP",
    "TCP",
    "GRPC",
    "GRPCUseTLS",
    "Interval",
    "Timeout",
    "Header",
    "Method",
    "Body",
    "TLSSkipVerify",
    "DeregisterCriticalServiceAfter",
];
/// The same durations under Consul's other names (the npm client sends these).
const DEFINITION_ALIASES: &[&str] = &[
    "IntervalDuration",
    "TimeoutDuration",
    "DeregisterCriticalServiceAfterDuration",
];
const DEFINITION_IGNORED: &[&str] = &["TLSServerName", "TCPUseTLS", "H2PingUseTLS", "DisableRedirects"];

/// `PUT /v1/catalog/register`, or a 400 naming the bad field.
pub fn parse_catalog_registration(body: &Value) -> Result<CatalogRegistration, ApiError> {
    let f = Fields::new(body, "")?;
    f.refuse_unknown(&[CATALOG_FIELDS, CATALOG_IGNORED])?;
    let name = f
        .string("Node")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::field("Node", "missing node name"))?;
    let name = NodeName::parse(name).map_err(|e| ApiError::field("Node", e))?;
    // With `SkipNodeUpdate` a known node keeps its address: none need be given.
    let skip_node_update = f.bool("SkipNodeUpdate")?;
    let address = match f.string("Address")?.filter(|a| !a.is_empty()) {
        Some(address) => Address::parse(address).map_err(|e| ApiError::field("Address", e))?,
        None if skip_node_update => Address::Node,
        None => return Err(ApiError::field("Address", "missing node address")),
    };
    let node = Node {
        name,
        id: f.string("ID")?.unwrap_or("").into(),
        address,
        meta: parse_meta(&f, "NodeMeta")?,
        checks: Box::default(),
        local: false,
        create_index: 0,
        modify_index: 0,
    };
    if !skip_node_update {
        node.validate().map_err(ApiError::BadRequest)?;
    }
    let node = Arc::new(node);
    let service = match f.get("Service") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let s = Fields::new(value, "Service")?;
            s.refuse_unknown(&[CATALOG_SERVICE_FIELDS, REGISTRATION_IGNORED, CATALOG_SERVICE_IGNORED])?;
            Some(parse_service(&s, "Service", &node)?)
        }
    };
    let mut bodies: Vec<(String, &Value)> = Vec::new();
    if let Some(check) = f.get("Check").filter(|c| !c.is_null()) {
        bodies.push(("Check".into(), check));
    }
    match f.get("Checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => bodies.extend(list.iter().enumerate().map(|(i, v)| (format!("Checks[{i}]"), v))),
        Some(_) => return Err(ApiError::field("Checks", "must be an array of checks")),
    }
    if bodies.len() > MAX_CHECKS {
        return Err(ApiError::field("Checks", format!("at most {MAX_CHECKS} checks")));
    }
    let mut checks: Vec<(Option<InstanceId>, Check)> = Vec::new();
    for (path, body) in &bodies {
        let c = Fields::new(body, path)?;
        c.refuse_unknown(&[CATALOG_CHECK_FIELDS, CATALOG_CHECK_IGNORED])?;
        let (service_id, check) = parse_catalog_check(&c, &node, service.as_ref())?;
        if checks
            .iter()
            .any(|(s, k)| *s == service_id && k.spec.id == check.spec.id)
        {
            return Err(ApiError::field(
                &c.name("CheckID"),
                format!("{:?} is used twice", check.spec.id.as_str()),
            ));
        }
        checks.push((service_id, check));
    }
    Ok(CatalogRegistration {
        node,
        service,
        checks,
        skip_node_update,
    })
}

/// One check of a catalog registration, with the service it is on (`None`: the node). Its
/// status is the registrar's, unless its `Definition` is one sextant runs (HTTP, TCP, gRPC),
/// which only a service's check may have.
fn parse_catalog_check(
    c: &Fields,
    node: &Node,
    service: Option<&Instance>,
) -> Result<(Option<InstanceId>, Check), ApiError> {
    if let Some(other) = c.string("Node")?
        && !other.is_empty()
        && !other.eq_ignore_ascii_case(node.name.as_str())
    {
        return Err(ApiError::field(
            &c.name("Node"),
            format!("{other:?} is not the node registered ({:?})", node.name.as_str()),
        ));
    }
    let service_id = match c.string("ServiceID")?.filter(|s| !s.is_empty()) {
        Some(id) => Some(InstanceId::parse(id).map_err(|e| ApiError::field(&c.name("ServiceID"), e))?),
        None => None,
    };
    let name = c.string("Name")?.filter(|n| !n.is_empty());
    let check_id = c
        .string("CheckID")?
        .filter(|id| !id.is_empty())
        .or(name)
        .ok_or_else(|| ApiError::field(&c.name("CheckID"), "missing: give a CheckID or a Name"))?;
    check_check_id(check_id).map_err(|e| ApiError::field(&c.name("CheckID"), e))?;
    let id = CheckId::parse(check_id).map_err(|e| ApiError::field(&c.name("CheckID"), e))?;
    let status = match c.string("Status")? {
        // Consul's catalog: a check given without a status is critical.
        None | Some("") => Health::Critical,
        Some(s) => Health::parse(s)
            .ok_or_else(|| ApiError::field(&c.name("Status"), format!("{s:?} is not passing, warning or critical")))?,
    };
    // Go clients always send a `Definition`, with zero durations when there is nothing to run.
    let runs = |d: &Value| {
        let kinds = ["HTTP", "TCP", "GRPC"].iter().chain(UNSUPPORTED_CHECK_KINDS);
        Fields::new(d, "").is_ok_and(|d| kinds.clone().any(|k| d.get(k).is_some_and(is_set)))
    };
    let run = match c.get("Definition").filter(|d| is_set(d)) {
        None => None,
        Some(definition) if !runs(definition) => {
            Fields::new(definition, &c.name("Definition"))?.refuse_unknown(&[
                DEFINITION_FIELDS,
                DEFINITION_ALIASES,
                DEFINITION_IGNORED,
                UNSUPPORTED_CHECK_KINDS,
            ])?;
            None
        }
        Some(definition) => {
            let d = Fields::new(definition, &c.name("Definition"))?;
            d.refuse_unknown(&[
                DEFINITION_FIELDS,
                DEFINITION_ALIASES,
                DEFINITION_IGNORED,
                UNSUPPORTED_CHECK_KINDS,
            ])?;
            let definition = d.with_aliases(&[
                ("Interval", "IntervalDuration"),
                ("Timeout", "TimeoutDuration"),
                (
                    "DeregisterCriticalServiceAfter",
                    "DeregisterCriticalServiceAfterDuration",
                ),
            ]);
            let d = Fields::new(&definition, &c.name("Definition"))?;
            let service_name = service.map_or_else(|| node.name.clone(), |s| s.service.clone());
            parse_check(&d, &service_name)?
        }
    };
    if run.is_some() && service_id.is_none() {
        return Err(ApiError::field(
            &c.name("Definition"),
            "sextant runs a Definition only for a service's check (give its ServiceID); a node-level check takes the Status its registrar gives",
        ));
    }
    let (kind, deregister_critical_after) = match run {
        Some(spec) => (spec.kind, spec.deregister_critical_after),
        None => (CheckKind::External, None),
    };
    let name = name.unwrap_or(check_id);
    check_text(name).map_err(|e| ApiError::field(&c.name("Name"), e))?;
    let spec = CheckSpec {
        id,
        name: name.to_owned(),
        notes: c.string("Notes")?.unwrap_or("").to_owned(),
        kind,
        initial_status: status,
        success_before_passing: 0,
        failures_before_critical: 0,
        deregister_critical_after,
    };
    let mut check = Check::new(spec);
    check.output = crate::model::bounded_output(c.string("Output")?.unwrap_or("")).into_owned();
    Ok((service_id, check))
}

/// `PUT /v1/catalog/deregister`: `{Node, ServiceID?, CheckID?}` (a service, else a check, else
/// the whole node, as Consul).
pub fn parse_catalog_deregistration(body: &Value) -> Result<(NodeName, CatalogRemoval), ApiError> {
    let f = Fields::new(body, "")?;
    f.refuse_unknown(&[&["Node", "ServiceID", "CheckID", "Datacenter"], CATALOG_IGNORED])?;
    let node = f
        .string("Node")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::field("Node", "missing node name"))?;
    let node = NodeName::parse(node).map_err(|e| ApiError::field("Node", e))?;
    let removal = match (
        f.string("ServiceID")?.filter(|s| !s.is_empty()),
        f.string("CheckID")?.filter(|s| !s.is_empty()),
    ) {
        (Some(id), _) => CatalogRemoval::Service(InstanceId::parse(id).map_err(|e| ApiError::field("ServiceID", e))?),
        (None, Some(id)) => CatalogRemoval::Check(CheckId::parse(id).map_err(|e| ApiError::field("CheckID", e))?),
        (None, None) => CatalogRemoval::Node,
    };
    Ok((node, removal))
}
