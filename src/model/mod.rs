//! Validated domain types: what a registered instance is once the edge has checked it.
//!
//! Everything here is built by `api::wire` or read back by the store, both held to [`rules`],
//! and never re-validated in the core.

pub mod rules;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

// tokio's clock: a test may pause it (`tokio::time::pause`) to step through TTLs and thresholds;
// outside a runtime it is std's.
use tokio::time::Instant;

/// A service name as it appears in DNS: one label, letters, digits and hyphens, at most 63 bytes.
/// Kept as registered (for the HTTP API); `key()` is the case-folded form DNS and lookups use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(Arc<str>);

impl ServiceName {
    pub fn parse(name: &str) -> Result<Self, String> {
        check_dns_label(name)?;
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive identity of the service (DNS names compare without case).
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.0)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The lower-cased service name: the key of the per-service index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey(Arc<str>);

// Lookups by `&str` (the DNS path has the lower-cased label, not a key): `Arc<str>` hashes as `str`.
impl std::borrow::Borrow<str> for ServiceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl ServiceKey {
    pub fn new(name: &str) -> Self {
        Self(name.to_ascii_lowercase().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An instance ID. Consul allows almost anything here (`redis:6379`, `10.0.0.1:8080`), and sextant's
/// DNS never puts IDs in names, so only what would break the HTTP paths it appears in is refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(id: &str) -> Result<Self, String> {
        if id.is_empty() {
            return Err("must not be empty".into());
        }
        if id.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} bytes", Self::MAX_LEN));
        }
        if let Some(c) = id.chars().find(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#')) {
            return Err(format!("must not contain {c:?}"));
        }
        check_text(id)?;
        // Clients that normalise URL paths turn `/deregister/..` into another path.
        if id == "." || id == ".." {
            return Err(format!("{id:?} cannot appear in a URL path"));
        }
        Ok(Self(id.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses characters that make text read other than it is: control characters (a log line
/// forged with a newline), bidirectional overrides (text shown reversed) and zero-width
/// characters (two IDs that look the same).
pub fn check_text(text: &str) -> Result<(), String> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}')
            || matches!(c, '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    match text.chars().find(|c| hidden(*c)) {
        Some(c) => Err(format!(
            "must not contain {c:?} (a control, bidirectional or zero-width character)"
        )),
        None => Ok(()),
    }
}

/// Check IDs are chosen by clients (or derived from the service ID) and appear in URL paths.
pub type CheckId = InstanceId;

/// Checks `label` is one DNS label by the host-name rule (RFC 1123): letters, digits, hyphens,
/// 1 to 63 bytes, no hyphen at either end.
pub fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("must not be empty".into());
    }
    if label.len() > 63 {
        return Err(format!("{label:?} is longer than 63 bytes, the limit of a DNS label"));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        return Err(format!(
            "{label:?} contains {c:?}; a DNS label holds only letters, digits and '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("{label:?} must not start or end with '-'"));
    }
    Ok(())
}

/// True when a tag can be asked for in DNS (`<tag>.<service>.service.<domain>`).
pub fn is_dns_label(label: &str) -> bool {
    check_dns_label(label).is_ok()
}

/// Where an instance can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// No address given: the instance is on this node (Consul uses the agent's address).
    Node,
    Ip(IpAddr),
    /// A host name, lower-cased, without the trailing dot.
    Host(Arc<str>),
}

impl Address {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self::Node);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let host = text.strip_suffix('.').unwrap_or(text);
        if host.len() > 253 {
            return Err(format!(
                "{text:?} is neither an IP address nor a host name (longer than 253 bytes)"
            ));
        }
        // A host name whose labels are all digits would be an IPv4 typo, not a name.
        if host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("{text:?} is not a valid IP address"));
        }
        for label in host.split('.') {
            check_dns_label(label).map_err(|e| format!("{text:?} is neither an IP address nor a host name: {e}"))?;
        }
        Ok(Self::Host(host.to_ascii_lowercase().into()))
    }

    /// The text Consul reports: empty for "the node's address".
    pub fn to_wire(&self) -> String {
        match self {
            Self::Node => String::new(),
            Self::Ip(ip) => ip.to_string(),
            Self::Host(h) => h.to_string(),
        }
    }
}

