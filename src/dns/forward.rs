//! Forwarding to upstream recursors (Consul's `recursors`) for names outside every zone sextant
//! serves. Off unless recursors are configured; then only recursive queries (RD set) are
//! forwarded, each recursor is tried in order within a time bound, and a response is relayed
//! only if it answers the question that was asked, from the address it was sent to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::message::{
    EDNS_COOKIE, HEADER_LEN, RCODE_SERVFAIL, TYPE_OPT, Transport, parse_opt, question_end, remove_option,
};
use super::reply::{EDE_NO_REACHABLE_AUTHORITY, write_ede_option};

/// Forwarded queries waiting on recursors at once; beyond this, SERVFAIL at once.
const MAX_IN_FLIGHT: usize = 1024;
/// Largest UDP response read from a recursor: any datagram (a shorter buffer cut longer
/// responses, which were then relayed malformed).
const MAX_UDP_RESPONSE: usize = u16::MAX as usize;

pub struct Forwarder {
    recursors: Vec<SocketAddr>,
    /// Clients whose queries may be forwarded.
    clients: Vec<IpNet>,
    /// The time one recursor has to answer before the next is tried.
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl Forwarder {
    /// `None` without recursors: forwarding is off.
    pub fn new(recursors: Vec<SocketAddr>, clients: Vec<IpNet>, timeout: Duration) -> Option<Self> {
        (!recursors.is_empty()).then(|| Self {
            recursors,
            clients,
            timeout,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Whether a client at `ip` may have its queries forwarded.
    pub fn serves_client(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical(); // an IPv4 client on a dual-stack socket
        self.clients.iter().any(|net| net.contains(&ip))
    }

    /// A slot for one forwarded query, or `None` when too many are waiting already.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// The upstream response to `query`, with the client's ID, leaving `room` bytes of a UDP
    /// response free; SERVFAIL when no recursor gave a usable one in time. `None` only for a
    /// packet too short to answer.
    pub async fn forward(&self, query: &[u8], transport: Transport, room: usize) -> Option<Vec<u8>> {
        let question_end = question_end(query)?;
        for &recursor in &self.recursors {
            let id: u16 = rand::random();
            let mut upstream = query.to_vec();
            upstream[..2].copy_from_slice(&id.to_be_bytes());
            let exchange = async {
                match transport {
                    Transport::Udp => exchange_udp(recursor, &upstream).await,
                    Transport::Tcp => exchange_tcp(recursor, &upstream).await,
                }
            };
            let response = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    tracing::debug!(%recursor, %error, "recursor failed");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%recursor, "recursor did not answer in time");
                    continue;
                }
            };
            if let Some(response) = relayed(query, &upstream, response, transport, room) {
                return Some(response);
            }
            tracing::debug!(%recursor, "recursor sent a response to another question");
        }
        Some(servfail(query, question_end, Some(EDE_NO_REACHABLE_AUTHORITY)))
    }
}

/// Loopback, private, shared (CGNAT) and link-local networks: who may recurse by default.
pub fn private_networks() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .map(|net| net.parse().expect("a valid literal network"))
    .collect()
}

/// Whether a query is one to forward: a standard query with recursion desired.
pub fn wants_recursion(query: &[u8]) -> bool {
    query.len() >= HEADER_LEN && query[2] & 0x80 == 0 && (query[2] >> 3) & 0x0F == 0 && query[2] & 0x01 != 0
}

