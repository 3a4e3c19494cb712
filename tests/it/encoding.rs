//! The answer writer's encoding: every response decodes with hickory-proto and holds what the
//! registry holds, as the compiler builds it in hickory's own records; a query that has to be read
//! in full (a compressed name, EDNS options, another class or opcode) gets the same answer, or
//! the error its form calls for; mutated and random packets never break the parser.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use serde_json::json;
use sextant::api::wire::{parse_json, parse_registration};
use sextant::dns::answers::ServiceAnswerMap;
use sextant::dns::message::Transport;
use sextant::dns::{DnsEngine, Incoming, Reply};
use sextant::registry::Registry;

struct Fixture {
    registry: Arc<Registry>,
    answers: Arc<ServiceAnswerMap>,
    engine: DnsEngine,
}

/// One registry and its DNS server, with instance Meta as TXT records in SRV answers.
fn fixture(a_record_limit: usize) -> Fixture {
    let mut settings = crate::common::dns_settings();
    settings.service_ttl = 5;
    settings.node_ttl = 9;
    settings.meta_txt = true;
    settings.a_record_limit = a_record_limit;
    let (registry, answers, engine) = crate::common::registry_and_dns(&settings);
    populate(&registry);
    Fixture {
        registry,
        answers,
        engine,
    }
}

