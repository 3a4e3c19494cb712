//! The Consul-compatible HTTP API: an axum router over the registry.

mod agent;
mod catalog;
pub mod error;
mod health;
mod status;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::Value;
use tower_http::timeout::TimeoutLayer;

use crate::registry::Registry;
pub use wire::NodeInfo;

/// Request bodies above this are refused with 413 (Consul's registrations are a few kB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A request that takes longer than this (a slow client trickling its body) is cut off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub node: Arc<NodeInfo>,
    /// What `/v1/status/leader` reports: this server's HTTP address.
    pub leader: String,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(agent::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .merge(status::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path()))
}

/// A JSON answer with Consul's consistency headers.
fn consul_json(index: u64, body: Value) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert("X-Consul-Index", HeaderValue::from(index));
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    response
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
}
