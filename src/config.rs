//! Configuration: one serde struct read from an optional TOML file, with command-line flags on top.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hickory_proto::rr::Name;
use serde::{Deserialize, Deserializer};

use crate::dns::settings::{DEFAULT_MAX_UDP_SIZE, DnsSettings};
use crate::dns::zones::ZoneSource;
use crate::model::{check_dns_label, parse_go_duration};
use crate::store::EtcdSettings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("cannot read the ACL token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
}

/// Every setting, with its default. The keys of a `--config` file are these field names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// DNS listen address, UDP and TCP.
    #[serde(deserialize_with = "listen_addr")]
    pub dns: SocketAddr,
    /// HTTP API listen address.
    #[serde(deserialize_with = "listen_addr")]
    pub http: SocketAddr,
    /// The domain served: `<service>.service.<domain>`.
    pub domain: String,
    /// Folder of `*.zone` master files.
    pub zones: PathBuf,
    /// Where registrations are kept.
    pub data_dir: PathBuf,
    /// TTL of service records.
    #[serde(deserialize_with = "go_duration")]
    pub service_ttl: Duration,
    /// Per-service TTLs: `{ orders = "5s", "web*" = "30s" }` (an exact name or a prefix with `*`).
    #[serde(deserialize_with = "go_duration_map")]
    pub service_ttls: BTreeMap<String, Duration>,
    /// TTL of `<node>.node.<domain>` answers.
    #[serde(deserialize_with = "go_duration")]
    pub node_ttl: Duration,
    /// At most this many A/AAAA records per answer (after rotation); 0: no limit.
    pub dns_a_record_limit: usize,
    /// Largest UDP response, whatever the client's EDNS buffer (the rest comes over TCP after TC).
    pub dns_max_udp_size: u16,
    /// DNS-over-TCP connections open at once; when full, the one idle longest is closed for a
    /// new one.
    pub dns_tcp_max_connections: usize,
    /// DNS-over-TCP connections open at once from one client address; more are closed at once.
    pub dns_tcp_max_per_client: usize,
    /// Name of this node (`<node>.node.<domain>`); default: the host name.
    pub node_name: Option<String>,
    /// Address given to instances registered without one; default: the DNS address, or 127.0.0.1.
    pub advertise: Option<IpAddr>,
    /// Datacenter reported by the API; default: the domain's first label.
    pub datacenter: Option<String>,
    /// Leave warning instances out of DNS answers too (by default only critical ones are).
    pub dns_only_passing: bool,
    /// The negative TTL of a known service whose every instance is critical; default: the SOA
    /// minimum, as any other negative answer.
    #[serde(deserialize_with = "go_duration_option")]
    pub dns_unhealthy_ttl: Option<Duration>,
    /// UDP worker threads (one socket each); default: the number of cores.
    pub dns_workers: Option<usize>,
    /// Most HTTP/TCP probes running at once; the rest wait their turn (and run late).
    pub max_checks_in_flight: usize,
    /// How many services get a label of their own in the per-service DNS metrics (the services
    /// asked most); the rest share `service="_other"`.
    pub metrics_service_limit: usize,
    /// Service instances held at most (every node's); a registration of one more gets a 503.
    pub max_instances: usize,
    /// Services held at most; an instance of one more gets a 503.
    pub max_services: usize,
    /// External nodes (registered through the catalog) held at most.
    pub max_nodes: usize,
    /// Bytes of key/value entries (keys and values) held at most.
    pub max_kv_bytes: usize,
    /// Tags of one instance, at most (64 at most).
    pub max_tags_per_instance: usize,
    /// `Meta` keys of one instance, at most (64 at most).
    pub max_meta_per_instance: usize,
    /// Checks of one instance, at most (32 at most).
    pub max_checks_per_instance: usize,
    /// Flap damping: an instance whose health changes more than this many times within
    /// `flap_window` is held out of DNS (and of `?passing`) until it has been stable for a whole
    /// window. 0 (the default): off, as in Consul.
    pub flap_threshold: u32,
    /// The window flap damping counts changes in, and the stable time that releases a hold.
    #[serde(deserialize_with = "go_duration")]
    pub flap_window: Duration,
    /// Add each instance's `Meta` as TXT records (`key=value`) to the additional section of SRV
    /// answers, under the SRV target (Consul's `enable_additional_node_meta_txt`, for instances).
    pub dns_meta_txt: bool,
    /// Reverse zones answered from the registry (`10.in-addr.arpa`, `8.b.d.0.1.0.0.2.ip6.arpa`):
    /// PTR records name the services registered at an address.
    pub reverse_zones: Vec<String>,
    /// Upstream DNS servers (`IP` or `IP:port`) that names outside every served zone are
    /// forwarded to, tried in order; none: such names are REFUSED.
    pub recursors: Vec<String>,
    /// How long one recursor may take to answer before the next is tried.
    #[serde(deserialize_with = "go_duration")]
    pub recursor_timeout: Duration,
    /// Networks (CIDR) whose clients' queries may be forwarded; others get REFUSED. Default:
    /// loopback and private networks, as BIND's `allow-recursion`.
    pub recursor_clients: Vec<String>,
    /// UDP responses a second to one source network (a /24, a /56): past it, every second
    /// response slips (truncated) and the rest are dropped. 0: no limit.
    pub dns_rate_limit: u32,
    /// Networks (CIDR) exempt from the rate limit and the amplification bound; default:
    /// loopback, which no packet from outside can claim.
    pub dns_rate_limit_exempt: Vec<String>,
    /// The secret every API request must carry (`X-Consul-Token` or `Authorization: Bearer`).
    /// None: reads are open, and writes are taken from loopback clients only.
    pub acl_token: Option<String>,
    /// A file holding that secret (surrounding whitespace ignored), kept out of `ps` and of
    /// this file.
    pub acl_token_file: Option<PathBuf>,
    /// Serve the HTTP API over TLS with this certificate chain (PEM), and `http_tls_key`.
    pub http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `http_tls_cert`.
    pub http_tls_key: Option<PathBuf>,
    /// When set, every HTTP client must present a certificate this CA (PEM) signed.
    pub http_tls_client_ca: Option<PathBuf>,
    /// HTTP connections open at once; more get a 503 and are closed.
    pub http_max_connections: usize,
    /// HTTP connections open at once from one client address; more get a 503 and are closed.
    pub http_max_per_client: usize,
    /// Blocking queries waiting at once; more get a 503.
    pub http_max_blocking_queries: usize,
    /// A second secret that may only read (a scraper, a dashboard): every write made with it is
    /// refused (403). Needs `acl_token`.
    pub acl_read_token: Option<String>,
    /// A file holding the read-only secret.
    pub acl_read_token_file: Option<PathBuf>,
    /// How long an HTTP client may take to send a request's headers; an idle keep-alive
    /// connection is closed after as long. Bounds what a slow or silent client can hold.
    #[serde(deserialize_with = "go_duration")]
    pub http_header_timeout: Duration,
    /// Keep the registry in this etcd cluster (`http://host:port`, one per member) instead of
    /// `data_dir`.
    pub etcd: Vec<String>,
    /// Every key sextant writes in etcd starts with it.
    pub etcd_prefix: String,
    /// How long after a server stops renewing its lease (it died, or lost etcd) the others take
    /// its share of the checks over.
    #[serde(deserialize_with = "go_duration")]
    pub etcd_lease_ttl: Duration,
    /// PEM files for etcd over TLS: the CA of its members' certificates, and this client's
    /// certificate and key.
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// etcd's user, when its authentication is on; the password is read from
    /// `etcd_password_file`.
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dns: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8600)),
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, 8500)),
            domain: "trading-dc".into(),
            zones: "zones".into(),
            data_dir: "data".into(),
            service_ttl: Duration::ZERO,
            service_ttls: BTreeMap::new(),
            node_ttl: Duration::ZERO,
            dns_a_record_limit: 0,
            dns_max_udp_size: DEFAULT_MAX_UDP_SIZE,
            dns_tcp_max_connections: crate::dns::tcp::DEFAULT_MAX_CONNECTIONS,
            dns_tcp_max_per_client: crate::dns::tcp::DEFAULT_MAX_PER_CLIENT,
            node_name: None,
            advertise: None,
            datacenter: None,
            dns_only_passing: false,
            dns_unhealthy_ttl: None,
            dns_workers: None,
            max_checks_in_flight: 1024,
            metrics_service_limit: crate::metrics::DEFAULT_SERVICE_LIMIT,
            max_instances: crate::registry::Bounds::default().instances,
            max_services: crate::registry::Bounds::default().services,
            max_nodes: crate::registry::Bounds::default().nodes,
            max_kv_bytes: crate::registry::Bounds::default().kv_bytes,
            max_tags_per_instance: crate::model::rules::MAX_TAGS,
            max_meta_per_instance: crate::model::rules::MAX_META_KEYS,
            max_checks_per_instance: crate::model::rules::MAX_CHECKS,
            flap_threshold: 0,
            flap_window: Duration::from_secs(120),
            dns_meta_txt: false,
            reverse_zones: Vec::new(),
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
            recursor_clients: Vec::new(),
            dns_rate_limit: crate::dns::reflection::DEFAULT_RATE,
            dns_rate_limit_exempt: crate::dns::reflection::default_exempt()
                .iter()
                .map(ToString::to_string)
                .collect(),
            acl_token: None,
            acl_token_file: None,
            acl_read_token: None,
            acl_read_token_file: None,
            http_tls_cert: None,
            http_tls_key: None,
            http_tls_client_ca: None,
            http_max_connections: crate::api::serve::DEFAULT_MAX_CONNECTIONS,
            http_max_per_client: crate::api::serve::DEFAULT_MAX_PER_CLIENT,
            http_max_blocking_queries: crate::api::serve::DEFAULT_MAX_BLOCKING_QUERIES,
            http_header_timeout: Duration::from_secs(30),
            etcd: Vec::new(),
            etcd_prefix: "/sextant/".into(),
            etcd_lease_ttl: Duration::from_secs(10),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
        }
    }
}

