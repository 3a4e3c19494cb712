//! What DNS is configured with, validated once from the configuration (`config.rs`).

use std::net::IpAddr;

use hickory_proto::rr::Name;

/// The largest UDP response by default, whatever the client's EDNS buffer: the 2020 DNS flag
/// day's figure (knot, NSD and BIND use it); the rest comes over TCP after TC.
pub const DEFAULT_MAX_UDP_SIZE: u16 = 1232;

#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The served domain: registry names are under it.
    pub domain: Name,
    /// This node's name (`<node>.node.<domain>`) and address.
    pub node_name: String,
    pub node_addr: IpAddr,
    /// TTL of service answers.
    pub service_ttl: u32,
    /// Per-service TTLs, as Consul's `service_ttl` map: an exact name, or a prefix ending in `*`;
    /// the longest match wins, `service_ttl` applies to the rest. Names are lower-case.
    pub service_ttls: Vec<(String, u32)>,
    /// TTL of `<node>.node.<domain>` answers.
    pub node_ttl: u32,
    /// When true, warning instances are left out of answers as well (default: only critical ones).
    pub only_passing: bool,
    /// At most this many A/AAAA records in an answer, taken after rotation (Consul's
    /// `a_record_limit`); 0: no limit.
    pub a_record_limit: usize,
    /// Instance `Meta` as TXT records beside the SRV targets' addresses.
    pub meta_txt: bool,
    /// The largest UDP response, whatever the client's EDNS buffer.
    pub max_udp_size: u16,
    /// The negative TTL of a known service whose every instance is critical (NODATA); `None`:
    /// the SOA minimum, as any other negative answer.
    pub unhealthy_ttl: Option<u32>,
    /// What UDP sends a source: the response-rate limit and who is exempt from it.
    pub rate_limit: super::reflection::RateLimit,
}

impl DnsSettings {
    /// The defaults for a domain and a node: TTLs 0, every instance that is not critical, no
    /// limits beyond the UDP size and the default response-rate limit.
    pub fn new(domain: Name, node_name: &str, node_addr: IpAddr) -> Self {
        Self {
            domain,
            node_name: node_name.to_owned(),
            node_addr,
            service_ttl: 0,
            service_ttls: Vec::new(),
            node_ttl: 0,
            only_passing: false,
            a_record_limit: 0,
            meta_txt: false,
            max_udp_size: DEFAULT_MAX_UDP_SIZE,
            unhealthy_ttl: None,
            rate_limit: super::reflection::RateLimit::default(),
        }
    }
}
