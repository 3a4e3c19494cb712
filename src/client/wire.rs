//! The Consul JSON the client reads, as the client's own types (the server's `api::wire` is
//! the other side of the same format; the client reads only what it needs and ignores the fields
//! it does not know, as Consul's own clients do).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::view::Instance;

/// One entry of `/v1/health/service/<name>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    #[serde(default)]
    node: Node,
    service: Service,
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// A check as `/v1/agent/checks` and health entries show it.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

/// A service as `/v1/agent/services` and health entries show it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
}

impl HealthEntry {
    /// The instance, its address the node's when it has none of its own (Consul's rule).
    pub fn into_instance(self, service: &str) -> Instance {
        let mut instance = self.service.into_instance();
        if instance.service.is_empty() {
            instance.service = service.to_string();
        }
        if instance.address.is_empty() {
            instance.address = self.node.address;
        }
        instance
    }
}

impl Service {
    pub fn into_instance(self) -> Instance {
        let Service {
            id,
            service,
            address,
            port,
            tags,
            meta,
            weights,
        } = self;
        Instance {
            id,
            service,
            address,
            port,
            tags: tags.unwrap_or_default(),
            meta: meta.unwrap_or_default(),
            weight: weights.map_or(1, |w| w.passing),
        }
    }
}
