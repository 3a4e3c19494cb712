//! Health checks against real local endpoints the tests flip: what the API and DNS show, and when.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::dns::*;
use common::endpoint::{HttpEndpoint, HttpsEndpoint, Mode};
use common::{TestServer, WAIT, ip, wait_for};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A check's status and output as `/v1/agent/checks` reports them.
async fn check(server: &TestServer, id: &str) -> Option<(String, String)> {
    let checks = server.get_json("/v1/agent/checks").await;
    let check = checks.get(id)?;
    Some((
        check["Status"].as_str().unwrap().to_owned(),
        check["Output"].as_str().unwrap().to_owned(),
    ))
}

async fn status_is(server: &TestServer, id: &str, want: &str) -> bool {
    check(server, id).await.is_some_and(|(status, _)| status == want)
}

/// Instance IDs `/v1/health/service/<name>?passing` returns.
async fn passing(server: &TestServer, service: &str) -> Vec<String> {
    let list = server.get_json(&format!("/v1/health/service/{service}?passing")).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
        .collect()
}

async fn dns_a(server: &TestServer, service: &str) -> Vec<IpAddr> {
    addresses(&udp(server.dns, &format!("{service}.service.trading-dc."), RecordType::A).await)
}

async fn dns_srv_ports(server: &TestServer, service: &str) -> Vec<u16> {
    srvs(&udp(server.dns, &format!("{service}.service.trading-dc."), RecordType::SRV).await)
        .into_iter()
        .map(|(port, _, _)| port)
        .collect()
}

#[tokio::test]
async fn http_check_moves_an_instance_out_of_dns_and_back() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    server
        .register(
            json!({"Name": "web", "ID": "web-1", "Address": "10.1.0.1", "Port": 8080,
               "Check": {"HTTP": endpoint.url("/health"), "Interval": "1s", "Timeout": "500ms"}}),
        )
        .await;
    // Checks start critical (Consul): nothing is answered until the first probe passes.
    let (status, _) = check(&server, "service:web-1").await.unwrap();
    assert!(status == "critical" || status == "passing", "{status}");

    wait_for("passing", async || passing(&server, "web").await == ["web-1"]).await;
    assert_eq!(dns_a(&server, "web").await, [ip("10.1.0.1")]);
    assert_eq!(dns_srv_ports(&server, "web").await, [8080]);
    let (_, output) = check(&server, "service:web-1").await.unwrap();
    assert!(output.contains("200 OK") && output.contains("status 200"), "{output}");

    endpoint.set_status(500);
    wait_for("critical", async || {
        status_is(&server, "service:web-1", "critical").await
    })
    .await;
    assert!(passing(&server, "web").await.is_empty());
    let reply = udp(server.dns, "web.service.trading-dc.", RecordType::A).await;
    assert_eq!(
        rcode(&reply),
        ResponseCode::NoError,
        "a service whose instances all fail is NODATA"
    );
    assert!(reply.answers.is_empty() && has_soa(&reply, "trading-dc."));
    assert!(dns_srv_ports(&server, "web").await.is_empty());
    let (_, output) = check(&server, "service:web-1").await.unwrap();
    assert!(output.contains("500"), "{output}");

    // 429 is a warning: still answered in DNS (Consul), but not `?passing`.
    endpoint.set_status(429);
    wait_for("warning", async || status_is(&server, "service:web-1", "warning").await).await;
    assert_eq!(dns_a(&server, "web").await, [ip("10.1.0.1")]);
    assert!(passing(&server, "web").await.is_empty());

    endpoint.set_status(200);
    wait_for("passing again", async || passing(&server, "web").await == ["web-1"]).await;
    assert_eq!(dns_a(&server, "web").await, [ip("10.1.0.1")]);
    assert_eq!(dns_srv_ports(&server, "web").await, [8080]);
    server.stop().await;
}

