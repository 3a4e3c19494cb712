//! The one grammar of the names sextant answers from the registry, over the lower-cased wire
//! name of a [`Question`]: `<service>.service.<domain>` and its tag forms, `<hex-ip>.addr.<domain>`,
//! `<node>.node.<domain>`, and the addresses of the configured reverse zones. Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use super::message::Question;

/// What a name asks the registry for.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'q> {
    /// `<service>.service.<domain>`, `<tag>.<service>.service.<domain>`, or RFC 2782's
    /// `_<service>._<tag>.service.<domain>` (`_tcp`/`_udp` meaning any tag). Lower-cased.
    Service { service: &'q [u8], tag: Option<&'q [u8]> },
    /// An address record for the question name, with its TTL: `<hex-ip>.addr.<domain>` (an SRV
    /// target) or this node's `<node>.node.<domain>`.
    Address(IpAddr, u32),
    /// A name that exists and holds no records: `service.<domain>`, `_tcp.service.<domain>`…
    NoData,
    /// `<node>.node.<domain>` for a node other than this one (an external node registered
    /// through the catalog, if there is one by that name). Lower-cased.
    Node(&'q [u8]),
    /// Under the registry's subtrees, but no such name can exist.
    NxDomain,
    /// A whole address in the reverse zone `zone` (an index into the zones served): PTR records
    /// naming what the registry has there.
    Reverse { ip: IpAddr, zone: usize },
    /// A name between the reverse zone `zone` and whole addresses: it has names below it, so it
    /// exists (RFC 8020), holding no records.
    ReversePrefix { zone: usize },
}

/// A zone in lower-case wire form (root byte included), as a question's suffix is compared with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneName {
    pub wire: Vec<u8>,
    pub labels: usize,
}

impl ZoneName {
    pub fn new(name: &Name) -> Self {
        let mut wire = Vec::new();
        for label in name.iter() {
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        wire.push(0);
        Self {
            wire,
            labels: name.num_labels() as usize,
        }
    }
}

/// The classifier: the served domain, this node, and the reverse zones.
pub struct Names {
    domain: ZoneName,
    node_name: Vec<u8>,
    node_addr: IpAddr,
    node_ttl: u32,
    /// The most specific first, as the zones loaded list them (`Lookup`'s `zone` indexes both).
    reverse: Vec<ZoneName>,
}

impl Names {
    /// `node`: this node's name, address, and the TTL of its address record.
    pub fn new(domain: &Name, (node_name, node_addr, node_ttl): (&str, IpAddr, u32), reverse: Vec<ZoneName>) -> Self {
        Self {
            domain: ZoneName::new(domain),
            node_name: node_name.to_ascii_lowercase().into_bytes(),
            node_addr,
            node_ttl,
            reverse,
        }
    }

    /// What `q` asks the registry for; `None` when the zone files answer it (the domain's apex,
    /// names of its own, the reverse zones' apexes, names outside every zone).
    pub fn classify<'q>(&self, q: &'q Question) -> Option<Lookup<'q>> {
        let domain_labels = self.domain.labels;
        if q.labels() <= domain_labels || !q.is_under(&self.domain.wire, domain_labels) {
            return self.classify_reverse(q);
        }
        let below = q.labels() - domain_labels;
        let kind = q.label(below - 1);
        let lookup = match (kind, below) {
            (b"service" | b"addr" | b"node", 1) => Lookup::NoData,
            // `_<tag>.service.<domain>` (as in `_tcp`): the parent of RFC 2782 names. It must not
            // be NXDOMAIN, or a resolver that minimises query names stops there (RFC 8020).
            (b"service", 2) if q.label(0).starts_with(b"_") => Lookup::NoData,
            (b"service", 2) => Lookup::Service {
                service: q.label(0),
                tag: None,
            },
            (b"service", 3) => match (q.label(0).strip_prefix(b"_"), q.label(1).strip_prefix(b"_")) {
                // RFC 2782: _service._proto.service.<domain>; the proto label is a tag filter.
                (Some(service), Some(tag)) => Lookup::Service {
                    service,
                    tag: (tag != b"tcp" && tag != b"udp").then_some(tag),
                },
                _ => Lookup::Service {
                    service: q.label(1),
                    tag: Some(q.label(0)),
                },
            },
            (b"addr", 2) => parse_addr_label(q.label(0)).map_or(Lookup::NxDomain, |ip| Lookup::Address(ip, 0)),
            (b"node", 2) if q.label(0) == &self.node_name[..] => Lookup::Address(self.node_addr, self.node_ttl),
            (b"node", 2) => Lookup::Node(q.label(0)),
            (b"service" | b"addr" | b"node", _) => Lookup::NxDomain,
            _ => return None,
        };
        Some(lookup)
    }

    fn classify_reverse<'q>(&self, q: &'q Question) -> Option<Lookup<'q>> {
        let zone = self
            .reverse
            .iter()
            .position(|zone| q.is_under(&zone.wire, zone.labels))?;
        match reverse_address(q) {
            ReverseName::Address(ip) => Some(Lookup::Reverse { ip, zone }),
            ReverseName::Prefix if q.labels() > self.reverse[zone].labels => Some(Lookup::ReversePrefix { zone }),
            // The apex (its SOA and NS), and names that are no address: the zone data.
            ReverseName::Prefix | ReverseName::Invalid => None,
        }
    }
}

