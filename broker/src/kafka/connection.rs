//! One Kafka client connection. The reader decodes each frame's header and
//! starts the request: work that must happen in request order (a produce's
//! append) runs on the connection's task, anything that waits (a durable
//! produce, a long-polling fetch, a JoinGroup) in a task of its own. Each
//! request gets a slot in an ordered queue, and the writer sends the
//! responses in request order (Kafka clients rely on it), each with one
//! vectored write, so fetched batches go from the segment map to the socket
//! without a copy. A long poll on one connection holds back only that
//! connection's later responses.
//!
//! Limits: frames longer than `max_frame_bytes` close the connection before
//! anything is allocated for them; at most `max_in_flight_per_connection`
//! requests wait for their responses (past that the reader stops reading);
//! a frame must be complete within `request_read_timeout_ms` of its first
//! byte; a connection with nothing in flight and no frame for
//! `connection_idle_ms`, or whose client stops reading its responses for
//! that long, is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sluice_protocol::io::write_frame;
use sluice_protocol::{FrameCodec, FrameError};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;

use super::dispatch::dispatch;
use super::state::{Kafka, Reply};
use super::wire::Chunks;

/// A response's place in the connection's order: `None` for a request
/// that gets no response (`acks=0`); a dropped sender closes the
/// connection after the responses before it.
type Slot = oneshot::Receiver<Option<Chunks>>;

/// Serves one connection until the client leaves, it idles out, it sends
/// something that cannot be answered, or the broker shuts down.
pub async fn serve(socket: TcpStream, peer: SocketAddr, kafka: Arc<Kafka>, _permit: OwnedSemaphorePermit) {
    let _ = socket.set_nodelay(true);
    let local = socket.local_addr().ok();
    let broker = Arc::clone(&kafka.broker);
    broker.metrics.connections.inc();
    let (read, write) = socket.into_split();
    let config = &broker.config;
    let idle = Duration::from_millis(config.connection_idle_ms);
    let read_timeout = Duration::from_millis(config.request_read_timeout_ms);
    let (tx, rx) = mpsc::channel::<Slot>(config.max_in_flight_per_connection);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_responses(write, rx, Arc::clone(&in_flight), peer, idle));
    let requests = TaskTracker::new();
    let mut frames = FramedRead::new(read, FrameCodec::new(config.max_frame_bytes));
    let mut clock = ReadClock::new(idle, read_timeout);
    loop {
        let next = tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            next = tokio::time::timeout(idle.min(read_timeout), frames.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                let partial = !frames.read_buffer().is_empty() || frames.decoder().mid_frame();
                if let Some(why) = clock.expired(partial, in_flight.load(Ordering::Acquire) == 0) {
                    tracing::debug!(%peer, "{why}; closing kafka connection");
                    break;
                }
                continue;
            }
            Ok(None) => break,
            Ok(Some(Err(FrameError::TooLarge { size, max }))) => {
                tracing::warn!(%peer, size, max, "kafka frame too large; closing connection");
                break;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "kafka read failed; closing");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        clock.frame_received();
        let (slot, answer) = oneshot::channel();
        in_flight.fetch_add(1, Ordering::AcqRel);
        if tx.send(answer).await.is_err() {
            break;
        }
        match dispatch(&kafka, frame, local) {
            Ok(Reply::Now(chunks)) => {
                let _ = slot.send(chunks);
            }
            Ok(Reply::Later(future)) => {
                requests.spawn(async move {
                    match future.await {
                        Ok(chunks) => {
                            let _ = slot.send(chunks);
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "kafka request failed; closing connection")
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "kafka request refused; closing connection");
                break;
            }
        }
    }
    requests.close();
    requests.wait().await;
    drop(tx);
    let _ = writer.await;
    broker.metrics.connections.dec();
}

/// The reader's deadlines: a started frame must be complete within the
/// read timeout, and a connection with nothing in flight closes after
/// `idle` without a frame.
struct ReadClock {
    idle: Duration,
    read_timeout: Duration,
    /// Since when no frame arrived.
    idle_since: Instant,
    /// Since when a frame has been incomplete.
    partial_since: Option<Instant>,
}

impl ReadClock {
    fn new(idle: Duration, read_timeout: Duration) -> Self {
        Self { idle, read_timeout, idle_since: Instant::now(), partial_since: None }
    }

    fn frame_received(&mut self) {
        self.idle_since = Instant::now();
        self.partial_since = None;
    }

    /// After a wait for a frame ran out: why the connection must close.
    fn expired(&mut self, partial: bool, nothing_in_flight: bool) -> Option<&'static str> {
        if partial {
            let since = *self.partial_since.get_or_insert_with(Instant::now);
            return (since.elapsed() >= self.read_timeout).then_some("a frame was not completed in time");
        }
        (self.idle_since.elapsed() >= self.idle && nothing_in_flight).then_some("idle connection")
    }
}

/// Writes the responses in request order; stops at a request that closes
/// the connection, a failed write, or a response the client does not read
/// within `stall`.
async fn write_responses(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Slot>,
    in_flight: Arc<AtomicUsize>,
    peer: SocketAddr,
    stall: Duration,
) {
    while let Some(slot) = rx.recv().await {
        let answer = slot.await;
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let chunks = match answer {
            Ok(Some(chunks)) => chunks,
            Ok(None) => continue,
            Err(_) => break,
        };
        match tokio::time::timeout(stall, write_frame(&mut write, &chunks)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "kafka write failed; closing");
                break;
            }
            Err(_) => {
                tracing::warn!(%peer, "kafka client stopped reading its responses; closing connection");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_closes_stalled_frames_and_idle_connections() {
        let mut c = ReadClock::new(Duration::from_secs(600), Duration::ZERO);
        assert_eq!(c.expired(false, true), None, "not idle yet");
        assert!(c.expired(true, false).is_some(), "a stalled frame closes, in flight or not");
        let mut c = ReadClock::new(Duration::ZERO, Duration::from_secs(30));
        assert_eq!(c.expired(false, false), None, "idle but waiting on its own requests");
        assert!(c.expired(false, true).is_some());
        assert_eq!(c.expired(true, true), None, "a frame just started has time");
        c.frame_received();
        assert!(c.partial_since.is_none());
    }
}
