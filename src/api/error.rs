//! API errors and how they become responses: Consul's status codes, plain-text messages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::registry::RegistryError;

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
    /// The server could not do what was asked (storage failed); nothing was acknowledged.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::BadRequest(format!("{field}: {problem}"))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::CheckIdTaken { .. } | RegistryError::NotTtl(_) => Self::BadRequest(e.to_string()),
            RegistryError::UnknownCheck(id) => Self::NotFound(format!(
                "Unknown check ID {:?}. Ensure that the check ID is passed, not the check name.",
                id.as_str()
            )),
            RegistryError::Store(_) | RegistryError::Restore { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.to_string()).into_response()
    }
}