/// Networks written as CIDRs or single addresses.
fn networks(texts: &[String], field: &'static str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    texts
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    field,
                    message: format!("{text:?} is not a network (10.0.0.0/8) or an address"),
                })
        })
        .collect()
}

fn go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_go_duration(&text).map_err(serde::de::Error::custom)
}

fn go_duration_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    go_duration(d).map(Some)
}

fn go_duration_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(name, text)| {
            let ttl = parse_go_duration(&text).map_err(serde::de::Error::custom)?;
            Ok((name, ttl))
        })
        .collect()
}

/// A TTL in whole seconds, as DNS carries it.
fn ttl_secs(field: &'static str, ttl: Duration) -> Result<u32, ConfigError> {
    u32::try_from(ttl.as_secs()).map_err(|_| ConfigError::Invalid {
        field,
        message: "too long".into(),
    })
}

/// A timeout, which 0 would turn into "fail at once".
fn more_than_zero(field: &'static str, timeout: Duration) -> Result<Duration, ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::Invalid {
            field,
            message: "must be more than 0".into(),
        });
    }
    Ok(timeout)
}

/// The configuration validated, one part per subsystem: all `App::bind` wires, each value read
/// from the configuration once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How DNS answers: the domain, this node, TTLs, limits.
    pub dns: DnsSettings,
    pub dns_server: DnsServerSettings,
    pub http: HttpSettings,
    /// Most HTTP/TCP probes running at once.
    pub max_checks_in_flight: usize,
    /// Services with a label of their own in the per-service DNS metrics.
    pub metrics_service_limit: usize,
    /// How much the registry holds at most.
    pub bounds: crate::registry::Bounds,
    /// Flap damping, when on.
    pub flap_damping: Option<crate::registry::FlapDamping>,
    /// Where registrations are kept.
    pub store: StoreSettings,
}

