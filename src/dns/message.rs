//! DNS messages as bytes, for the answer path, forwarding and the zone files alike: record type
//! and rcode constants, the transport, the one question parser, the OPT record, where a question
//! and a name end, and the fixes made to an encoded message. The question parser is hand-written
//! rather than hickory-proto's decoder because the answer path reads a query in place, without
//! allocating, at several hundred thousand queries a second; what it does not take as it is
//! (a compressed name, EDNS options, another class…) hickory-proto reads in full and
//! [`read_in_full`] re-encodes in the form it takes, so every query meets the same parser.
//! EDNS options are read, added and removed in place ([`find_option`], [`append_option`],
//! [`remove_option`]) on any message, the zone data's and the recursors' responses included.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name};

use super::cookies::ClientCookie;

pub const HEADER_LEN: usize = 12;
pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const CLASS_IN: u16 = 1;
pub const EDNS_COOKIE: u16 = 10;
pub const EDNS_PADDING: u16 = 12;
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

/// How the response travels, which bounds its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query's one question, read in place: what the classifier and the answer writer need.
pub struct Question {
    /// End of the question section (where answers start).
    pub end: usize,
    /// Wire length of the question name.
    pub name_len: usize,
    pub qtype: u16,
    /// The client's EDNS UDP payload size, when it sent an OPT record.
    pub edns_payload: Option<u16>,
    /// Whether the query sent a DNS cookie (RFC 7873), well formed: the answer path reads it
    /// again only then, so that queries without one do not carry its 40 bytes.
    pub cookie: bool,
    /// The name, lower-cased, and where each label starts in it.
    lower: [u8; 255],
    label_starts: [u8; 128],
    labels: usize,
}

impl Question {
    /// How many labels the name has (the root not counted).
    pub fn labels(&self) -> usize {
        self.labels
    }

    /// Label `i`, lower-cased, counted from the left.
    pub fn label(&self, i: usize) -> &[u8] {
        let start = self.label_starts[i] as usize;
        let len = self.lower[start] as usize;
        &self.lower[start + 1..start + 1 + len]
    }

    /// The lower-cased wire name from label `i` on, root byte included (`i == labels()`: the root).
    pub fn suffix(&self, i: usize) -> &[u8] {
        &self.lower[self.label_starts[i] as usize..self.name_len]
    }

    /// The name, lower-cased, as hickory-proto's `Name`.
    pub fn name(&self) -> Option<Name> {
        let mut name = Name::from_labels((0..self.labels).map(|i| self.label(i))).ok()?;
        name.set_fqdn(true);
        Some(name)
    }

    /// Whether the name is `zone` (lower-case wire form, root byte included) or below it.
    pub fn is_under(&self, zone: &[u8], zone_labels: usize) -> bool {
        self.labels >= zone_labels && self.suffix(self.labels - zone_labels) == zone
    }
}

/// Reads the header and the one question (plus an OPT record) of a standard query, class IN, as
/// written without compression and with no EDNS option but a cookie and padding; `None` for
/// anything else, which [`read_in_full`] takes.
pub fn parse_question(query: &[u8]) -> Option<Question> {
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
        cookie: false,
        lower: [0; 255],
        label_starts: [0; 128],
        labels: 0,
    };
    let mut pos = HEADER_LEN;
    loop {
        let len = *query.get(pos)? as usize;
        if len & 0xC0 != 0 {
            return None; // compression in a question: legal, rare, read in full
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
        let opt = parse_opt(&query[q.end..])?;
        q.edns_payload = Some(opt.payload);
        q.cookie = opt.cookie;
    } else if query.len() != q.end {
        return None;
    }
    Some(q)
}

/// What a query [`parse_question`] does not take becomes once hickory-proto has read it.
pub enum InFull {
    /// The same query re-encoded as [`parse_question`] takes it (the name uncompressed, EDNS
    /// version 0 with its cookie alone), and its question.
    Query(Vec<u8>, Box<Question>),
    /// The response to send: FORMERR (a malformed message, or cookie), NOTIMP (another
    /// opcode), BADVERS (EDNS version above 0) or REFUSED (a class sextant does not serve: CH's `version.bind` gets no IN data).
    Error(Vec<u8>),
    /// Nothing to send: a response (answering those would make us a reflector), or too short
    /// to have a header.
    Ignore,
}

