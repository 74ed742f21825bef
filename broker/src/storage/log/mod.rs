//! A partition's log: sealed segments plus one active segment, offsets
//! dense from `log_start_offset` (the first segment's base) to
//! `log_end_offset`.
//!
//! Locks: `state` is the writer lock. Appends hold it for the copy into the
//! map; reads hold it only to find the bytes; flushes hold it only to take
//! and record the unflushed ranges. `flush` serializes flushers: the first
//! waiter flushes everything appended so far, and waiters whose data that
//! flush covered return without flushing again (group commit).
//!
//! In `fsync = always` mode the high watermark is the durable offset: data
//! is served only once flushed. The caller (the broker) must therefore make
//! sure every append to such a log is followed by [`Log::sync_to`], whatever
//! the producer's acks.
//!
//! No fsync runs on the append path: a roll seals the old segment (cutting
//! its files to size) and creates the new one, and leaves the directory
//! sync, the sealed indexes' syncs and the producer-state snapshot to the
//! next flush ([`PendingSync`]), which does them before it moves the
//! durable offset.
//!
//! A failed sync is never retried and trusted (Linux reports a writeback
//! error once per file description): the log marks itself failed, refuses
//! appends and syncs with [`StorageError::Failed`], records its durable
//! offset in `failed-sync`, and the next [`Log::open`] of the directory cuts
//! it back to that offset.
//!
//! Opening and recovery live in `loader`, reads (by offset and by
//! timestamp) in `read`, rolling segments in `roll`, retention and
//! truncation in `retention`.

mod loader;
mod producer_load;
mod read;
mod replica;
#[cfg(test)]
mod replica_tests;
mod retention;
mod roll;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use sluice_protocol::batch::{BatchError, BatchHeader, RecordBatch};

use super::durable::{self, sync_dir};
use super::files;
use super::mmap::{DiskSpace, SyncHandle};
use super::producers::{ProducerStates, Sequence};
use super::segment::{Segment, SegmentOptions};
use super::{io_error, FsyncPolicy, LogConfig, StorageError, TimestampType};
use read::ByteRange;
pub use replica::NO_EPOCH;

/// The recovery point is checkpointed after a flush at most this often.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Where an append went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// The broker's timestamp when the log stamps append time.
    pub log_append_time: Option<i64>,
    /// The batch had already been written (idempotent retry): nothing new.
    pub duplicate: bool,
    /// The append rolled the segment: the caller should have the log
    /// flushed soon, whatever its fsync policy (the roll's directory sync,
    /// index syncs and producer snapshot wait for a flush), as Kafka
    /// flushes a segment after it rolls.
    pub rolled: bool,
}

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The clean-shutdown marker was there: nothing was scanned.
    pub clean: bool,
    /// The checkpointed recovery point scanning started from.
    pub recovery_point: u64,
    /// Segments opened.
    pub segments: usize,
    /// Batches whose CRC was checked.
    pub batches_checked: usize,
    /// Bytes cut from the end (torn batches, garbage, preallocation).
    pub truncated_bytes: usize,
    /// Whether any cut byte was not zero.
    pub torn: bool,
    /// Offset after the last valid record.
    pub log_end_offset: u64,
    /// The producer-state snapshot loaded (its offset), if any was usable.
    pub producer_snapshot: Option<u64>,
    /// Batch headers read to rebuild producer state after that snapshot.
    pub producer_batches_replayed: usize,
    /// Files where bytes or segments recovery could not use were kept.
    pub quarantined: Vec<PathBuf>,
    /// Offset the log was cut back to after a failed sync, if it was.
    pub failed_sync_cut: Option<u64>,
}

/// Sizes and offsets, for describe and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// First offset stored.
    pub log_start_offset: u64,
    /// Offset the next record gets.
    pub log_end_offset: u64,
    /// Offsets below this are served.
    pub high_watermark: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Segments, the active one included.
    pub segment_count: u32,
}

/// What retention deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub deleted_segments: usize,
    /// Bytes of batches deleted.
    pub deleted_bytes: usize,
    /// The new log start offset.
    pub log_start_offset: u64,
}

