//! The fast path against the hickory path: for every query form the fast path answers, both
//! must give the same response, record by record (order aside: both rotate).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use serde_json::json;
use sextant::api::wire::{parse_json, parse_registration};
use sextant::dns::answers::{AnswerCompiler, ServiceAnswerMap};
use sextant::dns::fast::Outcome;
use sextant::dns::message::Transport;
use sextant::dns::{DnsEngine, zones};
use sextant::registry::Registry;

/// Both paths over one registry, with instance Meta as TXT records in SRV answers.
fn engine() -> (Arc<Registry>, DnsEngine) {
    engine_with_limit(0)
}

fn engine_with_limit(a_record_limit: usize) -> (Arc<Registry>, DnsEngine) {
    let domain = Name::from_ascii("trading-dc.").unwrap();
    let node_addr = "192.0.2.1".parse().unwrap();
    let mut compiler = AnswerCompiler::new(domain.clone(), 5, node_addr, false);
    compiler.meta_txt = true;
    compiler.a_record_limit = a_record_limit;
    let answers = Arc::new(ServiceAnswerMap::new(compiler));
    let registry = Registry::new(node_addr, answers.clone());
    let zones = zones::ZoneSource::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones"),
        &domain,
        node_addr,
    )
    .load()
    .unwrap();
    (registry.clone(), DnsEngine::new(registry, answers, zones, "node1"))
}

fn register(registry: &Registry, body: serde_json::Value) {
    let instance = parse_registration(&parse_json(body.to_string().as_bytes()).unwrap()).unwrap();
    let _ = registry.register(instance).expect("registers");
}

fn populate(registry: &Registry) {
    register(
        registry,
        json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 8080, "Tags": ["primary"],
               "Meta": {"version": "1.2", "rfc1035-raw": "v=1", "long": "x".repeat(400)}}),
    );
    register(
        registry,
        json!({"Name": "orders", "ID": "o2", "Address": "10.0.0.2", "Port": 8081, "Tags": ["replica"],
                              "Weights": {"Passing": 5, "Warning": 2}, "Check": {"TTL": "9s", "Status": "warning"}}),
    );
    register(
        registry,
        json!({"Name": "orders", "ID": "o3", "Address": "10.0.0.3", "Port": 8082,
                              "Check": {"TTL": "9s", "Status": "critical"}}),
    );
    register(
        registry,
        json!({"Name": "quotes", "ID": "q1", "Address": "2001:db8::1", "Port": 9000, "Meta": {"zone": "a"}}),
    );
    register(
        registry,
        json!({"Name": "quotes", "ID": "q2", "Address": "10.0.1.1", "Port": 9000}),
    );
    register(
        registry,
        json!({"Name": "external", "Address": "db.example.com", "Port": 5432}),
    );
    register(registry, json!({"Name": "local", "Port": 7000}));
    register(registry, json!({"Name": "down", "Check": {"TTL": "9s"}}));
    for i in 0..40 {
        register(
            registry,
            json!({"Name": "big", "ID": format!("b{i}"), "Address": format!("10.9.0.{}", i + 1), "Port": 1000 + i}),
        );
    }
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::new(0x1234, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records.iter().map(|r| r.to_string().to_ascii_lowercase()).collect();
    out.sort();
    out
}

const SRC: &str = "127.0.0.1:5353";

