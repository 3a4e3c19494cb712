//! `GET /metrics`: what DNS was asked and answered (by transport, type, code, service), the
//! registry's size and checks, check transitions, HTTP requests and open blocking queries, in
//! Prometheus' text format, counted from real queries over real sockets.

use crate::common;

use std::collections::HashMap;

use common::dns::{tcp, udp};
use common::{TestServer, test_config, wait_for};
use hickory_proto::rr::RecordType;
use serde_json::json;
use sextant::Config;

/// The samples of an exposition: `name{labels}` (labels as written) → value.
pub(crate) fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            (
                key.to_string(),
                value.parse().unwrap_or_else(|_| panic!("not a number: {l}")),
            )
        })
        .collect()
}

pub(crate) async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let (status, headers, body) = server.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    samples(&body)
}

pub(crate) fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = samples.keys().collect();
        keys.sort();
        panic!("no sample {key}; there are: {keys:#?}")
    })
}

async fn register_fixture(server: &TestServer) {
    for (id, address) in [("web-1", "10.0.0.1"), ("web-2", "10.0.0.2")] {
        server
            .register(json!({"Name": "web", "ID": id, "Address": address, "Port": 80}))
            .await;
    }
    // A TTL check without a status starts critical: a known service with no healthy instance.
    server
        .register(json!({"Name": "down", "ID": "down-1", "Address": "10.0.0.3", "Port": 80, "Check": {"TTL": "1h"}}))
        .await;
}

