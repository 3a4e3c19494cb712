//! Registrations with the durable store: how many per second are acknowledged (each synced to
//! disk, or committed by etcd, before its 200), from one client and from 64 at once, and how long
//! after the 200 the instance is in a DNS answer; with the embedded store, then with the registry
//! in a 3-member etcd cluster on loopback ports. Run with `cargo bench --bench registration`.
//!
//! Clients and server share this process (and the machine's cores, with etcd's members): the
//! figures are end to end.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use sextant::{App, Config};

struct Plan {
    sequential: usize,
    concurrent: usize,
    clients: usize,
    visibility: usize,
}

const FULL: Plan = Plan {
    sequential: 3_000,
    concurrent: 20_000,
    clients: 64,
    visibility: 2_000,
};

/// `cargo test --benches` runs each benchmark once as a smoke test.
const SMOKE: Plan = Plan {
    sequential: 50,
    concurrent: 200,
    clients: 8,
    visibility: 50,
};

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let plan = if smoke { SMOKE } else { FULL };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(&plan, "embedded store, an fsync before each 200", None));
    let etcd = common::etcd::EtcdCluster::start(3);
    let endpoints = etcd.endpoints().split(',').map(str::to_owned).collect();
    runtime.block_on(run(
        &plan,
        "etcd, 3 members, committed before each 200",
        Some(endpoints),
    ));
}

async fn run(plan: &Plan, backend: &str, etcd: Option<Vec<String>>) {
    let data_dir = common::DataDir::new("registration");
    let config = Config {
        dns: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.0.clone(),
        zones: data_dir.0.join("no-zones"),
        dns_workers: Some(1),
        etcd: etcd.unwrap_or_default(),
        ..Config::default()
    };
    let app = App::bind(config).await.expect("server starts");
    let url = format!("http://{}/v1/agent/service/register", app.http_addr());
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));

    // One client, one registration at a time: each waits for its own sync.
    let started = Instant::now();
    for _ in 0..plan.sequential {
        register(&client, &url, next.fetch_add(1, Ordering::Relaxed)).await;
    }
    let single = plan.sequential as f64 / started.elapsed().as_secs_f64();

    // Many clients at once: registrations that arrive together share a sync.
    let started = Instant::now();
    let per_client = plan.concurrent / plan.clients;
    let tasks: Vec<_> = (0..plan.clients)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..per_client {
                    register(&client, &url, next.fetch_add(1, Ordering::Relaxed)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let many = (per_client * plan.clients) as f64 / started.elapsed().as_secs_f64();

    // From the 200 to the instance in a DNS answer: a new service each time, asked at once.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut delays = Vec::with_capacity(plan.visibility);
    for i in 0..plan.visibility {
        let service = format!("fresh-{i}");
        let body = json!({"Name": service, "ID": service, "Address": "10.9.9.9", "Port": 80});
        let response = client.put(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let acknowledged = Instant::now();
        assert_answers(&socket, app.dns_addr(), &format!("{service}.service.trading-dc.")).await;
        delays.push(acknowledged.elapsed());
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];

    println!(
        "registrations, {backend} ({} stored at the end):",
        next.load(Ordering::Relaxed)
    );
    println!("  1 client, sequential:   {single:>8.0} registrations/s");
    println!("  {} clients, concurrent: {many:>8.0} registrations/s", plan.clients);
    println!(
        "  200 → in a DNS answer:  p50 {:?}  p99 {:?}  max {:?} (one UDP query after the 200; never a miss)",
        at(0.5),
        at(0.99),
        delays[delays.len() - 1]
    );
    app.shutdown().await;
}

async fn register(client: &reqwest::Client, url: &str, n: usize) {
    let body = json!({"Name": format!("svc-{}", n % 500), "ID": format!("i-{n}"),
                      "Address": format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256), "Port": 80});
    let response = client.put(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Asks for `name` once: it must be answered (a miss would mean the 200 came before the DNS
/// answer could be given).
async fn assert_answers(socket: &tokio::net::UdpSocket, dns: SocketAddr, name: &str) {
    let mut query = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = [0u8; 512];
    let len = socket.recv(&mut buf).await.unwrap();
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert!(!reply.answers.is_empty(), "{name} not in DNS after its 200");
}