/// Durability work a roll leaves for the next flush, so that no fsync runs
/// on the append path. The flush does it before it moves the durable
/// offset past anything appended after the roll.
#[derive(Debug, Default)]
struct PendingSync {
    /// The directory gained a segment file since it was last synced.
    dir: bool,
    /// Index files of segments sealed since the last flush.
    indexes: Vec<SyncHandle>,
    /// Producer state as of a roll: (offset, encoded snapshot).
    snapshot: Option<(u64, Vec<u8>)>,
    /// Segments sealed since the last flush: once flushed they close their
    /// descriptors.
    sealed: Vec<u64>,
}

#[derive(Debug)]
struct State {
    /// Sealed segments by base offset.
    sealed: BTreeMap<u64, Segment>,
    /// The segment appends go to.
    active: Segment,
    /// Idempotent producers' sequences.
    producers: ProducerStates,
    /// Base offsets of the producer-state snapshots on disk, ascending.
    snapshots: Vec<u64>,
    /// What the next flush must sync besides segment data.
    pending: PendingSync,
    /// Set by `close`.
    closed: bool,
}

impl State {
    /// Queues a snapshot of the producer state as of `offset` (the log
    /// end) for the next flush.
    fn queue_snapshot(&mut self, offset: u64) {
        if self.snapshots.last() != Some(&offset) {
            self.pending.snapshot = Some((offset, self.producers.encode(offset)));
        }
    }

    /// Records a snapshot written at `offset`; keeps the newest
    /// [`SNAPSHOTS_KEPT`] on disk.
    fn snapshot_written(&mut self, dir: &Path, offset: u64) {
        self.snapshots.push(offset);
        self.snapshots.sort_unstable();
        self.snapshots.dedup();
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            let oldest = self.snapshots.remove(0);
            let _ = fs::remove_file(files::snapshot_path(dir, oldest));
        }
    }

    fn segments(&self) -> impl DoubleEndedIterator<Item = &Segment> {
        self.sealed.values().chain(std::iter::once(&self.active))
    }

    fn log_start_offset(&self) -> u64 {
        self.segments().next().map_or(self.active.base_offset(), Segment::base_offset)
    }

    /// The segment holding `offset` (or, when `offset` is at a segment's
    /// end, the next one).
    fn segment_for(&self, offset: u64) -> &Segment {
        let found = self.sealed.range(..=offset).next_back().map(|(_, s)| s);
        match found {
            Some(s) if offset < s.next_offset() => s,
            _ => self.sealed.range(offset..).next().map_or(&self.active, |(_, s)| s),
        }
    }
}

#[derive(Debug, Default)]
struct FlushState {
    /// When the recovery point was last written.
    last_checkpoint: Option<Instant>,
    /// The recovery point last written (or read on open).
    checkpointed: u64,
}

/// The `partition_leader_epoch` stamped into every batch a single node
/// appends (it leads every partition in epoch 0); a replicated leader
/// stamps its own epoch ([`Log::append_batch_at_epoch`]).
pub const SINGLE_NODE_LEADER_EPOCH: i32 = 0;

/// One partition's log.
#[derive(Debug)]
pub struct Log {
    /// The partition directory.
    dir: PathBuf,
    /// Settings; some change live (retention, fsync, roll).
    config: RwLock<LogConfig>,
    /// Disk reservation policy.
    space: DiskSpace,
    /// The writer lock.
    state: Mutex<State>,
    /// Serializes flushes.
    flush: Mutex<FlushState>,
    /// Offsets below this are on stable storage.
    durable: AtomicU64,
    /// Offset after the last appended record.
    end: AtomicU64,
    /// Set when a sync failed: the log refuses appends and syncs.
    failed: AtomicBool,
    /// Replication's cap on the high watermark (`u64::MAX`: none): what
    /// the other in-sync replicas made durable, or the leader's high
    /// watermark on a follower. See [`Log::set_high_watermark_limit`].
    hw_limit: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state half-updated
    // in a way later calls rely on more than a restart would: recover it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn segment_options(config: &LogConfig, space: &DiskSpace) -> SegmentOptions {
    SegmentOptions {
        segment_bytes: config.segment_bytes as usize,
        preallocate_bytes: config.segment_preallocate_bytes as usize,
        index_interval_bytes: config.index_interval_bytes as usize,
        space: space.clone(),
    }
}