/// A listener that accepts and closes connections until dropped.
async fn listen(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

#[tokio::test]
async fn tcp_check_follows_the_listener() {
    let server = TestServer::start().await;
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let listener = listen(addr).await;
    server
        .register(json!({"Name": "db", "ID": "db-1", "Address": "10.1.0.2", "Port": 5432,
               "Check": {"TCP": addr.to_string(), "Interval": "1s", "Timeout": "1s"}}))
        .await;
    wait_for("passing", async || status_is(&server, "service:db-1", "passing").await).await;
    assert_eq!(dns_a(&server, "db").await, [ip("10.1.0.2")]);
    let (_, output) = check(&server, "service:db-1").await.unwrap();
    assert!(output.contains("Success"), "{output}");

    listener.abort();
    let _ = listener.await;
    wait_for("critical", async || {
        status_is(&server, "service:db-1", "critical").await
    })
    .await;
    assert!(dns_a(&server, "db").await.is_empty());
    let (_, output) = check(&server, "service:db-1").await.unwrap();
    assert!(output.contains("dial tcp"), "{output}");

    let _listener = listen(addr).await;
    wait_for("passing again", async || {
        status_is(&server, "service:db-1", "passing").await
    })
    .await;
    assert_eq!(dns_a(&server, "db").await, [ip("10.1.0.2")]);
    server.stop().await;
}

#[tokio::test]
async fn ttl_updates_set_status_and_a_missed_heartbeat_expires() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "worker", "ID": "worker-1", "Address": "10.1.0.3",
               "Check": {"TTL": "1s", "Status": "passing"}}))
        .await;
    let id = "service:worker-1";
    for (path, status, output) in [
        ("/v1/agent/check/warn/service:worker-1?note=slow", "warning", "slow"),
        ("/v1/agent/check/fail/service:worker-1?note=down", "critical", "down"),
        ("/v1/agent/check/pass/service:worker-1?note=ok", "passing", "ok"),
    ] {
        let (code, body) = server.put(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(
            check(&server, id).await.unwrap(),
            (status.into(), output.into()),
            "{path}"
        );
    }
    let (code, body) = server
        .put_json(
            "/v1/agent/check/update/service:worker-1",
            &json!({"Status": "passing", "Output": "heartbeat"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    // Heartbeats every 300 ms for 2.5 s (2.5 TTLs): each restarts the TTL, so it never expires.
    let start = Instant::now();
    let mut last_beat = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert!(status_is(&server, id, "passing").await, "expired despite heartbeats");
        last_beat = Instant::now(); // before the request, as the server's TTL restarts on receipt
        let (code, _) = server.put("/v1/agent/check/pass/service:worker-1").await;
        assert_eq!(code, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(dns_a(&server, "worker").await, [ip("10.1.0.3")]);

    // No heartbeat: critical one TTL after the last one, and out of DNS.
    wait_for("expiry", async || status_is(&server, id, "critical").await).await;
    let expired_after = last_beat.elapsed();
    println!("TTL 1s expired {expired_after:?} after the last heartbeat");
    // Never early; how late depends on this machine's load (paused_clock.rs holds the timing
    // to the millisecond).
    assert!(
        expired_after >= Duration::from_millis(950) && expired_after < Duration::from_secs(5),
        "expired {expired_after:?} after the last heartbeat, TTL 1s"
    );
    assert_eq!(check(&server, id).await.unwrap().1, "TTL expired");
    assert!(dns_a(&server, "worker").await.is_empty());

    // The service's next heartbeat brings it back.
    let (code, _) = server.put("/v1/agent/check/pass/service:worker-1").await;
    assert_eq!(code, 200);
    assert_eq!(dns_a(&server, "worker").await, [ip("10.1.0.3")]);

    // A long note is cut to Consul's 4 KiB limit.
    let note = "n".repeat(10_000);
    let (code, _) = server
        .put_json(
            "/v1/agent/check/update/service:worker-1",
            &json!({"Status": "passing", "Output": note}),
        )
        .await;
    assert_eq!(code, 200);
    let output = check(&server, id).await.unwrap().1;
    assert!(
        output.len() <= 4200 && output.starts_with("Captured 4096 of 10000 bytes"),
        "{}",
        output.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn ttl_updates_are_refused_for_probed_checks() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    server
        .register(json!({"Name": "web", "ID": "web-1",
               "Check": {"HTTP": endpoint.url("/"), "Interval": "10s"}}))
        .await;
    let (code, body) = server.put("/v1/agent/check/pass/service:web-1").await;
    assert_eq!(code, 400);
    assert!(body.contains("not a TTL check"), "{body}");
    let (code, _) = server.put("/v1/agent/check/pass/no-such-check").await;
    assert_eq!(code, 404);
    server.stop().await;
}

/// Waits until the endpoint has answered `count` times in a row with `status` at the end.
async fn served_in_a_row(endpoint: &HttpEndpoint, status: u16, count: usize) {
    wait_for(&format!("{count} answers of {status}"), async || {
        let served = endpoint.served();
        served.len() >= count && served[served.len() - count..].iter().all(|s| *s == status)
    })
    .await;
}

#[tokio::test]
async fn consecutive_result_thresholds() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    server
        .register(json!({"Name": "api", "ID": "api-1", "Address": "10.1.0.4",
               "Check": {"HTTP": endpoint.url("/"), "Interval": "1s", "Status": "passing",
                         "FailuresBeforeCritical": 3, "SuccessBeforePassing": 2}}))
        .await;
    let id = "service:api-1";
    served_in_a_row(&endpoint, 200, 1).await;

    endpoint.set_status(500);
    served_in_a_row(&endpoint, 500, 2).await;
    // Well after the second failure was applied, and before the third probe (1 s apart).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(status_is(&server, id, "passing").await, "critical after 2 failures");
    assert_eq!(dns_a(&server, "api").await, [ip("10.1.0.4")]);
    wait_for("critical", async || status_is(&server, id, "critical").await).await;
    let failures = endpoint.served().iter().rev().take_while(|s| **s == 500).count();
    assert!(failures >= 3, "critical after {failures} failures");
    assert!(dns_a(&server, "api").await.is_empty());

    endpoint.set_status(200);
    served_in_a_row(&endpoint, 200, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(status_is(&server, id, "critical").await, "passing after 1 success");
    wait_for("passing", async || status_is(&server, id, "passing").await).await;
    let successes = endpoint.served().iter().rev().take_while(|s| **s == 200).count();
    assert!(successes >= 2, "passing after {successes} successes");
    assert_eq!(dns_a(&server, "api").await, [ip("10.1.0.4")]);
    server.stop().await;
}

#[tokio::test]
async fn deregister_critical_service_after_removes_critical_instances() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "batch", "ID": "batch-ok", "Address": "10.1.0.5",
               "Check": {"TTL": "1m", "Status": "passing", "DeregisterCriticalServiceAfter": "1s"}}))
        .await;
    // Timed from before the request: the server starts the clock when it takes the registration,
    // and the 200 comes only after the fsync, which a busy disk can stretch to hundreds of ms.
    let registered = Instant::now();
    server
        .register(json!({"Name": "batch", "ID": "batch-dead", "Address": "10.1.0.6",
               "Check": {"TTL": "1m", "DeregisterCriticalServiceAfter": "1s"}}))
        .await;
    wait_for("the critical instance to be removed", async || {
        server.get("/v1/agent/service/batch-dead").await.0 == 404
    })
    .await;
    let removed_after = registered.elapsed();
    println!("critical instance removed {removed_after:?} after registration (DeregisterCriticalServiceAfter 1s)");
    // Never early; how late depends on this machine's load (paused_clock.rs holds the timing
    // to the second).
    assert!(
        removed_after >= Duration::from_millis(950) && removed_after < Duration::from_secs(5),
        "removed after {removed_after:?}"
    );
    assert!(
        check(&server, "service:batch-dead").await.is_none(),
        "its check goes with it"
    );
    assert_eq!(dns_a(&server, "batch").await, [ip("10.1.0.5")]);
    wait_for("its check to stop", async || server.app().health().running() == 1).await;

    // A check that fails later is timed from when it turned critical.
    let failed = Instant::now();
    let (code, _) = server.put("/v1/agent/check/fail/service:batch-ok").await;
    assert_eq!(code, 200);
    wait_for("the failed instance to be removed", async || {
        server.get("/v1/agent/service/batch-ok").await.0 == 404
    })
    .await;
    let removed_after = failed.elapsed();
    assert!(
        removed_after >= Duration::from_millis(950) && removed_after < Duration::from_secs(5),
        "removed {removed_after:?} after failing"
    );
    let reply = udp(server.dns, "batch.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&reply), ResponseCode::NXDomain);
    wait_for("no check task left", async || server.app().health().running() == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_hung_endpoint_is_critical_after_the_timeout() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    endpoint.set_mode(Mode::Hang);
    server
        .register(json!({"Name": "slow", "ID": "slow-1",
               "Check": {"HTTP": endpoint.url("/"), "Interval": "5s", "Timeout": "500ms", "Status": "passing"}}))
        .await;
    wait_for("critical", async || {
        status_is(&server, "service:slow-1", "critical").await
    })
    .await;
    let after = endpoint
        .last_hit_at()
        .expect("the probe reached the endpoint")
        .elapsed();
    println!("hung endpoint critical {after:?} after the request arrived (Timeout 500ms)");
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_millis(1000),
        "critical {after:?} after the request arrived"
    );
    let (_, output) = check(&server, "service:slow-1").await.unwrap();
    assert!(output.contains("timed out"), "{output}");
    server.stop().await;
}

#[tokio::test]
async fn http_check_sends_its_request_and_keeps_a_bounded_output() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    endpoint.set_mode(Mode::BigBody);
    server
        .register(json!({"Name": "web", "ID": "web-1",
               "Check": {"HTTP": endpoint.url("/ready"), "Method": "post", "Body": "ping",
                         "Header": {"X-Probe": ["a", "b"]}, "Interval": "1s"}}))
        .await;
    wait_for("passing", async || status_is(&server, "service:web-1", "passing").await).await;
    let seen = endpoint.last_seen();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, "ping");
    let header = |name: &str| -> Vec<String> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(header("x-probe"), ["a", "b"]);
    assert_eq!(header("user-agent"), ["Consul Health Check"]);
    let (_, output) = check(&server, "service:web-1").await.unwrap();
    assert!(
        output.starts_with(&format!("HTTP POST {}: 200 OK", endpoint.url("/ready"))),
        "{output}"
    );
    assert!(output.len() <= 4096, "output is {} bytes", output.len());
    server.stop().await;
}

