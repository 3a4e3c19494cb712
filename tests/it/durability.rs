//! Nothing acknowledged is lost: the real binary, killed with SIGKILL, restarted on the same data
//! directory, serves every registration it answered 200 to.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dns::{addresses, rcode, srvs, tcp, udp};
use common::process::{Running, start_binary};
use common::{ip, repo_zones, temp_data_dir};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

/// One client for the whole test (building one loads the system's CA store: slow in debug builds).
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap()
        })
        .clone()
}

async fn put(http: std::net::SocketAddr, path: &str, body: Option<&Value>) -> reqwest::StatusCode {
    let mut request = client().put(format!("http://{http}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("HTTP PUT").status()
}

async fn get_json(http: std::net::SocketAddr, path: &str) -> Value {
    let response = client().get(format!("http://{http}{path}")).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// The `X-Consul-Index` of a GET.
async fn consul_index(http: std::net::SocketAddr, path: &str) -> u64 {
    let response = client().get(format!("http://{http}{path}")).send().await.unwrap();
    response.headers()["X-Consul-Index"].to_str().unwrap().parse().unwrap()
}

/// SIGKILL: no shutdown code runs.
fn kill_9(running: Running) {
    let mut child = running.child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let data_dir = temp_data_dir();
    let server = start_binary(&repo_zones(), &data_dir);
    let http = server.http;
    for (id, address) in [
        ("orders-1", "10.0.0.1"),
        ("orders-2", "10.0.0.2"),
        ("orders-3", "10.0.0.3"),
    ] {
        let body = json!({"Name": "orders", "ID": id, "Address": address, "Port": 8080, "Tags": ["v1"],
                          "Meta": {"build": "42"},
                          "Check": {"CheckID": format!("{id}-ttl"), "TTL": "1h", "Status": "passing"}});
        assert_eq!(put(http, "/v1/agent/service/register", Some(&body)).await, 200);
    }
    assert_eq!(put(http, "/v1/agent/service/deregister/orders-3", None).await, 200);
    // A status change and a re-registration with another port, acknowledged before the kill.
    assert_eq!(
        put(http, "/v1/agent/check/warn/orders-2-ttl?note=slow+disk", None).await,
        200
    );
    let moved = json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 9090,
                       "Check": {"CheckID": "orders-1-ttl", "TTL": "1h", "Status": "passing"}});
    assert_eq!(put(http, "/v1/agent/service/register", Some(&moved)).await, 200);
    let index_before = consul_index(http, "/v1/health/service/orders").await;
    kill_9(server);

    let server = start_binary(&repo_zones(), &data_dir);
    let health = get_json(server.http, "/v1/health/service/orders").await;
    let mut found: Vec<(String, u64, String, String)> = health
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let id = entry["Service"]["ID"].as_str().unwrap();
            let checks = entry["Checks"].as_array().unwrap();
            let check = checks
                .iter()
                .find(|c| c["CheckID"] == format!("{id}-ttl").as_str())
                .expect("the instance's TTL check");
            (
                entry["Service"]["ID"].as_str().unwrap().to_owned(),
                entry["Service"]["Port"].as_u64().unwrap(),
                check["Status"].as_str().unwrap().to_owned(),
                check["Output"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("orders-1".into(), 9090, "passing".into(), String::new()),
            ("orders-2".into(), 8080, "warning".into(), "slow disk".into()),
        ]
    );
    assert_eq!(health[1]["Service"]["Meta"]["build"], "42");
    let index_after = consul_index(server.http, "/v1/health/service/orders").await;
    assert!(
        index_after >= index_before,
        "the index does not go back ({index_before} → {index_after})"
    );

    // DNS serves the restored registry, and the restored TTL check still takes heartbeats.
    let mut ports: Vec<u16> = srvs(&udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await)
        .into_iter()
        .map(|(port, _, _)| port)
        .collect();
    ports.sort();
    assert_eq!(ports, [8080, 9090]);
    let gone = udp(server.dns, "v1.orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(
        addresses(&gone),
        [ip("10.0.0.2")],
        "orders-1 re-registered without the tag"
    );
    assert_eq!(put(server.http, "/v1/agent/check/fail/orders-2-ttl", None).await, 200);
    let failed = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&failed), [ip("10.0.0.1")]);
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// 1,000 registrations from 8 concurrent clients while the server is killed with SIGKILL at random
/// moments and restarted: every registration that got a 200 is there after each restart.
#[tokio::test]
async fn a_thousand_registrations_with_kill_9_at_random_moments_lose_none() {
    const WANTED: usize = 1000;
    const SERVICES: usize = 20;
    let data_dir = temp_data_dir();
    let acked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    // Every tenth instance is also put into maintenance: asked (maybe lost with its request), and
    // acknowledged (never lost).
    let maintenance_asked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let maintenance_acked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    // And every fifth writes a key/value entry.
    let kv_acked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    // And every seventh registers an external node with a service through the catalog.
    let catalog_acked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let next_id = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut kills = 0;
    while acked.lock().unwrap().len() < WANTED || kills < 5 {
        let server = start_binary(&repo_zones(), &data_dir);
        // Everything acknowledged so far is there.
        let services = get_json(server.http, "/v1/agent/services").await;
        let present: BTreeSet<usize> = services
            .as_object()
            .unwrap()
            .keys()
            .map(|id| id.trim_start_matches("r-").parse().unwrap())
            .collect();
        let missing: Vec<usize> = acked.lock().unwrap().difference(&present).copied().collect();
        assert!(missing.is_empty(), "lost after kill {kills}: {missing:?}");
        let checks = get_json(server.http, "/v1/agent/checks").await;
        let maintained: BTreeSet<usize> = checks
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|id| id.strip_prefix("_service_maintenance:r-"))
            .map(|n| n.parse().unwrap())
            .collect();
        let lost: Vec<usize> = maintenance_acked
            .lock()
            .unwrap()
            .difference(&maintained)
            .copied()
            .collect();
        assert!(lost.is_empty(), "maintenance lost after kill {kills}: {lost:?}");
        let kv_present: BTreeSet<usize> = match client()
            .get(format!("http://{}/v1/kv/kill/?recurse", server.http))
            .send()
            .await
        {
            Ok(response) if response.status() == 200 => {
                let entries: serde_json::Value = response.json().await.unwrap();
                entries
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["Key"].as_str().unwrap().trim_start_matches("kill/").parse().unwrap())
                    .collect()
            }
            _ => BTreeSet::new(),
        };
        let lost: Vec<usize> = kv_acked.lock().unwrap().difference(&kv_present).copied().collect();
        assert!(lost.is_empty(), "key/value entries lost after kill {kills}: {lost:?}");
        let external = get_json(server.http, "/v1/catalog/service/external").await;
        let external: BTreeSet<usize> = external
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Node"].as_str().unwrap().trim_start_matches("ext-").parse().unwrap())
            .collect();
        let lost: Vec<usize> = catalog_acked.lock().unwrap().difference(&external).copied().collect();
        assert!(
            lost.is_empty(),
            "catalog registrations lost after kill {kills}: {lost:?}"
        );

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (acked, next_id, stop, http) = (acked.clone(), next_id.clone(), stop.clone(), server.http);
                let (maintenance_asked, maintenance_acked) = (maintenance_asked.clone(), maintenance_acked.clone());
                let (kv_acked, catalog_acked) = (kv_acked.clone(), catalog_acked.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let n = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let body = json!({"Name": format!("load-{}", n % SERVICES), "ID": format!("r-{n}"),
                                          "Address": format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256),
                                          "Port": 80});
                        let sent = client
                            .put(format!("http://{http}/v1/agent/service/register"))
                            .json(&body)
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status() == 200 => {
                                acked.lock().unwrap().insert(n);
                            }
                            Ok(response) => panic!("registration refused: {}", response.status()),
                            Err(_) => return, // the server died mid-request: not acknowledged
                        }
                        if n % 5 == 0 {
                            let url = format!("http://{http}/v1/kv/kill/{n}");
                            match client.put(url).body(format!("{n}")).send().await {
                                Ok(response) if response.status() == 200 => {
                                    kv_acked.lock().unwrap().insert(n);
                                }
                                Ok(response) => panic!("key/value write refused: {}", response.status()),
                                Err(_) => return,
                            }
                        }
                        if n % 7 == 0 {
                            let body = json!({"Node": format!("ext-{n}"), "Address": format!("10.200.{}.{}", n / 256, n % 256),
                                              "Service": {"Service": "external", "ID": format!("e-{n}"), "Port": 443},
                                              "Check": {"CheckID": format!("ext-{n}-alive"), "Status": "passing"}});
                            let url = format!("http://{http}/v1/catalog/register");
                            match client.put(url).json(&body).send().await {
                                Ok(response) if response.status() == 200 => {
                                    catalog_acked.lock().unwrap().insert(n);
                                }
                                Ok(response) => panic!("catalog registration refused: {}", response.status()),
                                Err(_) => return,
                            }
                        }
                        if n % 10 == 0 {
                            maintenance_asked.lock().unwrap().insert(n);
                            let url = format!(
                                "http://{http}/v1/agent/service/maintenance/r-{n}?enable=true&reason=kill-test"
                            );
                            match client.put(url).send().await {
                                Ok(response) if response.status() == 200 => {
                                    maintenance_acked.lock().unwrap().insert(n);
                                }
                                Ok(response) => panic!("maintenance refused: {}", response.status()),
                                Err(_) => return,
                            }
                        }
                    }
                })
            })
            .collect();
        let pause = Duration::from_millis(rand::random_range(50..400));
        tokio::time::sleep(pause).await;
        kill_9(server);
        kills += 1;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
    }

    // The last restart: every acknowledged instance answers in DNS too.
    let server = start_binary(&repo_zones(), &data_dir);
    let acked = acked.lock().unwrap().clone();
    let mut in_dns = BTreeSet::new();
    for service in 0..SERVICES {
        let reply = tcp(
            server.dns,
            &format!("load-{service}.service.trading-dc."),
            RecordType::A,
        )
        .await;
        assert_eq!(rcode(&reply), ResponseCode::NoError);
        for address in addresses(&reply) {
            let std::net::IpAddr::V4(v4) = address else {
                panic!("{address}")
            };
            let [_, a, b, c] = v4.octets();
            in_dns.insert(usize::from(a) * 65536 + usize::from(b) * 256 + usize::from(c));
        }
    }
    let asked = maintenance_asked.lock().unwrap().clone();
    let missing: Vec<usize> = acked
        .difference(&asked)
        .filter(|n| !in_dns.contains(n))
        .copied()
        .collect();
    assert!(missing.is_empty(), "acknowledged but not in DNS: {missing:?}");
    let maintained = maintenance_acked.lock().unwrap().clone();
    let answered: Vec<usize> = maintained.intersection(&in_dns).copied().collect();
    assert!(answered.is_empty(), "in maintenance but answered: {answered:?}");
    assert!(!maintained.is_empty(), "some maintenance was acknowledged");
    // External nodes' services answer in DNS at their node's address.
    let reply = tcp(server.dns, "external.service.trading-dc.", RecordType::A).await;
    let external: BTreeSet<usize> = addresses(&reply)
        .into_iter()
        .map(|address| {
            let std::net::IpAddr::V4(v4) = address else {
                panic!("{address}")
            };
            let [_, _, b, c] = v4.octets();
            usize::from(b) * 256 + usize::from(c)
        })
        .collect();
    let catalog_acked = catalog_acked.lock().unwrap().clone();
    let missing: Vec<usize> = catalog_acked.difference(&external).copied().collect();
    assert!(
        missing.is_empty(),
        "external services acknowledged but not in DNS: {missing:?}"
    );
    assert!(!catalog_acked.is_empty(), "some catalog registration was acknowledged");
    println!(
        "{} registrations, {} maintenance modes, {} key/value writes and {} catalog registrations acknowledged across {kills} SIGKILLs, none lost",
        acked.len(),
        maintained.len(),
        kv_acked.lock().unwrap().len(),
        catalog_acked.len()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// What `sextant serve` prints when it cannot start with `data_dir`.
fn start_error(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "sextant must not start with {}",
        data_dir.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn unreadable_or_unwritable_data_is_a_clear_error_at_start() {
    // Not a registry database: the error names the file.
    let data_dir = temp_data_dir();
    std::fs::create_dir_all(&data_dir).unwrap();
    let file = data_dir.join("registry.redb");
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    let error = start_error(&data_dir);
    assert!(error.contains(&file.display().to_string()), "{error}");
    std::fs::remove_dir_all(&data_dir).unwrap();

    // A record that does not decode: the error names the file and the record.
    let data_dir = temp_data_dir();
    let server = start_binary(&repo_zones(), &data_dir);
    let body = json!({"Name": "orders", "ID": "orders-1", "Port": 80});
    assert_eq!(put(server.http, "/v1/agent/service/register", Some(&body)).await, 200);
    kill_9(server);
    rewrite_record(&data_dir, "orders-1", |_| b"{not json".to_vec());
    let error = start_error(&data_dir);
    assert!(
        error.contains("corrupt record \"orders-1\"") && error.contains(&file_in(&data_dir).display().to_string()),
        "{error}"
    );
    std::fs::remove_dir_all(&data_dir).unwrap();

    // A record that decodes but breaks a rule of the edge (here a LastUpdate in the year 14,645,
    // which once panicked every API call that showed it): refused at start, naming it.
    let data_dir = temp_data_dir();
    let server = start_binary(&repo_zones(), &data_dir);
    let body = json!({"Name": "orders", "ID": "orders-1", "Port": 80, "Check": {"TTL": "1h"}});
    assert_eq!(put(server.http, "/v1/agent/service/register", Some(&body)).await, 200);
    kill_9(server);
    rewrite_record(&data_dir, "orders-1", |stored| {
        let mut record: Value = serde_json::from_slice(&stored).unwrap();
        record["checks"][0]["last_update"]["secs_since_epoch"] = json!(400_000_000_000_u64);
        serde_json::to_vec(&record).unwrap()
    });
    let error = start_error(&data_dir);
    assert!(error.contains("orders-1") && error.contains("LastUpdate"), "{error}");
    assert!(!error.contains("panicked"), "{error}");
    std::fs::remove_dir_all(&data_dir).unwrap();

    // A data directory that cannot be created fails at start, not at the first registration.
    let blocker = temp_data_dir();
    std::fs::write(&blocker, "a file, not a folder").unwrap();
    let error = start_error(&blocker.join("data"));
    assert!(error.contains("cannot use the data directory"), "{error}");
    std::fs::remove_file(&blocker).unwrap();

    // Two servers on one data directory: the second is refused.
    let data_dir = temp_data_dir();
    let server = start_binary(&repo_zones(), &data_dir);
    let error = start_error(&data_dir);
    assert!(error.contains("registry.redb"), "{error}");
    drop(server);
    std::fs::remove_dir_all(&data_dir).unwrap();
}

/// Replaces a stored record with what `change` makes of it, as a damaged or hand-edited file would
/// hold it.
fn rewrite_record(data_dir: &Path, id: &str, change: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let db = redb::Database::open(file_in(data_dir)).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("instances");
        let mut table = tx.open_table(table).unwrap();
        let stored = redb::ReadableTable::get(&table, id).unwrap().unwrap().value().to_vec();
        table.insert(id, change(stored).as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

fn file_in(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("registry.redb")
}

/// A restored check keeps its last status and is probed again at once, not one interval later.
#[tokio::test]
async fn restored_checks_are_rechecked_at_once() {
    let endpoint = common::endpoint::HttpEndpoint::start(200).await;
    let mut config = common::test_config();
    let server = common::TestServer::start_with(config.clone()).await;
    server
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80,
                         "Check": {"CheckID": "web-http", "HTTP": endpoint.url("/health"), "Interval": "1h",
                                   "Status": "passing"}}))
        .await;
    let status = async |server: &common::TestServer| {
        let checks = server.get_json("/v1/health/checks/web").await;
        checks[0]["Status"].as_str().unwrap().to_owned()
    };
    // With a 1 h interval the first probe is staggered somewhere within the hour.
    assert_eq!(status(&server).await, "passing");
    config.data_dir = server.stop_keeping_data().await;

    endpoint.set_status(500);
    let server = common::TestServer::start_with(config).await;
    let restarted = std::time::Instant::now();
    common::wait_for("the restored check to be probed", async || {
        status(&server).await == "critical"
    })
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "probed {:?} after the restart, with a 1 h interval",
        restarted.elapsed()
    );
    server.stop().await;
}