#[tokio::test]
async fn fast_and_hickory_paths_give_the_same_answers() {
    let (registry, engine) = engine();
    populate(&registry);
    let names = [
        "orders.service.trading-dc.",
        "ORDERS.Service.Trading-DC.",
        "primary.orders.service.trading-dc.",
        "replica.orders.service.trading-dc.",
        "_orders._tcp.service.trading-dc.",
        "_orders._replica.service.trading-dc.",
        "nosuchtag.orders.service.trading-dc.",
        "quotes.service.trading-dc.",
        "external.service.trading-dc.",
        "local.service.trading-dc.",
        "down.service.trading-dc.",
        "big.service.trading-dc.",
        "nosuch.service.trading-dc.",
        "a.b.c.service.trading-dc.",
        "service.trading-dc.",
        "_tcp.service.trading-dc.",
        "_replica.service.trading-dc.",
        "addr.trading-dc.",
        "0a000001.addr.trading-dc.",
        "20010db8000000000000000000000001.addr.trading-dc.",
        "xyz.addr.trading-dc.",
        "node1.node.trading-dc.",
        "other.node.trading-dc.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::MX,
    ];
    let src: SocketAddr = SRC.parse().unwrap();
    let mut compared = 0;
    for name in names {
        for rtype in types {
            for edns in [None, Some(1232), Some(4096)] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let q = query(name, rtype, edns);
                    let mut fast = Vec::new();
                    assert_eq!(
                        engine.answer_fast(&q, &mut fast, transport, 7),
                        Outcome::Answered,
                        "{name} {rtype}"
                    );
                    let slow = engine
                        .answer_hickory(&q, src, transport)
                        .await
                        .expect("hickory answers");
                    let (f, s) = (Message::from_vec(&fast).unwrap(), Message::from_vec(&slow).unwrap());
                    let what = format!("{name} {rtype} edns={edns:?} {transport:?}");
                    assert_eq!(f.metadata.response_code, s.metadata.response_code, "{what}");
                    assert_eq!(f.metadata.authoritative, s.metadata.authoritative, "{what}");
                    assert_eq!(f.metadata.recursion_desired, s.metadata.recursion_desired, "{what}");
                    assert_eq!(f.metadata.id, 0x1234, "{what}");
                    assert_eq!(f.metadata.message_type, MessageType::Response, "{what}");
                    assert_eq!(f.queries, s.queries, "{what}");
                    if s.metadata.truncation && !f.metadata.truncation {
                        // Hickory sets TC when additional records do not fit; the fast path sends
                        // the whole answer section and the additional records that fit (RFC 2181
                        // §9). Both against the complete answer, over TCP:
                        let whole = engine.answer_hickory(&q, src, Transport::Tcp).await.unwrap();
                        let whole = Message::from_vec(&whole).unwrap();
                        assert_eq!(sorted(&f.answers), sorted(&whole.answers), "{what}: answers");
                        let all = sorted(&whole.additionals);
                        let sent: Vec<String> = sorted(&f.additionals)
                            .into_iter()
                            .filter(|r| !r.contains("opt"))
                            .collect();
                        assert!(sent.iter().all(|r| all.contains(r)), "{what}: additionals");
                        continue;
                    }
                    if f.metadata.truncation || s.metadata.truncation {
                        assert!(f.metadata.truncation, "{what}: the fast path truncates too");
                        // Unlike hickory, the fast path keeps the OPT record on a truncated answer.
                        assert_eq!(f.edns.is_some(), edns.is_some(), "{what}");
                        continue;
                    }
                    assert_eq!(
                        f.edns.as_ref().map(Edns::max_payload),
                        s.edns.as_ref().map(Edns::max_payload),
                        "{what}"
                    );
                    assert_eq!(sorted(&f.answers), sorted(&s.answers), "{what}: answers");
                    assert_eq!(sorted(&f.authorities), sorted(&s.authorities), "{what}: authorities");
                    assert_eq!(sorted(&f.additionals), sorted(&s.additionals), "{what}: additionals");
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 600, "compared {compared} responses record by record");
}

/// The A-record limit applies on both paths, after rotation: every answer holds exactly the
/// limit, and rotation reaches every instance.
#[tokio::test]
async fn the_a_record_limit_holds_on_both_paths() {
    let (registry, engine) = engine_with_limit(3);
    populate(&registry);
    let src: SocketAddr = SRC.parse().unwrap();
    for rtype in [RecordType::A, RecordType::ANY] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let (mut fast_seen, mut slow_seen) = (HashSet::new(), HashSet::new());
            for rotation in 0..200 {
                let q = query("big.service.trading-dc.", rtype, None);
                let mut fast = Vec::new();
                assert_eq!(
                    engine.answer_fast(&q, &mut fast, transport, rotation),
                    Outcome::Answered
                );
                let slow = engine.answer_hickory(&q, src, transport).await.unwrap();
                for (bytes, seen) in [(&fast, &mut fast_seen), (&slow, &mut slow_seen)] {
                    let reply = Message::from_vec(bytes).unwrap();
                    assert_eq!(reply.answers.len(), 3, "{rtype} {transport:?}: {reply:?}");
                    seen.extend(reply.answers.iter().map(|r| r.data.to_string()));
                }
            }
            assert_eq!(fast_seen.len(), 40, "fast path, {rtype} {transport:?}");
            assert_eq!(slow_seen.len(), 40, "hickory path, {rtype} {transport:?}");
        }
    }
    // SRV is not limited, on either path.
    let q = query("big.service.trading-dc.", RecordType::SRV, None);
    let mut fast = Vec::new();
    engine.answer_fast(&q, &mut fast, Transport::Tcp, 0);
    let slow = engine.answer_hickory(&q, src, Transport::Tcp).await.unwrap();
    assert_eq!(Message::from_vec(&fast).unwrap().answers.len(), 40);
    assert_eq!(Message::from_vec(&slow).unwrap().answers.len(), 40);
}

