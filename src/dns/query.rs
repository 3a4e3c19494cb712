//! What a query name asks for: pure parsing of names under the domain, no I/O.

use std::net::IpAddr;

use hickory_proto::rr::Name;

use super::answers::parse_addr_label;

/// The dynamic names sextant answers from the registry; everything else is zone-file data.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// `<service>.service.<domain>`, `<tag>.<service>.service.<domain>`, or RFC 2782's
    /// `_<service>._<tag>.service.<domain>` (`_tcp`/`_udp` meaning any tag). Lower-cased.
    Service { service: String, tag: Option<String> },
    /// `<hex-ip>.addr.<domain>`: an SRV target.
    Addr(IpAddr),
    /// `<node>.node.<domain>`.
    Node(String),
    /// `service.<domain>`, `addr.<domain>`, `node.<domain>`: names that exist but hold no records.
    EmptyNonTerminal,
    /// Under the dynamic subtrees, but no such name can exist.
    NoSuchName,
    /// Not a dynamic name: the zone files answer it (or REFUSED when no zone covers it).
    Static,
}

/// Classifies `qname` against the served `domain` (both absolute). Case-insensitive.
pub fn classify(qname: &Name, domain: &Name) -> Target {
    if !domain.zone_of(qname) {
        return Target::Static;
    }
    let depth = (qname.num_labels() - domain.num_labels()) as usize;
    if depth == 0 {
        return Target::Static;
    }
    // Labels below the domain, nearest to the domain first: [kind, …].
    let labels: Vec<String> = qname
        .iter()
        .take(depth)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .rev()
        .collect();
    match (labels[0].as_str(), &labels[1..]) {
        ("service" | "addr" | "node", []) => Target::EmptyNonTerminal,
        // `_<tag>.service.<domain>` (as in `_tcp`): the parent of RFC 2782 names. It must not be
        // NXDOMAIN, or a resolver that minimises query names stops there (RFC 8020).
        ("service", [label]) if label.starts_with('_') => Target::EmptyNonTerminal,
        ("service", [service]) => Target::Service {
            service: service.clone(),
            tag: None,
        },
        ("service", [second, first]) => match (first.strip_prefix('_'), second.strip_prefix('_')) {
            // RFC 2782: _service._proto.service.<domain>; the proto label is a tag filter.
            (Some(service), Some(tag)) => Target::Service {
                service: service.to_owned(),
                tag: (tag != "tcp" && tag != "udp").then(|| tag.to_owned()),
            },
            _ => Target::Service {
                service: second.clone(),
                tag: Some(first.clone()),
            },
        },
        ("addr", [hex]) => parse_addr_label(hex).map_or(Target::NoSuchName, Target::Addr),
        ("node", [node]) => Target::Node(node.clone()),
        ("service" | "addr" | "node", _) => Target::NoSuchName,
        _ => Target::Static,
    }
}

/// What a name under `in-addr.arpa.` or `ip6.arpa.` stands for.
#[derive(Debug, PartialEq, Eq)]
pub enum ReverseName {
    /// A whole address: `4.3.2.10.in-addr.arpa.` is 10.2.3.4.
    Address(IpAddr),
    /// The first part of an address (`3.2.10.in-addr.arpa.`): a name that may have names below it.
    Prefix,
    /// Not an address's name.
    Invalid,
}

