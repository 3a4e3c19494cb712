//! The ACL hook: with a token, every request carries it; without one, other hosts may read but
//! not write. Real HTTP over real sockets, including from a non-loopback address of this machine.

use crate::common;

use std::net::{IpAddr, SocketAddr};

use common::dns::*;
use common::{TestServer, temp_data_dir, test_config};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::json;
use sextant::{App, Config};

const TOKEN: &str = "7f3c1e0a-orders-s3cret";

fn registration() -> serde_json::Value {
    json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80})
}

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    header: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let mut request = server.http.request(method.clone(), server.url(path));
    if method == reqwest::Method::PUT && path.ends_with("/register") {
        request = request.json(&registration());
    }
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn with_a_token_every_request_must_carry_it() {
    use reqwest::Method;
    let server = TestServer::start_with(Config {
        acl_token: Some(TOKEN.into()),
        ..test_config()
    })
    .await;
    let register = "/v1/agent/service/register";

    // No token, or a wrong one: 403 for reads and writes alike, and nothing stored.
    let wrong = [
        None,
        Some(("X-Consul-Token", "wrong")),
        Some(("X-Consul-Token", &TOKEN[..TOKEN.len() - 1])),
        Some(("X-Consul-Token", &*format!("{TOKEN}x"))),
        Some(("Authorization", &*format!("Basic {TOKEN}"))),
        Some(("Authorization", "Bearer wrong")),
    ];
    for header in wrong {
        for (method, path) in [
            (Method::PUT, register),
            (Method::GET, "/v1/catalog/services"),
            (Method::GET, "/v1/health/service/orders"),
            (Method::GET, "/v1/agent/self"),
            (Method::GET, "/v1/no/such/endpoint"),
        ] {
            let (status, body) = call(&server, method.clone(), path, header).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} with {header:?}: {body}");
            assert!(body.contains("token"), "{body}");
        }
    }
    let reply = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(
        rcode(&reply),
        ResponseCode::NXDomain,
        "a refused registration stored nothing"
    );

    // The token, in either header: served.
    let (status, body) = call(&server, Method::PUT, register, Some(("X-Consul-Token", TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for bearer in [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}")] {
        let (status, body) = call(
            &server,
            Method::GET,
            "/v1/health/service/orders",
            Some(("Authorization", &bearer)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("orders-1"), "{body}");
    }
    let (status, _) = call(
        &server,
        Method::GET,
        "/v1/no/such/endpoint",
        Some(("X-Consul-Token", TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // DNS carries no tokens: it answers as ever.
    let reply = udp(server.dns, "orders.service.trading-dc.", RecordType::A).await;
    assert_eq!(addresses(&reply), [common::ip("10.0.0.1")]);
    server.stop().await;
}

/// This machine's address on its default route: a non-loopback source for a local connection.
fn non_loopback_address() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // Connecting a UDP socket sends nothing; it only picks the route and so the source address.
    probe
        .connect("192.0.2.1:9")
        .and_then(|()| probe.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .expect("this test needs a non-loopback IPv4 address with a route (any network interface up)")
}

#[tokio::test]
async fn without_a_token_other_hosts_may_read_but_not_write() {
    let server = TestServer::start_with(Config {
        http: "0.0.0.0:0".parse().unwrap(),
        ..test_config()
    })
    .await;
    let own = non_loopback_address();
    let port = server.app().http_addr().port();
    let from_host = reqwest::Client::builder().local_address(own).build().unwrap();
    let base = format!("http://{}", SocketAddr::new(own, port));

    // From loopback: writes are taken.
    server.register(registration()).await;

    // From another address (this machine's own, but not loopback): reads yes, writes no.
    let response = from_host
        .get(format!("{base}/v1/health/service/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("orders-1"));
    for (path, body) in [
        ("/v1/agent/service/register", Some(json!({"Name": "intruder"}))),
        ("/v1/agent/service/deregister/orders-1", None),
        ("/v1/agent/check/fail/service:orders-1", None),
    ] {
        let mut request = from_host.put(format!("{base}{path}"));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let message = response.text().await.unwrap();
        assert!(message.contains("--acl-token"), "{message}");
        assert!(message.contains(&own.to_string()), "{message}");
    }
    let services = server.get_json("/v1/catalog/services").await;
    assert_eq!(services, json!({"orders": []}), "nothing written from the other host");
    server.stop().await;
}

#[tokio::test]
async fn the_token_can_come_from_a_file_and_bad_ones_stop_the_start() {
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    let server = TestServer::start_with(Config {
        acl_token_file: Some(file.clone()),
        ..test_config()
    })
    .await;
    let (status, _) = call(&server, reqwest::Method::GET, "/v1/catalog/services", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &server,
        reqwest::Method::GET,
        "/v1/catalog/services",
        Some(("X-Consul-Token", TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;

    let missing = dir.join("no-such-token");
    std::fs::write(dir.join("empty"), "\n").unwrap();
    for (config, expected) in [
        (
            Config {
                acl_token_file: Some(missing.clone()),
                ..test_config()
            },
            missing.display().to_string(),
        ),
        (
            Config {
                acl_token_file: Some(dir.join("empty")),
                ..test_config()
            },
            "empty".into(),
        ),
        (
            Config {
                acl_token: Some("two words".into()),
                ..test_config()
            },
            "visible ASCII".into(),
        ),
        (
            Config {
                acl_token: Some(TOKEN.into()),
                acl_token_file: Some(file.clone()),
                ..test_config()
            },
            "not both".into(),
        ),
    ] {
        let data_dir = config.data_dir.clone();
        let error = App::bind(config).await.err().expect("refused at start").to_string();
        assert!(error.contains(&expected), "{error}");
        let _ = std::fs::remove_dir_all(data_dir);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A read-only token (`--acl-read-token-file`): every read is served with it, every write is
/// refused with a 403 that says why (registrations, check updates, the catalog, maintenance, the
/// key/value store); the read-write token still writes; and it cannot stand alone.
#[tokio::test]
async fn a_read_only_token_reads_and_is_refused_every_write() {
    const READER: &str = "scraper-4d2e-read-only";
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("read-token");
    std::fs::write(&file, format!("{READER}\n")).unwrap();
    let server = TestServer::start_with(Config {
        acl_token: Some(TOKEN.into()),
        acl_read_token_file: Some(file.clone()),
        ..test_config()
    })
    .await;
    let write_token = Some(("X-Consul-Token", TOKEN));
    let (status, body) = call(&server, reqwest::Method::PUT, "/v1/agent/service/register", write_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let put = async |path: &str, token: &str, body: &str| {
        let response = server
            .http
            .put(server.url(path))
            .header("X-Consul-Token", token)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(put("/v1/kv/config/a", TOKEN, "1").await.0, StatusCode::OK);
    let reader = Some(("Authorization", "Bearer scraper-4d2e-read-only"));
    for path in [
        "/v1/catalog/services",
        "/v1/health/service/orders?passing",
        "/v1/agent/services",
        "/v1/kv/config/a",
        "/v1/catalog/nodes",
        "/metrics",
    ] {
        let (status, body) = call(&server, reqwest::Method::GET, path, reader).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    for (path, body) in [
        ("/v1/agent/service/register", registration().to_string()),
        ("/v1/agent/service/deregister/orders-1", String::new()),
        ("/v1/agent/service/maintenance/orders-1?enable=true", String::new()),
        ("/v1/agent/maintenance?enable=true", String::new()),
        (
            "/v1/agent/check/register",
            json!({"Name": "x", "TTL": "1h"}).to_string(),
        ),
        ("/v1/kv/config/a", "2".into()),
        (
            "/v1/catalog/register",
            json!({"Node": "ext", "Address": "10.9.0.1"}).to_string(),
        ),
    ] {
        let (status, text) = put(path, READER, &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {text}");
        assert!(text.contains("may only read"), "{path}: {text}");
    }
    let deleted = server
        .http
        .delete(server.url("/v1/kv/config/a"))
        .header("X-Consul-Token", READER)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::FORBIDDEN);
    // Nothing was written with it.
    let (_, body) = call(&server, reqwest::Method::GET, "/v1/kv/config/a?raw", reader).await;
    assert_eq!(body, "1");
    let (_, body) = call(&server, reqwest::Method::GET, "/v1/catalog/nodes", reader).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        call(&server, reqwest::Method::GET, "/v1/agent/checks", reader)
            .await
            .1
            .len()
            <= 2
    );
    server.stop().await;

    // Alone, or the same as the read-write token: refused at start.
    for (config, expected) in [
        (
            Config {
                acl_read_token: Some(READER.into()),
                ..test_config()
            },
            "needs acl_token",
        ),
        (
            Config {
                acl_token: Some(TOKEN.into()),
                acl_read_token: Some(TOKEN.into()),
                ..test_config()
            },
            "must differ",
        ),
    ] {
        let data_dir = config.data_dir.clone();
        let error = App::bind(config).await.err().expect("refused at start").to_string();
        assert!(error.contains(expected), "{error}");
        let _ = std::fs::remove_dir_all(data_dir);
    }
    let _ = std::fs::remove_dir_all(dir);
}
