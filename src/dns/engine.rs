//! The one dispatch, for UDP workers and TCP connections alike: a query is parsed once (in place,
//! or read in full by hickory-proto and re-encoded), its name classified once; registry names
//! are written from the compiled answers, names outside every zone go to the recursors, and the
//! zone files answer the rest.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::answers::ServiceAnswerMap;
use super::cookies::{COOKIE_OPTION_LEN, ClientCookie, Cookies};
use super::forward::{self, Forwarder};
use super::message::{
    EDNS_COOKIE, HEADER_LEN, InFull, Question, TYPE_AXFR, TYPE_IXFR, Transport, append_option, find_option,
    parse_question, question_end, read_in_full, remove_option,
};
use super::names::Names;
use super::reflection::ReflectionGuard;
use super::reply::{Answered, EDE_NOT_AUTHORITATIVE, EDE_PROHIBITED, ReplyWriter};
use super::settings::DnsSettings;
use super::stats::{Counter, DnsStats, ServiceHit};
use super::zones::Zones;
use crate::registry::Registry;

/// A query as it arrived.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub packet: &'a [u8],
    pub from: SocketAddr,
    pub transport: Transport,
    /// Picks the first record of a rotated answer: callers pass a counter that changes with
    /// every query.
    pub rotation: usize,
}

/// How far the registry took a query.
enum Step {
    Done(Reply),
    /// The zone data answers: the query as received, or re-encoded (`Some`) once read in full.
    Zones(Option<Vec<u8>>),
}

/// What became of a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `out` holds the response.
    Ready,
    /// The recursors answer it: `out` holds the query to send them ([`DnsEngine::forward`]).
    Forward,
    /// Nothing is sent (a response, or too short to be a query).
    Nothing,
}

pub struct DnsEngine {
    names: Names,
    writer: ReplyWriter,
    /// Swapped whole when the zone files are reloaded (SIGHUP).
    zones: ArcSwap<Zones>,
    forwarder: Option<Forwarder>,
    stats: Arc<DnsStats>,
    /// What UDP sends a source.
    reflection: ReflectionGuard,
    /// The server cookies every response to a query with a cookie carries.
    cookies: Cookies,
}

/// What a query asked, as the answer path learned it: for the counts, and whether its response
/// carries a cookie.
#[derive(Default)]
struct Asked {
    qtype: u16,
    service: Option<ServiceHit>,
    cookie: bool,
}

impl DnsEngine {
    /// The DNS server's answers: registry names from `answers` (which the registry keeps
    /// compiled), reverse names from `registry`, the rest from `zones`. The one way a DNS server
    /// is assembled, for the app, the tests and the benches.
    pub fn new(settings: &DnsSettings, registry: Arc<Registry>, answers: Arc<ServiceAnswerMap>, zones: Zones) -> Self {
        let node = (settings.node_name.as_str(), settings.node_addr, settings.node_ttl);
        let stats = Arc::new(DnsStats::new(answers.service_ids()));
        Self {
            names: Names::new(&settings.domain, node, zones.reverse_zones()),
            writer: ReplyWriter::new(
                answers,
                registry,
                settings.max_udp_size,
                settings.a_record_limit,
                node,
                settings.unhealthy_ttl,
            ),
            zones: ArcSwap::from_pointee(zones),
            forwarder: None,
            reflection: ReflectionGuard::new(settings.rate_limit.clone(), stats.clone()),
            stats,
            cookies: Cookies::default(),
        }
    }

    /// Forwards names outside the served zones to recursors (without one, they are REFUSED).
    pub fn with_forwarder(mut self, forwarder: Option<Forwarder>) -> Self {
        self.forwarder = forwarder;
        self
    }

    /// Serves newly loaded zone files from the next query on; queries in flight finish on the
    /// old ones.
    pub fn replace_zones(&self, zones: Zones) {
        self.zones.store(Arc::new(zones));
    }

    /// How many zone files are served now.
    pub fn zone_files(&self) -> usize {
        self.zones.load().files.len()
    }

    /// Answers a query into `out`.
    pub async fn answer(&self, query: Incoming<'_>, out: &mut Vec<u8>) -> Reply {
        let mut asked = Asked::default();
        let reply = match self.answer_from_registry(query, out, &mut asked) {
            Step::Done(reply) => reply,
            Step::Zones(in_full) => {
                let packet = in_full.as_deref().unwrap_or(query.packet);
                let room = cookie_room(&asked);
                self.answer_from_zones(packet, query.from, query.transport, room, out)
                    .await
            }
        };
        if asked.cookie && reply == Reply::Ready {
            self.add_query_cookie(query.packet, query.from.ip(), out);
        }
        if let Some(rcode) = response_code(&reply, out) {
            self.stats.count(query.transport, asked.qtype, rcode, asked.service);
        }
        reply
    }