fn read_checkpoint(dir: &Path) -> u64 {
    let path = dir.join(files::RECOVERY_POINT);
    fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Writes `name` in `dir` atomically and durably.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), StorageError> {
    durable::write_atomically(&dir.join(name), contents)
}

/// Syncs the byte ranges, then what a roll left pending: the order that
/// makes everything below the flushed offset durable.
fn sync_all(dir: &Path, targets: &[ByteRange], pending: &PendingSync) -> Result<(), StorageError> {
    for t in targets {
        t.file.flush_range(t.start, t.end).map_err(io_error("flush", t.file.path()))?;
    }
    for index in &pending.indexes {
        index.sync().map_err(io_error("flush index", index.path()))?;
    }
    if pending.dir {
        sync_dir(dir)?;
    }
    Ok(())
}

impl Log {
    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current settings.
    pub fn config(&self) -> LogConfig {
        self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the settings (live: roll, retention, fsync, limits).
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    /// First offset stored.
    pub fn log_start_offset(&self) -> u64 {
        lock(&self.state).log_start_offset()
    }

    /// Offset the next record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Offsets below this are on stable storage.
    pub fn durable_offset(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Offsets below this are served to consumers: the durable offset in
    /// `always` and `interval` modes (a consumer never processes a record
    /// that a power loss could take back), the log end offset in `never`.
    /// Replication caps it further ([`set_high_watermark_limit`](Self::set_high_watermark_limit)).
    pub fn high_watermark(&self) -> u64 {
        self.local_high_watermark().min(self.hw_limit.load(Ordering::Acquire))
    }

    /// The high watermark this log alone allows (the fsync policy's): what
    /// a replica reports to its leader as stored.
    pub fn local_high_watermark(&self) -> u64 {
        match self.config().fsync {
            FsyncPolicy::Always | FsyncPolicy::Interval(_) => {
                self.durable_offset().min(self.log_end_offset())
            }
            FsyncPolicy::Never => self.log_end_offset(),
        }
    }

    /// Appends one batch given as bytes: parses its header and checks its
    /// length, record count and size first (callers holding raw bytes: the
    /// offsets store, tests). The CRC and the records are the caller's to
    /// check. See [`append_batch`](Self::append_batch).
    ///
    /// # Errors
    /// As [`append_batch`](Self::append_batch), and `InvalidBatch` or
    /// `BatchTooLarge` for a batch that fails those checks.
    pub fn append(&self, batch: &[u8], now_ms: i64) -> Result<AppendInfo, StorageError> {
        let header = BatchHeader::parse(batch).map_err(StorageError::InvalidBatch)?;
        if header.total_len() != batch.len() {
            return Err(StorageError::InvalidBatch(BatchError::LengthMismatch {
                declared: header.batch_length,
                actual: batch.len().saturating_sub(sluice_protocol::batch::LOG_OVERHEAD),
            }));
        }
        if header.record_count == 0 || header.last_offset_delta != header.record_count - 1 {
            return Err(StorageError::InvalidBatch(BatchError::RecordCountMismatch {
                declared: header.record_count,
                actual: header.last_offset_delta.saturating_add(1),
            }));
        }
        let max = self.config().max_message_bytes as usize;
        if batch.len() > max {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max });
        }
        self.append_parsed(batch, &header, now_ms, SINGLE_NODE_LEADER_EPOCH)
    }

