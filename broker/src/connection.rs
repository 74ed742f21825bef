//! One client connection: read frames, dispatch them in order, and write
//! responses as they complete (pipelining; clients match responses by
//! correlation id). A writer task sends each response's chunks with
//! vectored writes, so fetched batches go from the segment map to the socket
//! without a copy.
//!
//! Limits a careless or hostile client cannot get around:
//! - at most `max_in_flight_per_connection` requests are in flight; past
//!   that the connection stops reading (backpressure);
//! - while the responses queued for the writer (produced, not yet written
//!   to the socket) exceed `max_queued_response_bytes`, the connection stops
//!   reading, and requests in flight wait before they build their responses
//!   (a fetch reads nothing until then): a client that pipelines fetches and
//!   never reads makes the broker hold at most that many bytes plus the
//!   responses started while there was room (at most
//!   `max_in_flight_per_connection` of them);
//! - a frame whose first byte arrived must be complete within
//!   `request_read_timeout_ms`, or the connection is closed (slowloris);
//! - a response that cannot be written within `connection_idle_ms` (the
//!   client stopped reading) closes the connection;
//! - a connection with nothing in flight and no frame for
//!   `connection_idle_ms` is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sluice_protocol::api::encode_error;
use sluice_protocol::frame::LENGTH_PREFIX;
use sluice_protocol::io::write_frame;
use sluice_protocol::{ErrorCode, FrameCodec, FrameError};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::handlers::{dispatch, Chunks, Dispatch};

/// Serves one connection until the client leaves, it idles out, it stalls
/// mid-frame or stops reading, it sends something unframeable, or the
/// broker shuts down.
pub async fn serve(socket: TcpStream, peer: SocketAddr, broker: Arc<Broker>, _permit: OwnedSemaphorePermit) {
    let _ = socket.set_nodelay(true);
    broker.metrics.connections.inc();
    let _open = OpenConnection(Arc::clone(&broker));
    let (read, write) = socket.into_split();
    let config = &broker.config;
    let max_in_flight = config.max_in_flight_per_connection;
    let idle = Duration::from_millis(config.connection_idle_ms);
    let (tx, rx) = mpsc::channel::<Chunks>(max_in_flight);
    let queue = Arc::new(ResponseQueue::new(config.max_queued_response_bytes));
    let writer = tokio::spawn(write_responses(write, rx, Arc::clone(&queue), peer, idle));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let requests = TaskTracker::new();
    let codec = TimedFrames::new(config.max_frame_bytes);
    let mut frames = FramedRead::new(read, codec);
    let mut timers = ReadTimers::new(idle, Duration::from_millis(config.request_read_timeout_ms));
    loop {
        if !queue.wait_for_room(&broker, Shutdown::Stop).await {
            break;
        }
        let next = tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            next = tokio::time::timeout(timers.wait(), frames.next()) => next,
        };
        let frame = match next {
            Err(_) => match timers
                .expired(frames.decoder().partial_since, in_flight.available_permits() == max_in_flight)
            {
                Some(why) => {
                    tracing::debug!(%peer, "{why}; closing connection");
                    break;
                }
                None => continue,
            },
            Ok(None) => break,
            Ok(Some(Err(FrameError::TooLarge { size, max }))) => {
                tracing::warn!(%peer, size, max, "frame too large; closing connection");
                let message = format!("frame of {size} bytes exceeds the maximum of {max} bytes");
                queue.send(&tx, encode_error(0, ErrorCode::InvalidRequest, &message).into_chunks()).await;
                break;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "read failed; closing");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        timers.frame_received();
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { break };
        if !respond(dispatch(&broker, frame), permit, &queue, &tx, &requests, &broker, peer).await {
            break;
        }
    }
    requests.close();
    requests.wait().await;
    drop(tx);
    let _ = writer.await;
}

/// Hands a request's response to the writer: at once, or from a task of
/// `requests` when it is still being worked on (its in-flight `permit` held
/// until then). `false` when the connection must close.
async fn respond(
    dispatched: Dispatch,
    permit: OwnedSemaphorePermit,
    queue: &Arc<ResponseQueue>,
    tx: &mpsc::Sender<Chunks>,
    requests: &TaskTracker,
    broker: &Arc<Broker>,
    peer: SocketAddr,
) -> bool {
    match dispatched {
        Dispatch::Done(response) => {
            drop(permit);
            match response {
                Some(response) => queue.send(tx, response.chunks).await,
                None => true,
            }
        }
        Dispatch::Pending(future) => {
            let (queue, tx, broker) = (Arc::clone(queue), tx.clone(), Arc::clone(broker));
            requests.spawn(async move {
                // The future is lazy: a fetch reads nothing until polled,
                // so it waits for room before building its response.
                if queue.wait_for_room(&broker, Shutdown::Proceed).await {
                    if let Some(response) = future.await {
                        queue.send(&tx, response.chunks).await;
                    }
                }
                drop(permit);
            });
            true
        }
        Dispatch::Close(response) => {
            tracing::warn!(%peer, "malformed request header; closing connection");
            queue.send(tx, response.chunks).await;
            false
        }
    }
}

/// Writes queued responses in order; gives up (closing the connection) when
/// a write fails or one response cannot be written within `stall`.
async fn write_responses(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Chunks>,
    queue: Arc<ResponseQueue>,
    peer: SocketAddr,
    stall: Duration,
) {
    while let Some(chunks) = rx.recv().await {
        let written = tokio::time::timeout(stall, write_frame(&mut write, &chunks)).await;
        queue.written(frame_len(&chunks));
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "write failed; closing");
                break;
            }
            Err(_) => {
                tracing::warn!(%peer, stall_ms = stall.as_millis() as u64, "client stopped reading its responses; closing connection");
                break;
            }
        }
    }
    queue.writer_gone();
}

