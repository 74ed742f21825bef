//! The async connection every Sluice client uses (CLI, producer, consumer):
//! requests are pipelined on one TCP connection, a background task reads
//! responses and hands each to the caller waiting on its correlation id.
//!
//! [`Connection::call`] sends a request and awaits its response (with a
//! timeout); [`Connection::send`] sends one that gets no response (a
//! produce with `acks = none`). Cloning a `Connection` shares it.
//!
//! Requests too large for the broker: a connection may be given a
//! `max_request_bytes` ([`Connection::with_max_request_bytes`]); a larger
//! request fails at once with [`ClientError::RequestTooLarge`] and is never
//! written. A broker that reads a frame over its own `max_frame_bytes`
//! answers with an error under correlation id 0 and closes the connection;
//! the pending requests larger than the maximum it names then fail with
//! `RequestTooLarge` (not retriable), the others with `ConnectionLost`
//! (retriable: they were not the cause).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::api::{encode_request, ErrorBody, Message, Request, ResponseHeader};
use crate::frame::{FrameCodec, DEFAULT_MAX_FRAME_BYTES};
use crate::io::write_frame;
use crate::{ErrorCode, FrameError, Reader, WireError};

/// Default time a call waits for its response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The broker address.
        addr: String,
        /// The OS error.
        message: String,
    },
    /// The connection failed or was closed while the call was pending.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// No response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The broker answered with an error.
    #[error("{code:?}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The request is larger than the broker accepts (a limit configured
    /// on the connection, or the one the broker named when it refused it).
    #[error("request of {size} bytes exceeds the broker's maximum of {max} bytes")]
    RequestTooLarge {
        /// The request's size (the frame's payload).
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The response did not parse.
    #[error("malformed response: {0}")]
    Malformed(#[from] WireError),
}

impl ClientError {
    /// The wire code when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same request may succeed if retried (after reconnecting
    /// when the connection was lost).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::ConnectionLost(_) | ClientError::Timeout(_) => true,
            ClientError::Server { code, .. } => code.is_retriable(),
            ClientError::Malformed(_) | ClientError::RequestTooLarge { .. } => false,
        }
    }
}

/// A caller waiting for its response, and the size of its request (to
/// tell which one a broker's "frame too large" was about).
type Waiter = (oneshot::Sender<Result<Bytes, ClientError>>, usize);

/// The wait before retry number `failures` (1 for the first): `base`
/// doubled per consecutive failure, capped at `max`, with ±20% jitter so
/// clients that failed together do not retry together.
pub fn retry_backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let doublings = failures.saturating_sub(1).min(31);
    let wait = base.saturating_mul(1 << doublings).min(max);
    // A fresh RandomState is randomly keyed: enough randomness for jitter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(failures);
    let jitter = 0.8 + 0.4 * (h.finish() % 10_001) as f64 / 10_000.0;
    wait.mul_f64(jitter)
}

type Pending = Arc<Mutex<Option<HashMap<u32, Waiter>>>>;

/// The correlation id of the broker's connection-level errors (never used
/// by a request).
const CONNECTION_ERROR_ID: u32 = 0;

/// A pipelined connection to a broker.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Frames (as chunks) for the writer task.
    outgoing: mpsc::Sender<Vec<Bytes>>,
    /// Callers waiting for responses; `None` once the connection is dead.
    pending: Pending,
    /// Next correlation id.
    next_id: Arc<AtomicU32>,
    /// Sent in every request header.
    client_id: Arc<str>,
    /// How long `call` waits.
    timeout: Duration,
    /// Requests larger than this (payload bytes) are refused unsent.
    max_request_bytes: usize,
    /// The broker's address.
    addr: SocketAddr,
}

