//! Why a registry write was refused.

use crate::model::{CheckId, InstanceId};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("check ID {:?} already belongs to service instance {:?}", check.as_str(), owner.as_str())]
    CheckIdTaken { check: CheckId, owner: InstanceId },
    #[error("unknown check ID {:?}", .0.as_str())]
    UnknownCheck(CheckId),
    #[error("check {:?} is not a TTL check: its status comes from its probe, not from updates", .0.as_str())]
    NotTtl(CheckId),
    /// The instance a write would make breaks a rule (too many checks once one is added).
    #[error("{0}")]
    Invalid(String),
    /// The store in use does not keep key/value entries (etcd, for now).
    #[error(
        "the key/value store is not kept in etcd yet: run sextant with its embedded store (--data-dir) to use /v1/kv"
    )]
    KvNotKept,
    /// A key/value check-and-set whose index no longer matched (decided by a shared store):
    /// nothing was written.
    #[error("the check-and-set index no longer matches: nothing was written")]
    CasFailed,
    /// The store in use does not keep nodes.
    #[error("this store does not keep nodes: run sextant with its embedded store (--data-dir) or etcd")]
    NodesNotKept,
    /// Servers sharing etcd share their services: none is on one server's node.
    #[error(
        "node maintenance and node-level checks are not kept with etcd: the servers share their services, which are on no one server's node; put each service into maintenance with /v1/agent/service/maintenance/<id>, or give the check a ServiceID"
    )]
    NodeMaintenanceShared,
    /// A catalog write names this server's own node, whose services the agent API registers.
    #[error(
        "node {0:?} is this server's own node: register its services with /v1/agent/service/register and take them off with /v1/agent/service/deregister"
    )]
    LocalNode(String),
    /// Instance IDs are unique across nodes in sextant (Consul's are per node).
    #[error("service ID {id:?} is registered on node {node:?}; sextant keeps service IDs unique across nodes")]
    IdOnOtherNode { id: String, node: String },
    /// A catalog check names a service the node does not have.
    #[error("node {node:?} has no service with ID {id:?} (ServiceID of a check)")]
    NoSuchServiceOnNode { id: String, node: String },
    /// The registry holds as much as it may of something ([`super::bounds`]): nothing was written.
    #[error("sextant holds its most {bound} ({limit}, {}): nothing was written; remove some, or raise the bound", bound.flag())]
    Full { bound: super::Bound, limit: usize },
    /// The change could not be made durable (not acknowledged), or the store could not be read
    /// at start.
    #[error(transparent)]
    Store(#[from] StoreError),
}
