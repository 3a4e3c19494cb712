//! Running one HTTP, TCP or gRPC probe ([`super::grpc`]): Consul's rules for what counts as
//! passing, and a bounded output.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio::net::TcpStream;

use super::grpc::GrpcProbe;
use crate::model::{CheckKind, Health, HttpCheck, MAX_CHECK_OUTPUT, format_go_duration};

/// Prepares probes. Holds the pooled HTTP clients, so connections to an endpoint are reused from
/// one interval to the next.
pub struct Prober {
    verified: reqwest::Client,
    /// For checks with `TLSSkipVerify`.
    unverified: reqwest::Client,
}

impl Prober {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = |skip_verify: bool| {
            reqwest::Client::builder()
                // A probe measures the endpoint, not a proxy in front of it.
                .no_proxy()
                // Longer than any sensible interval, so an endpoint's connection survives between probes.
                .pool_idle_timeout(Duration::from_secs(120))
                .danger_accept_invalid_certs(skip_verify)
                .build()
        };
        Ok(Self {
            verified: client(false)?,
            unverified: client(true)?,
        })
    }

    /// Works out once what every run of a check sends: the client, method, URL and headers.
    pub fn prepare(&self, kind: &CheckKind) -> Probe {
        match kind {
            CheckKind::Http(http) => Probe::Http(Box::new(self.prepare_http(http))),
            CheckKind::Tcp { target, timeout, .. } => Probe::Tcp {
                target: target.clone(),
                timeout: *timeout,
            },
            CheckKind::Grpc {
                target,
                service,
                tls,
                timeout,
                ..
            } => Probe::Grpc(Box::new(GrpcProbe::new(target, service, *tls, *timeout))),
            CheckKind::Ttl { .. } | CheckKind::Maintenance | CheckKind::External => Probe::None,
        }
    }

    fn prepare_http(&self, check: &HttpCheck) -> HttpProbe {
        let what = format!("HTTP {} {}", check.method, check.url);
        let client = if check.tls_skip_verify {
            &self.unverified
        } else {
            &self.verified
        };
        let request = (|| {
            let method = reqwest::Method::from_bytes(check.method.as_bytes()).map_err(|e| e.to_string())?;
            let url = reqwest::Url::parse(&check.url).map_err(|e| e.to_string())?;
            let mut headers = HeaderMap::new();
            for (name, values) in &check.header {
                let name =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
                for value in values {
                    let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
                    headers.append(name.clone(), value);
                }
            }
            if !headers.contains_key(USER_AGENT) {
                headers.insert(USER_AGENT, HeaderValue::from_static("Consul Health Check"));
            }
            if !headers.contains_key(ACCEPT) {
                headers.insert(ACCEPT, HeaderValue::from_static("text/plain, text/*, */*"));
            }
            Ok(HttpRequest {
                client: client.clone(),
                method,
                url,
                headers,
                body: check.body.clone(),
            })
        })();
        HttpProbe {
            what,
            request,
            timeout: check.timeout,
        }
    }
}

/// A check's probe, prepared once ([`Prober::prepare`]) and run on every interval.
pub enum Probe {
    Http(Box<HttpProbe>),
    Tcp {
        target: String,
        timeout: Duration,
    },
    Grpc(Box<GrpcProbe>),
    /// TTL checks are pushed by their service, not probed.
    None,
}

pub struct HttpProbe {
    /// `HTTP GET <url>`: how every output starts.
    what: String,
    /// The request, or why none can be built (then every run reports it).
    request: Result<HttpRequest, String>,
    timeout: Duration,
}

struct HttpRequest {
    /// A handle on the shared, pooled client.
    client: reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: String,
}

impl Probe {
    /// The kind, as the metrics label it; `None` for TTL checks.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Self::Http(_) => Some("http"),
            Self::Tcp { .. } => Some("tcp"),
            Self::Grpc(_) => Some("grpc"),
            Self::None => None,
        }
    }

    /// The result of one run; `None` for TTL checks.
    pub async fn run(&self) -> Option<(Health, String)> {
        match self {
            Self::Http(http) => Some(http.run().await),
            Self::Tcp { target, timeout } => Some(tcp(target, *timeout).await),
            Self::Grpc(grpc) => Some(grpc.run().await),
            Self::None => None,
        }
    }
}

impl HttpProbe {
    /// 2xx is passing, 429 (Too Many Requests) warning, anything else, a timeout or a connection
    /// error critical. The output is the status line and the start of the body, as Consul's.
    async fn run(&self) -> (Health, String) {
        let what = &self.what;
        let r = match &self.request {
            Ok(request) => request,
            Err(e) => return (Health::Critical, format!("{what}: {e}")),
        };
        let mut request = r
            .client
            .request(r.method.clone(), r.url.clone())
            .headers(r.headers.clone())
            .timeout(self.timeout);
        if !r.body.is_empty() {
            request = request.body(r.body.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return (Health::Critical, format!("{what}: {}", describe(&e, self.timeout))),
        };
        let status = response.status();
        let health = match status.as_u16() {
            200..=299 => Health::Passing,
            429 => Health::Warning,
            _ => Health::Critical,
        };
        let mut output = format!("{what}: {status} Output: ");
        // Only the start of the body is read, so the output fits the limit: a large or endless
        // body cannot hold the probe or grow the registry. The request timeout covers the body too.
        let room = MAX_CHECK_OUTPUT.saturating_sub(output.len());
        let mut body = Vec::new();
        while body.len() < room {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(room - body.len())]),
                Ok(None) => break,
                Err(e) => return (Health::Critical, format!("{what}: {}", describe(&e, self.timeout))),
            }
        }
        if body.is_empty() {
            output.truncate(output.len() - " Output: ".len());
        } else {
            // Lossy: a body need not be UTF-8, and the cut may split a character (the registry
            // cuts anything that grew past the limit).
            output.push_str(&String::from_utf8_lossy(&body));
        }
        (health, output)
    }
}

/// A connection that opens is passing; a refusal, an unreachable host or a timeout is critical.
async fn tcp(target: &str, timeout: Duration) -> (Health, String) {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(_stream)) => (Health::Passing, format!("TCP connect {target}: Success")),
        Ok(Err(e)) => (Health::Critical, format!("dial tcp {target}: {e}")),
        Err(_) => (
            Health::Critical,
            format!("dial tcp {target}: timed out after {}", format_go_duration(timeout)),
        ),
    }
}

/// reqwest's message and its causes, which say what actually failed ("Connection refused").
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", format_go_duration(timeout));
    }
    // The top message repeats the URL; the causes say what failed.
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}
