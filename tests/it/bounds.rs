//! What the registry holds is bounded (`--max-instances`, `--max-services`, `--max-nodes`,
//! `--max-kv-bytes`; per instance, `--max-tags-per-instance`, `--max-meta-per-instance`,
//! `--max-checks-per-instance`): a write past a bound gets a 503 (a 400 for one instance's)
//! naming the setting and stores nothing,
//! what is there may still be replaced, room made by a removal is taken again, and the server
//! goes on answering.

use crate::common;

use common::TestServer;
use common::dns::udp;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

fn instance(id: &str, service: &str, port: u16) -> Value {
    json!({"Name": service, "ID": id, "Address": "10.0.0.1", "Port": port})
}

/// Asserts a 400 that names `flag`.
fn assert_refused((status, body): (reqwest::StatusCode, String), flag: &str) {
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(flag), "the refusal names {flag}: {body}");
}

/// Asserts a 503 that names `flag`.
fn assert_full((status, body): (reqwest::StatusCode, String), flag: &str) {
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(flag), "the refusal names {flag}: {body}");
}

#[tokio::test]
async fn each_bound_refuses_one_more_and_the_server_goes_on() {
    let server = TestServer::start_with(sextant::Config {
        max_instances: 3,
        max_services: 2,
        max_nodes: 1,
        max_kv_bytes: 300,
        max_tags_per_instance: 2,
        max_meta_per_instance: 2,
        max_checks_per_instance: 2,
        ..common::test_config()
    })
    .await;
    let register = |body: Value| {
        let server = &server;
        async move { server.put_json("/v1/agent/service/register", &body).await }
    };

    // Instances: three fit, a fourth does not; one of the three may still be replaced.
    server.register(instance("web-1", "web", 80)).await;
    server.register(instance("web-2", "web", 80)).await;
    server.register(instance("api-1", "api", 80)).await;
    assert_full(register(instance("web-3", "web", 80)).await, "--max-instances");
    server.register(instance("web-1", "web", 81)).await;
    let web = server.get_json("/v1/catalog/service/web").await;
    assert_eq!(
        web.as_array().unwrap().len(),
        2,
        "nothing of the refused one stored: {web}"
    );

    // Services: with room for an instance, a third service is still refused; web is not.
    server.put("/v1/agent/service/deregister/web-2").await;
    assert_full(register(instance("db-1", "db", 80)).await, "--max-services");
    server.register(instance("web-3", "web", 80)).await;

    // External nodes: one fits, a second does not; the first may be written again.
    let node = |name: &str, address: &str| json!({"Node": name, "Address": address});
    let (status, body) = server
        .put_json("/v1/catalog/register", &node("rack-1", "10.0.1.1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_full(
        server
            .put_json("/v1/catalog/register", &node("rack-2", "10.0.1.2"))
            .await,
        "--max-nodes",
    );
    let (status, body) = server
        .put_json("/v1/catalog/register", &node("rack-1", "10.0.1.9"))
        .await;
    assert_eq!(status, 200, "{body}");
    let nodes = server.get_json("/v1/catalog/nodes").await;
    assert!(!nodes.to_string().contains("rack-2"), "{nodes}");

    // Key/value bytes: 300 in all, an entry counting its key twice and 128 bytes besides its
    // value; a key may grow within them; a deletion makes room.
    let (status, _) = server.put_raw("/v1/kv/a", vec![b'x'; 60]).await;
    assert_eq!(status, 200);
    assert_full(server.put_raw("/v1/kv/b", vec![b'x'; 60]).await, "--max-kv-bytes");
    assert_eq!(server.get("/v1/kv/b").await.0, 404, "nothing of the refused one stored");
    let (status, _) = server.put_raw("/v1/kv/a", vec![b'x'; 170]).await;
    assert_eq!(status, 200, "2 + 128 + 170 is 300");
    assert_full(server.put_raw("/v1/kv/a", vec![b'x'; 171]).await, "--max-kv-bytes");
    server.http.delete(server.url("/v1/kv/a")).send().await.unwrap();
    let (status, _) = server.put_raw("/v1/kv/b", vec![b'x'; 60]).await;
    assert_eq!(status, 200);

    // Per instance: tags, Meta keys and checks, each within its own bound.
    let tagged = json!({"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["a", "b", "c"]});
    assert_refused(register(tagged).await, "--max-tags-per-instance");
    let meta = json!({"Name": "web", "ID": "web-1", "Port": 80, "Meta": {"a": "1", "b": "2", "c": "3"}});
    assert_refused(register(meta).await, "--max-meta-per-instance");
    let ttl = |n: u32| json!({"Name": format!("c{n}"), "TTL": "1h", "Status": "passing", "ServiceID": "web-1"});
    for n in 0..2 {
        let (status, body) = server.put_json("/v1/agent/check/register", &ttl(n)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_refused(
        server.put_json("/v1/agent/check/register", &ttl(2)).await,
        "--max-checks-per-instance",
    );

    // Healthy throughout: DNS answers the services it holds.
    let answer = udp(server.dns, "web.service.trading-dc", RecordType::SRV).await;
    assert_eq!(answer.answers.len(), 2, "{answer:?}");
    assert_eq!(server.get("/v1/status/leader").await.0, 200);
    server.stop().await;
}
