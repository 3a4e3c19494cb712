//! Listening sockets shared by the HTTP API and DNS over TCP.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may queue before they are accepted. Tokio's default is 1,024: when
/// thousands of watchers reconnect at once (after a restart), a queue that full drops SYNs and
/// each dropped client waits a second to retry. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with a backlog fit for reconnect storms.
pub fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's own bind: a restarted server may rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
