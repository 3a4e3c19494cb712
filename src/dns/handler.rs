//! The hickory path: registry names are answered with records built on demand (the fast path in
//! `fast.rs` answers them first; `tests/it/fast_path.rs` holds the two to the same answers), and
//! everything else goes to hickory's `Catalog` of zone files (which also says REFUSED for names
//! outside every zone, FORMERR, NOTIMP and BADVERS).

use std::iter;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::Rng;

use super::answers::ServiceAnswerMap;
use super::query::{ReverseName, Target, classify, reverse_address};
use super::zones::Zones;
use crate::registry::Registry;

pub struct DnsHandler {
    registry: Arc<Registry>,
    answers: Arc<ServiceAnswerMap>,
    /// Swapped whole when the zone files are reloaded (SIGHUP).
    zones: ArcSwap<Zones>,
    domain: Name,
    node_name: String,
    node_addr: IpAddr,
}

/// An answer from the registry, before it is encoded.
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    /// The SOA of a negative answer, when it is not the served domain's (a reverse zone's).
    zone_soa: Option<Record>,
}

impl Answer {
    fn negative(code: ResponseCode) -> Self {
        Self::records(Vec::new(), Vec::new()).with_code(code)
    }

    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Self {
            code: ResponseCode::NoError,
            answers,
            additionals,
            zone_soa: None,
        }
    }

    fn with_code(mut self, code: ResponseCode) -> Self {
        self.code = code;
        self
    }

    fn with_soa(mut self, soa: &Record) -> Self {
        self.zone_soa = Some(soa.clone());
        self
    }
}

impl DnsHandler {
    pub(super) fn new(registry: Arc<Registry>, answers: Arc<ServiceAnswerMap>, zones: Zones, node_name: &str) -> Self {
        let compiler = answers.compiler();
        Self {
            domain: compiler.domain.clone(),
            node_addr: compiler.node_addr,
            node_name: node_name.to_ascii_lowercase(),
            registry,
            answers,
            zones: ArcSwap::from_pointee(zones),
        }
    }

    /// Serves newly loaded zones from the next query on; queries in flight finish on the old ones.
    pub fn replace_zones(&self, zones: Zones) {
        self.zones.store(Arc::new(zones));
    }

    /// How many zone files are served now.
    pub fn zone_files(&self) -> usize {
        self.zones.load().files.len()
    }

    /// Whether `name` is in a zone sextant serves (the domain, a zone file, a reverse zone).
    pub fn serves(&self, name: &Name) -> bool {
        self.zones.load().catalog.find(&LowerName::new(name)).is_some()
    }

