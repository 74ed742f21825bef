//! A partition as the server sees it: its storage [`Log`] plus the async
//! plumbing around it. Appends happen inline (in request order); a flusher
//! task per partition runs the (blocking) flushes on a blocking thread, so
//! any number of durable produces share one flush (group commit), and
//! publishes the durable offset and the high watermark on watch channels
//! that durable produces and long-polling fetches wait on.
//!
//! The partition owns every fsync-policy decision: when to flush, when the
//! high watermark moves (never backwards, whatever the policy changes to),
//! and what happens after a failed sync. A sync that fails is never retried
//! and trusted (Linux reports a writeback error once per file description,
//! and the next fdatasync returns 0 over pages that never reached the disk):
//! the partition stops acknowledging (pending durable produces and later
//! appends fail with [`StorageError::Failed`]), keeps serving reads below
//! its high watermark, and its flusher reopens the log from its last
//! durable point, with backoff, then accepts writes again.
//!
//! Locks, always taken in this order: `syncing` (one flush at a time, its
//! result published before the next starts), then `log` (read: appends and
//! request handlers; write: swapping in a reopened log, changing settings).
//! No lock is held across an `.await`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::RecordBatch;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::errors::BrokerError;
use crate::metrics::{Metrics, PartitionCounters};
use crate::storage::{AppendInfo, FsyncPolicy, Log, LogConfig, StorageError};

/// First wait before reopening a failed log again.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between reopen attempts.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Progress of flushes, for durable produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durability {
    /// Offsets below this are on stable storage (never decreases).
    pub offset: u64,
    /// Bumped by every failed sync: a batch appended in an earlier
    /// generation is durable only if it lies below `failed_at`.
    pub generation: u64,
    /// The durable offset when the last sync failed.
    pub failed_at: u64,
    /// A sync failed and the log has not been reopened yet.
    pub failed: bool,
}

/// What [`Partition::append`] did.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Offsets and time stamps of the batch.
    pub info: AppendInfo,
    /// The log start offset after the append.
    pub log_start_offset: u64,
    /// The durability generation it was appended in.
    generation: u64,
    /// The policy it was appended under.
    fsync: FsyncPolicy,
}

impl Appended {
    /// Whether a durable acknowledgement of this batch waits for a flush
    /// ([`Partition::wait_durable`]). Not under `fsync = never`: there an
    /// append is all a durable produce gets, as that policy's docs say.
    pub fn awaits_flush(&self) -> bool {
        self.fsync != FsyncPolicy::Never
    }
}

/// Runs blocking work (creating files, fsyncs) that must stay in request
/// order from an async task without stalling the tasks queued behind it:
/// on a multi-threaded runtime the worker first hands them to another
/// thread (`tokio::task::block_in_place`); elsewhere (a current-thread
/// runtime, a blocking thread, no runtime) it just runs. Work that may run
/// out of order goes to `spawn_blocking` instead.
pub fn blocking_in_place<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Faults a unit test injects.
#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    /// Syncs to fail before they reach the log.
    fail_syncs: std::sync::atomic::AtomicU32,
    /// While set, reopening the log fails.
    fail_reopens: std::sync::atomic::AtomicBool,
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    /// Topic name (for logs and metrics).
    pub topic: Arc<str>,
    /// Partition index.
    pub index: u32,
    /// The partition directory (reopened after a failed sync).
    dir: PathBuf,
    /// The storage; swapped for a freshly opened one after a failed sync.
    /// Read it once per request ([`log`](Self::log)).
    log: RwLock<Arc<Log>>,
    /// One sync at a time, its outcome published before the next starts:
    /// a sync that returns Ok after another one failed is not trusted.
    syncing: Mutex<()>,
    /// The high watermark (never decreases), watched by long-polling fetches.
    hw: watch::Sender<u64>,
    /// Flush progress, watched by durable produces.
    durable: watch::Sender<Durability>,
    /// Wakes the flusher (appends in `always` mode, policy changes, failures).
    flush_wanted: Notify,
    /// Stops the flusher (topic deleted, broker stopping).
    pub cancel: CancellationToken,
    /// Hot-path counters.
    pub counters: PartitionCounters,
    /// Appends since the last flush (for the group-commit histogram).
    appends_since_flush: AtomicU64,
    /// Flush metrics.
    metrics: Arc<Metrics>,
    /// Leader, follower, offline, or a single node's partition, and what
    /// replication tracks for it (`replica`).
    role: replica::ReplicaState,
    /// Injected faults (unit tests only).
    #[cfg(test)]
    faults: Faults,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sleeps `interval`, or forever without one.
