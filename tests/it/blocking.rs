//! Consul's blocking queries: `?index=N&wait=D` returns as soon as what is watched changes past
//! N, or when the wait runs out, and changes elsewhere do not wake it.

use crate::common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

/// A GET's status, `X-Consul-Index` and JSON body.
async fn get(server: &TestServer, path: &str) -> (u16, u64, Value) {
    let response = server
        .http
        .get(server.url(path))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let index = response
        .headers()
        .get("X-Consul-Index")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    for header in ["X-Consul-KnownLeader", "X-Consul-LastContact"] {
        assert!(
            status != 200 || response.headers().contains_key(header),
            "{path}: {header}"
        );
    }
    let text = response.text().await.unwrap();
    (
        status,
        index,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn instance(id: &str, service: &str) -> Value {
    json!({"Name": service, "ID": id, "Address": "10.0.0.1", "Port": 80,
           "Check": {"CheckID": format!("{id}-ttl"), "TTL": "1h", "Status": "passing"}})
}

/// A GET running in the background (a blocking query waiting for a change).
fn spawn_get(server: &std::sync::Arc<TestServer>, path: String) -> tokio::task::JoinHandle<(u16, u64, Value)> {
    let server = server.clone();
    tokio::spawn(async move { get(&server, &path).await })
}

/// Whether a spawned blocking query is still waiting after a moment.
async fn still_waiting<T>(query: &tokio::task::JoinHandle<T>) -> bool {
    tokio::time::sleep(Duration::from_millis(300)).await;
    !query.is_finished()
}

#[tokio::test]
async fn a_blocking_query_returns_on_a_change_of_its_service_only() {
    let server = std::sync::Arc::new(TestServer::start().await);
    server.register(instance("orders-1", "orders")).await;
    for path in [
        "/v1/health/service/orders",
        "/v1/catalog/service/orders",
        "/v1/health/checks/orders",
    ] {
        let (_, index, _) = get(&server, path).await;
        let started = Instant::now();
        let query = spawn_get(&server, format!("{path}?index={index}&wait=30s"));
        assert!(still_waiting(&query).await, "{path}: nothing changed yet");
        // Another service changing does not wake it.
        server.register(instance(&format!("quotes-{index}"), "quotes")).await;
        assert!(still_waiting(&query).await, "{path}: woken by another service");
        // Its own does, at once.
        server.register(instance(&format!("orders-{index}"), "orders")).await;
        let (status, new_index, body) = query.await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        assert!(new_index > index, "{path}: {index} → {new_index}");
        assert!(body.as_array().unwrap().len() >= 2, "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }

    // A health change wakes `/v1/health/service` (with `?passing`, as watchers ask).
    let (_, index, body) = get(&server, "/v1/health/service/orders?passing").await;
    let before = body.as_array().unwrap().len();
    let query = spawn_get(&server, format!("/v1/health/service/orders?passing&index={index}"));
    assert!(still_waiting(&query).await);
    let (status, _) = server.put("/v1/agent/check/fail/orders-1-ttl").await;
    assert_eq!(status, 200);
    let (_, new_index, body) = query.await.unwrap();
    assert!(new_index > index);
    assert_eq!(
        body.as_array().unwrap().len(),
        before - 1,
        "the failed instance left ?passing"
    );
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn the_catalog_wakes_on_registrations_not_on_health() {
    let server = std::sync::Arc::new(TestServer::start().await);
    server.register(instance("orders-1", "orders")).await;
    let (_, index, _) = get(&server, "/v1/catalog/services").await;
    let query = spawn_get(&server, format!("/v1/catalog/services?index={index}&wait=30s"));
    let (status, _) = server.put("/v1/agent/check/warn/orders-1-ttl").await;
    assert_eq!(status, 200);
    assert!(
        still_waiting(&query).await,
        "a health change does not change the catalog"
    );
    server.register(instance("web-1", "web")).await;
    let (_, new_index, body) = query.await.unwrap();
    assert!(new_index > index);
    assert!(body.get("web").is_some(), "{body}");

    // Deregistration too.
    let query = spawn_get(&server, format!("/v1/catalog/services?index={new_index}"));
    assert!(still_waiting(&query).await);
    let (status, _) = server.put("/v1/agent/service/deregister/web-1").await;
    assert_eq!(status, 200);
    let (_, _, body) = query.await.unwrap();
    assert!(body.get("web").is_none(), "{body}");
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn waits_run_out_and_unknown_services_can_be_watched() {
    let server = std::sync::Arc::new(TestServer::start().await);
    server.register(instance("orders-1", "orders")).await;
    let (_, index, _) = get(&server, "/v1/health/service/orders").await;
    let started = Instant::now();
    let (status, same, body) = get(&server, &format!("/v1/health/service/orders?index={index}&wait=300ms")).await;
    let waited = started.elapsed();
    assert_eq!((status, same), (200, index));
    assert_eq!(body.as_array().unwrap().len(), 1);
    // 300 ms, plus at most 1/16 of it as jitter, plus the request itself.
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // An index already passed: at once. index=0: at once.
    for path in [
        format!("/v1/health/service/orders?index={}", index - 1),
        "/v1/health/service/orders?index=0&wait=30s".to_owned(),
    ] {
        let started = Instant::now();
        assert_eq!(get(&server, &path).await.0, 200);
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }

    // A service nobody registered yet: the watch returns when it appears.
    let (_, index, body) = get(&server, "/v1/health/service/payments").await;
    assert_eq!(body, json!([]));
    let query = spawn_get(&server, format!("/v1/health/service/payments?index={index}"));
    assert!(still_waiting(&query).await);
    server.register(instance("payments-1", "payments")).await;
    let (_, _, body) = query.await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 1);

    // Bad parameters are a 400 that says which.
    let (status, _, body) = get(&server, "/v1/health/service/orders?index=abc").await;
    assert_eq!(status, 400);
    assert!(body.as_str().unwrap().contains("index"), "{body}");
    let (status, _, body) = get(&server, "/v1/health/service/orders?index=5&wait=soon").await;
    assert_eq!(status, 400);
    assert!(body.as_str().unwrap().contains("wait"), "{body}");
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn a_stopping_server_answers_its_blocking_queries_at_once() {
    let server = TestServer::start().await;
    server.register(instance("orders-1", "orders")).await;
    let (_, index, _) = get(&server, "/v1/health/service/orders").await;
    let (http, url) = (
        server.http.clone(),
        server.url(&format!("/v1/health/service/orders?index={index}&wait=10m")),
    );
    let query = tokio::spawn(async move {
        let response = http.get(url).timeout(Duration::from_secs(60)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    assert!(still_waiting(&query).await);
    // Graceful shutdown waits for requests in flight: a parked watcher must not hold it for 10m.
    let started = Instant::now();
    server.stop().await;
    let stopped_in = started.elapsed();
    assert!(stopped_in < Duration::from_secs(5), "stopped in {stopped_in:?}");
    let (status, body) = query.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("orders-1"), "{body}");
}

/// Reads of names nobody registered, blocking or not, leave no channel behind; a blocking query
/// whose client went away takes its channel with it.
#[tokio::test]
async fn reads_and_closed_blocking_queries_leave_no_channel() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let registry = server.app().registry().clone();
    for n in 0..300 {
        for kind in ["health/service", "catalog/service", "health/checks"] {
            let (status, _, _) = get(&server, &format!("/v1/{kind}/unknown-{n}")).await;
            assert_eq!(status, 200);
        }
    }
    assert_eq!(registry.watched_services(), 0, "plain reads subscribed");

    // Blocking queries whose clients give up after 3 s: time for all 200 to be waiting first
    // (one thread serves them and the test, in a debug build, on a busy machine).
    let index = registry.index();
    let short = reqwest::Client::new();
    let queries: Vec<_> = (0..200)
        .map(|n| {
            let request = short
                .get(server.url(&format!("/v1/health/service/gone-{n}?index={index}&wait=10m")))
                .timeout(Duration::from_secs(3));
            tokio::spawn(async move { request.send().await.is_err() })
        })
        .collect();
    common::wait_for("the blocking queries to wait", async || {
        registry.watched_services() == 200
    })
    .await;
    for query in queries {
        assert!(query.await.unwrap(), "the client timed out");
    }
    common::wait_for("every channel to go with its watcher", async || {
        registry.watched_services() == 0
    })
    .await;
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

/// The same through the real binary, in memory: 50,000 reads of distinct unknown names and 2,000
/// blocking queries that were closed leave the server's resident memory where it was (each name
/// cost 430 bytes when every read left a channel behind, and the queries' connections stayed
/// with the allocator when the server went idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_do_not_grow_memory() {
    let data = common::tools::TempDir::new("watch-memory");
    let running = common::process::start_binary(&common::repo_zones(), &data.0);
    let pid = running.child.0.id();
    let base = format!("http://{}", running.http);
    let client = reqwest::Client::new();
    let reads = |from: usize, to: usize| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for lane in 0..8 {
                let (client, base) = (client.clone(), base.clone());
                tasks.spawn(async move {
                    for n in (from + lane..to).step_by(8) {
                        let kind = ["health/service", "catalog/service", "health/checks"][n % 3];
                        let url = format!("{base}/v1/{kind}/never-registered-{n:08}");
                        let response = client.get(url).send().await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.bytes().await.unwrap();
                    }
                });
            }
            tasks.join_all().await;
        }
    };
    reads(0, 5_000).await; // warm up: connections, buffers, the allocator's caches
    let before = common::process::resident_bytes(pid);
    reads(5_000, 55_000).await;
    let after_reads = common::process::resident_bytes(pid);
    assert!(
        after_reads < before + (4 << 20),
        "50,000 reads of unknown names grew the server from {} KB to {} KB",
        before >> 10,
        after_reads >> 10
    );
    let short = reqwest::Client::new();
    let mut blocked = tokio::task::JoinSet::new();
    for n in 0..2_000 {
        let request = short
            .get(format!("{base}/v1/health/service/closed-{n:08}?index=999999&wait=10m"))
            .timeout(Duration::from_millis(500));
        blocked.spawn(async move { request.send().await.is_err() });
    }
    assert!(blocked.join_all().await.into_iter().all(|timed_out| timed_out));
    reads(55_000, 56_000).await; // the server has seen the closed connections by now
    // Memory freed is given back to the system over about 10 s (jemalloc's decay).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = common::process::resident_bytes(pid);
    while after > before + (6 << 20) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = common::process::resident_bytes(pid);
    }
    let grown = after.saturating_sub(before);
    assert!(
        grown < 6 << 20,
        "resident memory grew by {} KB (from {} KB to {} KB)",
        grown >> 10,
        before >> 10,
        after >> 10
    );
}

/// Blocking queries waiting at once are bounded (`--http-max-blocking-queries`): one more gets a
/// 503 that names the flag, a plain read is still answered, and a slot freed is taken again.
#[tokio::test]
async fn blocking_queries_waiting_at_once_are_bounded() {
    let server = TestServer::start_with(sextant::Config {
        http_max_blocking_queries: 2,
        ..common::test_config()
    })
    .await;
    server.register(instance("web-1", "web")).await;
    let (_, index, _) = get(&server, "/v1/health/service/web").await;
    let url = server.url(&format!("/v1/health/service/web?index={index}&wait=30s"));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (server.http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    common::wait_for("two blocking queries waiting", async || {
        let metrics = server.get("/metrics").await.2;
        metrics.lines().any(|l| l == "sextant_blocking_queries 2")
    })
    .await;
    let (status, _, body) = get(&server, &format!("/v1/health/service/web?index={index}&wait=30s")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("--http-max-blocking-queries"), "{body}");
    assert_eq!(
        get(&server, "/v1/health/service/web").await.0,
        200,
        "a plain read is answered"
    );
    // A change answers the two; their slots are free again.
    server.register(instance("web-2", "web")).await;
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), 200);
    }
    let (_, index, _) = get(&server, "/v1/health/service/web").await;
    let (status, _, _) = get(&server, &format!("/v1/health/service/web?index={index}&wait=100ms")).await;
    assert_eq!(status, 200);
    server.stop().await;
}
