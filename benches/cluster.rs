//! A sextant cluster on a 3-member etcd (loopback ports), end to end with real processes:
//! - how long after a registration's 200 from server A server B answers it over DNS;
//! - what TTL heartbeats cost etcd: 10,000 instances heartbeating every 10 s, through both
//!   servers, in etcd revisions (writes) and raft proposals per second;
//! - a cold start: a server joining a cluster that holds 100,000 instances, time to serve (and to
//!   answer the last instance written) and its resident memory;
//! - failover: from `kill -9` of the server that runs an HTTP check to the first probe by another
//!   (the default 10 s lease).
//!
//! Run with `cargo bench --bench cluster`; `cargo test --benches` runs it small. The servers,
//! etcd's members and the load share the machine's cores: the figures are end to end.

mod common;

/// An HTTP endpoint to probe that counts its probes: the tests' own.
#[path = "../tests/it/common/endpoint.rs"]
#[allow(dead_code)] // the benchmark counts probes only
mod endpoint;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::process::{Running, resident_bytes, signal, start_binary_with};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;

struct Plan {
    propagation: usize,
    heartbeating: usize,
    heartbeat_window: Duration,
    cold_start: usize,
    /// The servers' lease (`--etcd-lease-ttl`); `None`: the default.
    lease: Option<&'static str>,
}

const FULL: Plan = Plan {
    propagation: 2_000,
    heartbeating: 10_000,
    heartbeat_window: Duration::from_secs(30),
    cold_start: 100_000,
    lease: None,
};

const SMOKE: Plan = Plan {
    propagation: 50,
    heartbeating: 200,
    heartbeat_window: Duration::from_secs(3),
    cold_start: 1_000,
    lease: Some("3s"),
};

/// How often each instance heartbeats, and its TTL.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
const TTL: &str = "30s";

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let plan = if smoke { SMOKE } else { FULL };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(&plan));
}

fn server(etcd: &EtcdCluster, plan: &Plan, node: &str) -> Running {
    let data = common::DataDir::new(&format!("cluster-{node}"));
    let endpoints = etcd.endpoints();
    let mut args = vec!["--etcd", &endpoints, "--etcd-prefix", "/bench/", "--node-name", node];
    if let Some(lease) = plan.lease {
        args.extend(["--etcd-lease-ttl", lease]);
    }
    let zones = data.0.join("no-zones");
    start_binary_with(&zones, &data.0, &args)
}

