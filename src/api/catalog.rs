//! `/v1/catalog/*`: the services and their instances, whatever their health.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiState, Params, consul_json, wire};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
}

async fn services(State(state): State<ApiState>) -> Response {
    let map: BTreeMap<String, Vec<String>> = state
        .registry
        .services()
        .iter()
        .map(|s| (s.name.to_string(), s.tags()))
        .collect();
    consul_json(state.registry.index(), json!(map))
}

async fn service(State(state): State<ApiState>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let params = Params::parse(q);
    let tags: Vec<&str> = params.all("tag").collect();
    let Some(entry) = state.registry.service(&name) else {
        return consul_json(state.registry.index(), json!([]));
    };
    let list: Vec<Value> = entry
        .instances
        .iter()
        .filter(|i| tags.iter().all(|t| i.has_tag(t)))
        .map(|i| wire::catalog_service(i, &state.node))
        .collect();
    consul_json(entry.modify_index, json!(list))
}
