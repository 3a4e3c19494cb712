//! A real etcd cluster on loopback ports (Debian's `etcd-server`), each member a child process
//! the test can kill, stop and start again; over TLS with certificates the test makes, if asked.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::TlsFiles;
use super::tools::{TempDir, free_port, require};

pub struct EtcdCluster {
    members: Vec<Member>,
    /// `m0=http://127.0.0.1:PEER,…`
    initial_cluster: String,
    dir: TempDir,
    /// Clients speak TLS, and must show a certificate the CA signed.
    pub tls: Option<TlsFiles>,
    /// Another address the members take clients on, besides 127.0.0.1 (a namespace's link).
    also_on: Option<std::net::IpAddr>,
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
        Self::start_with(size, false, None)
    }

    /// As [`start`](Self::start), the members also taking clients on `ip`.
    pub fn start_also_on(size: usize, ip: std::net::IpAddr) -> Self {
        Self::start_with(size, false, Some(ip))
    }

    /// As [`start`](Self::start), the clients' side over TLS with client certificates.
    pub fn start_tls(size: usize) -> Self {
        Self::start_with(size, true, None)
    }

    fn start_with(size: usize, tls: bool, also_on: Option<std::net::IpAddr>) -> Self {
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
        let dir = TempDir::new("etcd");
        let tls = tls.then(|| TlsFiles::make(&dir.0));
        let mut cluster = Self {
            members,
            initial_cluster,
            dir,
            tls,
            also_on,
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
            .map(|m| self.client_url(m))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URLs on the other address (see [`start_also_on`](Self::start_also_on)).
    pub fn endpoints_on(&self, ip: std::net::IpAddr) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{ip}:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn client_url(&self, member: &Member) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", member.client_port)
    }

    fn etcdctl(&self) -> Command {
        let mut command = Command::new(require("etcdctl", "etcd-client"));
        if let Some(tls) = &self.tls {
            command.arg("--cacert").arg(&tls.ca);
            command.arg("--cert").arg(&tls.client_cert);
            command.arg("--key").arg(&tls.client_key);
        }
        command.args(["--endpoints", &self.endpoints()]).env("ETCDCTL_API", "3");
        command
    }

    /// Compacts the history up to the current revision; returns it.
    pub fn compact(&self) -> i64 {
        let status = self
            .etcdctl()
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
        let compacted = self
            .etcdctl()
            .args(["compact", &revision.to_string()])
            .output()
            .unwrap();
        assert!(
            compacted.status.success(),
            "{}",
            String::from_utf8_lossy(&compacted.stderr)
        );
        revision
    }

    /// Starts member `i` (again), on its data directory.
    pub fn start_member(&mut self, i: usize) {
        let data: PathBuf = self.dir.0.join(&self.members[i].name);
        let client = self.client_url(&self.members[i]);
        let listen = match self.also_on {
            Some(ip) => format!("{client},http://{ip}:{}", self.members[i].client_port),
            None => client.clone(),
        };
        let mut command = Command::new(require("etcd", "etcd-server"));
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let member = &mut self.members[i];
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = command
            .args(["--name", &member.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &listen, "--advertise-client-urls", &client])
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
            .stderr(std::fs::File::create(self.dir.0.join(format!("{}.log", member.name))).unwrap())
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
            let endpoint = self.client_url(member);
            loop {
                let mut command = Command::new(&etcdctl);
                if let Some(tls) = &self.tls {
                    command.arg("--cacert").arg(&tls.ca);
                    command.arg("--cert").arg(&tls.client_cert);
                    command.arg("--key").arg(&tls.client_key);
                }
                let ok = command
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
                if Instant::now() >= deadline {
                    let log = std::fs::read_to_string(self.dir.0.join(format!("{}.log", member.name)));
                    let log = log.unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "etcd member {} does not take writes; its log ends:\n{}",
                        member.name,
                        tail.join("\n")
                    );
                }
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
