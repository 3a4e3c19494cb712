//! The registry kept in a real 3-member etcd cluster (`--etcd`): the real binary, killed with
//! SIGKILL and restarted, serves every registration it acknowledged; losing one member loses
//! nothing and refuses nothing; servers on one prefix share one registry (written through one, answered by
//! another, blocking queries and indexes across them); etcd over TLS with client certificates.

use crate::common;

use std::time::Duration;

use common::dns::{addresses, rcode, udp};
use common::etcd::EtcdCluster;
use common::on_etcd::{answers, client, get, kill_9, register, start, start_named};
use common::process::start_binary_with;
use common::{repo_zones, temp_data_dir};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

#[tokio::test]
async fn the_registry_in_etcd_survives_kill_9_and_the_loss_of_a_member() {
    let mut cluster = EtcdCluster::start(3);
    let server = start(&cluster, "/survive/");
    assert!(
        server.startup_log.iter().any(|l| l.contains("registry kept in etcd")),
        "the log says which backend: {:?}",
        server.startup_log
    );
    for i in 0..150 {
        let (code, body) = register(&server, i).await;
        assert_eq!(code, 200, "{body}");
    }
    kill_9(server);
    let server = start(&cluster, "/survive/");
    for i in 0..150 {
        assert!(answers(&server, i).await, "svc-{i} after a restart");
    }
    // One member of three gone: the others are a quorum, and writes go on.
    cluster.kill_member(0);
    for i in 150..200 {
        let (code, body) = register(&server, i).await;
        assert_eq!(code, 200, "{body} with one etcd member down");
    }
    kill_9(server);
    let server = start(&cluster, "/survive/");
    for i in 0..200 {
        assert!(answers(&server, i).await, "svc-{i} after the second restart");
    }
}

