//! Service answers compiled when a service changes, so a query only picks a ready record list.
//!
//! SRV targets use Consul's `<hex-ip>.addr.<domain>` form: the name encodes the address, so it
//! resolves without a registry lookup and is shared by every instance on that address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record};

use crate::model::{Address, Health, Instance, ServiceName, is_dns_label};

/// The records answering one owner name (`<service>.service.<domain>` or a tag form).
#[derive(Debug, Default, Clone)]
pub struct AnswerSet {
    pub a: Arc<[Record]>,
    pub aaaa: Arc<[Record]>,
    pub srv: Arc<[Record]>,
    /// A/AAAA for every SRV target that sextant is authoritative for.
    pub srv_additional: Arc<[Record]>,
}

impl AnswerSet {
    /// No instance to hand out: every one is critical (a NODATA answer, not NXDOMAIN).
    pub fn is_empty(&self) -> bool {
        self.srv.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct ServiceAnswers {
    pub all: AnswerSet,
    /// Lower-cased tag → the answers for instances carrying it (only tags that are DNS labels).
    pub by_tag: BTreeMap<Box<str>, AnswerSet>,
}

/// What every compiled answer shares: the zone, the TTL, the node's own addresses.
#[derive(Debug, Clone)]
pub struct AnswerCompiler {
    pub domain: Name,
    pub service_ttl: u32,
    pub node_addr: IpAddr,
    /// When true, warning instances are left out of answers as well (default: only critical ones).
    pub only_passing: bool,
}

impl AnswerCompiler {
    pub fn compile(&self, service: &ServiceName, instances: &[Arc<Instance>]) -> ServiceAnswers {
        let svc_label = service.key();
        let owner = self.name_under(&[svc_label.as_str(), "service"]);
        let all = self.compile_set(&owner, instances.iter());
        let tags: BTreeSet<String> = instances
            .iter()
            .flat_map(|i| i.tags.iter())
            .filter(|t| is_dns_label(t))
            .map(|t| t.to_ascii_lowercase())
            .collect();
        let by_tag = tags
            .into_iter()
            .map(|tag| {
                let owner = self.name_under(&[&tag, svc_label.as_str(), "service"]);
                let set = self.compile_set(&owner, instances.iter().filter(|i| i.has_tag(&tag)));
                (tag.into_boxed_str(), set)
            })
            .collect();
        ServiceAnswers { all, by_tag }
    }

    fn compile_set<'a>(
        &self,
        owner: &Name,
        instances: impl Iterator<Item = &'a Arc<Instance>>,
    ) -> AnswerSet {
        let ttl = self.service_ttl;
        let (mut a, mut aaaa, mut srv, mut extra) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut seen_ips = BTreeSet::new();
        for instance in instances {
            let health = instance.health();
            if !self.answers_for(health) {
                continue;
            }
            let weight = match health {
                Health::Passing => instance.weights.passing,
                _ => instance.weights.warning,
            };
            let target = match &instance.address {
                Address::Host(host) => match Name::from_ascii(format!("{host}.")) {
                    Ok(name) => name,
                    Err(_) => continue, // validated at the edge; unreachable in practice
                },
                address => {
                    let ip = self.ip_of(address);
                    let target = self.addr_name(ip);
                    if seen_ips.insert(ip) {
                        let (answer, list) = match ip {
                            IpAddr::V4(v4) => (RData::A(A(v4)), &mut a),
                            IpAddr::V6(v6) => (RData::AAAA(AAAA(v6)), &mut aaaa),
                        };
                        list.push(Record::from_rdata(owner.clone(), ttl, answer.clone()));
                        extra.push(Record::from_rdata(target.clone(), ttl, answer));
                    }
                    target
                }
            };
            let rdata = SRV::new(1, weight, instance.port, target);
            srv.push(Record::from_rdata(owner.clone(), ttl, RData::SRV(rdata)));
        }
        AnswerSet {
            a: a.into(),
            aaaa: aaaa.into(),
            srv: srv.into(),
            srv_additional: extra.into(),
        }
    }

    fn answers_for(&self, health: Health) -> bool {
        match health {
            Health::Passing => true,
            Health::Warning => !self.only_passing,
            Health::Critical => false,
        }
    }

    pub fn ip_of(&self, address: &Address) -> IpAddr {
        match address {
            Address::Ip(ip) => *ip,
            _ => self.node_addr,
        }
    }

    /// `<hex-ip>.addr.<domain>.`: 8 hex digits for IPv4, 32 for IPv6, as Consul.
    pub fn addr_name(&self, ip: IpAddr) -> Name {
        let hex: String = match ip {
            IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
            IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
        };
        self.name_under(&[&hex, "addr"])
    }

    /// `labels…` + the domain. Labels are validated DNS labels, so this cannot fail.
    pub fn name_under(&self, labels: &[&str]) -> Name {
        let relative = Name::from_labels(labels.iter().map(|l| l.as_bytes())).unwrap_or_default();
        relative
            .append_domain(&self.domain)
            .unwrap_or_else(|_| self.domain.clone())
    }
}

/// The address an `addr` label names, if it is 8 or 32 hex digits.
pub fn parse_addr_label(label: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..label.len())
        .step_by(2)
        .map(|i| {
            label
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    match bytes?.as_slice() {
        b if b.len() == 4 && label.len() == 8 => {
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        b if b.len() == 16 && label.len() == 32 => {
            let octets: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_labels_round_trip() {
        let compiler = AnswerCompiler {
            domain: Name::from_ascii("trading-dc.").unwrap(),
            service_ttl: 0,
            node_addr: "127.0.0.1".parse().unwrap(),
            only_passing: false,
        };
        for ip in ["10.0.0.1", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = compiler.addr_name(ip);
            let label = name.iter().next().unwrap();
            assert_eq!(
                parse_addr_label(std::str::from_utf8(label).unwrap()),
                Some(ip)
            );
        }
        assert_eq!(
            compiler.addr_name("10.0.0.1".parse().unwrap()).to_ascii(),
            "0a000001.addr.trading-dc."
        );
        for bad in ["", "0a00001", "zz000001", "0a0000011"] {
            assert_eq!(parse_addr_label(bad), None, "{bad}");
        }
    }
}
