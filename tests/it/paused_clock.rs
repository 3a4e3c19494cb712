//! Health timing on tokio's paused clock, in-process: TTL expiry and heartbeats, and the reaper of
//! `DeregisterCriticalServiceAfter`, at the durations services really use (minutes) in no time and
//! to the millisecond. The registry, the health checker and the DNS answers are the server's own;
//! only the clock is tokio's test clock, which moves when every task waits. The wall-clock tests
//! in `health.rs` keep a few of these end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use sextant::api::wire::{parse_json, parse_registration};
use sextant::dns::message::Transport;
use sextant::dns::{DnsEngine, Incoming, Reply};
use sextant::health::HealthChecker;
use sextant::model::{CheckId, Health, InstanceId};
use sextant::registry::Registry;
use tokio::time::{Instant, sleep, sleep_until};

struct Node {
    registry: Arc<Registry>,
    health: HealthChecker,
    dns: DnsEngine,
}

impl Node {
    fn start() -> Self {
        let (registry, _, dns) = crate::common::registry_and_dns(&crate::common::dns_settings());
        let health = HealthChecker::start(registry.clone(), 16).unwrap();
        Self { registry, health, dns }
    }

    fn register(&self, body: serde_json::Value) {
        let instance = parse_registration(
            &parse_json(body.to_string().as_bytes()).unwrap(),
            &self.registry.local_node(),
        )
        .unwrap();
        let _ = self.registry.register(instance).expect("registers");
    }

    fn heartbeat(&self, check: &str) {
        let check = CheckId::parse(check).unwrap();
        // In memory: applied as it is made.
        let _applied = self.registry.ttl_update(&check, Health::Passing, "beat").unwrap();
    }

    fn status(&self, instance: &str) -> Option<Health> {
        let instance = self.registry.instance(&InstanceId::parse(instance).unwrap())?;
        Some(instance.health())
    }

    /// The A records DNS answers for a service, and its response code.
    async fn dns_a(&self, service: &str) -> (ResponseCode, usize) {
        let mut query = Message::new(7, MessageType::Query, OpCode::Query);
        let name = Name::from_ascii(format!("{service}.service.trading-dc.")).unwrap();
        query.add_query(Query::query(name, RecordType::A));
        let packet = query.to_vec().unwrap();
        let from: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let incoming = Incoming {
            packet: &packet,
            from,
            transport: Transport::Udp,
            rotation: 0,
        };
        let mut out = Vec::new();
        assert_eq!(self.dns.answer(incoming, &mut out).await, Reply::Ready);
        let reply = Message::from_vec(&out).unwrap();
        (reply.metadata.response_code, reply.answers.len())
    }

