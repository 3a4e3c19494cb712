//! Query bytes to response bytes: the fast path first; then the recursors, for names outside
//! every zone served; then the hickory path (registry names the fast path passes on, and the
//! zone files through hickory's `Catalog`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::answers::ServiceAnswerMap;
use super::fast::{FastPath, Outcome, Transport};
use super::forward::{self, Forwarder};
use super::handler::DnsHandler;
use super::zones::Zones;
use crate::registry::Registry;

pub struct DnsEngine {
    fast: FastPath,
    hickory: DnsHandler,
    forwarder: Option<Forwarder>,
}

impl DnsEngine {
    /// The DNS server's answers: registry names from `answers` (compiled with its settings),
    /// PTR and the hickory path's lookups from `registry`, the rest from `zones`; this node is
    /// `node_name`. The one way a DNS server is assembled, for the app, the tests and the benches.
    pub fn new(registry: Arc<Registry>, answers: Arc<ServiceAnswerMap>, zones: Zones, node_name: &str) -> Self {
        Self {
            fast: FastPath::new(answers.clone(), &zones.negative_soa, node_name),
            hickory: DnsHandler::new(registry, answers, zones, node_name),
            forwarder: None,
        }
    }

    /// Forwards names outside the served zones to recursors (without one, they are REFUSED).
    pub fn with_forwarder(mut self, forwarder: Option<Forwarder>) -> Self {
        self.forwarder = forwarder;
        self
    }

    /// Serves newly loaded zone files (both paths) from the next query on.
    pub fn replace_zones(&self, zones: Zones) {
        self.fast.replace_negative_soa(&zones.negative_soa);
        self.hickory.replace_zones(zones);
    }

    /// Whether `query` goes to the recursors: forwarding is on, recursion is desired, the client
    /// may recurse, and the name is in no zone sextant serves. Zone transfers never go.
    pub fn forwards(&self, query: &[u8], src: SocketAddr) -> bool {
        let Some(forwarder) = &self.forwarder else {
            return false;
        };
        if !forward::wants_recursion(query) || !forwarder.serves_client(src.ip()) {
            return false;
        }
        let mut decoder = BinDecoder::new(query);
        let (Ok(header), Ok(question)) = (Header::read(&mut decoder), Query::read(&mut decoder)) else {
            return false;
        };
        header.counts.queries == 1
            && question.query_class() == DNSClass::IN
            && !matches!(question.query_type(), RecordType::AXFR | RecordType::IXFR)
            && !self.hickory.serves(question.name())
    }

    /// Forwards a query [`forwards`](Self::forwards) accepted: the recursor's response, or
    /// SERVFAIL when none answered in time or too many queries are being forwarded already.
    pub async fn forward(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let forwarder = self.forwarder.as_ref()?;
        let Some(_slot) = forwarder.slot() else {
            tracing::debug!("too many queries forwarded at once; answering SERVFAIL");
            return forward::question_end(query).map(|end| forward::servfail(query, end));
        };
        forwarder.forward(query, transport).await
    }

    /// The fast path alone (see [`FastPath::answer`]).
    pub fn answer_fast(&self, query: &[u8], out: &mut Vec<u8>, transport: Transport, rotation: usize) -> Outcome {
        self.fast.answer(query, out, transport, rotation)
    }

    /// The hickory path alone: `None` when the packet deserves no answer (too short to have a
    /// header, or itself a response: answering those would make us a reflector).
    pub async fn answer_hickory(&self, query: &[u8], src: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        let header = Header::read(&mut BinDecoder::new(query)).ok()?;
        if header.metadata.message_type == hickory_proto::op::MessageType::Response {
            return None;
        }
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let request = match Request::from_bytes(query.to_vec(), src, protocol) {
            Ok(request) => request,
            Err(_) => {
                let reply = Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
                return reply.to_vec().ok();
            }
        };
        let capture = Capture {
            transport,
            max_udp_size: self.fast.max_udp_size(),
            bytes: Arc::new(Mutex::new(None)),
        };
        self.hickory
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let mut slot = capture.bytes.lock().unwrap_or_else(|p| p.into_inner());
        slot.take()
    }