    /// Answers a registry name, or `None` when the request is for the catalog.
    fn answer_dynamic(&self, request: &Request) -> Option<Answer> {
        let meta = &request.metadata;
        if meta.message_type != MessageType::Query || meta.op_code != OpCode::Query {
            return None;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return None; // the catalog answers BADVERS
        }
        let info = request.request_info().ok()?;
        let query = info.query;
        // sextant serves class IN only; CH (`version.bind`), HS, ANY get no IN records.
        if query.query_class() != DNSClass::IN {
            return Some(Answer::negative(ResponseCode::Refused));
        }
        let qname = query.original().name();
        let qtype = query.query_type();
        // Registrations are not for copying out: no zone transfers, of the zone files either.
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Some(Answer::negative(ResponseCode::Refused));
        }
        let answer = match classify(qname, &self.domain) {
            Target::Static => return self.reverse_answer(qname, qtype),
            Target::EmptyNonTerminal => Answer::negative(ResponseCode::NoError),
            Target::NoSuchName => Answer::negative(ResponseCode::NXDomain),
            Target::Service { service, tag } => self.service_answer(&service, tag.as_deref(), qtype),
            Target::Addr(ip) => address_answer(ip, qtype, 0),
            Target::Node(node) if node == self.node_name => {
                address_answer(self.node_addr, qtype, self.answers.compiler().node_ttl)
            }
            Target::Node(_) => Answer::negative(ResponseCode::NXDomain),
        };
        Some(with_owner(answer, qname))
    }

    /// PTR answers for the addresses of registered instances, in the configured reverse zones;
    /// `None` leaves the name to the zone data (the apex's SOA and NS, NXDOMAIN, zone-file PTRs).
    fn reverse_answer(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let zones = self.zones.load();
        let (zone, soa) = zones.reverse_zone_of(qname)?;
        let ip = match reverse_address(qname) {
            ReverseName::Address(ip) => ip,
            // Names between the zone and whole addresses exist (they have names below them):
            // NXDOMAIN there would stop a resolver that minimises query names (RFC 8020).
            ReverseName::Prefix if qname.num_labels() > zone.num_labels() => {
                return Some(Answer::negative(ResponseCode::NoError).with_soa(soa));
            }
            ReverseName::Prefix | ReverseName::Invalid => return None,
        };
        let compiler = self.answers.compiler();
        let mut targets = Vec::new();
        if ip == self.node_addr {
            let node = compiler.name_under(&[&self.node_name, "node"]);
            targets.push((node, compiler.node_ttl));
        }
        for service in self.registry.services_at(ip) {
            let key = service.name.key();
            let name = compiler.name_under(&[key.as_str(), "service"]);
            targets.push((name, compiler.ttl_for(key.as_str())));
        }
        if targets.is_empty() {
            return None;
        }
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Some(Answer::negative(ResponseCode::NoError).with_soa(soa));
        }
        let records = targets
            .into_iter()
            .map(|(target, ttl)| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(target))))
            .collect();
        Some(Answer::records(records, Vec::new()))
    }

    fn service_answer(&self, service: &str, tag: Option<&str>, qtype: RecordType) -> Answer {
        let Some(entry) = self.registry.service(service) else {
            return Answer::negative(ResponseCode::NXDomain);
        };
        let key = entry.name.key();
        if tag.is_some_and(|t| {
            !self
                .answers
                .with_answers(key.as_str(), |a| a.is_some_and(|a| a.tag(t).is_some()))
        }) {
            return Answer::negative(ResponseCode::NXDomain);
        }
        // The hickory path builds records on demand: only queries the fast path passes on get here.
        let set = self.answers.compiler().records(&entry.name, tag, &entry.instances);
        // Clients that take the first record spread their load: every answer starts at a random
        // instance.
        let mut rng = rand::rng();
        let mut pick = |records: &[Record]| rotated(records, rng.random_range(0..records.len().max(1)));
        let limit = self.answers.compiler().address_limit();
        let limited = |mut records: Vec<Record>| {
            records.truncate(limit);
            Answer::records(records, Vec::new())
        };
        match qtype {
            RecordType::A => limited(pick(&set.a)),
            RecordType::AAAA => limited(pick(&set.aaaa)),
            RecordType::ANY => limited([pick(&set.a), pick(&set.aaaa)].concat()),
            RecordType::SRV => Answer::records(pick(&set.srv), set.srv_additional),
            _ => Answer::negative(ResponseCode::NoError),
        }
    }

    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        answer: Answer,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.response_code = answer.code;
        // Negative answers carry the zone's SOA so resolvers know how long they may cache them.
        let negative = matches!(answer.code, ResponseCode::NoError | ResponseCode::NXDomain);
        let soa = (negative && answer.answers.is_empty()).then(|| {
            answer
                .zone_soa
                .clone()
                .unwrap_or_else(|| self.zones.load().negative_soa.clone())
        });
        let response = MessageResponseBuilder::new(&request.queries, response_edns.as_ref()).build(
            meta,
            answer.answers.iter(),
            soa.iter(),
            iter::empty(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "could not send a DNS response");
                let mut meta = Metadata::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
                meta.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: meta,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response_handle: R) -> ResponseInfo {
        match self.answer_dynamic(request) {
            Some(answer) => self.send(request, answer, response_handle).await,
            None => {
                let zones = self.zones.load_full();
                zones.catalog.handle_request::<R, T>(request, response_handle).await
            }
        }
    }
}

fn address_answer(ip: IpAddr, qtype: RecordType, ttl: u32) -> Answer {
    let rdata = match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
        _ => return Answer::negative(ResponseCode::NoError),
    };
    Answer::records(vec![Record::from_rdata(Name::root(), ttl, rdata)], Vec::new())
}

/// Answer records are compiled under the canonical name; they are sent under the name asked for
/// (its case, and RFC 2782's `_service._tcp` form), as resolvers expect.
fn with_owner(mut answer: Answer, qname: &Name) -> Answer {
    for record in &mut answer.answers {
        record.name = qname.clone();
    }
    answer
}

fn rotated(records: &[Record], start: usize) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    out.extend_from_slice(&records[start.min(records.len())..]);
    out.extend_from_slice(&records[..start.min(records.len())]);
    out
}
