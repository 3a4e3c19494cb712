//! The fast path: query bytes in, response bytes out, for the names sextant answers from the
//! registry. One pass over the question, one hash lookup of the service's compiled answers, and
//! a copy; no allocation once `out` has grown. Whatever it does not fully understand (zone-file
//! names, other opcodes or classes, compressed questions, EDNS versions or options it does not
//! know, malformed packets) it leaves to the hickory path, which is always right.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, Record};

use super::answers::{AnswerSet, ServiceAnswerMap, parse_addr_label};
use super::message::{
    CLASS_IN, HEADER_LEN, RCODE_NOERROR, RCODE_NXDOMAIN, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_AXFR, TYPE_IXFR, TYPE_OPT,
    TYPE_SRV, Transport, parse_opt,
};
use super::wire::{Owner, WireCompiler, WireRecords};

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the response.
    Answered,
    /// The hickory path must answer this query.
    Fallback,
}

pub struct FastPath {
    answers: Arc<ServiceAnswerMap>,
    /// The largest UDP response, whatever the client's EDNS buffer.
    max_udp_size: u16,
    /// The served domain in lower-case wire form, root byte included.
    domain: Vec<u8>,
    domain_labels: usize,
    /// Swapped when the zone files are reloaded.
    negative_soa: ArcSwap<WireRecords>,
    node_name: Vec<u8>,
    node_addr: IpAddr,
    node_ttl: u32,
    /// Most A/AAAA records per answer.
    address_limit: usize,
}

/// The parts of a query the answer needs.
struct Question {
    /// End of the question section (where answers start).
    end: usize,
    /// Wire length of the question name.
    name_len: usize,
    qtype: u16,
    /// The client's EDNS UDP payload size, when it sent an OPT record.
    edns_payload: Option<u16>,
    /// The name, lower-cased, and where each label starts in it.
    lower: [u8; 255],
    label_starts: [u8; 128],
    labels: usize,
}

impl Question {
    fn label(&self, i: usize) -> &[u8] {
        let start = self.label_starts[i] as usize;
        let len = self.lower[start] as usize;
        &self.lower[start + 1..start + 1 + len]
    }
}

/// What the name asks for, once under the domain.
enum Lookup<'q> {
    Service {
        service: &'q [u8],
        tag: Option<&'q [u8]>,
    },
    /// An address record for the question name, with its TTL.
    Address(IpAddr, u32),
    NoData,
    NxDomain,
}

impl FastPath {
    pub(super) fn new(answers: Arc<ServiceAnswerMap>, negative_soa: &Record, node_name: &str) -> Self {
        let compiler = answers.compiler();
        let domain = compiler.domain.to_lowercase();
        let wire = WireCompiler::new(&domain);
        Self {
            domain: name_wire(&domain),
            domain_labels: domain.num_labels() as usize,
            negative_soa: ArcSwap::from_pointee(wire.compile([negative_soa], Owner::OwnName)),
            node_name: node_name.to_ascii_lowercase().into_bytes(),
            node_addr: compiler.node_addr,
            node_ttl: compiler.node_ttl,
            address_limit: compiler.address_limit(),
            max_udp_size: compiler.max_udp_size.max(512),
            answers,
        }
    }

    /// The largest UDP response, whatever the client's EDNS buffer.
    pub fn max_udp_size(&self) -> u16 {
        self.max_udp_size
    }

    /// Uses a reloaded zone's SOA for negative answers from the next query on.
    pub fn replace_negative_soa(&self, negative_soa: &Record) {
        let wire = WireCompiler::new(&self.answers.compiler().domain.to_lowercase());
        self.negative_soa
            .store(Arc::new(wire.compile([negative_soa], Owner::OwnName)));
    }

