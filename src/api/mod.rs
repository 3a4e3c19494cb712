//! The Consul-compatible HTTP API: an axum router over the registry.

pub mod acl;
mod agent;
mod agent_health;
mod catalog;
pub mod error;
mod health;
mod kv;
mod metrics;
pub mod serve;
mod status;
pub mod tls;
mod ui;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::registry::{Registry, Watch};
pub use wire::NodeInfo;

/// Request bodies above this are refused with 413 (Consul's registrations are a few kB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A write that takes longer than this (a slow client trickling its body) is cut off. Reads are
/// not: a blocking query may rightly wait up to `MAX_WAIT`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A blocking query's `wait` when none is given, and the most it may ask for (Consul's).
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub node: Arc<NodeInfo>,
    /// What `/v1/status/leader` reports: this server's HTTP address.
    pub leader: String,
    /// Who may call: the token, if one is configured.
    pub acl: Arc<acl::Acl>,
    /// Cancelled when the server stops: blocking queries answer at once instead of holding the
    /// graceful shutdown for up to their wait.
    pub stopping: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each service's last hour, for the dashboard.
    pub history: Arc<crate::history::History>,
    /// Blocking queries waiting at once; more get a 503.
    pub max_blocking_queries: usize,
}

pub fn router(state: ApiState) -> Router {
    let writes = agent::routes()
        .merge(catalog::write_routes())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let api = Router::new()
        .merge(writes)
        .merge(agent_health::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .merge(kv::routes())
        .merge(status::routes())
        .merge(metrics::routes())
        .merge(ui::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), consistency_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_unmet_parameters,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), acl::enforce));
    // The dashboard's files are outside the ACL: a browser cannot send a token with the page's
    // own request, and the files hold no data.
    api.merge(ui::files())
        .layer(axum::middleware::from_fn(log_failures))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// Counts each request by its route's pattern (`/v1/agent/service/{id}`: IDs do not become
/// labels), method and status.
async fn count_requests(
    axum::extract::State(state): axum::extract::State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = crate::metrics::HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    response
}

/// Logs an internal error with the request it failed, once, where the client got only its kind;
/// and a line for each write refused (4xx) and each request refused for a bound or an outage
/// (503), with the reason its client was given: ten a second at most, the next line written
/// counting those left out. Paths and reasons are quoted (`?`): text from a client cannot start a
/// log line of its own.
async fn log_failures(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    static REFUSALS: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new(10);
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if let Some(error::InternalDetail(detail)) = response.extensions().get() {
        tracing::error!(%method, path = ?path, error = %detail, "request failed");
    } else if ((status.is_client_error() && !method.is_safe()) || status == StatusCode::SERVICE_UNAVAILABLE)
        && let Some(left_out) = REFUSALS.admit()
    {
        let reason = response
            .extensions()
            .get::<error::Refusal>()
            .map_or("", |r| r.0.as_str());
        let what = if method.is_safe() {
            "request refused"
        } else {
            "write refused"
        };
        tracing::warn!(%method, path = ?path, status = status.as_u16(), reason = ?reason, left_out, "{what}");
    }
    response
}

/// Query parameters are ignored when sextant has nothing to do for them (`stale`, `consistent`,
/// `cached`, `near`: always consistent, nodes in one place), as Consul ignores what it does not
/// know; `node-meta` is honoured where Consul honours it (the catalog's and health's lists). Two would change the answer if honoured, so rather than answer more than was asked
/// they are refused: `filter` (sextant does not evaluate filter expressions) and a `dc` other than
/// this one (Consul: "No path to datacenter").
async fn refuse_unmet_parameters(
    axum::extract::State(state): axum::extract::State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let params = Params::parse(request.uri().query().map(str::to_owned));
    if params.get("filter").is_some_and(|f| !f.trim().is_empty()) {
        return error::ApiError::BadRequest(
            "filter expressions are not supported by sextant: select with ?tag= or ?passing, or filter in the client"
                .into(),
        )
        .into_response();
    }
    if let Some(dc) = params
        .get("dc")
        .filter(|dc| !dc.is_empty() && *dc != state.node.datacenter)
    {
        return error::ApiError::BadRequest(format!(
            "No path to datacenter {dc:?}: this server serves {:?} only",
            state.node.datacenter
        ))
        .into_response();
    }
    next.run(request).await
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path()))
}

