//! `/v1/health/*`: instances with their checks, filtered by health.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{ApiState, Params, block, consul_json, wire};
use std::sync::Arc;

use crate::model::{Health, Instance, InstanceId};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/health/service/{name}", get(service))
        .route("/v1/health/checks/{name}", get(checks))
        .route("/v1/health/state/{state}", get(state))
        .route("/v1/health/node/{node}", get(node))
}

/// Every check in a state (`passing`, `warning`, `critical`, or `any`), the nodes' own checks
/// included. A blocking query wakes on any change (Traefik and fabio watch `any`).
async fn state(
    State(state): State<ApiState>,
    Path(wanted): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let wanted = match wanted.as_str() {
        "any" => None,
        "passing" => Some(Health::Passing),
        "warning" => Some(Health::Warning),
        "critical" => Some(Health::Critical),
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid check state {other:?}: use passing, warning, critical or any"
            )));
        }
    };
    let params = Params::parse(q);
    block(&state, &params, || state.registry.watch_everything()).await?;
    let index = state.registry.index();
    let status_is = |check: &Value| wanted.is_none_or(|w| check["Status"] == w.as_str());
    let mut list: Vec<Value> = Vec::new();
    for node in state.registry.nodes().iter().filter(|n| params.node_meta_matches(n)) {
        list.extend(wire::node_checks(node).into_iter().filter(status_is));
    }
    for instance in state
        .registry
        .instances()
        .iter()
        .filter(|i| params.node_meta_matches(&i.node))
    {
        for check in instance.checks.iter().filter(|c| wanted.is_none_or(|w| c.status == w)) {
            list.push(wire::check_json(check, instance));
        }
    }
    Ok(consul_json(index, json!(list)))
}

/// Every check of a node: its own, then its services'. Empty for an unknown node, as in Consul.
async fn node(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    block(&state, &Params::parse(q), || state.registry.watch_everything()).await?;
    let index = state.registry.index();
    let Some(node) = state.registry.node(&name) else {
        return Ok(consul_json(index, json!([])));
    };
    let mut list = wire::node_checks(&node);
    for instance in state.registry.node_instances(&node) {
        list.extend(instance.checks.iter().map(|c| wire::check_json(c, &instance)));
    }
    Ok(consul_json(index, json!(list)))
}

/// `?passing` keeps only instances whose every check passes (warning ones are dropped too, as
/// Consul does) and that are not held for flapping; `?tag=` (repeatable) keeps instances carrying every given tag.
async fn service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    block(&state, &params, || state.registry.watch_service(&name)).await?;
    let passing = params.flag("passing");
    let tags: Vec<&str> = params.all("tag").collect();
    let Some(entry) = state.registry.service(&name) else {
        return Ok(consul_json(state.registry.service_index(&name), json!([])));
    };
    let list: Vec<Value> = entry
        .instances
        .iter()
        .filter(|i| !passing || (i.health() == Health::Passing && !entry.is_flapping(&i.id)))
        .filter(|i| tags.iter().all(|t| i.has_tag(t)) && params.node_meta_matches(&i.node))
        .map(|i| wire::health_entry(i, &state.node, entry.is_flapping(&i.id)))
        .collect();
    Ok(consul_json(entry.modify_index, json!(list)))
}

/// The checks of a service's instances. When no service has that name but an instance has that
/// ID, its checks (sextant's extension: the design documents' client asks by instance ID).
async fn checks(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    block(&state, &Params::parse(q), || state.registry.watch_service(&name)).await?;
    let render = |instances: &[Arc<Instance>]| -> Value {
        let list: Vec<Value> = instances
            .iter()
            .flat_map(|i| i.checks.iter().map(|c| wire::check_json(c, i)))
            .collect();
        json!(list)
    };
    if let Some(entry) = state.registry.service(&name) {
        return Ok(consul_json(entry.modify_index, render(&entry.instances)));
    }
    Ok(
        match InstanceId::parse(&name)
            .ok()
            .and_then(|id| state.registry.instance(&id))
        {
            Some(instance) => consul_json(instance.modify_index, render(&[instance])),
            None => consul_json(state.registry.service_index(&name), json!([])),
        },
    )
}
