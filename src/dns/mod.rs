//! DNS: query parsing, compiled service answers, static zones, the request handler and listeners.

pub mod answers;
pub mod handler;
pub mod query;
pub mod zones;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

pub use handler::DnsHandler;

/// A connection that sends no complete query for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection buffer of responses waiting to be written.
const TCP_RESPONSE_BUFFER: usize = 64;

/// The bound DNS listeners (UDP and TCP on the same port).
pub struct DnsListeners {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

impl DnsListeners {
    /// Binds UDP and TCP on `addr`. With port 0 the UDP port is chosen first and TCP takes the same.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        if addr.port() != 0 {
            return Ok(Self {
                udp: UdpSocket::bind(addr).await?,
                tcp: TcpListener::bind(addr).await?,
            });
        }
        // An ephemeral UDP port may be taken for TCP by someone else: retry a few times.
        let mut last_error = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind(addr).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Ok(Self { udp, tcp }),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Starts serving; the returned server stops with `shutdown_gracefully`.
    pub fn serve(self, handler: DnsHandler) -> Server<DnsHandler> {
        let mut server = Server::new(handler);
        server.register_socket(self.udp);
        server.register_listener(self.tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        server
    }
}
