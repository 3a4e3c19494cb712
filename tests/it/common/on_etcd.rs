//! Real `sextant serve` processes on a test's etcd cluster, and what the etcd tests ask them.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::json;

use super::dns::{addresses, udp};
use super::etcd::EtcdCluster;
use super::process::{Running, start_binary_with};
use super::{ip, repo_zones, temp_data_dir};

/// The token every request carries, for servers that ask for one (`--acl-token`; a server
/// without one ignores it).
pub const TOKEN: &str = "cluster-test-token";

pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("X-Consul-Token", TOKEN.parse().unwrap());
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .default_headers(headers)
        .build()
        .unwrap()
}

pub async fn register(running: &Running, i: usize) -> (reqwest::StatusCode, String) {
    register_at(running.http, i).await
}

/// Registers `svc-<i>` at 10.7.<i / 250>.<i % 250 + 1> through the server at `http`.
pub async fn register_at(http: std::net::SocketAddr, i: usize) -> (reqwest::StatusCode, String) {
    let body = json!({"Name": format!("svc-{i}"), "ID": format!("svc-{i}"),
                      "Address": format!("10.7.{}.{}", i / 250, i % 250 + 1), "Port": 80});
    let response = client()
        .put(format!("http://{http}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .expect("HTTP PUT");
    (response.status(), response.text().await.unwrap_or_default())
}

pub async fn answers(running: &Running, i: usize) -> bool {
    let reply = udp(running.dns, &format!("svc-{i}.service.trading-dc."), RecordType::A).await;
    addresses(&reply) == [ip(&format!("10.7.{}.{}", i / 250, i % 250 + 1))]
}

pub fn start(cluster: &EtcdCluster, prefix: &str) -> Running {
    start_named(cluster, prefix, "sextant-a")
}

pub fn start_named(cluster: &EtcdCluster, prefix: &str, node: &str) -> Running {
    start_named_with(cluster, prefix, node, &[])
}

/// As [`start_named`], with more arguments.
pub fn start_named_with(cluster: &EtcdCluster, prefix: &str, node: &str, more: &[&str]) -> Running {
    let endpoints = cluster.endpoints();
    let mut args = vec!["--etcd", &endpoints, "--etcd-prefix", prefix, "--node-name", node];
    args.extend_from_slice(more);
    start_binary_with(&repo_zones(), &temp_data_dir(), &args)
}

/// As [`start_named`], answering DNS on 127.0.0.1:`port` (so that it can come back on it).
pub fn start_named_on(cluster: &EtcdCluster, prefix: &str, node: &str, port: u16) -> Running {
    let endpoints = cluster.endpoints();
    let command = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"));
    super::process::start_command_on(
        command,
        SocketAddr::from(([127, 0, 0, 1], port)),
        &repo_zones(),
        &temp_data_dir(),
        &["--etcd", &endpoints, "--etcd-prefix", prefix, "--node-name", node],
    )
}

pub fn kill_9(running: Running) {
    let mut child = running.child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

/// The `X-Consul-Index` of a read and its body.
pub async fn get(running: &Running, path: &str) -> (u64, serde_json::Value) {
    let response = client()
        .get(format!("http://{}{path}", running.http))
        .send()
        .await
        .expect("HTTP GET");
    assert_eq!(response.status(), 200, "GET {path}");
    let index = response.headers()["x-consul-index"].to_str().unwrap().parse().unwrap();
    (index, response.json().await.unwrap())
}
