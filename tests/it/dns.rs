//! DNS answers from the live registry, over real UDP and TCP.

use crate::common;

use std::collections::HashSet;

use common::dns::*;
use common::{TestServer, ip, test_config};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

#[tokio::test]
async fn registered_instance_answers_a_and_srv_over_udp_and_tcp() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 8080}))
        .await;

    for reply in [
        udp(server.dns, "orders.service.trading-dc.", RecordType::A).await,
        tcp(server.dns, "orders.service.trading-dc.", RecordType::A).await,
    ] {
        assert_eq!(rcode(&reply), ResponseCode::NoError);
        assert!(reply.metadata.authoritative, "AA is set on authoritative answers");
        assert_eq!(addresses(&reply), vec![ip("10.0.0.1")]);
    }

    let srv = udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&srv), vec![(8080, 1, "0a000001.addr.trading-dc.".to_string())]);
    assert_eq!(
        additional_addresses(&srv),
        vec![("0a000001.addr.trading-dc.".to_string(), ip("10.0.0.1"))]
    );
    // The SRV target itself resolves to the instance address.
    let target = udp(server.dns, "0a000001.addr.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&target), vec![ip("10.0.0.1")]);
    server.stop().await;
}

#[tokio::test]
async fn names_match_without_case_and_ipv6_answers_aaaa() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "Quotes", "ID": "q1", "Address": "2001:db8::7", "Port": 9000}))
        .await;
    let reply = udp(server.dns, "QUOTES.Service.TRADING-DC.", RecordType::AAAA).await;
    assert_eq!(addresses(&reply), vec![ip("2001:db8::7")]);
    // The answer is under the name as asked (resolvers using 0x20 compare it).
    assert_eq!(reply.answers[0].name.to_ascii(), "QUOTES.Service.TRADING-DC.");
    // A service with only an IPv6 instance has no A records: NODATA, not NXDOMAIN.
    let a = udp(server.dns, "quotes.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&a), ResponseCode::NoError);
    assert!(a.answers.is_empty() && has_soa(&a, "trading-dc."));
    server.stop().await;
}

#[tokio::test]
async fn deregistered_service_is_nxdomain_with_soa() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    assert_eq!(
        addresses(&udp(server.dns, "orders.service.trading-dc.", RecordType::A).await).len(),
        1
    );

    let (status, body) = server.put("/v1/agent/service/deregister/orders-1").await;
    assert_eq!(status, 200, "{body}");
    let reply = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&reply), ResponseCode::NXDomain);
    assert!(reply.answers.is_empty());
    assert!(has_soa(&reply, "trading-dc."), "NXDOMAIN carries the SOA: {reply:?}");
    assert!(reply.metadata.authoritative);
    server.stop().await;
}

#[tokio::test]
async fn critical_instances_are_never_handed_out() {
    let server = TestServer::start().await;
    for (id, addr) in [("orders-1", "10.0.0.1"), ("orders-2", "10.0.0.2")] {
        server
            .register(json!({"Name": "orders", "ID": id, "Address": addr, "Port": 80,
                              "Check": {"TTL": "60s", "Status": "passing"}}))
            .await;
    }
    let both: HashSet<_> = addresses(&udp(server.dns, "orders.service.trading-dc.", RecordType::A).await)
        .into_iter()
        .collect();
    assert_eq!(both, HashSet::from([ip("10.0.0.1"), ip("10.0.0.2")]));

    let (status, body) = server.put("/v1/agent/check/fail/service:orders-1?note=down").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        addresses(&udp(server.dns, "orders.service.trading-dc.", RecordType::A).await),
        vec![ip("10.0.0.2")]
    );
    let srv = udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&srv).len(), 1);
    assert_eq!(
        additional_addresses(&srv),
        vec![("0a000002.addr.trading-dc.".to_string(), ip("10.0.0.2"))]
    );

    // A warning instance is still answered (as Consul), with its Warning weight in SRV.
    server.put("/v1/agent/check/warn/service:orders-2").await;
    assert_eq!(
        addresses(&udp(server.dns, "orders.service.trading-dc.", RecordType::A).await),
        vec![ip("10.0.0.2")]
    );

    // All critical: the name still exists (NOERROR, no records, SOA), never NXDOMAIN.
    server.put("/v1/agent/check/fail/service:orders-2").await;
    for rtype in [RecordType::A, RecordType::SRV] {
        let reply = udp(server.dns, "orders.service.trading-dc.", rtype).await;
        assert_eq!(rcode(&reply), ResponseCode::NoError, "{rtype}");
        assert!(reply.answers.is_empty(), "{rtype}: {reply:?}");
        assert!(has_soa(&reply, "trading-dc."));
    }

    // Back to passing: back in DNS.
    server.put("/v1/agent/check/pass/service:orders-1").await;
    assert_eq!(
        addresses(&udp(server.dns, "orders.service.trading-dc.", RecordType::A).await),
        vec![ip("10.0.0.1")]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_check_without_status_starts_critical_as_in_consul() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.1.1", "Port": 80,
                          "Check": {"HTTP": "http://10.0.1.1/health", "Interval": "10s"}}))
        .await;
    let reply = udp(server.dns, "web.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&reply), ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "an unchecked instance is not handed out yet");
    server.stop().await;
}