/// A SERVFAIL for `query`: its ID, question, RD and CD; and, when the query had an OPT record,
/// one in return carrying the Extended DNS Error `ede` if given (RFC 8914).
pub fn servfail(query: &[u8], question_end: usize, ede: Option<u16>) -> Vec<u8> {
    let mut out = query[..question_end].to_vec();
    out[2] = 0x80 | (query[2] & 0x01);
    out[3] = 0x80 | (query[3] & 0x10) | RCODE_SERVFAIL; // RA: recursion is offered
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    if let Some(payload) = opt_payload(query, question_end) {
        out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
        out.extend_from_slice(&payload.max(512).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        match ede {
            Some(code) => {
                out.extend_from_slice(&6u16.to_be_bytes());
                write_ede_option(&mut out, code);
            }
            None => out.extend_from_slice(&[0, 0]),
        }
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
    out
}

/// What the client of `query` is sent for a recursor's `response` to `upstream` (the query as
/// sent on, under an ID of its own): the response under the client's ID without the
/// recursor's cookie (which is for sextant), cut to its question with TC when it is larger than
/// a UDP client takes with `room` bytes to spare; `None` when it answers another question.
pub fn relayed(
    query: &[u8],
    upstream: &[u8],
    mut response: Vec<u8>,
    transport: Transport,
    room: usize,
) -> Option<Vec<u8>> {
    let question_end = question_end(query)?;
    if upstream.len() < question_end || !answers(&response, &upstream[..question_end]) {
        return None;
    }
    response[..2].copy_from_slice(&query[..2]);
    remove_option(&mut response, EDNS_COOKIE);
    if transport == Transport::Udp && response.len() + room > udp_limit(query, question_end) {
        return Some(truncated(&response, question_end));
    }
    Some(response)
}

/// The payload size of the query's OPT record, when it has one right after the question.
fn opt_payload(query: &[u8], question_end: usize) -> Option<u16> {
    let has_opt = query.get(10..12) == Some(&[0, 1]);
    has_opt
        .then(|| parse_opt(&query[question_end..]))
        .flatten()
        .map(|opt| opt.payload)
}

/// The largest UDP response the client of `query` takes: its EDNS payload size, else 512.
fn udp_limit(query: &[u8], question_end: usize) -> usize {
    usize::from(opt_payload(query, question_end).unwrap_or(512).max(512))
}

/// `response` cut to its header and question, with TC set: the client asks again over TCP
/// (RFC 1035 §4.2.1), where the whole response is relayed.
fn truncated(response: &[u8], question_end: usize) -> Vec<u8> {
    let mut out = response[..question_end].to_vec();
    out[2] |= 0x02;
    out[6..12].fill(0);
    out
}

/// Whether `response` is a response with the ID and question of `question` (header included).
fn answers(response: &[u8], question: &[u8]) -> bool {
    response.len() >= question.len()
        && response[2] & 0x80 != 0
        && response[..2] == question[..2]
        && response[4..6] == [0, 1]
        && response[HEADER_LEN..question.len()].eq_ignore_ascii_case(&question[HEADER_LEN..])
}

async fn exchange_udp(recursor: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if recursor.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    // A fresh socket per query: a random source port, and only the recursor can reply to it.
    let socket = UdpSocket::bind(local).await?;
    socket.connect(recursor).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP_RESPONSE];
    loop {
        let len = socket.recv(&mut buf).await?;
        // Stray datagrams (a late answer to an earlier ID) are skipped, not taken as the answer.
        if len >= HEADER_LEN && buf[..2] == query[..2] {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(recursor: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(recursor).await?;
    let _ = stream.set_nodelay(true);
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servfail_keeps_the_question() {
        // ID 0x1234, RD, one question: example.com. A IN.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        assert!(wants_recursion(&query));
        let end = question_end(&query).unwrap();
        assert_eq!(end, query.len());
        let reply = servfail(&query, end, Some(EDE_NO_REACHABLE_AUTHORITY));
        assert_eq!(&reply[..4], &[0x12, 0x34, 0x81, 0x82]);
        assert_eq!(&reply[12..], &query[12..]);
        assert!(answers(&reply, &query));
        let mut other = query.clone();
        other[13] = b'x';
        assert!(!answers(&reply, &other));
        query[2] = 0; // no RD
        assert!(!wants_recursion(&query));
        assert_eq!(question_end(&query[..20]), None);
    }
}
