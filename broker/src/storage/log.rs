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

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{BatchError, BatchHeader, RecordBatch};

use super::durable::{self, sync_dir};
use super::files::{self, FileName, SegmentFile};
use super::mmap::{DiskSpace, MappedFile};
use super::producers::{ProducerStates, Sequence};
use super::segment::{self, read_batches, Segment, SegmentOptions};
use super::{io_error, FsyncPolicy, LogConfig, StorageError, TimestampType};

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

/// A byte range of a segment's log: (segment base offset, file, start, end).
type ByteRange = (u64, Arc<MappedFile>, usize, usize);

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
    /// Set by `close`.
    closed: bool,
}

impl State {
    /// Writes the producer state as of `offset` (the log end) and keeps the
    /// newest [`SNAPSHOTS_KEPT`]. Without a snapshot opening reads more,
    /// never wrongly: a failed write only warns.
    fn snapshot_producers(&mut self, dir: &Path, offset: u64) {
        if self.snapshots.last() == Some(&offset) {
            return;
        }
        match write_atomically(dir, &files::snapshot_file_name(offset), &self.producers.encode(offset)) {
            Ok(()) => {
                self.snapshots.push(offset);
                while self.snapshots.len() > SNAPSHOTS_KEPT {
                    let oldest = self.snapshots.remove(0);
                    let _ = fs::remove_file(files::snapshot_path(dir, oldest));
                }
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not write the producer-state snapshot")
            }
        }
    }

