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