#[tokio::test]
async fn checks_stop_with_their_instance_and_survive_an_identical_re_registration() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    let body = |n: usize, interval: &str| {
        json!({"Name": "fleet", "ID": format!("fleet-{n}"), "Address": format!("10.2.0.{n}"),
               "Check": {"HTTP": endpoint.url(&format!("/{n}")), "Interval": interval}})
    };
    for n in 0..20 {
        server.register(body(n, "1s")).await;
    }
    let health = server.app().health();
    wait_for("20 check tasks", async || health.running() == 20).await;
    wait_for("all passing", async || passing(&server, "fleet").await.len() == 20).await;

    // The same definition again: the check keeps its state and its task.
    server.register(body(0, "1s")).await;
    assert_eq!(check(&server, "service:fleet-0").await.unwrap().0, "passing");
    // A new definition replaces the task.
    server.register(body(1, "2s")).await;
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(checks["service:fleet-1"]["Interval"], "2s");
    wait_for("the tasks to settle at 20", async || health.running() == 20).await;

    for n in 0..20 {
        let (code, _) = server.put(&format!("/v1/agent/service/deregister/fleet-{n}")).await;
        assert_eq!(code, 200);
    }
    wait_for("every check task to end", async || health.running() == 0).await;
    let hits = endpoint.hits();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(endpoint.hits(), hits, "a removed check is still probed");
    server.stop().await;
}

