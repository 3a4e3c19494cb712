//! The HTTP server loop: hyper behind an accept loop of our own, because `axum::serve` bounds
//! nothing in time: a client that sends its request slowly, or never, holds a connection forever.
//!
//! Here every connection, HTTP/1.1 or HTTP/2, must start a request within `header_timeout` of
//! opening or of its last request's answer, or it is closed: that cuts slow or unfinished headers,
//! an HTTP/2 connection that sent only its preface or a HEADERS frame it never finished, and idle
//! keep-alive connections alike. A request in progress (a blocking query waits up to 10 min) is
//! not cut. On shutdown, connections get `DRAIN` to finish, then are dropped, so a stop always
//! ends. The peer's address reaches the handlers as axum's `ConnectInfo` (the ACL reads it).

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long connections get to finish their requests once the server stops.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long a connection told to close (idle, or stopping) gets to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `stopping` is cancelled, then lets requests in flight
/// finish for at most [`DRAIN`] (blocking queries answer at once on the same signal) and returns
/// once every connection is gone.
pub async fn serve(listener: TcpListener, router: Router, header_timeout: Duration, stopping: CancellationToken) {
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
        let _ = stream.set_nodelay(true);
        let (router, builder, stopping) = (router.clone(), builder.clone(), stopping.clone());
        connections.spawn(async move {
            connection(stream, peer, router, &builder, header_timeout, stopping).await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it ends, stays idle for `header_timeout`, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
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
