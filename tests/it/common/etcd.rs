//! A real etcd cluster on loopback ports (Debian's `etcd-server`), each member a child process
//! the test can kill, stop and start again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::{TempDir, free_port, require};

pub struct EtcdCluster {
    members: Vec<Member>,
    /// `m0=http://127.0.0.1:PEER,…`
    initial_cluster: String,
    dir: TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster takes writes.
    pub fn start(size: usize) -> Self {
        require("etcd", "etcd-server");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            initial_cluster,
            dir: TempDir::new("etcd"),
        };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// The client URLs, comma-separated, as `--etcd` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again), on its data directory.
    pub fn start_member(&mut self, i: usize) {
        let data: PathBuf = self.dir.0.join(&self.members[i].name);
        let member = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new(require("etcd", "etcd-server"))
            .args(["--name", &member.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "sextant-test",
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        member.process = Some(child);
    }

    /// Kills member `i` at once (SIGKILL).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until a write through every running member's endpoint succeeds.
    pub fn wait_healthy(&self) {
        let etcdctl = require("etcdctl", "etcd-client");
        let deadline = Instant::now() + Duration::from_secs(30);
        for member in self.members.iter().filter(|m| m.process.is_some()) {
            let endpoint = format!("http://127.0.0.1:{}", member.client_port);
            loop {
                let ok = Command::new(&etcdctl)
                    .args([
                        "--endpoints",
                        &endpoint,
                        "--dial-timeout",
                        "1s",
                        "--command-timeout",
                        "2s",
                    ])
                    .args(["put", "/health-check", "ok"])
                    .env("ETCDCTL_API", "3")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} does not take writes",
                    member.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
