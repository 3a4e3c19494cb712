//! The key/value store over real HTTP against an in-process server with its embedded store:
//! puts per second (each fsynced before its `true`) from 1 and from 64 clients, and how long a
//! blocking query on a prefix of 10,000 keys takes to answer after a write under it is
//! acknowledged. `cargo bench --bench kv`; the README's figures come from here.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sextant::{App, Config};

struct Server {
    app: App,
    base: String,
    http: reqwest::Client,
    data_dir: std::path::PathBuf,
}

fn start(rt: &tokio::runtime::Runtime) -> Server {
    let data_dir = std::env::temp_dir().join(format!("sextant-bench-kv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let config = Config {
        dns: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        zones: concat!(env!("CARGO_MANIFEST_DIR"), "/zones").into(),
        data_dir: data_dir.clone(),
        node_name: Some("bench".into()),
        ..Config::default()
    };
    let app = rt.block_on(App::bind(config)).expect("the server starts");
    Server {
        base: format!("http://{}", app.http_addr()),
        app,
        http: reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap(),
        data_dir,
    }
}

async fn put(server: &Server, key: &str, value: String) {
    let response = server
        .http
        .put(format!("{}/v1/kv/{key}", server.base))
        .body(value)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// `count` puts from `clients` clients at once; how long they took.
async fn puts(server: &Server, clients: u64, count: u64, prefix: &str) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base, prefix) = (server.http.clone(), server.base.clone(), prefix.to_owned());
            tokio::spawn(async move {
                let mut n = c;
                while n < count {
                    let url = format!("{base}/v1/kv/{prefix}{n}");
                    let response = http.put(url).body(format!("value {n}")).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    n += clients;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// `iters` times: a blocking query on `prefix` waits, a write under it is acknowledged, and the
/// query answers; the total time from the acknowledgements to the answers.
async fn woken(server: &Server, prefix: &str, whole: bool, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let url = format!("{}/v1/kv/{prefix}?recurse", server.base);
        let head = server.http.get(&url).send().await.unwrap();
        let index = head.headers()["x-consul-index"].to_str().unwrap().to_owned();
        drop(head.bytes().await.unwrap());
        let watcher = {
            let (http, url) = (server.http.clone(), format!("{url}&index={index}&wait=30s"));
            tokio::spawn(async move {
                let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
                (Instant::now(), body.len())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await; // the watcher is waiting
        let key = if whole {
            format!("cfg/{}", i % 10_000)
        } else {
            prefix.to_owned()
        };
        put(server, &key, format!("changed {i}")).await;
        let acknowledged = Instant::now();
        let (answered, bytes) = watcher.await.unwrap();
        assert!(!whole || bytes > 10_000, "the whole prefix comes back");
        total += answered.saturating_duration_since(acknowledged);
    }
    total
}

fn kv(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start(&rt);
    let mut group = c.benchmark_group("kv");
    group.sample_size(10);
    for clients in [1, 64] {
        group.bench_function(format!("put, {clients} clients (time per put)"), |b| {
            b.iter_custom(|iters| rt.block_on(puts(&server, clients, iters.max(clients), &format!("p{clients}/"))))
        });
    }
    // 10,000 keys under one prefix; watchers of one of them, and of all of them, woken by a
    // write (the first measures the wake-up, the second also the 10,000 entries it reads).
    rt.block_on(puts(&server, 64, 10_000, "cfg/"));
    for (what, prefix, whole) in [
        ("a watcher of one key among 10,000", "cfg/1234", false),
        ("a watcher of all 10,000 keys (recurse)", "cfg/", true),
    ] {
        group.bench_function(format!("{what}: write acknowledged -> watcher answered"), |b| {
            b.iter_custom(|iters| rt.block_on(woken(&server, prefix, whole, iters)))
        });
    }
    group.finish();
    rt.block_on(server.app.shutdown());
    let _ = std::fs::remove_dir_all(&server.data_dir);
}

criterion_group!(benches, kv);
criterion_main!(benches);