    /// Appends one batch that the caller validated (`RecordBatch::validate`:
    /// CRC, record count, records; and its size against
    /// `max_message_bytes`), without checking it again. Stamps its base
    /// offset and leader epoch ([`SINGLE_NODE_LEADER_EPOCH`]), rolls the
    /// segment when due (see [`roll_due`](Self::roll_due)), and deduplicates
    /// idempotent retries. Durability comes from
    /// [`sync_to`](Self::sync_to).
    ///
    /// # Errors
    /// `Closed` after [`close`](Self::close), `Failed` after a failed sync,
    /// `Sequence` for an idempotent batch out of sequence, `BatchTooLarge`
    /// when it does not fit a segment, and I/O errors of a roll.
    pub fn append_batch(&self, batch: &RecordBatch, now_ms: i64) -> Result<AppendInfo, StorageError> {
        self.append_parsed(batch.as_bytes(), batch.header(), now_ms, SINGLE_NODE_LEADER_EPOCH)
    }

    /// [`append_batch`](Self::append_batch) by a leader: stamps
    /// `leader_epoch` instead of the single node's.
    ///
    /// # Errors
    /// As [`append_batch`](Self::append_batch).
    pub fn append_batch_at_epoch(
        &self,
        batch: &RecordBatch,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, StorageError> {
        self.append_parsed(batch.as_bytes(), batch.header(), now_ms, leader_epoch)
    }

    fn append_parsed(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, StorageError> {
        let config = self.config();
        let mut state = lock(&self.state);
        if state.closed {
            return Err(StorageError::Closed);
        }
        self.check_failed()?;
        if header.is_idempotent() {
            if let Sequence::Duplicate(base) = state.producers.check(header)? {
                let last = base + u64::from(header.last_offset_delta);
                return Ok(AppendInfo {
                    base_offset: base,
                    last_offset: last,
                    log_append_time: None,
                    duplicate: true,
                    rolled: false,
                });
            }
        }
        let log_append_time = (config.message_timestamp == TimestampType::LogAppend).then_some(now_ms);
        self.write_at_end(&mut state, &config, header, batch, leader_epoch, log_append_time, now_ms)
    }

    /// Makes every offset below `offset` durable, sharing the flush with
    /// concurrent callers (group commit). Blocks: call from a blocking thread.
    pub fn sync_to(&self, offset: u64) -> Result<(), StorageError> {
        if self.durable_offset() >= offset {
            return Ok(());
        }
        let mut flush = lock(&self.flush);
        if self.durable_offset() >= offset {
            return Ok(()); // the flush we waited for covered us
        }
        self.flush_locked(&mut flush)
    }

    /// Flushes everything appended so far.
    pub fn flush(&self) -> Result<(), StorageError> {
        let mut flush = lock(&self.flush);
        self.flush_locked(&mut flush)
    }

    fn flush_locked(&self, flush: &mut FlushState) -> Result<(), StorageError> {
        self.check_failed()?;
        let (targets, pending, next) = {
            let mut state = lock(&self.state);
            let targets: Vec<ByteRange> = state
                .segments()
                .filter_map(|s| {
                    let (file, start, end) = s.flush_target()?;
                    Some(ByteRange { segment: s.base_offset(), file, start, end })
                })
                .collect();
            (targets, std::mem::take(&mut state.pending), state.active.next_offset())
        };
        if let Err(e) = sync_all(&self.dir, &targets, &pending) {
            return Err(self.fail(e));
        }
        {
            let mut state = lock(&self.state);
            for t in &targets {
                if state.active.base_offset() == t.segment {
                    state.active.mark_flushed(t.end);
                } else if let Some(seg) = state.sealed.get_mut(&t.segment) {
                    seg.mark_flushed(t.end);
                }
            }
            let sealed = pending.sealed.iter().chain(targets.iter().map(|t| &t.segment));
            for seg in sealed.filter_map(|base| state.sealed.get(base)) {
                seg.release_fds();
            }
        }
        self.durable.fetch_max(next, Ordering::AcqRel);
        if let Some((offset, snapshot)) = pending.snapshot {
            // Without a snapshot opening reads more, never wrongly: a failed
            // write only warns.
            match write_atomically(&self.dir, &files::snapshot_file_name(offset), &snapshot) {
                Ok(()) => lock(&self.state).snapshot_written(&self.dir, offset),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the producer-state snapshot")
                }
            }
        }
        if !targets.is_empty() && flush.last_checkpoint.is_none_or(|t| t.elapsed() >= CHECKPOINT_INTERVAL) {
            // The data is durable already; the checkpoint only shortens a
            // later recovery. Failing to write it (a full disk) must not fail
            // the flush: it is retried after the next one.
            if let Err(e) = Self::checkpoint(&self.dir, flush, next) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the recovery point");
            }
        }
        Ok(())
    }

