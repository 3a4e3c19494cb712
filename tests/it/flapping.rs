//! Flap damping (`--flap-threshold N --flap-window D`, off by default): an instance whose health
//! changes more than N times within the window is held out of DNS and of `?passing` until it has
//! been stable for a window, counted in the metrics and shown as flapping by the API and the
//! dashboard's list. Here against an HTTP endpoint that flips on every probe.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use sextant::Config;

use crate::common::dns::{addresses, udp};
use crate::common::endpoint::{HttpEndpoint, Mode};
use crate::common::{TestServer, ip, test_config, wait_for};
use crate::metrics::{scrape, value};

async fn entries(server: &TestServer, query: &str) -> Vec<Value> {
    server
        .get_json(&format!("/v1/health/service/pay{query}"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

fn flapping_ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["Flapping"] == json!(true))
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_instance_flipping_on_every_probe_is_held_out_of_dns_until_stable() {
    let server = TestServer::start_with(Config {
        flap_threshold: 3,
        flap_window: Duration::from_secs(4),
        ..test_config()
    })
    .await;
    let steady = HttpEndpoint::start(200).await;
    let flappy = HttpEndpoint::start(200).await;
    for (id, address, endpoint) in [("pay-steady", "10.0.0.1", &steady), ("pay-flappy", "10.0.0.2", &flappy)] {
        server
            .register(json!({"Name": "pay", "ID": id, "Address": address, "Port": 80,
                             "Check": {"HTTP": endpoint.url("/health"), "Interval": "1s"}}))
            .await;
    }
    wait_for("both instances pass and are answered", async || {
        addresses(&udp(server.dns, "pay.service.trading-dc.", RecordType::A).await).len() == 2
    })
    .await;

    // Every probe flips it: after more than three changes within 4 s it is held.
    flappy.set_mode(Mode::Alternate);
    wait_for("pay-flappy shown as flapping", async || {
        flapping_ids(&entries(&server, "").await) == ["pay-flappy"]
    })
    .await;
    // Held while it goes on flipping, passing half the time: never answered, never passing.
    let hits_before = flappy.hits();
    let mut samples = 0;
    while flappy.hits() < hits_before + 3 {
        let answered = addresses(&udp(server.dns, "pay.service.trading-dc.", RecordType::A).await);
        assert_eq!(answered, [ip("10.0.0.1")], "only the steady instance is answered");
        let passing = entries(&server, "?passing").await;
        assert_eq!(passing.len(), 1, "{passing:?}");
        assert_eq!(passing[0]["Service"]["ID"], "pay-steady");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 5, "sampled throughout {samples} times");
    assert!(
        flappy.served().iter().rev().take(3).any(|&s| s == 200),
        "it passed probes meanwhile"
    );
    let metrics = scrape(&server).await;
    assert_eq!(value(&metrics, "sextant_flapping_instances"), 1.0);
    assert_eq!(value(&metrics, "sextant_flap_holds_total"), 1.0);
    let list = server.get_json("/v1/internal/ui/services").await;
    assert_eq!(list[0]["InstancesFlapping"], 1, "{list}");

    // Stable again: back once a whole window has passed without a change.
    flappy.set_mode(Mode::Status);
    let stable_since = std::time::Instant::now();
    wait_for("pay-flappy back in DNS", async || {
        addresses(&udp(server.dns, "pay.service.trading-dc.", RecordType::A).await).len() == 2
    })
    .await;
    assert!(
        stable_since.elapsed() >= Duration::from_secs(3),
        "held for a window after its last change, back after {:?}",
        stable_since.elapsed()
    );
    assert!(flapping_ids(&entries(&server, "").await).is_empty());
    assert_eq!(entries(&server, "?passing").await.len(), 2);
    let metrics = scrape(&server).await;
    assert_eq!(value(&metrics, "sextant_flapping_instances"), 0.0);
    assert_eq!(value(&metrics, "sextant_flap_holds_total"), 1.0, "one hold in all");
    server.stop().await;
}

/// Off by default: Consul's semantics, a flapping instance is answered whenever it passes.
#[tokio::test]
async fn without_a_threshold_nothing_is_held() {
    assert_eq!(Config::default().flap_threshold, 0, "off by default");
    let server = TestServer::start().await;
    let flappy = HttpEndpoint::start(200).await;
    server
        .register(
            json!({"Name": "pay", "ID": "pay-flappy", "Address": "10.0.0.2", "Port": 80,
                         "Check": {"HTTP": flappy.url("/health"), "Interval": "1s"}}),
        )
        .await;
    flappy.set_mode(Mode::Alternate);
    let start = flappy.hits();
    wait_for("six flips", async || flappy.hits() >= start + 6).await;
    wait_for("answered when it passes", async || {
        addresses(&udp(server.dns, "pay.service.trading-dc.", RecordType::A).await) == [ip("10.0.0.2")]
    })
    .await;
    assert!(flapping_ids(&entries(&server, "").await).is_empty());
    assert_eq!(value(&scrape(&server).await, "sextant_flap_holds_total"), 0.0);
    server.stop().await;
}