    /// [`answer`](Self::answer) from a thread that must not wait (a UDP worker): registry names
    /// are answered without a future; the zone data's answer is ready at the first poll, and
    /// should it ever not be, this blocks on `runtime`. The response is counted in `counter`,
    /// the calling thread's own ([`DnsStats::counter`]).
    pub fn answer_now(
        &self,
        query: Incoming<'_>,
        out: &mut Vec<u8>,
        runtime: &tokio::runtime::Handle,
        counter: &Counter,
    ) -> Reply {
        let mut asked = Asked::default();
        let reply = match self.answer_from_registry(query, out, &mut asked) {
            Step::Done(reply) => reply,
            Step::Zones(in_full) => {
                let packet = in_full.as_deref().unwrap_or(query.packet);
                let room = cookie_room(&asked);
                let mut future = std::pin::pin!(self.answer_from_zones(packet, query.from, query.transport, room, out));
                let mut context = std::task::Context::from_waker(std::task::Waker::noop());
                match future.as_mut().poll(&mut context) {
                    std::task::Poll::Ready(reply) => reply,
                    std::task::Poll::Pending => runtime.block_on(future),
                }
            }
        };
        if asked.cookie && reply == Reply::Ready {
            self.add_query_cookie(query.packet, query.from.ip(), out);
        }
        if let Some(rcode) = response_code(&reply, out) {
            counter.count(query.transport, asked.qtype, rcode, asked.service);
        }
        reply
    }

    /// What UDP sends a source (the response-rate limit, the amplification bound).
    pub fn reflection(&self) -> &ReflectionGuard {
        &self.reflection
    }

    /// Whether `query` carries a server cookie made for `ip` in the last hour: its source is
    /// real.
    pub fn cookie_proves(&self, query: &[u8], ip: IpAddr) -> bool {
        query_cookie(query).is_some_and(|cookie| self.cookies.proves(&cookie, ip, Cookies::now()))
    }

    /// RFC 7873: a response to a query with a cookie carries ours, in its OPT record (also
    /// once a response cut short for the reflection guard has lost its OPT record's options).
    pub fn add_query_cookie(&self, query: &[u8], ip: IpAddr, response: &mut Vec<u8>) {
        if let Some(cookie) = query_cookie(query) {
            self.sign(&cookie, ip, response);
        }
    }

    fn sign(&self, cookie: &ClientCookie, ip: IpAddr, response: &mut Vec<u8>) {
        append_option(response, EDNS_COOKIE, &self.cookies.answer(cookie, ip, Cookies::now()));
    }

    /// The largest UDP response, whatever the client's EDNS buffer.
    pub fn max_udp_size(&self) -> u16 {
        self.writer.max_udp_size()
    }

    /// What DNS was asked and answered, for the metrics.
    pub fn stats(&self) -> Arc<DnsStats> {
        self.stats.clone()
    }

    /// Parses `query` (in place, or read in full) and answers it if the registry does: its
    /// names, REFUSED for a zone transfer, errors for a query in a form it cannot take, or the
    /// query handed back for the recursors.
    fn answer_from_registry(&self, incoming: Incoming<'_>, out: &mut Vec<u8>, asked: &mut Asked) -> Step {
        let Incoming {
            packet,
            from,
            transport,
            rotation,
        } = incoming;
        // The question is used where it was parsed: it is a few hundred bytes, and copying it
        // was a measurable part of a query's cost.
        let parsed = parse_question(packet);
        let read;
        let mut in_full = None;
        let (query, q) = match &parsed {
            Some(q) => (packet, q),
            None => match read_in_full(packet) {
                InFull::Query(bytes, q) => {
                    read = q;
                    (&in_full.insert(bytes)[..], &*read)
                }
                InFull::Error(bytes) => {
                    *out = bytes;
                    return Step::Done(Reply::Ready);
                }
                InFull::Ignore => return Step::Done(Reply::Nothing),
            },
        };
        asked.qtype = q.qtype;
        asked.cookie = q.cookie;
        if q.qtype == TYPE_AXFR || q.qtype == TYPE_IXFR {
            // Registrations are not for copying out: no zone transfers, of the zone files either.
            self.writer.refuse(query, q, EDE_PROHIBITED, out);
            return Step::Done(Reply::Ready);
        }
        if let Some(lookup) = self.names.classify(q)
            && let Answered::Yes(service) = self
                .writer
                .write(query, q, lookup, &self.zones, transport, rotation, out)
        {
            asked.service = service;
            return Step::Done(Reply::Ready);
        }
        match self.outside_the_zones(query, q, from) {
            Outside::No => Step::Zones(in_full),
            Outside::Forward => {
                out.clear();
                out.extend_from_slice(query);
                Step::Done(Reply::Forward)
            }
            Outside::Refuse(ede) => {
                self.writer.refuse(query, q, ede, out);
                Step::Done(Reply::Ready)
            }
        }
    }

