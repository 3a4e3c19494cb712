//! `GET /metrics`, and `/v1/agent/metrics?format=prometheus` where Consul's tools look: every
//! metric in Prometheus' text format ([`crate::metrics`]).

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;
use super::{ApiState, Params};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/agent/metrics", get(agent_metrics))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

/// Consul answers JSON here unless `?format=prometheus`; sextant has only Prometheus' format.
async fn agent_metrics(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    match Params::parse(q).get("format") {
        Some("prometheus") => Ok(metrics(State(state)).await),
        _ => Err(ApiError::BadRequest(
            "sextant serves its metrics in Prometheus' text format only: ask /v1/agent/metrics?format=prometheus, or /metrics".into(),
        )),
    }
}
