//! Service answers compiled when a service changes, so a query only picks a ready record list.
//!
//! SRV targets use Consul's `<hex-ip>.addr.<domain>` form: the name encodes the address, so it
//! resolves without a registry lookup and is shared by every instance on that address.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};

use compact_str::CompactString;

use super::names::ZoneName;
use super::settings::DnsSettings;
use super::stats::ServiceIds;
use super::wire::{Owner, WireCompiler, WireRecords};
use crate::model::{Address, Health, Instance, ServiceKey, ServiceName, is_dns_label};
use crate::registry::{ServiceEntry, ServiceListener};

/// The records answering one owner name (`<service>.service.<domain>` or a tag form).
#[derive(Debug, Default, Clone)]
pub struct AnswerRecords {
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    pub srv: Vec<Record>,
    /// A/AAAA for every SRV target that sextant is authoritative for.
    pub srv_additional: Vec<Record>,
}

/// The same answers compiled to wire format: what the answer writer copies.
#[derive(Debug, Default, Clone)]
pub struct AnswerSet {
    pub a: WireRecords,
    pub aaaa: WireRecords,
    pub srv: WireRecords,
    pub srv_additional: WireRecords,
}

impl AnswerSet {
    fn compile(records: &AnswerRecords, wire: &WireCompiler) -> Self {
        Self {
            a: wire.compile(&records.a, Owner::Question),
            aaaa: wire.compile(&records.aaaa, Owner::Question),
            srv: wire.compile(&records.srv, Owner::Question),
            srv_additional: wire.compile(&records.srv_additional, Owner::OwnName),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.a.heap_bytes() + self.aaaa.heap_bytes() + self.srv.heap_bytes() + self.srv_additional.heap_bytes()
    }
}

/// A service's answers, compiled when it changes.
#[derive(Debug, Default, Clone)]
pub struct ServiceAnswers {
    pub all: AnswerSet,
    /// (lower-cased tag, the answers for instances carrying it), sorted by tag; only tags that
    /// are DNS labels. A sorted slice rather than a map: one allocation, however many tags.
    pub by_tag: Box<[(Box<str>, AnswerSet)]>,
    /// The service's number in the query counts ([`ServiceIds`]).
    pub stats_id: u32,
}

impl ServiceAnswers {
    /// The answers for a lower-cased tag.
    pub fn tag(&self, tag: &str) -> Option<&AnswerSet> {
        let found = self.by_tag.binary_search_by(|(t, _)| (**t).cmp(tag)).ok()?;
        Some(&self.by_tag[found].1)
    }

    pub fn heap_bytes(&self) -> usize {
        let slots = self.by_tag.len() * std::mem::size_of::<(Box<str>, AnswerSet)>();
        self.all.heap_bytes() + slots + self.by_tag.iter().map(|(k, v)| k.len() + v.heap_bytes()).sum::<usize>()
    }
}

/// Every service's compiled answers, kept by DNS and recompiled when the registry says a service
/// changed: what every DNS query reads, without a lock. Keyed by lower-case name in a map of its
/// own so that a lookup follows as few pointers as it can: papaya allocates each entry on its
/// own, and this one holds its key (inline up to 24 bytes) and the answers' headers, so the next
/// hop is the records themselves. With 100,000 services every pointer followed is a cache miss.
pub struct ServiceAnswerMap {
    compiler: AnswerCompiler,
    /// The served domain, as the answer writer finds it in a question.
    domain: ZoneName,
    /// foldhash rather than std's SipHash: hashing the name was a tenth of a query's cost.
    /// Clients only look names up; the names in the map are registered ones, so colliding
    /// keys cannot be planted from DNS.
    map: papaya::HashMap<CompactString, ServiceAnswers, foldhash::fast::RandomState>,
    /// Each service's number in the query counts, given when its answers are first compiled.
    ids: Arc<ServiceIds>,
}

impl ServiceAnswerMap {
    /// An empty map whose answers are compiled with `settings`.
    pub fn new(settings: &DnsSettings) -> Self {
        Self {
            compiler: AnswerCompiler::new(settings),
            domain: ZoneName::new(&settings.domain),
            map: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            ids: Arc::default(),
        }
    }

    /// The services' numbers in the query counts.
    pub fn service_ids(&self) -> Arc<ServiceIds> {
        self.ids.clone()
    }

