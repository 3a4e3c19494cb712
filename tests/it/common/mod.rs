//! Test harness: a real sextant on ephemeral loopback ports, a real HTTP client, a real DNS client.
#![allow(dead_code)] // each test file uses its own part of the harness

pub mod browser;
pub mod dns;
pub mod endpoint;
pub mod etcd;
pub mod examples;
pub mod netns;
pub mod on_etcd;
pub mod pki;
pub mod process;
pub mod tools;
pub mod victoria;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use hickory_proto::rr::Name;
use reqwest::StatusCode;
use serde_json::Value;
use sextant::dns::answers::ServiceAnswerMap;
use sextant::dns::{DnsEngine, DnsSettings, zones};
use sextant::registry::Registry;
use sextant::{App, Config};

pub struct TestServer {
    app: Option<App>,
    /// The server's data directory (removed when the test ends).
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    pub base: String,
    pub dns: SocketAddr,
}

/// The repository's own zone files, as shipped.
pub fn repo_zones() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones")
}

/// DNS settings for in-process tests: the domain `trading-dc.`, node `node1` at 192.0.2.1.
pub fn dns_settings() -> DnsSettings {
    DnsSettings::new(
        Name::from_ascii("trading-dc.").unwrap(),
        "node1",
        "192.0.2.1".parse().unwrap(),
    )
}

/// A registry (in memory, no store) and the DNS server that answers from it, as the app wires
/// them, with the repository's zone files: for tests that ask the answer path directly.
/// This server's node as the settings name it.
pub fn local_node(settings: &DnsSettings) -> sextant::model::Node {
    let name = sextant::model::NodeName::parse(&settings.node_name).unwrap();
    sextant::model::Node::local(name, settings.node_addr)
}

pub fn registry_and_dns(settings: &DnsSettings) -> (Arc<Registry>, Arc<ServiceAnswerMap>, DnsEngine) {
    let answers = Arc::new(ServiceAnswerMap::new(settings));
    let registry = Registry::new(local_node(settings), answers.clone());
    let zones = zones::ZoneSource::new(repo_zones(), &settings.domain, settings.node_addr)
        .load()
        .unwrap();
    let engine = DnsEngine::new(settings, registry.clone(), answers.clone(), zones);
    (registry, answers, engine)
}

/// A data directory of its own, under the system's temporary folder.
pub fn temp_data_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("sextant-test-data-{}-{n}", std::process::id()))
}

/// [`test_config`] with the HTTP API over TLS with `files`' server certificate, asking for
/// client certificates of their CA when `client_ca`.
pub fn tls_config(files: &pki::TlsFiles, client_ca: bool) -> Config {
    Config {
        http_tls_cert: Some(files.server_cert.clone()),
        http_tls_key: Some(files.server_key.clone()),
        http_tls_client_ca: client_ca.then(|| files.ca.clone()),
        ..test_config()
    }
}

pub fn test_config() -> Config {
    Config {
        dns: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        zones: repo_zones(),
        data_dir: temp_data_dir(),
        node_name: Some("testnode".into()),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let data_dir = config.data_dir.clone();
        Self::from_app(App::bind(config).await.expect("server starts"), data_dir)
    }

    /// A server the test started itself (with a store of its own), and its data directory.
    pub fn from_app(app: App, data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            base: format!("http://{}", app.http_addr()),
            dns: app.dns_addr(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            app: Some(app),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("server running")
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> (StatusCode, String) {
        let resp = self.http.put(self.url(path)).json(body).send().await.expect("HTTP PUT");
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn put_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
        let resp = self.http.put(self.url(path)).body(body).send().await.expect("HTTP PUT");
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn put(&self, path: &str) -> (StatusCode, String) {
        self.put_raw(path, "").await
    }

    /// Registers and asserts the 200.
    pub async fn register(&self, body: Value) {
        let (status, text) = self.put_json("/v1/agent/service/register", &body).await;
        assert_eq!(status, StatusCode::OK, "registration of {body} refused: {text}");
    }

    pub async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let resp = self.http.get(self.url(path)).send().await.expect("HTTP GET");
        let headers = resp.headers().clone();
        (resp.status(), headers, resp.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (status, _, text) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {text}"))
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Stops the server and keeps its data directory, for a restart on it (the caller removes it).
    pub async fn stop_keeping_data(mut self) -> PathBuf {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        std::mem::take(&mut self.data_dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// How long a test waits for something that should happen within seconds.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `probe` until it holds, failing the test after [`WAIT`]; tests never "sleep a bit".
pub async fn wait_for(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An IP address literal.
pub fn ip(text: &str) -> std::net::IpAddr {
    text.parse().expect("an IP address")
}