/// A JSON answer with its index (the consistency headers are added by [`consistency_headers`]).
fn consul_json(index: u64, body: Value) -> Response {
    indexed(index, Json(body))
}

/// Any answer with its index (`X-Consul-Index`).
fn indexed(index: u64, answer: impl IntoResponse) -> Response {
    let mut response = answer.into_response();
    response
        .headers_mut()
        .insert("X-Consul-Index", HeaderValue::from(index));
    response
}

/// Consul's consistency headers on every read: with etcd out of reach, what is read is the last
/// registry seen, and the headers say so (no known leader, and how long since the last contact).
async fn consistency_headers(
    axum::extract::State(state): axum::extract::State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if headers.contains_key("X-Consul-Index") {
        let staleness = state.registry.staleness();
        let known = if staleness.is_some() { "false" } else { "true" };
        let millis = staleness.map_or(0, |s| u64::try_from(s.as_millis()).unwrap_or(u64::MAX));
        headers.insert("X-Consul-KnownLeader", HeaderValue::from_static(known));
        headers.insert("X-Consul-LastContact", HeaderValue::from(millis));
    }
    response
}

/// Consul's blocking query: with `?index=N` (N > 0) it returns once what `subscribe` watches
/// holds an index past N, or when `?wait=` (default 5 min, at most 10 min, plus up to 1/16 of it
/// at random so that watchers spread out) runs out. Without `index` it returns at once, and
/// subscribes to nothing: a plain read leaves no channel behind. Waiting costs nothing: the task
/// sleeps on the channel of what it watches. A stopping server answers at once. Returns the
/// index the watch held last, when it waited.
async fn block<'a>(
    state: &ApiState,
    params: &Params,
    subscribe: impl FnOnce() -> Watch<'a>,
) -> Result<Option<u64>, error::ApiError> {
    let Some(index) = params.get("index") else {
        return Ok(None);
    };
    let min: u64 = index
        .parse()
        .map_err(|_| error::ApiError::BadRequest(format!("Invalid index {index:?}: must be a number")))?;
    let wait = match params.get("wait") {
        None => DEFAULT_WAIT,
        Some(text) => crate::model::parse_go_duration(text)
            .map_err(|e| error::ApiError::BadRequest(format!("Invalid wait time: {e}")))?,
    }
    .min(MAX_WAIT);
    if min == 0 {
        return Ok(None);
    }
    if usize::try_from(state.metrics.blocking_queries.get()).unwrap_or(0) >= state.max_blocking_queries {
        return Err(error::ApiError::Unavailable(format!(
            "{} blocking queries are waiting already, as many as this server takes (--http-max-blocking-queries); \
             retry later, or read without ?index",
            state.max_blocking_queries
        )));
    }
    let mut watch = subscribe();
    let changes = watch.changes();
    let _waiting = Waiting::start(&state.metrics.blocking_queries);
    let jitter = Duration::from_nanos(rand::random_range(0..=wait.as_nanos() as u64 / 16));
    let deadline = tokio::time::Instant::now() + wait + jitter;
    while *changes.borrow_and_update() <= min {
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, changes.changed()) => match changed {
                Ok(Ok(())) => {}
                _ => break, // timed out (or the registry is gone): answer with what is there
            },
            () = state.stopping.cancelled() => break,
        }
    }
    Ok(Some(*changes.borrow()))
}

/// Query-string parameters as Consul reads them: repeated keys, and flags that are present
/// without a value (`?passing`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Self {
        let raw = raw.unwrap_or_default();
        Self(form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    /// Present and not explicitly false.
    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !matches!(v, "false" | "0"))
    }

    /// Whether `node` carries every `?node-meta=key:value` asked for (Consul's filter on the
    /// node's metadata; consul-esm finds its nodes with `external-node:true`).
    fn node_meta_matches(&self, node: &crate::model::Node) -> bool {
        self.all("node-meta").all(|pair| {
            let (key, value) = pair.split_once(':').unwrap_or((pair, ""));
            node.meta.iter().any(|(k, v)| &**k == key && &**v == value)
        })
    }
}

/// A blocking query counted as waiting while this lives.
struct Waiting<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Waiting<'a> {
    fn start(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
