//! A client for services that use sextant: live lists of a service's healthy instances, load
//! balancers over them, and self-registration with heartbeats.
//!
//! It speaks sextant's Consul-compatible HTTP API (only the endpoints Consul has, so nothing
//! ties a service to sextant) or, for a service that only has DNS, reads SRV records. The pieces:
//!
//! - [`Client`]: the HTTP side: one-shot registration and queries, with timeouts, retries with
//!   backoff, and the ACL token and TLS settings from the environment as Consul's clients take
//!   them.
//! - [`ServiceView`]: a service's healthy instances, kept current by blocking queries
//!   ([`Client::watch`]) or by SRV lookups re-read at the TTL ([`ServiceView::dns`]).
//! - [`Balancer`]: round robin, random, weighted, least outstanding requests, or power of two
//!   choices over a view; every pick is constant time and comes from the view as it is now.
//! - [`SelfRegistration`]: register on start with a TTL check, heartbeat at a third of the TTL,
//!   register again when the server has forgotten the instance, deregister on shutdown.
//!
//! ```no_run
//! use std::time::Duration;
//! use sextant::client::{Client, Registration, Strategy};
//!
//! # async fn run() -> Result<(), sextant::client::Error> {
//! let client = Client::from_env()?; // SEXTANT_HTTP_ADDR or CONSUL_HTTP_ADDR, else 127.0.0.1:8500
//!
//! // This service: registered while it runs, until `me.deregister()`.
//! let me = Registration::new("orders").id("orders-10.0.0.7-8080").address("10.0.0.7").port(8080);
//! let me = client.register_self(me, Duration::from_secs(10)).await?;
//!
//! // Another service: its healthy instances, balanced.
//! let mut prices = client.watch("prices");
//! prices.ready().await?;
//! let balancer = prices.balancer(Strategy::LeastOutstanding);
//! let instance = balancer.pick()?; // counted as outstanding until `instance` is dropped
//! println!("asking {}", instance.socket_addr());
//! drop(instance);
//!
//! me.deregister().await?;
//! # Ok(()) }
//! ```

mod balance;
mod catalog;
mod dns_view;
mod error;
mod load;
mod register;
mod view;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};

pub use balance::{Balancer, Picked, Strategy};
pub use catalog::{CheckState, InstanceHealth, ServiceSummary, Status};
pub use dns_view::{DEFAULT_DNS_TIMEOUT, DnsServer, MIN_REREAD};
pub use error::{Error, Result};
pub use register::{Check, Registration, SelfRegistration};
pub use view::{Instance, Instances, ServiceView, ViewState};

/// Where sextant's HTTP API is when nothing says otherwise (its default `--http`): over
/// `http://`, or `https://` when `CONSUL_HTTP_SSL` is true.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// How long a request may take before it fails with [`Error::Timeout`] (a blocking query gets
/// its wait on top).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a blocking query waits for a change before the server answers with what it has.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// How a failed request is tried again: only failures worth retrying ([`Error::is_retryable`]),
/// with exponential backoff (from `first`, doubling, up to `max`) and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// The backoff before the second attempt; it doubles after each one.
    pub first: Duration,
    /// The longest backoff.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// The backoff after failed attempt `attempt` (0-based): between half and all of
    /// `first · 2^attempt` capped at `max` ("equal jitter"), so clients that failed together do
    /// not retry together, and none retries at once.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.first.saturating_mul(1 << attempt.min(16)).min(self.max);
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// A handle on one sextant (or Consul) HTTP API; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
    timeout: Duration,
    wait: Duration,
    retry: Retry,
}

/// Settings for a [`Client`]: [`Client::builder`].
pub struct ClientBuilder {
    address: String,
    token: Option<String>,
    timeout: Duration,
    wait: Duration,
    retry: Retry,
    tls: Tls,
}

