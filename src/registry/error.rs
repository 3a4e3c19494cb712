//! Why a registry write was refused.

use crate::model::{CheckId, InstanceId};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("check ID {check:?} already belongs to service instance {owner:?}")]
    CheckIdTaken { check: CheckId, owner: InstanceId },
    #[error("unknown check ID {0:?}")]
    UnknownCheck(CheckId),
    #[error("check {0:?} is not a TTL check: its status comes from its probe, not from updates")]
    NotTtl(CheckId),
    /// The change could not be made durable (or the store failed earlier): not acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored instance {id:?} cannot be restored: {message}")]
    Restore { id: String, message: String },
}