    /// Answers `query` into `out` (cleared first). `rotation` picks the first record of a
    /// rotated answer; callers pass a counter that changes with every query.
    pub fn answer(&self, query: &[u8], out: &mut Vec<u8>, transport: Transport, rotation: usize) -> Outcome {
        let Some(q) = parse_question(query) else {
            return Outcome::Fallback;
        };
        if q.qtype == TYPE_AXFR || q.qtype == TYPE_IXFR {
            return Outcome::Fallback; // refused by the hickory path
        }
        let Some(lookup) = self.classify(&q) else {
            return Outcome::Fallback;
        };
        let limit = match (transport, q.edns_payload) {
            (Transport::Tcp, _) => u16::MAX as usize,
            (Transport::Udp, Some(payload)) => payload.clamp(512, self.max_udp_size) as usize,
            (Transport::Udp, None) => 512,
        };
        // Room for the OPT record we add when the client sent one.
        let limit = limit - if q.edns_payload.is_some() { 11 } else { 0 };
        let domain_pointer = (0xC000 | (HEADER_LEN + q.name_len - self.domain.len()) as u16).to_be_bytes();

        out.clear();
        out.extend_from_slice(&query[..q.end]);
        let mut counts = [1u16, 0, 0, 0];
        let rcode = match lookup {
            Lookup::Service { service, tag } => match std::str::from_utf8(service) {
                Err(_) => RCODE_NXDOMAIN, // not ASCII: no service has that name
                Ok(service) => self.answers.with_answers(service, |answers| {
                    let set = answers.and_then(|a| match tag {
                        None => Some(&a.all),
                        Some(tag) => std::str::from_utf8(tag).ok().and_then(|t| a.tag(t)),
                    });
                    match set {
                        Some(set) => {
                            let max = if q.qtype == TYPE_SRV {
                                usize::MAX
                            } else {
                                self.address_limit
                            };
                            let at = (rotation, max, limit);
                            write_service_answer(set, q.qtype, out, &mut counts, at, domain_pointer);
                            RCODE_NOERROR
                        }
                        None => RCODE_NXDOMAIN,
                    }
                }),
            },
            Lookup::Address(ip, ttl) => {
                write_address(ip, ttl, q.qtype, out, &mut counts);
                RCODE_NOERROR
            }
            Lookup::NoData => RCODE_NOERROR,
            Lookup::NxDomain => RCODE_NXDOMAIN,
        };
        let truncated = counts[1] == u16::MAX;
        if truncated {
            counts[1] = count_answers_written(out, q.end);
        }
        if counts[1] == 0 && !truncated {
            counts[2] = self
                .negative_soa
                .load()
                .write_rotated(out, 0, usize::MAX, limit, domain_pointer) as u16;
        }
        if let Some(payload) = q.edns_payload {
            out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
            out.extend_from_slice(&payload.max(512).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            counts[3] += 1;
        }
        write_header(out, query, rcode, truncated, counts);
        Outcome::Answered
    }

    /// `None` when the name is not one the registry answers (the hickory path takes it).
    fn classify<'q>(&self, q: &'q Question) -> Option<Lookup<'q>> {
        if q.labels < self.domain_labels + 1 {
            return None;
        }
        let below = q.labels - self.domain_labels;
        let suffix_start = q.label_starts[below] as usize;
        if q.lower[suffix_start..q.name_len] != self.domain[..] {
            return None;
        }
        let kind = q.label(below - 1);
        let lookup = match (kind, below) {
            (b"service" | b"addr" | b"node", 1) => Lookup::NoData,
            // `_tcp.service.<domain>`: the parent of RFC 2782 names (see `query::classify`).
            (b"service", 2) if q.label(0).starts_with(b"_") => Lookup::NoData,
            (b"service", 2) => Lookup::Service {
                service: q.label(0),
                tag: None,
            },
            (b"service", 3) => match (q.label(0).strip_prefix(b"_"), q.label(1).strip_prefix(b"_")) {
                (Some(service), Some(tag)) => Lookup::Service {
                    service,
                    tag: (tag != b"tcp" && tag != b"udp").then_some(tag),
                },
                _ => Lookup::Service {
                    service: q.label(1),
                    tag: Some(q.label(0)),
                },
            },
            (b"addr", 2) => std::str::from_utf8(q.label(0))
                .ok()
                .and_then(parse_addr_label)
                .map_or(Lookup::NxDomain, |ip| Lookup::Address(ip, 0)),
            (b"node", 2) if q.label(0) == &self.node_name[..] => Lookup::Address(self.node_addr, self.node_ttl),
            (b"service" | b"addr" | b"node", _) => Lookup::NxDomain,
            _ => return None,
        };
        Some(lookup)
    }
}

