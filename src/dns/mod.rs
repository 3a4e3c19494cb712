//! DNS: the registry's answers compiled as services change (`answers`, `wire`), one message
//! parser (`message`), one grammar (`names`), one answer writer (`reply`), the zone files
//! (`zones`), forwarding, and the one dispatch (`engine`) UDP workers and TCP connections share.

pub mod answers;
pub mod cookies;
pub mod engine;
pub mod forward;
pub mod message;
pub mod names;
pub mod reflection;
pub mod reply;
pub mod settings;
pub mod stats;
pub mod tcp;
mod udp;
pub mod wire;
pub mod zones;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use engine::{DnsEngine, Incoming, Reply};
pub use settings::DnsSettings;

/// The bound DNS listeners: UDP sockets (one per worker) and TCP, on the same port.
pub struct DnsListeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
}

/// Running DNS serving; stops with [`DnsServer::shutdown`] (or, without waiting for the TCP
/// connections and forwarded queries to end, when dropped).
pub struct DnsServer {
    udp: Option<udp::UdpWorkers>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl DnsListeners {
    /// Binds `workers` UDP sockets and a TCP listener on `addr`. With port 0 the UDP port is
    /// chosen first and TCP takes the same.
    pub async fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Self> {
        if addr.port() != 0 {
            return Ok(Self {
                udp: udp::bind_sockets(addr, workers)?,
                tcp: crate::net::listen_tcp(addr)?,
            });
        }
        // An ephemeral UDP port may be taken for TCP by someone else: retry a few times.
        let mut last_error = None;
        for _ in 0..20 {
            let udp = udp::bind_sockets(addr, workers)?;
            match crate::net::listen_tcp(udp[0].local_addr()?) {
                Ok(tcp) => return Ok(Self { udp, tcp }),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp[0].local_addr()
    }

    /// Starts the UDP workers and the TCP acceptor (with its connection limits).
    pub fn serve(self, engine: Arc<DnsEngine>, tcp_limits: tcp::TcpLimits) -> std::io::Result<DnsServer> {
        let runtime = tokio::runtime::Handle::current();
        let tasks = TaskTracker::new();
        let udp = udp::UdpWorkers::spawn(self.udp, engine.clone(), runtime, tasks.clone())?;
        let shutdown = CancellationToken::new();
        tasks.spawn(tcp::serve(
            self.tcp,
            engine,
            tcp_limits,
            shutdown.clone(),
            tasks.clone(),
        ));
        Ok(DnsServer {
            udp: Some(udp),
            shutdown,
            tasks,
        })
    }
}

impl DnsServer {
    /// Stops accepting, closes connections and waits for the workers and the queries they
    /// forwarded.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(udp) = self.udp.take() {
            let _ = tokio::task::spawn_blocking(move || udp.stop()).await;
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