#[tokio::test]
async fn negative_answers_carry_the_soa() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "Address": "10.0.0.1", "Port": 80}))
        .await;

    for name in [
        "nosuch.service.trading-dc.",
        "www.trading-dc.",
        "a.b.c.service.trading-dc.",
        "zz.addr.trading-dc.",
    ] {
        let reply = udp(server.dns, name, RecordType::A).await;
        assert_eq!(rcode(&reply), ResponseCode::NXDomain, "{name}");
        assert!(reply.metadata.authoritative, "{name}");
        assert!(has_soa(&reply, "trading-dc."), "{name}: {reply:?}");
    }
    // Known name, no record of that type: NODATA.
    let txt = udp(server.dns, "orders.service.trading-dc.", RecordType::TXT).await;
    assert_eq!(rcode(&txt), ResponseCode::NoError);
    assert!(txt.answers.is_empty() && has_soa(&txt, "trading-dc."));
    // The negative TTL is the SOA minimum (0 in the shipped zone).
    assert_eq!(txt.authorities[0].ttl, 0);
    server.stop().await;
}

#[tokio::test]
async fn zone_file_records_and_refused_outside_the_zone() {
    let server = TestServer::start().await;
    let soa = udp(server.dns, "trading-dc.", RecordType::SOA).await;
    assert_eq!(rcode(&soa), ResponseCode::NoError);
    assert!(soa.metadata.authoritative);
    assert_eq!(soa.answers.len(), 1);
    let ns = udp(server.dns, "trading-dc.", RecordType::NS).await;
    assert_eq!(ns.answers.len(), 1);
    let glue = udp(server.dns, "ns1.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&glue), vec![ip("127.0.0.1")]);

    for name in ["example.com.", "orders.service.consul.", "."] {
        let reply = udp(server.dns, name, RecordType::A).await;
        assert_eq!(rcode(&reply), ResponseCode::Refused, "{name}");
        assert!(reply.answers.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn without_a_zone_file_soa_and_ns_are_synthesized() {
    let empty = common::tools::TempDir::new("nozones");
    let server = TestServer::start_with(sextant::Config {
        zones: empty.0.clone(),
        domain: "other-dc".into(),
        ..test_config()
    })
    .await;
    let soa = udp(server.dns, "other-dc.", RecordType::SOA).await;
    assert_eq!(rcode(&soa), ResponseCode::NoError);
    assert_eq!(soa.answers.len(), 1);
    let nx = udp(server.dns, "nosuch.service.other-dc.", RecordType::A).await;
    assert_eq!(rcode(&nx), ResponseCode::NXDomain);
    assert!(has_soa(&nx, "other-dc."));
    assert_eq!(
        rcode(&udp(server.dns, "x.service.trading-dc.", RecordType::A).await),
        ResponseCode::Refused
    );
    server.stop().await;
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let server = TestServer::start().await;
    for i in 0..60 {
        server
            .register(json!({"Name": "big", "ID": format!("big-{i}"), "Address": format!("10.1.0.{}", i + 1), "Port": 8000 + i}))
            .await;
    }
    let udp_reply = udp(server.dns, "big.service.trading-dc.", RecordType::SRV).await;
    assert!(
        udp_reply.metadata.truncation,
        "60 SRV records do not fit 512 bytes: TC must be set"
    );

    let tcp_reply = tcp(server.dns, "big.service.trading-dc.", RecordType::SRV).await;
    assert!(!tcp_reply.metadata.truncation);
    assert_eq!(srvs(&tcp_reply).len(), 60);
    assert_eq!(
        additional_addresses(&tcp_reply).len(),
        60,
        "every SRV target's address is in the additional section"
    );

    // A client announcing a large EDNS buffer gets everything over UDP as well.
    let big_buffer = udp_message(
        server.dns,
        &query_message("big.service.trading-dc.", RecordType::A, Some(4096)),
    )
    .await;
    assert!(!big_buffer.metadata.truncation);
    assert_eq!(addresses(&big_buffer).len(), 60);
    assert!(big_buffer.edns.is_some(), "an EDNS query gets an OPT record back");
    server.stop().await;
}

#[tokio::test]
async fn answers_rotate_between_queries() {
    let server = TestServer::start().await;
    for i in 1..=5 {
        server
            .register(json!({"Name": "spread", "ID": format!("s{i}"), "Address": format!("10.2.0.{i}"), "Port": 80}))
            .await;
    }
    let mut firsts = HashSet::new();
    for _ in 0..60 {
        let reply = udp(server.dns, "spread.service.trading-dc.", RecordType::A).await;
        let addrs = addresses(&reply);
        assert_eq!(addrs.len(), 5, "every query gets every instance");
        firsts.insert(addrs[0]);
    }
    assert!(firsts.len() >= 3, "the first record varies between queries: {firsts:?}");

    // Over TCP too, for clients that open a connection per query (as after a truncated UDP
    // answer): each new connection starts at a random instance (30 of 30 once started alike).
    let mut firsts = HashSet::new();
    for _ in 0..30 {
        let reply = tcp(server.dns, "spread.service.trading-dc.", RecordType::A).await;
        firsts.insert(addresses(&reply)[0]);
    }
    assert!(
        firsts.len() >= 3,
        "the first record varies between TCP connections: {firsts:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn tags_node_address_and_service_ttl() {
    let server = TestServer::start_with(sextant::Config {
        service_ttl: std::time::Duration::from_secs(15),
        advertise: Some(ip("192.0.2.10")),
        ..test_config()
    })
    .await;
    server
        .register(json!({"Name": "db", "ID": "db-1", "Address": "10.3.0.1", "Port": 5432, "Tags": ["primary"]}))
        .await;
    server
        .register(json!({"Name": "db", "ID": "db-2", "Address": "10.3.0.2", "Port": 5432, "Tags": ["replica"]}))
        .await;
    // No Address: the instance is on this node, as in Consul.
    server.register(json!({"Name": "local", "Port": 7000})).await;

    let primary = udp(server.dns, "primary.db.service.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&primary), vec![ip("10.3.0.1")]);
    assert_eq!(primary.answers[0].ttl, 15);
    let rfc2782 = udp(server.dns, "_db._replica.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&rfc2782).len(), 1);
    assert_eq!(rfc2782.answers[0].name.to_ascii(), "_db._replica.service.trading-dc.");
    let any_tag = udp(server.dns, "_db._tcp.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&any_tag).len(), 2);
    assert_eq!(
        rcode(&udp(server.dns, "nosuchtag.db.service.trading-dc.", RecordType::A).await),
        ResponseCode::NXDomain
    );

    assert_eq!(
        addresses(&udp(server.dns, "local.service.trading-dc.", RecordType::A).await),
        vec![ip("192.0.2.10")]
    );
    assert_eq!(
        addresses(&udp(server.dns, "testnode.node.trading-dc.", RecordType::A).await),
        vec![ip("192.0.2.10")]
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_server() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let valid = query_message("orders.service.trading-dc.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let mut garbage: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 11], vec![0xff; 12], vec![0xab; 600]];
    garbage.push(valid[..valid.len() - 3].to_vec()); // truncated question
    let mut bad_label = valid.clone();
    bad_label[12] = 0xc0; // a compression pointer where a label should start
    garbage.push(bad_label);
    for packet in &garbage {
        if let Some(reply) = udp_raw_within(server.dns, packet, std::time::Duration::from_millis(300)).await {
            // Either dropped, or answered with an error code: never a crash, never an answer.
            assert!(reply.len() >= 4, "a reply is at least a header's start");
            assert_ne!(
                reply[3] & 0x0f,
                0,
                "a malformed query gets an error rcode, got {reply:?}"
            );
        }
    }
    let mut tcp = TcpClient::connect(server.dns).await;
    tcp.send_raw(&[0xde, 0xad, 0xbe, 0xef, 0, 1]).await; // a whole frame of garbage
    let _ = tcp.recv_within(std::time::Duration::from_millis(300)).await; // FORMERR, silence or a close

    let reply = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(
        addresses(&reply),
        vec![ip("10.0.0.1")],
        "the server still answers after malformed input"
    );
    server.stop().await;
}

#[tokio::test]
async fn several_queries_on_one_tcp_connection() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let mut conn = TcpClient::connect(server.dns).await;
    for _ in 0..5 {
        let reply = conn
            .query(&query_message("orders.service.trading-dc.", RecordType::A, None))
            .await;
        assert_eq!(addresses(&reply), vec![ip("10.0.0.1")]);
    }
    server.stop().await;
}

#[tokio::test]
async fn parents_of_rfc2782_names_exist_and_zone_transfers_are_refused() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    // A resolver minimising query names asks these on its way to `_orders._tcp.service…`:
    // NXDOMAIN would tell it nothing exists below (RFC 8020).
    for name in [
        "service.trading-dc.",
        "_tcp.service.trading-dc.",
        "_udp.service.trading-dc.",
    ] {
        let reply = udp(server.dns, name, RecordType::A).await;
        assert_eq!(rcode(&reply), ResponseCode::NoError, "{name}");
        assert!(reply.answers.is_empty() && has_soa(&reply, "trading-dc."), "{name}");
    }
    for (name, rtype) in [
        ("trading-dc.", RecordType::AXFR),
        ("trading-dc.", RecordType::IXFR),
        ("orders.service.trading-dc.", RecordType::AXFR),
    ] {
        let reply = tcp(server.dns, name, rtype).await;
        assert_eq!(rcode(&reply), ResponseCode::Refused, "{name} {rtype}");
        assert!(
            reply.answers.is_empty() && reply.authorities.is_empty(),
            "{name} {rtype}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_record_limit_and_ttls() {
    let mut config = test_config();
    config.dns_a_record_limit = 3;
    config.service_ttl = std::time::Duration::from_secs(10);
    config
        .service_ttls
        .insert("orders".into(), std::time::Duration::from_secs(5));
    config
        .service_ttls
        .insert("web*".into(), std::time::Duration::from_secs(30));
    config.node_ttl = std::time::Duration::from_secs(60);
    let server = TestServer::start_with(config).await;
    for n in 1..=10 {
        server
            .register(
                json!({"Name": "orders", "ID": format!("orders-{n}"), "Address": format!("10.0.0.{n}"), "Port": 80}),
            )
            .await;
    }
    server
        .register(json!({"Name": "web-ui", "ID": "web-1", "Address": "10.0.1.1", "Port": 80}))
        .await;
    server
        .register(json!({"Name": "quotes", "ID": "quotes-1", "Address": "10.0.2.1", "Port": 80}))
        .await;

    // The limit applies after rotation: every answer holds 3, and together they cover all 10.
    let mut seen = HashSet::new();
    for _ in 0..60 {
        for reply in [
            udp(server.dns, "orders.service.trading-dc.", RecordType::A).await,
            tcp(server.dns, "orders.service.trading-dc.", RecordType::ANY).await,
        ] {
            let ips = addresses(&reply);
            assert_eq!(ips.len(), 3, "{reply:?}");
            seen.extend(ips);
        }
    }
    assert_eq!(seen.len(), 10, "rotation before the limit reaches every instance");
    // SRV answers are not limited.
    let srv = udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&srv).len(), 10);

    let ttl = |reply: &hickory_proto::op::Message| reply.answers[0].ttl;
    assert_eq!(
        ttl(&udp(server.dns, "orders.service.trading-dc.", RecordType::A).await),
        5
    );
    assert_eq!(
        ttl(&udp(server.dns, "web-ui.service.trading-dc.", RecordType::A).await),
        30
    );
    assert_eq!(
        ttl(&udp(server.dns, "quotes.service.trading-dc.", RecordType::SRV).await),
        10
    );
    assert_eq!(
        ttl(&udp(server.dns, "testnode.node.trading-dc.", RecordType::A).await),
        60
    );
    assert_eq!(
        ttl(&tcp(server.dns, "testnode.node.trading-dc.", RecordType::A).await),
        60
    );
    server.stop().await;
}

#[tokio::test]
async fn srv_weights_follow_the_instance_status() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 80,
                         "Weights": {"Passing": 10, "Warning": 1}}))
        .await;
    server
        .register(json!({"Name": "orders", "ID": "o2", "Address": "10.0.0.2", "Port": 80,
                         "Weights": {"Passing": 7, "Warning": 3},
                         "Check": {"CheckID": "o2-ttl", "TTL": "30s", "Status": "warning"}}))
        .await;
    // No Weights: Consul's default, 1 when passing and 1 when warning.
    server
        .register(json!({"Name": "orders", "ID": "o3", "Address": "10.0.0.3", "Port": 80}))
        .await;
    let weights = async || {
        let mut found: Vec<(String, u16)> = srvs(&tcp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await)
            .into_iter()
            .map(|(_, weight, target)| (target, weight))
            .collect();
        found.sort();
        found
    };
    let target = |n: u8| format!("0a00000{n}.addr.trading-dc.");
    assert_eq!(weights().await, [(target(1), 10), (target(2), 3), (target(3), 1)]);
    let (status, text) = server.put("/v1/agent/check/pass/o2-ttl").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{text}");
    assert_eq!(weights().await, [(target(1), 10), (target(2), 7), (target(3), 1)]);
    server.stop().await;
}

/// TXT records with the instance's Meta, beside the SRV targets' addresses, only when asked for.
#[tokio::test]
async fn instance_meta_as_txt_in_srv_answers() {
    let txts = |reply: &hickory_proto::op::Message| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = reply
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::TXT(txt) => {
                    let text: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    Some((r.name.to_ascii(), String::from_utf8(text).unwrap()))
                }
                _ => None,
            })
            .collect();
        found.sort();
        found
    };
    let long = "v".repeat(300);
    let orders = json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 80,
                        "Meta": {"version": "1.2", "rfc1035-raw": "free text", "long": long}});

    let plain = TestServer::start().await;
    plain.register(orders.clone()).await;
    let reply = udp(plain.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert!(txts(&reply).is_empty(), "no TXT unless dns_meta_txt is set: {reply:?}");
    plain.stop().await;

    let mut config = test_config();
    config.dns_meta_txt = true;
    let server = TestServer::start_with(config).await;
    server.register(orders).await;
    let target = "0a000001.addr.trading-dc.".to_string();
    let want = vec![
        (target.clone(), "free text".to_string()),
        (target.clone(), format!("long={long}")),
        (target.clone(), "version=1.2".to_string()),
    ];
    for reply in [
        udp_message(
            server.dns,
            &query_message("orders.service.trading-dc.", RecordType::SRV, Some(1232)),
        )
        .await,
        tcp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await,
    ] {
        assert_eq!(txts(&reply), want);
        // The address of the target still comes first in the additional section.
        assert_eq!(additional_addresses(&reply), vec![(target.clone(), ip("10.0.0.1"))]);
        assert_eq!(srvs(&reply).len(), 1);
    }
    // In a 512-byte UDP answer the address fits, the TXT records that do not are left out, and
    // the answer is not truncated (RFC 2181 §9: additional data is optional).
    let small = udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert!(!small.metadata.truncation);
    assert_eq!(additional_addresses(&small), vec![(target.clone(), ip("10.0.0.1"))]);
    assert!(txts(&small).len() < 3);
    server.stop().await;
}

