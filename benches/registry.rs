//! The write side: memory per instance (the real server, registered over HTTP as clients do), the
//! cost of recompiling a large service, and what a large service changing 100 times a second
//! does to other services' answers.
//! Run with `cargo bench --bench registry`; figures are printed (and go in the README).

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{incoming, process, resident_bytes};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use sextant::api::wire::{parse_json, parse_registration};
use sextant::dns::answers::ServiceAnswerMap;
use sextant::dns::message::Transport;
use sextant::dns::{DnsEngine, DnsSettings, Reply, zones};
use sextant::model::{CheckId, Health, Node, NodeName};
use sextant::registry::Registry;

/// An in-memory registry and the DNS answers it compiles.
fn registry() -> (Arc<Registry>, Arc<ServiceAnswerMap>) {
    let answers = Arc::new(ServiceAnswerMap::new(&settings()));
    let local = Node::local(NodeName::parse(&settings().node_name).unwrap(), settings().node_addr);
    (Registry::new(local, answers.clone()), answers)
}

fn settings() -> DnsSettings {
    DnsSettings::new(
        Name::from_ascii("trading-dc.").unwrap(),
        "node1",
        "192.0.2.1".parse().unwrap(),
    )
}

fn register(registry: &Registry, body: serde_json::Value) {
    let instance = parse_registration(
        &parse_json(body.to_string().as_bytes()).unwrap(),
        &registry.local_node(),
    )
    .unwrap();
    let _ = registry.register(instance).expect("registers");
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)
}

fn instance_body(i: usize) -> serde_json::Value {
    let service = format!("svc-{}", i % 10_000);
    json!({"Name": service, "ID": format!("{service}-{i}"), "Address": ip(i), "Port": 8080,
           "Tags": ["v1", if i.is_multiple_of(2) { "blue" } else { "green" }], "Meta": {"version": "1.0"},
           "Check": {"TTL": "30s", "Status": "passing"}})
}

/// Memory as users get it: the real server (this build's binary), `instances` instances across
/// 10,000 services, each with a TTL check and two tags, registered over HTTP by 32 clients at
/// once; resident memory once registered, `settle` later, and after a restart on the same data.
fn memory(instances: usize, settle: Duration) {
    let data_dir = common::DataDir::new("registry");
    let zones = data_dir.0.join("no-zones");
    let running = process::start_binary(&zones, &data_dir.0);
    let resident = |running: &process::Running| resident_bytes(running.child.0.id());
    let idle = resident(&running);
    let start = Instant::now();
    let url = format!("http://{}/v1/agent/service/register", running.http);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = reqwest::Client::new();
        let mut clients = tokio::task::JoinSet::new();
        for lane in 0..32 {
            let (client, url) = (client.clone(), url.clone());
            clients.spawn(async move {
                for i in (lane..instances).step_by(32) {
                    let response = client.put(&url).json(&instance_body(i)).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                }
            });
        }
        clients.join_all().await;
    });
    let elapsed = start.elapsed();
    let live = resident(&running);
    std::thread::sleep(settle);
    let settled = resident(&running);
    drop(running);
    let running = process::start_binary(&zones, &data_dir.0);
    // Every restored check has its task by the time the server says it serves; a moment more
    // for the first probes and the allocator to settle.
    std::thread::sleep(Duration::from_secs(2).min(settle));
    let restarted = resident(&running);
    drop(running);
    let mb = |bytes: usize| bytes as f64 / 1e6;
    println!(
        "memory: {instances} instances in {} services with a TTL check each, registered over HTTP by 32 clients in {:.1} s ({:.0}/s): resident {:.1} MB ({} bytes/instance over the idle server's {:.1} MB); {:.1} MB {} s later; {:.1} MB restarted on the same data",
        instances.min(10_000),
        elapsed.as_secs_f64(),
        instances as f64 / elapsed.as_secs_f64(),
        mb(live),
        live.saturating_sub(idle) / instances,
        mb(idle),
        mb(settled),
        settle.as_secs(),
        mb(restarted)
    );
}

/// What the compiled DNS answers take of that, built in this process.
fn compiled_answers() {
    let (registry, answers) = registry();
    for i in 0..100_000 {
        register(&registry, instance_body(i));
    }
    println!(
        "compiled DNS answers: {} bytes/instance (100000 instances in 10000 services)",
        answers.heap_bytes() / 100_000
    );
}

fn query(name: &str) -> Vec<u8> {
    let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    msg.to_vec().unwrap()
}

/// Median and p99 of the hot answer, in ns, over `n` samples of 100 queries each.
fn answer_times(engine: &DnsEngine, q: &[u8], n: usize) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut out = Vec::with_capacity(4096);
    let counter = engine.stats().counter();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        for k in 0..100 {
            let reply = engine.answer_now(
                incoming(black_box(q), Transport::Udp, i + k),
                &mut out,
                runtime.handle(),
                &counter,
            );
            debug_assert_eq!(reply, Reply::Ready);
            black_box(out.len());
        }
        samples.push(t.elapsed().as_nanos() as f64 / 100.0);
    }
    samples.sort_by(f64::total_cmp);
    (samples[n / 2], samples[n * 99 / 100])
}

/// A 1,000-instance service flips one instance's health 100 times a second while a hot service
/// is answered; the hot answer's cost is compared with and without that churn.
fn churn() {
    let (registry, answers) = registry();
    let domain = Name::from_ascii("trading-dc.").unwrap();
    let zones = zones::ZoneSource::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones"),
        &domain,
        "192.0.2.1".parse().unwrap(),
    )
    .load()
    .unwrap();
    for i in 0..3 {
        register(
            &registry,
            json!({"Name": "hot", "ID": format!("hot-{i}"), "Address": ip(i), "Port": 80}),
        );
    }
    for i in 0..1000 {
        register(
            &registry,
            json!({"Name": "big", "ID": format!("big-{i}"), "Address": ip(1000 + i), "Port": 80,
                   "Check": {"TTL": "30s", "Status": "passing"}}),
        );
    }
    let engine = DnsEngine::new(&settings(), registry.clone(), answers, zones);
    let q = query("hot.service.trading-dc.");
    let quiet = answer_times(&engine, &q, 20_000);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let check = CheckId::parse("service:big-7").unwrap();
            let (mut changes, mut busy) = (0u32, Duration::ZERO);
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let status = if changes % 2 == 0 {
                    Health::Critical
                } else {
                    Health::Passing
                };
                let t = Instant::now();
                let _applied = registry.ttl_update(&check, status, "").unwrap();
                busy += t.elapsed();
                changes += 1;
                next += Duration::from_millis(10);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (changes, busy)
        })
    };
    let busy_answers = answer_times(&engine, &q, 20_000);
    stop.store(true, Ordering::Relaxed);
    let (changes, busy) = writer.join().unwrap();
    println!(
        "churn: hot A answer p50/p99 {:.0}/{:.0} ns quiet, {:.0}/{:.0} ns while a 1000-instance service changed {} times ({:.0} µs per recompile)",
        quiet.0,
        quiet.1,
        busy_answers.0,
        busy_answers.1,
        changes,
        busy.as_secs_f64() * 1e6 / f64::from(changes.max(1))
    );
}

fn main() {
    // `cargo test --benches` runs benchmarks once as a smoke test: keep that quick.
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        memory(1_000, Duration::ZERO);
        churn();
        return;
    }
    memory(100_000, Duration::from_secs(45));
    compiled_answers();
    churn();
}