/// Reads a query in full with hickory-proto; see [`InFull`].
pub fn read_in_full(query: &[u8]) -> InFull {
    let message = match Message::from_vec(query) {
        Ok(message) => message,
        Err(_) => {
            // Unreadable: FORMERR if it is at least a query's header.
            if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
                return InFull::Ignore;
            }
            let id = u16::from_be_bytes([query[0], query[1]]);
            let op_code = OpCode::from_u8((query[2] >> 3) & 0x0F);
            let reply = Message::error_msg(id, op_code, ResponseCode::FormErr);
            return reply.to_vec().map_or(InFull::Ignore, InFull::Error);
        }
    };
    if message.metadata.message_type == MessageType::Response {
        return InFull::Ignore;
    }
    let error = |code| InFull::Error(error_reply(&message, code));
    if message.metadata.op_code != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    if message.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        return error(ResponseCode::BADVERS);
    }
    let [question] = &message.queries[..] else {
        return error(ResponseCode::FormErr);
    };
    if question.query_class() != DNSClass::IN || !message.answers.is_empty() || !message.authorities.is_empty() {
        let code = match question.query_class() {
            DNSClass::IN => ResponseCode::FormErr,
            _ => ResponseCode::Refused,
        };
        return error(code);
    }
    let mut canonical = Message::new(message.metadata.id, MessageType::Query, OpCode::Query);
    canonical.metadata.recursion_desired = message.metadata.recursion_desired;
    canonical.metadata.checking_disabled = message.metadata.checking_disabled;
    canonical.add_query(question.clone());
    if let Some(edns) = &message.edns {
        let mut plain = Edns::new();
        plain.set_max_payload(edns.max_payload());
        // RFC 7873 §5.2.2: a cookie of a length it does not allow, or two, is a FORMERR.
        match &edns.options().get_all(EdnsCode::Cookie)[..] {
            [] => {}
            [EdnsOption::Unknown(code, data)] if ClientCookie::parse(data).is_ok() => {
                plain.options_mut().insert(EdnsOption::Unknown(*code, data.clone()));
            }
            _ => return error(ResponseCode::FormErr),
        }
        canonical.set_edns(plain);
    }
    match canonical
        .to_vec()
        .ok()
        .and_then(|bytes| Some((parse_question(&bytes)?, bytes)))
    {
        Some((question, bytes)) => InFull::Query(bytes, Box::new(question)),
        None => error(ResponseCode::FormErr),
    }
}

/// A response to `request` that holds its question and the code alone (and an OPT record when
/// the request had one, which carries the upper bits of BADVERS). A request of several
/// questions gets none back: echoing them all made a response over UDP's 512 bytes (found by
/// the `dns_query` fuzz target).
fn error_reply(request: &Message, code: ResponseCode) -> Vec<u8> {
    let mut reply = Message::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.checking_disabled = request.metadata.checking_disabled;
    reply.metadata.response_code = code;
    if let [question] = &request.queries[..] {
        reply.add_query(question.clone());
    }
    if let Some(edns) = &request.edns {
        let mut plain = Edns::new();
        plain.set_max_payload(edns.max_payload().max(512));
        reply.set_edns(plain);
    }
    reply.to_vec().unwrap_or_else(|_| {
        Message::error_msg(request.metadata.id, request.metadata.op_code, code)
            .to_vec()
            .unwrap_or_default()
    })
}

/// What the in-place parser takes from a query's OPT record.
pub struct Opt {
    pub payload: u16,
    /// Whether it holds a well-formed cookie.
    pub cookie: bool,
}

/// The OPT record of an EDNS(0) query, if it holds nothing the in-place parser leaves to
/// [`read_in_full`] (version 0; padding, and one well-formed cookie).
pub fn parse_opt(rest: &[u8]) -> Option<Opt> {
    if rest.len() < 11 || rest[0] != 0 || u16::from_be_bytes([rest[1], rest[2]]) != TYPE_OPT {
        return None;
    }
    let payload = u16::from_be_bytes([rest[3], rest[4]]);
    let (extended_rcode, version) = (rest[5], rest[6]);
    if extended_rcode != 0 || version != 0 {
        return None;
    }
    let rdlen = u16::from_be_bytes([rest[9], rest[10]]) as usize;
    let mut options = rest.get(11..11 + rdlen)?;
    if rest.len() != 11 + rdlen {
        return None;
    }
    let mut cookie = false;
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let len = u16::from_be_bytes([*options.get(2)?, *options.get(3)?]) as usize;
        let data = options.get(4..4 + len)?;
        match code {
            EDNS_PADDING => {}
            EDNS_COOKIE if !cookie => cookie = ClientCookie::parse(data).is_ok().then_some(true)?,
            _ => return None,
        }
        options = &options[4 + len..];
    }
    Some(Opt { payload, cookie })
}