/// Where registrations are kept.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// The embedded store: a redb file in this folder.
    Embedded(PathBuf),
    Etcd(EtcdSettings),
}

/// Where DNS listens, what else it serves, and where it forwards.
#[derive(Debug, Clone)]
pub struct DnsServerSettings {
    pub listen: SocketAddr,
    /// UDP worker threads (one socket each).
    pub workers: usize,
    /// The zone files and the reverse zones.
    pub zones: ZoneSource,
    pub recursors: Vec<SocketAddr>,
    /// Networks whose clients' queries may be forwarded.
    pub recursor_clients: Vec<ipnet::IpNet>,
    pub recursor_timeout: Duration,
    /// DNS-over-TCP connection limits.
    pub tcp: crate::dns::tcp::TcpLimits,
}

/// Where the API listens, and what it takes and says.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub header_timeout: Duration,
    /// The secret every request must carry; none: writes from loopback clients only.
    pub acl_token: Option<String>,
    /// A secret that may only read.
    pub acl_read_token: Option<String>,
    pub datacenter: String,
    pub limits: crate::api::serve::HttpLimits,
    /// TLS, when on.
    pub tls: Option<crate::api::tls::TlsFiles>,
}

impl Config {
    /// Validates every setting once; the first invalid one is the error, named as the user
    /// writes it.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let dns = self.dns_settings()?;
        let mut zones = ZoneSource::new(&self.zones, &dns.domain, dns.node_addr);
        zones.reverse_zones = self.reverse_zone_names()?;
        Ok(Settings {
            dns_server: DnsServerSettings {
                listen: self.dns,
                workers: self.dns_workers(),
                zones,
                recursors: self.recursor_addrs()?,
                recursor_clients: self.recursor_client_nets()?,
                recursor_timeout: self.recursor_timeout()?,
                tcp: self.tcp_limits()?,
            },
            http: HttpSettings {
                listen: self.http,
                header_timeout: self.http_header_timeout()?,
                acl_token: self.acl_token()?,
                acl_read_token: self.acl_read_token()?,
                limits: self.http_limits()?,
                tls: self.http_tls()?,
                datacenter: self.datacenter(),
            },
            max_checks_in_flight: self.max_checks_in_flight()?,
            metrics_service_limit: self.metrics_service_limit,
            bounds: self.bounds()?,
            flap_damping: self.flap_damping()?,
            store: self.store_settings(&dns.node_name)?,
            dns,
        })
    }

    /// Flap damping, or `None` when off (a threshold of 0).
    fn flap_damping(&self) -> Result<Option<crate::registry::FlapDamping>, ConfigError> {
        if self.flap_threshold == 0 {
            return Ok(None);
        }
        if self.flap_window < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                field: "flap_window (--flap-window)",
                message: format!(
                    "{} is too short: a window of at least 1s is needed to count changes in",
                    crate::model::format_go_duration(self.flap_window)
                ),
            });
        }
        Ok(Some(crate::registry::FlapDamping {
            threshold: self.flap_threshold,
            window: self.flap_window,
        }))
    }

    /// The embedded store in `data_dir`, or etcd when `etcd` names its members.
    fn store_settings(&self, node_name: &str) -> Result<StoreSettings, ConfigError> {
        if self.etcd.is_empty() {
            return Ok(StoreSettings::Embedded(self.data_dir.clone()));
        }
        let invalid = |field: &'static str, message: String| ConfigError::Invalid { field, message };
        let tls = self.etcd_ca.is_some() || self.etcd_cert.is_some();
        for endpoint in &self.etcd {
            let url = url::Url::parse(endpoint)
                .map_err(|e| invalid("etcd (--etcd)", format!("{endpoint:?} is not a URL ({e})")))?;
            let scheme_fits = match url.scheme() {
                "http" => !tls,
                "https" => true,
                _ => false,
            };
            if !scheme_fits || url.host().is_none() || url.port().is_none() || url.path() != "/" {
                let scheme = if tls { "https" } else { "http or https" };
                return Err(invalid(
                    "etcd (--etcd)",
                    format!("{endpoint:?}: give each member as {scheme}://HOST:PORT"),
                ));
            }
        }
        if self.etcd_prefix.is_empty() || !self.etcd_prefix.ends_with('/') {
            return Err(invalid(
                "etcd_prefix (--etcd-prefix)",
                format!("{:?} must end with '/'", self.etcd_prefix),
            ));
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&self.etcd_lease_ttl) {
            return Err(invalid(
                "etcd_lease_ttl (--etcd-lease-ttl)",
                format!("{:?} is not between 2s and 1h", self.etcd_lease_ttl),
            ));
        }
        if self.etcd_cert.is_some() != self.etcd_key.is_some() {
            return Err(invalid(
                "etcd_cert, etcd_key (--etcd-cert, --etcd-key)",
                "give the client certificate and its key together".into(),
            ));
        }
        let user = match (&self.etcd_user, &self.etcd_password_file) {
            (None, None) => None,
            (Some(user), Some(path)) => {
                let password = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "etcd_password_file (--etcd-password-file)",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some((user.clone(), password.trim().to_owned()))
            }
            _ => {
                return Err(invalid(
                    "etcd_user, etcd_password_file (--etcd-user, --etcd-password-file)",
                    "give the user and the file holding its password together".into(),
                ));
            }
        };
        Ok(StoreSettings::Etcd(EtcdSettings {
            endpoints: self.etcd.clone(),
            prefix: self.etcd_prefix.clone(),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user,
            node_name: node_name.to_owned(),
            lease_ttl: self.etcd_lease_ttl,
        }))
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// The domain as an absolute, lower-cased DNS name.
    fn domain_name(&self) -> Result<Name, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: "domain",
            message,
        };
        let trimmed = self.domain.trim_end_matches('.');
        for label in trimmed.split('.') {
            check_dns_label(label).map_err(&invalid)?;
        }
        Name::from_ascii(format!("{trimmed}."))
            .map(|n| n.to_lowercase())
            .map_err(|e| invalid(e.to_string()))
    }

    fn service_ttl_secs(&self) -> Result<u32, ConfigError> {
        ttl_secs("service_ttl", self.service_ttl)
    }

    /// The per-service TTLs, names lower-cased, checked: each a service name, or a prefix of one
    /// followed by `*`.
    fn service_ttls_secs(&self) -> Result<Vec<(String, u32)>, ConfigError> {
        self.service_ttls
            .iter()
            .map(|(pattern, ttl)| {
                let name = pattern.strip_suffix('*').unwrap_or(pattern);
                if !name.is_empty() && !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ConfigError::Invalid {
                        field: "service_ttls (--service-ttl NAME=DURATION)",
                        message: format!("{pattern:?} is neither a service name nor a prefix followed by '*'"),
                    });
                }
                Ok((
                    pattern.to_ascii_lowercase(),
                    ttl_secs("service_ttls (--service-ttl NAME=DURATION)", *ttl)?,
                ))
            })
            .collect()
    }

    fn node_ttl_secs(&self) -> Result<u32, ConfigError> {
        ttl_secs("node_ttl", self.node_ttl)
    }

    fn node_name(&self) -> Result<String, ConfigError> {
        let name = match &self.node_name {
            Some(name) => name.clone(),
            None => host_name_label(),
        };
        check_dns_label(&name).map_err(|message| ConfigError::Invalid {
            field: "node_name",
            message,
        })?;
        Ok(name)
    }

    fn advertise_addr(&self) -> IpAddr {
        self.advertise.unwrap_or_else(|| {
            let ip = self.dns.ip();
            if ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                ip
            }
        })
    }

    /// The largest UDP response: 512 (DNS without EDNS) to 65,535.
    fn dns_max_udp_size(&self) -> Result<u16, ConfigError> {
        if self.dns_max_udp_size < 512 {
            return Err(ConfigError::Invalid {
                field: "dns_max_udp_size",
                message: format!(
                    "{} is below 512, the size every DNS client takes",
                    self.dns_max_udp_size
                ),
            });
        }
        Ok(self.dns_max_udp_size)
    }

    /// DNS's settings, validated.
    fn dns_settings(&self) -> Result<DnsSettings, ConfigError> {
        let mut settings = DnsSettings::new(self.domain_name()?, &self.node_name()?, self.advertise_addr());
        settings.service_ttl = self.service_ttl_secs()?;
        settings.service_ttls = self.service_ttls_secs()?;
        settings.node_ttl = self.node_ttl_secs()?;
        settings.only_passing = self.dns_only_passing;
        settings.a_record_limit = self.dns_a_record_limit;
        settings.meta_txt = self.dns_meta_txt;
        settings.max_udp_size = self.dns_max_udp_size()?;
        settings.rate_limit = crate::dns::reflection::RateLimit {
            rate: self.dns_rate_limit,
            exempt: networks(
                &self.dns_rate_limit_exempt,
                "dns_rate_limit_exempt (--dns-rate-limit-exempt)",
            )?,
        };
        settings.unhealthy_ttl = self
            .dns_unhealthy_ttl
            .map(|ttl| ttl_secs("dns_unhealthy_ttl", ttl))
            .transpose()?;
        Ok(settings)
    }

    fn http_limits(&self) -> Result<crate::api::serve::HttpLimits, ConfigError> {
        let invalid = |field: &'static str, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        if self.http_max_connections == 0 {
            return Err(invalid("http_max_connections", "must be at least 1"));
        }
        if self.http_max_per_client == 0 || self.http_max_per_client > self.http_max_connections {
            return Err(invalid(
                "http_max_per_client",
                "must be at least 1 and at most http_max_connections",
            ));
        }
        if self.http_max_blocking_queries == 0 {
            return Err(invalid("http_max_blocking_queries", "must be at least 1"));
        }
        Ok(crate::api::serve::HttpLimits {
            max_connections: self.http_max_connections,
            max_per_client: self.http_max_per_client,
            max_blocking_queries: self.http_max_blocking_queries,
        })
    }

    fn http_tls(&self) -> Result<Option<crate::api::tls::TlsFiles>, ConfigError> {
        match (&self.http_tls_cert, &self.http_tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::api::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.http_tls_client_ca.clone(),
            })),
            (None, None) if self.http_tls_client_ca.is_none() => Ok(None),
            (None, None) => Err(ConfigError::Invalid {
                field: "http_tls_client_ca (--http-tls-client-ca)",
                message: "needs http_tls_cert and http_tls_key: client certificates are asked for over TLS".into(),
            }),
            _ => Err(ConfigError::Invalid {
                field: "http_tls_cert, http_tls_key (--http-tls-cert, --http-tls-key)",
                message: "give both, the certificate and its key, or neither".into(),
            }),
        }
    }

    fn bounds(&self) -> Result<crate::registry::Bounds, ConfigError> {
        use crate::model::rules::{MAX_CHECKS, MAX_META_KEYS, MAX_TAGS};
        let bounds = crate::registry::Bounds {
            instances: self.max_instances,
            services: self.max_services,
            nodes: self.max_nodes,
            kv_bytes: self.max_kv_bytes,
            tags: self.max_tags_per_instance,
            meta_keys: self.max_meta_per_instance,
            checks: self.max_checks_per_instance,
        };
        let per_instance = [
            ("max_tags_per_instance", bounds.tags, MAX_TAGS),
            ("max_meta_per_instance", bounds.meta_keys, MAX_META_KEYS),
            ("max_checks_per_instance", bounds.checks, MAX_CHECKS),
        ];
        if let Some((field, _, max)) = per_instance.into_iter().find(|(_, value, max)| value > max) {
            return Err(ConfigError::Invalid {
                field,
                message: format!("must be at most {max}, what the store keeps"),
            });
        }
        let fields = [
            ("max_instances", bounds.instances),
            ("max_services", bounds.services),
            ("max_nodes", bounds.nodes),
            ("max_kv_bytes", bounds.kv_bytes),
        ];
        match fields.into_iter().find(|(_, value)| *value == 0) {
            Some((field, _)) => Err(ConfigError::Invalid {
                field,
                message: "must be at least 1".into(),
            }),
            None => Ok(bounds),
        }
    }

    fn tcp_limits(&self) -> Result<crate::dns::tcp::TcpLimits, ConfigError> {
        let invalid = |field: &'static str, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        if self.dns_tcp_max_connections == 0 {
            return Err(invalid("dns_tcp_max_connections", "must be at least 1"));
        }
        if self.dns_tcp_max_per_client == 0 || self.dns_tcp_max_per_client > self.dns_tcp_max_connections {
            return Err(invalid(
                "dns_tcp_max_per_client",
                "must be at least 1 and at most dns_tcp_max_connections",
            ));
        }
        Ok(crate::dns::tcp::TcpLimits {
            max_connections: self.dns_tcp_max_connections,
            max_per_client: self.dns_tcp_max_per_client,
        })
    }

    fn dns_workers(&self) -> usize {
        self.dns_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 256)
    }

    fn max_checks_in_flight(&self) -> Result<usize, ConfigError> {
        match self.max_checks_in_flight {
            0 => Err(ConfigError::Invalid {
                field: "max_checks_in_flight",
                message: "must be at least 1".into(),
            }),
            n => Ok(n.min(tokio::sync::Semaphore::MAX_PERMITS)),
        }
    }

    /// The reverse zones as absolute, lower-cased names, each under `in-addr.arpa.` or `ip6.arpa.`.
    fn reverse_zone_names(&self) -> Result<Vec<Name>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: "reverse_zones (--reverse-zone)",
            message,
        };
        self.reverse_zones
            .iter()
            .map(|zone| {
                let name = Name::from_ascii(format!("{}.", zone.trim_end_matches('.')))
                    .map_err(|e| invalid(format!("{zone:?}: {e}")))?
                    .to_lowercase();
                let under = |parent: &str| Name::from_ascii(parent).is_ok_and(|p| p.zone_of(&name));
                if !under("in-addr.arpa.") && !under("ip6.arpa.") {
                    return Err(invalid(format!("{zone:?} is not under in-addr.arpa or ip6.arpa")));
                }
                Ok(name)
            })
            .collect()
    }

    /// The recursors as socket addresses (port 53 unless given).
    fn recursor_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.recursors
            .iter()
            .map(|text| {
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| ConfigError::Invalid {
                        field: "recursors (--recursor)",
                        message: format!("{text:?} is not an IP address or IP:port"),
                    })
            })
            .collect()
    }

    /// The networks allowed to use the recursors.
    fn recursor_client_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        if self.recursor_clients.is_empty() {
            return Ok(crate::dns::forward::private_networks());
        }
        networks(&self.recursor_clients, "recursor_clients (--recursor-client)")
    }

    fn recursor_timeout(&self) -> Result<Duration, ConfigError> {
        more_than_zero("recursor_timeout", self.recursor_timeout)
    }

    fn http_header_timeout(&self) -> Result<Duration, ConfigError> {
        more_than_zero("http_header_timeout", self.http_header_timeout)
    }

    /// The ACL token, from `acl_token` or read from `acl_token_file`.
    fn acl_token(&self) -> Result<Option<String>, ConfigError> {
        read_token("acl_token", &self.acl_token, &self.acl_token_file)
    }

    /// The read-only token: it needs the read-write one, and differs from it.
    fn acl_read_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(read) = read_token("acl_read_token", &self.acl_read_token, &self.acl_read_token_file)? else {
            return Ok(None);
        };
        let invalid = |message: &str| ConfigError::Invalid {
            field: "acl_read_token",
            message: message.into(),
        };
        match self.acl_token()? {
            None => Err(invalid(
                "a read-only token needs acl_token (the read-write one): without it, reads are open already",
            )),
            Some(write) if write == read => Err(invalid("the read-only token must differ from acl_token")),
            Some(_) => Ok(Some(read)),
        }
    }

    fn datacenter(&self) -> String {
        self.datacenter
            .clone()
            .unwrap_or_else(|| self.domain.split('.').next().unwrap_or("dc1").to_owned())
    }
}

