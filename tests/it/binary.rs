//! The real `sextant` binary: starts on port 0, says where it listens, serves, and stops cleanly
//! on SIGTERM.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::process::{Running, start_binary};
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn binary_serves_on_ephemeral_ports_and_stops_on_sigterm() {
    let data_dir = common::temp_data_dir();
    let Running {
        mut child, dns, http, ..
    } = start_binary(&common::repo_zones(), &data_dir);

    let client = reqwest::Client::new();
    let resp = client
        .put(format!("http://{http}/v1/agent/service/register"))
        .body(r#"{"Name": "orders", "Address": "10.0.0.1", "Port": 8080}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply = common::dns::udp(dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(
        common::dns::srvs(&reply),
        vec![(8080, 1, "0a000001.addr.trading-dc.".to_string())]
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sextant did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    // Started again on the same data directory, it serves what it held.
    let Running { child, dns, .. } = start_binary(&common::repo_zones(), &data_dir);
    let reply = common::dns::udp(dns, "orders.service.trading-dc.", RecordType::SRV).await;
    assert_eq!(
        common::dns::srvs(&reply),
        vec![(8080, 1, "0a000001.addr.trading-dc.".to_string())]
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Mistakes a new user makes on the command line get a message that says what to do.
#[test]
fn command_line_mistakes_say_what_to_do() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sextant")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(&["--dns", "127.0.0.1:8601"]);
    assert!(stderr.contains("sextant serve --dns"), "{stderr}");
    let stderr = run(&["serve", "--dns", "localhost:8601"]);
    assert!(
        stderr.contains("is not an IP:port") && stderr.contains("127.0.0.1:8600"),
        "{stderr}"
    );
    let dir = common::tools::TempDir::new("config-addr");
    let file = dir.0.join("sextant.toml");
    std::fs::write(&file, "http = \"localhost:8500\"\n").unwrap();
    let stderr = run(&["serve", "--config", file.to_str().unwrap()]);
    assert!(
        stderr.contains("is not an IP:port") && stderr.contains("http"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args([
            "serve",
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--domain",
            "bad_domain",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: invalid domain"), "{stderr}");

    let dir = common::tools::TempDir::new("badzone");
    std::fs::write(dir.0.join("trading-dc.zone"), "@ IN SOA this is not a zone\n").unwrap();
    let data_dir = common::tools::TempDir::new("badzone-data");
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--zones"])
        .arg(&dir.0)
        .arg("--data-dir")
        .arg(&data_dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trading-dc.zone"),
        "the error names the zone file: {stderr}"
    );
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dns",
        "--http",
        "--domain",
        "--zones",
        "--data-dir",
        "--config",
        "--service-ttl",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

/// The next log line that holds `wanted`, within 15 s.
fn log_line(log: &std::sync::mpsc::Receiver<String>, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {wanted:?} within 15 s"));
        if line.contains(wanted) {
            return line;
        }
    }
}

#[tokio::test]
async fn sighup_reloads_the_zone_files() {
    let dir = common::tools::TempDir::new("sighup");
    let zone = |ip: &str| {
        let text =
            format!("$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\nwww IN A {ip}\n");
        std::fs::write(dir.0.join("example.test.zone"), text).unwrap();
    };
    zone("10.8.0.1");
    // A file named for one origin that holds another: served, and the mismatch is said.
    std::fs::write(
        dir.0.join("misnamed.zone"),
        "$ORIGIN other.test.\n@ 60 IN SOA ns1 hostmaster 1 3600 600 86400 30\n",
    )
    .unwrap();
    let data_dir = common::tools::TempDir::new("sighup-data");
    let Running {
        child, log: rx, dns, ..
    } = start_binary(&dir.0, &data_dir.0);
    let www = async || common::dns::addresses(&common::dns::udp(dns, "www.example.test.", RecordType::A).await);
    assert_eq!(www().await, [common::ip("10.8.0.1")]);

    zone("10.8.0.2");
    let hup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    hup();
    log_line(&rx, "zones reloaded");
    assert_eq!(www().await, [common::ip("10.8.0.2")]);

    // The folder moved away: a reload would drop every zone, so it is refused, and served on.
    let moved = dir.0.with_extension("moved");
    std::fs::rename(&dir.0, &moved).unwrap();
    hup();
    let line = log_line(&rx, "zones not reloaded");
    assert!(line.contains("no zone file") && line.contains("ERROR"), "{line}");
    assert_eq!(www().await, [common::ip("10.8.0.2")]);
    std::fs::rename(&moved, &dir.0).unwrap();
    drop(child);
}

/// A zones folder that is missing, or that has no file for the served domain, or a file named
/// for another origin, is said at start rather than served silently.
#[test]
fn zone_folder_surprises_are_warned_at_start() {
    let data_dir = common::tools::TempDir::new("zone-warnings-data");
    let missing = data_dir.0.join("no-such-zones");
    let running = start_binary(&missing, &data_dir.0.join("data"));
    drop(running.child);
    let log = running.startup_log;
    let warned = |text: &str| log.iter().any(|l| l.contains("WARN") && l.contains(text));
    assert!(warned("does not exist"), "{log:#?}");
    assert!(warned("no zone file in"), "{log:#?}");

    let dir = common::tools::TempDir::new("zone-warnings");
    std::fs::write(
        dir.0.join("example.zone"),
        "$ORIGIN trading-dc.\n@ 60 IN SOA ns1 hostmaster 1 3600 600 86400 30\n",
    )
    .unwrap();
    let running = start_binary(&dir.0, &data_dir.0.join("data2"));
    drop(running.child);
    let log = running.startup_log;
    let line = log
        .iter()
        .find(|l| l.contains("is named for"))
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert!(line.contains("example.zone") && line.contains("trading-dc."), "{line}");
}

/// The HTTP/2 connection preface, then an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Whether the server closed `stream` within `within` (it reads to the end; whatever the server
/// sent before closing, a SETTINGS or GOAWAY frame, is skipped).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// HTTP/2 connections are bounded in time like HTTP/1.1 ones: one that sent only its preface,
/// or a HEADERS frame it never finished (no END_HEADERS), is closed after the header timeout
/// (700 such connections once used up every file descriptor, DNS over TCP included). A stop
/// ends within the drain deadline whatever clients do, and releases the database.
#[tokio::test]
async fn unfinished_http2_and_http1_requests_are_cut_and_sigterm_always_ends() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let data_dir = common::temp_data_dir();
    let running =
        common::process::start_binary_with(&common::repo_zones(), &data_dir, &["--http-header-timeout", "1s"]);
    let http = running.http;
    let mut preface_only = TcpStream::connect(http).await.unwrap();
    preface_only.write_all(H2_PREFACE).await.unwrap();
    // HEADERS (type 1) on stream 1 with END_STREAM but not END_HEADERS: the block never ends.
    let mut unfinished = TcpStream::connect(http).await.unwrap();
    unfinished.write_all(H2_PREFACE).await.unwrap();
    unfinished
        .write_all(&[0, 0, 3, 0x1, 0x1, 0, 0, 0, 1, 0x82, 0x86, 0x84])
        .await
        .unwrap();
    let mut half_http1 = TcpStream::connect(http).await.unwrap();
    half_http1
        .write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for (name, stream) in [
        ("preface only", &mut preface_only),
        ("unfinished HEADERS", &mut unfinished),
        ("half an HTTP/1.1 header", &mut half_http1),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "{name}: still open 5 s into a 1 s header timeout"
        );
    }
    // A connection in use is not idle, however long it lives: 3 s of requests on one
    // connection each, HTTP/1.1 and HTTP/2, with a 1 s timeout.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let h1 = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let busy_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < busy_until {
        for client in [&h1, &h2] {
            let response = client.get(format!("http://{http}/v1/agent/self")).send().await;
            assert_eq!(response.expect("a busy connection stays open").status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A blocking query over HTTP/2 is a request in progress: not cut.
    let index = h2
        .get(format!("http://{http}/v1/catalog/services"))
        .send()
        .await
        .unwrap()
        .headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let response = h2
        .get(format!("http://{http}/v1/catalog/services?index={index}&wait=3s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());

    // Clients that hold connections open in every way a stop could wait on.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream.write_all(H2_PREFACE).await.unwrap();
        held.push(stream);
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream
            .write_all(b"PUT /v1/agent/service/register HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let watcher = tokio::spawn(
        h2.get(format!("http://{http}/v1/catalog/services?index={index}&wait=10m"))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut child = running.child;
    let stopping = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "sextant still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let _ = watcher.await;
    drop(held);
    // The database lock went with the process: a new server starts on the same data.
    let again = start_binary(&common::repo_zones(), &data_dir);
    drop(again);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A start that fails after some of it is up (here: the HTTP port is taken) leaves nothing
/// behind: the DNS port can be bound again and the data directory opened.
#[tokio::test]
async fn a_start_that_fails_on_the_http_port_releases_the_dns_port_and_the_data_directory() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dns_port = common::tools::free_port();
    let config = sextant::Config {
        dns: format!("127.0.0.1:{dns_port}").parse().unwrap(),
        http: taken.local_addr().unwrap(),
        ..common::test_config()
    };
    let data_dir = config.data_dir.clone();
    let error = sextant::App::bind(config.clone())
        .await
        .err()
        .expect("the HTTP port is taken");
    assert!(error.to_string().contains("cannot listen for HTTP"), "{error}");
    std::net::UdpSocket::bind(("127.0.0.1", dns_port)).expect("the DNS port (UDP) is free again");
    std::net::TcpListener::bind(("127.0.0.1", dns_port)).expect("the DNS port (TCP) is free again");
    let store = sextant::store::RedbStore::open(&data_dir).expect("the database is free again");
    drop(store);
    // And a start with a free HTTP port works on the same DNS port and data.
    let server = common::TestServer::start_with(sextant::Config {
        http: "127.0.0.1:0".parse().unwrap(),
        ..config
    })
    .await;
    assert_eq!(server.dns.port(), dns_port);
    server.stop().await;
}

/// What clients send is logged escaped: a note with a newline cannot forge a log line.
#[tokio::test]
async fn user_text_cannot_forge_log_lines() {
    let data_dir = common::temp_data_dir();
    let running = start_binary(&common::repo_zones(), &data_dir);
    let client = reqwest::Client::new();
    let http = running.http;
    let body = r#"{"Name": "orders", "ID": "orders-1", "Check": {"CheckID": "orders-ttl", "TTL": "1h"}}"#;
    let response = client
        .put(format!("http://{http}/v1/agent/service/register"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .put(format!(
            "http://{http}/v1/agent/check/pass/orders-ttl?note=ok%0aFAKE%20ERROR%20forged"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut changed = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while changed.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = running.log.recv_timeout(Duration::from_millis(100)) {
            assert!(!line.starts_with("FAKE"), "a forged line: {line}");
            if line.contains("check status changed") {
                changed = Some(line);
            }
        }
    }
    let line = changed.expect("the status change is logged");
    assert!(line.contains(r#"ok\nFAKE ERROR forged"#), "{line}");
    drop(running);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `--log-format json`: every line one JSON object (for log shippers); at start, the registry's
/// size and how long reading it took; one line per refused write (a bad one, one past a bound),
/// with the reason its client got; one per check status change.
#[tokio::test]
async fn json_logs_say_what_happened() {
    let data_dir = common::temp_data_dir();
    let running = common::process::start_binary_with(
        &common::repo_zones(),
        &data_dir,
        &["--log-format", "json", "--max-kv-bytes", "16"],
    );
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
    };
    let lines: Vec<serde_json::Value> = running.startup_log.iter().map(|l| parse(l)).collect();
    let restored = lines
        .iter()
        .find(|l| l["message"] == "registry restored")
        .expect("a startup line");
    assert_eq!(
        (restored["instances"].as_u64(), restored["services"].as_u64()),
        (Some(0), Some(0)),
        "{restored}"
    );
    assert!(restored["took_ms"].is_u64(), "{restored}");

    let client = reqwest::Client::new();
    let http = running.http;
    let refused = client
        .put(format!("http://{http}/v1/agent/service/register"))
        .body(r#"{"Name": "orders", "Port": "eighty"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let line = parse(&log_line(&running.log, "write refused"));
    assert_eq!(
        (&line["level"], &line["status"]),
        (&serde_json::json!("WARN"), &serde_json::json!(400)),
        "{line}"
    );
    assert!(line["reason"].as_str().unwrap().contains("Port"), "{line}");

    let body = r#"{"Name": "orders", "ID": "orders-1", "Check": {"TTL": "1h"}}"#;
    let registered = client
        .put(format!("http://{http}/v1/agent/service/register"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let passed = client
        .put(format!("http://{http}/v1/agent/check/pass/service:orders-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(passed.status(), 200);
    let line = parse(&log_line(&running.log, "check status changed"));
    assert_eq!(
        (&line["from"], &line["to"], &line["instance"]),
        (
            &serde_json::json!("critical"),
            &serde_json::json!("passing"),
            &serde_json::json!("orders-1")
        ),
        "{line}"
    );

    // A write past a bound: a 503, and a line naming the setting.
    let full = client
        .put(format!("http://{http}/v1/kv/config"))
        .body(vec![b'x'; 32])
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503);
    let line = parse(&log_line(&running.log, "--max-kv-bytes"));
    assert_eq!(
        (&line["message"], &line["status"]),
        (&serde_json::json!("write refused"), &serde_json::json!(503)),
        "{line}"
    );
    drop(running);
    let _ = std::fs::remove_dir_all(&data_dir);
}
