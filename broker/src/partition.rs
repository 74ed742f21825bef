//! A partition as the server sees it: its storage [`Log`] plus the async
//! plumbing around it. Appends happen inline (in request order); a flusher
//! task per partition runs the (blocking) flushes on a blocking thread, so
//! any number of durable produces share one flush (group commit), and
//! publishes the durable offset and the high watermark on watch channels
//! that durable produces and long-polling fetches wait on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::errors::BrokerError;
use crate::metrics::{Metrics, PartitionCounters};
use crate::storage::{FsyncPolicy, Log};
use std::sync::atomic::{AtomicU64, Ordering};

/// Progress of flushes, for durable produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durability {
    /// Offsets below this are on stable storage.
    pub offset: u64,
    /// Flushes that failed so far (a waiter fails when this moves).
    pub failures: u64,
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    /// Topic name (for logs and metrics).
    pub topic: Arc<str>,
    /// Partition index.
    pub index: u32,
    /// The storage.
    pub log: Arc<Log>,
    /// The high watermark, watched by long-polling fetches.
    hw: watch::Sender<u64>,
    /// Flush progress, watched by durable produces.
    durable: watch::Sender<Durability>,
    /// Wakes the flusher.
    flush_wanted: Notify,
    /// Stops the flusher (topic deleted, broker stopping).
    pub cancel: CancellationToken,
    /// Hot-path counters.
    pub counters: PartitionCounters,
    /// Appends since the last flush (for the group-commit histogram).
    appends_since_flush: AtomicU64,
    /// Flush metrics.
    metrics: Arc<Metrics>,
}

impl Partition {
    /// Wraps an open log.
    pub fn new(
        topic: Arc<str>,
        index: u32,
        log: Log,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        let durable = Durability { offset: log.durable_offset(), failures: 0 };
        let hw = log.high_watermark();
        let counters = metrics.partition(&topic, index);
        Self {
            topic,
            index,
            log: Arc::new(log),
            hw: watch::Sender::new(hw),
            durable: watch::Sender::new(durable),
            flush_wanted: Notify::new(),
            cancel,
            counters,
            appends_since_flush: AtomicU64::new(0),
            metrics,
        }
    }

    /// Called after every append: in `always` mode asks for a flush (the
    /// high watermark moves when it is done); otherwise publishes the new
    /// high watermark at once.
    pub fn after_append(&self, records: u32, bytes: usize) {
        self.counters.messages_in.inc_by(u64::from(records));
        self.counters.bytes_in.inc_by(bytes as u64);
        self.appends_since_flush.fetch_add(1, Ordering::Relaxed);
        match self.log.config().fsync {
            FsyncPolicy::Always => self.flush_wanted.notify_one(),
            // Visible once the timer's flush makes it durable.
            FsyncPolicy::Interval(_) => {}
            FsyncPolicy::Never => self.publish_high_watermark(),
        }
    }

    fn publish_high_watermark(&self) {
        let hw = self.log.high_watermark();
        self.hw.send_if_modified(|v| {
            let changed = *v != hw;
            *v = hw;
            changed
        });
    }

    /// A receiver that sees high-watermark changes.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    /// Waits until every offset up to `last_offset` is on stable storage,
    /// at most `timeout`.
    pub async fn wait_durable(&self, last_offset: u64, timeout: Duration) -> Result<(), BrokerError> {
        let mut rx = self.durable.subscribe();
        let failures = rx.borrow().failures;
        let wait = async {
            rx.wait_for(|d| d.offset > last_offset || d.failures != failures)
                .await
                .map(|d| d.offset > last_offset)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(BrokerError::Internal("flush failed; see the broker log".into())),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::Timeout(timeout.as_millis().min(u128::from(u32::MAX)) as u32)),
        }
    }

    /// Flushes now (blocking thread) and publishes the result.
    pub async fn flush(&self) {
        let log = Arc::clone(&self.log);
        let appends = self.appends_since_flush.swap(0, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || log.flush()).await;
        self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.appends_per_flush.observe(appends as f64);
        match result {
            Ok(Ok(())) => {
                let offset = self.log.durable_offset();
                self.durable.send_modify(|d| d.offset = d.offset.max(offset));
                self.publish_high_watermark();
            }
            Ok(Err(e)) => {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "flush failed");
                self.durable.send_modify(|d| d.failures += 1);
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "flush task failed");
                self.durable.send_modify(|d| d.failures += 1);
            }
        }
    }

    /// The flusher: flushes when asked (durable produces, `always` mode) and
    /// on the `interval` timer, until cancelled.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            let interval = match self.log.config().fsync {
                FsyncPolicy::Interval(d) => d,
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.flush_wanted.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            if self.log.durable_offset() < self.log.log_end_offset() {
                self.flush().await;
            }
        }
    }
}