async fn sleep_or_never(interval: Option<Duration>) {
    match interval {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
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
        let durable = Durability { offset: log.durable_offset(), ..Durability::default() };
        let hw = log.high_watermark();
        let counters = metrics.partition(&topic, index);
        Self {
            topic,
            index,
            dir: log.dir().to_owned(),
            log: RwLock::new(Arc::new(log)),
            syncing: Mutex::new(()),
            hw: watch::Sender::new(hw),
            durable: watch::Sender::new(durable),
            flush_wanted: Notify::new(),
            cancel,
            counters,
            appends_since_flush: AtomicU64::new(0),
            metrics,
            role: replica::ReplicaState::default(),
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    /// The storage now (a reopened one after a failed sync). Call once per
    /// request and use what it returns throughout.
    pub fn log(&self) -> Arc<Log> {
        Arc::clone(&read(&self.log))
    }

    /// The current settings.
    pub fn config(&self) -> LogConfig {
        read(&self.log).config()
    }

    /// Whether a sync failed and the log is not reopened yet.
    pub fn is_failed(&self) -> bool {
        self.durable.borrow().failed
    }

    /// The high watermark: offsets below it are served. Never decreases.
    pub fn high_watermark(&self) -> u64 {
        *self.hw.borrow()
    }

    /// A receiver that sees high-watermark changes.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    fn failed_error(&self, durable_offset: u64) -> StorageError {
        StorageError::Failed { dir: self.dir.clone(), durable_offset }
    }

    fn publish_high_watermark(&self, log: &Log) {
        let hw = log.high_watermark();
        self.hw.send_if_modified(|v| {
            let moved = hw > *v;
            *v = (*v).max(hw);
            moved
        });
    }

    /// Appends a produced batch: checks it once (size against
    /// `max_message_bytes`, structure, CRC and every record, decompressing
    /// at most 4 × the larger of `max_frame_bytes` and `max_message_bytes`;
    /// timestamps against `now_ms`), appends it, counts it, and applies the
    /// fsync policy (see [`append_checked`](Self::append_checked)). An
    /// append that rolls the segment runs off the async workers.
    ///
    /// # Errors
    /// `CorruptBatch` for a batch that fails its checks or is transactional
    /// or a control batch (not supported yet); the storage errors
    /// `BatchTooLarge`, `InvalidTimestamp`, `Failed` (the log is failed),
    /// `Closed`, `Sequence` and I/O errors of a roll.
    pub fn append(&self, batch: Bytes, max_frame_bytes: usize, now_ms: i64) -> Result<Appended, BrokerError> {
        let config = self.config();
        let max = config.max_message_bytes as usize;
        if batch.len() > max {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max }.into());
        }
        let batch = RecordBatch::new(batch).map_err(BrokerError::CorruptBatch)?;
        batch.validate(max_frame_bytes.max(max) * 4).map_err(BrokerError::CorruptBatch)?;
        batch.check_producible().map_err(BrokerError::CorruptBatch)?;
        config.check_timestamps(batch.header(), now_ms)?;
        Ok(self.append_checked(&batch, now_ms)?)
    }

    /// Appends one checked batch and applies the fsync policy: `always`
    /// wakes the flusher, `never` publishes the high watermark at once,
    /// `interval` waits for the timer. Refused while the log is failed.
    fn append_checked(&self, batch: &RecordBatch, now_ms: i64) -> Result<Appended, StorageError> {
        // Held through the append: a reopen waits for appends that passed
        // the check below before the failure was published.
        let log = read(&self.log);
        let d = *self.durable.borrow();
        if d.failed {
            return Err(self.failed_error(d.failed_at));
        }
        let info = if log.roll_due(batch.as_bytes().len(), batch.header().record_count) {
            blocking_in_place(|| log.append_batch_at_epoch(batch, now_ms, self.append_epoch()))?
        } else {
            log.append_batch_at_epoch(batch, now_ms, self.append_epoch())?
        };
        let fsync = log.config().fsync;
        if !info.duplicate {
            self.counters.messages_in.inc_by(u64::from(batch.header().record_count));
            self.counters.bytes_in.inc_by(batch.as_bytes().len() as u64);
            self.appends_since_flush.fetch_add(1, Ordering::Relaxed);
            self.appended_to(info.last_offset + 1);
            match fsync {
                FsyncPolicy::Always => self.flush_wanted.notify_one(),
                // Visible once the timer's flush makes it durable.
                FsyncPolicy::Interval(_) => {}
                FsyncPolicy::Never => self.publish_high_watermark(&log),
            }
            if info.rolled {
                // A roll leaves its directory, index and snapshot syncs to
                // the next flush: have one soon in every mode (as Kafka
                // flushes a rolled segment), so recovery stays short.
                self.flush_wanted.notify_one();
            }
        }
        Ok(Appended { info, log_start_offset: log.log_start_offset(), generation: d.generation, fsync })
    }

    /// Waits until the batch `appended` is on stable storage, at most
    /// `timeout`. Fails with [`StorageError::Failed`] when a sync failed
    /// first. When the partition is stopping (broker shutdown, topic
    /// deleted) it flushes itself rather than wait for the flusher, so
    /// shutdown answers pending produces promptly.
    pub async fn wait_durable(
        self: &Arc<Self>,
        appended: &Appended,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let (generation, last) = (appended.generation, appended.info.last_offset);
        let settled = move |d: &Durability| d.generation != generation || d.offset > last;
        let mut rx = self.durable.subscribe();
        let wait = async {
            tokio::select! {
                biased;
                d = rx.wait_for(settled) => d.map(drop).map_err(|_| BrokerError::ShuttingDown),
                _ = self.cancel.cancelled() => Ok(()),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(waited) => waited?,
            Err(_) => return Err(BrokerError::Timeout(timeout.as_millis().min(u128::from(u32::MAX)) as u32)),
        }
        let pending = !settled(&self.durable.borrow());
        if pending {
            // Stopping: the flusher is gone, so flush here.
            if let Err(StorageError::Closed) = self.sync().await {
                return Err(StorageError::Closed.into());
            }
        }
        let d = *self.durable.borrow();
        if d.generation == generation && d.offset > last
            || d.generation == generation + 1 && d.failed_at > last
        {
            // Durable here; a leader with followers also waits for them.
            self.wait_replicated(last, timeout).await
        } else if d.generation != generation {
            Err(self.failed_error(d.failed_at).into())
        } else {
            Err(BrokerError::ShuttingDown)
        }
    }

    /// Flushes now on a blocking thread and publishes the result.
    async fn sync(self: &Arc<Self>) -> Result<(), StorageError> {
        let me = Arc::clone(self);
        match tokio::task::spawn_blocking(move || me.sync_now()).await {
            Ok(result) => result,
            Err(e) => {
                // A flush that panicked may have failed half way: trust nothing.
                let e = StorageError::Io {
                    op: "flush",
                    path: self.dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                };
                self.mark_failed(&e);
                Err(e)
            }
        }
    }

    /// Flushes now and publishes the result. Blocking.
    fn sync_now(&self) -> Result<(), StorageError> {
        let held = lock(&self.syncing);
        let log = self.log();
        self.sync_locked(&held, &log)
    }

    /// Flushes `log` (the current one) under the `syncing` lock.
    fn sync_locked(&self, _held: &MutexGuard<'_, ()>, log: &Log) -> Result<(), StorageError> {
        let d = *self.durable.borrow();
        if d.failed {
            // The log that failed is never flushed again: a later sync would
            // return Ok over pages that never reached the disk.
            return Err(self.failed_error(d.failed_at));
        }
        let result = if log.durable_offset() >= log.log_end_offset() {
            Ok(())
        } else {
            let appends = self.appends_since_flush.swap(0, Ordering::Relaxed);
            let started = Instant::now();
            let result = self.flush_log(log);
            self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.appends_per_flush.observe(appends as f64);
            result
        };
        match result {
            Ok(()) => {
                // The high watermark first: an acknowledged batch is readable.
                self.publish_high_watermark(log);
                let offset = log.durable_offset();
                self.durable.send_if_modified(|d| {
                    let moved = offset > d.offset;
                    d.offset = d.offset.max(offset);
                    moved
                });
                Ok(())
            }
            // Deleted or closed at shutdown: not a failed sync.
            Err(StorageError::Closed) => Err(StorageError::Closed),
            Err(e) => {
                self.mark_failed(&e);
                Err(self.failed_error(self.durable.borrow().failed_at))
            }
        }
    }

    fn flush_log(&self, log: &Log) -> Result<(), StorageError> {
        #[cfg(test)]
        if self
            .faults
            .fail_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StorageError::Io {
                op: "flush",
                path: self.dir.clone(),
                source: std::io::Error::other("injected writeback error"),
            });
        }
        log.flush()
    }

    /// Stops acknowledging: fails pending durable produces, refuses appends,
    /// and wakes the flusher to reopen the log. Logs once per failure.
    fn mark_failed(&self, error: &StorageError) {
        let mut first = None;
        self.durable.send_modify(|d| {
            if !d.failed {
                d.failed = true;
                d.generation += 1;
                d.failed_at = d.offset;
                first = Some(d.offset);
                // Counted before the waiters wake.
                self.metrics.sync_failures.inc();
                self.metrics.failed_partitions.inc();
            }
        });
        if let Some(durable_offset) = first {
            tracing::error!(topic = %self.topic, partition = self.index, durable_offset, %error,
                "sync failed: the partition stops acknowledging writes and reopens its log from the last durable offset");
            self.flush_wanted.notify_one();
        }
    }

    /// Changes the settings live (the alter path). A switch from `never`
    /// (high watermark = log end) to `always` or `interval` (high watermark
    /// = durable offset) flushes first, so the high watermark never moves
    /// back; the flusher wakes at once to follow the new policy. Blocking:
    /// call from a blocking thread.
    pub fn set_config(&self, config: LogConfig) {
        let stricter = |from: FsyncPolicy| from == FsyncPolicy::Never && config.fsync != FsyncPolicy::Never;
        if stricter(self.config().fsync) {
            // The bulk of it without holding appends back.
            let _ = self.sync_now();
        }
        {
            let held = lock(&self.syncing);
            let log = write(&self.log); // no appends until the switch is done
            if stricter(log.config().fsync) {
                if let Err(e) = self.sync_locked(&held, &log) {
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                        "could not flush before tightening fsync; the high watermark waits for the log to recover");
                }
            }
            log.set_config(config);
            self.publish_high_watermark(&log);
        }
        self.flush_wanted.notify_one();
    }

    /// The flusher: flushes when asked (durable produces in `always` mode,
    /// policy changes) and on the `interval` timer, and reopens the log
    /// after a failed sync, until cancelled.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            if self.is_failed() {
                if !self.reopen().await {
                    return;
                }
                continue;
            }
            let interval = match self.config().fsync {
                FsyncPolicy::Interval(d) => Some(d),
                FsyncPolicy::Always | FsyncPolicy::Never => None,
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.flush_wanted.notified() => {}
                _ = sleep_or_never(interval) => {}
            }
            let _ = self.sync().await;
        }
    }

    /// Reopens the log after a failed sync, retrying with backoff. False
    /// when cancelled first.
    async fn reopen(&self) -> bool {
        let mut backoff = REOPEN_BACKOFF_MIN;
        for attempt in 1u32.. {
            if self.cancel.is_cancelled() {
                break;
            }
            match self.open_fresh().await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.index, attempt, retry_in_ms = backoff.as_millis() as u64, error = %e, "reopening the failed log failed");
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
        }
        self.metrics.failed_partitions.dec();
        false
    }

    /// Opens the log afresh (recovering it from its last durable point),
    /// swaps it in and accepts writes again. The failed log is not closed:
    /// it refuses everything, and readers may still hold its bytes.
    async fn open_fresh(&self) -> Result<(), StorageError> {
        #[cfg(test)]
        if self.faults.fail_reopens.load(Ordering::SeqCst) {
            return Err(StorageError::Io {
                op: "open",
                path: self.dir.clone(),
                source: std::io::Error::other("injected"),
            });
        }
        // Appends that passed the failed check before it was set finish first.
        drop(write(&self.log));
        // Cut back to where the failed log was durable: the failing disk may
        // have refused the `failed-sync` marker too.
        let failed = self.log();
        let opened =
            tokio::task::spawn_blocking(move || failed.reopen()).await.map_err(|e| StorageError::Io {
                op: "open",
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let (log, report) = opened?;
        let log = Arc::new(log);
        {
            let mut slot = write(&self.log);
            log.set_config(slot.config()); // a change made while it opened wins
            log.set_high_watermark_limit(slot.high_watermark_limit());
            *slot = Arc::clone(&log);
        }
        self.publish_high_watermark(&log);
        self.metrics.failed_partitions.dec();
        self.durable.send_modify(|d| {
            d.offset = d.offset.max(log.durable_offset());
            d.failed = false;
        });
        tracing::warn!(topic = %self.topic, partition = self.index, durable_offset = log.durable_offset(),
            log_end_offset = log.log_end_offset(), truncated_bytes = report.truncated_bytes,
            "log reopened after a failed sync; accepting writes again");
        Ok(())
    }
}

pub mod replica;
#[cfg(test)]
mod tests;