    /// Flushes, cuts the active segment's files to their contents, writes
    /// the recovery point and the clean-shutdown marker. Appends fail after.
    /// A failed log is not closed cleanly: its next open cuts it back.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut flush = lock(&self.flush);
        self.flush_locked(&mut flush)?;
        let mut state = lock(&self.state);
        if state.closed {
            return Ok(());
        }
        let indexes = state.active.seal()?;
        let pending = PendingSync { indexes, ..PendingSync::default() };
        sync_all(&self.dir, &[], &pending).map_err(|e| self.fail(e))?;
        state.closed = true;
        let end = state.active.next_offset();
        state.queue_snapshot(end); // the next open replays nothing
        if let Some((offset, snapshot)) = state.pending.snapshot.take() {
            write_atomically(&self.dir, &files::snapshot_file_name(offset), &snapshot)?;
            state.snapshot_written(&self.dir, offset);
        }
        Self::checkpoint(&self.dir, &mut flush, end)?;
        write_atomically(&self.dir, files::CLEAN_SHUTDOWN, b"")
    }

    /// Whether a sync failed: the log then refuses appends and syncs until
    /// its directory is opened again.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        if self.is_failed() {
            return Err(StorageError::Failed {
                dir: self.dir.clone(),
                durable_offset: self.durable_offset(),
            });
        }
        Ok(())
    }

    /// Marks the log failed after the sync error `e` (logging it once) and
    /// returns `e`. The durable offset stops where it is. Where consumers
    /// only see durable data (`always`, `interval`), `failed-sync` records
    /// it, so the next open cuts the log back to it instead of trusting
    /// pages the OS may have dropped; in `never` mode readers may hold bytes
    /// past it, and nothing was promised, so the log is kept.
    fn fail(&self, e: StorageError) -> StorageError {
        if self.failed.swap(true, Ordering::AcqRel) {
            return e;
        }
        let durable_offset = self.durable_offset();
        tracing::error!(dir = %self.dir.display(), durable_offset, error = %e, "sync failed: this log accepts no writes until it is reopened, from its last durable offset (a failed sync is never retried and trusted)");
        if !matches!(self.config().fsync, FsyncPolicy::Never) {
            let marker = format!("{durable_offset}\n");
            if let Err(m) = write_atomically(&self.dir, files::FAILED_SYNC, marker.as_bytes()) {
                tracing::error!(dir = %self.dir.display(), error = %m, "could not record the failed sync");
            }
        }
        e
    }

    /// Writes the recovery point unless it already says `offset`.
    fn checkpoint(dir: &Path, flush: &mut FlushState, offset: u64) -> Result<(), StorageError> {
        if flush.last_checkpoint.is_some() && flush.checkpointed == offset {
            return Ok(());
        }
        write_atomically(dir, files::RECOVERY_POINT, format!("{offset}\n").as_bytes())?;
        flush.checkpointed = offset;
        flush.last_checkpoint = Some(Instant::now());
        Ok(())
    }

    /// Offsets, sizes and segment count.
    pub fn stats(&self) -> LogStats {
        let state = lock(&self.state);
        LogStats {
            log_start_offset: state.log_start_offset(),
            log_end_offset: state.active.next_offset(),
            high_watermark: self.high_watermark(),
            size_bytes: state.segments().map(Segment::disk_bytes).sum(),
            segment_count: (state.sealed.len() + 1) as u32,
        }
    }
}

/// Producer-state snapshots kept per partition (the newest few, in case
/// the last one is unreadable).
const SNAPSHOTS_KEPT: usize = 2;
