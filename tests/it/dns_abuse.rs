//! Hostile input over real sockets: hundreds of malformed, truncated, random and oversized UDP
//! and TCP packets, after which the server still answers correctly.

use crate::common;

use std::time::Duration;

use common::dns::*;
use common::{TestServer, ip};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// A question section by hand, so names can break the rules (a 64-byte label, 300 bytes in all,
/// a compression pointer to itself).
fn raw_query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    packet.extend_from_slice(name);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    packet
}

fn wire_name(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for label in labels {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// Every kind of bad packet, from a fixed seed (a failure is reproducible).
fn bad_packets(count: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x5e7a47);
    let valid = query_message("orders.service.trading-dc.", RecordType::SRV, Some(1232))
        .to_vec()
        .unwrap();
    let long_label = [b'a'; 64];
    let many_labels: Vec<&[u8]> = std::iter::repeat_n(&b"abcdefghijklmnopqrstuvwxyz"[..], 12).collect();
    let oversized = [
        raw_query(1, &wire_name(&[&long_label, b"service", b"trading-dc"]), 1),
        raw_query(2, &wire_name(&many_labels), 1),
        raw_query(3, &[0xC0, 12, 0, 0], 1),                  // a pointer to itself
        raw_query(4, &[7, b'o', b'r', b'd', b'e', b'r'], 1), // the name runs off the end
        raw_query(5, &wire_name(&[b"orders", b"service", b"trading-dc"]), 252), // AXFR over UDP
    ];
    let mut packets: Vec<Vec<u8>> = oversized.to_vec();
    while packets.len() < count {
        let packet = match rng.random_range(0..3) {
            // Random bytes of random length, including empty and larger than any query.
            0 => (0..rng.random_range(0..1500)).map(|_| rng.random()).collect(),
            // A valid query cut short.
            1 => valid[..rng.random_range(0..valid.len())].to_vec(),
            // A valid query with a few bytes changed.
            _ => {
                let mut p = valid.clone();
                for _ in 0..rng.random_range(1..6) {
                    let i = rng.random_range(0..p.len());
                    p[i] = rng.random();
                }
                p
            }
        };
        packets.push(packet);
    }
    packets
}

async fn still_answers(server: &TestServer) {
    let reply = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&reply), ResponseCode::NoError);
    assert_eq!(addresses(&reply), vec![ip("10.0.0.1")]);
    let reply = tcp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(srvs(&reply).len(), 1);
    let reply = udp(server.dns, "nothing.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&reply), ResponseCode::NXDomain);
}

#[tokio::test]
async fn malformed_udp_packets_leave_the_server_answering() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let packets = bad_packets(600);
    for packet in &packets {
        socket.send_to(packet, server.dns).await.unwrap();
    }
    // Whatever comes back must be a well-formed DNS message (FORMERR, REFUSED, an answer).
    let mut buf = vec![0u8; 65535];
    let mut replies = 0;
    while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await {
        hickory_proto::op::Message::from_vec(&buf[..n]).expect("every reply decodes");
        replies += 1;
    }
    println!("{} bad UDP packets, {replies} replies", packets.len());
    for (i, packet) in bad_packets(6).iter().take(5).enumerate() {
        let reply = udp_raw_within(server.dns, packet, Duration::from_millis(500)).await;
        if let Some(reply) = reply {
            let msg = hickory_proto::op::Message::from_vec(&reply).expect("a reply decodes");
            assert_ne!(
                rcode(&msg),
                ResponseCode::NoError,
                "oversized or broken name {i} was answered"
            );
        }
    }
    still_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_tcp_streams_leave_the_server_answering() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let packets = bad_packets(300);
    let mut rng = StdRng::seed_from_u64(7);
    for chunk in packets.chunks(10) {
        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        for packet in chunk {
            let len = packet.len().min(u16::MAX as usize) as u16;
            // Sometimes a length prefix that promises more than is sent.
            let claimed = if rng.random_bool(0.2) {
                len.saturating_add(100)
            } else {
                len
            };
            if stream.write_all(&claimed.to_be_bytes()).await.is_err() || stream.write_all(packet).await.is_err() {
                break; // the server closed the connection: fine
            }
        }
        drop(stream);
    }
    // Half a length prefix, then silence: the connection is dropped at the idle timeout, and
    // others are served meanwhile.
    let mut stalled = TcpStream::connect(server.dns).await.unwrap();
    stalled.write_all(&[0]).await.unwrap();
    still_answers(&server).await;
    let mut client = TcpClient::connect(server.dns).await;
    for _ in 0..3 {
        let reply = client
            .query(&query_message("orders.service.trading-dc.", RecordType::A, None))
            .await;
        assert_eq!(addresses(&reply).len(), 1);
    }
    server.stop().await;
}

/// A TCP connection from `ip` (any 127/8 address is this host's).
async fn connect_from(ip: &str, server: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server closed `stream` (within 3 s).
async fn closed(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// One client cannot hold the DNS-over-TCP connections (RFC 7766 §6.2.3): a frame that is not a
/// DNS message closes its connection (zero-length frames every few seconds would otherwise keep
/// it open for ever); one address gets its share and no more; and when every slot is taken, the
/// connection idle longest is closed so that a new client is answered.
#[tokio::test]
async fn one_client_cannot_hold_the_tcp_connections() {
    let server = TestServer::start_with(sextant::Config {
        dns_tcp_max_connections: 40,
        dns_tcp_max_per_client: 10,
        ..common::test_config()
    })
    .await;
    server
        .register(json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let mut zero = connect_from("127.0.0.1", server.dns).await;
    zero.write_all(&[0, 0]).await.unwrap();
    assert!(closed(&mut zero).await, "a zero-length frame closes its connection");

    // One address: its ten, and the eleventh closed at once.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from("127.0.0.2", server.dns).await);
    }
    let mut eleventh = connect_from("127.0.0.2", server.dns).await;
    assert!(closed(&mut eleventh).await, "an address over its share is closed");
    // Every slot taken, by idle connections from three more addresses.
    for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..10 {
            held.push(connect_from(ip, server.dns).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // all accepted
    // A new client is answered: the connection idle longest (the first) made room.
    let reply = tcp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec![ip("10.0.0.1")]);
    assert!(closed(&mut held[0]).await, "the connection idle longest was closed");
    assert!(!closed(&mut held[39]).await, "the newest idle one stays");
    still_answers(&server).await;
    server.stop().await;
}
