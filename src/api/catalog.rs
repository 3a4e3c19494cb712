//! `/v1/catalog/*`: the services and their instances, whatever their health.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::error::ApiError;
use super::{ApiState, Params, block, consul_json, wire};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/node/{node}", get(node))
        .route("/v1/catalog/datacenters", get(datacenters))
}

/// The catalog's writes (under the write timeout, with the agent's).
pub fn write_routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
}

/// A third party registers an external node, perhaps a service on it, and checks with the
/// status it gives them. `true`, as Consul answers, once every change is durable and served.
async fn register(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let registration = wire::parse_catalog_registration(&wire::parse_json(&body)?)?;
    let node = registration.node.name.clone();
    let service = registration.service.as_ref().map(|s| s.id.clone());
    state.registry.catalog_register(registration)?.durable().await?;
    tracing::info!(node = %node, service = ?service.as_ref().map(|s| s.as_str()), "catalog registration");
    Ok(axum::Json(json!(true)).into_response())
}

/// Takes a service, a check, or a whole external node off. `true`, as Consul answers.
async fn deregister(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let (node, removal) = wire::parse_catalog_deregistration(&wire::parse_json(&body)?)?;
    state
        .registry
        .catalog_deregister(&node, removal.clone())?
        .durable()
        .await?;
    tracing::info!(node = %node, removal = ?removal, "catalog deregistration");
    Ok(axum::Json(json!(true)).into_response())
}

/// A node and its services (`{Node, Services}`), or `null` for an unknown node, as Consul.
async fn node(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    block(&state, &Params::parse(q), || state.registry.watch_catalog()).await?;
    let index = state.registry.catalog_index();
    let Some(node) = state.registry.node(&name) else {
        return Ok(consul_json(index, Value::Null));
    };
    let services: serde_json::Map<String, Value> = state
        .registry
        .node_instances(&node)
        .iter()
        .map(|i| (i.id.to_string(), wire::agent_service(i, &state.node)))
        .collect();
    let body = json!({"Node": wire::catalog_node(&node, &state.node.datacenter), "Services": services});
    Ok(consul_json(index, body))
}

/// The datacenters this server knows: its own (Consul lists every federated one).
async fn datacenters(State(state): State<ApiState>) -> Response {
    axum::Json(json!([state.node.datacenter])).into_response()
}

/// This server's node and the external ones. Blocking queries wake with the catalog (node
/// writes move it too).
async fn nodes(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    block(&state, &params, || state.registry.watch_catalog()).await?;
    let datacenter = &state.node.datacenter;
    let list: Vec<Value> = state
        .registry
        .nodes()
        .iter()
        .filter(|n| params.node_meta_matches(n))
        .map(|n| wire::catalog_node(n, datacenter))
        .collect();
    Ok(consul_json(state.registry.catalog_index(), json!(list)))
}

/// Each service with the union of its instances' tags; with `?node-meta=`, the services (and
/// tags) of the instances on matching nodes.
async fn services(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    block(&state, &params, || state.registry.watch_catalog()).await?;
    let map: BTreeMap<String, Vec<String>> = state
        .registry
        .services()
        .iter()
        .filter_map(|s| {
            if params.get("node-meta").is_none() {
                return Some((s.name.to_string(), s.tags()));
            }
            let on: Vec<_> = s
                .instances
                .iter()
                .filter(|i| params.node_meta_matches(&i.node))
                .collect();
            let mut tags: Vec<String> = on.iter().flat_map(|i| i.tags.iter().map(|t| t.to_string())).collect();
            tags.sort();
            tags.dedup();
            (!on.is_empty()).then(|| (s.name.to_string(), tags))
        })
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
        .filter(|i| tags.iter().all(|t| i.has_tag(t)) && params.node_meta_matches(&i.node))
        .map(|i| wire::catalog_service(i, &state.node.datacenter))
        .collect();
    Ok(consul_json(entry.modify_index, json!(list)))
}
