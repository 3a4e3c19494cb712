//! TCP serving: length-prefixed queries, several per connection (pipelining), answered in order
//! and flushed together; idle connections close, and the number of connections is capped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{DnsEngine, Incoming, Reply};
use super::message::Transport;

/// A connection that sends no complete query for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;

pub async fn serve(listener: TcpListener, engine: Arc<DnsEngine>, shutdown: CancellationToken, tasks: TaskTracker) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%src, "too many DNS TCP connections; closing a new one");
            continue;
        };
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection(stream, src, &engine) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %src, "DNS TCP connection ended");
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn connection(stream: TcpStream, src: SocketAddr, engine: &DnsEngine) -> std::io::Result<()> {
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
        tokio::time::timeout(IDLE_TIMEOUT, read.read_exact(&mut query[..len]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "query not completed in time"))??;
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
                forwarded = engine.forward(&response, Transport::Tcp).await;
                forwarded.as_deref()
            }
            Reply::Nothing => None,
        };
        if let Some(sent) = sent {
            write.write_u16(sent.len() as u16).await?;
            write.write_all(sent).await?;
        }
        // Answers to pipelined queries leave together; a lone query is answered at once.
        if read.buffer().is_empty() {
            write.flush().await?;
        }
    }
}