/// Bytes a response takes on the wire.
fn frame_len(chunks: &Chunks) -> usize {
    LENGTH_PREFIX + chunks.iter().map(Bytes::len).sum::<usize>()
}

/// The responses handed to the writer and not yet written, counted in
/// bytes, with a wake-up for the reader when they drain.
struct ResponseQueue {
    /// Bytes queued and not yet written.
    bytes: AtomicUsize,
    /// Above this many queued bytes the reader waits.
    limit: usize,
    /// Signalled when queued bytes were written or the writer ended.
    drained: Notify,
    /// The writer ended: nothing queued will be written.
    gone: AtomicBool,
}

impl ResponseQueue {
    fn new(limit: usize) -> Self {
        Self { bytes: AtomicUsize::new(0), limit, drained: Notify::new(), gone: AtomicBool::new(false) }
    }

    /// Queues a response for the writer; `false` when the writer is gone.
    async fn send(&self, tx: &mpsc::Sender<Chunks>, chunks: Chunks) -> bool {
        let len = frame_len(&chunks);
        self.bytes.fetch_add(len, Ordering::AcqRel);
        if tx.send(chunks).await.is_err() {
            self.written(len);
            return false;
        }
        true
    }

    fn written(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    fn writer_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }

    /// Waits until the queued bytes are within the limit. `false` when the
    /// writer is gone, or the broker is shutting down and `shutdown` says
    /// to stop.
    async fn wait_for_room(&self, broker: &Broker, shutdown: Shutdown) -> bool {
        loop {
            let drained = self.drained.notified();
            if self.gone.load(Ordering::Acquire) {
                return false;
            }
            if self.bytes.load(Ordering::Acquire) <= self.limit {
                return true;
            }
            tokio::select! {
                _ = broker.shutdown.cancelled() => return shutdown == Shutdown::Proceed,
                _ = drained => {}
            }
        }
    }
}

/// What waiting for room does when the broker shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// Stop (the reader stops reading).
    Stop,
    /// Go ahead (a request in flight still gets its answer).
    Proceed,
}

/// The frame codec, noting when the frame being received began.
struct TimedFrames {
    /// The length-prefixed codec.
    inner: FrameCodec,
    /// When the first byte of the incomplete frame was seen.
    partial_since: Option<Instant>,
}

impl TimedFrames {
    fn new(max_frame_bytes: usize) -> Self {
        Self { inner: FrameCodec::new(max_frame_bytes), partial_since: None }
    }
}

impl Decoder for TimedFrames {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let frame = self.inner.decode(src)?;
        if frame.is_some() {
            self.partial_since = None;
        }
        if src.is_empty() && !self.inner.mid_frame() {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        Ok(frame)
    }
}

/// The idle and partial-frame deadlines of one connection's reader.
#[derive(Debug)]
struct ReadTimers {
    /// Close after this long without a frame while nothing is in flight.
    idle: Duration,
    /// A started frame must be complete within this long.
    read_timeout: Duration,
    /// Since when no frame arrived (reset by in-flight work).
    idle_since: Instant,
}

impl ReadTimers {
    fn new(idle: Duration, read_timeout: Duration) -> Self {
        Self { idle, read_timeout, idle_since: Instant::now() }
    }

    /// How long to wait for the next frame before checking the deadlines:
    /// a partial frame that starts meanwhile is caught at most one read
    /// timeout late, and then re-checked at its own deadline.
    fn wait(&self) -> Duration {
        self.idle
            .saturating_sub(self.idle_since.elapsed())
            .min(self.read_timeout)
            .max(Duration::from_millis(1))
    }

    fn frame_received(&mut self) {
        self.idle_since = Instant::now();
    }

    /// After a wait ran out: why the connection must close, if it must.
    fn expired(&mut self, partial_since: Option<Instant>, nothing_in_flight: bool) -> Option<&'static str> {
        if partial_since.is_some_and(|t| t.elapsed() >= self.read_timeout) {
            return Some("a frame was not completed within request_read_timeout_ms");
        }
        if self.idle_since.elapsed() >= self.idle {
            if nothing_in_flight {
                return Some("idle connection");
            }
            self.idle_since = Instant::now(); // waiting on its own long polls
        }
        None
    }
}

/// Decrements the open-connections gauge when the connection task ends.
struct OpenConnection(Arc<Broker>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_frame_is_timed_from_its_first_byte() {
        let mut codec = TimedFrames::new(1024);
        let mut buf = BytesMut::new();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.partial_since.is_none(), "nothing received: idle, not partial");
        buf.extend_from_slice(&[0, 0]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        let started = codec.partial_since.expect("half a length prefix is a partial frame");
        buf.extend_from_slice(&[0, 3, 1]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.partial_since, Some(started), "more bytes do not restart the clock");
        buf.extend_from_slice(&[2, 3]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), Bytes::from_static(&[1, 2, 3]));
        assert!(codec.partial_since.is_none(), "complete: the clock stops");
    }

    #[test]
    fn timers_close_stalled_frames_and_idle_connections() {
        let mut t = ReadTimers::new(Duration::from_secs(600), Duration::ZERO);
        assert_eq!(t.expired(None, true), None, "no partial frame, not idle yet");
        assert!(t.expired(Some(Instant::now()), false).is_some(), "a stalled frame closes, in flight or not");
        let mut t = ReadTimers::new(Duration::ZERO, Duration::from_secs(30));
        assert_eq!(t.expired(None, false), None, "idle but waiting on its own requests");
        assert!(t.expired(None, true).is_some());
        assert!(t.wait() >= Duration::from_millis(1));
    }
}
