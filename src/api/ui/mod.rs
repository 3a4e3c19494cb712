//! The web dashboard at `/ui/`: its embedded files ([`assets`]), and the two reads it needs
//! beyond Consul's API: every service with its health counts (Consul's UI endpoint, a blocking
//! query that wakes on any change), and the services' last hour for its charts. An instance's
//! checks come from `/v1/health/service/<name>`, as in Consul's UI.

mod assets;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::{ApiState, Params, block, consul_json, wire};

/// The most services one history request may name (a page shows fewer).
const MAX_HISTORY_NAMES: usize = 200;

/// The dashboard's files: public, as they hold no data (the page asks for the token, and every
/// read it makes carries it).
pub fn files() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(assets::redirect))
        .route("/ui/", get(assets::page))
        .route("/ui/{file}", get(assets::file))
}

/// The reads behind the dashboard, under the API's rules (ACL included).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/internal/ui/services", get(services))
        .route("/v1/internal/ui/history", get(history))
}

/// Every service with its instances' and checks' health counts; with `?index=`, waits for any
/// change, health included.
async fn services(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    block(&state, &Params::parse(q), || state.registry.watch_everything()).await?;
    let index = state.registry.index();
    let list: Vec<Value> = state
        .registry
        .services()
        .iter()
        .map(|service| wire::ui_service_summary(service, &state.node.datacenter))
        .collect();
    Ok(consul_json(index, json!(list)))
}

/// The last hour of each service named by `?name=` (repeatable): DNS queries per second and
/// instances by health, a point per step, the last one the step in progress.
async fn history(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    let names: Vec<&str> = params.all("name").collect();
    if names.len() > MAX_HISTORY_NAMES {
        return Err(ApiError::BadRequest(format!(
            "too many services: {} names, at most {MAX_HISTORY_NAMES} a request",
            names.len()
        )));
    }
    let mut services = Map::new();
    for (name, history) in state.history.of_each(&names) {
        services.insert(name.to_owned(), json!(history));
    }
    Ok(consul_json(
        state.registry.index(),
        json!({
            "StepSeconds": crate::history::STEP.as_secs(),
            "Services": services,
        }),
    ))
}
