//! `/v1/status/*`: each sextant server is its own leader (with etcd, while it can reach it).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, response::IntoResponse};

use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
}

/// Empty while etcd is out of reach, as Consul's is without a leader: what this server serves
/// may be stale.
async fn leader(State(state): State<ApiState>) -> impl IntoResponse {
    match state.registry.staleness() {
        Some(_) => Json(String::new()),
        None => Json(state.leader.clone()),
    }
}

async fn peers(State(state): State<ApiState>) -> impl IntoResponse {
    Json(vec![state.leader.clone()])
}
