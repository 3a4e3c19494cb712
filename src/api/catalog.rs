//! `/v1/catalog/*`: the services and their instances, whatever their health.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{ApiState, Params, block, consul_json, wire};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/datacenters", get(datacenters))
}

/// The datacenters this server knows: its own (Consul lists every federated one).
async fn datacenters(State(state): State<ApiState>) -> Response {
    axum::Json(json!([state.node.datacenter])).into_response()
}

/// The one node, this server. Blocking queries on it wake with the catalog (harmless, as Consul
/// allows spurious wake-ups), so a client watching nodes does not spin.
async fn nodes(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    block(&state, &Params::parse(q), || state.registry.watch_catalog()).await?;
    Ok(consul_json(
        state.registry.catalog_index(),
        json!([wire::catalog_node(&state.node)]),
    ))
}

async fn services(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    block(&state, &Params::parse(q), || state.registry.watch_catalog()).await?;
    let map: BTreeMap<String, Vec<String>> = state
        .registry
        .services()
        .iter()
        .map(|s| (s.name.to_string(), s.tags()))
        .collect();
    Ok(consul_json(state.registry.catalog_index(), json!(map)))
}

async fn service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    block(&state, &params, || state.registry.watch_service(&name)).await?;
    let tags: Vec<&str> = params.all("tag").collect();
    let Some(entry) = state.registry.service(&name) else {
        return Ok(consul_json(state.registry.service_index(&name), json!([])));
    };
    let list: Vec<Value> = entry
        .instances
        .iter()
        .filter(|i| tags.iter().all(|t| i.has_tag(t)))
        .map(|i| wire::catalog_service(i, &state.node))
        .collect();
    Ok(consul_json(entry.modify_index, json!(list)))
}
