//! Accept loops: [`accept_connections`], shared by the native listener
//! (`server`) and the Kafka listener (`kafka::listener`), and the backoff
//! after a failed `accept` that the admin HTTP listener uses too: pause,
//! doubling the pause while failures last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::broker::Broker;

/// Accepts connections on `listener` until the broker shuts down, handing
/// each to `serve` (whose future `connections` tracks) with one of
/// `permits`. Without a permit the connection is closed at once, counted in
/// `connections_refused` and logged at most once a second. `what` names the
/// listener in the log. Returns at shutdown with the listener closed; the
/// caller drains `connections`.
pub(crate) async fn accept_connections<F, Fut>(
    broker: &Broker,
    listener: TcpListener,
    permits: Arc<Semaphore>,
    connections: &TaskTracker,
    what: &str,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                let pause = backoff.failed();
                tracing::warn!(listener = what, error = %e, pause_ms = pause.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    _ = broker.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(serve(socket, peer, permit));
            }
            Err(_) => {
                refused += 1;
                broker.metrics.connections_refused.inc();
                drop(socket);
                if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(listener = what, %peer, max_connections = broker.config.max_connections, refused_total = refused, "connection refused: max_connections reached");
                    last_refusal_log = Some(Instant::now());
                }
            }
        }
    }
}

/// How long an accept loop pauses after `accept` fails. Out of file
/// descriptors (EMFILE/ENFILE) or buffers, `accept` fails at once and keeps
/// failing: retrying at once spins a core and floods the log while the
/// connection waits in the backlog. The pause doubles from 5 ms up to 1 s
/// while failures last and resets after a success, so a brief shortage
/// costs milliseconds and a lasting one costs one try a second.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// Failures in a row.
    failures: u32,
}

impl AcceptBackoff {
    /// First pause.
    const MIN: Duration = Duration::from_millis(5);
    /// Longest pause.
    const MAX: Duration = Duration::from_secs(1);

    /// Records a failed accept; returns how long to pause before the next.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = Self::MIN.saturating_mul(1u32 << self.failures.min(16)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    /// Records a successful accept.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_caps_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<u128> = (0..12).map(|_| b.failed().as_millis()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.failed(), AcceptBackoff::MAX, "never past the cap, never overflowing");
        }
        b.succeeded();
        assert_eq!(b.failed(), AcceptBackoff::MIN);
    }
}
