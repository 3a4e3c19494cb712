//! sextant is no tool for a reflection attack: over UDP, a source network past the response
//! rate gets every second response truncated and no other (while another network is answered
//! in full), an answer larger than a few times its query goes truncated to a source that has
//! not shown it is real (until it opens a TCP connection, or shows a server cookie), and ANY
//! gets one RRset (RFC 8482).
//! The server runs with loopback not exempt, so that 127.0.x.y addresses stand for the
//! internet's.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::TestServer;
use common::dns::{TcpClient, query_message, rcode, tcp};
use common::tools::require;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use serde_json::json;
use tokio::net::UdpSocket;

fn server_config(rate: u32) -> sextant::Config {
    sextant::Config {
        dns_rate_limit: rate,
        dns_rate_limit_exempt: Vec::new(),
        ..common::test_config()
    }
}

/// Sends `queries` from `socket` to `server` at once, then takes what comes back until the
/// server has been quiet for 300 ms.
async fn exchange(socket: &UdpSocket, server: SocketAddr, queries: &[Vec<u8>]) -> Vec<Message> {
    for query in queries {
        socket.send_to(query, server).await.unwrap();
    }
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok((len, _))) = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await {
        replies.push(Message::from_vec(&buf[..len]).expect("a well-formed reply"));
    }
    replies
}

async fn socket_at(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

fn queries(count: usize, name: &str, rtype: RecordType) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| query_message(name, rtype, Some(1232)).to_vec().unwrap())
        .collect()
}

#[tokio::test]
async fn a_flooding_network_is_slipped_while_another_is_answered() {
    let rate = 20;
    let server = TestServer::start_with(server_config(rate)).await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let name = "orders.service.trading-dc.";
    // The flood: 200 queries within a second or two.
    let flooder = socket_at("127.0.0.2").await;
    let flood = queries(200, name, RecordType::A);
    let flooded = exchange(&flooder, server.dns, &flood).await;
    let full = flooded.iter().filter(|m| !m.metadata.truncation).count();
    let slipped: Vec<&Message> = flooded.iter().filter(|m| m.metadata.truncation).collect();
    let dropped = flood.len() - flooded.len();
    // The window is a clock second: a flood that straddles one gets the rate twice.
    assert!(full <= 2 * rate as usize, "at most the rate answered in full: {full}");
    assert!(
        slipped.len() >= 60 && dropped >= 60,
        "slipped {}, dropped {dropped}",
        slipped.len()
    );
    for reply in &slipped {
        assert!(reply.answers.is_empty() && reply.additionals.is_empty(), "{reply:?}");
        assert!(
            reply.to_vec().unwrap().len() <= flood[0].len(),
            "no larger than the query"
        );
    }
    // Its whole /24 shares the limit.
    let neighbour = socket_at("127.0.0.3").await;
    let replies = exchange(&neighbour, server.dns, &queries(40, name, RecordType::A)).await;
    assert!(replies.len() < 40, "the flooder's neighbour is limited too");

    // Another network, in the same second, is answered in full.
    let other = socket_at("127.0.1.2").await;
    let replies = exchange(&other, server.dns, &queries(10, name, RecordType::A)).await;
    assert_eq!(replies.len(), 10);
    assert!(
        replies.iter().all(|m| !m.metadata.truncation && m.answers.len() == 1),
        "{replies:?}"
    );

    // A real client told TC asks over TCP, which is not limited.
    let over_tcp = tcp(server.dns, name, RecordType::A).await;
    assert_eq!(over_tcp.answers.len(), 1);
    let metrics = server.get("/metrics").await.2;
    let counted = |label: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("sextant_dns_rate_limited_total") && l.contains(label))
            .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no {label} count in the metrics"))
    };
    assert!(counted("slipped") >= slipped.len(), "{metrics}");
    assert!(counted("dropped") >= dropped, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_large_answer_goes_truncated_until_the_source_has_used_tcp() {
    let server = TestServer::start_with(server_config(0)).await;
    for i in 1..=8 {
        let body = json!({"Name": "big", "ID": format!("big-{i}"), "Address": format!("10.0.0.{i}"), "Port": 80});
        server.register(body).await;
    }
    let name = "big.service.trading-dc.";
    let srv = query_message(name, RecordType::SRV, Some(1232)).to_vec().unwrap();
    let source = socket_at("127.0.2.7").await;
    let reply = &exchange(&source, server.dns, std::slice::from_ref(&srv)).await[0];
    assert!(reply.metadata.truncation && reply.answers.is_empty(), "{reply:?}");
    assert!(reply.to_vec().unwrap().len() <= srv.len());
    // A small answer is sent whole.
    let a_one = query_message("ns1.trading-dc.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let reply = &exchange(&source, server.dns, &[a_one]).await[0];
    assert!(!reply.metadata.truncation && reply.answers.len() == 1, "{reply:?}");

    // Over TCP from the same address: answered, and from then on UDP answers are whole.
    let ip: IpAddr = "127.0.2.7".parse().unwrap();
    let mut client = TcpClient::connect_from(ip, server.dns).await;
    let over_tcp = client.query(&query_message(name, RecordType::SRV, None)).await;
    assert_eq!(over_tcp.answers.len(), 8);
    let reply = &exchange(&source, server.dns, &[srv]).await[0];
    assert!(!reply.metadata.truncation && reply.answers.len() == 8, "{reply:?}");

    // Another address of the same network has shown nothing.
    let stranger = socket_at("127.0.2.8").await;
    let srv = query_message(name, RecordType::SRV, Some(1232)).to_vec().unwrap();
    assert!(exchange(&stranger, server.dns, &[srv]).await[0].metadata.truncation);
    server.stop().await;
}

/// RFC 8482: ANY gets one RRset, from the registry and from the zone files alike.
#[tokio::test]
async fn any_is_answered_with_one_rrset() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "dual", "ID": "dual-4", "Address": "10.0.0.1", "Port": 80}))
        .await;
    server
        .register(json!({"Name": "dual", "ID": "dual-6", "Address": "2001:db8::1", "Port": 80}))
        .await;
    let dual = tcp(server.dns, "dual.service.trading-dc.", RecordType::ANY).await;
    let types: Vec<RecordType> = dual.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::A], "{dual:?}");
    // The zone's apex has an SOA and an NS record.
    let apex = tcp(server.dns, "trading-dc.", RecordType::ANY).await;
    let first = apex.answers.first().expect("an answer").record_type();
    assert!(apex.answers.iter().all(|r| r.record_type() == first), "{apex:?}");
    let soa = tcp(server.dns, "trading-dc.", RecordType::SOA).await;
    let ns = tcp(server.dns, "trading-dc.", RecordType::NS).await;
    assert!(!soa.answers.is_empty() && !ns.answers.is_empty(), "the apex has both");
    server.stop().await;
}

