//! The one answer writer for registry names: a response in wire form, from the compiled answers
//! (`answers.rs`), an address, or the PTR records of a reverse name; the zone's SOA with negative
//! answers; TC when the answer does not fit; the OPT record when the client sent one. The header
//! and question are the query's own, so the answer carries the name as asked. No allocation once
//! `out` has grown.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;

use super::answers::{AnswerSet, ServiceAnswerMap};
use super::cookies::COOKIE_OPTION_LEN;
use super::message::{
    CLASS_IN, HEADER_LEN, Question, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, TYPE_A, TYPE_AAAA, TYPE_ANY,
    TYPE_OPT, TYPE_PTR, TYPE_SRV, Transport,
};
use super::names::{Lookup, ZoneName};
use super::stats::ServiceHit;
use super::wire::WireRecords;
use super::zones::Zones;
use crate::registry::Registry;

/// Whether the writer answered, and for which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    No,
    Yes(Option<ServiceHit>),
}

pub struct ReplyWriter {
    answers: Arc<ServiceAnswerMap>,
    /// What reverse names are looked up in.
    registry: Arc<Registry>,
    /// The largest UDP response, whatever the client's EDNS buffer.
    max_udp_size: u16,
    /// Most A/AAAA records per answer.
    address_limit: usize,
    /// This node's name, lower-case, and address (its PTR record), and that record's TTL.
    node_name: String,
    node_addr: IpAddr,
    node_ttl: u32,
    /// The negative TTL of a known service with no healthy instance (else the SOA minimum).
    unhealthy_ttl: Option<u32>,
}

/// Where a rotated answer starts, how many records it may hold (the A-record limit), and how
/// many bytes the response may take.
#[derive(Clone, Copy)]
struct Window {
    rotation: usize,
    max_records: usize,
    limit: usize,
}

/// A response being written after the question: its counts, and whether it was cut short.
struct Sections {
    counts: [u16; 4],
    truncated: bool,
}

impl Sections {
    /// Starts the response in `out` (cleared first) with the query's header and question.
    fn start(query: &[u8], q: &Question, out: &mut Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(&query[..q.end]);
        Self {
            counts: [1, 0, 0, 0],
            truncated: false,
        }
    }
}

impl ReplyWriter {
    pub fn new(
        answers: Arc<ServiceAnswerMap>,
        registry: Arc<Registry>,
        max_udp_size: u16,
        a_record_limit: usize,
        (node_name, node_addr, node_ttl): (&str, IpAddr, u32),
        unhealthy_ttl: Option<u32>,
    ) -> Self {
        Self {
            answers,
            registry,
            max_udp_size: max_udp_size.max(512),
            address_limit: if a_record_limit == 0 {
                usize::MAX
            } else {
                a_record_limit
            },
            node_name: node_name.to_ascii_lowercase(),
            node_addr,
            node_ttl,
            unhealthy_ttl,
        }
    }

    /// The largest UDP response, whatever the client's EDNS buffer.
    pub fn max_udp_size(&self) -> u16 {
        self.max_udp_size
    }

