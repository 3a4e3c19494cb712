//! `/v1/agent/health/service/name/<name>` and `/v1/agent/health/service/id/<id>`: an instance's
//! aggregated health as a status code, for load balancers that poll it (Consul's: 200 passing,
//! 429 warning, 503 critical, 404 unknown), with Consul's body, or the status alone as text
//! with `?format=text`.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiState, Params, wire};
use std::sync::Arc;

use crate::model::{Health, Instance, InstanceId};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/agent/health/service/name/{name}", get(by_name))
        .route("/v1/agent/health/service/id/{id}", get(by_id))
}

fn code(health: Health) -> StatusCode {
    match health {
        Health::Passing => StatusCode::OK,
        Health::Warning => StatusCode::TOO_MANY_REQUESTS,
        Health::Critical => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Consul's `AgentServiceChecksInfo`: the instance, its checks and their worst status.
fn checks_info(instance: &Instance, state: &ApiState) -> Value {
    let checks: Vec<Value> = instance.checks.iter().map(|c| wire::check_json(c, instance)).collect();
    json!({
        "AggregatedStatus": instance.health().as_str(),
        "Service": wire::agent_service(instance, &state.node),
        "Checks": checks,
    })
}

fn answer(status: StatusCode, text: bool, reason: String, body: Value) -> Response {
    if text {
        let plain = HeaderValue::from_static("text/plain; charset=utf-8");
        return (status, [(CONTENT_TYPE, plain)], reason).into_response();
    }
    (status, axum::Json(body)).into_response()
}

/// Every instance of the service: the code and text of the worst, the list of each.
async fn by_name(State(state): State<ApiState>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let text = Params::parse(q).get("format") == Some("text");
    let entry = state.registry.service(&name);
    let local: Vec<&Arc<Instance>> = entry
        .iter()
        .flat_map(|e| e.instances.iter())
        .filter(|i| i.node.local)
        .collect();
    if local.is_empty() {
        let reason = format!("ServiceName {name} Not Found");
        return answer(StatusCode::NOT_FOUND, text, reason, json!([]));
    }
    let worst = local.iter().map(|i| i.health()).max().unwrap_or(Health::Passing);
    let list: Vec<Value> = local.iter().map(|i| checks_info(i, &state)).collect();
    answer(code(worst), text, worst.as_str().to_owned(), json!(list))
}

async fn by_id(State(state): State<ApiState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let text = Params::parse(q).get("format") == Some("text");
    let instance = InstanceId::parse(&id)
        .ok()
        .and_then(|id| super::agent::local_instance(&state, &id));
    let Some(instance) = instance else {
        let reason = format!("ServiceId {id} not found");
        let body = json!({"AggregatedStatus": "critical", "Service": null, "Checks": null});
        return answer(StatusCode::NOT_FOUND, text, reason, body);
    };
    let health = instance.health();
    answer(
        code(health),
        text,
        health.as_str().to_owned(),
        checks_info(&instance, &state),
    )
}
