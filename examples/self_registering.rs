//! A service that registers itself in sextant with a heartbeat and serves HTTP.
//!
//! It answers `GET /` with its instance ID (after `--delay-ms`, to play a slow instance), keeps
//! its registration alive with TTL heartbeats (registering again if sextant forgets it), and
//! deregisters on Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run --example self_registering -- --service web --listen 127.0.0.1:0
//! ```
//!
//! sextant's address comes from `--sextant`, else `SEXTANT_HTTP_ADDR`, else 127.0.0.1:8500; the
//! ACL token from `SEXTANT_HTTP_TOKEN` or `CONSUL_HTTP_TOKEN`.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use sextant::client::{Client, Registration};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
struct Args {
    /// The service's name.
    #[arg(long, default_value = "web")]
    service: String,
    /// This instance's ID [default: <service>-<port>].
    #[arg(long)]
    id: Option<String>,
    /// Where to serve HTTP; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// sextant's HTTP API.
    #[arg(long, env = "SEXTANT_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    sextant: String,
    /// The TTL of the heartbeat check, in seconds; heartbeats go at a third of it.
    #[arg(long, default_value_t = 10)]
    ttl_secs: u64,
    /// How long each request takes, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// The instance's weight in balancers.
    #[arg(long, default_value_t = 1)]
    weight: u32,
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.service, address.port()));

    let (body, delay) = (format!("{id}\n"), Duration::from_millis(args.delay_ms));
    let app = Router::new().route(
        "/",
        get(move || async move {
            tokio::time::sleep(delay).await;
            body
        }),
    );
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let client = Client::new(&args.sextant)?;
    let registration = Registration::new(&args.service)
        .id(&id)
        .address(address.ip().to_string())
        .port(address.port())
        .weight(args.weight)
        .meta("started-by", "examples/self_registering.rs");
    let me = client
        .register_self(registration, Duration::from_secs(args.ttl_secs))
        .await?;
    println!("registered {id} at {address}");

    let (mut interrupt, mut term) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    // Out of the registry first, so no new request is sent here; then stop serving.
    me.deregister().await?;
    println!("deregistered {id}");
    let _ = stop_serving.send(());
    server.await??;
    Ok(())
}