/// Reads an address from its reverse name (RFC 1035 §3.5, RFC 3596 §2.5). Case-insensitive.
pub fn reverse_address(name: &Name) -> ReverseName {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .rev()
        .collect();
    let (digits, width, radix, prefix_len) = match labels.get(..2) {
        Some([arpa, kind]) if arpa == "arpa" && kind == "in-addr" => (&labels[2..], 4, 10, 3),
        Some([arpa, kind]) if arpa == "arpa" && kind == "ip6" => (&labels[2..], 32, 16, 1),
        _ => return ReverseName::Invalid,
    };
    let mut values = Vec::with_capacity(width);
    for label in digits {
        // from_str_radix takes a leading '+': only digits, and no leading zero.
        let canonical = !label.is_empty()
            && label.len() <= prefix_len
            && label.bytes().all(|b| b.is_ascii_hexdigit())
            && !(label.len() > 1 && label.starts_with('0'));
        match u8::from_str_radix(label, radix) {
            Ok(value) if canonical && (radix == 10 || value < 16) => values.push(value),
            _ => return ReverseName::Invalid,
        }
    }
    match values.len() {
        n if n < width => ReverseName::Prefix,
        n if n > width => ReverseName::Invalid,
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
    use super::*;

    fn classify_str(q: &str) -> Target {
        classify(&Name::from_ascii(q).unwrap(), &Name::from_ascii("trading-dc.").unwrap())
    }

    fn service(s: &str, tag: Option<&str>) -> Target {
        Target::Service {
            service: s.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn reverse_names() {
        let reverse = |q: &str| reverse_address(&Name::from_ascii(q).unwrap());
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        let cases = [
            (
                "4.3.2.10.in-addr.arpa.",
                ReverseName::Address("10.2.3.4".parse().unwrap()),
            ),
            (
                "4.3.2.10.IN-ADDR.ARPA.",
                ReverseName::Address("10.2.3.4".parse().unwrap()),
            ),
            (
                "255.0.0.0.in-addr.arpa.",
                ReverseName::Address("0.0.0.255".parse().unwrap()),
            ),
            (v6, ReverseName::Address("2001:db8::1".parse().unwrap())),
            (
                &v6.to_ascii_uppercase(),
                ReverseName::Address("2001:db8::1".parse().unwrap()),
            ),
            ("3.2.10.in-addr.arpa.", ReverseName::Prefix),
            ("in-addr.arpa.", ReverseName::Prefix),
            ("8.b.d.0.1.0.0.2.ip6.arpa.", ReverseName::Prefix),
            ("256.3.2.10.in-addr.arpa.", ReverseName::Invalid),
            ("04.3.2.10.in-addr.arpa.", ReverseName::Invalid),
            ("x.3.2.10.in-addr.arpa.", ReverseName::Invalid),
            ("5.4.3.2.10.in-addr.arpa.", ReverseName::Invalid),
            ("10.b.d.0.1.0.0.2.ip6.arpa.", ReverseName::Invalid),
            ("g.b.d.0.1.0.0.2.ip6.arpa.", ReverseName::Invalid),
            ("example.com.", ReverseName::Invalid),
        ];
        for (q, want) in cases {
            assert_eq!(reverse(q), want, "{q}");
        }
        // Labels from the wire can hold what a text name cannot: from_str_radix takes "+4".
        let plus = Name::from_labels([&b"+4"[..], b"3", b"2", b"10", b"in-addr", b"arpa"]).unwrap();
        assert_eq!(reverse_address(&plus), ReverseName::Invalid);
    }

    #[test]
    fn names_under_the_domain() {
        let cases = [
            ("orders.service.trading-dc.", service("orders", None)),
            ("ORDERS.Service.Trading-DC.", service("orders", None)),
            ("primary.orders.service.trading-dc.", service("orders", Some("primary"))),
            ("_orders._tcp.service.trading-dc.", service("orders", None)),
            (
                "_orders._primary.service.trading-dc.",
                service("orders", Some("primary")),
            ),
            ("0a000001.addr.trading-dc.", Target::Addr("10.0.0.1".parse().unwrap())),
            ("xyz.addr.trading-dc.", Target::NoSuchName),
            ("sextant.node.trading-dc.", Target::Node("sextant".into())),
            ("service.trading-dc.", Target::EmptyNonTerminal),
            ("a.b.c.service.trading-dc.", Target::NoSuchName),
            ("trading-dc.", Target::Static),
            ("www.trading-dc.", Target::Static),
            ("orders.service.elsewhere.", Target::Static),
        ];
        for (q, want) in cases {
            assert_eq!(classify_str(q), want, "{q}");
        }
    }
}
