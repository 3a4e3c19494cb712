//! Why a registry write was refused.

use crate::model::{CheckId, InstanceId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("check ID {check:?} already belongs to service instance {owner:?}")]
    CheckIdTaken { check: CheckId, owner: InstanceId },
    #[error("unknown check ID {0:?}")]
    UnknownCheck(CheckId),
    #[error("check {0:?} is not a TTL check: its status comes from its probe, not from updates")]
    NotTtl(CheckId),
}