    /// The zone data's answer, leaving `room` bytes of a UDP response free.
    async fn answer_from_zones(
        &self,
        query: &[u8],
        src: SocketAddr,
        transport: Transport,
        room: u16,
        out: &mut Vec<u8>,
    ) -> Reply {
        let zones = self.zones.load_full();
        match zones
            .answer(query, src, transport, self.writer.max_udp_size(), room)
            .await
        {
            Some(response) => {
                *out = response;
                Reply::Ready
            }
            None => Reply::Nothing,
        }
    }
    /// What becomes of a standard query for a name in no zone sextant serves: forwarded to the
    /// recursors (recursion desired, and this client may recurse), or REFUSED with the reason:
    /// Prohibited when recursors are set but this client may not use them, Not Authoritative
    /// otherwise. Other queries (a name in a zone, another opcode) go on to the zone data.
    fn outside_the_zones(&self, query: &[u8], q: &Question, src: SocketAddr) -> Outside {
        let standard_query = query.len() > 2 && (query[2] >> 3) & 0x0F == 0;
        if !standard_query || q.name().is_none_or(|name| self.zones.load().serves(&name)) {
            return Outside::No;
        }
        match &self.forwarder {
            Some(forwarder) if forward::wants_recursion(query) => {
                if forwarder.serves_client(src.ip()) {
                    Outside::Forward
                } else {
                    Outside::Refuse(EDE_PROHIBITED)
                }
            }
            _ => Outside::Refuse(EDE_NOT_AUTHORITATIVE),
        }
    }

    /// Forwards a query [`answer`](Self::answer) handed back as [`Reply::Forward`] from a
    /// client at `ip`: the recursor's response, or SERVFAIL when none answered in time or too
    /// many queries are being forwarded already. Cookies are between neighbours (RFC 7873): the
    /// client's is not sent on, the recursor's is not relayed, and the client gets ours.
    pub async fn forward(&self, query: &[u8], transport: Transport, ip: IpAddr) -> Option<Vec<u8>> {
        let forwarder = self.forwarder.as_ref()?;
        let end = question_end(query)?;
        let cookie = query_cookie(query);
        let mut response = match forwarder.slot() {
            Some(_slot) => {
                let mut sent_on = query.to_vec();
                remove_option(&mut sent_on, EDNS_COOKIE);
                let room = if cookie.is_some() { COOKIE_OPTION_LEN } else { 0 };
                forwarder.forward(&sent_on, transport, room).await?
            }
            None => {
                tracing::debug!("too many queries forwarded at once; answering SERVFAIL");
                forward::servfail(query, end, None)
            }
        };
        if let Some(cookie) = cookie {
            self.sign(&cookie, ip, &mut response);
        }
        let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
        if let Some(rcode) = response_code(&Reply::Ready, &response) {
            self.stats.count(transport, qtype, rcode, None);
        }
        Some(response)
    }
}

/// The cookie `query` carries, if one that is well formed.
fn query_cookie(query: &[u8]) -> Option<ClientCookie> {
    ClientCookie::parse(find_option(query, EDNS_COOKIE)?).ok()
}

/// The bytes a UDP response leaves free for the cookie [`DnsEngine::add_query_cookie`] adds.
fn cookie_room(asked: &Asked) -> u16 {
    if asked.cookie { COOKIE_OPTION_LEN as u16 } else { 0 }
}

/// The response code of a response that is ready to send, for the counts (a forwarded query is
/// counted when its response comes back).
fn response_code(reply: &Reply, response: &[u8]) -> Option<u8> {
    (*reply == Reply::Ready && response.len() >= HEADER_LEN).then(|| response[3] & 0x0F)
}

/// What becomes of a query for a name outside every zone ([`DnsEngine::outside_the_zones`]).
enum Outside {
    /// The name is in a zone (or the query is not a standard one): the zone data answers.
    No,
    Forward,
    /// REFUSED, with this Extended DNS Error.
    Refuse(u16),
}
