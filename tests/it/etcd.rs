//! The registry kept in a real 3-member etcd cluster (`--etcd`): the real binary, killed with
//! SIGKILL and restarted, serves every registration it acknowledged; losing one member loses
//! nothing and refuses nothing; with etcd out of reach writes get 503 naming etcd while DNS keeps
//! answering; a second server on the same prefix is refused at start; etcd over TLS with client
//! certificates.

use crate::common;

use std::time::Duration;

use common::dns::{addresses, rcode, udp};
use common::etcd::EtcdCluster;
use common::process::{Running, start_binary_with};
use common::{ip, repo_zones, temp_data_dir};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn register(running: &Running, i: usize) -> (reqwest::StatusCode, String) {
    let body = json!({"Name": format!("svc-{i}"), "ID": format!("svc-{i}"),
                      "Address": format!("10.7.{}.{}", i / 250, i % 250 + 1), "Port": 80});
    let response = client()
        .put(format!("http://{}/v1/agent/service/register", running.http))
        .json(&body)
        .send()
        .await
        .expect("HTTP PUT");
    (response.status(), response.text().await.unwrap_or_default())
}

async fn answers(running: &Running, i: usize) -> bool {
    let reply = udp(running.dns, &format!("svc-{i}.service.trading-dc."), RecordType::A).await;
    addresses(&reply) == [ip(&format!("10.7.{}.{}", i / 250, i % 250 + 1))]
}

fn start(cluster: &EtcdCluster, prefix: &str) -> Running {
    let endpoints = cluster.endpoints();
    start_binary_with(
        &repo_zones(),
        &temp_data_dir(),
        &[
            "--etcd",
            &endpoints,
            "--etcd-prefix",
            prefix,
            "--node-name",
            "sextant-a",
        ],
    )
}

fn kill_9(running: Running) {
    let mut child = running.child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

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
async fn without_etcd_writes_are_refused_and_dns_keeps_answering() {
    let mut cluster = EtcdCluster::start(3);
    let server = start(&cluster, "/outage/");
    let (code, body) = register(&server, 1).await;
    assert_eq!(code, 200, "{body}");
    for member in 0..3 {
        cluster.kill_member(member);
    }
    let (code, body) = register(&server, 2).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("etcd"), "the refusal names etcd: {body}");
    assert!(answers(&server, 1).await, "DNS answers from memory");
    let missing = udp(server.dns, "svc-2.service.trading-dc.", RecordType::A).await;
    assert_eq!(rcode(&missing), ResponseCode::NXDomain, "a refused write is not served");
    // etcd back: writes are taken again, and a restart finds what was acknowledged only.
    for member in 0..3 {
        cluster.start_member(member);
    }
    cluster.wait_healthy();
    common::wait_for("writes taken again", async || register(&server, 3).await.0 == 200).await;
    kill_9(server);
    let server = start(&cluster, "/outage/");
    assert!(answers(&server, 1).await && answers(&server, 3).await);
    let refused = udp(server.dns, "svc-2.service.trading-dc.", RecordType::A).await;
    assert_eq!(
        rcode(&refused),
        ResponseCode::NXDomain,
        "the refused write stays refused"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_prefix_is_refused() {
    let cluster = EtcdCluster::start(3);
    let _first = start(&cluster, "/shared/");
    let endpoints = cluster.endpoints();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--zones"])
        .arg(repo_zones())
        .arg("--data-dir")
        .arg(temp_data_dir())
        .args([
            "--etcd",
            &endpoints,
            "--etcd-prefix",
            "/shared/",
            "--node-name",
            "sextant-b",
        ])
        .output()
        .expect("sextant runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another sextant server (sextant-a)") && stderr.contains("--etcd-prefix"),
        "{stderr}"
    );
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
