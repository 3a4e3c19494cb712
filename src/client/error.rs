//! What can go wrong when a service talks to sextant, said so the caller can act on it.

use std::time::Duration;

/// Everything the client returns; each message names the service, URL or field involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service is registered, but none of its instances passes its checks.
    #[error("no healthy instance of {service}: every registered instance is failing its checks")]
    NoHealthyInstance { service: String },
    /// No instance of the service is registered at all (often a misspelt name).
    #[error("service {service:?} is unknown to sextant: no instance of it is registered")]
    ServiceUnknown { service: String },
    /// The view has not read the service's instances yet (sextant not reached so far).
    #[error("the instances of {service} have not been read yet{}", last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotYetRead {
        service: String,
        last_error: Option<String>,
    },
    /// The view's follower has stopped: a [`ServiceView::fixed`](super::ServiceView::fixed)
    /// list, or a runtime shutting down.
    #[error("the view of {service} is no longer followed")]
    ViewStopped { service: String },
    /// No connection to sextant: refused, reset, or no route.
    #[error("sextant cannot be reached at {url}: {reason}")]
    Unreachable {
        url: String,
        /// The innermost cause ("Connection refused (os error 111)"): reqwest's own message
        /// only says that sending failed.
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    /// sextant took longer than the request's timeout.
    #[error("sextant did not answer {url} within {after:?}")]
    Timeout { url: String, after: Duration },
    /// sextant refused the request as invalid (a 400 or 413), with its own message.
    #[error("sextant refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The ACL token is missing or wrong (403).
    #[error("sextant refused the token (403): {message}; set CONSUL_HTTP_TOKEN or SEXTANT_HTTP_TOKEN")]
    Forbidden { message: String },
    /// The instance or check named in the request is not registered (404).
    #[error("not registered: {message}")]
    NotFound { message: String },
    /// sextant could not do it now (5xx, such as etcd out of reach, or 429); worth retrying.
    #[error("sextant failed ({status}): {message}")]
    Unavailable { status: u16, message: String },
    /// An answer the client cannot read (not sextant, or a version it does not know).
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected { url: String, reason: String },
    /// A DNS lookup failed (the DNS view).
    #[error("DNS lookup of {name} failed: {reason}")]
    Dns { name: String, reason: String },
    /// A setting given to the client is not usable.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl Error {
    /// Whether trying the same request again later may succeed: the server was out of reach,
    /// slow, or said so with a 5xx. A refusal or an unknown ID will not change by retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Timeout { .. } | Error::Unavailable { .. } | Error::Dns { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
