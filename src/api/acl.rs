//! Who may call the API. With a token configured (`--acl-token` or `--acl-token-file`), every
//! request must carry it, as `X-Consul-Token` or `Authorization: Bearer`; a read-only token
//! (`--acl-read-token-file`) may be carried instead by clients that only read. Without a token,
//! anyone may read, but only clients on this machine (loopback) may write.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ApiError;

pub struct Acl {
    token: Option<Vec<u8>>,
    /// May read, never write.
    read_token: Option<Vec<u8>>,
}

impl Acl {
    pub fn new(token: Option<String>, read_token: Option<String>) -> Self {
        Self {
            token: token.map(String::into_bytes),
            read_token: read_token.map(String::into_bytes),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.token.is_some()
    }

    fn check(&self, method: &Method, headers: &HeaderMap, peer: IpAddr) -> Result<(), ApiError> {
        match &self.token {
            Some(expected) => match presented_token(headers) {
                // Constant time in the token's content: a wrong guess reveals nothing of how
                // close it was (only, as everywhere, whether its length matched).
                Some(given) if bool::from(given.ct_eq(expected)) => Ok(()),
                Some(given)
                    if self
                        .read_token
                        .as_ref()
                        .is_some_and(|read| bool::from(given.ct_eq(read))) =>
                {
                    match is_write(method) {
                        true => Err(ApiError::Forbidden(
                            "Permission denied: this token may only read (it is the read-only token)".into(),
                        )),
                        false => Ok(()),
                    }
                }
                Some(_) => Err(ApiError::Forbidden("ACL not found: the token is not valid".into())),
                None => Err(ApiError::Forbidden(
                    "Permission denied: this server requires a token (X-Consul-Token or Authorization: Bearer)".into(),
                )),
            },
            None if is_write(method) && !peer.to_canonical().is_loopback() => Err(ApiError::Forbidden(format!(
                "Permission denied: without --acl-token only clients on this machine may write \
                 ({peer} is not loopback); start sextant with --acl-token or --acl-token-file"
            ))),
            None => Ok(()),
        }
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The token a request presents: `X-Consul-Token`, else `Authorization: Bearer <token>` (the
/// scheme in any case, as RFC 9110 has it).
fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(token) = headers.get("x-consul-token") {
        return Some(token.as_bytes());
    }
    let authorization = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = authorization.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

/// The middleware in front of every route.
pub async fn enforce(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match state.acl.check(request.method(), request.headers(), peer.ip()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn a_configured_token_is_required_everywhere() {
        let acl = Acl::new(Some("s3cret".into()), None);
        for method in [Method::GET, Method::PUT] {
            for peer in [LOOPBACK, REMOTE] {
                assert!(acl.check(&method, &headers(&[]), peer).is_err());
                assert!(
                    acl.check(&method, &headers(&[("x-consul-token", "s3cret")]), peer)
                        .is_ok()
                );
                assert!(
                    acl.check(&method, &headers(&[("authorization", "Bearer s3cret")]), peer)
                        .is_ok()
                );
                assert!(
                    acl.check(&method, &headers(&[("authorization", "bearer s3cret")]), peer)
                        .is_ok()
                );
                for wrong in ["s3cre", "s3crets", "S3CRET", ""] {
                    assert!(
                        acl.check(&method, &headers(&[("x-consul-token", wrong)]), peer)
                            .is_err()
                    );
                }
                assert!(
                    acl.check(&method, &headers(&[("authorization", "Basic s3cret")]), peer)
                        .is_err()
                );
                assert!(
                    acl.check(&method, &headers(&[("authorization", "Bearer")]), peer)
                        .is_err()
                );
            }
        }
    }

    #[test]
    fn a_read_only_token_reads_and_never_writes() {
        let acl = Acl::new(Some("s3cret".into()), Some("reader".into()));
        let with = |token| headers(&[("x-consul-token", token)]);
        for peer in [LOOPBACK, REMOTE] {
            assert!(acl.check(&Method::GET, &with("reader"), peer).is_ok());
            assert!(acl.check(&Method::HEAD, &with("reader"), peer).is_ok());
            for write in [Method::PUT, Method::POST, Method::DELETE] {
                let refused = acl.check(&write, &with("reader"), peer).unwrap_err().to_string();
                assert!(refused.contains("only read"), "{refused}");
                assert!(acl.check(&write, &with("s3cret"), peer).is_ok());
            }
            assert!(acl.check(&Method::GET, &with("reade"), peer).is_err());
        }
    }

    #[test]
    fn without_a_token_only_loopback_writes() {
        let acl = Acl::new(None, None);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        for peer in [LOOPBACK, "::1".parse().unwrap(), mapped] {
            assert!(acl.check(&Method::PUT, &headers(&[]), peer).is_ok(), "{peer}");
        }
        assert!(acl.check(&Method::GET, &headers(&[]), REMOTE).is_ok());
        assert!(acl.check(&Method::PUT, &headers(&[]), REMOTE).is_err());
        assert!(acl.check(&Method::DELETE, &headers(&[]), REMOTE).is_err());
    }
}