/// Where the data of `message`'s OPT record is: the offset of its length field, and the range of
/// its data. `None` when it has none, or does not parse that far.
fn opt_data(message: &[u8]) -> Option<(usize, std::ops::Range<usize>)> {
    let [questions, answers, authorities, additionals] = header_counts(message)?;
    let mut pos = HEADER_LEN;
    for _ in 0..questions {
        pos = name_end(message, pos)? + 4;
    }
    for _ in 0..usize::from(answers) + usize::from(authorities) {
        pos = record_at(message, pos)?.1;
    }
    for _ in 0..additionals {
        let (name_end, end) = record_at(message, pos)?;
        if end > message.len() {
            return None;
        }
        if u16::from_be_bytes([message[name_end], message[name_end + 1]]) == TYPE_OPT {
            return Some((name_end + 8, name_end + 10..end));
        }
        pos = end;
    }
    None
}

/// Where each option of an OPT record's `data` starts (its code), and its whole length.
fn options(data: &[u8]) -> impl Iterator<Item = (usize, u16, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = data.get(at..at + 4)?;
        let len = 4 + usize::from(u16::from_be_bytes([head[2], head[3]]));
        let start = at;
        at += len;
        (at <= data.len()).then(|| (start, u16::from_be_bytes([head[0], head[1]]), len))
    })
}

/// The data of the first EDNS option `code` in `message`.
pub fn find_option(message: &[u8], code: u16) -> Option<&[u8]> {
    let (_, range) = opt_data(message)?;
    let data = &message[range];
    let (at, _, len) = options(data).find(|(_, c, _)| *c == code)?;
    Some(&data[at + 4..at + len])
}

/// Adds EDNS option `code` with `value` to `message`'s OPT record; false when it has none (or
/// the option would not fit one).
pub fn append_option(message: &mut Vec<u8>, code: u16, value: &[u8]) -> bool {
    let Some((len_at, range)) = opt_data(message) else {
        return false;
    };
    let Ok(new_len) = u16::try_from(range.len() + 4 + value.len()) else {
        return false;
    };
    let option = [&code.to_be_bytes()[..], &(value.len() as u16).to_be_bytes(), value].concat();
    message.splice(range.end..range.end, option);
    message[len_at..len_at + 2].copy_from_slice(&new_len.to_be_bytes());
    true
}

/// Removes every EDNS option `code` from `message`'s OPT record.
pub fn remove_option(message: &mut Vec<u8>, code: u16) {
    let Some((len_at, range)) = opt_data(message) else {
        return;
    };
    let found: Vec<(usize, usize)> = options(&message[range.clone()])
        .filter(|(_, c, _)| *c == code)
        .map(|(at, _, len)| (range.start + at, len))
        .collect();
    let removed: usize = found.iter().map(|(_, len)| len).sum();
    for (at, len) in found.into_iter().rev() {
        message.drain(at..at + len);
    }
    let new_len = (range.len() - removed) as u16;
    message[len_at..len_at + 2].copy_from_slice(&new_len.to_be_bytes());
}

/// End of the one question of a query (uncompressed, as queries are); `None` when malformed.
pub fn question_end(packet: &[u8]) -> Option<usize> {
    if packet.len() < HEADER_LEN || packet[4..6] != [0, 1] {
        return None;
    }
    let mut pos = HEADER_LEN;
    loop {
        let len = *packet.get(pos)? as usize;
        match len {
            0 => break,
            1..=63 => pos += 1 + len,
            _ => return None,
        }
    }
    let end = pos + 1 + 4;
    (end <= packet.len()).then_some(end)
}

/// Cuts `response` to its header and question with TC set, so that the client asks again over
/// TCP; an OPT record without options follows when `query` had one (RFC 6891 §7). False (and
/// `response` left as it was) when it has no question to keep, or when what is left would be
/// larger than the query (a question name the query compressed): a cut response is never
/// larger than its query.
pub fn truncate_to_question(query: &[u8], response: &mut Vec<u8>, max_udp_size: u16) -> bool {
    let Some(end) = question_end(response) else {
        return false;
    };
    let had_opt = question_end(query).is_some_and(|at| {
        let rest = &query[at..];
        rest.len() >= 11 && rest[0] == 0 && u16::from_be_bytes([rest[1], rest[2]]) == TYPE_OPT
    });
    if end + if had_opt { 11 } else { 0 } > query.len() {
        return false;
    }
    response.truncate(end);
    response[2] |= 0x02;
    response[6..12].copy_from_slice(&[0, 0, 0, 0, 0, u8::from(had_opt)]);
    if had_opt {
        response.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
        response.extend_from_slice(&max_udp_size.to_be_bytes());
        response.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    true
}

/// The header's counts: questions, answers, authorities, additionals.
fn header_counts(message: &[u8]) -> Option<[u16; 4]> {
    let header = message.get(..HEADER_LEN)?;
    Some(std::array::from_fn(|i| {
        u16::from_be_bytes([header[4 + 2 * i], header[5 + 2 * i]])
    }))
}

/// The record whose owner name starts at `pos`: where that name ends (its type, class, TTL and
/// data length follow, and are there), and where the record ends.
fn record_at(message: &[u8], pos: usize) -> Option<(usize, usize)> {
    let name_end = name_end(message, pos)?;
    let fixed = message.get(name_end..name_end + 10)?;
    Some((
        name_end,
        name_end + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]])),
    ))
}