/// This machine's host name as a DNS label ("sextant" when it has none that fits).
fn host_name_label() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let label: String = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() || label.len() > 63 {
        "sextant".into()
    } else {
        label.to_owned()
    }
}

// === command line ===

/// `30s` (every service) or `orders=5s` / `web*=30s` (some).
fn parse_service_ttl(text: &str) -> Result<(Option<String>, Duration), String> {
    match text.split_once('=') {
        Some((name, ttl)) => Ok((Some(name.to_owned()), parse_go_duration(ttl)?)),
        None => Ok((None, parse_go_duration(text)?)),
    }
}

/// A listen address: an IP and a port. A host name is refused with a message that says so
/// (std's own error is "invalid socket address syntax").
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not an IP:port; a listen address needs an IP, such as 127.0.0.1:8600, 0.0.0.0:8600 or [::1]:8600")
    })
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen_addr(&text).map_err(serde::de::Error::custom)
}

#[derive(Debug, Parser)]
#[command(
    name = "sextant",
    version,
    about = "DNS-based service discovery: services register over a Consul-compatible HTTP API, everyone else asks over DNS."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the HTTP API and the authoritative DNS server.
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

/// How the server writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for log shippers.
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Log format: text, or one JSON object per line.
    #[arg(long, value_enum, env = "SEXTANT_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// TOML file with any of the settings below (flags given here override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP [default: 0.0.0.0:8600]. Port 0 picks a free port.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen_addr)]
    pub dns: Option<SocketAddr>,
    /// HTTP API listen address [default: 127.0.0.1:8500]. Port 0 picks a free port.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen_addr)]
    pub http: Option<SocketAddr>,
    /// Domain to be authoritative for: services answer as <name>.service.<domain> [default: trading-dc].
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Folder of zone files (<origin>.zone, RFC 1035 master format) [default: zones].
    #[arg(long, value_name = "DIR")]
    pub zones: Option<PathBuf>,
    /// Folder where registrations are kept [default: data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TTL of service records, as a Go duration ("0s", "30s") [default: 0s, as Consul]; repeat as
    /// NAME=DURATION for one service, or PREFIX*=DURATION for services starting with PREFIX.
    #[arg(long, value_name = "[NAME=]DURATION", value_parser = parse_service_ttl)]
    pub service_ttl: Vec<(Option<String>, Duration)>,
    /// TTL of <node>.node.<domain> answers [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub node_ttl: Option<Duration>,
    /// At most this many A/AAAA records per answer, after rotation (Consul's a_record_limit) [default: 0, no limit].
    #[arg(long, value_name = "N")]
    pub dns_a_record_limit: Option<usize>,
    /// Largest UDP response, whatever a client's EDNS buffer; larger answers are truncated (TC)
    /// and come over TCP [default: 1232, the 2020 DNS flag day's figure].
    #[arg(long, value_name = "BYTES")]
    pub dns_max_udp_size: Option<u16>,
    /// DNS-over-TCP connections open at once; when full, the one idle longest is closed for a
    /// new one [default: 1024].
    #[arg(long, value_name = "N")]
    pub dns_tcp_max_connections: Option<usize>,
    /// DNS-over-TCP connections open at once from one client address; more are closed at once
    /// [default: 32].
    #[arg(long, value_name = "N")]
    pub dns_tcp_max_per_client: Option<usize>,
    /// Node name, answered as <node>.node.<domain> [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address of instances registered without one [default: the DNS address, or 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub advertise: Option<IpAddr>,
    /// Datacenter name reported by the API [default: the domain's first label].
    #[arg(long, value_name = "NAME")]
    pub datacenter: Option<String>,
    /// Answer only passing instances in DNS (by default warning ones are answered too).
    #[arg(long)]
    pub dns_only_passing: bool,
    /// Negative TTL of a known service whose every instance is critical (NODATA) [default: the SOA minimum].
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub dns_unhealthy_ttl: Option<Duration>,
    /// UDP worker threads, each with its own SO_REUSEPORT socket [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub dns_workers: Option<usize>,
    /// Most HTTP/TCP health probes running at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_checks_in_flight: Option<usize>,
    /// Services with a label of their own in the per-service DNS metrics, the ones asked most;
    /// the rest share service="_other" [default: 1000].
    #[arg(long, value_name = "N")]
    pub metrics_service_limit: Option<usize>,
    /// Service instances held at most, on every node; one more gets a 503 [default: 250000].
    #[arg(long, value_name = "N")]
    pub max_instances: Option<usize>,
    /// Services held at most; an instance of one more gets a 503 [default: 50000].
    #[arg(long, value_name = "N")]
    pub max_services: Option<usize>,
    /// External nodes (registered through the catalog) held at most [default: 50000].
    #[arg(long, value_name = "N")]
    pub max_nodes: Option<usize>,
    /// Bytes of key/value entries held at most, each its key twice, its value and 128 bytes
    /// [default: 268435456, 256 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_kv_bytes: Option<usize>,
    /// Tags of one instance, at most; more get a 400 [default: 64, the most].
    #[arg(long, value_name = "N")]
    pub max_tags_per_instance: Option<usize>,
    /// Meta keys of one instance, at most; more get a 400 [default: 64, the most].
    #[arg(long, value_name = "N")]
    pub max_meta_per_instance: Option<usize>,
    /// Checks of one instance, at most; more get a 400 [default: 32, the most].
    #[arg(long, value_name = "N")]
    pub max_checks_per_instance: Option<usize>,
    /// Flap damping: hold an instance out of DNS when its health changes more than N times
    /// within --flap-window, until it is stable for a window [default: 0, off].
    #[arg(long, value_name = "N")]
    pub flap_threshold: Option<u32>,
    /// The window flap damping counts changes in, and the stable time that ends a hold [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub flap_window: Option<Duration>,
    /// Add instance Meta as TXT records (key=value) to SRV answers' additional section.
    #[arg(long)]
    pub dns_meta_txt: bool,
    /// Answer PTR queries under this reverse zone from the registry (repeatable), e.g. 10.in-addr.arpa.
    #[arg(long, value_name = "ZONE")]
    pub reverse_zone: Vec<String>,
    /// Forward names outside the served zones to this DNS server, IP or IP:port (repeatable,
    /// tried in order) [default: none, such names are REFUSED].
    #[arg(long, value_name = "ADDR")]
    pub recursor: Vec<String>,
    /// How long a recursor may take before the next is tried [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub recursor_timeout: Option<Duration>,
    /// Clients in this network (CIDR) may use the recursors (repeatable) [default: loopback and
    /// private networks].
    #[arg(long, value_name = "CIDR")]
    pub recursor_client: Vec<String>,
    /// UDP responses a second to one source network (a /24, a /56); past it every second
    /// response is sent truncated and the rest dropped; 0: no limit [default: 10000].
    #[arg(long, value_name = "N")]
    pub dns_rate_limit: Option<u32>,
    /// Sources in this network (CIDR) are neither rate-limited nor have their UDP answers
    /// bounded (repeatable) [default: loopback].
    #[arg(long, value_name = "CIDR")]
    pub dns_rate_limit_exempt: Vec<String>,
    /// Every API request must carry this token (X-Consul-Token or Authorization: Bearer)
    /// [default: none: reads open, writes from loopback clients only]. Prefer --acl-token-file:
    /// a flag shows in `ps`.
    #[arg(long, value_name = "SECRET")]
    pub acl_token: Option<String>,
    /// Read the ACL token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "acl_token")]
    pub acl_token_file: Option<PathBuf>,
    /// Serve the HTTP API over TLS with this certificate chain (PEM); needs --http-tls-key.
    /// Read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,
    /// Every HTTP client must present a certificate this CA (PEM) signed [default: none asked].
    #[arg(long, value_name = "FILE")]
    pub http_tls_client_ca: Option<PathBuf>,
    /// HTTP connections open at once; more get a 503 and are closed [default: 8192].
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// HTTP connections open at once from one client address; more get a 503 and are closed
    /// [default: 2048].
    #[arg(long, value_name = "N")]
    pub http_max_per_client: Option<usize>,
    /// Blocking queries waiting at once; more get a 503 [default: 65536].
    #[arg(long, value_name = "N")]
    pub http_max_blocking_queries: Option<usize>,
    /// A second token that may only read (a scraper, a dashboard): writes made with it get 403.
    /// Needs --acl-token or --acl-token-file. Prefer --acl-read-token-file.
    #[arg(long, value_name = "SECRET")]
    pub acl_read_token: Option<String>,
    /// Read the read-only token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "acl_read_token")]
    pub acl_read_token_file: Option<PathBuf>,
    /// How long an HTTP client may take to send a request's headers (and a keep-alive
    /// connection may sit idle) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub http_header_timeout: Option<Duration>,
    /// Keep the registry in this etcd cluster instead of --data-dir: its members' client URLs,
    /// comma-separated (http://10.0.0.1:2379,http://10.0.0.2:2379,…).
    #[arg(long, value_name = "URL,…", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Every key sextant writes in etcd starts with it [default: /sextant/].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// How long after a server stops renewing its lease in etcd (it died, or lost etcd) the
    /// other servers take its checks over [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub etcd_lease_ttl: Option<Duration>,
    /// The CA (PEM) that signed the etcd members' certificates: etcd over TLS (https:// URLs).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for etcd members that ask for one.
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// The key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd's user, when its authentication is on (the password comes from --etcd-password-file).
    #[arg(long, value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// The file holding that user's password.
    #[arg(long, value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl ServeArgs {
    /// The file's settings (or the defaults), overridden by the flags given.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! override_with {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        override_with!(
            dns,
            http,
            domain,
            zones,
            data_dir,
            node_ttl,
            dns_a_record_limit,
            dns_max_udp_size,
            dns_tcp_max_connections,
            dns_tcp_max_per_client,
            dns_rate_limit,
            http_max_connections,
            http_max_per_client,
            http_max_blocking_queries,
            max_checks_in_flight,
            metrics_service_limit,
            max_instances,
            max_services,
            max_nodes,
            max_kv_bytes,
            max_tags_per_instance,
            max_meta_per_instance,
            max_checks_per_instance,
            flap_threshold,
            flap_window,
            recursor_timeout,
            http_header_timeout
        );
        if !self.reverse_zone.is_empty() {
            config.reverse_zones = self.reverse_zone;
        }
        if !self.recursor.is_empty() {
            config.recursors = self.recursor;
        }
        if !self.recursor_client.is_empty() {
            config.recursor_clients = self.recursor_client;
        }
        if !self.dns_rate_limit_exempt.is_empty() {
            config.dns_rate_limit_exempt = self.dns_rate_limit_exempt;
        }
        config.dns_meta_txt |= self.dns_meta_txt;
        for (name, ttl) in self.service_ttl {
            match name {
                Some(name) => {
                    config.service_ttls.insert(name, ttl);
                }
                None => config.service_ttl = ttl,
            }
        }
        if self.node_name.is_some() {
            config.node_name = self.node_name;
        }
        if self.advertise.is_some() {
            config.advertise = self.advertise;
        }
        if self.dns_workers.is_some() {
            config.dns_workers = self.dns_workers;
        }
        if self.datacenter.is_some() {
            config.datacenter = self.datacenter;
        }
        config.dns_only_passing |= self.dns_only_passing;
        if self.dns_unhealthy_ttl.is_some() {
            config.dns_unhealthy_ttl = self.dns_unhealthy_ttl;
        }
        if !self.etcd.is_empty() {
            config.etcd = self.etcd;
        }
        for (flag, value) in [
            (&mut config.etcd_ca, self.etcd_ca),
            (&mut config.etcd_cert, self.etcd_cert),
            (&mut config.etcd_key, self.etcd_key),
            (&mut config.etcd_password_file, self.etcd_password_file),
        ] {
            if value.is_some() {
                *flag = value;
            }
        }
        if self.etcd_prefix.is_some() {
            config.etcd_prefix = self.etcd_prefix.unwrap_or_default();
        }
        if self.etcd_user.is_some() {
            config.etcd_user = self.etcd_user;
        }
        if let Some(ttl) = self.etcd_lease_ttl {
            config.etcd_lease_ttl = ttl;
        }
        // A token given on the command line replaces the file's, whichever form either takes.
        if self.acl_token.is_some() || self.acl_token_file.is_some() {
            config.acl_token = self.acl_token;
            config.acl_token_file = self.acl_token_file;
        }
        if self.acl_read_token.is_some() || self.acl_read_token_file.is_some() {
            config.acl_read_token = self.acl_read_token;
            config.acl_read_token_file = self.acl_read_token_file;
        }
        for (flag, field) in [
            (self.http_tls_cert, &mut config.http_tls_cert),
            (self.http_tls_key, &mut config.http_tls_key),
            (self.http_tls_client_ca, &mut config.http_tls_client_ca),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        Ok(config)
    }
}

