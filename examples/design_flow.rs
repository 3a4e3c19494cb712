//! The design documents' flow, end to end, each step timed against the documents' targets:
//! register instances with an HTTP check, discover the healthy ones (HTTP and DNS), stop one and
//! see it leave, deregister one and see it go.
//!
//! ```text
//! cargo run --example design_flow -- --sextant 127.0.0.1:8500 --dns 127.0.0.1:8600
//! ```
//!
//! The instances are small HTTP servers this program starts on loopback; it exits 1 if a step
//! misses its target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use clap::Parser;
use sextant::client::{Check, Client, DnsServer, Registration, ServiceView};

#[derive(Parser)]
struct Args {
    /// sextant's HTTP API.
    #[arg(long, env = "SEXTANT_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    sextant: String,
    /// sextant's DNS server.
    #[arg(long, default_value = "127.0.0.1:8600")]
    dns: SocketAddr,
    /// sextant's domain.
    #[arg(long, default_value = "trading-dc")]
    domain: String,
    /// The service the flow registers.
    #[arg(long, default_value = "design-flow")]
    service: String,
    /// How many instances to start.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// The HTTP check's interval, in milliseconds (sextant's minimum is 1 s).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

/// One timed step and the documents' target for it.
struct Step {
    what: &'static str,
    took: Duration,
    target: Duration,
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::new(&args.sextant)?;
    let mut view = client.watch(&args.service);
    let mut steps = Vec::new();

    let mut instances = Vec::new();
    for n in 0..args.instances {
        instances.push(Instance::start(format!("{}-{n}", args.service)).await?);
    }

    // 1. Registration: from the first call until every instance has passed its first check and
    //    is in the client's view of the healthy instances.
    let started = Instant::now();
    for instance in &instances {
        let registration = Registration::new(&args.service)
            .id(&instance.id)
            .address(instance.address.ip().to_string())
            .port(instance.address.port())
            .check(Check::Http {
                url: format!("http://{}/health", instance.address),
                interval: Duration::from_millis(args.interval_ms),
                timeout: Duration::from_secs(1),
            });
        client.register(&registration).await?;
    }
    wait_until(&mut view, |ids| ids.len() == instances.len()).await?;
    steps.push(Step {
        what: "register (HTTP check) → healthy",
        took: started.elapsed(),
        target: secs(5),
    });

    // 2. Lookup: one read of the healthy instances over HTTP, and one SRV lookup over DNS.
    let started = Instant::now();
    let healthy = client.healthy(&args.service).await?;
    steps.push(Step {
        what: "lookup over HTTP (?passing)",
        took: started.elapsed(),
        target: millis(100),
    });
    assert_eq!(healthy.instances().len(), instances.len());
    let started = Instant::now();
    let name = format!("{}.service.{}.", args.service, args.domain);
    let srv = ServiceView::dns(&name, DnsServer::At(args.dns))?.ready().await?;
    steps.push(Step {
        what: "lookup over DNS (SRV)",
        took: started.elapsed(),
        target: millis(100),
    });
    if srv.instances().len() != instances.len() {
        return Err(format!(
            "DNS answered {} instances, not {}",
            srv.instances().len(),
            instances.len()
        )
        .into());
    }

    // 3. Failure: an instance stops answering; its check fails and it leaves the healthy list.
    let mut failed = instances.remove(0);
    let started = Instant::now();
    failed.stop().await;
    wait_until(&mut view, |ids| !ids.contains(&failed.id.as_str())).await?;
    steps.push(Step {
        what: "instance stopped → out of the healthy list",
        took: started.elapsed(),
        target: secs(30),
    });

    // 4. Deregistration: gone from the healthy list.
    let leaving = instances.remove(0);
    let started = Instant::now();
    client.deregister(&leaving.id).await?;
    wait_until(&mut view, |ids| !ids.contains(&leaving.id.as_str())).await?;
    steps.push(Step {
        what: "deregister → out of the healthy list",
        took: started.elapsed(),
        target: secs(3),
    });

    for instance in [failed, leaving].iter().chain(&instances) {
        let _ = client.deregister(&instance.id).await;
    }
    let missed = report(&steps);
    std::process::exit(i32::from(missed));
}

/// Prints the steps as a table; whether any missed its target.
fn report(steps: &[Step]) -> bool {
    println!("{:<44} {:>12} {:>10}", "step", "measured", "target");
    let mut missed = false;
    for step in steps {
        let ok = step.took < step.target;
        missed |= !ok;
        let verdict = if ok { "ok" } else { "MISSED" };
        println!(
            "{:<44} {:>12} {:>10}  {verdict}",
            step.what,
            show(step.took),
            format!("< {}", show_target(step.target))
        );
    }
    missed
}

fn show(duration: Duration) -> String {
    match duration.as_secs_f64() {
        s if s >= 1.0 => format!("{s:.2} s"),
        s => format!("{:.1} ms", s * 1e3),
    }
}

fn show_target(target: Duration) -> String {
    match target.as_millis() {
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Waits (at most a minute) until the view's healthy instance IDs satisfy `done`.
async fn wait_until(view: &mut ServiceView, done: impl Fn(&[&str]) -> bool) -> Result<(), String> {
    let check = |view: &ServiceView| {
        done(
            &view
                .current()
                .instances()
                .iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>(),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check(view) {
        match tokio::time::timeout_at(deadline, view.changed()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("the step did not happen within a minute".into()),
        }
    }
    Ok(())
}

/// An instance of the service: an HTTP server on loopback answering `/health`.
struct Instance {
    id: String,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    async fn start(id: String) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().route("/health", get(|| async { "ok" }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            id,
            address,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Stops serving: the listener closes, and the next check is refused.
    async fn stop(&mut self) {
        if let (Some(stop), Some(server)) = (self.stop.take(), self.server.take()) {
            let _ = stop.send(());
            let _ = server.await;
        }
    }
}
