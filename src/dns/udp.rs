//! UDP serving: one socket per worker thread, all bound to the same port with `SO_REUSEPORT`, so
//! the kernel spreads queries over the workers and each answers without sharing anything.
//! Workers are plain threads doing blocking receive → answer → send: no wake-ups, no task
//! scheduling on the hot path. Queries the fast path passes on are answered by the hickory path
//! on the tokio runtime.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::engine::DnsEngine;
use super::fast::{Outcome, Transport};

/// Largest query read; anything longer is cut there and is then malformed.
const MAX_QUERY: usize = 4096;
/// How often an idle worker looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Kernel receive buffer per socket: absorbs bursts while a worker is busy.
const RECV_BUFFER: usize = 4 << 20;

/// Binds `count` UDP sockets to `addr` with `SO_REUSEPORT`. Port 0: the first socket picks the
/// port and the others join it.
pub fn bind_sockets(addr: SocketAddr, count: usize) -> std::io::Result<Vec<UdpSocket>> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(bind_one(bound)?);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    let _ = socket.set_recv_buffer_size(RECV_BUFFER); // best effort: the kernel may cap it
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket.into())
}

/// The running UDP workers.
pub struct UdpWorkers {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl UdpWorkers {
    pub fn spawn(
        sockets: Vec<UdpSocket>,
        engine: Arc<DnsEngine>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (n, socket) in sockets.into_iter().enumerate() {
            let (engine, runtime, stop) = (engine.clone(), runtime.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{n}"))
                .spawn(move || serve(&socket, &engine, &runtime, &stop))?;
            threads.push(thread);
        }
        Ok(Self { threads, stop })
    }

    /// Stops the workers and waits for them (at most one poll interval).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn serve(
    socket: &UdpSocket,
    engine: &DnsEngine,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
) {
    let mut query = vec![0u8; MAX_QUERY];
    let mut response = Vec::with_capacity(MAX_QUERY);
    let mut rotation = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut query) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; they concern one client.
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        rotation = rotation.wrapping_add(1);
        let packet = &query[..len];
        let answered = match engine.answer_fast(packet, &mut response, Transport::Udp, rotation) {
            Outcome::Answered => true,
            Outcome::Fallback => {
                match runtime.block_on(engine.answer_hickory(packet, src, Transport::Udp)) {
                    Some(bytes) => {
                        response = bytes;
                        true
                    }
                    None => false,
                }
            }
        };
        if answered && let Err(e) = socket.send_to(&response, src) {
            tracing::debug!(error = %e, %src, "UDP send failed");
        }
    }
}
