//! A disk that cannot be written: registrations and deregistrations are refused with a 503 and
//! change nothing; health updates go on in memory, so live services stay in DNS; writes succeed
//! again by themselves once the disk can be written, without a restart.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::dns::{addresses, udp};
use common::process::start_binary;
use common::{TestServer, ip, repo_zones, test_config};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use sextant::App;
use sextant::store::{Batch, RedbStore, Store, StoreError, StoredInstance};

/// A real store whose writes fail while `failing` is set, as a full disk's would.
struct FailingStore {
    inner: RedbStore,
    dir: PathBuf,
    failing: AtomicBool,
    /// Fail as a store that is broken rather than full: an internal error.
    broken: AtomicBool,
}

impl Store for FailingStore {
    fn load(&self, each: &mut dyn FnMut(StoredInstance) -> Result<(), String>) -> Result<u64, StoreError> {
        self.inner.load(each)
    }

    fn write(&self, batch: &Batch<'_>) -> Result<u64, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt {
                path: format!("{}/registry.redb", self.dir.display()),
                key: "orders-1".into(),
                message: "secret detail".into(),
            });
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                dir: self.dir.display().to_string(),
                message: "No space left on device (os error 28)".into(),
            });
        }
        self.inner.write(batch)
    }
}

fn instance(id: &str, service: &str, address: &str) -> Value {
    json!({"Name": service, "ID": id, "Address": address, "Port": 80,
           "Check": {"CheckID": format!("{id}-ttl"), "TTL": "1h", "Status": "passing"}})
}

async fn answered(server: std::net::SocketAddr, name: &str) -> Vec<std::net::IpAddr> {
    addresses(&udp(server, name, RecordType::A).await)
}

#[tokio::test]
async fn a_failing_store_refuses_writes_keeps_health_and_recovers() {
    let config = test_config();
    let store = Arc::new(FailingStore {
        inner: RedbStore::open(&config.data_dir).unwrap(),
        dir: config.data_dir.clone(),
        failing: AtomicBool::new(false),
        broken: AtomicBool::new(false),
    });
    let data_dir = config.data_dir.clone();
    let app = App::bind_with_store(config, store.clone()).await.unwrap();
    let server = TestServer::from_app(app, data_dir.clone());
    server.register(instance("orders-1", "orders", "10.0.0.1")).await;
    let dns = server.dns;
    assert_eq!(answered(dns, "orders.service.trading-dc.").await, vec![ip("10.0.0.1")]);

    store.failing.store(true, Ordering::SeqCst);
    // A registration: 503, naming the data directory, and nothing of it is served.
    let (status, text) = server
        .put_json(
            "/v1/agent/service/register",
            &instance("orders-2", "orders", "10.0.0.2"),
        )
        .await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(&data_dir.display().to_string()), "{text}");
    assert_eq!(server.get("/v1/agent/service/orders-2").await.0, 404);
    assert_eq!(answered(dns, "orders.service.trading-dc.").await, vec![ip("10.0.0.1")]);
    let (status, text) = server
        .put_json(
            "/v1/agent/service/register",
            &instance("payments-1", "payments", "10.0.0.3"),
        )
        .await;
    assert_eq!(status, 503, "{text}");
    assert!(server.get_json("/v1/catalog/services").await.get("payments").is_none());
    // A deregistration: 503, and the instance stays.
    let (status, text) = server.put("/v1/agent/service/deregister/orders-1").await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(server.get("/v1/agent/service/orders-1").await.0, 200);

    // Heartbeats still count: the instance leaves DNS when failed and comes back when passing.
    let (status, text) = server.put("/v1/agent/check/fail/orders-1-ttl").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        answered(dns, "orders.service.trading-dc.").await,
        Vec::<std::net::IpAddr>::new()
    );
    let (status, text) = server.put("/v1/agent/check/pass/orders-1-ttl?note=back").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(answered(dns, "orders.service.trading-dc.").await, vec![ip("10.0.0.1")]);

    // The disk takes writes again: so does the registry, without a restart.
    store.failing.store(false, Ordering::SeqCst);
    server.register(instance("orders-2", "orders", "10.0.0.2")).await;
    let mut answer = answered(dns, "orders.service.trading-dc.").await;
    answer.sort();
    assert_eq!(answer, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
    let (status, text) = server.put("/v1/agent/service/deregister/orders-1").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(answered(dns, "orders.service.trading-dc.").await, vec![ip("10.0.0.2")]);

    // A store that fails in a way the client cannot fix: a 500 that says what kind of error,
    // without the server's paths or the store's words (those go to the log).
    store.broken.store(true, Ordering::SeqCst);
    let (status, text) = server
        .put_json(
            "/v1/agent/service/register",
            &instance("orders-3", "orders", "10.0.0.3"),
        )
        .await;
    assert_eq!(status, 500, "{text}");
    assert_eq!(text, "internal error (storage); the server's log has the details");
    store.broken.store(false, Ordering::SeqCst);

    // What the store holds is what was acknowledged.
    let data_dir = server.stop_keeping_data().await;
    drop(store); // the database's lock goes with its last owner
    let restarted = TestServer::start_with(sextant::Config {
        data_dir: data_dir.clone(),
        ..test_config()
    })
    .await;
    let services = restarted.get_json("/v1/agent/services").await;
    let ids: Vec<&String> = services.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["orders-2"], "{services}");
    restarted.stop().await;
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = common::temp_data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system holding `dir` with one file, and returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    // Whatever is left is smaller than a chunk: take it too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    filler
}

