//! The fuzz targets' bodies: each takes any bytes, feeds them to one of sextant's parsers, and
//! checks what it must never do (panic, answer what was not asked, accept what it cannot keep).
//! `fuzz_targets/` hands them to libFuzzer (`scripts/fuzz.sh <target> <seconds>`); the test
//! suite runs the same bodies over the corpora in `fuzz/corpus/` and every past finding
//! (`tests/it/fuzz_corpus.rs` includes this file).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData};
use sextant::api::wire::{
    parse_agent_check, parse_catalog_deregistration, parse_catalog_registration, parse_check_update, parse_json,
    parse_registration,
};
use sextant::dns::answers::ServiceAnswerMap;
use sextant::dns::cookies::COOKIE_OPTION_LEN;
use sextant::dns::message::{EDNS_COOKIE, Transport, find_option, question_end, truncate_to_question};
use sextant::dns::zones::ZoneSource;
use sextant::dns::{DnsEngine, DnsSettings, Incoming, Reply, forward};
use sextant::model::{Node, NodeName, ServiceName, format_go_duration, parse_go_duration};
use sextant::registry::Registry;
use sextant::store::StoredInstance;

/// The served domain's zone file: records of several types, for the zone data's answers.
const ZONE: &str = "$ORIGIN trading-dc.
$TTL 3600
@       IN SOA  ns1 hostmaster 1 3600 600 86400 0
@       IN NS   ns1
@       IN MX   10 mail
@       IN TXT  \"v=spf1 -all\"
ns1     IN A    127.0.0.1
ns1     IN AAAA ::1
mail    IN A    192.0.2.25
www     IN CNAME ns1
many    IN A    192.0.2.1
many    IN A    192.0.2.2
many    IN TXT  \"one\" \"two\"
";

struct DnsFixture {
    engine: DnsEngine,
    runtime: tokio::runtime::Runtime,
    /// Each service's addresses that may be answered (its instances that are not critical).
    answerable: HashMap<String, Vec<IpAddr>>,
}

fn local_node(settings: &DnsSettings) -> Arc<Node> {
    let name = NodeName::parse(&settings.node_name).expect("a valid node name");
    Arc::new(Node::local(name, settings.node_addr))
}

fn dns_fixture() -> &'static DnsFixture {
    static FIXTURE: OnceLock<DnsFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let domain = Name::from_ascii("trading-dc.").expect("a valid name");
        let mut settings = DnsSettings::new(domain.clone(), "node1", "192.0.2.1".parse().expect("an address"));
        settings.meta_txt = true;
        let answers = Arc::new(ServiceAnswerMap::new(&settings));
        let registry = Registry::new(Node::clone(&local_node(&settings)), answers.clone());
        let mut answerable: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let mut register = |body: serde_json::Value, answered: bool| {
            let value = parse_json(body.to_string().as_bytes()).expect("JSON");
            let instance = parse_registration(&value, &registry.local_node()).expect("a valid registration");
            if answered && let sextant::model::Address::Ip(ip) = instance.address {
                answerable.entry(instance.service.key().as_str().to_owned()).or_default().push(ip);
            }
            let _ = registry.register(instance).expect("registered");
        };
        let tagged = |id: &str, ip: &str, tags: &[&str]| {
            serde_json::json!({"Name": "orders", "ID": id, "Address": ip, "Port": 8080, "Tags": tags,
                               "Meta": {"version": "1.2", "rfc1035-raw": "v=1"}})
        };
        register(tagged("o1", "10.0.0.1", &["primary"]), true);
        register(tagged("o2", "10.0.0.2", &["replica", "v2"]), true);
        let critical = serde_json::json!({"Name": "orders", "ID": "o3", "Address": "10.0.0.3", "Port": 8080,
                                          "Check": {"TTL": "1h", "Status": "critical"}});
        register(critical, false);
        register(serde_json::json!({"Name": "Dual", "ID": "d4", "Address": "10.0.1.1", "Port": 1}), true);
        register(serde_json::json!({"Name": "Dual", "ID": "d6", "Address": "2001:db8::6", "Port": 1}), true);
        register(serde_json::json!({"Name": "host", "ID": "h1", "Address": "db.example.com", "Port": 5432}), false);
        for i in 0..60 {
            let body = serde_json::json!({"Name": "wide", "ID": format!("w{i}"), "Address": format!("10.2.0.{i}"), "Port": 80});
            register(body, true);
        }
        let mut source = ZoneSource::new("/nonexistent", &domain, settings.node_addr);
        source.reverse_zones = vec![Name::from_ascii("10.in-addr.arpa.").expect("a valid name")];
        let zones = source
            .load_texts(vec![(PathBuf::from("trading-dc.zone"), ZONE.to_owned())])
            .expect("the zone loads");
        DnsFixture {
            engine: DnsEngine::new(&settings, registry, answers, zones),
            runtime: tokio::runtime::Builder::new_current_thread().build().expect("a runtime"),
            answerable,
        }
    })
}

