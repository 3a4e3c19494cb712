//! Forwarding names outside the served zones to `--recursor` servers: a second sextant (a real
//! DNS server on loopback, authoritative for `upstream-dc`) plays the recursor.

use crate::common;

use std::time::{Duration, Instant};

use common::dns::*;
use common::{TestServer, ip, test_config};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

/// A query with EDNS (so the reply may carry Extended DNS Errors), over UDP and over TCP.
async fn with_edns(server: std::net::SocketAddr, name: &str, rtype: RecordType) -> [hickory_proto::op::Message; 2] {
    let query = query_message(name, rtype, Some(1232));
    let over_tcp = TcpClient::connect(server).await.query(&query).await;
    [udp_message(server, &query).await, over_tcp]
}

async fn upstream() -> TestServer {
    let mut config = test_config();
    config.domain = "upstream-dc".into();
    config.zones = std::env::temp_dir().join("sextant-no-zones"); // a missing folder: no files
    let upstream = TestServer::start_with(config).await;
    upstream
        .register(json!({"Name": "payments", "ID": "p1", "Address": "10.8.0.1", "Port": 443}))
        .await;
    upstream
}

#[tokio::test]
async fn names_outside_the_zones_go_to_the_recursor() {
    let upstream = upstream().await;
    let mut config = test_config();
    config.recursors = vec![upstream.dns.to_string()];
    let server = TestServer::start_with(config).await;
    server
        .register(json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 80}))
        .await;

    for reply in [
        udp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
        tcp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
    ] {
        assert_eq!(rcode(&reply), ResponseCode::NoError, "{reply:?}");
        assert_eq!(addresses(&reply), vec![ip("10.8.0.1")]);
    }
    // A large forwarded answer over TCP, and the upstream's NXDOMAIN relayed as it is.
    let srv = tcp(server.dns, "payments.service.upstream-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&srv), vec![(443, 1, "0a080001.addr.upstream-dc.".to_string())]);
    let missing = udp(server.dns, "nosuch.service.upstream-dc.", RecordType::A).await;
    assert_eq!(rcode(&missing), ResponseCode::NXDomain);
    assert!(has_soa(&missing, "upstream-dc."));

    // Its own names are never forwarded, whatever the recursor would say.
    let own = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&own), vec![ip("10.0.0.1")]);
    let own_missing = udp(server.dns, "nosuch.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&own_missing), ResponseCode::NXDomain);
    assert!(has_soa(&own_missing, "trading-dc."));

    // Only recursive queries are forwarded, and never a zone transfer.
    let mut iterative = query_message("payments.service.upstream-dc.", RecordType::A, None);
    iterative.metadata.recursion_desired = false;
    assert_eq!(rcode(&udp_message(server.dns, &iterative).await), ResponseCode::Refused);
    let axfr = tcp(server.dns, "upstream-dc.", RecordType::AXFR).await;
    assert_eq!(rcode(&axfr), ResponseCode::Refused);
    // Why, to clients that send EDNS (RFC 8914): a zone transfer is Prohibited (18), of the
    // served zone too; a name in no zone asked without recursion is Not Authoritative (20).
    for zone in ["upstream-dc.", "trading-dc."] {
        let [_, axfr] = with_edns(server.dns, zone, RecordType::AXFR).await;
        assert_eq!(
            (rcode(&axfr), extended_errors(&axfr)),
            (ResponseCode::Refused, vec![18]),
            "{zone}"
        );
    }
    iterative.set_edns(hickory_proto::op::Edns::new());
    let reply = udp_message(server.dns, &iterative).await;
    assert_eq!(
        (rcode(&reply), extended_errors(&reply)),
        (ResponseCode::Refused, vec![20])
    );
    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn clients_outside_the_allowed_networks_are_refused() {
    let upstream = upstream().await;
    let mut config = test_config();
    config.recursors = vec![upstream.dns.to_string()];
    config.recursor_clients = vec!["192.0.2.0/24".into()]; // not loopback, where the test asks from
    let server = TestServer::start_with(config).await;
    for reply in [
        udp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
        tcp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
    ] {
        assert_eq!(rcode(&reply), ResponseCode::Refused);
        assert!(reply.edns.is_none(), "no EDNS in the query, none in the reply");
    }
    for reply in with_edns(server.dns, "payments.service.upstream-dc.", RecordType::A).await {
        assert_eq!(
            (rcode(&reply), extended_errors(&reply)),
            (ResponseCode::Refused, vec![18]),
            "Prohibited"
        );
    }
    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn without_recursors_names_outside_are_refused() {
    let upstream = upstream().await;
    let server = TestServer::start().await;
    for reply in [
        udp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
        tcp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
    ] {
        assert_eq!(rcode(&reply), ResponseCode::Refused, "not an open resolver by default");
        assert!(reply.answers.is_empty());
    }
    for reply in with_edns(server.dns, "payments.service.upstream-dc.", RecordType::A).await {
        assert_eq!(
            (rcode(&reply), extended_errors(&reply)),
            (ResponseCode::Refused, vec![20]),
            "Not Authoritative"
        );
    }
    server.stop().await;
    upstream.stop().await;
}

/// A recursor that does not answer is given `recursor_timeout`, then the next is asked; when none
/// answers the client gets SERVFAIL, and the UDP workers keep answering meanwhile.
#[tokio::test]
async fn a_silent_recursor_is_skipped_and_none_answering_is_servfail() {
    let upstream = upstream().await;
    // Bound and never read: a recursor that swallows queries (UDP and TCP on one port).
    let (silent_udp, silent_tcp) = (0..20)
        .find_map(|_| {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // Another test may hold that port for TCP: then try another.
            let tcp = std::net::TcpListener::bind(udp.local_addr().unwrap()).ok()?;
            Some((udp, tcp))
        })
        .expect("a port free for UDP and TCP");
    let silent = silent_udp.local_addr().unwrap();

    let mut config = test_config();
    config.recursors = vec![silent.to_string(), upstream.dns.to_string()];
    config.recursor_timeout = Duration::from_millis(300);
    config.dns_workers = Some(1);
    let server = TestServer::start_with(config).await;
    server
        .register(json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 80}))
        .await;

    let started = Instant::now();
    let forwarded = tokio::spawn({
        let dns = server.dns;
        async move { udp(dns, "payments.service.upstream-dc.", RecordType::A).await }
    });
    // While that query waits on the silent recursor, the one UDP worker answers its own names.
    for _ in 0..20 {
        let own = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
        assert_eq!(addresses(&own), vec![ip("10.0.0.1")]);
    }
    let reply = forwarded.await.unwrap();
    let waited = started.elapsed();
    assert_eq!(addresses(&reply), vec![ip("10.8.0.1")]);
    assert!(
        waited >= Duration::from_millis(300),
        "the silent recursor was asked first ({waited:?})"
    );
    let tcp_reply = tcp(server.dns, "payments.service.upstream-dc.", RecordType::A).await;
    assert_eq!(addresses(&tcp_reply), vec![ip("10.8.0.1")]);
    server.stop().await;

    let mut config = test_config();
    config.recursors = vec![silent.to_string()];
    config.recursor_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    for reply in [
        udp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
        tcp(server.dns, "payments.service.upstream-dc.", RecordType::A).await,
    ] {
        assert_eq!(rcode(&reply), ResponseCode::ServFail);
        assert_eq!(reply.queries.len(), 1, "the question is echoed");
    }
    for reply in with_edns(server.dns, "payments.service.upstream-dc.", RecordType::A).await {
        assert_eq!(
            (rcode(&reply), extended_errors(&reply)),
            (ResponseCode::ServFail, vec![22]),
            "No Reachable Authority"
        );
        assert_eq!(reply.queries.len(), 1, "the question is echoed");
    }
    server.stop().await;
    upstream.stop().await;
    drop((silent_udp, silent_tcp));
}