/// Health, ordered from best to worst so an instance's status is the `max` of its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "passing" => Some(Self::Passing),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// SRV weights by health, as Consul's `Weights`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub passing: u16,
    pub warning: u16,
}

impl Default for Weights {
    fn default() -> Self {
        Self { passing: 1, warning: 1 }
    }
}

/// An HTTP check's definition (boxed in [`CheckKind`]: most checks are TTL or TCP, and the
/// enum should not be this large for them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpCheck {
    pub url: String,
    pub method: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub tls_skip_verify: bool,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What a check probes. Only the definition: running it is the health module's job.
/// (Serialized as the store keeps it: `{"Http": {...}}`, `{"Tcp": {...}}`, `{"Ttl": {...}}`.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CheckKind {
    Http(Box<HttpCheck>),
    Tcp {
        target: String,
        interval: Duration,
        timeout: Duration,
    },
    Ttl {
        ttl: Duration,
    },
    /// Maintenance mode (`_service_maintenance:<id>`, `_node_maintenance`): critical while it
    /// exists; nothing runs it.
    Maintenance,
    /// Registered through the catalog without a definition sextant runs: its status is what
    /// the registrar last gave (consul-esm and other monitors of external services).
    External,
    /// The standard gRPC health service at `target` (`host:port`), for `service` (empty: the
    /// server as a whole); over TLS when `tls`.
    Grpc {
        target: String,
        service: String,
        tls: bool,
        interval: Duration,
        timeout: Duration,
    },
}

impl CheckKind {
    /// Consul's `Type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Tcp { .. } => "tcp",
            Self::Ttl { .. } => "ttl",
            Self::Maintenance => "maintenance",
            Self::External => "",
            Self::Grpc { .. } => "grpc",
        }
    }

    /// How often the check runs and how long one run may take (probes only; TTL checks are pushed).
    pub fn schedule(&self) -> Option<(Duration, Duration)> {
        match self {
            Self::Http(http) => Some((http.interval, http.timeout)),
            Self::Tcp { interval, timeout, .. } | Self::Grpc { interval, timeout, .. } => Some((*interval, *timeout)),
            Self::Ttl { .. } | Self::Maintenance | Self::External => None,
        }
    }
}

/// A check definition as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub id: CheckId,
    pub name: String,
    pub notes: String,
    pub kind: CheckKind,
    pub initial_status: Health,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub deregister_critical_after: Option<Duration>,
}

/// A check and its current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub spec: CheckSpec,
    pub status: Health,
    pub output: String,
    /// When the status or output last changed.
    pub last_update: SystemTime,
    /// Set by the registry when it stores the definition and kept while it is unchanged, so a
    /// probe started for an older definition cannot report into a newer one.
    pub generation: u64,
    /// Since when the check has been critical (for `DeregisterCriticalServiceAfter`).
    pub critical_since: Option<Instant>,
    /// TTL checks: when the check turns critical unless a heartbeat comes first. `None` once expired.
    pub ttl_deadline: Option<Instant>,
}

impl Check {
    pub fn new(spec: CheckSpec) -> Self {
        let now = Instant::now();
        Self {
            status: spec.initial_status,
            output: String::new(),
            last_update: SystemTime::now(),
            generation: 0,
            critical_since: (spec.initial_status == Health::Critical).then_some(now),
            ttl_deadline: match spec.kind {
                CheckKind::Ttl { ttl } => Some(now + ttl),
                _ => None,
            },
            spec,
        }
    }

