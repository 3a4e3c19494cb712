//! `/v1/status/*`: sextant is a single server, always its own leader.

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

async fn leader(State(state): State<ApiState>) -> impl IntoResponse {
    Json(state.leader.clone())
}

async fn peers(State(state): State<ApiState>) -> impl IntoResponse {
    Json(vec![state.leader.clone()])
}
