//! The rules a valid instance keeps, in one place for the two doors an instance comes in by: the
//! HTTP edge (`api::wire`, which names the JSON field that broke one) and the store (a record read
//! back at start must be one a registration could have made).

use std::time::{Duration, SystemTime};

use super::{Address, Check, CheckKind, Instance, MAX_CHECK_OUTPUT, MAX_DURATION, Node, check_text};

pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_LEN: usize = 255;
pub const MAX_META_KEYS: usize = 64;
pub const MAX_META_KEY_LEN: usize = 128;
pub const MAX_META_VALUE_LEN: usize = 512;
pub const MAX_CHECKS: usize = 32;
/// Consul never runs a check more often than this.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A TTL, interval or timeout shorter than this is a mistake (a number is nanoseconds: `30` is
/// 30 ns), not a request.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The shortest `DeregisterCriticalServiceAfter`: sextant reaps to the second.
pub const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(1);
/// Check IDs Consul gives its own checks: a client's check may not take them.
const RESERVED_CHECK_IDS: &[&str] = &["serfHealth", "_node_maintenance"];
const RESERVED_CHECK_PREFIX: &str = "_service_maintenance:";

/// Tags are free text, as in Consul (`secure=false`, `traefik.enable=true`), within bounds.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("must not be empty".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("longer than {MAX_TAG_LEN} bytes"));
    }
    if tag.chars().any(char::is_whitespace) {
        return Err(format!("{tag:?} contains whitespace"));
    }
    check_text(tag)
}

/// Consul's rules for a service metadata key and its value.
pub fn check_meta(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_META_KEY_LEN {
        return Err(format!("keys must be 1 to {MAX_META_KEY_LEN} bytes"));
    }
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("keys may hold only letters, digits, '_' and '-'".into());
    }
    if key.starts_with("consul-") {
        return Err("the \"consul-\" prefix is reserved".into());
    }
    if value.len() > MAX_META_VALUE_LEN {
        return Err(format!("values must be at most {MAX_META_VALUE_LEN} bytes"));
    }
    Ok(())
}

/// A check ID a client may give: not one of Consul's own.
pub fn check_check_id(id: &str) -> Result<(), String> {
    if RESERVED_CHECK_IDS.contains(&id) || id.starts_with(RESERVED_CHECK_PREFIX) {
        return Err(format!("{id:?} is reserved for Consul's own checks"));
    }
    Ok(())
}

/// A duration of at least [`MIN_DURATION`].
pub fn check_min_duration(duration: Duration) -> Result<(), String> {
    if duration < MIN_DURATION {
        return Err(format!(
            "{duration:?} is below the shortest, 1ms; durations are Go strings (\"30s\") or numbers of nanoseconds"
        ));
    }
    Ok(())
}

/// `DeregisterCriticalServiceAfter`, when set: at least a second (zero is "never", kept as none).
pub fn check_deregister_after(after: Duration) -> Result<(), String> {
    if after < MIN_DEREGISTER_AFTER || after > MAX_DURATION {
        return Err(format!("{after:?} is outside 1s to {MAX_DURATION:?} (0 turns it off)"));
    }
    Ok(())
}

/// An HTTP check's URL: http or https.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    }
    Ok(())
}

/// An HTTP method: letters only.
pub fn check_method(method: &str) -> Result<(), String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("{method:?} is not an HTTP method"));
    }
    Ok(())
}

/// A header the probe can send: a valid name, values without control characters.
pub fn check_header(name: &str, values: &[String]) -> Result<(), String> {
    axum::http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a valid header name"))?;
    for value in values {
        axum::http::HeaderValue::from_str(value)
            .map_err(|_| format!("the value of {name:?} is not a valid header value"))?;
    }
    Ok(())
}

/// A TCP check's target: `host:port`.
pub fn check_tcp_target(target: &str) -> Result<(), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{target:?} must be host:port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("{target:?} has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{target:?} has no host"));
    }
    Address::parse(host).map(|_| ()).map_err(|e| format!("{target:?}: {e}"))
}

/// A wall-clock time a response can show (RFC 3339 stops at year 9999) and that is not before
/// 1970.
pub fn check_timestamp(time: SystemTime) -> Result<(), String> {
    const YEAR_9999: Duration = Duration::from_secs(253_402_300_799);
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) if since <= YEAR_9999 => Ok(()),
        _ => Err(format!("{time:?} is not a time between 1970 and 9999")),
    }
}

