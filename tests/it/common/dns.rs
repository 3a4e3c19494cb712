//! A small DNS client over real sockets: hickory-proto encodes and decodes, tokio carries.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn query_message(name: &str, rtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("valid query name"), rtype));
    if let Some(size) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        msg.set_edns(edns);
    }
    msg
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Sends raw bytes over UDP and returns the raw reply (None on timeout).
pub async fn udp_raw(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(server, packet, TIMEOUT).await
}

/// As `udp_raw`, waiting at most `wait` (for packets the server may rightly drop).
pub async fn udp_raw_within(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    // From loopback to loopback; from the address the route gives to anywhere else.
    let local = if server.ip().is_loopback() {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(local).await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(len);
    Some(buf)
}

pub async fn udp_message(server: SocketAddr, msg: &Message) -> Message {
    let reply = udp_raw(server, &msg.to_vec().unwrap())
        .await
        .expect("a UDP reply within 5 s");
    let parsed = Message::from_vec(&reply).expect("a well-formed reply");
    assert_eq!(parsed.metadata.id, msg.metadata.id, "reply ID matches the query");
    parsed
}

pub async fn udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    udp_message(server, &query_message(name, rtype, None)).await
}

/// One TCP connection; several queries may be sent on it in turn.
pub struct TcpClient(TcpStream);

impl TcpClient {
    pub async fn connect(server: SocketAddr) -> Self {
        Self(TcpStream::connect(server).await.expect("TCP connect"))
    }

    /// A connection from `local` (any 127/8 address is this host's).
    pub async fn connect_from(local: IpAddr, server: SocketAddr) -> Self {
        let socket = match local {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        Self(socket.connect(server).await.expect("TCP connect"))
    }

    pub async fn send_raw(&mut self, packet: &[u8]) {
        let len = u16::try_from(packet.len()).unwrap().to_be_bytes();
        self.0.write_all(&len).await.unwrap();
        self.0.write_all(packet).await.unwrap();
    }

    pub async fn recv(&mut self) -> Option<Message> {
        self.recv_within(TIMEOUT).await
    }

    /// The next reply, waiting at most `wait` for it to start.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Message> {
        let mut len = [0u8; 2];
        tokio::time::timeout(wait, self.0.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        tokio::time::timeout(TIMEOUT, self.0.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(Message::from_vec(&buf).expect("a well-formed reply"))
    }

    pub async fn query(&mut self, msg: &Message) -> Message {
        self.send_raw(&msg.to_vec().unwrap()).await;
        let reply = self.recv().await.expect("a TCP reply within 5 s");
        assert_eq!(reply.metadata.id, msg.metadata.id);
        reply
    }
}

pub async fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    TcpClient::connect(server)
        .await
        .query(&query_message(name, rtype, None))
        .await
}

// === reading answers ===

pub fn rcode(msg: &Message) -> ResponseCode {
    msg.metadata.response_code
}

/// The A and AAAA addresses in the answer section, in order.
pub fn addresses(msg: &Message) -> Vec<IpAddr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// (port, weight, target) of every SRV answer.
pub fn srvs(msg: &Message) -> Vec<(u16, u16, String)> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.weight, s.target.to_ascii())),
            _ => None,
        })
        .collect()
}

/// name → address of every A/AAAA in the additional section.
pub fn additional_addresses(msg: &Message) -> Vec<(String, IpAddr)> {
    msg.additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_ascii(), IpAddr::V4(a.0))),
            RData::AAAA(a) => Some((r.name.to_ascii(), IpAddr::V6(a.0))),
            _ => None,
        })
        .collect()
}

/// True when the authority section holds the zone's SOA (what a negative answer must carry).
pub fn has_soa(msg: &Message, zone: &str) -> bool {
    msg.authorities
        .iter()
        .any(|r| matches!(r.data, RData::SOA(_)) && r.name.to_ascii().eq_ignore_ascii_case(zone))
}

/// The Extended DNS Error info-codes (RFC 8914, EDNS option 15) a reply carries.
pub fn extended_errors(msg: &Message) -> Vec<u16> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let Some(edns) = &msg.edns else {
        return Vec::new();
    };
    edns.options()
        .get_all(EdnsCode::Unknown(15))
        .into_iter()
        .filter_map(|option| match option {
            EdnsOption::Unknown(15, data) if data.len() >= 2 => Some(u16::from_be_bytes([data[0], data[1]])),
            _ => None,
        })
        .collect()
}