#[tokio::test]
async fn servers_on_one_prefix_share_the_registry_through_etcd() {
    let cluster = EtcdCluster::start(3);
    let a = start_named(&cluster, "/shared/", "sextant-a");
    let b = start_named(&cluster, "/shared/", "sextant-b");
    // Registered through A, answered by B: how long from A's 200 to B's first answer.
    let mut delays = Vec::new();
    for i in 0..200 {
        let (code, body) = register(&a, i).await;
        assert_eq!(code, 200, "{body}");
        let acknowledged = std::time::Instant::now();
        let deadline = acknowledged + Duration::from_secs(5);
        while !answers(&b, i).await {
            assert!(std::time::Instant::now() < deadline, "svc-{i} never reached B");
        }
        delays.push(acknowledged.elapsed());
    }
    delays.sort();
    println!(
        "registered through A -> answered by B over DNS: p50 {:?}, p99 {:?}, max {:?} (200 registrations)",
        delays[100], delays[197], delays[199]
    );
    // A timed each of its writes from etcd's acknowledgement to its return through the watch.
    let scrape = |server: &common::process::Running| {
        let url = format!("http://{}/metrics", server.http);
        async move { crate::metrics::samples(&reqwest::get(url).await.unwrap().text().await.unwrap()) }
    };
    let (metrics_a, metrics_b) = (scrape(&a).await, scrape(&b).await);
    let value = crate::metrics::value;
    assert_eq!(value(&metrics_a, "sextant_write_published_seconds_count"), 200.0);
    assert_eq!(
        value(&metrics_b, "sextant_write_published_seconds_count"),
        0.0,
        "B made no write"
    );
    assert_eq!(value(&metrics_a, "sextant_etcd_reachable"), 1.0);
    assert_eq!(value(&metrics_b, "sextant_etcd_stale_seconds"), 0.0);
    // Node maintenance is refused, saying why: the servers share their services, which are on
    // no one server's node.
    let refused = reqwest::Client::new()
        .put(format!("http://{}/v1/agent/maintenance?enable=true", a.http))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 501);
    assert!(refused.text().await.unwrap().contains("service/maintenance"));
    println!(
        "A: acknowledged by etcd -> back through the watch and published: mean {:.2} ms",
        1000.0 * value(&metrics_a, "sextant_write_published_seconds_sum") / 200.0
    );
    // Both servers count in etcd revisions: the same index for the same service on each.
    let (index_a, _) = get(&a, "/v1/health/service/svc-7").await;
    let (index_b, _) = get(&b, "/v1/health/service/svc-7").await;
    assert_eq!(index_a, index_b, "one index space");
    // A blocking query on B wakes on a change made through A ...
    let waiting = {
        let b_http = b.http;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = client()
                .get(format!(
                    "http://{b_http}/v1/health/service/svc-7?index={index_b}&wait=10s"
                ))
                .send()
                .await
                .unwrap();
            let index: u64 = response.headers()["x-consul-index"].to_str().unwrap().parse().unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            (started.elapsed(), index, body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed = json!({"Name": "svc-7", "ID": "svc-7", "Address": "10.9.9.9", "Port": 81});
    let response = client()
        .put(format!("http://{}/v1/agent/service/register", a.http))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (waited, woke_at, body) = waiting.await.unwrap();
    assert!(waited < Duration::from_secs(9), "woke on the change, after {waited:?}");
    assert!(woke_at > index_b);
    assert_eq!(body[0]["Service"]["Address"], "10.9.9.9", "{body}");
    // ... with an index A takes as its own: nothing changed since, so A holds the query.
    let started = std::time::Instant::now();
    let response = client()
        .get(format!(
            "http://{}/v1/health/service/svc-7?index={woke_at}&wait=1s",
            a.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-consul-index"].to_str().unwrap(),
        woke_at.to_string()
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "A waited on B's index");
    // A deregistration through B leaves A's answers.
    let response = client()
        .put(format!("http://{}/v1/agent/service/deregister/svc-3", b.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    common::wait_for("svc-3 gone from A", async || {
        rcode(&udp(a.dns, "svc-3.service.trading-dc.", RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;
    // A server that starts later loads what the others wrote.
    let c = start_named(&cluster, "/shared/", "sextant-c");
    assert!(answers(&c, 150).await);
    let (_, services) = get(&c, "/v1/catalog/services").await;
    assert_eq!(
        services.as_object().unwrap().len(),
        199,
        "svc-0 .. svc-199 but svc-3: {services}"
    );
}

#[tokio::test]
async fn writes_to_one_instance_queued_together_are_all_taken() {
    let cluster = EtcdCluster::start(3);
    let server = start(&cluster, "/together/");
    let body = json!({"Name": "twice", "ID": "twice-1", "Port": 80,
                      "Checks": [{"CheckID": "twice-a", "TTL": "1m"}, {"CheckID": "twice-b", "TTL": "1m"}]});
    let response = client()
        .put(format!("http://{}/v1/agent/service/register", server.http))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Updates to both checks at once: each a write to the same instance, several in one group
    // commit (etcd takes no transaction that writes one key twice).
    let updates: Vec<_> = (0..64)
        .map(|i| {
            let url = format!(
                "http://{}/v1/agent/check/update/twice-{}",
                server.http,
                if i % 2 == 0 { "a" } else { "b" }
            );
            tokio::spawn(async move {
                let body = json!({"Status": "passing", "Output": format!("update {i}")});
                let response = client().put(url).json(&body).send().await.unwrap();
                (response.status(), response.text().await.unwrap_or_default())
            })
        })
        .collect();
    for update in updates {
        let (code, body) = update.await.unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let (_, checks) = get(&server, "/v1/health/checks/twice").await;
    let statuses: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passing", "passing"], "{checks}");
}

#[tokio::test]
async fn the_registry_in_etcd_over_tls_with_client_certificates() {
    let cluster = EtcdCluster::start_tls(1);
    let tls = cluster.tls.as_ref().unwrap();
    let endpoints = cluster.endpoints();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (ca, cert, key) = (path(&tls.ca), path(&tls.client_cert), path(&tls.client_key));
    let args = [
        "--etcd",
        &endpoints,
        "--etcd-prefix",
        "/tls/",
        "--node-name",
        "sextant-a",
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
    ];
    let server = start_binary_with(&repo_zones(), &temp_data_dir(), &args);
    let (code, body) = register(&server, 1).await;
    assert_eq!(code, 200, "{body}");
    kill_9(server);
    let server = start_binary_with(&repo_zones(), &temp_data_dir(), &args);
    assert!(answers(&server, 1).await, "kept over TLS");
    kill_9(server);
    // Without a client certificate the members refuse the connection: the start fails, naming etcd.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--zones"])
        .arg(repo_zones())
        .arg("--data-dir")
        .arg(temp_data_dir())
        .args(["--etcd", &endpoints, "--etcd-prefix", "/tls/", "--etcd-ca", &ca])
        .output()
        .expect("sextant runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("etcd"), "{stderr}");
}

/// A key/value request through one server of a cluster: its status and body.
async fn kv(server: &common::process::Running, method: reqwest::Method, path: &str, body: &str) -> (u16, String) {
    let response = client()
        .request(method, format!("http://{}{path}", server.http))
        .body(body.to_owned())
        .send()
        .await
        .expect("HTTP");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// The keys under `prefix` as a server holds them (none: 404).
async fn kv_keys(server: &common::process::Running, prefix: &str) -> Vec<String> {
    let (status, body) = kv(server, reqwest::Method::GET, &format!("/v1/kv/{prefix}?keys"), "").await;
    match status {
        404 => Vec::new(),
        200 => serde_json::from_str(&body).unwrap(),
        other => panic!("GET keys: {other} {body}"),
    }
}

/// The key/value store in etcd, under the cluster's prefix: written through one server, read
/// and watched through another; a check-and-set decided by etcd (racers on both servers, one
/// wins); a recursive delete; kept over a restart.
#[tokio::test]
async fn the_key_value_store_is_shared_through_etcd() {
    use reqwest::Method;
    let cluster = EtcdCluster::start(3);
    let a = start_named(&cluster, "/kvs/", "sextant-a");
    let b = start_named(&cluster, "/kvs/", "sextant-b");
    assert_eq!(
        kv(&a, Method::PUT, "/v1/kv/app/db?flags=5", "postgres").await,
        (200, "true".into())
    );
    // Served by the writer before its `true`; by the other once its watch brings it.
    let (index, entries) = get(&a, "/v1/kv/app/db").await;
    assert_eq!(entries[0]["Flags"], 5);
    assert_eq!(entries[0]["Value"], "cG9zdGdyZXM="); // base64 of "postgres"
    let modify = entries[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(index, modify);
    common::wait_for("B to have the entry", async || kv_keys(&b, "app/").await == ["app/db"]).await;
    let (_, on_b) = get(&b, "/v1/kv/app/db").await;
    assert_eq!(
        on_b[0]["ModifyIndex"].as_u64(),
        Some(modify),
        "the same index on every server"
    );

    // A blocking query on B wakes for a write through A.
    let (watched, _) = get(&b, "/v1/kv/app/?recurse").await;
    let waiter = {
        let http = b.http;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = client()
                .get(format!("http://{http}/v1/kv/app/?recurse&index={watched}&wait=30s"))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kv(&a, Method::PUT, "/v1/kv/app/port", "5432").await.0, 200);
    let (waited, body) = waiter.await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 2, "{body}");
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    println!("a blocking query on B woke {waited:?} after it started (the write through A at 300 ms)");

    // Eight writers, four through each server, all with the same index: etcd lets one win.
    let racers: Vec<_> = (0..8)
        .map(|n| {
            let http = if n % 2 == 0 { a.http } else { b.http };
            tokio::spawn(async move {
                let response = client()
                    .put(format!("http://{http}/v1/kv/app/db?cas={modify}"))
                    .body(format!("racer-{n}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.text().await.unwrap() == "true"
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one check-and-set wins");
    assert_eq!(
        kv(&b, Method::PUT, "/v1/kv/app/db?cas=0", "x").await,
        (200, "false".into())
    );
    assert_eq!(
        kv(&b, Method::PUT, "/v1/kv/app/new?cas=0", "x").await,
        (200, "true".into())
    );
    let (_, entry) = get(&b, "/v1/kv/app/new").await;
    let at = entry[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        kv(&a, Method::DELETE, &format!("/v1/kv/app/new?cas={}", at + 1), "")
            .await
            .1,
        "false"
    );
    assert_eq!(
        kv(&a, Method::DELETE, &format!("/v1/kv/app/new?cas={at}"), "").await.1,
        "true"
    );

    // A recursive delete through B; A has none of them after.
    assert_eq!(kv(&b, Method::PUT, "/v1/kv/keep/me", "1").await.0, 200);
    assert_eq!(
        kv(&b, Method::DELETE, "/v1/kv/app/?recurse", "").await,
        (200, "true".into())
    );
    common::wait_for("A to drop them", async || kv_keys(&a, "app/").await.is_empty()).await;
    assert_eq!(kv_keys(&b, "").await, ["keep/me"]);

    // A delete of what is not there changes nothing in etcd, and is answered at once, even when
    // etcd's last revision is another prefix's (which this server's watch never brings).
    let other = start_named(&cluster, "/other-kvs/", "sextant-c");
    assert_eq!(kv(&other, Method::PUT, "/v1/kv/elsewhere", "1").await.0, 200);
    let started = std::time::Instant::now();
    assert_eq!(
        kv(&a, Method::DELETE, "/v1/kv/not/there", "").await,
        (200, "true".into())
    );
    assert_eq!(
        kv(&a, Method::DELETE, "/v1/kv/nothing/?recurse", "").await,
        (200, "true".into())
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(kv_keys(&a, "").await, ["keep/me"], "prefixes apart");

    // Kept in etcd: a server started afresh reads it.
    kill_9(a);
    let a = start_named(&cluster, "/kvs/", "sextant-a");
    assert_eq!(kv_keys(&a, "").await, ["keep/me"]);
    drop((b, other));
}

/// External nodes registered through the catalog on a cluster: registered through one server and
/// answered by the other (API and DNS), a critical node check taking the node's services out on
/// both, kept over a restart, deregistered through the other.
#[tokio::test]
async fn external_nodes_are_shared_through_etcd() {
    let cluster = EtcdCluster::start(3);
    let a = start_named(&cluster, "/ext/", "sextant-a");
    let b = start_named(&cluster, "/ext/", "sextant-b");
    let catalog = async |server: &common::process::Running, path: &str, body: serde_json::Value| {
        let response = client()
            .put(format!("http://{}{path}", server.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let node = |status: &str| {
        json!({"Node": "ext-1", "Address": "10.9.0.1", "NodeMeta": {"external-node": "true"},
               "Service": {"ID": "legacy-1", "Service": "legacy", "Port": 443},
               "Check": {"CheckID": "ext-1-alive", "Status": status}})
    };
    let a_records =
        async |server: &common::process::Running, name: &str| addresses(&udp(server.dns, name, RecordType::A).await);
    assert_eq!(
        catalog(&a, "/v1/catalog/register", node("passing")).await,
        (200, "true".into())
    );
    // Served by the server that took it before its `true`; by the other once its watch brings it.
    assert_eq!(
        a_records(&a, "legacy.service.trading-dc.").await,
        [common::ip("10.9.0.1")]
    );
    common::wait_for("B to answer the external service", async || {
        a_records(&b, "legacy.service.trading-dc.").await == [common::ip("10.9.0.1")]
    })
    .await;
    assert_eq!(a_records(&b, "ext-1.node.trading-dc.").await, [common::ip("10.9.0.1")]);
    let (_, nodes) = get(&b, "/v1/catalog/nodes?node-meta=external-node:true").await;
    assert_eq!(nodes[0]["Node"], "ext-1", "{nodes}");
    let (_, on_a) = get(&a, "/v1/catalog/node/ext-1").await;
    let (_, on_b) = get(&b, "/v1/catalog/node/ext-1").await;
    assert_eq!(on_a, on_b, "the same node, indexes included, on both");

    // The registrar, through B, says the node is down: out of DNS on both.
    assert_eq!(catalog(&b, "/v1/catalog/register", node("critical")).await.0, 200);
    assert!(a_records(&b, "legacy.service.trading-dc.").await.is_empty());
    common::wait_for("A to drop the node's service", async || {
        a_records(&a, "legacy.service.trading-dc.").await.is_empty()
    })
    .await;
    // Kept in etcd: a server started afresh has the node as its registrar left it.
    kill_9(a);
    let a = start_named(&cluster, "/ext/", "sextant-a");
    let (_, checks) = get(&a, "/v1/health/node/ext-1").await;
    assert_eq!(checks[0]["Status"], "critical", "{checks}");
    assert!(a_records(&a, "legacy.service.trading-dc.").await.is_empty());
    // Deregistered through A: gone from B.
    assert_eq!(
        catalog(&a, "/v1/catalog/deregister", json!({"Node": "ext-1"})).await.0,
        200
    );
    common::wait_for("B to drop the node", async || {
        rcode(&udp(b.dns, "ext-1.node.trading-dc.", RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;
    let (_, nodes) = get(&b, "/v1/catalog/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1, "B's own node alone: {nodes}");
    assert_eq!(
        rcode(&udp(b.dns, "legacy.service.trading-dc.", RecordType::A).await),
        ResponseCode::NXDomain
    );
}
