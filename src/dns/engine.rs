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
use super::fast::{FastPath, Outcome};
use super::forward::{self, Forwarder};
use super::handler::DnsHandler;
use super::message::{Transport, cap_negative_soa_ttls, keep_question_case, question_end};
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

    /// How many zone files are served now.
    pub fn zone_files(&self) -> usize {
        self.hickory.zone_files()
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
            return question_end(query).map(|end| forward::servfail(query, end));
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
