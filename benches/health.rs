//! The health checker at scale: 10,000 instances, each with an HTTP check every 10 s against
//! local endpoints. Reports sextant's CPU use and how late probes start against their schedule.
//! Run with `cargo bench --bench health`; figures are printed (and go in the README).
//!
//! The endpoints run in a child process (this same binary, `HEALTH_BENCH_ENDPOINTS=<ports>`), so
//! the CPU measured is sextant's alone: its probes, the registry, the idle DNS workers.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::cpu_time;
use serde_json::json;
use sextant::{App, Config};

struct Plan {
    checks: usize,
    ports: usize,
    interval: &'static str,
    warm_up: Duration,
    measure: Duration,
}

const FULL: Plan = Plan {
    checks: 10_000,
    ports: 50,
    interval: "10s",
    // Past the first, staggered round, so every connection is open and every check passing.
    warm_up: Duration::from_secs(15),
    measure: Duration::from_secs(30),
};

/// `cargo test --benches` runs each benchmark once as a smoke test: a small, quick round.
const SMOKE: Plan = Plan {
    checks: 200,
    ports: 4,
    interval: "1s",
    warm_up: Duration::from_secs(2),
    measure: Duration::from_secs(2),
};

fn main() {
    if let Ok(ports) = std::env::var("HEALTH_BENCH_ENDPOINTS") {
        serve_endpoints(ports.parse().expect("a number of ports"));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let plan = if smoke { SMOKE } else { FULL };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(&plan));
}

/// The endpoints: `ports` listeners answering 200 to anything; their ports go to stdout, one line.
/// They stop when the parent closes stdin.
fn serve_endpoints(ports: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut bound = Vec::new();
        for _ in 0..ports {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            bound.push(listener.local_addr().unwrap().port().to_string());
            let app = Router::new().route("/health/{n}", get(|| async { "ok" }));
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        println!("{}", bound.join(" "));
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
    });
}

async fn run(plan: &Plan) {
    let mut endpoints = Command::new(std::env::current_exe().unwrap())
        .env("HEALTH_BENCH_ENDPOINTS", plan.ports.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the endpoint process");
    let mut line = String::new();
    BufReader::new(endpoints.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(ports.len(), plan.ports, "the endpoint process did not start");

    // A data folder of its own: the default ("data") would bring back the last run's instances.
    let data_dir = common::DataDir::new("health");
    let config = Config {
        data_dir: data_dir.0.clone(),
        dns: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        zones: concat!(env!("CARGO_MANIFEST_DIR"), "/zones").into(),
        node_name: Some("bench".into()),
        ..Config::default()
    };
    let app = App::bind(config).await.expect("sextant starts");
    let client = reqwest::Client::new();
    let register_url = format!("http://{}/v1/agent/service/register", app.http_addr());
    let started = Instant::now();
    for i in 0..plan.checks {
        let port = ports[i % ports.len()];
        let body = json!({
            "Name": format!("svc-{}", i % 1000), "ID": format!("inst-{i}"),
            "Address": format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256), "Port": 8080,
            "Check": {"HTTP": format!("http://127.0.0.1:{port}/health/{i}"), "Interval": plan.interval, "Timeout": "2s"},
        });
        let response = client.put(&register_url).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "registration refused");
    }
    println!(
        "registered {} instances with HTTP checks every {} in {:.1?}",
        plan.checks,
        plan.interval,
        started.elapsed()
    );

    tokio::time::sleep(plan.warm_up).await;
    let registry = app.registry();
    let passing = registry
        .instances()
        .iter()
        .filter(|i| i.health() == sextant::model::Health::Passing)
        .count();
    assert_eq!(passing, plan.checks, "every check passes after the first round");
    assert_eq!(app.health().running(), plan.checks);

    app.health().lateness().clear();
    let (cpu0, wall0) = (cpu_time("self"), Instant::now());
    tokio::time::sleep(plan.measure).await;
    let (cpu, wall) = (cpu_time("self") - cpu0, wall0.elapsed());
    let lateness = app.health().lateness().summary().expect("probes ran");

    println!(
        "{} HTTP checks, {} interval, {} endpoint ports, measured over {:.0?}:",
        plan.checks, plan.interval, plan.ports, wall
    );
    println!(
        "  probes: {} ({:.0}/s)",
        lateness.samples,
        lateness.samples as f64 / wall.as_secs_f64()
    );
    println!(
        "  sextant CPU: {:.1}% of one core ({:.1} µs per probe)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / lateness.samples as f64
    );
    println!(
        "  lateness vs schedule: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        lateness.p50, lateness.p99, lateness.max
    );
    app.shutdown().await;
    drop(endpoints.stdin.take());
    let _ = endpoints.wait();
}
