//! The async connection every Sluice client uses (CLI, producer, consumer):
//! requests are pipelined on one TCP connection, a background task reads
//! responses and hands each to the caller waiting on its correlation id.
//!
//! [`Connection::call`] sends a request and awaits its response (with a
//! timeout); [`Connection::send`] sends one that gets no response (a
//! produce with `acks = none`). Cloning a `Connection` shares it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::api::{encode_request, ErrorBody, Message, Request, ResponseHeader};
use crate::frame::{length_prefix, FrameCodec, DEFAULT_MAX_FRAME_BYTES};
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
            ClientError::Malformed(_) => false,
        }
    }
}

type Pending = Arc<Mutex<Option<HashMap<u32, oneshot::Sender<Result<Bytes, ClientError>>>>>>;

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
    /// The broker's address.
    addr: SocketAddr,
}

/// Writes one frame given as chunks, with vectored writes.
pub async fn write_frame(w: &mut OwnedWriteHalf, chunks: &[Bytes]) -> io::Result<()> {
    let len: usize = chunks.iter().map(Bytes::len).sum();
    let prefix = length_prefix(len);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(chunks.len() + 1);
    parts.push(&prefix);
    parts.extend(chunks.iter().map(|c| c.as_ref()));
    write_all_vectored(w, &mut parts).await
}

/// `write_all` over several buffers, one `writev` per round.
pub async fn write_all_vectored(w: &mut OwnedWriteHalf, parts: &mut [&[u8]]) -> io::Result<()> {
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            if n >= parts[0].len() {
                n -= parts[0].len();
                parts = &mut parts[1..];
            } else {
                parts[0] = &parts[0][n..];
                n = 0;
            }
        }
        while parts.first().is_some_and(|p| p.is_empty()) {
            parts = &mut parts[1..];
        }
    }
    Ok(())
}

impl Connection {
    /// Connects to `addr` (a `host:port`).
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        let err = |e: io::Error| ClientError::Connect { addr: addr.to_owned(), message: e.to_string() };
        let stream = TcpStream::connect(addr).await.map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        let peer = stream.peer_addr().map_err(err)?;
        let (read, mut write) = stream.into_split();
        let (outgoing, mut rx) = mpsc::channel::<Vec<Bytes>>(1024);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));

        let writer_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(chunks) = rx.recv().await {
                if let Err(e) = write_frame(&mut write, &chunks).await {
                    fail_all(&writer_pending, &e.to_string());
                    return;
                }
            }
            let _ = write.shutdown().await;
        });

        let reader_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES + 1024));
            let reason = loop {
                match frames.next().await {
                    Some(Ok(frame)) => deliver(&reader_pending, frame),
                    Some(Err(FrameError::TooLarge { size, max })) => {
                        break format!("response of {size} bytes over {max}")
                    }
                    Some(Err(FrameError::Io(e))) => break e.to_string(),
                    None => break "closed by the broker".to_owned(),
                }
            };
            fail_all(&reader_pending, &reason);
        });

        Ok(Self {
            outgoing,
            pending,
            next_id: Arc::new(AtomicU32::new(1)),
            client_id: client_id.into(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            addr: peer,
        })
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending =
                self.pending.lock().map_err(|_| ClientError::ConnectionLost("poisoned".into()))?;
            let map =
                pending.as_mut().ok_or_else(|| ClientError::ConnectionLost("connection closed".into()))?;
            map.insert(id, tx);
        }
        let chunks = encode_request(id, &self.client_id, request).into_chunks();
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let chunks = encode_request(id, &self.client_id, request).into_chunks();
        self.outgoing.send(chunks).await.map_err(|_| ClientError::ConnectionLost("connection closed".into()))
    }

    fn forget(&self, id: u32) {
        forget(&self.pending, id);
    }
}

fn forget(pending: &Pending, id: u32) {
    if let Ok(mut pending) = pending.lock() {
        if let Some(map) = pending.as_mut() {
            map.remove(&id);
        }
    }
}

fn deliver(pending: &Pending, frame: Bytes) {
    let mut r = Reader::new(frame);
    let Ok(header) = ResponseHeader::decode(&mut r) else { return };
    let waiter =
        pending.lock().ok().and_then(|mut p| p.as_mut().and_then(|m| m.remove(&header.correlation_id)));
    let Some(waiter) = waiter else { return };
    let body = r.bytes(r.remaining()).unwrap_or_default();
    let result = if header.error_code.is_ok() {
        Ok(body)
    } else {
        let message = ErrorBody::decode_all(body).map(|b| b.message).unwrap_or_default();
        Err(ClientError::Server { code: header.error_code, message })
    };
    let _ = waiter.send(result);
}

fn fail_all(pending: &Pending, reason: &str) {
    let waiters = pending.lock().ok().and_then(|mut p| p.take());
    for (_, waiter) in waiters.into_iter().flatten() {
        let _ = waiter.send(Err(ClientError::ConnectionLost(reason.to_owned())));
    }
}
