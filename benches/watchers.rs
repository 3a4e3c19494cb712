//! 10,000 open blocking queries (`/v1/health/service/<name>?index=N&wait=10m`, ten watchers on
//! each of 1,000 services): the server's CPU while they wait, against the same server with none,
//! its memory per watcher, and what one registration costs — only its ten watchers wake.
//! Run with `cargo bench --bench watchers`.
//!
//! The server is the real binary in a child process, so its CPU and memory are its own; the
//! watchers are plain TCP connections from this process.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::process;

struct Plan {
    services: usize,
    watchers: usize,
    idle: Duration,
}

const FULL: Plan = Plan {
    services: 1_000,
    watchers: 10_000,
    idle: Duration::from_secs(20),
};

/// `cargo test --benches` runs each benchmark once as a smoke test.
const SMOKE: Plan = Plan {
    services: 20,
    watchers: 200,
    idle: Duration::from_secs(1),
};

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let plan = if smoke { SMOKE } else { FULL };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(&plan));
}

/// The real server (killed when dropped) and its data directory (removed).
struct Server {
    running: process::Running,
    http: SocketAddr,
    _data_dir: common::DataDir,
}

impl Server {
    fn start() -> Self {
        let data_dir = common::DataDir::new("watchers");
        let running = process::start_binary(&data_dir.0.join("no-zones"), &data_dir.0);
        Self {
            http: running.http,
            running,
            _data_dir: data_dir,
        }
    }

    fn pid(&self) -> String {
        self.running.child.0.id().to_string()
    }

    /// User + system CPU time the server has used.
    fn cpu(&self) -> Duration {
        common::cpu_time(&self.pid())
    }

    fn resident_bytes(&self) -> usize {
        common::resident_bytes(self.pid())
    }

    /// CPU time the server uses over `window`, doing nothing asked of it (the kernel counts in
    /// 10 ms ticks).
    async fn idle_cpu(&self, window: Duration) -> Duration {
        let before = self.cpu();
        tokio::time::sleep(window).await;
        self.cpu() - before
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.running.child.0.kill();
        let _ = self.running.child.0.wait(); // then the data folder goes with the fields
    }
}

/// One HTTP/1.1 request on a connection of its own, answered with `Connection: close`; returns
/// the status line and the X-Consul-Index.
async fn request(http: SocketAddr, method: &str, path: &str, body: &str) -> (String, u64) {
    let mut stream = TcpStream::connect(http).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let index = response
        .lines()
        .find_map(|l| l.strip_prefix("x-consul-index: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    (response.lines().next().unwrap_or_default().to_owned(), index)
}

async fn register(http: SocketAddr, service: &str, id: &str) -> u64 {
    let body = format!(r#"{{"Name":"{service}","ID":"{id}","Address":"10.0.0.1","Port":80}}"#);
    let (status, _) = request(http, "PUT", "/v1/agent/service/register", &body).await;
    assert!(status.contains(" 200 "), "{status}");
    let (_, index) = request(http, "GET", &format!("/v1/health/service/{service}"), "").await;
    index
}

/// A watcher: its request sent, its connection parked on the server.
struct Watcher {
    service: usize,
    stream: TcpStream,
}

impl Watcher {
    fn has_answer(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(self.stream.try_read(&mut byte), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

async fn run(plan: &Plan) {
    let server = Server::start();
    let mut index = 0;
    for s in 0..plan.services {
        index = register(server.http, &format!("svc-{s}"), &format!("svc-{s}-1")).await;
    }
    let baseline_cpu = server.idle_cpu(plan.idle).await;
    let baseline_rss = server.resident_bytes();

    // Every watcher asks for a change past the newest index: none is due until a write.
    let started = Instant::now();
    let mut watchers = Vec::with_capacity(plan.watchers);
    for w in 0..plan.watchers {
        let service = w % plan.services;
        let mut stream = TcpStream::connect(server.http).await.unwrap();
        let request =
            format!("GET /v1/health/service/svc-{service}?index={index}&wait=10m HTTP/1.1\r\nHost: bench\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        watchers.push(Watcher { service, stream });
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = watchers.iter().filter(|w| w.has_answer()).count();
    assert_eq!(early, 0, "watchers answered with nothing changed");
    let watching_cpu = server.idle_cpu(plan.idle).await;
    let watching_rss = server.resident_bytes();

    // One registration: the watchers of its service wake, no others.
    let target = 7 % plan.services;
    let before = server.cpu();
    let changed = Instant::now();
    register(server.http, &format!("svc-{target}"), &format!("svc-{target}-2")).await;
    let mut woken: Vec<&mut Watcher> = watchers.iter_mut().filter(|w| w.service == target).collect();
    let mut wake_latencies = Vec::new();
    for watcher in &mut woken {
        let mut first = [0u8; 12];
        watcher.stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        wake_latencies.push(changed.elapsed());
    }
    let change_cpu = server.cpu() - before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let others_woken = watchers
        .iter()
        .filter(|w| w.service != target && w.has_answer())
        .count();
    assert_eq!(others_woken, 0, "watchers of other services woke");

    println!(
        "{} blocking queries open on {} services (opened in {opened_in:?}; idle {:?} windows):",
        plan.watchers, plan.services, plan.idle
    );
    let share = |cpu: Duration| 100.0 * cpu.as_secs_f64() / plan.idle.as_secs_f64();
    println!(
        "  server CPU, no watchers:       {baseline_cpu:>8?} in {:?} ({:.2}% of a core)",
        plan.idle,
        share(baseline_cpu)
    );
    println!(
        "  server CPU, all watchers open: {watching_cpu:>8?} in {:?} ({:.2}% of a core)",
        plan.idle,
        share(watching_cpu)
    );
    println!(
        "  server memory: {:.1} MiB without, {:.1} MiB with ({:.1} KiB per open watcher)",
        baseline_rss as f64 / 1048576.0,
        watching_rss as f64 / 1048576.0,
        (watching_rss.saturating_sub(baseline_rss)) as f64 / 1024.0 / plan.watchers as f64
    );
    println!(
        "  one registration: its {} watchers answered within {:?} (registration + one read included); \
         {} others still waiting; server CPU for it all {:?}",
        wake_latencies.len(),
        wake_latencies.last().unwrap(),
        plan.watchers - wake_latencies.len(),
        change_cpu
    );
}