#[tokio::test]
async fn ptr_answers_name_the_services_at_an_address() {
    let mut config = test_config();
    config.reverse_zones = vec![
        "10.in-addr.arpa".into(),
        "127.in-addr.arpa".into(),
        "8.b.d.0.1.0.0.2.ip6.arpa".into(),
    ];
    let server = TestServer::start_with(config).await;
    server
        .register(json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    server
        .register(json!({"Name": "Quotes", "ID": "q1", "Address": "10.0.0.1", "Port": 81}))
        .await;
    server
        .register(json!({"Name": "web", "ID": "w1", "Address": "2001:db8::5", "Port": 80}))
        .await;
    // Without an address, an instance is at the node's (127.0.0.1 here).
    server.register(json!({"Name": "local", "Port": 7000})).await;

    let ptrs = |reply: &hickory_proto::op::Message| -> Vec<String> {
        let mut names: Vec<String> = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::PTR(ptr) => Some(ptr.0.to_ascii()),
                _ => None,
            })
            .collect();
        names.sort();
        names
    };
    for reply in [
        udp(server.dns, "1.0.0.10.in-addr.arpa.", RecordType::PTR).await,
        tcp(server.dns, "1.0.0.10.IN-ADDR.ARPA.", RecordType::PTR).await,
    ] {
        assert_eq!(rcode(&reply), ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert_eq!(
            ptrs(&reply),
            ["orders.service.trading-dc.", "quotes.service.trading-dc."]
        );
    }
    let v6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
    assert_eq!(
        ptrs(&udp(server.dns, v6, RecordType::PTR).await),
        ["web.service.trading-dc."]
    );
    assert_eq!(
        ptrs(&udp(server.dns, "1.0.0.127.in-addr.arpa.", RecordType::PTR).await),
        ["local.service.trading-dc.", "testnode.node.trading-dc."]
    );

    // Another type at a registered address: NODATA, with the reverse zone's SOA.
    let a = udp(server.dns, "1.0.0.10.in-addr.arpa.", RecordType::A).await;
    assert_eq!(rcode(&a), ResponseCode::NoError);
    assert!(a.answers.is_empty() && has_soa(&a, "10.in-addr.arpa."), "{a:?}");
    // An address nobody registered: NXDOMAIN with that SOA.
    let unknown = udp(server.dns, "9.9.9.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rcode(&unknown), ResponseCode::NXDomain);
    assert!(has_soa(&unknown, "10.in-addr.arpa."), "{unknown:?}");
    // Names between the zone and whole addresses exist (RFC 8020), and the apex has SOA and NS.
    let middle = udp(server.dns, "0.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rcode(&middle), ResponseCode::NoError);
    assert!(has_soa(&middle, "10.in-addr.arpa."));
    let soa = udp(server.dns, "10.in-addr.arpa.", RecordType::SOA).await;
    assert_eq!(rcode(&soa), ResponseCode::NoError);
    assert_eq!(soa.answers.len(), 1, "{soa:?}");
    let ns = udp(server.dns, "10.in-addr.arpa.", RecordType::NS).await;
    assert_eq!(ns.answers[0].data.to_string(), "ns.trading-dc.");
    // Outside the configured reverse zones: not ours.
    let outside = udp(server.dns, "1.0.0.11.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rcode(&outside), ResponseCode::Refused);

    // Deregistering takes the name away.
    let (status, _) = server.put("/v1/agent/service/deregister/q1").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(
        ptrs(&udp(server.dns, "1.0.0.10.in-addr.arpa.", RecordType::PTR).await),
        ["orders.service.trading-dc."]
    );
    let (status, _) = server.put("/v1/agent/service/deregister/o1").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let gone = udp(server.dns, "1.0.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rcode(&gone), ResponseCode::NXDomain);
    server.stop().await;
}

/// Classes other than IN get REFUSED, for every name: sextant holds no CH (`version.bind`) or HS
/// data, and answering them with the IN zone's SOA said otherwise.
#[tokio::test]
async fn other_classes_are_refused() {
    use hickory_proto::rr::DNSClass;
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "o1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    for (name, class) in [
        ("version.bind.", DNSClass::CH),
        ("orders.service.trading-dc.", DNSClass::CH),
        ("trading-dc.", DNSClass::HS),
        ("orders.service.trading-dc.", DNSClass::ANY),
        ("ns1.trading-dc.", DNSClass::CH),
    ] {
        let mut query = query_message(name, RecordType::A, None);
        query.queries[0].set_query_class(class);
        for reply in [udp_message(server.dns, &query).await, {
            let mut client = TcpClient::connect(server.dns).await;
            client.query(&query).await
        }] {
            assert_eq!(rcode(&reply), ResponseCode::Refused, "{name} {class:?}");
            assert!(
                reply.answers.is_empty() && reply.authorities.is_empty(),
                "{name} {class:?}: {reply:?}"
            );
        }
    }
    server.stop().await;
}

/// UDP answers are capped at 1,232 bytes (the 2020 DNS flag day's figure) whatever EDNS buffer
/// the client announces: a 52-byte query announcing 65,535 once drew a 65,468-byte answer (an
/// amplifier). The rest comes over TCP after TC; `dns_max_udp_size` moves the cap.
#[tokio::test]
async fn udp_answers_are_capped_whatever_the_client_announces() {
    for (cap, config) in [
        (1232, test_config()),
        (
            4096,
            sextant::Config {
                dns_max_udp_size: 4096,
                ..test_config()
            },
        ),
    ] {
        let server = TestServer::start_with(config).await;
        for i in 0..300 {
            server
                .register(json!({"Name": "huge", "ID": format!("h-{i}"),
                                 "Address": format!("10.4.{}.{}", i / 250, i % 250 + 1), "Port": 80}))
                .await;
        }
        let big = query_message("huge.service.trading-dc.", RecordType::SRV, Some(65_535));
        let mut raw = big.to_vec().unwrap();
        // The same query with an EDNS option the in-place parser does not take: read in full.
        let mut other_path = raw.clone();
        let rdlen_at = other_path.len() - 2;
        other_path[rdlen_at..].copy_from_slice(&[0, 4]);
        other_path.extend_from_slice(&[0xfd, 0xe9, 0, 0]);
        for (path, packet) in [("in place", &mut raw), ("read in full", &mut other_path)] {
            let reply = udp_raw(server.dns, packet).await.expect("a reply");
            assert!(reply.len() <= cap, "{path}: {} bytes over UDP, cap {cap}", reply.len());
            let message = hickory_proto::op::Message::from_vec(&reply).expect("well-formed");
            assert!(message.metadata.truncation, "{path}: TC set");
            assert!(reply.len() > cap / 2, "{path}: as much as fits ({} bytes)", reply.len());
        }
        let whole = tcp(server.dns, "huge.service.trading-dc.", RecordType::SRV).await;
        assert_eq!(srvs(&whole).len(), 300);
        server.stop().await;
    }
}

/// A known service whose every instance is critical is NODATA; its negative TTL (the SOA's TTL
/// and MINIMUM in that answer) is `--dns-unhealthy-ttl` when set, else the SOA minimum, and other
/// negative answers keep the SOA minimum.
#[tokio::test]
async fn a_service_with_no_healthy_instance_has_a_negative_ttl_of_its_own() {
    use hickory_proto::rr::RData;
    let negative_ttl = |reply: &hickory_proto::op::Message| {
        reply.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.ttl, soa.minimum)),
            _ => None,
        })
    };
    for (unhealthy_ttl, expected) in [(None, (0, 0)), (Some(std::time::Duration::from_secs(7)), (7, 7))] {
        let server = TestServer::start_with(sextant::Config {
            dns_unhealthy_ttl: unhealthy_ttl,
            ..test_config()
        })
        .await;
        server
            .register(
                json!({"Name": "down", "ID": "down-1", "Address": "10.0.0.1", "Port": 80, "Check": {"TTL": "1m"}}),
            )
            .await;
        server
            .register(json!({"Name": "up", "ID": "up-1", "Address": "10.0.0.2", "Port": 80}))
            .await;
        for rtype in [RecordType::A, RecordType::SRV] {
            let reply = udp(server.dns, "down.service.trading-dc.", rtype).await;
            assert_eq!((rcode(&reply), reply.answers.len()), (ResponseCode::NoError, 0));
            assert_eq!(negative_ttl(&reply), Some(expected), "{rtype} with {unhealthy_ttl:?}");
        }
        let nodata = udp(server.dns, "up.service.trading-dc.", RecordType::AAAA).await;
        assert_eq!(
            negative_ttl(&nodata),
            Some((0, 0)),
            "a healthy service's NODATA keeps the minimum"
        );
        let nxdomain = udp(server.dns, "nosuch.service.trading-dc.", RecordType::A).await;
        assert_eq!(negative_ttl(&nxdomain), Some((0, 0)));
        server.stop().await;
    }
}