/// What a client trusts and shows over HTTPS, beyond the system's CAs.
#[derive(Debug, Clone, Default)]
struct Tls {
    /// An address without a scheme is `https://`.
    https: bool,
    /// A CA (PEM, one or more certificates) that signs the server's certificate.
    ca_cert: Option<PathBuf>,
    /// A client certificate and its key (PEM), for a server that asks for one.
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl Tls {
    /// Consul's variables, as its clients read them (`SEXTANT_` ones first): `CONSUL_HTTP_SSL`
    /// (true: https), `CONSUL_CACERT`, `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`.
    fn from_env() -> Self {
        let path = |name: &str| env_first(&[&format!("SEXTANT_{name}"), &format!("CONSUL_{name}")]).map(PathBuf::from);
        Self {
            https: env_first(&["SEXTANT_HTTP_SSL", "CONSUL_HTTP_SSL"])
                .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "1" | "true")),
            ca_cert: path("CACERT"),
            client_cert: path("CLIENT_CERT"),
            client_key: path("CLIENT_KEY"),
        }
    }

    /// `builder` trusting the CA and showing the certificate; a file that cannot be read or
    /// is not PEM is an [`Error::Invalid`] naming it.
    fn apply(&self, mut builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|e| Error::Invalid {
                what,
                reason: format!("{}: {e}", path.display()),
            })
        };
        if let Some(path) = &self.ca_cert {
            let invalid = |reason: String| Error::Invalid {
                what: "CA certificate",
                reason: format!("{}: {reason}", path.display()),
            };
            let certificates = reqwest::Certificate::from_pem_bundle(&read("CA certificate", path)?)
                .map_err(|e| invalid(e.to_string()))?;
            if certificates.is_empty() {
                return Err(invalid("no PEM certificate in it".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        match (&self.client_cert, &self.client_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let mut pem = read("client certificate", cert)?;
                pem.push(b'\n');
                pem.extend(read("client key", key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| Error::Invalid {
                    what: "client certificate",
                    reason: format!("{} with {}: {e}", cert.display(), key.display()),
                })?;
                builder = builder.identity(identity);
            }
            _ => {
                return Err(Error::Invalid {
                    what: "client certificate",
                    reason: "a client certificate needs its key, and a key its certificate".into(),
                });
            }
        }
        Ok(builder)
    }
}

impl ClientBuilder {
    /// The ACL token sent as `X-Consul-Token` (replaces one taken from the environment).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts the CA certificates in `pem_file` for an `https://` server, beside the system's
    /// (replaces `CONSUL_CACERT`).
    pub fn ca_cert(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.tls.ca_cert = Some(pem_file.into());
        self
    }

    /// Shows the client certificate `cert_file` (with its key, both PEM) to a server that asks
    /// for one (replaces `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`).
    pub fn client_cert(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.tls.client_cert = Some(cert_file.into());
        self.tls.client_key = Some(key_file.into());
        self
    }

    /// How long one request may take ([`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a blocking query waits for a change ([`DEFAULT_WAIT`]; sextant caps it at 10 min).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How failed requests are retried ([`Retry::default`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    pub fn build(self) -> Result<Client> {
        let with_scheme = match (self.address.contains("://"), self.tls.https) {
            (true, _) => self.address.clone(),
            (false, true) => format!("https://{}", self.address),
            (false, false) => format!("http://{}", self.address),
        };
        let base = url::Url::parse(&with_scheme)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| Error::Invalid {
                what: "sextant address",
                reason: format!("{:?} is not host:port or an http(s) URL", self.address),
            })?;
        if self.timeout.is_zero() || self.retry.attempts == 0 {
            return Err(Error::Invalid {
                what: "client settings",
                reason: "timeout and attempts must be above 0".into(),
            });
        }
        let http = self
            .tls
            .apply(reqwest::Client::builder().connect_timeout(self.timeout))?
            .build()
            .map_err(|e| Error::Invalid {
                what: "HTTP client",
                // reqwest's own text is "builder error": the reason is in its source.
                reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
            })?;
        let inner = Inner {
            http,
            base,
            token: self.token,
            timeout: self.timeout,
            wait: self.wait,
            retry: self.retry,
        };
        Ok(Client { inner: Arc::new(inner) })
    }
}

/// The token in the environment, as Consul's clients read it: `SEXTANT_HTTP_TOKEN`, else
/// `CONSUL_HTTP_TOKEN`.
fn token_from_env() -> Option<String> {
    env_first(&["SEXTANT_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"])
}

/// The first of the variables `names` set and not empty.
fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.is_empty())
}