/// A recursor whose answer is larger than any UDP buffer once used (4,096 bytes): 300 A records,
/// about 4,800 bytes, over UDP.
async fn large_recursor() -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..len]).unwrap();
            let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.add_queries(query.queries.clone());
            let name = query.queries[0].name().clone();
            for n in 0..300u32 {
                let address = std::net::Ipv4Addr::from(0x0a09_0000 + n);
                reply.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A(address))));
            }
            let bytes = reply.to_vec().unwrap();
            assert!(bytes.len() > 4096, "{} bytes", bytes.len());
            socket.send_to(&bytes, from).await.unwrap();
        }
    });
    addr
}

/// A forwarded UDP answer is read whole, however large, and relayed only if it fits what the
/// client takes; otherwise the client gets TC and asks over TCP (it was cut at 4,096 bytes and
/// passed on malformed).
#[tokio::test]
async fn large_forwarded_answers_are_whole_or_truncated_never_cut() {
    let mut config = test_config();
    config.recursors = vec![large_recursor().await.to_string()];
    let server = TestServer::start_with(config).await;
    let name = "big.example.";
    let whole = udp_message(server.dns, &query_message(name, RecordType::A, Some(65_000))).await;
    assert_eq!(rcode(&whole), ResponseCode::NoError);
    assert_eq!(addresses(&whole).len(), 300, "the whole answer, well-formed");
    for payload in [None, Some(1232)] {
        let cut = udp_message(server.dns, &query_message(name, RecordType::A, payload)).await;
        assert!(cut.metadata.truncation, "{payload:?}: TC is set");
        assert!(cut.answers.is_empty(), "{payload:?}: no partial answer");
        assert_eq!(cut.queries.len(), 1);
    }
    server.stop().await;
}

