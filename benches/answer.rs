//! The DNS answer path alone: query bytes in, response bytes out, as a UDP worker answers.
//! A hot 3-instance service (A), a random service (A), a 100-instance service (SRV over TCP,
//! every record) and NXDOMAIN, with 10 and with 100,000 registered services: the cost must not
//! depend on the count.

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use common::incoming;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use sextant::api::wire::{parse_json, parse_registration};
use sextant::dns::answers::ServiceAnswerMap;
use sextant::dns::message::Transport;
use sextant::dns::{DnsEngine, DnsSettings, Reply, zones};
use sextant::model::{Node, NodeName};
use sextant::registry::Registry;

fn register(registry: &Registry, body: serde_json::Value) {
    let instance = parse_registration(
        &parse_json(body.to_string().as_bytes()).unwrap(),
        &registry.local_node(),
    )
    .unwrap();
    let _ = registry.register(instance).expect("registers");
}

fn engine(services: usize) -> DnsEngine {
    let domain = Name::from_ascii("trading-dc.").unwrap();
    let node = "192.0.2.1".parse().unwrap();
    let settings = DnsSettings::new(domain.clone(), "node1", node);
    let answers = Arc::new(ServiceAnswerMap::new(&settings));
    let local = Node::local(NodeName::parse("node1").unwrap(), node);
    let registry = Registry::new(local, answers.clone());
    let zones = zones::ZoneSource::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones"), &domain, node)
        .load()
        .unwrap();
    for i in 0..3 {
        register(
            &registry,
            json!({"Name": "hot", "ID": format!("hot-{i}"), "Address": format!("10.0.0.{}", i + 1), "Port": 8080}),
        );
    }
    for i in 0..100 {
        register(
            &registry,
            json!({"Name": "wide", "ID": format!("wide-{i}"), "Address": format!("10.1.0.{}", i + 1), "Port": 9000}),
        );
    }
    for i in 0..services.saturating_sub(2) {
        let ip = format!("10.{}.{}.{}", 2 + i / 65536, (i / 256) % 256, i % 256);
        register(
            &registry,
            json!({"Name": format!("svc-{i}"), "Address": ip, "Port": 80}),
        );
    }
    DnsEngine::new(&settings, registry, answers, zones)
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(0x4242, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    msg.to_vec().unwrap()
}

fn answer_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("answer");
    for services in [10usize, 100_000] {
        let engine = engine(services);
        let cases = [
            ("hot A", query("hot.service.trading-dc.", RecordType::A), Transport::Udp),
            (
                "100-instance SRV tcp",
                query("wide.service.trading-dc.", RecordType::SRV),
                Transport::Tcp,
            ),
            (
                "NXDOMAIN",
                query("nosuch.service.trading-dc.", RecordType::A),
                Transport::Udp,
            ),
        ];
        // A random service each time, as when every client asks for a different peer: with
        // 100,000 services its answers are rarely in the CPU's caches.
        let mut state = 0x2545_f491_u64;
        let random: Vec<Vec<u8>> = (0..65_536)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (state >> 33) as usize % services.saturating_sub(2).max(1);
                query(&format!("svc-{i}.service.trading-dc."), RecordType::A)
            })
            .collect();
        let mut out = Vec::with_capacity(65535);
        let counter = engine.stats().counter();
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("random service A", services), |b| {
            b.iter(|| {
                next = next.wrapping_add(1);
                let q = &random[next % random.len()];
                let reply = engine.answer_now(
                    incoming(black_box(q), Transport::Udp, next),
                    &mut out,
                    runtime.handle(),
                    &counter,
                );
                debug_assert_eq!(reply, Reply::Ready);
                black_box(out.len())
            })
        });
        for (label, q, transport) in cases {
            let mut out = Vec::with_capacity(65535);
            let counter = engine.stats().counter();
            let mut rotation = 0usize;
            group.bench_with_input(BenchmarkId::new(label, services), &q, |b, q| {
                b.iter(|| {
                    rotation = rotation.wrapping_add(1);
                    let reply = engine.answer_now(
                        incoming(black_box(q), transport, rotation),
                        &mut out,
                        runtime.handle(),
                        &counter,
                    );
                    debug_assert_eq!(reply, Reply::Ready);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, answer_path);
criterion_main!(benches);
