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
    /// The change could not be made durable (not acknowledged), or the store could not be read
    /// at start.
    #[error(transparent)]
    Store(#[from] StoreError),
}
