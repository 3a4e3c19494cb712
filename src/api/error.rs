//! API errors and how they become responses: Consul's status codes, plain-text messages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::registry::RegistryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message names the field and says why.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// No token, or not the configured one (or a write from another host with none configured).
    #[error("{0}")]
    Forbidden(String),
    /// The write could not be made durable now (the disk is full or read-only, or sextant is
    /// stopping); nothing was changed, and the same request can succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The request is understood but this server does not do it (a body too large for it, or a
    /// feature of Consul's it does not have in this setup).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotImplemented(String),
    /// Something the client cannot fix: `kind` is what it is told, `detail` goes to the log only
    /// (it may hold paths and the store's own words).
    #[error("internal error ({kind}); the server's log has the details")]
    Internal { kind: &'static str, detail: String },
}

impl ApiError {
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::BadRequest(format!("{field}: {problem}"))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::CheckIdTaken { .. }
            | RegistryError::NotTtl(_)
            | RegistryError::LocalNode(_)
            | RegistryError::IdOnOtherNode { .. }
            | RegistryError::NoSuchServiceOnNode { .. }
            | RegistryError::CasFailed => Self::BadRequest(e.to_string()),
            RegistryError::KvNotKept | RegistryError::NodesNotKept | RegistryError::NodeMaintenanceShared => {
                Self::NotImplemented(e.to_string())
            }
            RegistryError::Invalid(message) => Self::BadRequest(message),
            RegistryError::Full { .. } => Self::Unavailable(e.to_string()),
            RegistryError::UnknownCheck(id) => Self::NotFound(format!(
                "Unknown check ID {:?}. Ensure that the check ID is passed, not the check name.",
                id.as_str()
            )),
            RegistryError::Store(StoreError::Unavailable { dir, message }) => Self::Unavailable(format!(
                "the change was not made: the data directory {dir} cannot be written ({message}); \
                 retry once it has space or is writable again"
            )),
            RegistryError::Store(StoreError::Etcd { endpoints, message }) => Self::Unavailable(format!(
                "the change was not made: etcd ({endpoints}) cannot be reached or refused it ({message}); \
                 retry once etcd is back"
            )),
            RegistryError::Store(error @ StoreError::NotYetApplied { .. }) => Self::Unavailable(error.to_string()),
            RegistryError::Store(error @ StoreError::EtcdOutOfReach { .. }) => {
                Self::Unavailable(format!("the change was not made: {error}; retry once etcd is back"))
            }
            RegistryError::Store(StoreError::Closed) => {
                Self::Unavailable("the change was not made: sextant is stopping".into())
            }
            RegistryError::Store(_) => Self::Internal {
                kind: "storage",
                detail: e.to_string(),
            },
        }
    }
}

/// The detail of an internal error, carried on its response for the layer that logs it with the
/// request's method and path ([`super::log_failures`]).
#[derive(Clone, Debug)]
pub struct InternalDetail(pub String);

/// Why a request was refused (the message its client got), for the same layer.
#[derive(Clone, Debug)]
pub struct Refusal(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = self.to_string();
        let mut response = (status, message.clone()).into_response();
        match self {
            Self::Internal { detail, .. } => {
                response.extensions_mut().insert(InternalDetail(detail));
            }
            _ => {
                response.extensions_mut().insert(Refusal(message));
            }
        }
        response
    }
}
