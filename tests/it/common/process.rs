//! The real `sextant` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// The real binary serving `zones` (and keeping its registry in `data_dir`) on ephemeral ports: its process, its log lines as they come,
/// and the addresses it reported.
pub struct Running {
    pub child: KillOnDrop,
    /// The log lines up to "sextant is serving", that one included.
    pub startup_log: Vec<String>,
    pub log: Receiver<String>,
    pub dns: SocketAddr,
    pub http: SocketAddr,
}

pub fn start_binary(zones: &Path, data_dir: &Path) -> Running {
    start_binary_with(zones, data_dir, &[])
}

/// As [`start_binary`], with more command-line arguments.
pub fn start_binary_with(zones: &Path, data_dir: &Path, args: &[&str]) -> Running {
    let command = Command::new(env!("CARGO_BIN_EXE_sextant"));
    start_command(command, "127.0.0.1".parse().unwrap(), zones, data_dir, args)
}

/// The real binary, run by `command` (the binary itself, or a wrapper that runs it, as `ip netns
/// exec`), listening on `ip`.
pub fn start_command(command: Command, ip: std::net::IpAddr, zones: &Path, data_dir: &Path, args: &[&str]) -> Running {
    start_command_on(command, SocketAddr::new(ip, 0), zones, data_dir, args)
}

/// As [`start_command`], DNS on `dns` (HTTP on a free port of its address).
pub fn start_command_on(
    mut command: Command,
    dns: SocketAddr,
    zones: &Path,
    data_dir: &Path,
    args: &[&str],
) -> Running {
    let (dns, http) = (dns.to_string(), SocketAddr::new(dns.ip(), 0).to_string());
    let mut child = command
        .args(["serve", "--dns", &dns, "--http", &http, "--zones"])
        .arg(zones)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sextant starts");
    let stderr = child.stderr.take().unwrap();
    let child = KillOnDrop(child);
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // `key=value` in text logs, `"key":"value"` in JSON ones (`--log-format json`).
    let field = |line: &str, key: &str| -> Option<SocketAddr> {
        if let Some(at) = line.find(&format!("\"{key}\":\"")) {
            let start = at + key.len() + 4;
            return line[start..].split('"').next()?.parse().ok();
        }
        let start = line.find(&format!("{key}="))? + key.len() + 1;
        line[start..].split_whitespace().next()?.parse().ok()
    };
    let mut startup_log = Vec::new();
    let (dns, http) = loop {
        let line = log.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|error| {
            panic!(
                "the server did not log its addresses ({error}); it said:\n{}",
                startup_log.join("\n")
            )
        });
        let addresses = line
            .contains("sextant is serving")
            .then(|| (field(&line, "dns").unwrap(), field(&line, "http").unwrap()));
        startup_log.push(line);
        if let Some(addresses) = addresses {
            break addresses;
        }
    };
    Running {
        child,
        startup_log,
        log,
        dns,
        http,
    }
}

/// Sends `signal` (`-STOP`, `-CONT`, …) to the server's process.
pub fn signal(server: &Running, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &server.child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// A server left behind by a failed test would hold the test runner's pipes open.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of process `pid` ("self" for this one), in bytes.
pub fn resident_bytes(pid: impl std::fmt::Display) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}