    /// Loads the producer state (see [`read_producer_state`]) and deletes
    /// the snapshots that could not be read, so a fresh one replaces them.
    fn load_producers(&mut self, dir: &Path, expiry_ms: u64) -> ProducerLoad {
        let mut load = read_producer_state(dir, self, expiry_ms);
        self.producers = std::mem::take(&mut load.producers);
        for base in &load.unreadable {
            let _ = fs::remove_file(files::snapshot_path(dir, *base));
        }
        self.snapshots.retain(|b| !load.unreadable.contains(b));
        load
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

impl Log {
    /// Opens the log in `dir` (creating it when empty), recovering it if it
    /// was not closed cleanly.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        space: DiskSpace,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        durable::create_dir_durably(dir)?;
        let opts = segment_options(&config, &space);
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        let mut snapshots = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
            let entry = entry.map_err(io_error("list", dir))?;
            let name = entry.file_name();
            match files::parse(&name.to_string_lossy()) {
                FileName::Segment(base, SegmentFile::Log) => bases.push(base),
                FileName::Segment(base, _) => index_files.push((base, entry.path())),
                FileName::ProducerSnapshot(base) => snapshots.push(base),
                FileName::Leftover => {
                    let _ = fs::remove_file(entry.path());
                }
                FileName::Control | FileName::Unknown => {}
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                let _ = fs::remove_file(path); // orphan of a half-deleted segment
            }
        }
        let marker = dir.join(files::CLEAN_SHUTDOWN);
        let clean = marker.exists();
        let recovery_point = read_checkpoint(dir);
        let mut report = RecoveryReport { clean, recovery_point, ..RecoveryReport::default() };
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            if let Some(prev) = segments.last() {
                if prev.next_offset() != base {
                    // A gap or overlap after a torn segment: nothing here is
                    // reachable with dense offsets. Drop the rest.
                    tracing::warn!(dir = %dir.display(), base, expected = prev.next_offset(), "segment does not follow the previous one; removing it and later segments");
                    for &later in &bases[i..] {
                        for kind in SegmentFile::ALL {
                            let _ = fs::remove_file(files::segment_path(dir, later, kind));
                        }
                    }
                    break;
                }
            }
            let fully_below = bases.get(i + 1).is_some_and(|next| *next <= recovery_point);
            let seg = if clean || fully_below {
                Segment::open_clean(dir, base, &opts)?
            } else {
                let (seg, walk) = Segment::recover(dir, base, &opts, recovery_point)?;
                report.batches_checked += walk.batches_checked;
                report.truncated_bytes += walk.discarded_bytes;
                report.torn |= walk.torn;
                if walk.torn {
                    tracing::warn!(dir = %dir.display(), segment = base, valid_bytes = walk.valid_bytes, discarded_bytes = walk.discarded_bytes, next_offset = seg.next_offset(), "truncated torn or corrupt tail");
                }
                seg
            };
            segments.push(seg);
        }
        let active = match segments.pop() {
            Some(seg) => seg,
            None => Segment::create(dir, 0, &opts)?,
        };
        report.segments = segments.len() + 1;
        let sealed: BTreeMap<u64, Segment> = segments.into_iter().map(|s| (s.base_offset(), s)).collect();
        let end = active.next_offset();
        report.log_end_offset = end;
        // A snapshot past the recovered end describes records that are gone.
        snapshots.sort_unstable();
        remove_snapshots(dir, &mut snapshots, end)?;
        let mut state =
            State { sealed, active, producers: ProducerStates::default(), snapshots, closed: false };
        let load = state.load_producers(dir, config.producer_expiry_ms);
        (report.producer_snapshot, report.producer_batches_replayed) = (load.snapshot, load.replayed);
        let log = Self {
            dir: dir.to_owned(),
            config: RwLock::new(config),
            space,
            state: Mutex::new(state),
            flush: Mutex::new(FlushState {
                last_checkpoint: dir.join(files::RECOVERY_POINT).exists().then(Instant::now),
                checkpointed: recovery_point,
            }),
            durable: AtomicU64::new(if clean { end } else { 0 }),
            end: AtomicU64::new(end),
        };
        if !clean {
            // What survived in the page cache is valid; make it durable
            // before serving it.
            log.flush()?;
        }
        if clean {
            fs::remove_file(&marker).map_err(io_error("remove", &marker))?;
            sync_dir(dir)?;
        }
        Ok((log, report))
    }

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
    pub fn high_watermark(&self) -> u64 {
        match self.config().fsync {
            FsyncPolicy::Always | FsyncPolicy::Interval(_) => {
                self.durable_offset().min(self.log_end_offset())
            }
            FsyncPolicy::Never => self.log_end_offset(),
        }
    }

    /// Appends one batch (already validated by the caller: CRC, records).
    /// Stamps its base offset, rolls the segment when due, and deduplicates
    /// idempotent retries. Durability comes from [`sync_to`](Self::sync_to).
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
        let config = self.config();
        if batch.len() > config.max_message_bytes as usize {
            return Err(StorageError::BatchTooLarge {
                size: batch.len(),
                max: config.max_message_bytes as usize,
            });
        }
        let mut state = lock(&self.state);
        if state.closed {
            return Err(StorageError::Closed);
        }
        if header.is_idempotent() {
            if let Sequence::Duplicate(base) = state.producers.check(&header)? {
                let last = base + u64::from(header.last_offset_delta);
                return Ok(AppendInfo {
                    base_offset: base,
                    last_offset: last,
                    log_append_time: None,
                    duplicate: true,
                });
            }
        }
        self.maybe_roll(&mut state, &config, &header, batch.len())?;
        if batch.len() > state.active.capacity() {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max: state.active.capacity() });
        }
        let base_offset = state.active.next_offset();
        let log_append_time = (config.message_timestamp == TimestampType::LogAppend).then_some(now_ms);
        state.active.append(batch, &header, log_append_time)?;
        if header.is_idempotent() {
            state.producers.record_with_limit(
                &header,
                base_offset,
                now_ms,
                config.producer_expiry_ms,
                config.max_producers_per_partition as usize,
            );
        }
        let next = state.active.next_offset();
        self.end.store(next, Ordering::Release);
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_append_time, duplicate: false })
    }

    fn maybe_roll(
        &self,
        state: &mut State,
        config: &LogConfig,
        header: &BatchHeader,
        len: usize,
    ) -> Result<(), StorageError> {
        let active = &state.active;
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size() + len > (config.segment_bytes as usize).min(active.capacity());
        let old = active.opened().elapsed() >= Duration::from_millis(config.segment_ms);
        let relative_end = active.next_offset() - active.base_offset() + u64::from(header.record_count);
        if full || old || relative_end > u64::from(u32::MAX) {
            self.roll_locked(state, config)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub fn roll(&self) -> Result<(), StorageError> {
        let config = self.config();
        let mut state = lock(&self.state);
        if state.active.is_empty() {
            return Ok(());
        }
        self.roll_locked(&mut state, &config)
    }

    fn roll_locked(&self, state: &mut State, config: &LogConfig) -> Result<(), StorageError> {
        let next = state.active.next_offset();
        let fresh = Segment::create(&self.dir, next, &segment_options(config, &self.space))?;
        sync_dir(&self.dir)?;
        let mut old = std::mem::replace(&mut state.active, fresh);
        old.seal()?;
        state.sealed.insert(old.base_offset(), old);
        // Producer state as of the new segment, so opening the log replays
        // only the segments after it.
        state.snapshot_producers(&self.dir, next);
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (at least one batch), from one segment, below the high
    /// watermark. Empty at the high watermark; `OffsetOutOfRange` outside
    /// `[log_start_offset, high_watermark]`; `CorruptBatch` when the first
    /// batch fails its CRC.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, StorageError> {
        let hw = self.high_watermark();
        let (file, base, start, end) = {
            let state = lock(&self.state);
            let log_start_offset = state.log_start_offset();
            if offset < log_start_offset || offset > hw {
                return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset: hw });
            }
            if offset == hw {
                return Ok(Bytes::new());
            }
            let seg = state.segment_for(offset);
            let start = seg.position_of(offset);
            let end = if hw < seg.next_offset() { seg.position_of(hw) } else { seg.size() };
            let (file, _) = seg.reader();
            (file, seg.base_offset(), start, end)
        };
        read_batches(&file, base, start, end, max_bytes)
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
        let (targets, next): (Vec<ByteRange>, u64) = {
            let state = lock(&self.state);
            let targets = state
                .segments()
                .filter_map(|s| s.flush_target().map(|(f, a, b)| (s.base_offset(), f, a, b)))
                .collect();
            (targets, state.active.next_offset())
        };
        for (_, file, start, end) in &targets {
            file.flush_range(*start, *end).map_err(io_error("flush", file.path()))?;
        }
        {
            let mut state = lock(&self.state);
            for (base, _, _, end) in &targets {
                if state.active.base_offset() == *base {
                    state.active.mark_flushed(*end);
                } else if let Some(seg) = state.sealed.get_mut(base) {
                    seg.mark_flushed(*end);
                }
            }
        }
        self.durable.fetch_max(next, Ordering::AcqRel);
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
    pub fn close(&self) -> Result<(), StorageError> {
        let mut flush = lock(&self.flush);
        self.flush_locked(&mut flush)?;
        let mut state = lock(&self.state);
        if state.closed {
            return Ok(());
        }
        state.active.seal()?;
        state.closed = true;
        let end = state.active.next_offset();
        state.snapshot_producers(&self.dir, end); // the next open replays nothing
        Self::checkpoint(&self.dir, &mut flush, end)?;
        write_atomically(&self.dir, files::CLEAN_SHUTDOWN, b"")
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

    /// Deletes sealed segments, oldest first, while they are past
    /// `retention_ms` (by their newest timestamp) or the log is over
    /// `retention_bytes`. Never deletes the active segment. Files are renamed
    /// to `*.deleted` under the lock, then removed after it.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, StorageError> {
        let config = self.config();
        let mut removed_paths = Vec::new();
        let mut report = RetentionReport::default();
        {
            let mut state = lock(&self.state);
            let total: usize = state.segments().map(Segment::size).sum();
            let mut excess =
                (config.retention_bytes > 0).then(|| total.saturating_sub(config.retention_bytes as usize));
            let cutoff = now_ms.saturating_sub(i64::try_from(config.retention_ms).unwrap_or(i64::MAX));
            while let Some((&base, seg)) = state.sealed.iter().next() {
                let by_time = config.retention_ms > 0 && seg.max_timestamp() < cutoff;
                let by_size = excess.is_some_and(|e| seg.size() <= e);
                if !(by_time || by_size) {
                    break;
                }
                removed_paths.extend(seg.rename_for_delete()?);
                excess = excess.map(|e| e - seg.size().min(e));
                report.deleted_segments += 1;
                report.deleted_bytes += seg.size();
                state.sealed.remove(&base);
            }
            report.log_start_offset = state.log_start_offset();
        }
        if report.deleted_segments > 0 {
            sync_dir(&self.dir)?;
            segment::remove_files(&removed_paths);
            tracing::info!(dir = %self.dir.display(), segments = report.deleted_segments, bytes = report.deleted_bytes, log_start_offset = report.log_start_offset, "retention deleted segments");
        }
        Ok(report)
    }

    /// Removes every record at or after `offset` (a batch holding `offset`
    /// goes whole). Needs exclusive use: fails while a reader still holds
    /// bytes of the segment being cut. For recovery and administration.
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), StorageError> {
        let config = self.config();
        let opts = segment_options(&config, &self.space);
        let state = self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut removed = Vec::new();
        while state.active.base_offset() >= offset {
            let Some((_, previous)) = state.sealed.pop_last() else { break };
            let gone = std::mem::replace(&mut state.active, previous);
            removed.extend(gone.rename_for_delete()?);
        }
        segment::remove_files(&removed);
        let base = state.active.base_offset();
        state.active.cut(state.active.position_of(offset))?;
        // Re-walk the cut segment: rebuilds its indexes and end offset.
        let (segment, _) = Segment::recover(&self.dir, base, &opts, u64::MAX)?;
        state.active = segment;
        let end = state.active.next_offset();
        // Snapshots past the new end go (durably) before anything can be
        // appended at those offsets again; a crash before this is handled
        // by `open`, which drops them the same way.
        remove_snapshots(&self.dir, &mut state.snapshots, end)?;
        state.load_producers(&self.dir, config.producer_expiry_ms);
        self.end.store(end, Ordering::Release);
        self.durable.fetch_min(end, Ordering::AcqRel);
        write_atomically(&self.dir, files::RECOVERY_POINT, format!("{}\n", self.durable_offset()).as_bytes())
    }

    /// The first record with a timestamp at or after `timestamp`, as
    /// `(offset, timestamp)`, below the high watermark; `None` when every
    /// record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, StorageError> {
        let hw = self.high_watermark();
        let candidates: Vec<ByteRange> = {
            let state = lock(&self.state);
            state
                .segments()
                .filter(|s| s.max_timestamp() >= timestamp && s.base_offset() < hw)
                .map(|s| {
                    let end = if hw < s.next_offset() { s.position_of(hw) } else { s.size() };
                    (s.base_offset(), s.reader().0, s.position_for_timestamp(timestamp), end)
                })
                .collect()
        };
        for (base, file, start, end) in candidates {
            let mut pos = start;
            while pos < end {
                let bytes = read_batches(&file, base, pos, end, 1)?;
                if bytes.is_empty() {
                    break;
                }
                pos += bytes.len();
                let batch = RecordBatch::new(bytes).map_err(|source| StorageError::CorruptBatch {
                    segment: base,
                    position: pos,
                    source,
                })?;
                if batch.header().max_timestamp < timestamp {
                    continue;
                }
                let records = batch.records().map_err(|source| StorageError::CorruptBatch {
                    segment: base,
                    position: pos,
                    source,
                })?;
                for r in records.iter() {
                    let r = r.map_err(|source| StorageError::CorruptBatch {
                        segment: base,
                        position: pos,
                        source,
                    })?;
                    if r.timestamp >= timestamp {
                        return Ok(Some((r.offset, r.timestamp)));
                    }
                }
            }
        }
        Ok(None)
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