    /// What the answers are compiled with: the zone, the TTLs, the node.
    pub fn compiler(&self) -> &AnswerCompiler {
        &self.compiler
    }

    /// The domain the answers are compiled for.
    pub fn domain(&self) -> &ZoneName {
        &self.domain
    }

    /// Runs `f` on the compiled answers of a service found by its lower-case name, without taking
    /// a lock or a reference count: the DNS answer path.
    pub fn with_answers<R>(&self, lower_name: &str, f: impl FnOnce(Option<&ServiceAnswers>) -> R) -> R {
        let answers = self.map.pin();
        f(answers.get(lower_name))
    }

    /// Heap bytes of every service's compiled answers (for the memory report).
    pub fn heap_bytes(&self) -> usize {
        self.map.pin().values().map(ServiceAnswers::heap_bytes).sum()
    }
}

impl ServiceListener for ServiceAnswerMap {
    fn service_changed(&self, key: &ServiceKey, service: Option<&ServiceEntry>) {
        match service {
            Some(entry) => {
                // Instances held for flapping are left out (`registry/flaps.rs`); most entries
                // have none, and are compiled as they are.
                let answerable: std::borrow::Cow<'_, [Arc<Instance>]> = if entry.flapping.is_empty() {
                    (&entry.instances[..]).into()
                } else {
                    let answerable = entry.instances.iter().filter(|i| !entry.is_flapping(&i.id));
                    answerable.cloned().collect()
                };
                let mut answers = self.compiler.compile(&entry.name, &answerable);
                answers.stats_id = self.ids.id_for(key.as_str());
                self.map.pin().insert(CompactString::new(key.as_str()), answers);
            }
            None => {
                self.map.pin().remove(key.as_str());
            }
        }
    }
}

/// What every compiled answer shares: the zone, the TTLs, the node's own address.
#[derive(Debug, Clone)]
pub struct AnswerCompiler {
    domain: Name,
    wire: WireCompiler,
    service_ttl: u32,
    /// See [`DnsSettings::service_ttls`].
    service_ttls: Vec<(String, u32)>,
    node_addr: IpAddr,
    only_passing: bool,
    meta_txt: bool,
}

impl AnswerCompiler {
    pub fn new(settings: &DnsSettings) -> Self {
        Self {
            wire: WireCompiler::new(&settings.domain),
            domain: settings.domain.clone(),
            service_ttl: settings.service_ttl,
            service_ttls: settings.service_ttls.clone(),
            node_addr: settings.node_addr,
            only_passing: settings.only_passing,
            meta_txt: settings.meta_txt,
        }
    }

    /// The TTL of a service's records.
    pub fn ttl_for(&self, service: &str) -> u32 {
        let mut best: Option<(usize, u32)> = None;
        for (pattern, ttl) in &self.service_ttls {
            let matched = match pattern.strip_suffix('*') {
                Some(prefix) => service.starts_with(prefix).then_some(prefix.len()),
                None => (pattern == service).then_some(usize::MAX),
            };
            if let Some(len) = matched
                && best.is_none_or(|(best_len, _)| len > best_len)
            {
                best = Some((len, *ttl));
            }
        }
        best.map_or(self.service_ttl, |(_, ttl)| ttl)
    }

    /// Compiles every answer of a service: all instances, and each DNS-label tag's subset.
    pub fn compile(&self, service: &ServiceName, instances: &[Arc<Instance>]) -> ServiceAnswers {
        let all = AnswerSet::compile(&self.records(service, None, instances), &self.wire);
        let tags: BTreeSet<String> = instances
            .iter()
            .flat_map(|i| i.tags.iter())
            .filter(|t| is_dns_label(t))
            .map(|t| t.to_ascii_lowercase())
            .collect();
        // Tags come sorted from the set: `tag()` binary-searches them.
        let by_tag = tags
            .into_iter()
            .map(|tag| {
                let set = AnswerSet::compile(&self.records(service, Some(&tag), instances), &self.wire);
                (tag.into_boxed_str(), set)
            })
            .collect();
        ServiceAnswers {
            all,
            by_tag,
            stats_id: 0,
        }
    }

