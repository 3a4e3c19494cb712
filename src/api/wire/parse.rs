//! Consul's JSON requests, decoded into validated model types.
//!
//! Requests are decoded as Consul decodes them: field names match without regard to case, and the
//! snake_case spellings (`deregister_critical_service_after`) are the same fields. Every value is
//! checked here, so the registry only ever sees a valid [`Instance`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::fields::Fields;
use crate::api::error::ApiError;
use crate::model::rules::{
    MAX_CHECKS, MAX_META_KEYS, MAX_TAGS, MIN_CHECK_INTERVAL, check_check_id, check_deregister_after, check_header,
    check_http_url, check_meta, check_method, check_min_duration, check_tag, check_tcp_target,
};
use crate::model::{
    Address, Check, CheckId, CheckKind, CheckSpec, Health, HttpCheck, Instance, InstanceId, Meta, ServiceName, Weights,
    check_text,
};

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
/// `PUT /v1/agent/service/register`: the body as an instance, or a 400 naming the bad field.
pub fn parse_registration(body: &Value) -> Result<Instance, ApiError> {
    let f = Fields::new(body, "")?;
    f.refuse_unknown(&[REGISTRATION_FIELDS, REGISTRATION_IGNORED])?;
    let name = f
        .string("Name")?
        .ok_or_else(|| ApiError::field("Name", "missing service name"))?;
    let service = ServiceName::parse(name).map_err(|e| ApiError::field("Name", e))?;
    let id = match f.string("ID")? {
        Some(id) if !id.is_empty() => InstanceId::parse(id).map_err(|e| ApiError::field("ID", e))?,
        _ => InstanceId::parse(name).map_err(|e| ApiError::field("Name", e))?,
    };
    if let Some(kind) = f.string("Kind")?
        && !kind.is_empty()
    {
        return Err(ApiError::field(
            "Kind",
            format!("{kind:?} services are not supported; leave Kind empty"),
        ));
    }
    let address = Address::parse(f.string("Address")?.unwrap_or("")).map_err(|e| ApiError::field("Address", e))?;
    let port = f.uint("Port", u16::MAX as u64)?.unwrap_or(0) as u16;
    let weights = parse_weights(&f)?;
    let checks = parse_checks(&f, &id, &service)?;
    Ok(Instance {
        tags: parse_tags(&f)?,
        meta: parse_meta(&f)?,
        tagged_addresses: parse_tagged_addresses(&f)?,
        enable_tag_override: f.bool("EnableTagOverride")?,
        id,
        service,
        address,
        port,
        weights,
        checks,
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
        return Err(ApiError::field("Tags", "must be an array of strings"));
    };
    if items.len() > MAX_TAGS {
        return Err(ApiError::field("Tags", format!("at most {MAX_TAGS} tags")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, tag)| match tag {
            Value::String(s) => check_tag(s)
                .map(|()| s.as_str().into())
                .map_err(|e| ApiError::field(&format!("Tags[{i}]"), e)),
            _ => Err(ApiError::field(&format!("Tags[{i}]"), "must be a string")),
        })
        .collect()
}

/// Consul's rules for service metadata keys and values.
fn parse_meta(f: &Fields) -> Result<Meta, ApiError> {
    let meta = f.string_map("Meta")?;
    if meta.len() > MAX_META_KEYS {
        return Err(ApiError::field("Meta", format!("at most {MAX_META_KEYS} keys")));
    }
    for (key, value) in &meta {
        check_meta(key, value).map_err(|e| ApiError::field(&format!("Meta[{key:?}]"), e))?;
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
        return Err(ApiError::field("TaggedAddresses", "must be an object"));
    };
    map.iter()
        .map(|(name, entry)| {
            let path = format!("TaggedAddresses[{name:?}]");
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
    let w = Fields::new(value, "Weights")?;
    w.refuse_unknown(&[&["Passing", "Warning"]])?;
    let passing = w.uint("Passing", u16::MAX as u64)?.unwrap_or(1) as u16;
    if passing == 0 {
        return Err(ApiError::field("Weights.Passing", "must be greater than 0"));
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

/// `PUT /v1/agent/check/register`: the instance the check belongs to (`ServiceID`) and the
/// check, or a 400 naming the field. `service_of` names a registered instance's service.
pub fn parse_agent_check(
    body: &Value,
    service_of: impl Fn(&InstanceId) -> Option<ServiceName>,
) -> Result<(InstanceId, CheckSpec), ApiError> {
    let f = Fields::new(body, "check")?;
    f.refuse_unknown(&[CHECK_FIELDS, UNSUPPORTED_CHECK_KINDS, CHECK_IGNORED])?;
    let name = f
        .string("Name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Missing check name".into()))?;
    let service_id = f.string("ServiceID")?.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "ServiceID: sextant keeps checks on instances, so give the ServiceID of a registered instance \
             (node-level checks are not supported yet)"
                .into(),
        )
    })?;
    let unknown = || ApiError::BadRequest(format!("ServiceID {service_id:?} does not exist"));
    let instance = InstanceId::parse(service_id).map_err(|_| unknown())?;
    let service = service_of(&instance).ok_or_else(unknown)?;
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

/// One check definition; `None` for an empty object (Consul ignores those). The ID is set by the caller.
fn parse_check(f: &Fields, service: &ServiceName) -> Result<Option<CheckSpec>, ApiError> {
    for unsupported in UNSUPPORTED_CHECK_KINDS {
        if f.get(unsupported).is_some() {
            return Err(ApiError::field(
                &f.name(unsupported),
                "this check kind is not supported; use HTTP, TCP, TTL or GRPC",
            ));
        }
    }
    let kind = match (
        f.string("HTTP")?,
        f.string("TCP")?,
        f.duration("TTL")?,
        f.string("GRPC")?,
    ) {
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
        (None, None, None, None) if f.map.values().all(|v| v.is_null() || v == "") => return Ok(None),
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
