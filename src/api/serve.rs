//! The HTTP server loop: hyper behind an accept loop of our own, because `axum::serve` bounds
//! nothing in time: a client that sends its request slowly, or never, holds a connection forever.
//!
//! Here every connection, HTTP/1.1 or HTTP/2, must start a request within `header_timeout` of
//! opening or of its last request's answer, or it is closed: that cuts slow or unfinished headers,
//! an HTTP/2 connection that sent only its preface or a HEADERS frame it never finished, and idle
//! keep-alive connections alike. A request in progress (a blocking query waits up to 10 min) is
//! not cut. On shutdown, connections get `DRAIN` to finish, then are dropped, so a stop always
//! ends. The peer's address reaches the handlers as axum's `ConnectInfo` (the ACL reads it).
//! With TLS ([`super::tls`]) the handshake must end within `header_timeout` too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long connections get to finish their requests once the server stops.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long a connection told to close (idle, or stopping) gets to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Connections open at once, by default: the bound on what clients can hold (each is a socket
/// and a task; a blocking query holds one for up to 10 min).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Connections from one client address at once, by default (VictoriaMetrics holds one per
/// service it watches).
pub const DEFAULT_MAX_PER_CLIENT: usize = 2048;
/// Blocking queries waiting at once, by default (each is a task and a channel subscription).
pub const DEFAULT_MAX_BLOCKING_QUERIES: usize = 65_536;

/// How many connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// Blocking queries waiting at once (HTTP/2 carries many on one connection); more get a 503.
    pub max_blocking_queries: usize,
}

/// The connections open, in all and by client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A connection counted while it lives.
struct Counted(Arc<Mutex<Open>>, IpAddr);

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.1);
            }
        }
    }
}

/// Counts a new connection from `client`, or says which limit it is over.
fn admit(open: &Arc<Mutex<Open>>, client: IpAddr, limits: HttpLimits) -> Result<Counted, &'static str> {
    let mut guard = open.lock().unwrap_or_else(|p| p.into_inner());
    if guard.total >= limits.max_connections {
        return Err("the server holds as many HTTP connections as it takes (--http-max-connections)");
    }
    let mine = guard.by_client.entry(client).or_default();
    if *mine >= limits.max_per_client {
        return Err("this client address holds as many HTTP connections as one may (--http-max-per-client)");
    }
    *mine += 1;
    guard.total += 1;
    Ok(Counted(open.clone(), client))
}

/// Answers a connection over a limit with a 503 that says which, then closes it: after the
/// request's head (a client takes an answer before its request for a broken connection), read
/// for at most the grace a closing connection gets and 8 KiB.
async fn refuse(mut stream: impl AsyncRead + AsyncWrite + Unpin, reason: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let body = format!("{reason}; retry later\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(CLOSE_GRACE, stream.write_all(response.as_bytes())).await;
}

/// Serves `router` on `listener` until `stopping` is cancelled, then lets requests in flight
/// finish for at most [`DRAIN`] (blocking queries answer at once on the same signal) and returns
/// once every connection is gone.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    limits: HttpLimits,
    tls: Option<Arc<super::tls::HttpTls>>,
    stopping: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone: its connection goes.
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let connections = TaskTracker::new();
    let open = Arc::new(Mutex::new(Open::default()));
    let refusals = crate::log_throttle::LogThrottle::new(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or memory: give connections a moment to close
                    // rather than spin on the error.
                    tracing::warn!(%error, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopping.cancelled() => break,
        };
        let counted = match admit(&open, peer.ip().to_canonical(), limits) {
            Ok(counted) => counted,
            Err(reason) => {
                if let Some(left_out) = refusals.admit() {
                    let refused = left_out + 1;
                    tracing::warn!(%peer, reason, refused, "HTTP connections refused with 503");
                }
                match &tls {
                    None => connections.spawn(refuse(stream, reason)),
                    Some(tls) => {
                        let acceptor = tls.refusing_acceptor();
                        connections.spawn(async move {
                            if let Ok(Ok(stream)) = tokio::time::timeout(CLOSE_GRACE, acceptor.accept(stream)).await {
                                refuse(stream, reason).await;
                            }
                        })
                    }
                };
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, stopping) = (router.clone(), builder.clone(), stopping.clone());
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        connections.spawn(async move {
            match acceptor {
                None => connection(stream, peer, router, &builder, header_timeout, stopping).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => handshake,
                        () = stopping.cancelled() => return, // a stop never waits on a handshake
                    };
                    match handshake {
                        Ok(Ok(stream)) => connection(stream, peer, router, &builder, header_timeout, stopping).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
                    }
                }
            }
            drop(counted);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it ends, stays idle for `header_timeout`, or the server stops.
async fn connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    router: Router,
    builder: &Builder<TokioExecutor>,
    header_timeout: Duration,
    stopping: CancellationToken,
) {
    // What requests the connection has had: it idles only with none in progress.
    let (busy, in_flight) = watch::channel(Requests::default());
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        let started = InFlight::start(&busy);
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(started);
            response
        }
    });
    let mut connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
    let (close, limit) = tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::trace!(%peer, %error, "HTTP connection ended with an error");
            }
            return;
        }
        () = idle_for(in_flight, header_timeout) => ("idle", CLOSE_GRACE),
        () = stopping.cancelled() => ("stopping", DRAIN),
    };
    tracing::trace!(%peer, reason = close, "closing an HTTP connection");
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limit, connection).await;
}

/// A connection's requests: how many are in progress, and how many ever started (a request that
/// starts and ends between two looks still counts as activity).
#[derive(Clone, Copy, Default)]
struct Requests {
    in_progress: usize,
    started: u64,
}

/// Completes once the connection has had no request in progress, and started none, for `limit`
/// in a row.
async fn idle_for(mut requests: watch::Receiver<Requests>, limit: Duration) {
    loop {
        let Ok(idle) = requests.wait_for(|r| r.in_progress == 0).await.map(|r| *r) else {
            return std::future::pending().await; // the connection is ending anyway
        };
        tokio::select! {
            () = tokio::time::sleep(limit) => return,
            _ = requests.wait_for(|r| r.started != idle.started || r.in_progress > 0) => {}
        }
    }
}

/// One request in progress on a connection, counted while it lives.
struct InFlight(watch::Sender<Requests>);

impl InFlight {
    fn start(busy: &watch::Sender<Requests>) -> Self {
        busy.send_modify(|r| {
            r.in_progress += 1;
            r.started += 1;
        });
        Self(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|r| r.in_progress -= 1);
    }
}