/// How a start on `data_dir` ended: `Ok` when it served (it is stopped again, and must stop
/// cleanly), or its exit code and what it printed.
fn try_start(data_dir: &Path) -> Result<(), (Option<i32>, String)> {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut text = String::new();
    loop {
        match log.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let serving = line.contains("sextant is serving");
                text.push_str(&line);
                text.push('\n');
                if serving {
                    let _ = Command::new("kill").arg(child.id().to_string()).status();
                    let status = child.wait().unwrap();
                    assert_eq!(status.code(), Some(0), "{text}");
                    return Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                return Err((status.code(), text));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("neither started nor failed in 30 s: {text}");
            }
        }
    }
}

/// A damaged database never crashes the start: either it is read whole, or the start is refused
/// with a message naming the file and what to do. (redb panicked on 2 of 6 flipped bytes and on
/// every truncation: exit 101 and a backtrace.)
#[tokio::test]
async fn a_damaged_or_truncated_database_is_refused_with_a_message_never_a_panic() {
    let data_dir = temp_data_dir();
    let server = start_binary(&repo_zones(), &data_dir);
    for n in 0..200 {
        let body = json!({"Name": format!("svc-{}", n % 20), "ID": format!("i-{n}"), "Address": "10.0.0.1",
                          "Port": 80, "Check": {"TTL": "1h", "Status": "passing"}});
        assert_eq!(put(server.http, "/v1/agent/service/register", Some(&body)).await, 200);
    }
    kill_9(server);
    let file = file_in(&data_dir);
    let good = std::fs::read(&file).unwrap();
    let len = good.len();
    let mut refused = 0;
    let mut check = |what: &str| match try_start(&data_dir) {
        Ok(()) => {}
        Err((code, log)) => {
            refused += 1;
            assert_eq!(code, Some(1), "{what}: {log}");
            assert!(!log.contains("panicked"), "{what}: {log}");
            assert!(
                log.contains(&file.display().to_string()),
                "{what}: the error names the file: {log}"
            );
            assert!(
                log.contains("restore it from a backup, or move it away"),
                "{what}: the error says what to do: {log}"
            );
        }
    };
    for at in [
        0,
        9,
        64,
        700,
        4096,
        4200,
        len / 3,
        len / 2,
        len - 4096,
        len - 100,
        len - 16,
    ] {
        let mut bad = good.clone();
        for byte in &mut bad[at..at + 16] {
            *byte ^= 0xa5;
        }
        std::fs::write(&file, &bad).unwrap();
        check(&format!("16 bytes flipped at {at}"));
    }
    for keep in [len - 1, len - 4096, len / 2, 4096, 512] {
        std::fs::write(&file, &good[..keep]).unwrap();
        check(&format!("truncated to {keep} of {len} bytes"));
    }
    assert!(refused > 0, "some of the damage must have been noticed");
    // An empty file is a database that was lost, not a new one.
    std::fs::write(&file, b"").unwrap();
    let (code, log) = try_start(&data_dir).expect_err("an empty database is refused");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("empty (0 bytes)") && log.contains(&file.display().to_string()),
        "{log}"
    );
    std::fs::remove_dir_all(&data_dir).unwrap();
}
