//! A view of a service for clients that only have DNS: SRV lookups (through a given server or
//! the system's resolvers) re-read when the answer's TTL runs out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};

use super::view::{Instance, Instances, Publisher, ServiceView};
use super::{Error, Result, Retry};

/// Which DNS server the view asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsServer {
    /// The system's resolvers (`/etc/resolv.conf`): sextant's domain forwarded to it.
    System,
    /// One server, over UDP (TCP when an answer is truncated): sextant itself, `host:8600`.
    At(SocketAddr),
}

/// The shortest time between two lookups: sextant's answers have TTL 0 unless configured, and a
/// view that re-read at once would ask in a loop.
pub const MIN_REREAD: Duration = Duration::from_secs(1);

/// How long one DNS lookup may take before it counts as failed ([`ServiceView::dns`]).
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

impl ServiceView {
    /// A view of the SRV name `name` (`orders.service.trading-dc.`), re-read at the answer's TTL
    /// (at least every [`MIN_REREAD`]). Instances are `target:port`, with the addresses of the
    /// targets; only the lowest SRV priority is kept (RFC 2782), with the SRV weights.
    ///
    /// ```no_run
    /// use sextant::client::{DnsServer, ServiceView, Strategy};
    ///
    /// # async fn run() -> Result<(), sextant::client::Error> {
    /// let mut orders = ServiceView::dns("orders.service.trading-dc.", DnsServer::At("10.0.0.2:8600".parse().unwrap()))?;
    /// orders.ready().await?;
    /// let instance = orders.balancer(Strategy::Weighted).pick()?;
    /// println!("{}", instance.socket_addr());
    /// # Ok(()) }
    /// ```
    pub fn dns(name: &str, server: DnsServer) -> Result<ServiceView> {
        Self::dns_with(name, server, DEFAULT_DNS_TIMEOUT, Retry::default())
    }

    /// As [`dns`](Self::dns), with the time one lookup may take and the backoff after failed
    /// lookups (`retry.first` doubling up to `retry.max`; the view never stops trying).
    pub fn dns_with(name: &str, server: DnsServer, timeout: Duration, retry: Retry) -> Result<ServiceView> {
        let fqdn = Name::from_ascii(name).map_err(|e| Error::Invalid {
            what: "DNS name",
            reason: format!("{name:?}: {e}"),
        })?;
        let resolver = resolver(server, timeout)?;
        let (publisher, view) = Publisher::new(name);
        tokio::spawn(follow_dns(resolver, fqdn, publisher, retry));
        Ok(view)
    }
}

fn resolver(server: DnsServer, timeout: Duration) -> Result<TokioResolver> {
    let invalid = |e: hickory_resolver::net::NetError| Error::Invalid {
        what: "DNS resolver",
        reason: e.to_string(),
    };
    let mut builder = match server {
        DnsServer::System => TokioResolver::builder_tokio().map_err(invalid)?,
        DnsServer::At(address) => {
            let mut name_server = NameServerConfig::udp_and_tcp(address.ip());
            for connection in &mut name_server.connections {
                connection.port = address.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
    };
    // The view decides when to read again; the resolver's own cache would answer from memory.
    builder.options_mut().cache_size = 0;
    builder.options_mut().timeout = timeout;
    builder.build().map_err(invalid)
}

async fn follow_dns(resolver: TokioResolver, name: Name, mut publisher: Publisher, retry: Retry) {
    let service = publisher.service();
    let mut failures = 0u32;
    loop {
        let read = tokio::select! {
            read = read_srv(&resolver, &name) => read,
            () = publisher.unwatched() => return,
        };
        let pause = match read {
            Ok((list, known, valid_until)) => {
                failures = 0;
                publisher.publish(Instances::read(&service, list, 0, known));
                valid_until.saturating_duration_since(Instant::now()).max(MIN_REREAD)
            }
            Err(error) => {
                tracing::warn!(%service, %error, "SRV lookup failed; keeping the last list");
                publisher.failed(&error);
                failures = failures.saturating_add(1);
                retry.backoff(failures).max(MIN_REREAD)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = publisher.unwatched() => return,
        }
    }
}

/// One SRV lookup: the instances, whether the name exists (NODATA: a service with no healthy
/// instance; NXDOMAIN: no such service), and until when the answer holds.
async fn read_srv(resolver: &TokioResolver, name: &Name) -> Result<(Vec<Instance>, bool, Instant)> {
    let failed = |e: &dyn std::fmt::Display| Error::Dns {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let lookup = match resolver.srv_lookup(name.clone()).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_no_records_found() => {
            return Ok((Vec::new(), !e.is_nx_domain(), Instant::now()));
        }
        Err(e) => return Err(failed(&e)),
    };
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    let lowest = records.iter().map(|srv| srv.priority).min().unwrap_or(0);
    let mut list = Vec::new();
    for srv in records.into_iter().filter(|srv| srv.priority == lowest) {
        let address = match glue(&lookup, &srv.target) {
            Some(address) => address,
            None => match resolver.lookup_ip(srv.target.clone()).await {
                Ok(ips) => match ips.iter().next() {
                    Some(ip) => ip.to_string(),
                    None => continue,
                },
                Err(e) => return Err(failed(&e)),
            },
        };
        list.push(Instance {
            id: format!("{}:{}", srv.target, srv.port),
            service: name.to_string(),
            address,
            port: srv.port,
            tags: Vec::new(),
            meta: Default::default(),
            weight: u32::from(srv.weight),
        });
    }
    Ok((list, true, lookup.valid_until()))
}

/// The target's address from the answer's additional section, where sextant puts it.
fn glue(lookup: &hickory_resolver::lookup::Lookup, target: &Name) -> Option<String> {
    lookup.additionals().iter().find_map(|r| match &r.data {
        RData::A(a) if &r.name == target => Some(a.0.to_string()),
        RData::AAAA(aaaa) if &r.name == target => Some(aaaa.0.to_string()),
        _ => None,
    })
}