    /// Answers into `out` (the fast path; the recursors for names outside the served zones; the
    /// hickory path for the rest); false when there is nothing to send.
    pub async fn answer(
        &self,
        query: &[u8],
        src: SocketAddr,
        transport: Transport,
        rotation: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        match self.fast.answer(query, out, transport, rotation) {
            Outcome::Answered => true,
            Outcome::Fallback if self.forwards(query, src) => match self.forward(query, transport).await {
                Some(response) => {
                    *out = response;
                    true
                }
                None => false,
            },
            Outcome::Fallback => self.answer_hickory_into(query, src, transport, out).await,
        }
    }

    /// The hickory path, writing into `out`; false when there is nothing to send.
    pub async fn answer_hickory_into(
        &self,
        query: &[u8],
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        match self.answer_hickory(query, src, transport).await {
            Some(bytes) => {
                *out = bytes;
                true
            }
            None => false,
        }
    }
}

/// Keeps the encoded response the hickory path produces, sized as hickory's own server would.
#[derive(Clone)]
struct Capture {
    transport: Transport,
    /// The largest UDP response, whatever the client's EDNS buffer.
    max_udp_size: u16,
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max_size = match (self.transport, response.edns()) {
            (Transport::Tcp, _) => u16::MAX,
            (Transport::Udp, Some(edns)) => edns.max_payload().clamp(512, self.max_udp_size),
            (Transport::Udp, None) => 512,
        };
        let id = response.metadata().id;
        let op_code = response.metadata().op_code;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "could not encode a response; answering SERVFAIL");
                bytes = Message::error_msg(id, op_code, ResponseCode::ServFail).to_vec()?;
                let header = Header::read(&mut BinDecoder::new(&bytes))?;
                ResponseInfo::from(header)
            }
        };
        cap_negative_soa_ttls(&mut bytes);
        keep_question_case(&mut bytes);
        *self.bytes.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// RFC 2308 §3: the SOA of a negative answer (no answer records; NOERROR or NXDOMAIN) is cached
