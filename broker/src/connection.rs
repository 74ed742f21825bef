//! One client connection: read frames, dispatch them in order, and write
//! responses as they complete (pipelining; clients match responses by
//! correlation id). At most `max_in_flight_per_connection` requests are in
//! flight; past that the connection stops reading (backpressure). A writer
//! task sends each response's chunks with vectored writes, so fetched
//! batches go from the segment map to the socket without a copy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sluice_protocol::api::encode_error;
use sluice_protocol::client::write_frame;
use sluice_protocol::{ErrorCode, FrameCodec, FrameError};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::handlers::{dispatch, Chunks, Dispatch};

/// Serves one connection until the client leaves, it idles out, it sends
/// something unframeable, or the broker shuts down.
pub async fn serve(socket: TcpStream, peer: SocketAddr, broker: Arc<Broker>, _permit: OwnedSemaphorePermit) {
    let _ = socket.set_nodelay(true);
    broker.metrics.connections.inc();
    let _open = OpenConnection(Arc::clone(&broker));
    let (read, mut write) = socket.into_split();
    let max_in_flight = broker.config.max_in_flight_per_connection;
    let (tx, mut rx) = mpsc::channel::<Chunks>(max_in_flight);
    let writer = tokio::spawn(async move {
        while let Some(chunks) = rx.recv().await {
            if let Err(e) = write_frame(&mut write, &chunks).await {
                tracing::debug!(%peer, error = %e, "write failed; closing");
                return;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let requests = TaskTracker::new();
    let idle = Duration::from_millis(broker.config.connection_idle_ms);
    let mut frames = FramedRead::new(read, FrameCodec::new(broker.config.max_frame_bytes));
    loop {
        let next = tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            next = tokio::time::timeout(idle, frames.next()) => next,
        };
        let frame = match next {
            Err(_) if in_flight.available_permits() == max_in_flight => {
                tracing::debug!(%peer, "idle connection closed");
                break;
            }
            Err(_) => continue, // idle but waiting on its own long polls
            Ok(None) => break,
            Ok(Some(Err(FrameError::TooLarge { size, max }))) => {
                tracing::warn!(%peer, size, max, "frame too large; closing connection");
                let message = format!("frame of {size} bytes exceeds the maximum of {max} bytes");
                let _ = tx.send(encode_error(0, ErrorCode::InvalidRequest, &message).into_chunks()).await;
                break;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "read failed; closing");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { break };
        match dispatch(&broker, frame) {
            Dispatch::Done(response) => {
                drop(permit);
                if let Some(chunks) = response {
                    if tx.send(chunks).await.is_err() {
                        break;
                    }
                }
            }
            Dispatch::Pending(future) => {
                let tx = tx.clone();
                requests.spawn(async move {
                    if let Some(chunks) = future.await {
                        let _ = tx.send(chunks).await;
                    }
                    drop(permit);
                });
            }
            Dispatch::Close(chunks) => {
                tracing::warn!(%peer, "malformed request header; closing connection");
                let _ = tx.send(chunks).await;
                break;
            }
        }
    }
    requests.close();
    requests.wait().await;
    drop(tx);
    let _ = writer.await;
}

/// Decrements the open-connections gauge when the connection task ends.
struct OpenConnection(Arc<Broker>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}
