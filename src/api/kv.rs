//! `/v1/kv/<key>`: Consul's key/value store. `GET` (`?recurse`, `?keys` with `?separator`,
//! `?raw`, blocking on the key or prefix), `PUT` (the body is the value; `?flags`, `?cas`),
//! `DELETE` (`?recurse`, `?cas`). Sessions and locks (`?acquire`, `?release`) are not kept: a 400
//! says so.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use base64::Engine as _;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;

use super::error::ApiError;
use super::{ApiState, Params, block, consul_json, indexed};
use crate::registry::kv::{KvChange, KvEntry, MAX_VALUE_BYTES, check_key};
use crate::registry::{RegistryError, Written};

pub fn routes() -> Router<ApiState> {
    // A write that takes too long (a body trickled in) is cut off; a blocking read may wait.
    let methods = || {
        let timeout = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, super::REQUEST_TIMEOUT);
        put(write).delete(delete).layer(timeout).get(read)
    };
    Router::new()
        .route("/v1/kv/", methods())
        .route("/v1/kv/{*key}", methods())
}

/// An entry in Consul's JSON, serialized straight from the entry: a prefix of 10,000 keys is
/// written without building a JSON tree first.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct EntryJson<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    /// Base64; null when empty, as Consul shows it.
    value: Option<String>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a KvEntry> for EntryJson<'a> {
    fn from(entry: &'a KvEntry) -> Self {
        Self {
            lock_index: 0,
            key: &entry.key,
            flags: entry.flags,
            value: (!entry.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        }
    }
}

/// A missing key: 404 with the index and no body, as Consul answers (a blocking query's client
/// reads the index).
fn not_found(index: u64) -> Response {
    indexed(index, StatusCode::NOT_FOUND)
}

/// A write's answer: `true` once it is durable, `false` when its check-and-set failed.
/// `true` once the write is durable and served; `false` for a check-and-set that failed (decided
/// at once here, or by etcd).
async fn answer_write(written: Option<Written>) -> Result<Response, ApiError> {
    let done = match written {
        Some(written) => match written.durable().await {
            Ok(_) => true,
            Err(RegistryError::CasFailed) => false,
            Err(error) => return Err(error.into()),
        },
        None => false,
    };
    Ok(axum::Json(done).into_response())
}

fn key_of(key: Option<Path<String>>) -> Result<String, ApiError> {
    let key = key.map(|Path(key)| key).unwrap_or_default();
    check_key(&key).map_err(|e| ApiError::field("key", e))?;
    Ok(key)
}

fn refuse_locks(params: &Params) -> Result<(), ApiError> {
    for lock in ["acquire", "release"] {
        if params.get(lock).is_some() {
            return Err(ApiError::BadRequest(format!(
                "?{lock}: sessions and locks are not supported by sextant; write without them, or with ?cas=<index>"
            )));
        }
    }
    Ok(())
}

fn number(params: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|text| {
            text.parse()
                .map_err(|_| ApiError::BadRequest(format!("Invalid {name} {text:?}: must be a number")))
        })
        .transpose()
}

async fn read(
    State(state): State<ApiState>,
    key: Option<Path<String>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_of(key)?;
    let params = Params::parse(q);
    let watched = block(&state, &params, || state.registry.watch_kv(&key)).await?;
    let registry = &state.registry;
    // The watch's own index when it waited (the prefix's channel may be gone now).
    let index = watched.unwrap_or_else(|| registry.kv_index(&key));
    if params.flag("keys") {
        let separator = params.get("separator").filter(|s| !s.is_empty());
        let mut keys: Vec<String> = Vec::new();
        for entry in registry.kv_list(&key) {
            let rest = &entry.key[key.len()..];
            let shown = match separator.and_then(|sep| rest.find(sep).map(|at| at + sep.len())) {
                Some(end) => &entry.key[..key.len() + end],
                None => &entry.key,
            };
            if keys.last().map(String::as_str) != Some(shown) {
                keys.push(shown.to_owned());
            }
        }
        return Ok(if keys.is_empty() {
            not_found(index)
        } else {
            consul_json(index, json!(keys))
        });
    }
    let entries = if params.flag("recurse") {
        registry.kv_list(&key)
    } else {
        registry.kv_get(&key).into_iter().collect()
    };
    if entries.is_empty() {
        return Ok(not_found(index));
    }
    if params.flag("raw") && !params.flag("recurse") {
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ];
        return Ok(indexed(index, (headers, entries[0].value.to_vec())));
    }
    let list: Vec<EntryJson<'_>> = entries.iter().map(|e| EntryJson::from(&**e)).collect();
    Ok(indexed(index, axum::Json(list)))
}

async fn write(
    State(state): State<ApiState>,
    key: Option<Path<String>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = key_of(key)?;
    let params = Params::parse(q);
    refuse_locks(&params)?;
    if key.is_empty() {
        return Err(ApiError::BadRequest("Missing key name".into()));
    }
    if body.len() > MAX_VALUE_BYTES {
        return Err(ApiError::TooLarge(format!(
            "Request body too large: the value is {} bytes, at most {MAX_VALUE_BYTES} (Consul's limit)",
            body.len()
        )));
    }
    let change = KvChange::Set {
        value: body.to_vec().into_boxed_slice(),
        flags: number(&params, "flags")?.unwrap_or(0),
    };
    let cas = number(&params, "cas")?;
    answer_write(state.registry.kv_write(&key, change, false, cas)?).await
}

async fn delete(
    State(state): State<ApiState>,
    key: Option<Path<String>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_of(key)?;
    let params = Params::parse(q);
    refuse_locks(&params)?;
    let recurse = params.flag("recurse");
    if key.is_empty() && !recurse {
        return Err(ApiError::BadRequest("Missing key name".into()));
    }
    let cas = number(&params, "cas")?;
    answer_write(state.registry.kv_write(&key, KvChange::Delete, recurse, cas)?).await
}