impl Client {
    /// Settings for a client of the API at `address` (`host:port` or an `http(s)://` URL), with
    /// the token and TLS settings from the environment.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sextant::client::{Client, Retry};
    ///
    /// let client = Client::builder("10.0.0.2:8500")
    ///     .token("s3cret")
    ///     .timeout(Duration::from_secs(2))
    ///     .retry(Retry { attempts: 5, first: Duration::from_millis(50), max: Duration::from_secs(1) })
    ///     .build()?;
    /// assert_eq!(client.address().as_str(), "http://10.0.0.2:8500/");
    /// # Ok::<(), sextant::client::Error>(())
    /// ```
    pub fn builder(address: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            address: address.into(),
            token: token_from_env(),
            timeout: DEFAULT_TIMEOUT,
            wait: DEFAULT_WAIT,
            retry: Retry::default(),
            tls: Tls::from_env(),
        }
    }

    /// A client of the API at `address`, with the token from the environment.
    pub fn new(address: impl Into<String>) -> Result<Self> {
        Self::builder(address).build()
    }

    /// A client of the API the environment names (`SEXTANT_HTTP_ADDR`, else `CONSUL_HTTP_ADDR`,
    /// else [`DEFAULT_ADDRESS`]), with its token and TLS settings.
    pub fn from_env() -> Result<Self> {
        let address = env_first(&["SEXTANT_HTTP_ADDR", "CONSUL_HTTP_ADDR"]).unwrap_or_else(|| DEFAULT_ADDRESS.into());
        Self::new(address)
    }

    /// The API's base URL.
    pub fn address(&self) -> &url::Url {
        &self.inner.base
    }

    /// Registers an instance (`PUT /v1/agent/service/register`): a third party registering a
    /// service, or a service that heartbeats on its own. Registering the same ID again replaces it.
    pub async fn register(&self, registration: &Registration) -> Result<()> {
        self.register_json(&registration.to_json()).await
    }

    /// Registers an instance given as Consul's registration JSON (what `examples/register.json`
    /// holds); sextant refuses what it cannot take with [`Error::Refused`] naming the field.
    pub async fn register_json(&self, body: &serde_json::Value) -> Result<()> {
        self.send(Method::PUT, &["v1", "agent", "service", "register"], &[], Some(body))
            .await
            .map(drop)
    }

    /// Every instance registered with this server (`/v1/agent/services`), healthy or not.
    pub async fn registered(&self) -> Result<Vec<Instance>> {
        let response = self.send(Method::GET, &["v1", "agent", "services"], &[], None).await?;
        let services: std::collections::BTreeMap<String, wire::Service> = response.json()?;
        Ok(services.into_values().map(wire::Service::into_instance).collect())
    }

    /// Deregisters an instance by ID; [`Error::NotFound`] when it is not registered.
    pub async fn deregister(&self, id: &str) -> Result<()> {
        self.send(Method::PUT, &["v1", "agent", "service", "deregister", id], &[], None)
            .await
            .map(drop)
    }

    /// Sets a TTL check passing, with `note` as its output; [`Error::NotFound`] when no such
    /// check is registered.
    pub async fn pass_check(&self, check_id: &str, note: &str) -> Result<()> {
        self.update_check("pass", check_id, note).await
    }

    /// Sets a TTL check warning.
    pub async fn warn_check(&self, check_id: &str, note: &str) -> Result<()> {
        self.update_check("warn", check_id, note).await
    }

    /// Sets a TTL check critical.
    pub async fn fail_check(&self, check_id: &str, note: &str) -> Result<()> {
        self.update_check("fail", check_id, note).await
    }

    async fn update_check(&self, status: &str, check_id: &str, note: &str) -> Result<()> {
        let query = if note.is_empty() {
            vec![]
        } else {
            vec![("note", note.to_string())]
        };
        self.send(Method::PUT, &["v1", "agent", "check", status, check_id], &query, None)
            .await
            .map(drop)
    }

    /// The healthy instances of `service` now (one read, no watching), with the index to block on.
    pub async fn healthy(&self, service: &str) -> Result<Instances> {
        let (list, index) = self.read_passing(service, None).await?;
        let known = !list.is_empty() || self.is_registered(service).await?;
        Ok(Instances::read(service, list, index, known))
    }

    /// A live view of `service`'s healthy instances, kept current by blocking queries.
    pub fn watch(&self, service: &str) -> ServiceView {
        ServiceView::http(self.clone(), service)
    }

    /// Registers this service with a TTL check and keeps it registered: see [`SelfRegistration`].
    /// The TTL check replaces any check set on `registration`; give each instance its own
    /// [`id`](Registration::id), or instances of one service replace each other.
    pub async fn register_self(&self, registration: Registration, ttl: Duration) -> Result<SelfRegistration> {
        SelfRegistration::start(self.clone(), registration, ttl).await
    }

    /// `GET /v1/health/service/<name>?passing`, blocking at `index` when given.
    async fn read_passing(&self, service: &str, block: Option<(u64, Duration)>) -> Result<(Vec<Instance>, u64)> {
        let mut query = vec![("passing", String::new())];
        let mut timeout = None;
        if let Some((index, wait)) = block {
            query.push(("index", index.to_string()));
            query.push(("wait", format!("{}ms", wait.as_millis())));
            // sextant adds up to wait/16 of jitter before it answers.
            timeout = Some(wait + wait / 16 + self.inner.timeout);
        }
        let response = self
            .send_with(
                Method::GET,
                &["v1", "health", "service", service],
                &query,
                None,
                timeout,
            )
            .await?;
        let index = response.index;
        let entries: Vec<wire::HealthEntry> = response.json()?;
        Ok((entries.into_iter().map(|e| e.into_instance(service)).collect(), index))
    }

    /// Whether any instance of `service` is registered, healthy or not.
    async fn is_registered(&self, service: &str) -> Result<bool> {
        let response = self
            .send(Method::GET, &["v1", "catalog", "service", service], &[], None)
            .await?;
        let list: Vec<serde_json::Value> = response.json()?;
        Ok(!list.is_empty())
    }

    /// One request, retried as [`Retry`] says.
    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        self.send_with(method, path, query, body, None).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<Answer> {
        // `url` drops `.` and `..` segments, and an empty ID would name another endpoint.
        if let Some(bad) = path.iter().find(|s| s.is_empty() || **s == "." || **s == "..") {
            return Err(Error::Invalid {
                what: "ID or name",
                reason: format!("{bad:?} cannot name an instance, check or service"),
            });
        }
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                if value.is_empty() {
                    pairs.append_key_only(key)
                } else {
                    pairs.append_pair(key, value)
                };
            }
        }
        let timeout = timeout.unwrap_or(self.inner.timeout);
        let retry = self.inner.retry;
        let mut attempt = 0;
        loop {
            match self.send_once(method.clone(), &url, body, timeout).await {
                Err(error) if error.is_retryable() && attempt + 1 < retry.attempts => {
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &url::Url,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Answer> {
        let mut request = self.inner.http.request(method, url.clone()).timeout(timeout);
        if let Some(token) = &self.inner.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = |source: reqwest::Error| {
            if source.is_timeout() {
                Error::Timeout {
                    url: url.to_string(),
                    after: timeout,
                }
            } else {
                let mut reason: &dyn std::error::Error = &source;
                while let Some(inner) = reason.source() {
                    reason = inner;
                }
                Error::Unreachable {
                    url: url.to_string(),
                    reason: reason.to_string(),
                    source,
                }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = response.bytes().await.map_err(failed)?;
        if status.is_success() {
            return Ok(Answer {
                url: url.to_string(),
                index,
                body,
            });
        }
        let message = String::from_utf8_lossy(&body).trim().to_string();
        Err(match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Error::Forbidden { message },
            StatusCode::NOT_FOUND => Error::NotFound { message },
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Error::Unavailable {
                status: s.as_u16(),
                message,
            },
            s => Error::Refused {
                status: s.as_u16(),
                message,
            },
        })
    }
}

/// A successful answer: its body and the `X-Consul-Index` it carried.
struct Answer {
    url: String,
    index: u64,
    body: bytes::Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Unexpected {
            url: self.url.clone(),
            reason: format!("not the JSON expected: {e}"),
        })
    }
}