/// Deletes the snapshots past `end` (durably, before anything is appended
/// at those offsets again).
fn remove_snapshots(dir: &Path, snapshots: &mut Vec<u64>, end: u64) -> Result<(), StorageError> {
    let stale: Vec<u64> = snapshots.iter().copied().filter(|b| *b > end).collect();
    if stale.is_empty() {
        return Ok(());
    }
    for base in &stale {
        let path = files::snapshot_path(dir, *base);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &path)(e)),
        }
    }
    snapshots.retain(|b| *b <= end);
    sync_dir(dir)
}

struct ProducerLoad {
    producers: ProducerStates,
    snapshot: Option<u64>,
    replayed: usize,
    /// Snapshots that could not be read (deleted by the caller).
    unreadable: Vec<u64>,
}

/// Producer state of the log: the newest intact snapshot at or below the
/// log end, plus the batches from its offset on (reading the headers of the
/// segments that hold them); every header of the log when no snapshot is
/// usable. Producers idle for `expiry_ms` are dropped.
fn read_producer_state(dir: &Path, state: &State, expiry_ms: u64) -> ProducerLoad {
    let now_ms = super::now_ms();
    let end = state.active.next_offset();
    let mut unreadable = Vec::new();
    let snapshot = state.snapshots.iter().rev().filter(|b| **b <= end).find_map(|&base| {
        let path = files::snapshot_path(dir, base);
        match fs::read(&path).ok().and_then(|bytes| ProducerStates::decode(&bytes)) {
            Some((at, producers)) if at == base => Some((base, producers)),
            _ => {
                tracing::warn!(path = %path.display(), "producer-state snapshot unreadable; using an older one");
                unreadable.push(base);
                None
            }
        }
    });
    let (from, mut producers) = match snapshot {
        Some((base, producers)) => (Some(base), producers),
        None => (None, ProducerStates::default()),
    };
    let start = from.unwrap_or(0);
    let mut replayed = 0;
    for seg in state.segments().filter(|s| s.next_offset() > start) {
        seg.for_each_header(|h| {
            replayed += 1;
            if h.is_idempotent() && h.base_offset >= start {
                // Replayed producers count as seen now: expiry never comes
                // sooner than it would have without the restart.
                producers.record(h, h.base_offset, now_ms, expiry_ms);
            }
        });
    }
    producers.expire(now_ms, expiry_ms);
    ProducerLoad { producers, snapshot: from, replayed, unreadable }
}