async fn run(plan: &Plan) {
    let etcd = EtcdCluster::start(3);
    let a = server(&etcd, plan, "sextant-a");
    let b = server(&etcd, plan, "sextant-b");
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();

    // Registered through A, answered by B.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut delays = Vec::with_capacity(plan.propagation);
    for i in 0..plan.propagation {
        let name = format!("fresh-{i}");
        register(&client, a.http, &name, &name, None).await;
        let acknowledged = Instant::now();
        while !answers(&socket, b.dns, &format!("{name}.service.trading-dc.")).await {}
        delays.push(acknowledged.elapsed());
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!("cluster on a 3-member etcd, two servers:");
    println!(
        "  registered through A -> answered by B: p50 {:?}  p99 {:?}  max {:?} ({} registrations, B asked until it answers)",
        at(0.5),
        at(0.99),
        delays[delays.len() - 1],
        plan.propagation
    );

    // Heartbeats: every instance every 10 s, half through A, half through B.
    let ids: Vec<String> = (0..plan.heartbeating).map(|i| format!("beat-{i}")).collect();
    let ids_len = ids.len();
    in_parallel(&ids, 64, |id| {
        let client = client.clone();
        // A hundred instances to a service.
        let service = format!(
            "beating-{}",
            id.trim_start_matches("beat-").parse::<usize>().unwrap_or(0) % (ids_len / 100).max(1)
        );
        async move { register(&client, a.http, &service, &id, Some(TTL)).await }
    })
    .await;
    let servers = [a.http, b.http];
    let beats = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let first_round_done = Instant::now() + HEARTBEAT_EVERY;
    let stop_at = first_round_done + plan.heartbeat_window;
    let heartbeaters: Vec<_> = (0..64)
        .map(|k| {
            let (client, beats) = (client.clone(), beats.clone());
            let mine: Vec<(String, SocketAddr)> = ids
                .iter()
                .enumerate()
                .skip(k)
                .step_by(64)
                .map(|(i, id)| (format!("service:{id}"), servers[i % 2]))
                .collect();
            tokio::spawn(async move {
                // Each instance at its own offset in the period.
                let spacing = HEARTBEAT_EVERY / mine.len().max(1) as u32;
                let mut next = Instant::now() + spacing * k as u32 / 64;
                'beating: loop {
                    for (check, server) in &mine {
                        if next >= stop_at {
                            break 'beating;
                        }
                        tokio::time::sleep_until(next.into()).await;
                        next += spacing;
                        let url = format!("http://{server}/v1/agent/check/pass/{check}");
                        let response = client.put(url).send().await.unwrap();
                        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
                        beats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The first round takes a lease per check (a write each); after it, a heartbeat renews one.
    tokio::time::sleep_until(first_round_done.into()).await;
    let (beats0, metrics0) = (
        beats.load(std::sync::atomic::Ordering::Relaxed),
        etcd_metrics(&client, &etcd).await,
    );
    let window = Instant::now();
    for task in heartbeaters {
        task.await.unwrap();
    }
    let seconds = window.elapsed().as_secs_f64();
    let metrics1 = etcd_metrics(&client, &etcd).await;
    let rate = |key: &str| (metrics1.get(key).unwrap_or(&0.0) - metrics0.get(key).unwrap_or(&0.0)) / seconds;
    println!(
        "  {} instances, TTL {TTL}, a heartbeat every {:?} through A or B: {:.0} heartbeats/s -> etcd {:.1} writes (revisions)/s, {:.1} raft proposals/s",
        plan.heartbeating,
        HEARTBEAT_EVERY,
        (beats.load(std::sync::atomic::Ordering::Relaxed) - beats0) as f64 / seconds,
        rate("etcd_debugging_mvcc_current_revision"),
        rate("etcd_server_proposals_committed_total"),
    );

    // A cluster that holds many instances, and a server joining it.
    let held: Vec<usize> = (0..plan.cold_start).collect();
    let started = Instant::now();
    in_parallel(&held, 64, |i| {
        let client = client.clone();
        async move { register(&client, a.http, &format!("svc-{}", i % 500), &format!("held-{i}"), None).await }
    })
    .await;
    let filled = started.elapsed();
    let last = format!("svc-{}.service.trading-dc.", (plan.cold_start - 1) % 500);
    let started = Instant::now();
    let c = server(&etcd, plan, "sextant-c");
    let serving = started.elapsed();
    while !answers(&socket, c.dns, &last).await {}
    let answering = started.elapsed();
    println!(
        "  cold start with {} instances in etcd (written in {filled:.1?}): serving after {serving:.2?}, answering after {answering:.2?}, resident memory {} MiB",
        plan.cold_start + plan.heartbeating + plan.propagation,
        resident_bytes(c.child.0.id()) / (1 << 20)
    );

    // Failover: the server that runs an HTTP check killed; the first probe by another.
    let endpoint = endpoint::HttpEndpoint::start(200).await;
    let body = json!({"Name": "probed", "ID": "probed-1", "Port": 80,
                      "Check": {"HTTP": endpoint.url("/"), "Interval": "1s"}});
    let response = client
        .put(format!("http://{}/v1/agent/service/register", a.http))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    while endpoint.hits() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Which server runs it: the one whose pause stops the probes.
    let mut servers = vec![a, b, c];
    let mut owner = None;
    for (i, server) in servers.iter().enumerate() {
        signal(server, "-STOP");
        let before = endpoint.hits();
        // Well within the lease: nobody takes the check over meanwhile.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let paused = endpoint.hits() == before;
        signal(server, "-CONT");
        if paused {
            owner = Some(i);
            break;
        }
    }
    let owner = servers.remove(owner.expect("one server runs the check"));
    let before = endpoint.hits();
    let killed = Instant::now();
    let mut child = owner.child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    while endpoint.hits() <= before + 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "  failover: kill -9 of the server running an HTTP check (1 s interval, lease {}) -> probed by another after {:.2?}",
        plan.lease.unwrap_or("10s (default)"),
        killed.elapsed()
    );
}

async fn register(client: &reqwest::Client, http: SocketAddr, service: &str, id: &str, ttl: Option<&str>) {
    let mut body = json!({"Name": service, "ID": id, "Address": "10.9.9.9", "Port": 80});
    if let Some(ttl) = ttl {
        body["Check"] = json!({"TTL": ttl, "Status": "passing"});
    }
    let response = client
        .put(format!("http://{http}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
}

/// Runs `each` over `items`, `width` at a time.
async fn in_parallel<T: Clone, F: Future<Output = ()> + Send + 'static>(
    items: &[T],
    width: usize,
    each: impl Fn(T) -> F,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(width));
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let work = each(item.clone());
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Asks for `name` once: whether it is answered.
async fn answers(socket: &tokio::net::UdpSocket, dns: SocketAddr, name: &str) -> bool {
    let mut query = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = [0u8; 512];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .expect("a DNS reply")
        .unwrap();
    !Message::from_vec(&buf[..len]).unwrap().answers.is_empty()
}

/// The counters of the first member's Prometheus metrics.
async fn etcd_metrics(client: &reqwest::Client, etcd: &EtcdCluster) -> std::collections::HashMap<String, f64> {
    let first = etcd.endpoints().split(',').next().unwrap().to_owned();
    let text = client
        .get(format!("{first}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}
