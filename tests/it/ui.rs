//! The web dashboard at `/ui/`: its files (content types, cache headers, outside the ACL), the
//! reads behind it, and the page itself in a real browser (headless Chromium driven by
//! Playwright): services appear without a reload, an instance turns critical when its endpoint
//! fails, the search box filters, the charts show DNS traffic, and the token is asked for.

use std::path::PathBuf;

use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sextant::Config;

use crate::common::browser::Browser;
use crate::common::dns::udp;
use crate::common::endpoint::{HttpEndpoint, Mode};
use crate::common::{TestServer, test_config, wait_for};

const TOKEN: &str = "dashboard-token-3b1f";

async fn put(server: &TestServer, path: &str, body: &Value) {
    let response = server
        .http
        .put(server.url(path))
        .header("X-Consul-Token", TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "{path}: {}", response.text().await.unwrap());
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = server.http.get(server.url(path));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    request.send().await.unwrap()
}

async fn server_with_token() -> TestServer {
    TestServer::start_with(Config {
        acl_token: Some(TOKEN.into()),
        ..test_config()
    })
    .await
}

/// The page and its files are served without a token (they hold no data) with their content
/// types and cache headers; the data behind them asks for the token.
#[tokio::test]
async fn files_are_public_with_content_types_and_cache_headers_and_data_asks_for_the_token() {
    let server = server_with_token().await;
    let redirect = server.http.get(server.url("/ui")).send().await.unwrap();
    assert_eq!(redirect.url().path(), "/ui/", "/ui leads to the page");

    let page = get(&server, "/ui/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();

    // Revalidation: the same page is not sent again.
    let again = server
        .http
        .get(server.url("/ui/"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // The files the page names, by their hashed names, cached for good.
    let named: Vec<&str> = html.split('"').filter(|part| part.starts_with("/ui/")).collect();
    for (extension, content_type) in [
        (".js", "text/javascript; charset=utf-8"),
        (".css", "text/css; charset=utf-8"),
        (".svg", "image/svg+xml"),
    ] {
        let path = named
            .iter()
            .find(|path| path.ends_with(extension))
            .unwrap_or_else(|| panic!("no {extension} file in {html}"));
        assert_eq!(path.matches('.').count(), 2, "{path} carries a hash");
        let file = get(&server, path, None).await;
        assert_eq!(file.status(), StatusCode::OK, "{path}");
        assert_eq!(file.headers()["content-type"], content_type, "{path}");
        assert_eq!(
            file.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{path}"
        );
        assert!(!file.bytes().await.unwrap().is_empty());
    }
    let missing = get(&server, "/ui/app.0000.js", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The data: 403 without the token, served with it.
    for path in ["/v1/internal/ui/services", "/v1/internal/ui/history?name=web"] {
        assert_eq!(get(&server, path, None).await.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(get(&server, path, Some(TOKEN)).await.status(), StatusCode::OK, "{path}");
    }
    server.stop().await;
}

/// The list counts instances and checks by health, and a blocking query on it wakes on a
/// health change (not only on registrations); the history has an hour of points and the step in
/// progress, with the DNS queries sent.
#[tokio::test]
async fn the_list_wakes_on_health_changes_and_the_history_counts_dns_queries() {
    let server = server_with_token().await;
    put(
        &server,
        "/v1/agent/service/register",
        &json!({"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["blue"], "Check": {"CheckID": "web-ttl", "TTL": "60s", "Status": "passing"}}),
    )
    .await;
    put(
        &server,
        "/v1/agent/service/register",
        &json!({"Name": "web", "ID": "web-2", "Port": 81, "Check": {"CheckID": "web2-ttl", "TTL": "60s", "Status": "passing"}}),
    )
    .await;
    let list = get(&server, "/v1/internal/ui/services", Some(TOKEN)).await;
    let index: u64 = list.headers()["x-consul-index"].to_str().unwrap().parse().unwrap();
    let list: Value = list.json().await.unwrap();
    assert_eq!(list[0]["Name"], "web");
    assert_eq!(list[0]["InstanceCount"], 2);
    assert_eq!(list[0]["InstancesPassing"], 2);
    assert_eq!(list[0]["Tags"], json!(["blue"]));

    // A blocking query on the list, woken by a check failing.
    let waiting = {
        let (http, url) = (
            server.http.clone(),
            server.url(&format!("/v1/internal/ui/services?index={index}&wait=30s")),
        );
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = http.get(url).header("X-Consul-Token", TOKEN).send().await.unwrap();
            (started.elapsed(), response.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    put(&server, "/v1/agent/check/fail/web-ttl", &json!(null)).await;
    let (took, woken) = waiting.await.unwrap();
    assert!(
        took < std::time::Duration::from_secs(10),
        "woken by the change, not the wait"
    );
    assert_eq!(woken[0]["InstancesCritical"], 1, "{woken}");
    assert_eq!(woken[0]["ChecksCritical"], 1, "{woken}");
    assert_eq!(woken[0]["InstancesPassing"], 1, "{woken}");

    for _ in 0..30 {
        udp(server.dns, "web.service.trading-dc.", RecordType::SRV).await;
    }
    let history: Value = get(&server, "/v1/internal/ui/history?name=web&name=nothing", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["StepSeconds"], sextant::history::STEP.as_secs());
    assert!(history["Services"].get("nothing").is_none(), "{history}");
    let web = &history["Services"]["web"];
    let queries = web["Queries"].as_array().unwrap();
    assert_eq!(
        queries.len(),
        sextant::history::POINTS + 1,
        "an hour of points and the live one"
    );
    let live = queries.last().unwrap().as_f64().unwrap();
    assert!(live > 0.0, "30 queries in the step in progress: {web}");
    assert_eq!(web["Passing"].as_array().unwrap().last().unwrap(), 1);
    assert_eq!(web["Critical"].as_array().unwrap().last().unwrap(), 1);

    let too_many: String = (0..201).map(|i| format!("name=s{i}&")).collect();
    let refused = get(&server, &format!("/v1/internal/ui/history?{too_many}"), Some(TOKEN)).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("too many services"));
    server.stop().await;
}

fn screenshot(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The whole page in headless Chromium, against a server that asks for a token and damps
/// flapping.
#[tokio::test]
async fn the_dashboard_in_a_real_browser_follows_the_registry_live() {
    let server = TestServer::start_with(Config {
        acl_token: Some(TOKEN.into()),
        flap_threshold: 3,
        flap_window: std::time::Duration::from_secs(60),
        ..test_config()
    })
    .await;
    let orders_endpoint = HttpEndpoint::start(200).await;
    put(
        &server,
        "/v1/agent/service/register",
        &json!({"Name": "orders", "ID": "orders-1", "Port": 8080, "Tags": ["v2", "trading"],
                "Check": {"CheckID": "orders-http", "Name": "orders health", "HTTP": orders_endpoint.url("/health"), "Interval": "1s"}}),
    )
    .await;
    for (name, id, port) in [
        ("payments", "payments-1", 9000),
        ("payments", "payments-2", 9001),
        ("inventory", "inventory-1", 7000),
    ] {
        put(
            &server,
            "/v1/agent/service/register",
            &json!({"Name": name, "ID": id, "Port": port, "Tags": ["eu"], "Check": {"TTL": "60s", "Status": "passing"}}),
        )
        .await;
    }
    wait_for("orders' first probe passes", async || {
        let entries: Value = get(&server, "/v1/health/service/orders?passing", Some(TOKEN))
            .await
            .json()
            .await
            .unwrap();
        entries.as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    for _ in 0..40 {
        udp(server.dns, "orders.service.trading-dc.", RecordType::SRV).await;
    }

    let mut browser = Browser::start().await;
    browser.open(&server.url("/ui/")).await;

    // The token is asked for; a wrong one is refused, the right one opens the list.
    browser.wait_for("#login:not([hidden])", "the login form").await;
    browser.fill("#token", "wrong").await;
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_for(
            "#login:not([hidden]) #login-error:not(:empty)",
            "a wrong token is refused",
        )
        .await;
    assert!(browser.text("#login-error").await.contains("token"));
    browser.fill("#token", TOKEN).await;
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_for("tr[data-service=\"orders\"]", "the list after signing in")
        .await;
    assert_eq!(browser.count("tbody tr").await, 3, "orders, payments, inventory");
    assert!(browser.text("#summary").await.starts_with("3 services, 4 instances"));
    assert_eq!(
        browser
            .attr("tr[data-service=\"payments\"]", "data-passing")
            .await
            .as_deref(),
        Some("2")
    );
    browser.mark("loaded once").await;

    // The chart shows the DNS queries sent for orders.
    browser
        .wait_for(
            "tr[data-service=\"orders\"] svg.chart[data-max-qps]:not([data-max-qps=\"0.000\"])",
            "orders' chart shows its DNS queries",
        )
        .await;

    // A service registered over HTTP appears without a reload.
    put(
        &server,
        "/v1/agent/service/register",
        &json!({"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["blue"], "Check": {"TTL": "60s", "Status": "passing"}}),
    )
    .await;
    browser
        .wait_for("tr[data-service=\"web\"]", "a new service appears by itself")
        .await;

    // An instance's checks; its endpoint fails, and it turns critical, in the detail and the list.
    browser.click("tr[data-service=\"orders\"]").await;
    browser
        .wait_for(
            ".instance[data-instance=\"orders-1\"][data-health=\"passing\"] .check[data-check=\"orders-http\"]",
            "orders-1 with its passing check",
        )
        .await;
    assert!(
        browser
            .text(".check[data-check=\"orders-http\"] .when")
            .await
            .contains("ago")
    );
    orders_endpoint.set_status(500);
    browser
        .wait_for(
            ".instance[data-instance=\"orders-1\"][data-health=\"critical\"] .check[data-status=\"critical\"]",
            "orders-1 turns critical when its endpoint fails",
        )
        .await;
    assert!(
        browser
            .text(".check[data-check=\"orders-http\"] pre")
            .await
            .contains("500")
    );
    browser.screenshot(&screenshot("dashboard-service.png")).await;
    browser.click("#back").await;
    browser
        .wait_for(
            "tr[data-service=\"orders\"][data-critical=\"1\"]",
            "the list counts orders-1 as critical",
        )
        .await;

    // An instance whose endpoint flips on every probe is shown flapping, in the list and its
    // detail.
    let flappy = HttpEndpoint::start(200).await;
    put(
        &server,
        "/v1/agent/service/register",
        &json!({"Name": "ledger", "ID": "ledger-1", "Port": 6000,
                "Check": {"CheckID": "ledger-http", "HTTP": flappy.url("/health"), "Interval": "1s"}}),
    )
    .await;
    flappy.set_mode(Mode::Alternate);
    browser
        .wait_for(
            "tr[data-service=\"ledger\"][data-flapping=\"1\"] .badge.flapping",
            "ledger shown flapping",
        )
        .await;
    browser.click("tr[data-service=\"ledger\"]").await;
    browser
        .wait_for(
            ".instance[data-instance=\"ledger-1\"] .badge.flapping",
            "ledger-1 shown flapping",
        )
        .await;
    browser.click("#back").await;
    browser
        .wait_for("tr[data-service=\"orders\"]", "back to the list")
        .await;

    // The search box: by name, then by tag.
    browser.fill("#search", "pay").await;
    browser
        .wait_for("tbody:not(:has(tr[data-service=\"orders\"]))", "orders filtered out")
        .await;
    assert_eq!(browser.count("tbody tr").await, 1);
    assert_eq!(browser.count("tr[data-service=\"payments\"]").await, 1);
    browser.fill("#search", "eu").await;
    browser.wait_for("tr[data-service=\"inventory\"]", "tag search").await;
    assert_eq!(
        browser.count("tbody tr").await,
        2,
        "payments and inventory carry the tag eu"
    );
    browser.fill("#search", "ledg").await;
    browser
        .wait_for(
            "tbody:not(:has(tr[data-service=\"payments\"]))",
            "payments filtered out",
        )
        .await;
    assert_eq!(browser.count("tbody tr").await, 1, "ledger alone");
    browser.fill("#search", "no-such-thing").await;
    browser.wait_for("#empty:not([hidden])", "nothing matches").await;
    browser.fill("#search", "").await;
    browser.wait_for("tr[data-service=\"orders\"]", "search cleared").await;

    assert_eq!(
        browser.marked().await.as_deref(),
        Some("loaded once"),
        "every update arrived without a page load"
    );
    assert_eq!(browser.script_errors().await, Vec::<String>::new());
    browser.screenshot(&screenshot("dashboard.png")).await;
    browser.close().await;
    server.stop().await;
}