    /// The records answering `[<tag>.]<service>.service.<domain>`: only instances that carry the
    /// tag (when given) and whose health is answered.
    pub fn records(&self, service: &ServiceName, tag: Option<&str>, instances: &[Arc<Instance>]) -> AnswerRecords {
        let svc_label = service.key();
        let owner = match tag {
            None => self.name_under(&[svc_label.as_str(), "service"]),
            Some(tag) => self.name_under(&[tag, svc_label.as_str(), "service"]),
        };
        let ttl = self.ttl_for(svc_label.as_str());
        let mut out = AnswerRecords::default();
        let mut seen_ips = BTreeSet::new();
        let mut seen_txt = std::collections::HashSet::new();
        // After every address: when room runs short, the addresses of SRV targets matter more.
        let mut meta_txt_records = Vec::new();
        for instance in instances.iter().filter(|i| tag.is_none_or(|t| i.has_tag(t))) {
            let health = instance.health();
            if !self.answers_for(health) {
                continue;
            }
            let weight = match health {
                Health::Passing => instance.weights.passing,
                _ => instance.weights.warning,
            };
            let target = match instance.reach_address() {
                Address::Host(host) => match Name::from_ascii(format!("{host}.")) {
                    Ok(name) => name,
                    Err(_) => continue, // validated at the edge; unreachable in practice
                },
                address => {
                    let ip = self.ip_of(address);
                    let target = self.addr_name(ip);
                    if seen_ips.insert(ip) {
                        let (answer, list) = match ip {
                            IpAddr::V4(v4) => (RData::A(A(v4)), &mut out.a),
                            IpAddr::V6(v6) => (RData::AAAA(AAAA(v6)), &mut out.aaaa),
                        };
                        list.push(Record::from_rdata(owner.clone(), ttl, answer.clone()));
                        out.srv_additional.push(Record::from_rdata(target.clone(), ttl, answer));
                    }
                    if self.meta_txt {
                        for txt in meta_txt(instance) {
                            if seen_txt.insert((ip, txt.clone())) {
                                meta_txt_records.push(Record::from_rdata(target.clone(), ttl, RData::TXT(txt)));
                            }
                        }
                    }
                    target
                }
            };
            let rdata = SRV::new(1, weight, instance.port, target);
            out.srv.push(Record::from_rdata(owner.clone(), ttl, RData::SRV(rdata)));
        }
        out.srv_additional.extend(meta_txt_records);
        out
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

/// One TXT record per `Meta` key, as Consul writes node meta: `key=value`, or the value alone
/// for keys starting with `rfc1035-`. Strings longer than a character-string (255 bytes) are
/// split across several, as RFC 7208 does for long SPF records.
fn meta_txt(instance: &Instance) -> impl Iterator<Item = TXT> + '_ {
    instance.meta.iter().map(|(key, value)| {
        let text = if key.to_ascii_lowercase().starts_with("rfc1035-") {
            value.to_string()
        } else {
            format!("{key}={value}")
        };
        let strings: Vec<&[u8]> = match text.is_empty() {
            true => vec![b""],
            false => text.as_bytes().chunks(255).collect(),
        };
        TXT::from_bytes(strings)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dns::names::parse_addr_label;

    fn settings(domain: &str) -> DnsSettings {
        DnsSettings::new(Name::from_ascii(domain).unwrap(), "node1", "127.0.0.1".parse().unwrap())
    }

    #[test]
    fn addr_labels_round_trip() {
        let compiler = AnswerCompiler::new(&settings("trading-dc."));
        for ip in ["10.0.0.1", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = compiler.addr_name(ip);
            let label = name.iter().next().unwrap();
            assert_eq!(parse_addr_label(label), Some(ip));
        }
        assert_eq!(
            compiler.addr_name("10.0.0.1".parse().unwrap()).to_ascii(),
            "0a000001.addr.trading-dc."
        );
    }

    #[test]
    fn service_ttls_exact_name_beats_the_longest_prefix() {
        let mut settings = settings(".");
        settings.service_ttl = 7;
        settings.service_ttls = vec![("web*".into(), 30), ("web-api*".into(), 10), ("web-api".into(), 5)];
        let compiler = AnswerCompiler::new(&settings);
        for (service, ttl) in [
            ("orders", 7),
            ("web", 30),
            ("web-ui", 30),
            ("web-api-v2", 10),
            ("web-api", 5),
        ] {
            assert_eq!(compiler.ttl_for(service), ttl, "{service}");
        }
    }
}