impl Instance {
    /// Checks every rule the HTTP edge applies, on an instance built some other way (read back
    /// from the store). The message names the part that broke one.
    pub fn validate(&self) -> Result<(), String> {
        let tags = || self.tags.iter().enumerate();
        if self.tags.len() > MAX_TAGS {
            return Err(format!("Tags: at most {MAX_TAGS} tags"));
        }
        for (i, tag) in tags() {
            check_tag(tag).map_err(|e| format!("Tags[{i}]: {e}"))?;
        }
        if self.meta.len() > MAX_META_KEYS {
            return Err(format!("Meta: at most {MAX_META_KEYS} keys"));
        }
        for (key, value) in self.meta.iter() {
            check_meta(key, value).map_err(|e| format!("Meta[{key:?}]: {e}"))?;
        }
        for (name, (address, _)) in &self.tagged_addresses {
            Address::parse(address).map_err(|e| format!("TaggedAddresses[{name:?}]: {e}"))?;
        }
        if self.weights.passing == 0 {
            return Err("Weights.Passing: must be greater than 0".into());
        }
        validate_checks(&self.checks, "checks per instance")
    }
}

/// The rules of a list of checks (an instance's, a node's): at most [`MAX_CHECKS`] (`what` says
/// of what), each ID once, each check valid.
fn validate_checks(checks: &[Check], what: &str) -> Result<(), String> {
    if checks.len() > MAX_CHECKS {
        return Err(format!("Checks: at most {MAX_CHECKS} {what}"));
    }
    for (i, check) in checks.iter().enumerate() {
        if checks[..i].iter().any(|c| c.spec.id == check.spec.id) {
            return Err(format!("check ID {:?} is used twice", check.spec.id.as_str()));
        }
        check
            .validate()
            .map_err(|e| format!("check {:?}: {e}", check.spec.id.as_str()))?;
    }
    Ok(())
}

impl Node {
    /// The rules of a node registered through the catalog, and of what a store may hold for one.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.address, Address::Node) {
            return Err("Address: a node needs an address".into());
        }
        check_text(&self.id).map_err(|e| format!("ID: {e}"))?;
        if self.id.len() > 64 {
            return Err("ID: at most 64 bytes".into());
        }
        if self.meta.len() > MAX_META_KEYS {
            return Err(format!("NodeMeta: at most {MAX_META_KEYS} keys"));
        }
        for (key, value) in self.meta.iter() {
            check_meta(key, value).map_err(|e| format!("NodeMeta[{key:?}]: {e}"))?;
        }
        validate_checks(&self.checks, "node-level checks per node")
    }
}

impl Check {
    /// The rules of a check definition, and of the state a store may hold for it.
    pub fn validate(&self) -> Result<(), String> {
        let spec = &self.spec;
        // Consul's reserved IDs are refused from clients; the maintenance check is sextant's own.
        if !matches!(spec.kind, CheckKind::Maintenance) {
            check_check_id(spec.id.as_str())?;
        }
        check_text(&spec.name).map_err(|e| format!("Name: {e}"))?;
        match &spec.kind {
            CheckKind::Ttl { ttl } if *ttl > MAX_DURATION => {
                return Err(format!("TTL: {ttl:?} is longer than {MAX_DURATION:?}"));
            }
            CheckKind::Ttl { ttl } => check_min_duration(*ttl).map_err(|e| format!("TTL: {e}"))?,
            CheckKind::Http(http) => {
                check_http_url(&http.url).map_err(|e| format!("HTTP: {e}"))?;
                check_method(&http.method).map_err(|e| format!("Method: {e}"))?;
                for (name, values) in &http.header {
                    check_header(name, values).map_err(|e| format!("Header: {e}"))?;
                }
            }
            CheckKind::Tcp { target, .. } => check_tcp_target(target).map_err(|e| format!("TCP: {e}"))?,
            CheckKind::Maintenance | CheckKind::External => {}
            CheckKind::Grpc { target, .. } => check_tcp_target(target).map_err(|e| format!("GRPC: {e}"))?,
        }
        if let Some((interval, timeout)) = spec.kind.schedule() {
            if interval < MIN_CHECK_INTERVAL || interval > MAX_DURATION {
                return Err(format!("Interval: {interval:?} is outside 1s to {MAX_DURATION:?}"));
            }
            check_min_duration(timeout).map_err(|e| format!("Timeout: {e}"))?;
            if timeout > interval {
                return Err(format!("Timeout: {timeout:?} is longer than the interval"));
            }
        }
        if let Some(after) = spec.deregister_critical_after {
            check_deregister_after(after).map_err(|e| format!("DeregisterCriticalServiceAfter: {e}"))?;
        }
        if self.output.len() > MAX_CHECK_OUTPUT + 64 {
            return Err(format!("Output: longer than {MAX_CHECK_OUTPUT} bytes"));
        }
        check_timestamp(self.last_update).map_err(|e| format!("LastUpdate: {e}"))
    }
}
