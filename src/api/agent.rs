//! `/v1/agent/*`: registering and deregistering instances, TTL check updates, agent info.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::error::ApiError;
use super::{ApiState, Params, consul_json, wire};
use std::sync::Arc;

use crate::model::{CheckId, Health, Instance, InstanceId};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/service/maintenance/{id}", put(maintenance))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/pass/{id}", put(pass))
        .route("/v1/agent/check/warn/{id}", put(warn))
        .route("/v1/agent/check/fail/{id}", put(fail))
        .route("/v1/agent/check/update/{id}", put(update))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route("/v1/agent/self", get(agent_self))
}

async fn register(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let instance = wire::parse_registration(&wire::parse_json(&body)?, &state.registry.local_node())?;
    let (id, service) = (instance.id.clone(), instance.service.clone());
    let index = state.registry.register(instance)?.durable().await?;
    tracing::info!(service = %service, instance = %id, index, "registered");
    Ok(().into_response())
}

async fn deregister(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::NotFound(format!(
            "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
        ))
    };
    let parsed = InstanceId::parse(&id).map_err(|_| unknown())?;
    local_instance(&state, &parsed).ok_or_else(unknown)?;
    let index = state
        .registry
        .deregister(&parsed)?
        .ok_or_else(unknown)?
        .durable()
        .await?;
    tracing::info!(instance = %id, index, "deregistered");
    Ok(().into_response())
}

/// An instance registered on this server's node: the agent endpoints see no other (an
/// external node's services are the catalog's).
pub(super) fn local_instance(state: &ApiState, id: &InstanceId) -> Option<Arc<Instance>> {
    state.registry.instance(id).filter(|i| i.node.local)
}

/// `?enable=` read as Consul does, or its error.
fn enable_param(params: &Params) -> Result<bool, ApiError> {
    let raw = params
        .get("enable")
        .ok_or_else(|| ApiError::BadRequest("Missing value for enable".into()))?;
    go_bool(raw).ok_or_else(|| ApiError::BadRequest(format!("Invalid value for enable: {raw:?}")))
}

/// `?enable=true&reason=…` puts this server's node into maintenance (Consul's critical
/// `_node_maintenance` check: every service registered here leaves DNS); `?enable=false` takes
/// it out.
async fn node_maintenance(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    let enable = enable_param(&params)?;
    let reason = enable.then(|| params.get("reason").unwrap_or(""));
    state.registry.set_node_maintenance(reason)?.durable().await?;
    Ok(().into_response())
}

/// Go's `strconv.ParseBool`, which Consul reads `enable` with.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `?enable=true&reason=…` puts the instance into maintenance (a critical
/// `_service_maintenance:<id>` check); `?enable=false` takes it out.
async fn maintenance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q);
    let enable = enable_param(&params)?;
    let unknown = || ApiError::NotFound(format!("No service registered with ID {id:?}"));
    let parsed = InstanceId::parse(&id).map_err(|_| unknown())?;
    local_instance(&state, &parsed).ok_or_else(unknown)?;
    let reason = enable.then(|| params.get("reason").unwrap_or(""));
    state
        .registry
        .set_maintenance(&parsed, reason)?
        .ok_or_else(unknown)?
        .durable()
        .await?;
    Ok(().into_response())
}

async fn services(State(state): State<ApiState>) -> Response {
    let map: BTreeMap<&str, Value> = BTreeMap::new();
    let instances = state.registry.instances();
    let mut map = map;
    for instance in instances.iter().filter(|i| i.node.local) {
        map.insert(instance.id.as_str(), wire::agent_service(instance, &state.node));
    }
    consul_json(state.registry.index(), json!(map))
}

async fn service(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let instance = InstanceId::parse(&id)
        .ok()
        .and_then(|id| local_instance(&state, &id))
        .ok_or_else(|| ApiError::NotFound(format!("unknown service ID: {id}")))?;
    let mut body = wire::agent_service(&instance, &state.node);
    if let Value::Object(map) = &mut body {
        map.insert("ContentHash".into(), json!(format!("{:016x}", instance.modify_index)));
    }
    Ok(consul_json(instance.modify_index, body))
}

async fn checks(State(state): State<ApiState>) -> Response {
    let mut map = BTreeMap::new();
    let local = state.registry.local_node();
    for check in wire::node_checks(&local).into_iter().skip(1) {
        // (after serfHealth, which Consul's agent does not list)
        map.insert(check["CheckID"].as_str().unwrap_or_default().to_owned(), check);
    }
    for instance in state.registry.instances().iter().filter(|i| i.node.local) {
        for check in &instance.checks {
            map.insert(check.spec.id.to_string(), wire::check_json(check, instance));
        }
    }
    consul_json(state.registry.index(), json!(map))
}

/// A check added to a registered instance (`ServiceID`), or replacing one of the same ID.
async fn register_check(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let registry = &state.registry;
    let service_of = |id: &InstanceId| local_instance(&state, id).map(|i| i.service.clone());
    let (instance, spec) = wire::parse_agent_check(&wire::parse_json(&body)?, service_of)?;
    let check = spec.id.clone();
    let Some(instance) = instance else {
        // A check of this server's node: every service here is critical while it is.
        registry.add_node_check(spec)?.durable().await?;
        tracing::info!(check = %check, "node check registered");
        return Ok(().into_response());
    };
    let unknown = || ApiError::BadRequest(format!("ServiceID {:?} does not exist", instance.as_str()));
    registry
        .add_check(&instance, spec)?
        .ok_or_else(unknown)?
        .durable()
        .await?;
    tracing::info!(instance = %instance, check = %check, "check registered");
    Ok(().into_response())
}

async fn deregister_check(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::NotFound(format!(
            "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
        ))
    };
    let check = CheckId::parse(&id).map_err(|_| unknown())?;
    state
        .registry
        .remove_check(&check)?
        .ok_or_else(unknown)?
        .durable()
        .await?;
    tracing::info!(check = %id, "check deregistered");
    Ok(().into_response())
}

async fn set_status(state: &ApiState, id: &str, status: Health, output: &str) -> Result<Response, ApiError> {
    let check = CheckId::parse(id).map_err(|e| ApiError::field("check ID", e))?;
    state.registry.ttl_update(&check, status, output)?.durable().await?;
    Ok(().into_response())
}

async fn pass(State(s): State<ApiState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    set_status(&s, &id, Health::Passing, Params::parse(q).get("note").unwrap_or("")).await
}

async fn warn(State(s): State<ApiState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    set_status(&s, &id, Health::Warning, Params::parse(q).get("note").unwrap_or("")).await
}

async fn fail(State(s): State<ApiState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    set_status(&s, &id, Health::Critical, Params::parse(q).get("note").unwrap_or("")).await
}

async fn update(State(s): State<ApiState>, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let (status, output) = wire::parse_check_update(&wire::parse_json(&body)?)?;
    set_status(&s, &id, status, &output).await
}

async fn agent_self(State(state): State<ApiState>) -> Response {
    let node = &state.node;
    let body = json!({
        "Config": {
            "Datacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Server": true,
            "Version": env!("CARGO_PKG_VERSION"),
            "Revision": "sextant",
        },
        "Member": {"Name": node.name, "Addr": node.address, "Port": 8301, "Status": 1, "Tags": {"dc": node.datacenter, "role": "consul"}},
        "Meta": {},
    });
    consul_json(state.registry.index(), body)
}
