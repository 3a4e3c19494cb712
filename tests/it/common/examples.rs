//! The programs in `examples/` as child processes (cargo builds them before it runs the tests).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::process::KillOnDrop;

/// An example program, running: its process and its standard output, line by line.
pub struct Example {
    pub child: KillOnDrop,
    pub stdout: Receiver<String>,
}

/// The example's binary, next to the test binary's directory (`target/<profile>/examples/`).
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/");
    let path = profile.join("examples").join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!(
            "{} is missing: build the examples first (`cargo build --examples`; scripts/test.sh does)",
            path.display()
        )
    });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = newest_change(&root.join("src")).max(newest_change(&root.join("examples").join(format!("{name}.rs"))));
    assert!(
        built >= source,
        "{} is older than its source: rebuild the examples (`cargo build --examples`)",
        path.display()
    );
    path
}

/// The latest modification time of a file, or of any file under a directory.
fn newest_change(path: &std::path::Path) -> std::time::SystemTime {
    let own = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| newest_change(&entry.path()))
        .fold(own, std::cmp::max)
}

impl Example {
    /// Starts `examples/<name>.rs` with `args` and extra environment variables; its log (stderr)
    /// goes to the test's output.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(path(name))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("examples/{name} starts: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child: KillOnDrop(child),
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The next line of its output that contains `text` (blocking; fails after `within`).
    pub fn line(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(error) => panic!("no line with {text:?} from the example ({error})"),
            }
        }
    }

    /// Sends a signal (`-STOP`, `-TERM`, `-KILL`…).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// Waits for the process to end by itself; its exit status.
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the example did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it printed so far and until it ended.
    pub fn rest(&self) -> Vec<String> {
        self.stdout.iter().collect()
    }
}
