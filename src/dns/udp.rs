//! UDP serving: one socket per worker thread, all bound to the same port with `SO_REUSEPORT`, so
//! the kernel spreads queries over the workers and each answers without sharing anything.
//! Workers are plain threads that take a batch of queries in one system call (`recvmmsg`),
//! answer them, and send the batch in one (`sendmmsg`): no task scheduling on the hot path. A
//! query for the recursors is handed to a task on the tokio runtime, which replies when they
//! answer: a worker never waits on the network.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::task::TaskTracker;

use super::engine::{DnsEngine, Incoming, Reply};
use super::message::{Transport, truncate_to_question};
use super::reflection::Verdict;

/// Largest query read; anything longer is cut there and is then malformed.
const MAX_QUERY: usize = 4096;
/// How often an idle worker looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Kernel receive buffer per socket (the kernel doubles it for its bookkeeping, and caps it at
/// `net.core.rmem_max`): room for about 700 queries, a burst while a worker is busy. No more:
/// under more load than the workers answer, the queue stays full, and every query in it waits
/// its length; past it, queries are dropped (as knot and NSD do), so the ones answered are
/// answered within milliseconds (`scripts/overload.sh`). 4 MiB queued 40 ms at the 99th
/// percentile.
const RECV_BUFFER: usize = 256 << 10;

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
        forwards: TaskTracker,
    ) -> std::io::Result<Self> {
        let mut workers = Self {
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for (n, socket) in sockets.into_iter().enumerate() {
            let (engine, stop) = (engine.clone(), workers.stop.clone());
            let runner = Runtime {
                handle: runtime.clone(),
                forwards: forwards.clone(),
            };
            let socket = Arc::new(socket);
            // On an error, the workers already started are stopped as `workers` is dropped.
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{n}"))
                .spawn(move || serve(&socket, &engine, &runner, &stop))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Stops the workers and waits for them (at most one poll interval).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for UdpWorkers {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Where a worker hands the queries for the recursors: the tokio runtime, with their tasks
/// tracked so that a stop waits for them.
struct Runtime {
    handle: tokio::runtime::Handle,
    forwards: TaskTracker,
}

/// Queries taken from the socket in one system call (and answered in one).
const BATCH: usize = 32;

fn serve(socket: &Arc<UdpSocket>, engine: &Arc<DnsEngine>, runtime: &Runtime, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut queries = vec![0u8; MAX_QUERY * BATCH];
    let mut responses: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(MAX_QUERY)).collect();
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    // A random start, so that answers start at a random instance from the first query on.
    let mut rotation = rand::random::<u32>() as usize;
    // This worker's own tally of what it answered.
    let counter = engine.stats().counter();
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                queries.chunks_mut(MAX_QUERY).map(|c| [IoSliceMut::new(c)]).collect();
            // Blocks for the first query (or the stop-poll timeout), then takes what else is queued.
            match recvmmsg(fd, &mut recv_headers, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(results) => received.extend(results.filter_map(|m| Some((m.bytes, m.address?)))),
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; they concern one client.
                    tracing::debug!(error = %e, "UDP receive failed");
                    continue;
                }
            }
        }
        replies.clear();
        let now = engine.reflection().now();
        for (slot, &(len, src)) in received.iter().enumerate() {
            let Some(client) = socket_addr(&src) else {
                continue;
            };
            rotation = rotation.wrapping_add(1);
            let query = &queries[slot * MAX_QUERY..slot * MAX_QUERY + len];
            let response = &mut responses[slot];
            let incoming = Incoming {
                packet: query,
                from: client,
                transport: Transport::Udp,
                rotation,
            };
            match engine.answer_now(incoming, response, &runtime.handle, &counter) {
                Reply::Ready => {
                    if sendable(engine, client, query, response, now) {
                        replies.push((slot, src));
                    }
                }
                Reply::Forward => forward(socket, engine, runtime, response, client),
                Reply::Nothing => {}
            }
        }
        send_all(fd, &mut send_headers, &responses, &replies);
    }
}

/// Hands `query` to a task that forwards it and sends the recursor's response to `client`.
fn forward(socket: &Arc<UdpSocket>, engine: &Arc<DnsEngine>, runtime: &Runtime, query: &[u8], client: SocketAddr) {
    let (socket, engine, query) = (socket.clone(), engine.clone(), query.to_vec());
    runtime.forwards.spawn_on(
        async move {
            let Some(mut response) = engine.forward(&query, Transport::Udp, client.ip()).await else {
                return;
            };
            let now = engine.reflection().now();
            if sendable(&engine, client, &query, &mut response, now)
                && let Err(error) = socket.send_to(&response, client)
            {
                tracing::debug!(%error, %client, "could not send a forwarded response");
            }
        },
        &runtime.handle,
    );
}

/// Whether `response` goes to `client`, as it is or cut to its question
/// ([`super::reflection`]). A response cut for its size keeps the client's cookie (the client
/// shows it next time and is answered in full); one slipped for the rate is no larger than its
/// query.
fn sendable(engine: &DnsEngine, client: SocketAddr, query: &[u8], response: &mut Vec<u8>, now: u32) -> bool {
    let guard = engine.reflection();
    let proven_by_cookie = || engine.cookie_proves(query, client.ip());
    let verdict = guard.judge(client.ip(), query.len(), response.len(), now, proven_by_cookie);
    let sent = match verdict {
        Verdict::Send => true,
        Verdict::Slip => truncate_to_question(query, response, engine.max_udp_size()),
        Verdict::Bound => {
            let cut = truncate_to_question(query, response, engine.max_udp_size());
            if cut {
                engine.add_query_cookie(query, client.ip(), response);
            }
            cut
        }
        Verdict::Drop => false,
    };
    guard.counted(verdict, sent);
    sent
}

/// Sends every reply, in as few system calls as the kernel allows.
fn send_all(
    fd: RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    responses: &[Vec<u8>],
    replies: &[(usize, SockaddrStorage)],
) {
    let mut sent = 0;
    while sent < replies.len() {
        let batch = &replies[sent..];
        let slices: Vec<[IoSlice<'_>; 1]> = batch
            .iter()
            .map(|(slot, _)| [IoSlice::new(&responses[*slot])])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = batch.iter().map(|(_, addr)| Some(*addr)).collect();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(fd, headers, slices.iter(), &addrs, no_cmsgs, MsgFlags::empty()) {
            Ok(results) => match results.count() {
                0 => return,
                n => sent += n,
            },
            Err(Errno::EINTR) => {}
            Err(e) => {
                // The first message failed (an unreachable client); skip it and go on.
                tracing::debug!(error = %e, "UDP send failed");
                sent += 1;
            }
        }
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