    /// Writes into `out` (cleared first) the response to `query`, whose question is `q`, for
    /// `lookup`; `zones` hold the SOAs of negative answers (read only for those). `rotation`
    /// picks the first record of a rotated answer; callers pass a counter that changes with
    /// every query. `Answered::No`, with `out` cleared, for a reverse name the registry has
    /// nothing at: the zone data answers it.
    #[allow(clippy::too_many_arguments)] // the query, what it asks, and how the answer travels
    pub fn write(
        &self,
        query: &[u8],
        q: &Question,
        lookup: Lookup<'_>,
        zones: &ArcSwap<Zones>,
        transport: Transport,
        rotation: usize,
        out: &mut Vec<u8>,
    ) -> Answered {
        let limit = self.size_limit(q, transport);
        // The service asked for, counted by the caller.
        let mut hit = None;
        let mut sections = Sections::start(query, q, out);
        // The zone whose SOA a negative answer carries: the domain, or a reverse zone.
        let mut reverse_zone = None;
        // A known service whose every instance is critical: its NODATA has a TTL of its own.
        let mut unhealthy = false;
        let rcode = match lookup {
            Lookup::Service { service, tag } => {
                let at = Window {
                    rotation,
                    max_records: if q.qtype == TYPE_SRV {
                        usize::MAX
                    } else {
                        self.address_limit
                    },
                    limit,
                };
                let domain_pointer = suffix_pointer(q, self.answers.domain());
                match std::str::from_utf8(service) {
                    Err(_) => RCODE_NXDOMAIN, // not ASCII: no service has that name
                    Ok(service) => self.answers.with_answers(service, |answers| {
                        let set = answers.and_then(|a| match tag {
                            None => Some(&a.all),
                            Some(tag) => std::str::from_utf8(tag).ok().and_then(|t| a.tag(t)),
                        });
                        match set {
                            Some(set) => {
                                // Every answered instance has an SRV record: none means none is healthy.
                                unhealthy = set.srv.is_empty();
                                hit = answers.map(|a| ServiceHit {
                                    id: a.stats_id,
                                    unhealthy,
                                });
                                write_service_answer(set, q.qtype, out, &mut sections, at, domain_pointer);
                                RCODE_NOERROR
                            }
                            None => RCODE_NXDOMAIN,
                        }
                    }),
                }
            }
            Lookup::Address(ip, ttl) => {
                write_address(ip, ttl, q.qtype, out, &mut sections);
                RCODE_NOERROR
            }
            Lookup::Node(name) => {
                let address = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| self.registry.node_address(n));
                match address {
                    Some(ip) => {
                        write_address(ip, self.node_ttl, q.qtype, out, &mut sections);
                        RCODE_NOERROR
                    }
                    None => RCODE_NXDOMAIN,
                }
            }
            Lookup::NoData => RCODE_NOERROR,
            Lookup::NxDomain => RCODE_NXDOMAIN,
            Lookup::Reverse { ip, zone } => {
                reverse_zone = Some(zone);
                if !self.write_ptrs(ip, q.qtype, out, &mut sections, limit) {
                    out.clear();
                    return Answered::No;
                }
                RCODE_NOERROR
            }
            Lookup::ReversePrefix { zone } => {
                reverse_zone = Some(zone);
                RCODE_NOERROR
            }
        };
        if sections.counts[1] == 0 && !sections.truncated {
            // Negative answers carry the zone's SOA: how long resolvers may cache them.
            let zones = zones.load();
            let authority = zones.authority(reverse_zone);
            let pointer = suffix_pointer(q, &authority.name);
            let soa_at = out.len();
            sections.counts[2] = authority.soa.write_rotated(out, 0, usize::MAX, limit, pointer) as u16;
            if let (true, Some(ttl), 1) = (unhealthy, self.unhealthy_ttl, sections.counts[2]) {
                set_negative_ttl(&mut out[soa_at..], ttl);
            }
        }
        // Served from the last registry seen while etcd is out of reach: said so (RFC 8914).
        let ede = self.registry.staleness().is_some().then_some(EDE_STALE_ANSWER);
        finish(query, q, rcode, ede, sections, out);
        Answered::Yes(hit)
    }

    /// Writes REFUSED for `query`, with the Extended DNS Error that says why (RFC 8914):
    /// [`EDE_PROHIBITED`] for a zone transfer (registrations are not for copying out) or a
    /// recursion this client may not have, [`EDE_NOT_AUTHORITATIVE`] for a name in no zone.
    pub fn refuse(&self, query: &[u8], q: &Question, ede: u16, out: &mut Vec<u8>) {
        let sections = Sections::start(query, q, out);
        finish(query, q, RCODE_REFUSED, Some(ede), sections, out);
    }

    /// The largest response `q` may get, less the OPT record added when the client sent one
    /// (with room for the cookie the engine adds when it sent one).
    fn size_limit(&self, q: &Question, transport: Transport) -> usize {
        let limit = match (transport, q.edns_payload) {
            (Transport::Tcp, _) => u16::MAX as usize,
            (Transport::Udp, Some(payload)) => payload.clamp(512, self.max_udp_size) as usize,
            (Transport::Udp, None) => 512,
        };
        let opt = match (q.edns_payload, q.cookie) {
            (None, _) => 0,
            (Some(_), false) => OPT_LEN,
            (Some(_), true) => OPT_LEN + COOKIE_OPTION_LEN,
        };
        limit - opt
    }

    /// PTR records naming this node and every service with an instance at `ip`; false when there
    /// is none.
    fn write_ptrs(&self, ip: IpAddr, qtype: u16, out: &mut Vec<u8>, sections: &mut Sections, limit: usize) -> bool {
        let compiler = self.answers.compiler();
        let mut targets: Vec<(Name, u32)> = Vec::new();
        if ip == self.node_addr {
            targets.push((compiler.name_under(&[&self.node_name, "node"]), self.node_ttl));
        }
        for service in self.registry.services_at(ip) {
            let key = service.name.key();
            let name = compiler.name_under(&[key.as_str(), "service"]);
            targets.push((name, compiler.ttl_for(key.as_str())));
        }
        if targets.is_empty() {
            return false;
        }
        if qtype != TYPE_PTR && qtype != TYPE_ANY {
            return true; // NODATA
        }
        for (target, ttl) in targets {
            let at = out.len();
            let rdata_len: usize = target.iter().map(|label| 1 + label.len()).sum::<usize>() + 1;
            write_record_head(out, TYPE_PTR, ttl, rdata_len);
            for label in target.iter() {
                out.push(label.len() as u8);
                out.extend_from_slice(label);
            }
            out.push(0);
            if out.len() > limit {
                out.truncate(at);
                sections.truncated = true;
                return true;
            }
            sections.counts[1] += 1;
        }
        true
    }
}

/// The OPT record written into a response: root name, type, payload size, flags, and room for
/// an Extended DNS Error option.
const OPT_LEN: usize = 11 + EDE_OPTION_LEN;

/// An Extended DNS Error option (RFC 8914): code 15, length 2, the info-code, no text.
const EDE_OPTION_LEN: usize = 6;

