//! VictoriaMetrics single-node (Debian's `victoria-metrics`), a real Prometheus-compatible scraper:
//! started with a scrape configuration of the test's, on a free loopback port.

use std::process::Stdio;

use super::tools::{TempDir, free_port, require};

pub struct VictoriaMetrics {
    pub base: String,
    _child: tokio::process::Child,
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Started with `scrape_yml` as its `-promscrape.config`, and `args` besides.
    pub fn start(scrape_yml: &str, args: &[String]) -> Self {
        let binary = require("victoria-metrics", "victoria-metrics");
        let dir = TempDir::new("victoria-metrics");
        std::fs::write(dir.0.join("scrape.yml"), scrape_yml).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("victoria-metrics.log")).unwrap();
        let child = tokio::process::Command::new(binary)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.0.join("data").display()))
            .arg(format!("-promscrape.config={}", dir.0.join("scrape.yml").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start victoria-metrics: {e}"));
        Self {
            base: format!("http://127.0.0.1:{port}"),
            _child: child,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("victoria-metrics.log")).unwrap_or_default()
    }
}