/// RFC 2308 §3: the SOA of a negative answer (no answer records; NOERROR or NXDOMAIN) is cached
/// for the lesser of its TTL and its MINIMUM field, and that is the TTL it must carry. hickory's
/// catalog sends a zone file's SOA with the TTL it has in the file, so the encoded message is
/// corrected here. Only TTLs change; a message that does not parse is left as it is.
pub fn cap_negative_soa_ttls(message: &mut [u8]) {
    let Some([questions, answers, authorities, _]) = header_counts(message) else {
        return;
    };
    if !matches!(message[3] & 0x0F, 0 | 3) || answers != 0 {
        return;
    }
    let mut pos = HEADER_LEN;
    for _ in 0..questions {
        let Some(end) = name_end(message, pos) else {
            return;
        };
        pos = end + 4;
    }
    for _ in 0..authorities {
        let Some((end, rdata_end)) = record_at(message, pos) else {
            return;
        };
        let fixed = &message[end..end + 10];
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        if rtype == TYPE_SOA {
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
pub fn keep_question_case(message: &mut [u8]) {
    let Some([1, answers, _, _]) = header_counts(message) else {
        return;
    };
    let Some(question_end) = name_end(message, HEADER_LEN) else {
        return;
    };
    let question = message[HEADER_LEN..question_end].to_vec();
    if question.iter().any(|b| *b >= 0xC0) {
        return; // a compressed question: leave it to the resolver
    }
    let mut pos = question_end + 4;
    for _ in 0..answers {
        let Some((end, record_end)) = record_at(message, pos) else {
            return;
        };
        if end - pos == question.len() && message[pos..end].eq_ignore_ascii_case(&question) {
            message[pos..end].copy_from_slice(&question);
        }
        pos = record_end;
    }
}

/// Where the name starting at `pos` ends (after its last label or its compression pointer).
pub fn name_end(message: &[u8], mut pos: usize) -> Option<usize> {
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

    use super::{
        EDNS_COOKIE, EDNS_PADDING, append_option, cap_negative_soa_ttls, find_option, keep_question_case, remove_option,
    };

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

    #[test]
    fn options_are_found_added_and_removed_in_place() {
        let mut with_opt = message(ResponseCode::NoError, true);
        with_opt.set_edns(hickory_proto::op::Edns::new());
        let mut bytes = with_opt.to_vec().unwrap();
        assert_eq!(find_option(&bytes, EDNS_COOKIE), None);
        assert!(append_option(&mut bytes, EDNS_PADDING, &[0; 3]));
        assert!(append_option(&mut bytes, EDNS_COOKIE, &[1; 24]));
        assert_eq!(find_option(&bytes, EDNS_COOKIE), Some(&[1; 24][..]));
        let decoded = Message::from_vec(&bytes).unwrap();
        assert_eq!(decoded.answers.len(), 1);
        assert_eq!(decoded.edns.unwrap().options().options.len(), 2);
        remove_option(&mut bytes, EDNS_COOKIE);
        assert_eq!(find_option(&bytes, EDNS_COOKIE), None);
        assert_eq!(find_option(&bytes, EDNS_PADDING), Some(&[0; 3][..]));
        Message::from_vec(&bytes).expect("still well formed");
        // Without an OPT record there is nowhere to put one; a cut message is never read past.
        let mut plain = message(ResponseCode::NoError, true).to_vec().unwrap();
        assert!(!append_option(&mut plain, EDNS_COOKIE, &[1; 24]));
        for cut in 0..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            let _ = find_option(&short, EDNS_PADDING);
            remove_option(&mut short, EDNS_PADDING);
            assert!(short.len() <= cut);
        }
    }
}