#[tokio::test]
async fn health_state_lists_checks_by_status() {
    let server = TestServer::start().await;
    server
        .register(json!({"Name": "a", "ID": "a-1", "Check": {"TTL": "1m", "Status": "passing"}}))
        .await;
    server
        .register(json!({"Name": "b", "ID": "b-1", "Check": {"TTL": "1m"}}))
        .await;
    let ids = async |state: &str| -> Vec<String> {
        let list: Value = server.get_json(&format!("/v1/health/state/{state}")).await;
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["CheckID"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("critical").await, ["service:b-1"]);
    assert_eq!(ids("passing").await, ["serfHealth", "service:a-1"]);
    assert!(ids("warning").await.is_empty());
    assert_eq!(ids("any").await, ["serfHealth", "service:a-1", "service:b-1"]);
    let (code, _, body) = server.get("/v1/health/state/sick").await;
    assert_eq!(code, 400);
    assert!(body.contains("passing, warning, critical or any"), "{body}");
    server.stop().await;
}

/// Failure start → gone from DNS, with Interval 1 s: below Interval + Timeout (+ a margin for
/// the query loop), both for an endpoint that fails at once and for one that hangs.
#[tokio::test]
async fn failure_detection_time() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    server
        .register(json!({"Name": "pay", "ID": "pay-1", "Address": "10.1.0.9",
               "Check": {"HTTP": endpoint.url("/"), "Interval": "1s", "Timeout": "1s", "Status": "passing"}}))
        .await;
    let (interval, timeout, margin) = (
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_millis(300),
    );
    served_in_a_row(&endpoint, 200, 1).await;

    let in_dns = async || !dns_a(&server, "pay").await.is_empty();
    for (how, fail) in [("500", Mode::Status), ("hang", Mode::Hang)] {
        assert!(in_dns().await);
        endpoint.set_status(500);
        endpoint.set_mode(fail);
        let failed = Instant::now();
        while in_dns().await {
            assert!(failed.elapsed() < 2 * WAIT, "never left DNS");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let detected = failed.elapsed();
        println!("failure ({how}) detected in {detected:?} (Interval 1s, Timeout 1s)");
        assert!(detected < interval + timeout + margin, "{how}: {detected:?}");

        endpoint.set_status(200);
        endpoint.set_mode(Mode::Status);
        let recovered = Instant::now();
        wait_for("recovery", async || in_dns().await).await;
        println!("recovery seen in DNS after {:?}", recovered.elapsed());
        // A hung probe may still be waiting out its timeout when the endpoint recovers.
        assert!(recovered.elapsed() < interval + timeout + margin);
    }
    server.stop().await;
}

#[tokio::test]
async fn an_instance_is_as_healthy_as_its_worst_check() {
    let server = TestServer::start().await;
    let endpoint = HttpEndpoint::start(200).await;
    server
        .register(json!({"Name": "cache", "ID": "cache-1", "Address": "10.1.0.7",
               "Checks": [{"HTTP": endpoint.url("/"), "Interval": "1s"},
                          {"TTL": "1m", "Status": "passing"}]}))
        .await;
    wait_for("passing", async || passing(&server, "cache").await == ["cache-1"]).await;
    assert_eq!(dns_a(&server, "cache").await, [ip("10.1.0.7")]);

    let (code, _) = server.put("/v1/agent/check/warn/service:cache-1:2").await;
    assert_eq!(code, 200);
    assert!(passing(&server, "cache").await.is_empty(), "warning is not passing");
    assert_eq!(dns_a(&server, "cache").await, [ip("10.1.0.7")], "warning stays in DNS");

    endpoint.set_status(503);
    wait_for("critical", async || {
        status_is(&server, "service:cache-1:1", "critical").await
    })
    .await;
    assert!(
        dns_a(&server, "cache").await.is_empty(),
        "one critical check takes it out"
    );
    let (code, _) = server.put("/v1/agent/check/pass/service:cache-1:2").await;
    assert_eq!(code, 200);
    assert!(
        dns_a(&server, "cache").await.is_empty(),
        "still critical by its HTTP check"
    );
    server.stop().await;
}

#[tokio::test]
async fn dns_only_passing_drops_warning_instances() {
    let mut config = common::test_config();
    config.dns_only_passing = true;
    let server = TestServer::start_with(config).await;
    server
        .register(json!({"Name": "q", "ID": "q-1", "Address": "10.1.0.8", "Check": {"TTL": "1m", "Status": "passing"}}))
        .await;
    assert_eq!(dns_a(&server, "q").await, [ip("10.1.0.8")]);
    let (code, _) = server.put("/v1/agent/check/warn/service:q-1").await;
    assert_eq!(code, 200);
    assert!(dns_a(&server, "q").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn tls_skip_verify_accepts_a_self_signed_certificate() {
    let server = TestServer::start().await;
    let endpoint = HttpsEndpoint::start().await;
    for (id, skip) in [("strict", false), ("lenient", true)] {
        server
            .register(json!({"Name": "secure", "ID": id, "Address": "10.1.0.10",
                   "Check": {"HTTP": endpoint.url(), "Interval": "1s", "TLSSkipVerify": skip}}))
            .await;
    }
    wait_for("the lenient check to pass", async || {
        status_is(&server, "service:lenient", "passing").await
    })
    .await;
    let (_, output) = check(&server, "service:lenient").await.unwrap();
    assert!(output.contains("200 OK") && output.contains("secure"), "{output}");
    // The strict check has run by now too (same interval), and refused the certificate.
    wait_for("the strict check to report", async || {
        check(&server, "service:strict")
            .await
            .is_some_and(|(_, output)| !output.is_empty())
    })
    .await;
    let (status, output) = check(&server, "service:strict").await.unwrap();
    assert_eq!(status, "critical");
    assert!(output.to_lowercase().contains("certificate"), "{output}");
    server.stop().await;
}

/// A gRPC check asks the standard health service (a tonic health server started here): SERVING
/// is passing, NOT_SERVING, an unknown service or a server that is gone are critical.
#[tokio::test]
async fn grpc_check_follows_the_health_service() {
    use tonic_health::ServingStatus;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status("orders", ServingStatus::Serving).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    let server = TestServer::start().await;
    server
        .register(
            json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80,
                         "Checks": [{"CheckID": "orders-grpc", "GRPC": format!("{addr}/orders"), "Interval": "1s"}]}),
        )
        .await;
    server
        .register(
            json!({"Name": "other", "ID": "other-1", "Address": "10.0.0.2", "Port": 80,
                         "Checks": [{"CheckID": "other-grpc", "GRPC": format!("{addr}/nosuch"), "Interval": "1s"}]}),
        )
        .await;
    wait_for("SERVING: passing and in DNS", async || {
        dns_a(&server, "orders").await == [ip("10.0.0.1")]
    })
    .await;
    let (_, output) = check(&server, "orders-grpc").await.unwrap();
    assert_eq!(output, format!("gRPC check {addr}/orders: success"));
    let checks = server.get_json("/v1/agent/checks").await;
    assert_eq!(checks["orders-grpc"]["Type"], "grpc");
    assert_eq!(checks["orders-grpc"]["Definition"]["GRPC"], format!("{addr}/orders"));
    wait_for("a service the server does not know: critical, and why", async || {
        check(&server, "other-grpc")
            .await
            .is_some_and(|(status, output)| status == "critical" && output.contains("NotFound"))
    })
    .await;

    reporter.set_service_status("orders", ServingStatus::NotServing).await;
    wait_for("NOT_SERVING: out of DNS", async || {
        dns_a(&server, "orders").await.is_empty()
    })
    .await;
    assert!(
        check(&server, "orders-grpc")
            .await
            .unwrap()
            .1
            .ends_with("status NOT_SERVING")
    );
    reporter.set_service_status("orders", ServingStatus::Serving).await;
    wait_for("SERVING again: back", async || {
        dns_a(&server, "orders").await == [ip("10.0.0.1")]
    })
    .await;

    // Stopped: its connections close, and new ones are refused.
    let _ = stop.send(());
    let _ = grpc_server.await;
    wait_for("the server gone: critical", async || {
        dns_a(&server, "orders").await.is_empty()
    })
    .await;
    assert!(check(&server, "orders-grpc").await.unwrap().1.contains("rpc error"));
    let metrics = server.get("/metrics").await.2;
    assert!(
        metrics.contains(r#"sextant_probe_seconds_count{kind="grpc",result="passing"}"#),
        "{metrics}"
    );
    server.stop().await;
}
