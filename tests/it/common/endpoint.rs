//! Health endpoints a test controls: an HTTP server whose answer can be flipped, and what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use tokio::net::TcpListener;

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Answers with the status set by [`HttpEndpoint::set_status`].
    Status = 0,
    /// Accepts the request and never answers.
    Hang = 1,
    /// 200 with a 100 KB body.
    BigBody = 2,
    /// 200 and 500 in turn, a flapping service.
    Alternate = 3,
}

/// The last request the endpoint received.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Default)]
struct Control {
    status: AtomicU16,
    mode: AtomicU8,
    hits: AtomicU64,
    seen: Mutex<Seen>,
    /// The status of every answer given, in order.
    served: Mutex<Vec<u16>>,
    last_hit_at: Mutex<Option<Instant>>,
}

pub struct HttpEndpoint {
    pub addr: SocketAddr,
    control: Arc<Control>,
    server: tokio::task::JoinHandle<()>,
}

impl HttpEndpoint {
    pub async fn start(status: u16) -> Self {
        let control = Arc::new(Control::default());
        control.status.store(status, Ordering::SeqCst);
        let app = Router::new().fallback(answer).with_state(control.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, control, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.control.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests received so far (counted when they arrive, before the answer).
    pub fn hits(&self) -> u64 {
        self.control.hits.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.control.seen.lock().unwrap().clone()
    }

    /// The statuses answered so far, in order.
    pub fn served(&self) -> Vec<u16> {
        self.control.served.lock().unwrap().clone()
    }

    /// When the last request arrived.
    pub fn last_hit_at(&self) -> Option<Instant> {
        *self.control.last_hit_at.lock().unwrap()
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(control): State<Arc<Control>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    *control.seen.lock().unwrap() = Seen {
        method: method.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    *control.last_hit_at.lock().unwrap() = Some(Instant::now());
    control.hits.fetch_add(1, Ordering::SeqCst);
    let status = match control.mode.load(Ordering::SeqCst) {
        1 => std::future::pending().await,
        2 => StatusCode::OK,
        3 if control.hits.load(Ordering::SeqCst) % 2 == 0 => StatusCode::INTERNAL_SERVER_ERROR,
        3 => StatusCode::OK,
        _ => StatusCode::from_u16(control.status.load(Ordering::SeqCst)).unwrap(),
    };
    control.served.lock().unwrap().push(status.as_u16());
    if control.mode.load(Ordering::SeqCst) == 2 {
        return (status, "x".repeat(100_000)).into_response();
    }
    (status, format!("status {}", status.as_u16())).into_response()
}

/// An HTTPS endpoint with a self-signed certificate that answers 200 to every request.
pub struct HttpsEndpoint {
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl HttpsEndpoint {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;

        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key.into())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to answer.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure";
                    let _ = tls.write_all(response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self { addr, server }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/health", self.addr.port())
    }
}

impl Drop for HttpsEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}