#[tokio::test]
async fn what_the_fast_path_leaves_to_hickory() {
    let (registry, engine) = engine();
    populate(&registry);
    let mut out = Vec::new();
    let fallback = |q: &[u8], out: &mut Vec<u8>| engine.answer_fast(q, out, Transport::Udp, 0) == Outcome::Fallback;
    // Zone-file names and names outside the zone.
    for name in ["trading-dc.", "ns1.trading-dc.", "www.trading-dc.", "example.com.", "."] {
        assert!(fallback(&query(name, RecordType::A, None), &mut out), "{name}");
    }
    // EDNS version 1 (hickory answers BADVERS), an unknown EDNS option, another class, another
    // opcode, a response, a compressed question, trailing bytes, garbage.
    let mut v1 = Message::from_vec(&query("orders.service.trading-dc.", RecordType::A, Some(1232))).unwrap();
    v1.edns.as_mut().unwrap().set_version(1);
    assert!(fallback(&v1.to_vec().unwrap(), &mut out));
    let mut chaos = Message::new(1, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("orders.service.trading-dc.").unwrap(), RecordType::A);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    assert!(fallback(&chaos.to_vec().unwrap(), &mut out));
    let mut notify = Message::from_vec(&query("orders.service.trading-dc.", RecordType::SOA, None)).unwrap();
    notify.metadata.op_code = OpCode::Notify;
    assert!(fallback(&notify.to_vec().unwrap(), &mut out));
    let mut response = query("orders.service.trading-dc.", RecordType::A, None);
    response[2] |= 0x80;
    assert!(fallback(&response, &mut out));
    let mut trailing = query("orders.service.trading-dc.", RecordType::A, None);
    trailing.push(0);
    assert!(fallback(&trailing, &mut out));
    let mut nsid = query("orders.service.trading-dc.", RecordType::A, Some(1232));
    let len = nsid.len();
    nsid[len - 2..].copy_from_slice(&[0, 4]); // OPT RDLENGTH 4
    nsid.extend_from_slice(&[0, 3, 0, 0]); // NSID, empty
    assert!(fallback(&nsid, &mut out));
    for garbage in [&[][..], &[0u8; 11][..], &[0xff; 40][..]] {
        assert!(fallback(garbage, &mut out));
    }
    // The hickory path drops what deserves no answer and says FORMERR to the rest.
    let src: SocketAddr = SRC.parse().unwrap();
    assert!(
        engine.answer_hickory(&response, src, Transport::Udp).await.is_none(),
        "responses are never answered"
    );
    assert!(engine.answer_hickory(&[0u8; 5], src, Transport::Udp).await.is_none());
    let formerr = engine
        .answer_hickory(&[0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff], src, Transport::Udp)
        .await
        .unwrap();
    assert_eq!(
        Message::from_vec(&formerr).unwrap().metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
}

#[tokio::test]
async fn udp_truncation_keeps_whole_records_and_fits_the_limit() {
    let (registry, engine) = engine();
    populate(&registry);
    for (edns, limit) in [(None, 512), (Some(512), 512), (Some(1232), 1232)] {
        let mut out = Vec::new();
        let q = query("big.service.trading-dc.", RecordType::SRV, edns);
        assert_eq!(engine.answer_fast(&q, &mut out, Transport::Udp, 3), Outcome::Answered);
        assert!(out.len() <= limit, "{} bytes for a limit of {limit}", out.len());
        let msg = Message::from_vec(&out).expect("a truncated answer is still well-formed");
        assert!(msg.metadata.truncation);
        assert!(!msg.answers.is_empty() && msg.answers.len() < 40);
        assert!(msg.additionals.iter().all(|r| r.record_type() == RecordType::OPT));
    }
    // Over TCP, everything.
    let mut out = Vec::new();
    engine.answer_fast(
        &query("big.service.trading-dc.", RecordType::SRV, None),
        &mut out,
        Transport::Tcp,
        3,
    );
    let msg = Message::from_vec(&out).unwrap();
    assert!(!msg.metadata.truncation);
    assert_eq!((msg.answers.len(), msg.additionals.len()), (40, 40));
}

/// The fast path parses untrusted bytes by hand: mutated and random packets must never make it
/// panic, and whatever it answers must be a well-formed DNS message.
#[tokio::test]
async fn mutated_and_random_packets_never_break_the_fast_path() {
    let (registry, engine) = engine();
    populate(&registry);
    let seeds = [
        query("orders.service.trading-dc.", RecordType::SRV, Some(1232)),
        query("primary.orders.service.trading-dc.", RecordType::A, None),
        query("0a000001.addr.trading-dc.", RecordType::ANY, Some(512)),
        query("big.service.trading-dc.", RecordType::SRV, None),
    ];
    // xorshift: deterministic, so a failure is reproducible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    let (mut answered, mut total) = (0, 0);
    for round in 0..100_000u64 {
        let mut packet = seeds[(round % 4) as usize].clone();
        match next() % 4 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % packet.len();
                    packet[at] = next() as u8;
                }
            }
            1 => packet.truncate((next() as usize) % packet.len()),
            2 => packet.extend((0..next() % 16).map(|_| next() as u8)),
            _ => packet = (0..next() % 80).map(|_| next() as u8).collect(),
        }
        let transport = if round % 2 == 0 { Transport::Udp } else { Transport::Tcp };
        total += 1;
        if engine.answer_fast(&packet, &mut out, transport, round as usize) == Outcome::Answered {
            answered += 1;
            let reply = Message::from_vec(&out).unwrap_or_else(|e| panic!("bad response to {packet:02x?}: {e}"));
            assert_eq!(reply.metadata.message_type, MessageType::Response);
            if transport == Transport::Udp {
                assert!(out.len() <= 4096, "a UDP answer within the client's buffer");
            }
        }
    }
    assert!(
        answered > 1000,
        "mutations that stay valid are answered ({answered} of {total})"
    );
}