fn register(registry: &Registry, body: serde_json::Value) {
    let instance = parse_registration(
        &parse_json(body.to_string().as_bytes()).unwrap(),
        &registry.local_node(),
    )
    .unwrap();
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

const SRC: &str = "127.0.0.1:5353";

async fn answer(engine: &DnsEngine, query: &[u8], transport: Transport, rotation: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let incoming = Incoming {
        packet: query,
        from: SRC.parse().unwrap(),
        transport,
        rotation,
    };
    match engine.answer(incoming, &mut out).await {
        Reply::Ready => Some(out),
        Reply::Nothing => None,
        Reply::Forward => panic!("no forwarder is configured"),
    }
}

async fn decoded(engine: &DnsEngine, query: &[u8], transport: Transport) -> Message {
    let bytes = answer(engine, query, transport, 7).await.expect("an answer");
    Message::from_vec(&bytes).unwrap_or_else(|e| panic!("undecodable answer {bytes:02x?}: {e}"))
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records.iter().map(Record::to_string).collect();
    out.sort();
    out
}

/// Additional records point at the question for the domain: it comes back as asked.
fn sorted_lower(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records.iter().map(|r| r.to_string().to_ascii_lowercase()).collect();
    out.sort();
    out
}

/// What a name is, for the registry.
enum Meaning {
    Service(&'static str, Option<&'static str>),
    Address(&'static str, u32),
    NoData,
    NxDomain,
}

/// The records the registry holds for a service (or one of its tags), built by the compiler as
/// hickory records: the answer section for `rtype` (under `owner`, the name as asked) and the
/// additional section.
fn registry_records(
    fixture: &Fixture,
    service: &str,
    tag: Option<&str>,
    rtype: RecordType,
    owner: &Name,
) -> Option<(Vec<String>, Vec<String>)> {
    let entry = fixture.registry.service(service)?;
    if let Some(tag) = tag
        && !entry.instances.iter().any(|i| i.has_tag(tag))
    {
        return None;
    }
    let records = fixture.answers.compiler().records(&entry.name, tag, &entry.instances);
    let (answers, additionals) = match rtype {
        RecordType::A => (records.a, vec![]),
        RecordType::AAAA => (records.aaaa, vec![]),
        // RFC 8482: one RRset, the IPv4 addresses when there are any.
        RecordType::ANY if records.a.is_empty() => (records.aaaa, vec![]),
        RecordType::ANY => (records.a, vec![]),
        RecordType::SRV => (records.srv, records.srv_additional),
        _ => (vec![], vec![]),
    };
    let answers: Vec<Record> = answers
        .into_iter()
        .map(|mut r| {
            r.name = owner.clone();
            r
        })
        .collect();
    Some((sorted(&answers), sorted_lower(&additionals)))
}

#[tokio::test]
async fn every_answer_decodes_and_holds_what_the_registry_holds() {
    let fixture = fixture(0);
    use Meaning::*;
    let names = [
        ("orders.service.trading-dc.", Service("orders", None)),
        ("ORDERS.Service.Trading-DC.", Service("orders", None)),
        ("primary.orders.service.trading-dc.", Service("orders", Some("primary"))),
        ("replica.orders.service.trading-dc.", Service("orders", Some("replica"))),
        ("_orders._tcp.service.trading-dc.", Service("orders", None)),
        (
            "_orders._replica.service.trading-dc.",
            Service("orders", Some("replica")),
        ),
        ("nosuchtag.orders.service.trading-dc.", NxDomain),
        ("quotes.service.trading-dc.", Service("quotes", None)),
        ("external.service.trading-dc.", Service("external", None)),
        ("local.service.trading-dc.", Service("local", None)),
        ("down.service.trading-dc.", Service("down", None)),
        ("big.service.trading-dc.", Service("big", None)),
        ("nosuch.service.trading-dc.", NxDomain),
        ("a.b.c.service.trading-dc.", NxDomain),
        ("service.trading-dc.", NoData),
        ("_tcp.service.trading-dc.", NoData),
        ("addr.trading-dc.", NoData),
        ("0a000001.addr.trading-dc.", Address("10.0.0.1", 0)),
        (
            "20010db8000000000000000000000001.addr.trading-dc.",
            Address("2001:db8::1", 0),
        ),
        ("xyz.addr.trading-dc.", NxDomain),
        ("Node1.node.trading-dc.", Address("192.0.2.1", 9)),
        ("other.node.trading-dc.", NxDomain),
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::MX,
    ];
    let mut checked = 0;
    for (name, meaning) in &names {
        let owner = Name::from_ascii(name).unwrap();
        for rtype in types {
            let (code, answers, additionals) = match meaning {
                Service(service, tag) => match registry_records(&fixture, service, *tag, rtype, &owner) {
                    Some((answers, additionals)) => (ResponseCode::NoError, answers, additionals),
                    None => (ResponseCode::NXDomain, vec![], vec![]),
                },
                Address(ip, ttl) => {
                    let ip: std::net::IpAddr = ip.parse().unwrap();
                    let rdata = match ip {
                        std::net::IpAddr::V4(v4) => hickory_proto::rr::RData::A(v4.into()),
                        std::net::IpAddr::V6(v6) => hickory_proto::rr::RData::AAAA(v6.into()),
                    };
                    let fits = matches!(
                        (rtype, &rdata),
                        (RecordType::ANY, _)
                            | (RecordType::A, hickory_proto::rr::RData::A(_))
                            | (RecordType::AAAA, hickory_proto::rr::RData::AAAA(_))
                    );
                    let records = fits.then(|| Record::from_rdata(owner.clone(), *ttl, rdata));
                    (
                        ResponseCode::NoError,
                        sorted(&records.into_iter().collect::<Vec<_>>()),
                        vec![],
                    )
                }
                NoData => (ResponseCode::NoError, vec![], vec![]),
                NxDomain => (ResponseCode::NXDomain, vec![], vec![]),
            };
            for edns in [None, Some(1232), Some(4096)] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let q = query(name, rtype, edns);
                    let reply = decoded(&fixture.engine, &q, transport).await;
                    let what = format!("{name} {rtype} edns={edns:?} {transport:?}");
                    assert_eq!(reply.metadata.id, 0x1234, "{what}");
                    assert_eq!(reply.metadata.message_type, MessageType::Response, "{what}");
                    assert!(reply.metadata.authoritative, "{what}");
                    assert!(reply.metadata.recursion_desired, "{what}: RD copied");
                    assert!(!reply.metadata.recursion_available, "{what}");
                    assert_eq!(reply.metadata.response_code, code, "{what}");
                    assert_eq!(
                        reply.queries[0].name().to_string(),
                        *name,
                        "{what}: the question as asked"
                    );
                    assert_eq!(reply.queries.len(), 1, "{what}");
                    assert_eq!(
                        reply.edns.as_ref().map(Edns::max_payload),
                        edns,
                        "{what}: OPT as the client sent"
                    );
                    if reply.metadata.truncation {
                        assert_eq!(transport, Transport::Udp, "{what}");
                        let sent = sorted(&reply.answers);
                        assert!(!sent.is_empty() && sent.iter().all(|r| answers.contains(r)), "{what}");
                        checked += 1;
                        continue;
                    }
                    assert_eq!(sorted(&reply.answers), answers, "{what}: answers");
                    let sent_additionals = sorted_lower(&reply.additionals);
                    assert!(
                        sent_additionals.iter().all(|r| additionals.contains(r)),
                        "{what}: additionals {sent_additionals:?} of {additionals:?}"
                    );
                    if transport == Transport::Tcp {
                        assert_eq!(sent_additionals, additionals, "{what}: every additional over TCP");
                    }
                    let authority: Vec<_> = reply.authorities.iter().map(Record::record_type).collect();
                    if answers.is_empty() {
                        assert_eq!(authority, [RecordType::SOA], "{what}: a negative answer's SOA");
                        // Its owner is a pointer into the question: the domain as asked.
                        let zone = reply.authorities[0].name.to_ascii().to_ascii_lowercase();
                        assert_eq!(zone, "trading-dc.", "{what}");
                    } else {
                        assert!(authority.is_empty(), "{what}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, names.len() * types.len() * 6);
}

/// The A-record limit holds after rotation: every answer holds exactly the limit, and rotation
/// reaches every instance. SRV is not limited.
#[tokio::test]
async fn the_a_record_limit_holds_after_rotation() {
    let fixture = fixture(3);
    for rtype in [RecordType::A, RecordType::ANY] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut seen = HashSet::new();
            for rotation in 0..200 {
                let q = query("big.service.trading-dc.", rtype, None);
                let bytes = answer(&fixture.engine, &q, transport, rotation).await.unwrap();
                let reply = Message::from_vec(&bytes).unwrap();
                assert_eq!(reply.answers.len(), 3, "{rtype} {transport:?}: {reply:?}");
                seen.extend(reply.answers.iter().map(|r| r.data.to_string()));
            }
            assert_eq!(seen.len(), 40, "{rtype} {transport:?}");
        }
    }
    let q = query("big.service.trading-dc.", RecordType::SRV, None);
    assert_eq!(decoded(&fixture.engine, &q, Transport::Tcp).await.answers.len(), 40);
}

#[tokio::test]
async fn udp_truncation_keeps_whole_records_and_fits_the_limit() {
    let fixture = fixture(0);
    for (edns, limit) in [(None, 512), (Some(512), 512), (Some(1232), 1232), (Some(65535), 1232)] {
        let q = query("big.service.trading-dc.", RecordType::SRV, edns);
        let out = answer(&fixture.engine, &q, Transport::Udp, 3).await.unwrap();
        assert!(out.len() <= limit, "{} bytes for a limit of {limit}", out.len());
        let msg = Message::from_vec(&out).expect("a truncated answer is still well-formed");
        assert!(msg.metadata.truncation);
        assert!(!msg.answers.is_empty() && msg.answers.len() < 40);
        assert!(msg.additionals.iter().all(|r| r.record_type() == RecordType::OPT));
    }
    // Over TCP, everything.
    let q = query("big.service.trading-dc.", RecordType::SRV, None);
    let msg = decoded(&fixture.engine, &q, Transport::Tcp).await;
    assert!(!msg.metadata.truncation);
    assert_eq!((msg.answers.len(), msg.additionals.len()), (40, 40));
}

/// `query` with its question name compressed: the root at its end is a pointer to the header's
/// ANCOUNT low byte (0), which reads as the root label. Legal, if odd.
fn compressed(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut q = query(name, rtype, None);
    let name_end = q.len() - 4;
    assert_eq!(q[name_end - 1], 0);
    q.splice(name_end - 1..name_end, [0xC0, 0x07]);
    q
}

#[tokio::test]
async fn queries_read_in_full_get_the_same_answers() {
    let fixture = fixture(0);
    let engine = &fixture.engine;
    for (name, rtype) in [
        ("orders.service.trading-dc.", RecordType::SRV),
        ("Quotes.service.trading-dc.", RecordType::ANY),
        ("nosuch.service.trading-dc.", RecordType::A),
        ("www.trading-dc.", RecordType::A),
        ("service.trading-dc.", RecordType::A),
    ] {
        let plain = decoded(engine, &query(name, rtype, None), Transport::Tcp).await;
        let mut nsid = query(name, rtype, Some(1232));
        let len = nsid.len();
        nsid[len - 2..].copy_from_slice(&[0, 4]); // OPT RDLENGTH 4
        nsid.extend_from_slice(&[0, 3, 0, 0]); // NSID, empty: an option a server may ignore
        for (form, bytes) in [("compressed", compressed(name, rtype)), ("EDNS option", nsid)] {
            let reply = decoded(engine, &bytes, Transport::Tcp).await;
            let what = format!("{name} {rtype} {form}");
            assert_eq!(reply.metadata.response_code, plain.metadata.response_code, "{what}");
            assert_eq!(reply.metadata.authoritative, plain.metadata.authoritative, "{what}");
            assert_eq!(reply.queries, plain.queries, "{what}");
            assert_eq!(sorted(&reply.answers), sorted(&plain.answers), "{what}");
            assert_eq!(sorted(&reply.authorities), sorted(&plain.authorities), "{what}");
            let no_opt = |m: &Message| sorted(&m.additionals);
            assert_eq!(no_opt(&reply), no_opt(&plain), "{what}");
        }
    }
}

#[tokio::test]
async fn what_a_query_in_an_odd_form_gets() {
    let fixture = fixture(0);
    let engine = &fixture.engine;
    let code = |bytes: Vec<u8>| Message::from_vec(&bytes).unwrap().metadata.response_code;
    // EDNS version 1: BADVERS, with an OPT record of version 0.
    let mut v1 = Message::from_vec(&query("orders.service.trading-dc.", RecordType::A, Some(1232))).unwrap();
    v1.edns.as_mut().unwrap().set_version(1);
    let reply = decoded(engine, &v1.to_vec().unwrap(), Transport::Udp).await;
    // BADVERS is 16, which hickory decodes as its other name, BADSIG.
    assert_eq!(
        u16::from(reply.metadata.response_code),
        u16::from(ResponseCode::BADVERS)
    );
    assert_eq!(reply.edns.as_ref().map(Edns::version), Some(0));
    // Class CH (`version.bind`) and HS: REFUSED, never the IN zone's data.
    for (name, class) in [
        ("version.bind.", DNSClass::CH),
        ("orders.service.trading-dc.", DNSClass::HS),
    ] {
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_ascii(name).unwrap(), RecordType::TXT);
        q.set_query_class(class);
        m.add_query(q);
        let reply = decoded(engine, &m.to_vec().unwrap(), Transport::Udp).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "{name} {class}");
        assert!(
            reply.answers.is_empty() && reply.authorities.is_empty(),
            "{name} {class}"
        );
    }
    // Another opcode: NOTIMP.
    let mut notify = Message::from_vec(&query("orders.service.trading-dc.", RecordType::SOA, None)).unwrap();
    notify.metadata.op_code = OpCode::Notify;
    let reply = answer(engine, &notify.to_vec().unwrap(), Transport::Udp, 0)
        .await
        .unwrap();
    assert_eq!(code(reply), ResponseCode::NotImp);
    // Zone transfers: REFUSED, of the registry and of the zone files.
    for name in ["trading-dc.", "service.trading-dc."] {
        for rtype in [RecordType::AXFR, RecordType::IXFR] {
            let reply = answer(engine, &query(name, rtype, None), Transport::Tcp, 0)
                .await
                .unwrap();
            assert_eq!(code(reply), ResponseCode::Refused, "{name} {rtype}");
        }
    }
    // Responses and runts are never answered; garbage after a header is FORMERR.
    let mut response = query("orders.service.trading-dc.", RecordType::A, None);
    response[2] |= 0x80;
    assert!(
        answer(engine, &response, Transport::Udp, 0).await.is_none(),
        "responses"
    );
    assert!(answer(engine, &[0u8; 5], Transport::Udp, 0).await.is_none());
    let formerr = answer(
        engine,
        &[0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff],
        Transport::Udp,
        0,
    )
    .await
    .unwrap();
    assert_eq!(code(formerr), ResponseCode::FormErr);
}

/// The parser reads untrusted bytes by hand: mutated and random packets must never make it
/// panic, and whatever is answered must be a well-formed DNS message within the UDP limit.
#[tokio::test]
async fn mutated_and_random_packets_never_break_the_parser() {
    let fixture = fixture(0);
    let seeds = [
        query("orders.service.trading-dc.", RecordType::SRV, Some(1232)),
        query("primary.orders.service.trading-dc.", RecordType::A, None),
        query("0a000001.addr.trading-dc.", RecordType::ANY, Some(512)),
        compressed("big.service.trading-dc.", RecordType::SRV),
    ];
    // xorshift: deterministic, so a failure is reproducible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let src: SocketAddr = SRC.parse().unwrap();
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
        let incoming = Incoming {
            packet: &packet,
            from: src,
            transport,
            rotation: round as usize,
        };
        let reply = fixture.engine.answer(incoming, &mut out).await;
        if reply == Reply::Ready {
            answered += 1;
            let reply = Message::from_vec(&out).unwrap_or_else(|e| panic!("bad response to {packet:02x?}: {e}"));
            assert_eq!(reply.metadata.message_type, MessageType::Response);
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "a UDP answer within the limit");
            }
        }
    }
    assert!(
        answered > 10_000,
        "mutations that stay valid are answered ({answered} of {total})"
    );
}
