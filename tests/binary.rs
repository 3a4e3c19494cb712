//! The real `sextant` binary: starts on port 0, says where it listens, serves, and stops cleanly
//! on SIGTERM.

mod common;

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

    let dir = std::env::temp_dir().join(format!("sextant-badzone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("trading-dc.zone"), "@ IN SOA this is not a zone\n").unwrap();
    let data_dir = common::temp_data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--zones"])
        .arg(&dir)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
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

#[tokio::test]
async fn sighup_reloads_the_zone_files() {
    let dir = std::env::temp_dir().join(format!("sextant-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zone = |ip: &str| {
        let text =
            format!("$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\nwww IN A {ip}\n");
        std::fs::write(dir.join("example.test.zone"), text).unwrap();
    };
    zone("10.8.0.1");
    let data_dir = common::temp_data_dir();
    let Running {
        child, log: rx, dns, ..
    } = start_binary(&dir, &data_dir);
    let www = async || common::dns::addresses(&common::dns::udp(dns, "www.example.test.", RecordType::A).await);
    assert_eq!(www().await, [common::ip("10.8.0.1")]);

    zone("10.8.0.2");
    let hup = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the server logs the reload");
        if line.contains("zones reloaded") {
            break;
        }
    }
    assert_eq!(www().await, [common::ip("10.8.0.2")]);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&data_dir);
}