/// Cookies are between neighbours (RFC 7873): a client's cookie is not sent on to the recursor,
/// the recursor's cookie is not relayed, and the client gets sextant's own.
#[tokio::test]
async fn cookies_are_not_relayed_either_way() {
    use hickory_proto::op::{Edns, Message, MessageType};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::{RData, Record};
    let cookie = |message: &Message| -> Vec<Vec<u8>> {
        let Some(edns) = &message.edns else {
            return Vec::new();
        };
        let options = edns.options().get_all(EdnsCode::Cookie);
        options
            .iter()
            .map(|option| match option {
                EdnsOption::Unknown(_, data) => data.clone(),
                other => panic!("a cookie read as {other:?}"),
            })
            .collect()
    };
    // A recursor that answers with a cookie of its own, and tells what cookies it was sent.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let recursor = socket.local_addr().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..len]).unwrap();
            seen_tx.send(cookie(&query)).unwrap();
            let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.add_queries(query.queries.clone());
            let name = query.queries[0].name().clone();
            reply.add_answer(Record::from_rdata(name, 60, RData::A(A::new(10, 9, 0, 1))));
            let mut edns = Edns::new();
            let theirs = [&[7u8; 8][..], &[0xEE; 16]].concat();
            edns.options_mut().insert(EdnsOption::Unknown(10, theirs));
            reply.set_edns(edns);
            socket.send_to(&reply.to_vec().unwrap(), from).await.unwrap();
        }
    });
    let mut config = test_config();
    config.recursors = vec![recursor.to_string()];
    let server = TestServer::start_with(config).await;
    let client_cookie = vec![1, 2, 3, 4, 5, 6, 7, 8];
    let mut query = query_message("www.example.", RecordType::A, Some(1232));
    let edns = query.edns.as_mut().unwrap();
    edns.options_mut()
        .insert(EdnsOption::Unknown(10, client_cookie.clone()));
    // (Over UDP: the recursor takes no TCP; both transports share the engine's forwarding.)
    let reply = udp_message(server.dns, &query).await;
    assert_eq!(addresses(&reply), vec![ip("10.9.0.1")]);
    let cookies = cookie(&reply);
    assert_eq!(cookies.len(), 1, "one cookie: {reply:?}");
    assert_eq!(cookies[0][..8], client_cookie, "the client's cookie back");
    assert_ne!(
        cookies[0][8..],
        [0xEE; 16],
        "sextant's server cookie, not the recursor's"
    );
    assert_eq!((cookies[0].len(), cookies[0][8]), (24, 1), "an RFC 9018 server cookie");
    assert_eq!(seen.recv().await.unwrap(), Vec::<Vec<u8>>::new(), "no cookie sent on");
    server.stop().await;
}