/// A secret from the configuration itself or from a file (surrounding whitespace ignored),
/// as `field` names it.
fn read_token(
    field: &'static str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { field, message };
    let token = match (inline, file) {
        (Some(_), Some(_)) => return Err(invalid(format!("give {field} or {field}_file, not both"))),
        (None, None) => return Ok(None),
        (Some(token), None) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|source| ConfigError::TokenFile {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_owned(),
    };
    if token.is_empty() {
        return Err(invalid("the token is empty".into()));
    }
    // It travels in an HTTP header: visible ASCII only, as clients can send it.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "the token may hold visible ASCII characters only (no spaces or control characters)".into(),
        ));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("sextant-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sextant.toml");
        std::fs::write(
            &file,
            "domain = \"from-file\"\nservice_ttl = \"30s\"\nhttp = \"127.0.0.1:9500\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "sextant",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--domain",
            "from-flag",
            "--service-ttl",
            "orders=5s",
            "--service-ttl",
            "web*=1m",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.domain, "from-flag");
        assert_eq!(config.service_ttl, Duration::from_secs(30));
        assert_eq!(
            config.service_ttls_secs().unwrap(),
            [("orders".to_owned(), 5), ("web*".to_owned(), 60)]
        );
        assert_eq!(config.http, "127.0.0.1:9500".parse().unwrap());
        assert_eq!(config.dns, "0.0.0.0:8600".parse().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reverse_zones_and_recursors_are_checked() {
        let config = Config {
            reverse_zones: vec!["10.IN-ADDR.arpa.".into(), "8.b.d.0.1.0.0.2.ip6.arpa".into()],
            recursors: vec!["192.0.2.53".into(), "127.0.0.1:5353".into(), "[2001:db8::1]:53".into()],
            ..Config::default()
        };
        let zones: Vec<String> = config
            .reverse_zone_names()
            .unwrap()
            .iter()
            .map(|z| z.to_ascii())
            .collect();
        assert_eq!(zones, ["10.in-addr.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa."]);
        let addrs: Vec<String> = config.recursor_addrs().unwrap().iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["192.0.2.53:53", "127.0.0.1:5353", "[2001:db8::1]:53"]);
        for zone in ["example.com", "arpa", "in-addr.arpa.example"] {
            let config = Config {
                reverse_zones: vec![zone.into()],
                ..Config::default()
            };
            let err = config.reverse_zone_names().unwrap_err().to_string();
            assert!(
                err.contains("reverse_zones (--reverse-zone)") && err.contains(zone),
                "{err}"
            );
        }
        let config = Config {
            recursors: vec!["dns.example.com".into()],
            ..Config::default()
        };
        let err = config.recursor_addrs().unwrap_err().to_string();
        assert!(
            err.contains("recursors (--recursor)") && err.contains("not an IP address"),
            "{err}"
        );
        let config = Config {
            service_ttls: [("bad name".to_owned(), Duration::from_secs(5))].into(),
            ..Config::default()
        };
        let err = config.service_ttls_secs().unwrap_err().to_string();
        assert!(err.contains("service_ttls (--service-ttl NAME=DURATION)"), "{err}");
        let config = Config {
            recursor_clients: vec!["192.0.2.0/24".into(), "2001:db8::1".into()],
            ..Config::default()
        };
        let nets: Vec<String> = config
            .recursor_client_nets()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.0.2.0/24", "2001:db8::1/128"]);
    }

    #[test]
    fn etcd_settings_are_checked() {
        let with = |etcd: &[&str], change: fn(&mut Config)| {
            let mut config = Config {
                etcd: etcd.iter().map(|e| e.to_string()).collect(),
                ..Config::default()
            };
            change(&mut config);
            config.store_settings("node1")
        };
        let fine = with(&["http://10.0.0.1:2379", "https://etcd-2:2379"], |_| {}).unwrap();
        assert!(matches!(fine, StoreSettings::Etcd(ref e) if e.prefix == "/sextant/" && e.node_name == "node1"));
        assert!(matches!(with(&[], |_| {}).unwrap(), StoreSettings::Embedded(_)));
        let error = |etcd: &[&str], change: fn(&mut Config)| with(etcd, change).unwrap_err().to_string();
        for (etcd, change, expected) in [
            (
                &["10.0.0.1:2379"][..],
                (|_: &mut Config| {}) as fn(&mut Config),
                "not a URL",
            ),
            (&["http://10.0.0.1"], |_| {}, "http or https://HOST:PORT"),
            (&["ftp://10.0.0.1:2379"], |_| {}, "http or https://HOST:PORT"),
            (
                &["http://10.0.0.1:2379"],
                |c| c.etcd_ca = Some("ca.pem".into()),
                "https://HOST:PORT",
            ),
            (
                &["http://10.0.0.1:2379"],
                |c| c.etcd_prefix = "/x".into(),
                "must end with '/'",
            ),
            (
                &["http://10.0.0.1:2379"],
                |c| c.etcd_lease_ttl = Duration::from_secs(1),
                "between 2s and 1h",
            ),
            (
                &["https://10.0.0.1:2379"],
                |c| c.etcd_cert = Some("c.pem".into()),
                "together",
            ),
            (
                &["http://10.0.0.1:2379"],
                |c| c.etcd_user = Some("root".into()),
                "together",
            ),
            (
                &["http://10.0.0.1:2379"],
                |c| {
                    c.etcd_user = Some("root".into());
                    c.etcd_password_file = Some("/nonexistent/password".into());
                },
                "cannot read /nonexistent/password",
            ),
        ] {
            let message = error(etcd, change);
            assert!(message.contains(expected), "{etcd:?}: {message}");
            assert!(message.contains("etcd"), "names the key: {message}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("domian = \"x\"").unwrap_err();
        assert!(err.to_string().contains("domian"), "{err}");
    }

    #[test]
    fn example_config_parses() {
        let config =
            Config::from_file(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sextant.toml"))).unwrap();
        assert_eq!(config.domain, "trading-dc");
        assert_eq!(config.dns_max_udp_size().unwrap(), DEFAULT_MAX_UDP_SIZE);
        let small = Config {
            dns_max_udp_size: 511,
            ..Config::default()
        };
        assert!(
            small
                .dns_max_udp_size()
                .unwrap_err()
                .to_string()
                .contains("dns_max_udp_size")
        );
    }
}
