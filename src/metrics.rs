//! Every metric sextant exports, named in one place, and their exposition in Prometheus' text
//! format (`GET /metrics`, and `/v1/agent/metrics?format=prometheus` as Consul's tools ask),
//! through the Prometheus project's `prometheus-client` crate. Counters that the answer path and
//! the registry keep on their own (`dns/stats.rs`, [`Registry::transitions`]) are read at
//! scrape time; the registry's size is counted then too.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricRegistry;

use crate::dns::stats::{DnsStats, QTYPES, RCODES};
use crate::model::{CheckKind, Health};
use crate::registry::Registry;

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How many services get a label of their own in the per-service DNS counts by default.
pub const DEFAULT_SERVICE_LIMIT: usize = 1_000;

/// The label the services past the limit share.
pub const OTHER_SERVICES: &str = "_other";

/// Buckets for delays, 10 µs to 10 s: an answer published in microseconds and a probe that
/// times out each land in buckets of their own.
const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of delays in seconds (what the registry, the journal and the health checker
/// observe into; registered here).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A histogram of batch sizes, 1 to 4,096 (the journal's largest batch).
pub fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// A probe as timed: its kind (`http`, `tcp`) and its result (`passing`, `warning`, `critical`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

/// Probe durations by kind and result.
pub type ProbeTimes = Family<ProbeLabels, Histogram, fn() -> Histogram>;

/// The histograms the write side keeps, registered by [`Metrics::new`].
#[derive(Clone)]
pub struct WriteSide {
    /// Probe durations by kind and result (the health checker's).
    pub probes: ProbeTimes,
    /// From the store's acknowledgement of a write to its answers published (the registry's).
    pub write_published: Histogram,
    /// From a check's failing result to its instance out of DNS (the registry's).
    pub failure_published: Histogram,
    /// Store commits: how long each took, and how many changes it held (the journal's).
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
}

impl Default for WriteSide {
    fn default() -> Self {
        Self {
            probes: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            write_published: latency_histogram(),
            failure_published: latency_histogram(),
            commit_seconds: latency_histogram(),
            commit_batch: batch_histogram(),
        }
    }
}

/// An HTTP request as counted: the route's pattern (not the path, so IDs do not make labels),
/// the method and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// The metrics of one server.
pub struct Metrics {
    registry: MetricRegistry,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Blocking queries waiting now.
    pub blocking_queries: Gauge,
}

impl Metrics {
    /// The metrics of a server whose registry is `registry` and whose DNS counts are `dns`; the
    /// `service_limit` services asked most get their own label in the per-service counts.
    pub fn new(registry: Arc<Registry>, dns: Arc<DnsStats>, service_limit: usize) -> Self {
        let mut metrics = MetricRegistry::default();
        let write_side = registry.write_side().clone();
        metrics.register(
            "sextant_write_published_seconds",
            "From a write's acknowledgement by the store to its answers published here (with etcd: its return through the watch)",
            write_side.write_published,
        );
        metrics.register(
            "sextant_failure_published_seconds",
            "From a check's failing result to its instance out of DNS",
            write_side.failure_published,
        );
        metrics.register(
            "sextant_store_commit_seconds",
            "How long each store commit took (a batch of changes; fsynced for registrations)",
            write_side.commit_seconds,
        );
        metrics.register(
            "sextant_store_commit_changes",
            "Changes in each store commit",
            write_side.commit_batch,
        );
        metrics.register(
            "sextant_probe_seconds",
            "HTTP and TCP probe durations, by kind and result",
            write_side.probes,
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        metrics.register(
            "sextant_http_requests",
            "HTTP API requests, by route pattern, method and status",
            http_requests.clone(),
        );
        let blocking_queries = Gauge::default();
        metrics.register(
            "sextant_blocking_queries",
            "Blocking queries waiting for a change now",
            blocking_queries.clone(),
        );
        metrics.register_collector(Box::new(DnsCollector {
            stats: dns,
            service_limit,
        }));
        metrics.register_collector(Box::new(RegistryCollector { registry }));
        Self {
            registry: metrics,
            http_requests,
            blocking_queries,
        }
    }

    /// Every metric, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// DNS's counts, summed over the answer path's shards at scrape time.
#[derive(Debug)]
struct DnsCollector {
    stats: Arc<DnsStats>,
    service_limit: usize,
}

impl Collector for DnsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (tally, names) = self.stats.sum();
        let mut queries = encoder.encode_descriptor(
            "sextant_dns_queries",
            "DNS responses sent, by transport, query type and response code",
            None,
            MetricType::Counter,
        )?;
        for (t, transport) in ["udp", "tcp"].into_iter().enumerate() {
            for (q, by_rcode) in tally.queries[t].iter().enumerate() {
                let qtype = QTYPES.get(q).map_or("other", |&(_, name)| name);
                for (rcode, &count) in RCODES.iter().zip(by_rcode) {
                    if count > 0 {
                        let labels = [("transport", transport), ("qtype", qtype), ("rcode", rcode)];
                        ConstCounter::new(count).encode(queries.encode_family(&labels)?)?;
                    }
                }
            }
        }
        // The services asked most, each on its own; the rest together.
        let mut asked: Vec<(usize, u64)> = tally
            .by_service
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .collect();
        asked.sort_unstable_by_key(|&(_, n)| std::cmp::Reverse(n));
        let (labelled, rest) = asked.split_at(asked.len().min(self.service_limit));
        let other: u64 = rest.iter().map(|&(_, n)| n).sum::<u64>() + tally.untracked;
        let other_unhealthy: u64 =
            rest.iter().map(|&(id, _)| tally.unhealthy[id]).sum::<u64>() + tally.untracked_unhealthy;
        let name = |id: usize| names.get(id).map_or("", |n| n.as_str());
        let mut by_service = encoder.encode_descriptor(
            "sextant_dns_service_queries",
            "DNS queries for a registry service, for the services asked most (the rest: service=\"_other\")",
            None,
            MetricType::Counter,
        )?;
        for &(id, count) in labelled {
            ConstCounter::new(count).encode(by_service.encode_family(&[("service", name(id))])?)?;
        }
        if other > 0 {
            ConstCounter::new(other).encode(by_service.encode_family(&[("service", OTHER_SERVICES)])?)?;
        }
        let mut unhealthy = encoder.encode_descriptor(
            "sextant_dns_unhealthy_answers",
            "DNS answers for a known service with no healthy instance (NODATA)",
            None,
            MetricType::Counter,
        )?;
        for &(id, _) in labelled.iter().filter(|&&(id, _)| tally.unhealthy[id] > 0) {
            ConstCounter::new(tally.unhealthy[id]).encode(unhealthy.encode_family(&[("service", name(id))])?)?;
        }
        if other_unhealthy > 0 {
            ConstCounter::new(other_unhealthy).encode(unhealthy.encode_family(&[("service", OTHER_SERVICES)])?)?;
        }
        let mut limited = encoder.encode_descriptor(
            "sextant_dns_rate_limited",
            "UDP responses past a source network's rate (--dns-rate-limit): slipped (sent truncated) or dropped",
            None,
            MetricType::Counter,
        )?;
        for (action, count) in [("slipped", &self.stats.slipped), ("dropped", &self.stats.dropped)] {
            let count = count.load(std::sync::atomic::Ordering::Relaxed);
            ConstCounter::new(count).encode(limited.encode_family(&[("action", action)])?)?;
        }
        let bounded = encoder.encode_descriptor(
            "sextant_dns_amplification_truncated",
            "UDP answers sent truncated because they were more than 3 times their query's size and the source had not shown it is real (over TCP)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.stats.bounded.load(std::sync::atomic::Ordering::Relaxed)).encode(bounded)?;
        Ok(())
    }
}

/// The registry's size and its checks, counted at scrape time.
struct RegistryCollector {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCollector")
    }
}

const HEALTHS: [Health; 3] = [Health::Passing, Health::Warning, Health::Critical];
const KINDS: [&str; 6] = ["http", "tcp", "ttl", "maintenance", "grpc", "external"];

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = self.registry.services();
        let mut instances = [0i64; 3];
        let mut checks = [[0i64; 3]; KINDS.len()];
        for service in &services {
            for instance in &service.instances {
                instances[instance.health() as usize] += 1;
                for check in &instance.checks {
                    let kind = match check.spec.kind {
                        CheckKind::Http(_) => 0,
                        CheckKind::Tcp { .. } => 1,
                        CheckKind::Ttl { .. } => 2,
                        CheckKind::Maintenance => 3,
                        CheckKind::Grpc { .. } => 4,
                        CheckKind::External => 5,
                    };
                    checks[kind][check.status as usize] += 1;
                }
            }
        }
        let gauge = encoder.encode_descriptor("sextant_services", "Services registered", None, MetricType::Gauge)?;
        ConstGauge::new(services.len() as i64).encode(gauge)?;
        let mut by_health = encoder.encode_descriptor(
            "sextant_instances",
            "Instances registered, by health (the worst of their checks)",
            None,
            MetricType::Gauge,
        )?;
        for health in HEALTHS {
            let labels = [("health", health.as_str())];
            ConstGauge::new(instances[health as usize]).encode(by_health.encode_family(&labels)?)?;
        }
        let mut by_kind =
            encoder.encode_descriptor("sextant_checks", "Checks, by kind and status", None, MetricType::Gauge)?;
        for (k, kind) in KINDS.into_iter().enumerate() {
            for health in HEALTHS {
                let labels = [("kind", kind), ("status", health.as_str())];
                ConstGauge::new(checks[k][health as usize]).encode(by_kind.encode_family(&labels)?)?;
            }
        }
        if self.registry.is_shared() {
            let reachable = self.registry.staleness().is_none();
            let gauge = encoder.encode_descriptor(
                "sextant_etcd_reachable",
                "1 while etcd answers this server; 0 while it is out of reach (what is served may be stale)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(reachable)).encode(gauge)?;
            let stale = self.registry.staleness().unwrap_or_default().as_secs_f64();
            let gauge = encoder.encode_descriptor(
                "sextant_etcd_stale_seconds",
                "How long since etcd was last reached, while it is out of reach (0 while reachable)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(stale).encode(gauge)?;
        }
        let (flapping, holds) = self.registry.flapping();
        let gauge = encoder.encode_descriptor(
            "sextant_flapping_instances",
            "Instances held out of DNS for flapping now (--flap-threshold)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(flapping as i64).encode(gauge)?;
        let counter = encoder.encode_descriptor(
            "sextant_flap_holds",
            "Times an instance was held out of DNS for flapping, since the start",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(holds).encode(counter)?;
        let transitions = self.registry.transitions();
        let mut changes = encoder.encode_descriptor(
            "sextant_check_transitions",
            "Check status changes since the start, by status before and after",
            None,
            MetricType::Counter,
        )?;
        for from in HEALTHS {
            for to in HEALTHS.into_iter().filter(|&to| to != from) {
                let labels = [("from", from.as_str()), ("to", to.as_str())];
                let count = transitions[from as usize][to as usize];
                ConstCounter::new(count).encode(changes.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
