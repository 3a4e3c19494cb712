//! DNS messages as bytes, for the answer path, forwarding and the hickory path alike: record
//! type and rcode constants, the transport, the OPT record, where a question and a name end, and
//! the fixes made to an encoded message. Hand-written rather than hickory-proto's decoder because
//! the answer path reads a query in place, without allocating, at several hundred thousand
//! queries a second.

pub const HEADER_LEN: usize = 12;
pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
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

/// How the response travels, which bounds its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The OPT record of an EDNS(0) query: its payload size, if it holds nothing the fast path would
/// have to act on (version 0, only options a server may ignore).
pub fn parse_opt(rest: &[u8]) -> Option<u16> {
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
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let len = u16::from_be_bytes([*options.get(2)?, *options.get(3)?]) as usize;
        if code != EDNS_COOKIE && code != EDNS_PADDING {
            return None;
        }
        options = options.get(4 + len..)?;
    }
    Some(payload)
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