#[tokio::test]
async fn metrics_count_what_dns_and_the_api_did() {
    let server = TestServer::start().await;
    register_fixture(&server).await;
    for _ in 0..5 {
        udp(server.dns, "web.service.trading-dc.", RecordType::A).await;
    }
    for _ in 0..2 {
        tcp(server.dns, "web.service.trading-dc.", RecordType::SRV).await;
    }
    for _ in 0..3 {
        udp(server.dns, "down.service.trading-dc.", RecordType::A).await;
    }
    udp(server.dns, "nosuch.service.trading-dc.", RecordType::A).await;

    let m = scrape(&server).await;
    let dns = |transport: &str, qtype: &str, rcode: &str| {
        value(
            &m,
            &format!(r#"sextant_dns_queries_total{{transport="{transport}",qtype="{qtype}",rcode="{rcode}"}}"#),
        )
    };
    assert_eq!(dns("udp", "A", "NOERROR"), 8.0);
    assert_eq!(dns("tcp", "SRV", "NOERROR"), 2.0);
    assert_eq!(dns("udp", "A", "NXDOMAIN"), 1.0);
    assert_eq!(value(&m, r#"sextant_dns_service_queries_total{service="web"}"#), 7.0);
    assert_eq!(value(&m, r#"sextant_dns_service_queries_total{service="down"}"#), 3.0);
    assert_eq!(value(&m, r#"sextant_dns_unhealthy_answers_total{service="down"}"#), 3.0);
    assert!(!m.contains_key(r#"sextant_dns_unhealthy_answers_total{service="web"}"#));
    assert_eq!(value(&m, "sextant_services"), 2.0);
    assert_eq!(value(&m, r#"sextant_instances{health="passing"}"#), 2.0);
    assert_eq!(value(&m, r#"sextant_instances{health="critical"}"#), 1.0);
    assert_eq!(value(&m, r#"sextant_checks{kind="ttl",status="critical"}"#), 1.0);
    let registered = r#"sextant_http_requests_total{route="/v1/agent/service/register",method="PUT",status="200"}"#;
    assert_eq!(value(&m, registered), 3.0);

    // A check's status change, and a blocking query while it waits.
    let (status, _) = server.put("/v1/agent/check/pass/service:down-1").await;
    assert_eq!(status, 200);
    let index = server.get("/v1/health/service/web").await.1["x-consul-index"]
        .to_str()
        .unwrap()
        .to_string();
    let blocked = {
        let (http, url) = (
            server.http.clone(),
            server.url(&format!("/v1/health/service/web?index={index}&wait=30s")),
        );
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
    };
    wait_for("the blocking query to be counted", async || {
        scrape(&server).await.get("sextant_blocking_queries") == Some(&1.0)
    })
    .await;
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, r#"sextant_check_transitions_total{from="critical",to="passing"}"#),
        1.0
    );
    assert_eq!(value(&m, r#"sextant_instances{health="passing"}"#), 3.0);
    server
        .register(json!({"Name": "web", "ID": "web-3", "Address": "10.0.0.4", "Port": 80}))
        .await;
    assert_eq!(blocked.await.unwrap().unwrap(), 200);
    wait_for("the blocking query to end", async || {
        scrape(&server).await.get("sextant_blocking_queries") == Some(&0.0)
    })
    .await;

    // The write side: every registration timed from its commit to its answers, the commits
    // themselves, and a failing result to its instance out of DNS.
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, "sextant_write_published_seconds_count"),
        4.0,
        "four registrations"
    );
    assert!(value(&m, "sextant_store_commit_seconds_count") >= 1.0);
    assert!(
        value(&m, "sextant_store_commit_changes_sum") >= 4.0,
        "each registration committed"
    );
    assert_eq!(value(&m, "sextant_failure_published_seconds_count"), 0.0);
    let (status, _) = server.put("/v1/agent/check/fail/service:down-1").await;
    assert_eq!(status, 200);
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, "sextant_failure_published_seconds_count"),
        1.0,
        "down-1 left DNS"
    );
    assert_eq!(
        value(&m, r#"sextant_failure_published_seconds_bucket{le="1"}"#),
        1.0,
        "within a second"
    );

    // Where Consul's tools ask, in the same format; Consul's JSON is not served.
    let (status, _, body) = server.get("/v1/agent/metrics?format=prometheus").await;
    assert_eq!(status, 200);
    assert!(body.contains("sextant_dns_queries_total"), "{body}");
    let (status, _, body) = server.get("/v1/agent/metrics").await;
    assert_eq!(status, 400);
    assert!(body.contains("format=prometheus"), "{body}");
}

/// Past `--metrics-service-limit`, the services asked least share one label.
#[tokio::test]
async fn per_service_counts_are_bounded() {
    let server = TestServer::start_with(Config {
        metrics_service_limit: 1,
        ..test_config()
    })
    .await;
    register_fixture(&server).await;
    for _ in 0..4 {
        udp(server.dns, "web.service.trading-dc.", RecordType::A).await;
    }
    for _ in 0..2 {
        udp(server.dns, "down.service.trading-dc.", RecordType::SRV).await;
    }
    let m = scrape(&server).await;
    assert_eq!(value(&m, r#"sextant_dns_service_queries_total{service="web"}"#), 4.0);
    assert_eq!(value(&m, r#"sextant_dns_service_queries_total{service="_other"}"#), 2.0);
    assert_eq!(
        value(&m, r#"sextant_dns_unhealthy_answers_total{service="_other"}"#),
        2.0
    );
    assert!(!m.keys().any(|k| k.contains(r#"service="down""#)));
}

/// A real scraper (VictoriaMetrics, which reads Prometheus' text format and its scrape
/// configuration) scrapes `/metrics` and stores what DNS counted.
#[tokio::test]
async fn a_prometheus_scraper_reads_the_metrics() {
    let server = TestServer::start().await;
    register_fixture(&server).await;
    for _ in 0..3 {
        udp(server.dns, "web.service.trading-dc.", RecordType::A).await;
    }
    let config = format!(
        "scrape_configs:\n  - job_name: sextant\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{}\"]\n",
        server.app().http_addr()
    );
    // Its queries leave out the last 30 s of samples by default (still arriving): not here.
    let vm = common::victoria::VictoriaMetrics::start(&config, &["-search.latencyOffset=0s".into()]);
    let query = format!(
        "{}/api/v1/query?query=sextant_dns_service_queries_total%7Bservice%3D%22web%22%7D",
        vm.base
    );
    let stored = async || -> Option<String> {
        let reply: serde_json::Value = server.http.get(&query).send().await.ok()?.json().await.ok()?;
        Some(reply["data"]["result"][0]["value"][1].as_str()?.to_owned())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stored().await.as_deref() != Some("3") {
        assert!(
            std::time::Instant::now() < deadline,
            "not scraped within 30 s; its log:\n{}",
            vm.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Probes are timed by kind and result, and a failing probe's instance is timed out of DNS.
#[tokio::test]
async fn probes_are_timed_by_kind_and_result() {
    let server = TestServer::start().await;
    let endpoint = common::endpoint::HttpEndpoint::start(200).await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80,
                         "Checks": [{"CheckID": "web-http", "HTTP": endpoint.url("/health"), "Interval": "1s"},
                                    {"CheckID": "web-tcp", "TCP": endpoint.addr.to_string(), "Interval": "1s"}]}))
        .await;
    let count = |m: &HashMap<String, f64>, kind: &str, result: &str| {
        m.get(&format!(
            r#"sextant_probe_seconds_count{{kind="{kind}",result="{result}"}}"#
        ))
        .copied()
        .unwrap_or(0.0)
    };
    wait_for("an HTTP and a TCP probe passing", async || {
        let m = scrape(&server).await;
        count(&m, "http", "passing") >= 1.0 && count(&m, "tcp", "passing") >= 1.0
    })
    .await;
    endpoint.set_status(500);
    wait_for("a failing HTTP probe, and its instance out of DNS", async || {
        let m = scrape(&server).await;
        count(&m, "http", "critical") >= 1.0 && m.get("sextant_failure_published_seconds_count") == Some(&1.0)
    })
    .await;
    let m = scrape(&server).await;
    assert_eq!(count(&m, "tcp", "critical"), 0.0, "the port still accepts");
    assert!(value(&m, r#"sextant_probe_seconds_sum{kind="http",result="critical"}"#) > 0.0);
    server.stop().await;
}