/// RFC 8914's info-codes that sextant sends.
pub const EDE_STALE_ANSWER: u16 = 3;
pub const EDE_PROHIBITED: u16 = 18;
pub const EDE_NOT_AUTHORITATIVE: u16 = 20;
pub const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;

/// Appends an EDNS option carrying Extended DNS Error `code` (RFC 8914) to an OPT record's data.
pub fn write_ede_option(out: &mut Vec<u8>, code: u16) {
    out.extend_from_slice(&[0, 15, 0, 2]);
    out.extend_from_slice(&code.to_be_bytes());
}

/// Sets the TTL and the MINIMUM field of the one SOA record `soa` holds: resolvers cache a
/// negative answer for the lower of the two (RFC 2308).
fn set_negative_ttl(soa: &mut [u8], ttl: u32) {
    // The owner name: labels up to the root byte, or up to a 2-byte compression pointer.
    let mut at = 0;
    while at < soa.len() && soa[at] != 0 && soa[at] & 0xC0 == 0 {
        at += 1 + soa[at] as usize;
    }
    let ttl_at =
        at + if soa.get(at).is_some_and(|b| b & 0xC0 == 0xC0) {
            2
        } else {
            1
        } + 4;
    if ttl_at + 4 > soa.len() || soa.len() < 4 {
        return; // not an SOA record as written by the zone compiler: left as it is
    }
    soa[ttl_at..ttl_at + 4].copy_from_slice(&ttl.to_be_bytes());
    let len = soa.len();
    soa[len - 4..].copy_from_slice(&ttl.to_be_bytes());
}

/// A pointer to where the suffix `zone` of the question name starts in the message.
fn suffix_pointer(q: &Question, zone: &ZoneName) -> [u8; 2] {
    (0xC000 | (HEADER_LEN + q.name_len - zone.wire.len()) as u16).to_be_bytes()
}

/// Writes the answer section (and SRV additionals); sets `truncated` when the answers did not
/// all fit (only whole records are written).
fn write_service_answer(
    set: &AnswerSet,
    qtype: u16,
    out: &mut Vec<u8>,
    sections: &mut Sections,
    at: Window,
    domain_pointer: [u8; 2],
) {
    let lists: &[&WireRecords] = match qtype {
        TYPE_A => &[&set.a],
        TYPE_AAAA => &[&set.aaaa],
        // RFC 8482: ANY gets one RRset, the addresses of one family, not everything.
        TYPE_ANY if set.a.is_empty() => &[&set.aaaa],
        TYPE_ANY => &[&set.a],
        TYPE_SRV => &[&set.srv],
        _ => return,
    };
    let mut room = at.max_records;
    for list in lists {
        if list.is_empty() || room == 0 {
            continue;
        }
        let wanted = list.len().min(room);
        let written = list.write_rotated(out, at.rotation % list.len(), wanted, at.limit, domain_pointer);
        sections.counts[1] += written as u16;
        if written < wanted {
            sections.truncated = true;
            return;
        }
        room -= written;
    }
    if qtype == TYPE_SRV {
        // Additional records are a courtesy (RFC 2181 §9): those that fit go, without TC.
        sections.counts[3] = set
            .srv_additional
            .write_rotated(out, 0, usize::MAX, at.limit, domain_pointer) as u16;
    }
}

fn write_address(ip: IpAddr, ttl: u32, qtype: u16, out: &mut Vec<u8>, sections: &mut Sections) {
    match (ip, qtype) {
        (IpAddr::V4(v4), TYPE_A | TYPE_ANY) => {
            write_record_head(out, TYPE_A, ttl, 4);
            out.extend_from_slice(&v4.octets());
        }
        (IpAddr::V6(v6), TYPE_AAAA | TYPE_ANY) => {
            write_record_head(out, TYPE_AAAA, ttl, 16);
            out.extend_from_slice(&v6.octets());
        }
        _ => return,
    }
    sections.counts[1] = 1;
}

/// A record owned by the question name, up to its data.
fn write_record_head(out: &mut Vec<u8>, rtype: u16, ttl: u32, rdata_len: usize) {
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata_len as u16).to_be_bytes());
}

/// Adds the OPT record (when the client sent one; with the Extended DNS Error `ede` if any) and
/// writes the header: the query's ID, QR, AA (unless refused), TC as told, RD and CD copied, the
/// counts.
fn finish(query: &[u8], q: &Question, rcode: u8, ede: Option<u16>, mut sections: Sections, out: &mut Vec<u8>) {
    if let Some(payload) = q.edns_payload {
        out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
        out.extend_from_slice(&payload.max(512).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        match ede {
            Some(code) => {
                out.extend_from_slice(&(EDE_OPTION_LEN as u16).to_be_bytes());
                write_ede_option(out, code);
            }
            None => out.extend_from_slice(&[0, 0]),
        }
        sections.counts[3] += 1;
    }
    let authoritative = if rcode == RCODE_REFUSED { 0 } else { 0x04 };
    let truncated = if sections.truncated { 0x02 } else { 0 };
    out[2] = 0x80 | authoritative | truncated | (query[2] & 0x01);
    out[3] = (query[3] & 0x10) | rcode;
    for (i, count) in sections.counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
}