    /// Sets status and output; true when either changed. Keeps `critical_since` and `last_update` right.
    pub fn set_status(&mut self, status: Health, output: &str, now: Instant) -> bool {
        let output = bounded_output(output);
        if self.status == status && self.output == output {
            return false;
        }
        if status != self.status {
            self.critical_since = (status == Health::Critical).then_some(now);
        }
        self.status = status;
        self.output = output.into_owned();
        self.last_update = SystemTime::now();
        true
    }

    /// When the instance is to be deregistered for having been critical too long, if ever.
    pub fn reap_at(&self) -> Option<Instant> {
        Some(self.critical_since? + self.spec.deregister_critical_after?)
    }
}

/// Consul's cap on stored check output (`check_output_max_size`): a probe or a TTL note cannot
/// grow the registry without bound.
pub const MAX_CHECK_OUTPUT: usize = 4096;

/// `output` cut to [`MAX_CHECK_OUTPUT`] bytes at a character boundary, saying how much was kept.
pub fn bounded_output(output: &str) -> std::borrow::Cow<'_, str> {
    if output.len() <= MAX_CHECK_OUTPUT {
        return output.into();
    }
    let note = format!("Captured {MAX_CHECK_OUTPUT} of {} bytes\n...\n", output.len());
    let mut end = MAX_CHECK_OUTPUT;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!("{note}{}", &output[..end]).into()
}

/// Key/value metadata sorted by key: one allocation (most instances have a handful of keys).
pub type Meta = Box<[(Box<str>, Box<str>)]>;

/// A node's name (Consul's `Node`): one DNS label like a service's, so that
/// `<node>.node.<domain>` finds it; kept as registered, compared without case.
pub type NodeName = ServiceName;

/// A node: this server (where the agent API registers), or an external one registered through
/// the catalog (`PUT /v1/catalog/register`) by a third party, which gives its checks' status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: NodeName,
    /// Consul's node ID (a UUID) as registered; empty when none was given.
    pub id: Box<str>,
    /// An IP address or a host name (never [`Address::Node`]).
    pub address: Address,
    pub meta: Meta,
    /// Node-level checks: one critical check makes every service of the node critical.
    pub checks: Box<[Check]>,
    /// This server's own node, not one registered through the catalog.
    pub local: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Node {
    /// This server's node, as it is before any write (no checks of its own).
    pub fn local(name: NodeName, address: IpAddr) -> Self {
        Self {
            name,
            id: "".into(),
            address: Address::Ip(address),
            meta: Box::default(),
            checks: Box::default(),
            local: true,
            create_index: 1,
            modify_index: 1,
        }
    }

    /// The worst status of the node's own checks; passing with none.
    pub fn health(&self) -> Health {
        self.checks.iter().map(|c| c.status).max().unwrap_or(Health::Passing)
    }
}

/// A registered service instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub service: ServiceName,
    pub tags: Box<[Box<str>]>,
    pub address: Address,
    pub port: u16,
    pub meta: Meta,
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    /// A boxed slice, not a `Vec`: a pushed-to `Vec` keeps room for four checks.
    pub checks: Box<[Check]>,
    /// The node it runs on, as the registry holds it (its checks count in the instance's
    /// health): replaced in every instance of a node whenever the node changes.
    pub node: Arc<Node>,
    /// Raft-style indexes as Consul reports them; set by the registry.
    pub create_index: u64,
    pub modify_index: u64,
}

impl Instance {
    /// The worst status of the instance's checks and its node's (Consul: a critical node
    /// check makes every service of the node critical); passing with none.
    pub fn health(&self) -> Health {
        let own = self.checks.iter().map(|c| c.status).max().unwrap_or(Health::Passing);
        own.max(self.node.health())
    }