    /// Lets the health checker's tasks take what the registry announced (no time passes).
    async fn settle(&self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_hold_a_ttl_check_and_it_expires_one_ttl_after_the_last() {
    let node = Node::start();
    node.register(json!({"Name": "worker", "ID": "worker-1", "Address": "10.1.0.3",
                         "Check": {"TTL": "30s", "Status": "passing"}}));
    node.settle().await;
    // A heartbeat every 25 s for ten minutes: never critical, always in DNS.
    let mut last_beat = Instant::now();
    for _ in 0..24 {
        sleep(Duration::from_secs(25)).await;
        assert_eq!(node.status("worker-1"), Some(Health::Passing));
        assert_eq!(node.dns_a("worker").await, (ResponseCode::NoError, 1));
        node.heartbeat("service:worker-1");
        last_beat = Instant::now();
    }
    // Then none: passing until one TTL after the last heartbeat, critical and out of DNS from then.
    sleep_until(last_beat + Duration::from_millis(29_990)).await;
    assert_eq!(node.status("worker-1"), Some(Health::Passing), "10 ms before the TTL");
    sleep_until(last_beat + Duration::from_millis(30_010)).await;
    assert_eq!(node.status("worker-1"), Some(Health::Critical), "10 ms after the TTL");
    assert_eq!(node.dns_a("worker").await, (ResponseCode::NoError, 0));
    // The next heartbeat brings it back at once, and the TTL runs again from it.
    node.heartbeat("service:worker-1");
    assert_eq!(node.dns_a("worker").await, (ResponseCode::NoError, 1));
    let beat = Instant::now();
    sleep_until(beat + Duration::from_millis(29_990)).await;
    assert_eq!(node.status("worker-1"), Some(Health::Passing));
    sleep_until(beat + Duration::from_millis(30_010)).await;
    assert_eq!(node.status("worker-1"), Some(Health::Critical));
    node.health.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_reaper_removes_an_instance_critical_for_longer_than_deregister_after() {
    let node = Node::start();
    // Critical from registration: removed 5 minutes after it, its answers with it.
    node.register(json!({"Name": "batch", "ID": "batch-dead", "Address": "10.1.0.6",
                         "Check": {"TTL": "1h", "DeregisterCriticalServiceAfter": "5m"}}));
    let registered = Instant::now();
    // Passing, with a heartbeat check: stays until it fails.
    node.register(json!({"Name": "batch", "ID": "batch-ok", "Address": "10.1.0.5",
                         "Check": {"TTL": "10m", "Status": "passing", "DeregisterCriticalServiceAfter": "90s"}}));
    node.settle().await;
    assert_eq!(node.health.running(), 2);
    sleep_until(registered + Duration::from_secs(299)).await;
    assert_eq!(
        node.status("batch-dead"),
        Some(Health::Critical),
        "still there 1 s before"
    );
    // The reaper looks again every second at most: gone within a second of the deadline.
    sleep_until(registered + Duration::from_secs(301)).await;
    assert_eq!(node.status("batch-dead"), None, "removed after 5 minutes critical");
    assert_eq!(node.status("batch-ok"), Some(Health::Passing));
    assert_eq!(node.dns_a("batch").await, (ResponseCode::NoError, 1));
    node.settle().await;
    assert_eq!(node.health.running(), 1, "its check stopped with it");

    // A check that turns critical later is timed from then: its TTL expires 10 minutes after its
    // registration, and it goes 90 s after that.
    sleep_until(registered + Duration::from_secs(600) + Duration::from_millis(10)).await;
    assert_eq!(node.status("batch-ok"), Some(Health::Critical));
    sleep_until(registered + Duration::from_secs(600 + 89)).await;
    assert_eq!(
        node.status("batch-ok"),
        Some(Health::Critical),
        "still there 1 s before"
    );
    sleep_until(registered + Duration::from_secs(600 + 91)).await;
    assert_eq!(node.status("batch-ok"), None, "removed 90 s after it turned critical");
    assert_eq!(node.dns_a("batch").await.0, ResponseCode::NXDomain);
    node.settle().await;
    assert_eq!(node.health.running(), 0);
    node.health.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_before_the_reaper_keeps_the_instance() {
    let node = Node::start();
    node.register(json!({"Name": "job", "ID": "job-1", "Address": "10.1.0.7",
                         "Check": {"TTL": "1m", "DeregisterCriticalServiceAfter": "2m"}}));
    let registered = Instant::now();
    node.settle().await;
    // Critical for 119 s, then a heartbeat: the reaper's clock stops, and starts again from zero
    // when the TTL expires a minute later.
    sleep_until(registered + Duration::from_secs(119)).await;
    node.heartbeat("service:job-1");
    sleep_until(registered + Duration::from_secs(200)).await;
    assert_eq!(node.status("job-1"), Some(Health::Critical), "expired again at 179 s");
    sleep_until(registered + Duration::from_secs(119 + 60 + 119)).await;
    assert!(
        node.status("job-1").is_some(),
        "2 minutes after the second expiry, not yet"
    );
    sleep_until(registered + Duration::from_secs(119 + 60 + 121)).await;
    assert_eq!(node.status("job-1"), None);
    node.health.shutdown().await;
}

/// The dashboard's history takes a point every step: the DNS queries of that step (per second)
/// and the instances by health at its end; a service that leaves loses its history.
#[tokio::test(start_paused = true)]
async fn the_history_takes_a_point_every_step_with_that_steps_queries() {
    use sextant::history::{History, POINTS, STEP};
    let node = Node::start();
    node.register(json!({"Name": "web", "ID": "web-1", "Address": "10.1.0.3",
                         "Check": {"TTL": "10m", "Status": "passing"}}));
    node.register(json!({"Name": "web", "ID": "web-2", "Address": "10.1.0.4",
                         "Check": {"TTL": "10m", "Status": "critical"}}));
    node.settle().await;
    let history = History::new(node.registry.clone(), node.dns.stats());
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(history.clone().run(stop.clone()));
    node.settle().await; // the first point, at once
    for _ in 0..60 {
        node.dns_a("web").await;
    }
    sleep(STEP + Duration::from_millis(1)).await;
    let web = history.of("web").expect("web has a history");
    assert_eq!(web.queries.len(), POINTS + 1);
    assert!(
        web.queries[..POINTS - 2].iter().all(Option::is_none),
        "no points before the first"
    );
    assert_eq!(
        web.queries[POINTS - 2],
        Some(0.0),
        "the first point: nothing asked before it"
    );
    assert_eq!(web.queries[POINTS - 1], Some(60.0 / STEP.as_secs_f64()));
    assert_eq!(web.queries[POINTS], Some(0.0), "the step in progress");
    assert_eq!((web.passing[POINTS - 1], web.critical[POINTS - 1]), (Some(1), Some(1)));

    // An hour later the ring has turned: the points are the last hour's, full.
    sleep(STEP * POINTS as u32).await;
    let web = history.of("web").unwrap();
    assert!(web.queries.iter().all(|q| *q == Some(0.0)), "{:?}", web.queries);

    let _ = node.registry.deregister(&InstanceId::parse("web-1").unwrap()).unwrap();
    let _ = node.registry.deregister(&InstanceId::parse("web-2").unwrap()).unwrap();
    sleep(STEP).await;
    assert_eq!(history.of("web"), None, "a service that left has no history");
    stop.cancel();
    sampler.await.unwrap();
}

/// Flap damping to the second: more than `threshold` health changes within the window hold the
/// instance out of DNS; every further change moves the end of the hold; a whole window without a
/// change lets it back.
#[tokio::test(start_paused = true)]
async fn flap_damping_holds_past_the_threshold_and_releases_after_a_stable_window() {
    use sextant::registry::FlapDamping;
    let (registry, _, dns) = crate::common::registry_and_dns(&crate::common::dns_settings());
    registry.damp_flapping(FlapDamping {
        threshold: 3,
        window: Duration::from_secs(60),
    });
    let health = HealthChecker::start(registry.clone(), 16).unwrap();
    let node = Node { registry, health, dns };
    node.register(json!({"Name": "worker", "ID": "worker-1", "Address": "10.1.0.3",
                         "Check": {"TTL": "1h", "Status": "passing"}}));
    node.settle().await;
    let check = CheckId::parse("service:worker-1").unwrap();
    let set = |status: Health| {
        let _ = node.registry.ttl_update(&check, status, "").unwrap();
    };
    let start = Instant::now();
    // Three changes within the window: not held (answered whenever it passes).
    for status in [Health::Critical, Health::Passing, Health::Critical] {
        sleep(Duration::from_secs(10)).await;
        set(status);
    }
    sleep(Duration::from_secs(1)).await;
    assert_eq!(node.registry.flapping(), (0, 0));
    // The fourth: held, though passing.
    sleep_until(start + Duration::from_secs(40)).await;
    set(Health::Passing);
    node.settle().await;
    assert_eq!(node.status("worker-1"), Some(Health::Passing));
    assert_eq!(
        node.dns_a("worker").await,
        (ResponseCode::NoError, 0),
        "held out of DNS"
    );
    assert_eq!(node.registry.flapping(), (1, 1));
    // Two more changes, at 70 s and 80 s: the hold ends a window after the last, at 140 s.
    sleep_until(start + Duration::from_secs(70)).await;
    set(Health::Critical);
    sleep_until(start + Duration::from_secs(80)).await;
    set(Health::Passing);
    sleep_until(start + Duration::from_millis(139_900)).await;
    assert_eq!(
        node.dns_a("worker").await,
        (ResponseCode::NoError, 0),
        "still held at 139.9 s"
    );
    sleep_until(start + Duration::from_millis(140_100)).await;
    node.settle().await;
    assert_eq!(node.dns_a("worker").await, (ResponseCode::NoError, 1), "back at 140 s");
    assert_eq!(node.registry.flapping(), (0, 1), "one hold in all");
    node.health.shutdown().await;
}
