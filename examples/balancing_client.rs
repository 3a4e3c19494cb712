//! A client that discovers a service and spreads requests over its instances with each balancer,
//! printing how many requests each instance got.
//!
//! ```text
//! cargo run --example balancing_client -- --service web --requests 300 --concurrency 8
//! cargo run --example balancing_client -- --dns 127.0.0.1:8600 --name web.service.trading-dc.
//! cargo run --example balancing_client -- --dns system --name web.service.trading-dc.
//! ```
//!
//! It reads the instances from sextant's HTTP API (blocking queries), or with `--dns` from SRV
//! records; each instance is asked `GET /` and answers with its ID (as `self_registering` does).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use sextant::client::{Balancer, Client, DnsServer, ServiceView, Strategy};

#[derive(Parser)]
struct Args {
    /// The service to call.
    #[arg(long, default_value = "web")]
    service: String,
    /// sextant's HTTP API.
    #[arg(long, env = "SEXTANT_HTTP_ADDR", default_value = "127.0.0.1:8500")]
    sextant: String,
    /// Read the instances from SRV records instead of the HTTP API: at this DNS server
    /// (`127.0.0.1:8600`), or through the system's resolvers (`system`).
    #[arg(long)]
    dns: Option<String>,
    /// The SRV name to look up with --dns [default: <service>.service.trading-dc.].
    #[arg(long)]
    name: Option<String>,
    /// Requests per balancer.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
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
    let mut view = match args.dns {
        Some(server) => {
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.service.trading-dc.", args.service));
            let server = match server.as_str() {
                "system" => DnsServer::System,
                address => DnsServer::At(address.parse().map_err(|e| format!("--dns {address}: {e}"))?),
            };
            ServiceView::dns(&name, server)?
        }
        None => Client::new(&args.sextant)?.watch(&args.service),
    };
    let instances = view.ready().await?;
    println!(
        "{} healthy instance(s) of {}",
        instances.instances().len(),
        args.service
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    for strategy in Strategy::ALL {
        let started = Instant::now();
        let counts = spread(&view.balancer(strategy), &http, args.requests, args.concurrency).await;
        let elapsed = started.elapsed();
        println!(
            "{strategy:?}: {} requests in {:.2} s",
            args.requests,
            elapsed.as_secs_f64()
        );
        for (instance, count) in &counts {
            let share = 100.0 * *count as f64 / args.requests as f64;
            println!("  {instance:<24} {count:>6}  {share:5.1}%");
        }
    }
    Ok(())
}

/// Sends `requests` requests through `balancer`, `concurrency` at a time; the count of answers by
/// the ID each instance answered with (`error: …` for requests that failed).
async fn spread(
    balancer: &Balancer,
    http: &reqwest::Client,
    requests: usize,
    concurrency: usize,
) -> BTreeMap<String, usize> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (balancer, http, counts, next) = (balancer.clone(), http.clone(), counts.clone(), next.clone());
        workers.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let answered = match balancer.pick() {
                    // The pick stays outstanding until the answer is in.
                    Ok(instance) => match http.get(format!("http://{}/", instance.socket_addr())).send().await {
                        Ok(response) => response.text().await.map(|id| id.trim().to_string()),
                        Err(error) => Err(error),
                    }
                    .unwrap_or_else(|error| format!("error: {error}")),
                    Err(error) => format!("error: {error}"),
                };
                *counts.lock().unwrap().entry(answered).or_insert(0) += 1;
            }
        });
    }
    workers.join_all().await;
    Arc::try_unwrap(counts).unwrap().into_inner().unwrap()
}