    /// Where the instance is reached: its own address, or its node's when it has none.
    pub fn reach_address(&self) -> &Address {
        match &self.address {
            Address::Node => &self.node.address,
            own => own,
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// The longest duration taken anywhere: Go's durations stop at about 292 years, and anything
/// near that is a mistake. Kept below Go's limit so that every duration echoed back parses again.
pub const MAX_DURATION: Duration = Duration::from_secs(290 * 365 * 24 * 3600);

/// Parses a Go duration string ("10s", "1m30s", "500ms", "1.5h", ".5s", "0"), as Consul's JSON
/// takes them. Counted in whole nanoseconds, as Go does (a float would lose them past 2^53 ns,
/// about 104 days, and a duration echoed back would not parse to itself).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (use Go's form: \"10s\", \"1m30s\", \"500ms\")");
    let too_long = || format!("{text:?} is longer than the longest duration, {MAX_DURATION:?}");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let max = MAX_DURATION.as_nanos();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len())),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit: u128 = match &after[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &after[unit_len..];
        // Leading zeros are free; anything else past 30 digits is past the longest duration.
        let int_digits = int_digits.trim_start_matches('0');
        if int_digits.len() > 30 {
            return Err(too_long());
        }
        let int: u128 = int_digits.parse().unwrap_or(0);
        // Digits past the nanosecond cannot count (the unit is at most 3.6e12 ns).
        let frac_digits = &frac_digits[..frac_digits.len().min(24)];
        let frac: u128 = frac_digits.parse().unwrap_or(0);
        let scale = 10u128.pow(frac_digits.len() as u32);
        total = int
            .checked_mul(unit)
            .and_then(|n| n.checked_add(frac * unit / scale))
            .and_then(|n| n.checked_add(total))
            .filter(|n| *n <= max)
            .ok_or_else(too_long)?;
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration the way Go prints it, for echoing definitions back ("10s", "1m30s", "500ms").
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let nanos = d.as_nanos();
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1000) {
            format!("{}µs", nanos / 1000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let frac = d.subsec_nanos();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let frac = format!("{:09}", frac);
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(9900)),
            ("100us", Duration::from_micros(100)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "10",
            "ten seconds",
            "-5s",
            "5x",
            "s",
            "1.2.3s",
            "9999999999h",
            "+",
            ".s",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn go_durations_round_trip() {
        for text in ["10s", "1m30s", "500ms", "1h0m0s", "2.5s", "30s"] {
            let d = parse_go_duration(text).unwrap();
            assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d), "{text}");
        }
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        // Past 2^53 ns a float loses nanoseconds (found by the go_duration fuzz target).
        let long = Duration::new(2_000_000 * 3600 + 62, 3);
        assert_eq!(format_go_duration(long), "2000000h1m2.000000003s");
        assert_eq!(parse_go_duration("2000000h1m2.000000003s"), Ok(long));
        assert_eq!(parse_go_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_go_duration("1.0000000001s"),
            Ok(Duration::from_secs(1)),
            "past the ns: dropped"
        );
    }

    #[test]
    fn labels_and_addresses() {
        assert!(ServiceName::parse("orders-v2").is_ok());
        for bad in ["", "orders.v2", "orders_v2", "-orders", &"x".repeat(64)] {
            assert!(ServiceName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Address::parse("").unwrap(), Address::Node);
        assert!(matches!(Address::parse("10.0.0.1").unwrap(), Address::Ip(_)));
        assert!(matches!(Address::parse("::1").unwrap(), Address::Ip(_)));
        assert_eq!(
            Address::parse("DB.Example.com.").unwrap(),
            Address::Host("db.example.com".into())
        );
        for bad in ["10.0.0.300", "not an address", "a..b", "under_score.com"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_ids() {
        assert!(InstanceId::parse("redis:6379").is_ok());
        assert!(InstanceId::parse("10.0.0.1:8080").is_ok());
        for bad in [
            "",
            "a/b",
            "a b",
            "a\nb",
            ".",
            "..",
            "web\u{202e}1",
            "web\u{200b}1",
            "\u{feff}web",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(InstanceId::parse("...").is_ok() && InstanceId::parse("a..b").is_ok());
    }

    #[test]
    fn health_is_worst_of_checks() {
        assert!(Health::Passing < Health::Warning && Health::Warning < Health::Critical);
    }
}