/// A query with a COOKIE option holding `cookie` (RFC 7873).
fn with_cookie(name: &str, rtype: RecordType, cookie: &[u8]) -> Message {
    let mut message = query_message(name, rtype, Some(1232));
    let edns = message.edns.as_mut().expect("an OPT record");
    edns.options_mut()
        .insert(EdnsOption::Unknown(u16::from(EdnsCode::Cookie), cookie.to_vec()));
    message
}

fn cookie_of(reply: &Message) -> Option<Vec<u8>> {
    match reply.edns.as_ref()?.options().get(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        other => panic!("a cookie read as {other:?}"),
    }
}

/// RFC 7873: a query with a client cookie gets a server cookie (RFC 9018's format) back, in a
/// truncated response too; shown again, the cookie proves the source, whose large answers then
/// go whole over UDP, past the rate limit too. From another address it proves nothing; a
/// malformed cookie is a FORMERR; TCP answers and the zone files' answers carry cookies as well.
#[tokio::test]
async fn a_server_cookie_proves_the_source() {
    let rate = 20;
    let server = TestServer::start_with(server_config(rate)).await;
    for i in 1..=8 {
        let body = json!({"Name": "big", "ID": format!("big-{i}"), "Address": format!("10.0.0.{i}"), "Port": 80});
        server.register(body).await;
    }
    let name = "big.service.trading-dc.";
    let asked = |cookie: &[u8]| with_cookie(name, RecordType::SRV, cookie).to_vec().unwrap();
    let client_cookie = [1, 2, 3, 4, 5, 6, 7, 8];
    let source = socket_at("127.0.3.7").await;
    let first = &exchange(&source, server.dns, &[asked(&client_cookie)]).await[0];
    assert!(first.metadata.truncation && first.answers.is_empty(), "{first:?}");
    let cookie = cookie_of(first).expect("a cookie in the truncated response");
    assert_eq!((cookie.len(), &cookie[..8], cookie[8]), (24, &client_cookie[..], 1));

    // Shown again: the answer goes whole, with the same cookie (it is young).
    let second = &exchange(&source, server.dns, &[asked(&cookie)]).await[0];
    assert!(!second.metadata.truncation && second.answers.len() == 8, "{second:?}");
    assert_eq!(cookie_of(second).as_deref(), Some(&cookie[..]));
    // From another address the cookie proves nothing, and that address gets its own.
    let stranger = socket_at("127.0.3.8").await;
    let third = &exchange(&stranger, server.dns, &[asked(&cookie)]).await[0];
    assert!(third.metadata.truncation, "{third:?}");
    let theirs = cookie_of(third).expect("a cookie");
    assert!(theirs[..8] == client_cookie && theirs[16..] != cookie[16..]);
    // RFC 7873 §5.2.2: a cookie of 9 bytes is malformed.
    let malformed = &exchange(&source, server.dns, &[asked(&[9; 9])]).await[0];
    assert_eq!(rcode(malformed), ResponseCode::FormErr);

    // Past the rate, queries with the cookie are answered in full; the others (a small
    // answer, which no bound cuts) are limited.
    let small = query_message("ns1.trading-dc.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let mixed: Vec<Vec<u8>> = (0..60).flat_map(|_| [asked(&cookie), small.clone()]).collect();
    let replies = exchange(&source, server.dns, &mixed).await;
    let (proven, unproven): (Vec<&Message>, Vec<&Message>) = replies.iter().partition(|m| cookie_of(m).is_some());
    assert_eq!(proven.len(), 60, "every query with the cookie answered");
    assert!(proven.iter().all(|m| !m.metadata.truncation && m.answers.len() == 8));
    let whole = unproven.iter().filter(|m| !m.metadata.truncation).count();
    assert!(whole <= 2 * rate as usize, "the others limited: {whole} answered whole");

    // Over TCP, and from the zone files: a cookie back.
    let mut client = TcpClient::connect_from(common::ip("127.0.3.9"), server.dns).await;
    for asked in [name, "ns1.trading-dc."] {
        let reply = client.query(&with_cookie(asked, RecordType::A, &client_cookie)).await;
        let cookie = cookie_of(&reply).unwrap_or_else(|| panic!("no cookie for {asked}: {reply:?}"));
        assert_eq!(cookie[..8], client_cookie);
        assert_eq!(reply.answers.len(), if asked == name { 8 } else { 1 });
    }
    server.stop().await;
}

/// dig sends a client cookie by default and shows the server's: told TC without a cookie it
/// would go to TCP (`+ignore` keeps it on UDP here); with the cookie it was given, it gets the
/// whole answer over UDP.
#[tokio::test]
async fn dig_learns_a_cookie_and_is_answered_in_full_over_udp() {
    let dig = require("dig", "bind9-dnsutils");
    let server = TestServer::start_with(server_config(0)).await;
    for i in 1..=8 {
        let body = json!({"Name": "big", "ID": format!("big-{i}"), "Address": format!("10.0.0.{i}"), "Port": 80});
        server.register(body).await;
    }
    let port = server.dns.port().to_string();
    let run = async |cookie: &str| {
        let output = tokio::process::Command::new(&dig)
            .args([
                "-b",
                "127.0.4.7",
                "@127.0.0.1",
                "-p",
                &port,
                "+time=2",
                "+tries=1",
                "+ignore",
            ])
            .args([cookie, "big.service.trading-dc", "SRV"])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "dig failed: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let flags = |output: &str| -> Vec<String> {
        let line = output
            .lines()
            .find(|l| l.starts_with(";; flags: "))
            .expect("a flags line");
        let flags = line
            .trim_start_matches(";; flags: ")
            .split(';')
            .next()
            .unwrap_or_default();
        flags.split_whitespace().map(str::to_owned).collect()
    };
    let first = run("+cookie").await;
    assert!(
        flags(&first).contains(&"tc".to_owned()) && first.contains("ANSWER: 0"),
        "{first}"
    );
    let line = first
        .lines()
        .find(|l| l.starts_with("; COOKIE: "))
        .unwrap_or_else(|| panic!("no cookie in {first}"));
    assert!(line.ends_with("(good)"), "dig found the cookie not good: {line}");
    let cookie = line.split_whitespace().nth(2).expect("the cookie's hex");
    assert_eq!(cookie.len(), 48, "{line}");
    let second = run(&format!("+cookie={cookie}")).await;
    assert!(
        !flags(&second).contains(&"tc".to_owned()) && second.contains("ANSWER: 8,"),
        "{second}"
    );
    assert!(
        second.contains(&format!("; COOKIE: {cookie} (good)")),
        "the same cookie kept: {second}"
    );
    server.stop().await;
}
