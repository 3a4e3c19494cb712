//! `/v1/health/*`: instances with their checks, filtered by health.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiState, Params, consul_json, wire};
use std::sync::Arc;

use crate::model::{Health, Instance, InstanceId};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/health/service/{name}", get(service))
        .route("/v1/health/checks/{name}", get(checks))
}

/// `?passing` keeps only instances whose every check passes (warning ones are dropped too, as
/// Consul does); `?tag=` (repeatable) keeps instances carrying every given tag.
async fn service(State(state): State<ApiState>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let params = Params::parse(q);
    let passing = params.flag("passing");
    let tags: Vec<&str> = params.all("tag").collect();
    let Some(entry) = state.registry.service(&name) else {
        return consul_json(state.registry.index(), json!([]));
    };
    let list: Vec<Value> = entry
        .instances
        .iter()
        .filter(|i| !passing || i.health() == Health::Passing)
        .filter(|i| tags.iter().all(|t| i.has_tag(t)))
        .map(|i| wire::health_entry(i, &state.node, 1))
        .collect();
    consul_json(entry.modify_index, json!(list))
}

/// The checks of a service's instances. When no service has that name but an instance has that
/// ID, its checks (sextant's extension: the design documents' client asks by instance ID).
async fn checks(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    let render = |instances: &[Arc<Instance>]| -> Value {
        let list: Vec<Value> = instances
            .iter()
            .flat_map(|i| i.checks.iter().map(|c| wire::check_json(c, i, &state.node)))
            .collect();
        json!(list)
    };
    if let Some(entry) = state.registry.service(&name) {
        return consul_json(entry.modify_index, render(&entry.instances));
    }
    match InstanceId::parse(&name)
        .ok()
        .and_then(|id| state.registry.instance(&id))
    {
        Some(instance) => consul_json(instance.modify_index, render(&[instance])),
        None => consul_json(state.registry.index(), json!([])),
    }
}
