//! Clients nobody here wrote, run against sextant unchanged: py-consul and the design documents'
//! aiohttp client (Python scripts in `tests/clients/`, run in the venv `scripts/test.sh` makes),
//! and VictoriaMetrics' `consul_sd_configs` (Debian's `victoria-metrics`; Prometheus shares the
//! configuration, but Debian's build leaves Consul discovery out).

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestServer, test_config, wait_for};
use serde_json::{Value, json};
use sextant::Config;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The venv's Python, with `tests/clients/requirements.txt` installed.
fn python() -> PathBuf {
    let venv = std::env::var_os("SEXTANT_CLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/client-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python venv with the clients at {venv}: run scripts/test.sh, or `python3 -m venv {venv} && \
         {venv}/bin/pip install -r tests/clients/requirements.txt` (Debian: apt-get install -y python3-venv)",
        venv = venv.display()
    );
    python
}

/// Runs `script` against `server` (its HTTP and DNS addresses as arguments, `env` added to its
/// environment); the script asserts each step itself and exits non-zero on the first failure.
/// Returns its exit status and what it printed (stdout, stderr).
async fn python_client(script: &str, server: &TestServer, env: &[(&str, &str)]) -> (bool, String, String) {
    let run = tokio::process::Command::new(python())
        .arg(clients_dir().join(script))
        .arg(server.app().http_addr().to_string())
        .arg(server.dns.to_string())
        .current_dir(clients_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("CONSUL_HTTP_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 2 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    (
        output.status.success(),
        stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// As [`python_client`], for a run that must succeed; returns what it printed.
async fn run_python_client(script: &str, server: &TestServer, env: &[(&str, &str)]) -> String {
    let (success, stdout, stderr) = python_client(script, server, env).await;
    assert!(success, "{script} failed:\n{stdout}\n{stderr}");
    stdout
}

async fn catalog_services(server: &TestServer) -> Value {
    server.get_json("/v1/catalog/services").await
}

#[tokio::test]
async fn py_consul_registers_heartbeats_watches_and_deregisters() {
    let server = TestServer::start().await;
    let printed = run_python_client("py_consul_walkthrough.py", &server, &[]).await;
    assert!(printed.contains("py-consul: all calls answered"), "{printed}");
    // What the script left behind, seen from this side: nothing.
    assert_eq!(catalog_services(&server).await, json!({}));
    server.stop().await;
}

/// The npm `consul` package (pinned in `tests/node-consul/package-lock.json`, installed by
/// `scripts/test.sh` into `target/node-consul`) on the machine's Node.js: registration, TTL
/// heartbeats, health, watches, the key/value store, an external node through the catalog and
/// maintenance, each checked against DNS by Node's own resolver.
#[tokio::test]
async fn the_npm_consul_client_registers_watches_and_uses_kv() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("target/node-consul/node_modules");
    assert!(
        modules.join("consul/package.json").exists(),
        "the npm consul client is not installed in {}: run scripts/test.sh, which runs `npm ci` there \
         from tests/node-consul/package-lock.json",
        modules.display()
    );
    let node = common::tools::require("node", "nodejs");
    let server = TestServer::start().await;
    let run = tokio::process::Command::new(node)
        .arg(root.join("tests/node-consul/walkthrough.cjs"))
        .arg(server.app().http_addr().to_string())
        .arg(server.dns.to_string())
        .env("SEXTANT_NODE_MODULES", &modules)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the npm client's walk-through finishes within 2 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the npm client's walk-through failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("npm consul: all calls answered"), "{stdout}");
    // What it left behind, seen from this side: nothing.
    assert_eq!(catalog_services(&server).await, json!({}));
    let nodes = server.get_json("/v1/catalog/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    server.stop().await;
}

#[tokio::test]
async fn the_design_documents_aiohttp_client_works_unchanged() {
    let server = TestServer::start().await;
    let printed = run_python_client("seed_walkthrough.py", &server, &[]).await;
    assert!(printed.contains("seed client: all calls answered"), "{printed}");
    assert_eq!(catalog_services(&server).await, json!({}));
    server.stop().await;
}

/// py-consul over HTTPS, told as Consul's tools are (`CONSUL_HTTP_SSL`, `CONSUL_CACERT`,
/// `CONSUL_CLIENT_CERT`/`KEY`), to a server that asks for client certificates.
#[tokio::test]
async fn py_consul_over_https_with_a_client_certificate() {
    let dir = common::tools::TempDir::new("py-consul-tls");
    let files = common::pki::TlsFiles::make(&dir.0);
    let server = TestServer::start_with(common::tls_config(&files, true)).await;
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key) = (path(&files.ca), path(&files.client_cert), path(&files.client_key));
    let tls = [
        ("CONSUL_HTTP_SSL", "true"),
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let printed = run_python_client("py_consul_walkthrough.py", &server, &tls).await;
    assert!(printed.contains("py-consul: all calls answered"), "{printed}");
    // Without its certificate, its first call fails at the handshake.
    let (success, _, stderr) = python_client("py_consul_walkthrough.py", &server, &tls[..2]).await;
    assert!(!success && stderr.contains("SSL"), "{stderr}");
    server.stop().await;
}

#[tokio::test]
async fn py_consul_with_an_acl_token_from_its_environment() {
    let token = "py-consul-token-3d1f";
    let server = TestServer::start_with(Config {
        acl_token: Some(token.into()),
        ..test_config()
    })
    .await;
    // Without the token its first call is refused, as py-consul reports a 403.
    let (success, _, stderr) = python_client("py_consul_walkthrough.py", &server, &[]).await;
    assert!(!success && stderr.contains("ACLPermissionDenied"), "{stderr}");
    // With CONSUL_HTTP_TOKEN, as its users set it, the whole walk-through runs.
    let printed = run_python_client("py_consul_walkthrough.py", &server, &[("CONSUL_HTTP_TOKEN", token)]).await;
    assert!(printed.contains("py-consul: all calls answered"), "{printed}");
    server.stop().await;
}

/// VictoriaMetrics single-node, scraping what `consul_sd_configs` finds in sextant.
struct VictoriaMetrics(common::victoria::VictoriaMetrics);

/// How often VictoriaMetrics looks at its Consul watchers. Its blocking queries wait far longer
/// (`-promscrape.consul.waitTime`), so a change seen within a few of these came from a blocking
/// query that sextant woke, not from a query that ran out its wait.
const SD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const BLOCKING_WAIT: &str = "2m";

impl VictoriaMetrics {
    /// Started against `server`, with `sd_options` added to its `consul_sd_configs` entry (a
    /// token, TLS), each line indented by 8 spaces.
    async fn start(server: &TestServer, sd_options: &str) -> Self {
        // The usual Prometheus recipe: every instance is discovered with its health as a label,
        // and only passing ones are kept as targets.
        let config = format!(
            "scrape_configs:\n  - job_name: sextant\n    scrape_interval: 1m\n    consul_sd_configs:\n      \
             - server: {}\n{sd_options}    relabel_configs:\n      - source_labels: [__meta_consul_health]\n        \
             regex: passing\n        action: keep\n",
            server.app().http_addr()
        );
        Self(common::victoria::VictoriaMetrics::start(
            &config,
            &[
                format!("-promscrape.consulSDCheckInterval={}s", SD_CHECK_INTERVAL.as_secs()),
                format!("-promscrape.consul.waitTime={BLOCKING_WAIT}"),
            ],
        ))
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// The service IDs of its active targets, or None while it is not answering yet.
    async fn targets(&self, http: &reqwest::Client) -> Option<BTreeSet<String>> {
        let reply = http.get(format!("{}/api/v1/targets", self.0.base)).send().await.ok()?;
        let body: Value = reply.json().await.ok()?;
        let targets = body["data"]["activeTargets"].as_array()?;
        Some(
            targets
                .iter()
                .map(|t| {
                    t["discoveredLabels"]["__meta_consul_service_id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect(),
        )
    }

    /// Waits until its targets are `expected`; returns how long that took.
    async fn until_targets(&self, http: &reqwest::Client, expected: &[&str], within: Duration) -> Duration {
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let started = Instant::now();
        loop {
            let seen = self.targets(http).await;
            if seen.as_ref() == Some(&expected) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "targets {seen:?}, expected {expected:?} within {within:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn ttl_instance(id: &str, service: &str, address: &str, status: &str) -> Value {
    json!({"Name": service, "ID": id, "Address": address, "Port": 9100,
           "Check": {"TTL": "10m", "Status": status}})
}

#[tokio::test]
async fn victoria_metrics_targets_are_exactly_the_passing_instances() {
    let server = TestServer::start().await;
    server
        .register(ttl_instance("orders-1", "orders", "10.9.0.1", "passing"))
        .await;
    server
        .register(ttl_instance("orders-2", "orders", "10.9.0.2", "passing"))
        .await;
    server
        .register(ttl_instance("orders-3", "orders", "10.9.0.3", "critical"))
        .await;
    server
        .register(ttl_instance("quotes-1", "quotes", "10.9.0.4", "warning"))
        .await;
    server
        .register(ttl_instance("quotes-2", "quotes", "10.9.0.5", "passing"))
        .await;
    let vm = VictoriaMetrics::start(&server, "").await;
    let http = reqwest::Client::new();
    wait_for("victoria-metrics to answer", async || vm.targets(&http).await.is_some()).await;
    let first = vm
        .until_targets(&http, &["orders-1", "orders-2", "quotes-2"], Duration::from_secs(30))
        .await;
    println!("initial targets after {first:?}");

    // Each change reaches its targets within a few SD check intervals, far inside the blocking
    // wait: the watcher's parked query was woken.
    let within = 5 * SD_CHECK_INTERVAL;
    let mut seen = Vec::new();
    let (code, _) = server.put("/v1/agent/service/deregister/orders-2").await;
    assert_eq!(code, 200);
    seen.push((
        "deregistered",
        vm.until_targets(&http, &["orders-1", "quotes-2"], within).await,
    ));

    let (code, _) = server.put("/v1/agent/check/fail/service:quotes-2").await;
    assert_eq!(code, 200);
    seen.push(("failed", vm.until_targets(&http, &["orders-1"], within).await));

    let (code, _) = server.put("/v1/agent/check/pass/service:orders-3").await;
    assert_eq!(code, 200);
    seen.push((
        "recovered",
        vm.until_targets(&http, &["orders-1", "orders-3"], within).await,
    ));

    // A service it has never seen: found through the catalog watch.
    server
        .register(ttl_instance("billing-1", "billing", "10.9.0.6", "passing"))
        .await;
    seen.push((
        "new service",
        vm.until_targets(&http, &["billing-1", "orders-1", "orders-3"], within)
            .await,
    ));
    // An external service that a third party registered through the catalog: discovered at its
    // node's address, under its node's name, and dropped when its registrar says the node is down.
    let external = |status: &str| {
        json!({"Node": "ext-1", "Address": "10.9.1.1", "Service": {"ID": "legacy-1", "Service": "legacy", "Port": 9100},
               "Check": {"CheckID": "ext-1-alive", "Status": status}})
    };
    let (code, body) = server.put_json("/v1/catalog/register", &external("passing")).await;
    assert_eq!(code, 200, "{body}");
    seen.push((
        "registered through the catalog",
        vm.until_targets(&http, &["billing-1", "legacy-1", "orders-1", "orders-3"], within)
            .await,
    ));
    let reply: Value = http
        .get(format!("{}/api/v1/targets", vm.0.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let legacy = reply["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["discoveredLabels"])
        .find(|labels| labels["__meta_consul_service_id"] == "legacy-1")
        .unwrap();
    assert_eq!(
        (&legacy["__meta_consul_node"], &legacy["__address__"]),
        (&json!("ext-1"), &json!("10.9.1.1:9100")),
        "{legacy}"
    );
    let (code, body) = server.put_json("/v1/catalog/register", &external("critical")).await;
    assert_eq!(code, 200, "{body}");
    seen.push((
        "on a node whose registrar said it is down",
        vm.until_targets(&http, &["billing-1", "orders-1", "orders-3"], within)
            .await,
    ));
    for (what, after) in &seen {
        println!("victoria-metrics targets changed {after:?} after an instance was {what}");
    }
    server.stop().await;
}

#[tokio::test]
async fn victoria_metrics_presents_its_consul_token() {
    let token = "scraper-token-91ab";
    let server = TestServer::start_with(Config {
        acl_token: Some(token.into()),
        ..test_config()
    })
    .await;
    let (code, body) = server
        .http
        .put(server.url("/v1/agent/service/register"))
        .header("X-Consul-Token", token)
        .json(&ttl_instance("orders-1", "orders", "10.9.0.1", "passing"))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(code, 200, "{:?}", body.text().await);
    let vm = VictoriaMetrics::start(&server, &format!("        token: {token}\n")).await;
    let http = reqwest::Client::new();
    vm.until_targets(&http, &["orders-1"], Duration::from_secs(30)).await;
    server.stop().await;
}

/// VictoriaMetrics' `consul_sd_configs` over HTTPS, with a client certificate (`scheme: https`,
/// `tls_config`), to a server that asks for one: it finds the passing instance and follows a
/// change.
#[tokio::test]
async fn victoria_metrics_discovers_over_https_with_a_client_certificate() {
    let dir = common::tools::TempDir::new("vm-tls");
    let files = common::pki::TlsFiles::make(&dir.0);
    let server = TestServer::start_with(common::tls_config(&files, true)).await;
    let tls = format!(
        "        scheme: https\n        tls_config:\n          ca_file: {}\n          cert_file: {}\n          \
         key_file: {}\n",
        files.ca.display(),
        files.client_cert.display(),
        files.client_key.display()
    );
    let register = |body: Value| {
        let registry = server.app().registry().clone();
        async move {
            let instance = sextant::api::wire::parse_registration(
                &sextant::api::wire::parse_json(body.to_string().as_bytes()).unwrap(),
                &registry.local_node(),
            )
            .unwrap();
            registry.register(instance).unwrap().durable().await.unwrap();
        }
    };
    register(ttl_instance("orders-1", "orders", "10.9.0.1", "passing")).await;
    let vm = VictoriaMetrics::start(&server, &tls).await;
    let http = reqwest::Client::new();
    vm.until_targets(&http, &["orders-1"], Duration::from_secs(30)).await;
    register(ttl_instance("orders-2", "orders", "10.9.0.2", "passing")).await;
    let took = vm
        .until_targets(&http, &["orders-1", "orders-2"], Duration::from_secs(30))
        .await;
    println!("VictoriaMetrics over HTTPS saw a registration in {took:?}");
    server.stop().await;
}