impl Connection {
    /// Connects to `addr` (a `host:port`).
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        let err = |e: io::Error| ClientError::Connect { addr: addr.to_owned(), message: e.to_string() };
        let stream = TcpStream::connect(addr).await.map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        let peer = stream.peer_addr().map_err(err)?;
        let (read, write) = stream.into_split();
        let (outgoing, rx) = mpsc::channel::<Vec<Bytes>>(1024);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));

        // A failed write is reported to the reader, which keeps reading a
        // little longer: the broker's reason for closing may still arrive.
        let (write_failed, write_failure) = oneshot::channel();
        tokio::spawn(run_writer(write, rx, write_failed));
        tokio::spawn(run_reader(read, Arc::clone(&pending), write_failure));

        Ok(Self {
            outgoing,
            pending,
            next_id: Arc::new(AtomicU32::new(CONNECTION_ERROR_ID + 1)),
            client_id: client_id.into(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            max_request_bytes: usize::MAX,
            addr: peer,
        })
    }

    /// The same connection, refusing requests over `max` payload bytes
    /// (the broker's `max_frame_bytes`, when the caller knows it) with
    /// [`ClientError::RequestTooLarge`] before writing them.
    pub fn with_max_request_bytes(mut self, max: usize) -> Self {
        self.max_request_bytes = max;
        self
    }

    /// The same connection with another call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The broker's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection has failed.
    pub fn is_closed(&self) -> bool {
        self.pending.lock().map(|p| p.is_none()).unwrap_or(true)
    }

    /// Sends `request` and awaits its response.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response, ClientError> {
        self.start(request).await?.await
    }

    /// Sends `request` and awaits the raw response body.
    pub async fn call_raw<R: Request>(&self, request: &R) -> Result<Bytes, ClientError> {
        self.start_raw(request).await?.await
    }

    /// Writes `request` to the connection now (in the order `start` calls
    /// complete) and returns a future for its response. Callers that need
    /// requests on the wire in a given order await `start` in that order.
    pub async fn start<R: Request>(
        &self,
        request: &R,
    ) -> Result<
        impl std::future::Future<Output = Result<R::Response, ClientError>> + Send + 'static,
        ClientError,
    > {
        let body = self.start_raw(request).await?;
        Ok(async move { Ok(R::Response::decode_all(body.await?)?) })
    }

    async fn start_raw<R: Request>(
        &self,
        request: &R,
    ) -> Result<impl std::future::Future<Output = Result<Bytes, ClientError>> + Send + 'static, ClientError>
    {
        let id = self.next_id();
        let chunks = encode_request(id, &self.client_id, request).into_chunks();
        let size = self.check_size(&chunks)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending =
                self.pending.lock().map_err(|_| ClientError::ConnectionLost("poisoned".into()))?;
            let map =
                pending.as_mut().ok_or_else(|| ClientError::ConnectionLost("connection closed".into()))?;
            map.insert(id, (tx, size));
        }
        if self.outgoing.send(chunks).await.is_err() {
            self.forget(id);
            return Err(ClientError::ConnectionLost("connection closed".into()));
        }
        let timeout = self.timeout;
        let pending = Arc::clone(&self.pending);
        Ok(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ClientError::ConnectionLost("connection closed".into())),
                Err(_) => {
                    forget(&pending, id);
                    Err(ClientError::Timeout(timeout))
                }
            }
        })
    }

    /// Sends a request that gets no response.
    pub async fn send<R: Request>(&self, request: &R) -> Result<(), ClientError> {
        let id = self.next_id();
        let chunks = encode_request(id, &self.client_id, request).into_chunks();
        self.check_size(&chunks)?;
        self.outgoing.send(chunks).await.map_err(|_| ClientError::ConnectionLost("connection closed".into()))
    }

    fn forget(&self, id: u32) {
        forget(&self.pending, id);
    }

    /// The next correlation id (never [`CONNECTION_ERROR_ID`], even after
    /// wrapping).
    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != CONNECTION_ERROR_ID {
                return id;
            }
        }
    }

    /// The payload size of a request, or `RequestTooLarge` over the limit.
    fn check_size(&self, chunks: &[Bytes]) -> Result<usize, ClientError> {
        let size = chunks.iter().map(Bytes::len).sum();
        if size > self.max_request_bytes {
            return Err(ClientError::RequestTooLarge { size, max: self.max_request_bytes });
        }
        Ok(size)
    }
}

/// How long the reader keeps reading after a write failed, for the
/// broker's connection-level error (it closed the connection on purpose).
const READ_GRACE_AFTER_WRITE_FAILURE: Duration = Duration::from_millis(500);