/// Parses the header and the one question (plus an optional OPT record); `None` for anything
/// the fast path leaves to hickory.
fn parse_question(query: &[u8]) -> Option<Question> {
    if query.len() < HEADER_LEN + 5 {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    let is_response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xF;
    let counts = |i: usize| u16::from_be_bytes([query[4 + 2 * i], query[5 + 2 * i]]);
    if is_response || opcode != 0 || counts(0) != 1 || counts(1) != 0 || counts(2) != 0 || counts(3) > 1 {
        return None;
    }
    let mut q = Question {
        end: 0,
        name_len: 0,
        qtype: 0,
        edns_payload: None,
        lower: [0; 255],
        label_starts: [0; 128],
        labels: 0,
    };
    let mut pos = HEADER_LEN;
    loop {
        let len = *query.get(pos)? as usize;
        if len & 0xC0 != 0 {
            return None; // compression in a question: legal, rare, left to hickory
        }
        if q.name_len + len + 1 > 255 {
            return None;
        }
        if len == 0 {
            q.lower[q.name_len] = 0;
            q.name_len += 1;
            pos += 1;
            break;
        }
        let label = query.get(pos + 1..pos + 1 + len)?;
        q.label_starts[q.labels] = q.name_len as u8;
        q.labels += 1;
        q.lower[q.name_len] = len as u8;
        for (dst, src) in q.lower[q.name_len + 1..q.name_len + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        q.name_len += len + 1;
        pos += len + 1;
    }
    q.label_starts[q.labels] = (q.name_len - 1) as u8; // the root: where an empty suffix starts
    let fixed = query.get(pos..pos + 4)?;
    q.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN {
        return None;
    }
    q.end = pos + 4;
    if counts(3) == 1 {
        q.edns_payload = Some(parse_opt(&query[q.end..])?);
    } else if query.len() != q.end {
        return None;
    }
    Some(q)
}

/// Writes the answer section (and SRV additionals). Sets `counts[1]` to `u16::MAX` when the
/// answers did not all fit (the caller recounts and sets TC).
/// `(rotation, max_records, byte_limit)`: where the rotated answer starts, how many records it
/// may hold (the A-record limit), and how many bytes the response may take.
type Window = (usize, usize, usize);

fn write_service_answer(
    set: &AnswerSet,
    qtype: u16,
    out: &mut Vec<u8>,
    counts: &mut [u16; 4],
    (rotation, max_records, limit): Window,
    domain_pointer: [u8; 2],
) {
    let lists: &[&WireRecords] = match qtype {
        TYPE_A => &[&set.a],
        TYPE_AAAA => &[&set.aaaa],
        TYPE_ANY => &[&set.a, &set.aaaa],
        TYPE_SRV => &[&set.srv],
        _ => return,
    };
    let mut room = max_records;
    for list in lists {
        if list.is_empty() || room == 0 {
            continue;
        }
        let wanted = list.len().min(room);
        let written = list.write_rotated(out, rotation % list.len(), wanted, limit, domain_pointer);
        if written < wanted {
            counts[1] = u16::MAX;
            return;
        }
        counts[1] += written as u16;
        room -= written;
    }
    if qtype == TYPE_SRV {
        // Additional records are a courtesy (RFC 2181 §9): those that fit go, without TC.
        counts[3] = set
            .srv_additional
            .write_rotated(out, 0, usize::MAX, limit, domain_pointer) as u16;
    }
}

fn write_address(ip: IpAddr, ttl: u32, qtype: u16, out: &mut Vec<u8>, counts: &mut [u16; 4]) {
    let write = |out: &mut Vec<u8>, rtype: u16, octets: &[u8]| {
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(octets.len() as u16).to_be_bytes());
        out.extend_from_slice(octets);
    };
    match (ip, qtype) {
        (IpAddr::V4(v4), TYPE_A | TYPE_ANY) => write(out, TYPE_A, &v4.octets()),
        (IpAddr::V6(v6), TYPE_AAAA | TYPE_ANY) => write(out, TYPE_AAAA, &v6.octets()),
        _ => return,
    }
    counts[1] = 1;
}

/// Counts the whole records after the question (used after a truncated write).
fn count_answers_written(out: &[u8], question_end: usize) -> u16 {
    let mut pos = question_end;
    let mut n = 0;
    while pos + 12 <= out.len() {
        // Every compiled answer starts with the 2-byte pointer to the question.
        let rdlen = u16::from_be_bytes([out[pos + 10], out[pos + 11]]) as usize;
        pos += 12 + rdlen;
        n += 1;
    }
    n
}

fn write_header(out: &mut [u8], query: &[u8], rcode: u8, truncated: bool, counts: [u16; 4]) {
    // ID stays; QR=1, opcode 0, AA=1, TC as told, RD copied; RA=0, Z=0, AD=0, CD copied.
    let rd = query[2] & 0x01;
    let cd = query[3] & 0x10;
    out[2] = 0x80 | 0x04 | if truncated { 0x02 } else { 0 } | rd;
    out[3] = cd | rcode;
    for (i, count) in counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
}

/// A name in lower-case wire form, root byte included.
fn name_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}