/// The address an `addr` label names, if it is 8 or 32 hex digits (any case).
pub fn parse_addr_label(label: &[u8]) -> Option<IpAddr> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let mut octets = [0u8; 16];
    let len = match label.len() {
        8 => 4,
        32 => 16,
        _ => return None,
    };
    for (octet, pair) in octets.iter_mut().zip(label.chunks(2)) {
        *octet = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(match len {
        4 => IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
        _ => IpAddr::V6(Ipv6Addr::from(octets)),
    })
}

/// What a name under `in-addr.arpa.` or `ip6.arpa.` stands for.
#[derive(Debug, PartialEq, Eq)]
enum ReverseName {
    /// A whole address: `4.3.2.10.in-addr.arpa.` is 10.2.3.4.
    Address(IpAddr),
    /// The first part of an address (`3.2.10.in-addr.arpa.`): a name that may have names below it.
    Prefix,
    /// Not an address's name.
    Invalid,
}

/// Reads an address from its reverse name (RFC 1035 §3.5, RFC 3596 §2.5).
fn reverse_address(q: &Question) -> ReverseName {
    let n = q.labels();
    if n < 2 || q.label(n - 1) != b"arpa" {
        return ReverseName::Invalid;
    }
    let (width, radix, max_digits) = match q.label(n - 2) {
        b"in-addr" => (4, 10, 3),
        b"ip6" => (32, 16, 1),
        _ => return ReverseName::Invalid,
    };
    let digits = n - 2;
    if digits > width {
        return ReverseName::Invalid;
    }
    let mut values = [0u8; 32];
    // Nearest the zone first: the address's first byte (or nibble).
    for (i, value) in values.iter_mut().take(digits).enumerate() {
        let label = q.label(n - 3 - i);
        // Digits only (no sign), no leading zero, and in range.
        let canonical = !label.is_empty()
            && label.len() <= max_digits
            && label.iter().all(u8::is_ascii_hexdigit)
            && !(label.len() > 1 && label[0] == b'0');
        let parsed = std::str::from_utf8(label)
            .ok()
            .and_then(|text| u8::from_str_radix(text, radix).ok());
        match parsed {
            Some(parsed) if canonical && (radix == 10 || parsed < 16) => *value = parsed,
            _ => return ReverseName::Invalid,
        }
    }
    match digits {
        n if n < width => ReverseName::Prefix,
        _ if width == 4 => ReverseName::Address(IpAddr::from([values[0], values[1], values[2], values[3]])),
        _ => {
            let mut octets = [0u8; 16];
            for (i, pair) in values.chunks(2).enumerate() {
                octets[i] = pair[0] << 4 | pair[1];
            }
            ReverseName::Address(IpAddr::from(octets))
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::dns::message::parse_question;

    fn question(name: &str) -> Question {
        let mut message = Message::new(1, MessageType::Query, OpCode::Query);
        // From labels: the wire can hold what a text name cannot ("+4").
        let name = Name::from_labels(name.trim_end_matches('.').split('.').map(str::as_bytes)).unwrap();
        message.add_query(Query::query(name, RecordType::A));
        parse_question(&message.to_vec().unwrap()).unwrap()
    }

    fn classified(names: &Names, name: &str) -> String {
        format!("{:?}", names.classify(&question(name)))
    }

    #[test]
    fn names_under_the_domain() {
        let node = ("Sextant", "192.0.2.1".parse().unwrap(), 7);
        let names = Names::new(&Name::from_ascii("Trading-DC.").unwrap(), node, Vec::new());
        let service = |s: &str, tag: Option<&str>| {
            format!(
                "{:?}",
                Some(Lookup::Service {
                    service: s.as_bytes(),
                    tag: tag.map(str::as_bytes)
                })
            )
        };
        let cases = [
            ("orders.service.trading-dc.", service("orders", None)),
            ("ORDERS.Service.Trading-DC.", service("orders", None)),
            ("primary.orders.service.trading-dc.", service("orders", Some("primary"))),
            ("_orders._tcp.service.trading-dc.", service("orders", None)),
            ("_orders._udp.service.trading-dc.", service("orders", None)),
            (
                "_orders._primary.service.trading-dc.",
                service("orders", Some("primary")),
            ),
            ("0a000001.addr.trading-dc.", "Some(Address(10.0.0.1, 0))".into()),
            (
                "20010DB8000000000000000000000001.addr.trading-dc.",
                "Some(Address(2001:db8::1, 0))".into(),
            ),
            ("xyz.addr.trading-dc.", "Some(NxDomain)".into()),
            ("sextant.node.trading-dc.", "Some(Address(192.0.2.1, 7))".into()),
            // Another node: an external one, if the registry has one by that name.
            ("Other.node.trading-dc.", format!("{:?}", Some(Lookup::Node(b"other")))),
            ("a.other.node.trading-dc.", "Some(NxDomain)".into()),
            ("service.trading-dc.", "Some(NoData)".into()),
            ("_tcp.service.trading-dc.", "Some(NoData)".into()),
            ("a.b.c.service.trading-dc.", "Some(NxDomain)".into()),
            ("trading-dc.", "None".into()),
            ("www.trading-dc.", "None".into()),
            ("orders.service.elsewhere.", "None".into()),
            ("orders.service.xtrading-dc.", "None".into()),
        ];
        for (name, want) in cases {
            assert_eq!(classified(&names, name), want, "{name}");
        }
    }

    #[test]
    fn reverse_names() {
        let zones: Vec<ZoneName> = ["0.0.10.in-addr.arpa.", "10.in-addr.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa."]
            .iter()
            .map(|z| ZoneName::new(&Name::from_ascii(z).unwrap()))
            .collect();
        let node = ("n", "192.0.2.1".parse().unwrap(), 0);
        let names = Names::new(&Name::from_ascii("trading-dc.").unwrap(), node, zones);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        let cases = [
            ("4.0.0.10.in-addr.arpa.", "Some(Reverse { ip: 10.0.0.4, zone: 0 })"),
            ("4.3.2.10.IN-ADDR.ARPA.", "Some(Reverse { ip: 10.2.3.4, zone: 1 })"),
            (v6, "Some(Reverse { ip: 2001:db8::1, zone: 2 })"),
            (&v6.to_ascii_uppercase(), "Some(Reverse { ip: 2001:db8::1, zone: 2 })"),
            ("3.2.10.in-addr.arpa.", "Some(ReversePrefix { zone: 1 })"),
            ("1.8.b.d.0.1.0.0.2.ip6.arpa.", "Some(ReversePrefix { zone: 2 })"),
            ("10.in-addr.arpa.", "None"),
            ("0.0.10.in-addr.arpa.", "None"),
            ("256.3.2.10.in-addr.arpa.", "None"),
            ("04.3.2.10.in-addr.arpa.", "None"),
            ("x.3.2.10.in-addr.arpa.", "None"),
            ("+4.3.2.10.in-addr.arpa.", "None"),
            ("5.4.3.2.10.in-addr.arpa.", "None"),
            ("10.b.d.0.1.0.0.2.ip6.arpa.", "None"),
            ("g.b.d.0.1.0.0.2.ip6.arpa.", "None"),
            ("4.3.2.11.in-addr.arpa.", "None"),
            ("example.com.", "None"),
        ];
        for (name, want) in cases {
            assert_eq!(classified(&names, name), want, "{name}");
        }
    }

    #[test]
    fn addr_labels() {
        for (label, want) in [
            ("0a000001", Some("10.0.0.1")),
            ("0A000001", Some("10.0.0.1")),
            ("20010db8000000000000000000000001", Some("2001:db8::1")),
            ("", None),
            ("0a00001", None),
            ("zz000001", None),
            ("0a0000011", None),
            ("+a000001", None),
        ] {
            let want = want.map(|ip| ip.parse::<IpAddr>().unwrap());
            assert_eq!(parse_addr_label(label.as_bytes()), want, "{label}");
        }
    }
}
