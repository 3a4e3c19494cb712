//! `/v1/kv/<key>`: Consul's key/value store over real HTTP: values kept byte for byte and
//! durably, listings by prefix, check-and-set, blocking queries that wake only for their
//! prefix, and the errors Consul gives.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, test_config};

async fn put(server: &TestServer, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
    server.put_raw(path, body).await
}

async fn delete(server: &TestServer, path: &str) -> (StatusCode, String) {
    let response = server.http.delete(server.url(path)).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn index_of(headers: &reqwest::header::HeaderMap) -> u64 {
    headers["x-consul-index"].to_str().unwrap().parse().unwrap()
}

fn decoded(entry: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(entry["Value"].as_str().unwrap())
        .unwrap()
}

#[tokio::test]
async fn values_are_kept_listed_and_deleted_as_in_consul() {
    let server = TestServer::start().await;
    // Any bytes, with flags; `true` as the answer.
    let value: Vec<u8> = vec![0, 1, 2, 255, b'{', b'"'];
    assert_eq!(
        put(&server, "/v1/kv/config/db/url?flags=42", value.clone()).await,
        (StatusCode::OK, "true".into())
    );
    let (status, headers, body) = server.get("/v1/kv/config/db/url").await;
    assert_eq!(status, 200);
    let entries: Value = serde_json::from_str(&body).unwrap();
    let entry = &entries[0];
    assert_eq!(decoded(entry), value);
    assert_eq!(
        (entry["Key"].clone(), entry["Flags"].clone(), entry["LockIndex"].clone()),
        (json!("config/db/url"), json!(42), json!(0))
    );
    let modify = entry["ModifyIndex"].as_u64().unwrap();
    assert_eq!(entry["CreateIndex"].as_u64(), Some(modify));
    assert_eq!(index_of(&headers), modify);
    // Raw: the bytes alone.
    let raw = server
        .http
        .get(server.url("/v1/kv/config/db/url?raw"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(raw.bytes().await.unwrap().to_vec(), value);
    // An empty value is null, as Consul shows it.
    assert_eq!(put(&server, "/v1/kv/config/empty", "").await.0, 200);
    assert_eq!(server.get_json("/v1/kv/config/empty").await[0]["Value"], Value::Null);

    // A missing key: 404 with the index.
    let (status, headers, body) = server.get("/v1/kv/nope").await;
    assert_eq!((status.as_u16(), body.as_str()), (404, ""));
    assert!(index_of(&headers) > 0);

    // Listings: by prefix, keys alone, and keys up to a separator.
    for key in ["config/db/user", "config/web/port", "configuration", "other/x"] {
        assert_eq!(put(&server, &format!("/v1/kv/{key}"), key.to_owned()).await.0, 200);
    }
    let keys = |v: Value| -> Vec<String> { serde_json::from_value(v).unwrap() };
    let listed = server.get_json("/v1/kv/config/?recurse").await;
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["config/db/url", "config/db/user", "config/empty", "config/web/port"]
    );
    assert_eq!(
        keys(server.get_json("/v1/kv/config?keys").await),
        [
            "config/db/url",
            "config/db/user",
            "config/empty",
            "config/web/port",
            "configuration"
        ]
    );
    assert_eq!(
        keys(server.get_json("/v1/kv/config/?keys&separator=/").await),
        ["config/db/", "config/empty", "config/web/"]
    );
    assert_eq!(
        keys(server.get_json("/v1/kv/?keys&separator=/").await),
        ["config/", "configuration", "other/"]
    );
    assert_eq!(server.get("/v1/kv/none/?recurse").await.0, 404);

    // Update keeps CreateIndex and moves ModifyIndex.
    assert_eq!(put(&server, "/v1/kv/config/db/url", "v2").await.0, 200);
    let entry = server.get_json("/v1/kv/config/db/url").await[0].clone();
    assert_eq!(entry["CreateIndex"].as_u64(), Some(modify));
    assert!(entry["ModifyIndex"].as_u64().unwrap() > modify);

    // Delete one, then a prefix.
    assert_eq!(
        delete(&server, "/v1/kv/config/db/url").await,
        (StatusCode::OK, "true".into())
    );
    assert_eq!(server.get("/v1/kv/config/db/url").await.0, 404);
    assert_eq!(delete(&server, "/v1/kv/config/?recurse").await.0, 200);
    assert_eq!(
        keys(server.get_json("/v1/kv/?keys").await),
        ["configuration", "other/x"]
    );
    server.stop().await;
}

#[tokio::test]
async fn check_and_set_writes_only_over_the_index_read() {
    let server = TestServer::start().await;
    // cas=0: only if the key does not exist.
    assert_eq!(put(&server, "/v1/kv/leader?cas=0", "a").await.1, "true");
    assert_eq!(put(&server, "/v1/kv/leader?cas=0", "b").await.1, "false");
    let index = server.get_json("/v1/kv/leader").await[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        put(&server, &format!("/v1/kv/leader?cas={}", index + 1), "c").await.1,
        "false"
    );
    assert_eq!(put(&server, &format!("/v1/kv/leader?cas={index}"), "d").await.1, "true");
    assert_eq!(
        put(&server, &format!("/v1/kv/leader?cas={index}"), "e").await.1,
        "false",
        "the index moved"
    );
    let entry = server.get_json("/v1/kv/leader").await[0].clone();
    assert_eq!(decoded(&entry), b"d");
    let now = entry["ModifyIndex"].as_u64().unwrap();
    assert_eq!(delete(&server, &format!("/v1/kv/leader?cas={index}")).await.1, "false");
    assert_eq!(delete(&server, &format!("/v1/kv/leader?cas={now}")).await.1, "true");
    assert_eq!(server.get("/v1/kv/leader").await.0, 404);

    // Sixteen writers race with the same index: exactly one wins.
    assert_eq!(put(&server, "/v1/kv/counter", "0").await.1, "true");
    let index = server.get_json("/v1/kv/counter").await[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let (http, url) = (server.http.clone(), server.url(&format!("/v1/kv/counter?cas={index}")));
            tokio::spawn(async move {
                http.put(url)
                    .body(format!("{n}"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap() == "true");
    }
    assert_eq!(won, 1, "one check-and-set over one index");
    server.stop().await;
}

#[tokio::test]
async fn a_blocking_query_wakes_for_its_prefix_only() {
    let server = TestServer::start().await;
    assert_eq!(put(&server, "/v1/kv/app/a", "1").await.0, 200);
    let (_, headers, _) = server.get("/v1/kv/app/?recurse").await;
    let index = index_of(&headers);
    let waiting = |index: u64, wait: &str| {
        let (http, url) = (
            server.http.clone(),
            server.url(&format!("/v1/kv/app/?recurse&index={index}&wait={wait}")),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).send().await.unwrap();
            (
                started.elapsed(),
                index_of(response.headers()),
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    // A change elsewhere does not wake it: it waits its wait out.
    let unwoken = waiting(index, "1s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(put(&server, "/v1/kv/elsewhere", "x").await.0, 200);
    let (took, same, _) = unwoken.await.unwrap();
    assert!(
        took >= Duration::from_secs(1),
        "woken after {took:?} by a change outside its prefix"
    );
    assert_eq!(same, index);
    // A change under it does, at once. (A client that asks again with an index from before a
    // change elsewhere may be answered at once with a newer one, as Consul allows; a fresh read
    // gives the index to wait from.)
    let (_, headers, _) = server.get("/v1/kv/app/?recurse").await;
    let index = index_of(&headers);
    let woken = waiting(index, "30s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(put(&server, "/v1/kv/app/b", "2").await.0, 200);
    let (took, next, entries) = woken.await.unwrap();
    assert!(took < Duration::from_secs(10));
    assert!(next > index);
    assert_eq!(entries.as_array().unwrap().len(), 2);
    // A deletion under it too.
    let woken = waiting_after(&server, next).await;
    assert_eq!(delete(&server, "/v1/kv/app/a").await.0, 200);
    assert_eq!(woken.await.unwrap().as_array().unwrap().len(), 1);
    server.stop().await;
}

async fn waiting_after(server: &TestServer, index: u64) -> tokio::task::JoinHandle<Value> {
    let (http, url) = (
        server.http.clone(),
        server.url(&format!("/v1/kv/app/?recurse&index={index}&wait=30s")),
    );
    let task = tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    task
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason_and_store_nothing() {
    let server = TestServer::start().await;
    let too_big = vec![b'x'; 512 * 1024 + 1];
    let (status, body) = put(&server, "/v1/kv/big", too_big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("524288"), "{body}");
    assert_eq!(
        put(&server, "/v1/kv/exactly", vec![b'x'; 512 * 1024]).await.0,
        200,
        "the limit itself is taken"
    );
    for (path, says) in [
        ("/v1/kv/lock?acquire=abc", "sessions and locks are not supported"),
        ("/v1/kv/lock?release=abc", "sessions and locks are not supported"),
        ("/v1/kv/x?flags=many", "Invalid flags"),
        ("/v1/kv/x?cas=-1", "Invalid cas"),
        ("/v1/kv/", "Missing key name"),
    ] {
        let (status, body) = put(&server, path, "v").await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, body) = put(&server, &format!("/v1/kv/{}", "k".repeat(1025)), "v").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        delete(&server, "/v1/kv/").await.0,
        400,
        "deleting everything needs ?recurse"
    );
    let keys: Vec<String> = serde_json::from_value(server.get_json("/v1/kv/?keys").await).unwrap();
    assert_eq!(keys, ["exactly"]);
    server.stop().await;
}

#[tokio::test]
async fn entries_survive_a_restart_with_their_indexes() {
    let server = TestServer::start().await;
    for n in 0..50 {
        assert_eq!(
            put(&server, &format!("/v1/kv/cfg/{n:02}?flags={n}"), format!("value {n}"))
                .await
                .0,
            200
        );
    }
    assert_eq!(delete(&server, "/v1/kv/cfg/07").await.0, 200);
    let before = server.get_json("/v1/kv/cfg/?recurse").await;
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(sextant::Config {
        data_dir,
        ..test_config()
    })
    .await;
    assert_eq!(server.get_json("/v1/kv/cfg/?recurse").await, before);
    // The index goes on from there.
    assert_eq!(put(&server, "/v1/kv/cfg/new", "x").await.0, 200);
    let newest = server.get_json("/v1/kv/cfg/new").await[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    let highest = before
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(newest > highest);
    server.stop().await;
}

/// A deletion under a prefix nobody watches still moves the index a later watcher compares with,
/// and health changes (which move the registry's index) do not wake a key's watchers.
#[tokio::test]
async fn deletions_are_never_missed_and_health_changes_do_not_wake_key_watchers() {
    let server = TestServer::start().await;
    assert_eq!(put(&server, "/v1/kv/app/a", "1").await.0, 200);
    assert_eq!(put(&server, "/v1/kv/app/b", "2").await.0, 200);
    let (_, headers, _) = server.get("/v1/kv/app/?recurse").await;
    let before = index_of(&headers);
    assert_eq!(delete(&server, "/v1/kv/app/b").await.0, 200);
    // A client that read before the deletion, asking with its index: answered at once.
    let started = Instant::now();
    let (_, headers, body) = server
        .get(&format!("/v1/kv/app/?recurse&index={before}&wait=30s"))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5), "the deletion was missed");
    assert!(index_of(&headers) > before);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len(),
        1
    );

    // A watcher of a missing key is not woken by health changes.
    server
        .register(json!({"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "1h", "Status": "passing"}}))
        .await;
    let (status, headers, _) = server.get("/v1/kv/missing").await;
    assert_eq!(status, 404);
    let index = index_of(&headers);
    let watcher = {
        let (http, url) = (
            server.http.clone(),
            server.url(&format!("/v1/kv/missing?index={index}&wait=1s")),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).send().await.unwrap();
            (started.elapsed(), response.status())
        })
    };
    for n in 0..10 {
        let status = if n % 2 == 0 { "fail" } else { "pass" };
        assert_eq!(
            server.put(&format!("/v1/agent/check/{status}/service:web-1")).await.0,
            200
        );
    }
    let (waited, status) = watcher.await.unwrap();
    assert!(
        waited >= Duration::from_secs(1),
        "woken after {waited:?} by health changes"
    );
    assert_eq!(status, 404);

    // `cas` does not apply to a recursive delete (as in Consul).
    assert_eq!(delete(&server, "/v1/kv/app/?recurse&cas=1").await.1, "true");
    assert_eq!(server.get("/v1/kv/app/?recurse").await.0, 404);
    server.stop().await;
}
