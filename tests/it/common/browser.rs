//! A real browser for the dashboard's tests: Debian's Chromium, driven by Playwright
//! (`playwright-core` from npm, installed by `scripts/test.sh` into `target/browser`) through
//! `tests/browser/driver.cjs`, one command at a time. The test says what to do and asserts; the
//! driver only does it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one command may take (a wait's own timeout is shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Browser {
    /// Starts headless Chromium, or fails saying what to install.
    pub async fn start() -> Self {
        let chromium = super::tools::require("chromium", "chromium");
        let modules = repo().join("target/browser/node_modules");
        assert!(
            modules.join("playwright-core/package.json").exists(),
            "playwright-core is not installed in {}: run scripts/test.sh, which runs `npm ci` there \
             from tests/browser/package-lock.json",
            modules.display()
        );
        let node = super::tools::require("node", "nodejs");
        let mut child = Command::new(node)
            .arg(repo().join("tests/browser/driver.cjs"))
            .env("SEXTANT_BROWSER_MODULES", &modules)
            .env("SEXTANT_CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, input, output }
    }

    /// Runs one command; its value, or the driver's error.
    pub async fn run(&mut self, command: Value) -> Result<Value, String> {
        let mut line = command.to_string();
        line.push('\n');
        self.input.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, self.output.next_line())
            .await
            .map_err(|_| format!("the browser did not answer {command} within {COMMAND_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the browser driver exited before answering {command}"))?;
        let answer: Value = serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer}"))?;
        match answer.get("error") {
            Some(error) => Err(error.as_str().unwrap_or_default().to_owned()),
            None => Ok(answer["ok"].clone()),
        }
    }

    /// Runs a command that must succeed.
    pub async fn must(&mut self, command: Value) -> Value {
        let described = command.to_string();
        match self.run(command).await {
            Ok(value) => value,
            Err(error) => panic!("{described} failed in the browser: {error}"),
        }
    }

    pub async fn open(&mut self, url: &str) {
        self.must(json!({"do": "open", "url": url})).await;
    }

    /// Waits (up to 10 s) until `selector` matches; fails the test with `what` otherwise.
    pub async fn wait_for(&mut self, selector: &str, what: &str) {
        if let Err(error) = self
            .run(json!({"do": "wait", "selector": selector, "timeout_ms": 10_000}))
            .await
        {
            panic!("{what}: `{selector}` did not appear within 10 s ({error})");
        }
    }

    pub async fn count(&mut self, selector: &str) -> u64 {
        self.must(json!({"do": "count", "selector": selector}))
            .await
            .as_u64()
            .unwrap()
    }

    pub async fn attr(&mut self, selector: &str, name: &str) -> Option<String> {
        self.must(json!({"do": "attr", "selector": selector, "name": name}))
            .await
            .as_str()
            .map(str::to_owned)
    }

    pub async fn text(&mut self, selector: &str) -> String {
        self.must(json!({"do": "text", "selector": selector}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn fill(&mut self, selector: &str, text: &str) {
        self.must(json!({"do": "fill", "selector": selector, "text": text}))
            .await;
    }

    pub async fn click(&mut self, selector: &str) {
        self.must(json!({"do": "click", "selector": selector})).await;
    }

    /// Leaves a mark in the page's window, which a page load would lose.
    pub async fn mark(&mut self, value: &str) {
        self.must(json!({"do": "mark", "value": value})).await;
    }

    /// The mark left, if the page has not been loaded again since.
    pub async fn marked(&mut self) -> Option<String> {
        self.must(json!({"do": "marked"})).await.as_str().map(str::to_owned)
    }

    /// Uncaught script errors on the page so far.
    pub async fn script_errors(&mut self) -> Vec<String> {
        serde_json::from_value(self.must(json!({"do": "errors"})).await).unwrap()
    }

    pub async fn screenshot(&mut self, path: &Path) {
        self.must(json!({"do": "screenshot", "path": path})).await;
    }

    pub async fn close(mut self) {
        drop(self.input);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
