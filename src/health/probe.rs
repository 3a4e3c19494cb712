//! Running one HTTP or TCP probe: Consul's rules for what counts as passing, and a bounded output.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderName, HeaderValue, USER_AGENT};
use tokio::net::TcpStream;

use crate::model::{CheckKind, Health, HttpCheck, MAX_CHECK_OUTPUT, format_go_duration};

/// Runs probes. Holds the pooled HTTP clients, so connections to an endpoint are reused from one
/// interval to the next.
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

    /// The result of one run of a probed check; `None` for TTL checks, which are not probed.
    pub async fn probe(&self, kind: &CheckKind) -> Option<(Health, String)> {
        match kind {
            CheckKind::Http(http) => Some(self.http(http).await),
            CheckKind::Tcp { target, timeout, .. } => Some(tcp(target, *timeout).await),
            CheckKind::Ttl { .. } => None,
        }
    }

    /// 2xx is passing, 429 (Too Many Requests) warning, anything else, a timeout or a connection
    /// error critical. The output is the status line and the start of the body, as Consul's.
    async fn http(&self, check: &HttpCheck) -> (Health, String) {
        let client = if check.tls_skip_verify {
            &self.unverified
        } else {
            &self.verified
        };
        let what = format!("HTTP {} {}", check.method, check.url);
        let method = match reqwest::Method::from_bytes(check.method.as_bytes()) {
            Ok(method) => method,
            Err(e) => return (Health::Critical, format!("{what}: {e}")),
        };
        let mut request = client.request(method, &check.url).timeout(check.timeout);
        let mut has = (false, false);
        for (name, values) in &check.header {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return (Health::Critical, format!("{what}: invalid header name {name:?}"));
            };
            has.0 |= name == USER_AGENT;
            has.1 |= name == ACCEPT;
            for value in values {
                let Ok(value) = HeaderValue::from_str(value) else {
                    return (Health::Critical, format!("{what}: invalid value for header {name}"));
                };
                request = request.header(name.clone(), value);
            }
        }
        if !has.0 {
            request = request.header(USER_AGENT, "Consul Health Check");
        }
        if !has.1 {
            request = request.header(ACCEPT, "text/plain, text/*, */*");
        }
        if !check.body.is_empty() {
            request = request.body(check.body.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return (Health::Critical, format!("{what}: {}", describe(&e, check.timeout))),
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
                Err(e) => return (Health::Critical, format!("{what}: {}", describe(&e, check.timeout))),
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