/// for the lesser of its TTL and its MINIMUM field, and that is the TTL it must carry. hickory's
/// catalog sends a zone file's SOA with the TTL it has in the file, so the encoded message is
/// corrected here. Only TTLs change; a message that does not parse is left as it is.
fn cap_negative_soa_ttls(message: &mut [u8]) {
    const SOA: u16 = 6;
    let Some(header) = message.get(..12) else {
        return;
    };
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (rcode, questions, answers, authorities) = (header[3] & 0x0F, count(4), count(6), count(8));
    if !matches!(rcode, 0 | 3) || answers != 0 {
        return;
    }
    let mut pos = 12;
    for _ in 0..questions {
        let Some(end) = name_end(message, pos) else {
            return;
        };
        pos = end + 4;
    }
    for _ in 0..authorities {
        let Some((end, fixed)) = name_end(message, pos).and_then(|end| Some((end, message.get(end..end + 10)?))) else {
            return;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdata_end = end + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if rtype == SOA {
            // MINIMUM is the last field of the SOA's data, after two names that may be compressed.
            let Some(minimum) = rdata_end.checked_sub(4).and_then(|at| message.get(at..rdata_end)) else {
                return;
            };
            let minimum = u32::from_be_bytes([minimum[0], minimum[1], minimum[2], minimum[3]]);
            message[end + 4..end + 8].copy_from_slice(&ttl.min(minimum).to_be_bytes());
        }
        pos = rdata_end;
    }
}

/// Answers come back under the name as asked (`NS1.Trading-DC`), as the registry's do: hickory's
/// catalog writes a zone file's owner names as stored, lower-cased, and compresses only names of
/// the same case. An answer's owner written out in full that equals the question but for case is
/// given the question's bytes (same length: nothing else moves). A message that does not parse
/// is left as it is.
fn keep_question_case(message: &mut [u8]) {
    let Some(header) = message.get(..12) else {
        return;
    };
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (questions, answers) = (count(4), count(6));
    let Some(question_end) = (questions == 1).then(|| name_end(message, 12)).flatten() else {
        return;
    };
    let question = message[12..question_end].to_vec();
    if question.iter().any(|b| *b >= 0xC0) {
        return; // a compressed question: leave it to the resolver
    }
    let mut pos = question_end + 4;
    for _ in 0..answers {
        let Some(end) = name_end(message, pos) else {
            return;
        };
        if end - pos == question.len() && message[pos..end].eq_ignore_ascii_case(&question) {
            message[pos..end].copy_from_slice(&question);
        }
        let Some(fixed) = message.get(end..end + 10) else {
            return;
        };
        pos = end + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
}

/// Where the name starting at `pos` ends (after its last label or its compression pointer).
fn name_end(message: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        match *message.get(pos)? {
            0 => return Some(pos + 1),
            len @ 1..=63 => pos += 1 + usize::from(len),
            0xC0..=0xFF => return Some(pos + 2),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::{cap_negative_soa_ttls, keep_question_case};

    fn message(code: ResponseCode, answer: bool) -> Message {
        let zone = Name::from_ascii("example.test.").unwrap();
        let mut message = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        message.metadata.response_code = code;
        message.add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
        if answer {
            let a = RData::A(A::new(10, 0, 0, 1));
            message.add_answer(Record::from_rdata(
                Name::from_ascii("www.example.test.").unwrap(),
                60,
                a,
            ));
        }
        let ns = Name::from_ascii("ns1.example.test.").unwrap();
        let mail = Name::from_ascii("hostmaster.example.test.").unwrap();
        let soa = RData::SOA(SOA::new(ns, mail, 1, 3600, 600, 86400, 45));
        message.add_authority(Record::from_rdata(zone, 3600, soa));
        message
    }

    fn soa_ttl(bytes: &[u8]) -> u32 {
        Message::from_vec(bytes).unwrap().authorities[0].ttl
    }

    #[test]
    fn negative_answers_carry_the_soa_minimum() {
        for code in [ResponseCode::NXDomain, ResponseCode::NoError] {
            let mut bytes = message(code, false).to_vec().unwrap();
            cap_negative_soa_ttls(&mut bytes);
            assert_eq!(soa_ttl(&bytes), 45, "{code:?}");
        }
        // A positive answer's SOA (or a SERVFAIL's) keeps its TTL; a cut message is left alone.
        let mut positive = message(ResponseCode::NoError, true).to_vec().unwrap();
        cap_negative_soa_ttls(&mut positive);
        assert_eq!(soa_ttl(&positive), 3600);
        let mut failed = message(ResponseCode::ServFail, false).to_vec().unwrap();
        cap_negative_soa_ttls(&mut failed);
        assert_eq!(soa_ttl(&failed), 3600);
        let whole = message(ResponseCode::NXDomain, false).to_vec().unwrap();
        for cut in 0..whole.len() {
            let mut bytes = whole[..cut].to_vec();
            cap_negative_soa_ttls(&mut bytes);
            assert_eq!(bytes, whole[..cut], "cut at {cut}");
        }
    }

    #[test]
    fn answers_take_the_case_of_the_question() {
        let mut asked = message(ResponseCode::NoError, true);
        asked.queries[0] = Query::query(Name::from_ascii("WWW.Example.TEST.").unwrap(), RecordType::A);
        let mut bytes = asked.to_vec().unwrap();
        keep_question_case(&mut bytes);
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.answers[0].name.to_string(), "WWW.Example.TEST.");
        // A cut message is never read past its end.
        let whole = asked.to_vec().unwrap();
        for cut in 0..whole.len() {
            let mut bytes = whole[..cut].to_vec();
            keep_question_case(&mut bytes);
            assert_eq!(bytes.len(), cut);
        }
    }
}
