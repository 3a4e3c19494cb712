//! Resource records compiled to DNS wire format, ready to be copied into a response.
//!
//! A compiled record never points at another record, only at the question: its owner is `0xC00C`
//! (the question name, so the answer carries the name as asked) or, for names under the served
//! domain, a pointer to the domain's suffix inside the question. That suffix moves with the
//! question's length, so each record remembers where that pointer sits and the copy fills it in.
//! Records are therefore independent: they can be rotated, and cut at any record boundary.

use hickory_proto::rr::{Name, RData, Record};

/// Pointer to the question name, which always starts right after the 12-byte header.
const QUESTION_NAME_POINTER: [u8; 2] = [0xC0, 0x0C];
/// Marks a record without a domain pointer to fill in.
const NO_PATCH: u16 = u16::MAX;

/// A list of compiled records in one allocation: each record is stored as its length (u16),
/// the offset of its domain pointer to fill in (u16, `NO_PATCH` if none), then its bytes.
#[derive(Debug, Default, Clone)]
pub struct WireRecords {
    data: Box<[u8]>,
    count: u32,
}

impl WireRecords {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes taken, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.data.len()
    }

    /// The records in order: (patch offset, bytes).
    fn records(&self) -> impl Iterator<Item = (u16, &[u8])> + Clone {
        let mut rest = &self.data[..];
        std::iter::from_fn(move || {
            let (head, tail) = rest.split_at_checked(4)?;
            let len = u16::from_be_bytes([head[0], head[1]]) as usize;
            let patch = u16::from_be_bytes([head[2], head[3]]);
            let (record, tail) = tail.split_at(len);
            rest = tail;
            Some((patch, record))
        })
    }

    /// Appends up to `count` records `start, start+1, …` (wrapping) to `out` while they fit in
    /// `limit` bytes. Returns how many were written. `domain_pointer` is the pointer to the
    /// domain suffix of this response's question.
    pub fn write_rotated(
        &self,
        out: &mut Vec<u8>,
        start: usize,
        count: usize,
        limit: usize,
        domain_pointer: [u8; 2],
    ) -> usize {
        let n = self.len().min(count);
        let start = if self.is_empty() { 0 } else { start % self.len() };
        let rotated = self.records().skip(start).chain(self.records().take(start)).take(n);
        for (written, (patch, record)) in rotated.enumerate() {
            if out.len() + record.len() > limit {
                return written;
            }
            let at = out.len();
            out.extend_from_slice(record);
            if patch != NO_PATCH {
                out[at + patch as usize..at + patch as usize + 2].copy_from_slice(&domain_pointer);
            }
        }
        n
    }
}

/// Compiles records for one served domain.
#[derive(Debug, Clone)]
pub struct WireCompiler {
    /// The domain, lower-cased, as wire labels (without the root byte).
    domain: Name,
}

/// What a record's owner is in the response.
#[derive(Clone, Copy)]
pub enum Owner {
    /// The question name (answers).
    Question,
    /// The record's own name (additional and authority records).
    OwnName,
}

impl WireCompiler {
    pub fn new(domain: &Name) -> Self {
        Self {
            domain: domain.to_lowercase(),
        }
    }

    /// Compiles `records`; a record whose data is not one sextant compiles is skipped.
    pub fn compile<'a>(&self, records: impl IntoIterator<Item = &'a Record>, owner: Owner) -> WireRecords {
        let mut data = Vec::new();
        let mut count = 0;
        for record in records {
            let header = data.len();
            data.extend_from_slice(&[0; 4]);
            let start = data.len();
            let mut patch = None;
            match owner {
                Owner::Question => data.extend_from_slice(&QUESTION_NAME_POINTER),
                Owner::OwnName => patch = self.write_name(&mut data, &record.name, start),
            }
            if self.write_rdata_header_and_data(&mut data, record).is_none() {
                data.truncate(header);
                continue;
            }
            let len = (data.len() - start) as u16;
            data[header..header + 2].copy_from_slice(&len.to_be_bytes());
            data[header + 2..header + 4].copy_from_slice(&patch.unwrap_or(NO_PATCH).to_be_bytes());
            count += 1;
        }
        WireRecords {
            data: data.into_boxed_slice(),
            count,
        }
    }

    /// Type, class, TTL, RDLENGTH and RDATA; `None` for record types that are not compiled.
    fn write_rdata_header_and_data(&self, data: &mut Vec<u8>, record: &Record) -> Option<()> {
        data.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
        data.extend_from_slice(&1u16.to_be_bytes()); // class IN
        data.extend_from_slice(&record.ttl.to_be_bytes());
        let rdlen_at = data.len();
        data.extend_from_slice(&[0, 0]);
        match &record.data {
            RData::A(a) => data.extend_from_slice(&a.0.octets()),
            RData::AAAA(a) => data.extend_from_slice(&a.0.octets()),
            RData::SRV(srv) => {
                data.extend_from_slice(&srv.priority.to_be_bytes());
                data.extend_from_slice(&srv.weight.to_be_bytes());
                data.extend_from_slice(&srv.port.to_be_bytes());
                // RFC 2782: the target is never compressed.
                write_full_name(data, &srv.target);
            }
            RData::SOA(soa) => {
                // Names in full: the owner already holds the record's one domain pointer.
                write_full_name(data, &soa.mname);
                write_full_name(data, &soa.rname);
                for value in [
                    soa.serial,
                    soa.refresh as u32,
                    soa.retry as u32,
                    soa.expire as u32,
                    soa.minimum,
                ] {
                    data.extend_from_slice(&value.to_be_bytes());
                }
            }
            RData::TXT(txt) => {
                for text in &txt.txt_data {
                    data.push(u8::try_from(text.len()).ok()?);
                    data.extend_from_slice(text);
                }
            }
            _ => return None,
        }
        let rdlen = (data.len() - rdlen_at - 2) as u16;
        data[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        Some(())
    }

    /// Writes `name`: labels below the domain then a placeholder pointer to the domain suffix
    /// (returning its offset from `record_start`), or the whole name when it is not under the domain.
    fn write_name(&self, data: &mut Vec<u8>, name: &Name, record_start: usize) -> Option<u16> {
        let lower = name.to_lowercase();
        if !self.domain.zone_of(&lower) {
            write_full_name(data, name);
            return None;
        }
        let below = (lower.num_labels() - self.domain.num_labels()) as usize;
        for label in name.iter().take(below) {
            data.push(label.len() as u8);
            data.extend_from_slice(label);
        }
        let at = data.len() - record_start;
        data.extend_from_slice(&[0xC0, 0x00]);
        Some(at as u16)
    }
}

fn write_full_name(data: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        data.push(label.len() as u8);
        data.extend_from_slice(label);
    }
    data.push(0);
}