/// Writes queued frames until the connection is dropped or a write fails.
async fn run_writer(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    failed: oneshot::Sender<String>,
) {
    while let Some(chunks) = rx.recv().await {
        if let Err(e) = write_frame(&mut write, &chunks).await {
            let _ = failed.send(e.to_string());
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Delivers responses until the connection ends, then fails what is
/// still pending (see the module doc for a broker's "frame too large").
async fn run_reader(read: OwnedReadHalf, pending: Pending, mut write_failure: oneshot::Receiver<String>) {
    let mut frames = FramedRead::new(read, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES + 1024));
    let mut refused: Option<(String, Option<usize>)> = None;
    let mut write_error: Option<String> = None;
    let mut writer_done = false;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let reason = loop {
        tokio::select! {
            next = frames.next() => match next {
                Some(Ok(frame)) => {
                    if let Some(error) = deliver(&pending, frame) {
                        refused = Some(error);
                    }
                }
                Some(Err(FrameError::TooLarge { size, max })) => {
                    break format!("response of {size} bytes over {max}")
                }
                Some(Err(FrameError::Io(e))) => break e.to_string(),
                None => break "closed by the broker".to_owned(),
            },
            failure = &mut write_failure, if !writer_done => {
                writer_done = true; // a finished oneshot must not be polled again
                if let Ok(e) = failure {
                    write_error = Some(e);
                    grace.as_mut().reset(tokio::time::Instant::now() + READ_GRACE_AFTER_WRITE_FAILURE);
                }
            }
            () = &mut grace => break write_error.take().unwrap_or_default(),
        }
    };
    match refused {
        Some((message, max)) => fail_all(&pending, &format!("{reason}: {message}"), max),
        None => fail_all(&pending, &reason, None),
    }
}

fn forget(pending: &Pending, id: u32) {
    if let Ok(mut pending) = pending.lock() {
        if let Some(map) = pending.as_mut() {
            map.remove(&id);
        }
    }
}

/// Hands a response to its caller. A connection-level error from the
/// broker (correlation id 0: it is about to close the connection) is
/// returned instead: its message and, when it refused an oversized frame,
/// the maximum it named.
fn deliver(pending: &Pending, frame: Bytes) -> Option<(String, Option<usize>)> {
    let mut r = Reader::new(frame);
    let header = ResponseHeader::decode(&mut r).ok()?;
    let body = r.bytes(r.remaining()).unwrap_or_default();
    let error = (!header.error_code.is_ok())
        .then(|| ErrorBody::decode_all(body.clone()).map(|b| b.message).unwrap_or_default());
    if header.correlation_id == CONNECTION_ERROR_ID {
        let message = error?;
        let max = frame_limit(&message);
        return Some((format!("{:?}: {message}", header.error_code), max));
    }
    let waiter =
        pending.lock().ok().and_then(|mut p| p.as_mut().and_then(|m| m.remove(&header.correlation_id)));
    let (waiter, _) = waiter?;
    let result = match error {
        None => Ok(body),
        Some(message) => Err(ClientError::Server { code: header.error_code, message }),
    };
    let _ = waiter.send(result);
    None
}

/// The maximum in a broker's "frame too large" message, which is
/// [`FrameError::TooLarge`]'s text: `frame of N bytes exceeds the maximum
/// of M bytes`.
fn frame_limit(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("frame of ")?;
    let (_, rest) = rest.split_once(" bytes exceeds the maximum of ")?;
    rest.strip_suffix(" bytes")?.parse().ok()
}

/// Fails every pending call: those larger than `max` (the broker's frame
/// limit, when it refused one) with `RequestTooLarge`, the rest with
/// `ConnectionLost`.
fn fail_all(pending: &Pending, reason: &str, max: Option<usize>) {
    let waiters = pending.lock().ok().and_then(|mut p| p.take());
    for (_, (waiter, size)) in waiters.into_iter().flatten() {
        let error = match max {
            Some(max) if size > max => ClientError::RequestTooLarge { size, max },
            _ => ClientError::ConnectionLost(reason.to_owned()),
        };
        let _ = waiter.send(Err(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_the_maximum_with_jitter() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for (failures, nominal) in [(1, 100), (2, 200), (3, 400), (5, 1600), (6, 2000), (u32::MAX, 2000)] {
            let wait = retry_backoff(base, max, failures).as_secs_f64() * 1000.0;
            let nominal = f64::from(nominal);
            assert!(wait >= nominal * 0.8 - 1e-6 && wait <= nominal * 1.2 + 1e-6, "{failures}: {wait}");
        }
        let waits: std::collections::HashSet<Duration> =
            (0..20).map(|_| retry_backoff(base, max, 3)).collect();
        assert!(waits.len() > 1, "jittered");
    }

    #[test]
    fn frame_limit_reads_the_brokers_frame_too_large_message() {
        let message = FrameError::TooLarge { size: 20_000_000, max: 65_536 }.to_string();
        assert_eq!(frame_limit(&message), Some(65_536));
        assert_eq!(frame_limit("frame of 5 bytes exceeds the maximum of many bytes"), None);
        assert_eq!(frame_limit("malformed request header"), None);
    }

    #[test]
    fn only_requests_over_the_named_maximum_are_too_large() {
        let (big_tx, big_rx) = oneshot::channel();
        let (small_tx, small_rx) = oneshot::channel();
        let pending: Pending =
            Arc::new(Mutex::new(Some(HashMap::from([(1, (small_tx, 100)), (2, (big_tx, 5000))]))));
        fail_all(&pending, "closed", Some(1024));
        assert!(matches!(
            big_rx.blocking_recv().unwrap(),
            Err(ClientError::RequestTooLarge { size: 5000, max: 1024 })
        ));
        let small = small_rx.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(small, ClientError::ConnectionLost(_)) && small.is_retriable());
    }
}