#[tokio::test]
async fn a_full_filesystem_refuses_writes_keeps_health_and_recovers_when_space_is_freed() {
    let tmpfs = match Tmpfs::mount("16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            // Only where the test may not mount (not root, no CAP_SYS_ADMIN): said, not hidden.
            eprintln!("SKIPPED a_full_filesystem_…: cannot mount a tmpfs here ({reason}); run the tests as root");
            return;
        }
    };
    let data_dir = tmpfs.0.join("data");
    let running = start_binary(&repo_zones(), &data_dir);
    let http = format!("http://{}", running.http);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let register = async |body: &Value| {
        let response = client
            .put(format!("{http}/v1/agent/service/register"))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(register(&instance("orders-1", "orders", "10.0.0.1")).await.0, 200);
    let filler = fill(&tmpfs.0);

    // Registrations with large metadata, until the disk refuses one.
    let big = |n: usize| {
        let meta: serde_json::Map<String, Value> = (0..60).map(|k| (format!("k{k}"), json!("x".repeat(500)))).collect();
        json!({"Name": "bulk", "ID": format!("bulk-{n}"), "Address": "10.0.1.1", "Port": 80, "Meta": meta})
    };
    let mut refused = None;
    for n in 0..2_000 {
        let (status, text) = register(&big(n)).await;
        match status {
            200 => continue,
            503 => {
                refused = Some((n, text));
                break;
            }
            other => panic!("registration {n}: {other} {text}"),
        }
    }
    let (n, text) = refused.expect("a full disk refuses a registration");
    assert!(text.contains(&data_dir.display().to_string()), "{text}");
    let missing = client
        .get(format!("{http}/v1/agent/service/bulk-{n}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "a refused registration is not served");

    // Health goes on: orders-1 leaves DNS when its check fails and comes back when it passes.
    let status = |path: &'static str| {
        let client = client.clone();
        let url = format!("{http}{path}");
        async move { client.put(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/v1/agent/check/fail/orders-1-ttl").await, 200);
    assert_eq!(
        answered(running.dns, "orders.service.trading-dc.").await,
        Vec::<std::net::IpAddr>::new()
    );
    assert_eq!(status("/v1/agent/check/pass/orders-1-ttl").await, 200);
    assert_eq!(
        answered(running.dns, "orders.service.trading-dc.").await,
        vec![ip("10.0.0.1")]
    );

    // Space is freed: writes succeed again within seconds, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = register(&instance("orders-2", "orders", "10.0.0.2")).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(
            Instant::now() < deadline,
            "still refused 10 s after space was freed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut answer = answered(running.dns, "orders.service.trading-dc.").await;
    answer.sort();
    assert_eq!(answer, vec![ip("10.0.0.1"), ip("10.0.0.2")]);

    // Killed and restarted on the same data: everything acknowledged is there, nothing refused.
    drop(running);
    let running = start_binary(&repo_zones(), &data_dir);
    let mut answer = answered(running.dns, "orders.service.trading-dc.").await;
    answer.sort();
    assert_eq!(answer, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
    let response = client
        .get(format!("http://{}/v1/agent/service/bulk-{n}", running.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    drop(running);
}
