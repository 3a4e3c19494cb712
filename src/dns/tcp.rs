//! TCP serving: length-prefixed queries, several per connection (pipelining), answered in order
//! and flushed together; idle connections close, and the connections are bounded.
//!
//! A client cannot hold the server's connections for itself (RFC 7766 §6.2.3): a frame that is
//! not a DNS message closes its connection (a zero-length frame every few seconds would
//! otherwise keep an idle connection open for ever); one client address may hold only so many
//! connections; and when every slot is taken, the connection idle longest is closed to make
//! room for the new one rather than the new one being refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{DnsEngine, Incoming, Reply};
use super::message::Transport;

/// A connection that sends no complete query for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A DNS message's header: anything shorter is not a query.
const HEADER_LEN: usize = 12;
/// Connections served at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections from one client address at once, by default.
pub const DEFAULT_MAX_PER_CLIENT: usize = 32;

/// How many connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_client: DEFAULT_MAX_PER_CLIENT,
        }
    }
}

/// One open connection as the table knows it.
struct Open {
    client: IpAddr,
    /// When it last finished answering (or was accepted): the idle longest goes first.
    idle_since: Instant,
    /// Answering a query now: not idle, never closed to make room.
    busy: bool,
    close: CancellationToken,
}

/// The open connections.
#[derive(Default)]
struct Table {
    open: HashMap<u64, Open>,
    next: u64,
}

impl Table {
    /// Takes a slot for a connection from `client`, closing the connection idle longest when
    /// every slot is taken; `None` when the client holds its share already, or nothing is idle.
    fn admit(&mut self, client: IpAddr, limits: TcpLimits) -> Option<(u64, CancellationToken)> {
        if self.open.values().filter(|o| o.client == client).count() >= limits.max_per_client {
            return None;
        }
        if self.open.len() >= limits.max_connections {
            let (&oldest, _) = self
                .open
                .iter()
                .filter(|(_, o)| !o.busy)
                .min_by_key(|(_, o)| o.idle_since)?;
            if let Some(evicted) = self.open.remove(&oldest) {
                evicted.close.cancel();
            }
        }
        self.next += 1;
        let close = CancellationToken::new();
        let open = Open {
            client,
            idle_since: Instant::now(),
            busy: false,
            close: close.clone(),
        };
        self.open.insert(self.next, open);
        Some((self.next, close))
    }

    fn set_busy(&mut self, id: u64, busy: bool) {
        if let Some(open) = self.open.get_mut(&id) {
            open.busy = busy;
            if !busy {
                open.idle_since = Instant::now();
            }
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    engine: Arc<DnsEngine>,
    limits: TcpLimits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    loop {
        let (stream, src) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    continue;
                }
            },
        };
        let Some((id, close)) = with(&table, |t| t.admit(src.ip(), limits)) else {
            tracing::debug!(%src, "DNS TCP connection refused: the client holds its share, or none is idle");
            continue;
        };
        // A completed handshake shows the address is real: its UDP answers need not be bounded.
        engine.reflection().prove(src.ip());
        let (engine, shutdown, table) = (engine.clone(), shutdown.clone(), table.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = close.cancelled() => tracing::debug!(%src, "DNS TCP connection closed for a new one"),
                result = connection(stream, src, &engine, |busy| with(&table, |t| t.set_busy(id, busy))) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %src, "DNS TCP connection ended");
                    }
                }
            }
            with(&table, |t| t.open.remove(&id));
        });
    }
}

/// Runs `f` on the table under its lock (held for a few map operations; a panic inside leaves
/// nothing half-done, so a poisoned lock is taken over).
fn with<R>(table: &Mutex<Table>, f: impl FnOnce(&mut Table) -> R) -> R {
    f(&mut table.lock().unwrap_or_else(|p| p.into_inner()))
}

async fn connection(
    stream: TcpStream,
    src: SocketAddr,
    engine: &DnsEngine,
    busy: impl Fn(bool),
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let mut query = vec![0u8; u16::MAX as usize];
    let mut response = Vec::with_capacity(4096);
    let mut forwarded;
    // A random start: a client that opens a connection per query (as after a truncated UDP
    // answer) would otherwise get the same first record every time.
    let mut rotation = rand::random::<u32>() as usize;
    loop {
        let len = match tokio::time::timeout(IDLE_TIMEOUT, read.read_u16()).await {
            Err(_) => return Ok(()), // idle
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result? as usize,
        };
        if len < HEADER_LEN {
            return Ok(()); // not a DNS message: it would only keep the connection open
        }
        tokio::time::timeout(IDLE_TIMEOUT, read.read_exact(&mut query[..len]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "query not completed in time"))??;
        busy(true);
        rotation = rotation.wrapping_add(1);
        let incoming = Incoming {
            packet: &query[..len],
            from: src,
            transport: Transport::Tcp,
            rotation,
        };
        let reply = engine.answer(incoming, &mut response).await;
        let sent = match reply {
            Reply::Ready => Some(&response[..]),
            Reply::Forward => {
                forwarded = engine.forward(&response, Transport::Tcp, src.ip()).await;
                forwarded.as_deref()
            }
            // Not a query that deserves an answer (a response, garbage): no reason to stay.
            Reply::Nothing => {
                write.flush().await?;
                return Ok(());
            }
        };
        if let Some(sent) = sent {
            write.write_u16(sent.len() as u16).await?;
            write.write_all(sent).await?;
        }
        // Answers to pipelined queries leave together; a lone query is answered at once.
        if read.buffer().is_empty() {
            write.flush().await?;
        }
        busy(false);
    }
}