/// The service a registry name asks for: `[tag.]<service>.service.<domain>` or
/// `_<service>._<tag>.service.<domain>`.
fn service_of(name: &Name) -> Option<String> {
    let name = name.to_ascii().to_ascii_lowercase();
    let prefix = name.strip_suffix(".service.trading-dc.")?;
    let labels: Vec<&str> = prefix.split('.').collect();
    match labels.as_slice() {
        [service, tag] if service.starts_with('_') && tag.starts_with('_') => Some(service[1..].to_owned()),
        [.., service] => Some((*service).to_owned()),
        [] => None,
    }
}

/// The DNS query path, raw bytes to response bytes: every response decodes with hickory-proto,
/// carries the query's ID and (for a query hickory-proto reads) its question, fits UDP's
/// limit, and an answer for a registry name holds only addresses of that service's instances
/// that are not critical; one to a query with a cookie carries it back. Over UDP, the response cut to its question (as the rate limit and the
/// amplification bound send it) decodes, says TC, and is no larger than the query.
pub fn dns_query(data: &[u8]) {
    let fixture = dns_fixture();
    let transport = if data.len().is_multiple_of(2) {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let incoming = Incoming {
        packet: data,
        from: SocketAddr::from(([192, 0, 2, 99], 5300)),
        transport,
        rotation: data.len(),
    };
    let mut out = Vec::new();
    match fixture.runtime.block_on(fixture.engine.answer(incoming, &mut out)) {
        Reply::Nothing => return,
        Reply::Forward => panic!("no recursor is configured, yet the query was handed to one"),
        Reply::Ready => {}
    }
    let response =
        Message::from_vec(&out).unwrap_or_else(|e| panic!("a response that does not decode ({e}): {out:02x?}"));
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(out.get(..2), data.get(..2), "the response carries the query's ID");
    if transport == Transport::Udp {
        let mut cut = out.clone();
        if truncate_to_question(data, &mut cut, 1232) {
            let message =
                Message::from_vec(&cut).unwrap_or_else(|e| panic!("a cut response that does not decode ({e})"));
            assert!(message.metadata.truncation && message.answers.is_empty());
            assert!(
                cut.len() <= data.len(),
                "cut to {} bytes, the query {}",
                cut.len(),
                data.len()
            );
        }
    }
    let Ok(query) = Message::from_vec(data) else {
        return;
    };
    if transport == Transport::Udp {
        let limit = query.edns.as_ref().map_or(512, |e| e.max_payload().clamp(512, 1232));
        assert!(
            out.len() <= usize::from(limit),
            "{} bytes over UDP, the limit {limit}",
            out.len()
        );
    }
    let answered = matches!(
        response.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    );
    if query.metadata.message_type != MessageType::Query
        || query.metadata.op_code != OpCode::Query
        || query.queries.len() != 1
        || !answered
    {
        return;
    }
    assert_eq!(response.queries.len(), 1, "{response:?}");
    let (asked, echoed) = (&query.queries[0], &response.queries[0]);
    assert_eq!(
        (asked.name(), asked.query_type(), asked.query_class()),
        (echoed.name(), echoed.query_type(), echoed.query_class()),
        "the response's question is the query's"
    );
    // RFC 7873: an answer to a query with a cookie carries its client cookie and a server cookie.
    if let Some(asked) = find_option(data, EDNS_COOKIE)
        && (asked.len() == 8 || (16..=40).contains(&asked.len()))
        && response.edns.is_some()
    {
        let answered = find_option(&out, EDNS_COOKIE).unwrap_or_else(|| panic!("no cookie in {response:?}"));
        assert_eq!(
            (answered.len(), &answered[..8]),
            (24, &asked[..8]),
            "the client cookie back"
        );
    }
    for record in &response.answers {
        let Some(service) = service_of(&record.name) else {
            continue;
        };
        let address = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        let known = fixture.answerable.get(&service);
        assert!(
            known.is_some_and(|addresses| addresses.contains(&address)),
            "{address} answered for {service}, which has {known:?}"
        );
    }
}

/// The forwarding relay: a recursor's response (anything) to a query (anything) reaches the
/// client under its ID, without the recursor's cookie, within its UDP limit with room for
/// sextant's cookie when asked, or not at all; SERVFAIL for a query decodes.
pub fn forward_relay(data: &[u8]) {
    // The first byte says how long the query is; the recursor's response follows it.
    let Some((&length, rest)) = data.split_first() else {
        return;
    };
    let (query, response) = rest.split_at(usize::from(length).min(rest.len()));
    let decoded = Message::from_vec(query).ok();
    // Room for sextant's cookie when the length byte is odd.
    let room = usize::from(length % 2) * COOKIE_OPTION_LEN;
    for transport in [Transport::Udp, Transport::Tcp] {
        // Sent on under the response's ID, so that some responses match.
        let mut upstream = query.to_vec();
        if let (Some(id), Some(head)) = (response.get(..2), upstream.get_mut(..2)) {
            head.copy_from_slice(id);
        }
        let Some(out) = forward::relayed(query, &upstream, response.to_vec(), transport, room) else {
            continue;
        };
        assert_eq!(out.get(..2), query.get(..2), "relayed under the client's ID");
        assert!(
            find_option(&out, EDNS_COOKIE).is_none(),
            "the recursor's cookie relayed"
        );
        if transport == Transport::Udp
            && let Some(query) = &decoded
        {
            let limit = query.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
            assert!(
                out.len() + room <= usize::from(limit),
                "{} bytes over UDP, with {room} to spare, the limit {limit}",
                out.len()
            );
        }
        // Shorter for being cut (TC), not for the cookie taken out.
        if out.len() < response.len() && find_option(response, EDNS_COOKIE).is_none() {
            let cut =
                Message::from_vec(&out).unwrap_or_else(|e| panic!("a truncated relay that does not decode ({e})"));
            assert!(cut.metadata.truncation);
        }
    }
    if let Some(end) = question_end(query) {
        let servfail = forward::servfail(query, end, Some(22));
        let message = Message::from_vec(&servfail).unwrap_or_else(|e| panic!("a SERVFAIL that does not decode ({e})"));
        assert_eq!(message.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(servfail[..2], query[..2]);
    }
}

/// Consul's JSON decoders, the first byte choosing which: what one accepts is valid, and a
/// registration is stored and read back unchanged.
pub fn consul_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 6 == 5 {
        // A key/value key, as the path carries it.
        if let Ok(key) = std::str::from_utf8(body) {
            let _ = sextant::registry::kv::check_key(key);
        }
        return;
    }
    let Ok(value) = parse_json(body) else {
        return;
    };
    let settings = DnsSettings::new(
        Name::from_ascii("trading-dc.").expect("a valid name"),
        "node1",
        "192.0.2.1".parse().expect("an address"),
    );
    let node = local_node(&settings);
    match which % 6 {
        0 => {
            if let Ok(instance) = parse_registration(&value, &node) {
                instance.validate().expect("an accepted registration is valid");
                let stored = StoredInstance::from_instance(&instance);
                let bytes = serde_json::to_vec(&stored).expect("a stored form");
                let read: StoredInstance = serde_json::from_slice(&bytes).expect("the stored form reads back");
                let again = read
                    .into_instance(node)
                    .expect("a stored registration is valid when read back");
                // Times are kept as instants and written as wall-clock times: each conversion
                // may move them by nanoseconds.
                let untimed = |mut stored: StoredInstance| {
                    for check in &mut stored.checks {
                        check.last_update = std::time::SystemTime::UNIX_EPOCH;
                        check.critical_since = check.critical_since.map(|_| std::time::SystemTime::UNIX_EPOCH);
                    }
                    stored
                };
                assert_eq!(
                    untimed(StoredInstance::from_instance(&again)),
                    untimed(stored),
                    "read back unchanged"
                );
            }
        }
        1 => {
            if let Ok(registration) = parse_catalog_registration(&value) {
                registration.node.validate().expect("an accepted node is valid");
                if let Some(service) = &registration.service {
                    let mut service = service.clone();
                    service.node = registration.node.clone();
                    service.validate().expect("an accepted catalog service is valid");
                }
            }
        }
        2 => {
            let _ = parse_check_update(&value);
        }
        3 => {
            let service = ServiceName::parse("orders").expect("a valid name");
            if let Ok((_, spec)) = parse_agent_check(&value, |_| Some(service.clone())) {
                let _ = format!("{spec:?}");
            }
        }
        _ => {
            let _ = parse_catalog_deregistration(&value);
        }
    }
}

/// Go duration strings: no panic, nothing past the longest duration, and a duration echoed
/// back (as the API renders check definitions) parses to itself.
pub fn go_duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(duration) = parse_go_duration(text) {
        assert!(duration <= sextant::model::MAX_DURATION);
        let echoed = format_go_duration(duration);
        assert_eq!(
            parse_go_duration(&echoed),
            Ok(duration),
            "{text:?} echoed as {echoed:?}"
        );
    }
}

/// Zone files: any text loads or is refused with an error, never a panic; a zone that loads
/// answers a query for its SOA with a response that decodes.
pub fn zone_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let domain = Name::from_ascii("trading-dc.").expect("a valid name");
    let source = ZoneSource::new("/nonexistent", &domain, "192.0.2.1".parse().expect("an address"));
    let Ok(zones) = source.load_texts(vec![(PathBuf::from("trading-dc.zone"), text.to_owned())]) else {
        return;
    };
    let mut query = Message::query();
    query.add_query(hickory_proto::op::Query::query(
        domain,
        hickory_proto::rr::RecordType::SOA,
    ));
    let query = query.to_vec().expect("a query");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let from = SocketAddr::from(([192, 0, 2, 99], 5300));
    if let Some(response) = runtime.block_on(zones.answer(&query, from, Transport::Tcp, 1232, 0)) {
        Message::from_vec(&response).unwrap_or_else(|e| panic!("a zone's response that does not decode ({e})"));
    }
}
