//! One segment: a `.log` of record batches back to back, mapped once over
//! `segment_bytes` of address space, with its offset and time indexes.
//!
//! Batches are Kafka RecordBatch v2 (docs/format.md): an append stamps
//! `base_offset` and `partition_leader_epoch` in place (outside the CRC-32C)
//! and stores the rest as it came, compressed or not.
//!
//! Invariants: batches are whole and their offsets dense from `base_offset`;
//! the log's published end is the end of the last whole batch; index entries
//! only point at published batches. Only the partition's writer (holding the
//! log lock) calls `&mut` methods; a reader takes the `Arc<MappedFile>` and a
//! byte range under the lock and reads it after releasing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchError, BatchHeader, HEADER_LEN};

use super::durable;
use super::files::{self, SegmentFile};
use super::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN};
use super::mmap::{DiskSpace, MappedFile, SyncHandle};
use super::{io_error, StorageError};

/// Sizes a segment is created with (from the topic's `LogConfig`).
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Address space mapped for the log, and the roll size.
    pub segment_bytes: usize,
    /// Largest fallocate step.
    pub preallocate_bytes: usize,
    /// Bytes of log between index entries.
    pub index_interval_bytes: usize,
    /// Reservation policy (tests simulate a full disk).
    pub space: DiskSpace,
}

/// What a recovery walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkOutcome {
    /// Bytes of valid batches.
    pub valid_bytes: usize,
    /// File bytes after them (torn batches, garbage or preallocated zeros).
    pub discarded_bytes: usize,
    /// Whether any discarded byte was not zero (a torn or corrupt write).
    pub torn: bool,
    /// Batches whose CRC was checked.
    pub batches_checked: usize,
    /// Where the discarded bytes that were not zero were kept (quarantine).
    pub quarantined: Option<PathBuf>,
}

/// A segment of a partition's log.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first record.
    base_offset: u64,
    /// Directory holding the files.
    dir: PathBuf,
    /// The `.log`, shared with readers.
    log: Arc<MappedFile>,
    /// Relative offset → position.
    index: OffsetIndex,
    /// Timestamp → relative offset.
    time_index: TimeIndex,
    /// Offset after the last batch.
    next_offset: u64,
    /// Largest batch timestamp, `i64::MIN` when empty.
    max_timestamp: i64,
    /// Log bytes since the last index entry.
    bytes_since_index: usize,
    /// Bytes known to be on stable storage.
    flushed: usize,
    /// When this segment was created or opened (for `segment_ms`).
    opened: Instant,
    /// Bytes of log between index entries.
    index_interval: usize,
}

/// The header of the batch at `pos` in `data`, if a plausible one is there.
fn header_at(data: &[u8], pos: usize) -> Option<BatchHeader> {
    let h = BatchHeader::parse(data.get(pos..)?).ok()?;
    let total = h.total_len();
    let fits = total >= HEADER_LEN && pos.checked_add(total).is_some_and(|end| end <= data.len());
    (fits && h.record_count > 0 && h.last_offset_delta == h.record_count - 1).then_some(h)
}

impl Segment {
    fn open_files(
        dir: &Path,
        base_offset: u64,
        opts: &SegmentOptions,
    ) -> Result<(MappedFile, OffsetIndex, TimeIndex), StorageError> {
        let path = |kind| files::segment_path(dir, base_offset, kind);
        let max_entries = opts.segment_bytes / opts.index_interval_bytes.max(1) + 2;
        let log_path = path(SegmentFile::Log);
        let log = MappedFile::open(&log_path, opts.segment_bytes, opts.preallocate_bytes, opts.space.clone())
            .map_err(io_error("open", &log_path))?;
        let index_path = path(SegmentFile::Index);
        let index =
            OffsetIndex::open(&index_path, max_entries, max_entries * OFFSET_ENTRY_LEN, opts.space.clone())
                .map_err(io_error("open", &index_path))?;
        let time_path = path(SegmentFile::TimeIndex);
        let time_index =
            TimeIndex::open(&time_path, max_entries, max_entries * TIME_ENTRY_LEN, opts.space.clone())
                .map_err(io_error("open", &time_path))?;
        Ok((log, index, time_index))
    }

    fn assemble(
        base_offset: u64,
        dir: &Path,
        parts: (MappedFile, OffsetIndex, TimeIndex),
        opts: &SegmentOptions,
    ) -> Self {
        let (log, index, time_index) = parts;
        Self {
            base_offset,
            dir: dir.to_owned(),
            log: Arc::new(log),
            index,
            time_index,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            bytes_since_index: 0,
            flushed: 0,
            opened: Instant::now(),
            index_interval: opts.index_interval_bytes.max(1),
        }
    }

    /// Creates an empty segment (any stale files of that name are emptied).
    pub fn create(dir: &Path, base_offset: u64, opts: &SegmentOptions) -> Result<Self, StorageError> {
        let (mut log, mut index, mut time_index) = Self::open_files(dir, base_offset, opts)?;
        log.truncate_published(0);
        log.set_len(0).map_err(io_error("truncate", log.path()))?;
        index.clear().map_err(io_error("truncate index", dir))?;
        time_index.clear().map_err(io_error("truncate time index", dir))?;
        Ok(Self::assemble(base_offset, dir, (log, index, time_index), opts))
    }

    /// Opens a segment that was sealed or closed cleanly: trusts the log's
    /// length, loads the indexes (rebuilding them if inconsistent) and finds
    /// the end offset from the last indexed batch.
    pub fn open_clean(dir: &Path, base_offset: u64, opts: &SegmentOptions) -> Result<Self, StorageError> {
        let (log, mut index, mut time_index) = Self::open_files(dir, base_offset, opts)?;
        let len = log.reserved();
        let index_ok = index.load(len);
        log.publish(len);
        // The batches after the last index entry give the end offset.
        let (rel, start) = index.lookup(u32::MAX);
        let data = log.slice(0, len);
        let (mut pos, mut next, mut max_ts) = (start as usize, base_offset + u64::from(rel), i64::MIN);
        while let Some(h) = header_at(data, pos) {
            next = h.next_offset();
            max_ts = max_ts.max(h.max_timestamp);
            pos += h.total_len();
        }
        let time_ok = time_index.load(next - base_offset);
        if !index_ok || !time_ok || pos != len {
            tracing::warn!(segment = %log.path().display(), "segment indexes or length inconsistent; rebuilding");
            drop((log, index, time_index));
            return Self::recover(dir, base_offset, opts, u64::MAX).map(|(s, _)| s);
        }
        let mut seg = Self::assemble(base_offset, dir, (log, index, time_index), opts);
        seg.next_offset = next;
        seg.max_timestamp = seg.time_index.last().map_or(max_ts, |(ts, _)| ts.max(max_ts));
        seg.flushed = len;
        Ok(seg)
    }

    /// Opens a segment after an unclean shutdown: walks every batch header,
    /// checks the CRC of batches not known to be flushed (those ending past
    /// `recovery_point`), stops at the first invalid, incomplete or
    /// zero-filled batch, cuts the file there and rebuilds both indexes.
    /// Bytes cut off that are not preallocated zeros (a torn write, or
    /// damage) are first copied, durably, to a quarantine file
    /// ([`files::quarantine_path`]): recovery never destroys bytes it could
    /// not read.
    pub fn recover(
        dir: &Path,
        base_offset: u64,
        opts: &SegmentOptions,
        recovery_point: u64,
    ) -> Result<(Self, WalkOutcome), StorageError> {
        let (mut log, mut index, mut time_index) = Self::open_files(dir, base_offset, opts)?;
        index.clear().map_err(io_error("truncate index", dir))?;
        time_index.clear().map_err(io_error("truncate time index", dir))?;
        let len = log.reserved();
        let mut outcome = WalkOutcome::default();
        let (mut pos, mut next, mut max_ts, mut since_index) = (0usize, base_offset, i64::MIN, 0usize);
        {
            let data = log.slice_unpublished(0, len);
            while let Some(h) = header_at(data, pos) {
                if h.base_offset != next {
                    break; // offsets must be dense
                }
                let batch = &data[pos..pos + h.total_len()];
                if h.next_offset() > recovery_point {
                    outcome.batches_checked += 1;
                    if batch::compute_crc(batch) != h.crc {
                        break;
                    }
                }
                let rel = (h.base_offset - base_offset) as u32;
                max_ts = max_ts.max(h.max_timestamp);
                if since_index >= opts.index_interval_bytes && pos > 0 {
                    index.append(rel, pos as u32).map_err(io_error("index", dir))?;
                    time_index.maybe_append(max_ts, rel).map_err(io_error("time index", dir))?;
                    since_index = 0;
                }
                since_index += h.total_len();
                pos += h.total_len();
                next = h.next_offset();
            }
            outcome.valid_bytes = pos;
            outcome.discarded_bytes = len - pos;
            // Preallocated zeros are nothing; anything else might be data
            // that could not be read: keep it aside before cutting it off.
            // Trailing zeros are kept to the page boundary (a sealed
            // segment's last record may end in zeros; preallocation is
            // whole pages beyond it).
            let data_end = data[pos..]
                .iter()
                .rposition(|b| *b != 0)
                .map(|i| (pos + i + 1).next_multiple_of(4096).min(data.len()));
            outcome.torn = data_end.is_some();
            if let Some(data_end) = data_end {
                let path = files::quarantine_path(dir, base_offset, pos as u64);
                durable::write_atomically(&path, &data[pos..data_end])?;
                outcome.quarantined = Some(path);
            }
        }
        log.set_len(pos).map_err(io_error("truncate", log.path()))?;
        log.publish(pos);
        let mut seg = Self::assemble(base_offset, dir, (log, index, time_index), opts);
        seg.next_offset = next;
        seg.max_timestamp = max_ts;
        seg.bytes_since_index = since_index;
        seg.flushed = 0;
        Ok((seg, outcome))
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Bytes of batches.
    pub fn size(&self) -> usize {
        self.log.published()
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Largest batch timestamp (`i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// When the segment was created or opened.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// Address space mapped for the log.
    pub fn capacity(&self) -> usize {
        self.log.capacity()
    }

    /// Bytes on disk (log and indexes, reservations included).
    pub fn disk_bytes(&self) -> u64 {
        let files = SegmentFile::ALL.map(|k| files::segment_path(&self.dir, self.base_offset, k));
        files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// Appends a validated batch, stamping `base_offset` and
    /// `partition_leader_epoch` (neither is under the CRC), and log-append
    /// time when given. The caller makes sure it fits.
    pub fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        leader_epoch: i32,
        log_append_time: Option<i64>,
    ) -> Result<(), StorageError> {
        let pos = self.size();
        let base_offset = self.next_offset;
        let relative = u32::try_from(base_offset - self.base_offset).unwrap_or(u32::MAX);
        let io = io_error("append", self.log.path());
        match log_append_time {
            None => {
                self.log.write(pos, batch).map_err(&io)?;
                // base_offset | batch_length (as it is) | partition_leader_epoch
                let mut stamp = [0u8; batch::MAGIC_POS];
                stamp.copy_from_slice(&batch[..batch::MAGIC_POS]);
                batch::set_base_offset(&mut stamp, base_offset);
                batch::set_partition_leader_epoch(&mut stamp, leader_epoch);
                self.log.write(pos, &stamp).map_err(&io)?;
            }
            Some(ts) => {
                let mut stamped = batch.to_vec();
                batch::set_base_offset(&mut stamped, base_offset);
                batch::set_partition_leader_epoch(&mut stamped, leader_epoch);
                batch::set_log_append_time(&mut stamped, ts);
                self.log.write(pos, &stamped).map_err(&io)?;
            }
        }
        let max_ts = log_append_time.unwrap_or(header.max_timestamp);
        self.max_timestamp = self.max_timestamp.max(max_ts);
        if self.bytes_since_index >= self.index_interval && pos > 0 {
            self.index.append(relative, pos as u32).map_err(io_error("index", &self.dir))?;
            self.time_index
                .maybe_append(self.max_timestamp, relative)
                .map_err(io_error("time index", &self.dir))?;
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += batch.len();
        self.log.publish(pos + batch.len());
        self.next_offset = base_offset + u64::from(header.last_offset_delta) + 1;
        Ok(())
    }

    /// Byte position of the batch containing `offset` (or the first batch
    /// after it); `size()` when no batch is there.
    pub fn position_of(&self, offset: u64) -> usize {
        let relative = u32::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(u32::MAX);
        let (_, start) = self.index.lookup(relative);
        let data = self.log.slice(0, self.size());
        let mut pos = start as usize;
        while let Some(h) = header_at(data, pos) {
            if h.last_offset() >= offset {
                break;
            }
            pos += h.total_len();
        }
        pos
    }

    /// The header of the batch holding `offset`, if this segment has one.
    pub fn header_for(&self, offset: u64) -> Option<BatchHeader> {
        if offset < self.base_offset || offset >= self.next_offset {
            return None;
        }
        let pos = self.position_of(offset);
        header_at(self.log.slice(0, self.size()), pos)
    }

    /// The position to scan from for the first record with a timestamp at or
    /// after `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> usize {
        let relative = self.time_index.lookup(timestamp);
        self.position_of(self.base_offset + u64::from(relative))
    }

    /// What a reader needs: the shared log file and the published end.
    pub fn reader(&self) -> (Arc<MappedFile>, usize) {
        (Arc::clone(&self.log), self.size())
    }

    /// The unflushed range, for a flush done outside the log lock.
    pub fn flush_target(&self) -> Option<(Arc<MappedFile>, usize, usize)> {
        (self.flushed < self.size()).then(|| (Arc::clone(&self.log), self.flushed, self.size()))
    }

    /// Records that bytes below `end` are on stable storage.
    pub fn mark_flushed(&mut self, end: usize) {
        self.flushed = self.flushed.max(end);
    }

    /// Closes the descriptors of a sealed segment whose log is flushed:
    /// reads go through the map, which needs none. A later write, cut or
    /// sync reopens them.
    pub fn release_fds(&self) {
        if self.flushed >= self.size() {
            self.log.release_fd();
            self.index.release_fd();
            self.time_index.release_fd();
        }
    }

    /// Seals the segment when it stops being active: a final time-index
    /// entry and the files cut to their contents. Syncs nothing: the log
    /// data stays in the unflushed range, and the returned handles let the
    /// next flush sync the indexes, so a roll costs no fsync on the append
    /// path. Calling it again after an error is harmless.
    ///
    /// # Errors
    /// `NoSpace`/`Io` when the time index cannot grow or a file cannot be
    /// cut; the segment is then still fit to stay active.
    pub fn seal(&mut self) -> Result<Vec<SyncHandle>, StorageError> {
        let last_relative = self.next_offset.saturating_sub(self.base_offset + 1);
        if !self.is_empty() {
            let rel = u32::try_from(last_relative).unwrap_or(u32::MAX);
            self.time_index
                .maybe_append(self.max_timestamp, rel)
                .map_err(io_error("time index", &self.dir))?;
        }
        self.log.set_len(self.size()).map_err(io_error("truncate", self.log.path()))?;
        self.index.trim().map_err(io_error("trim index", &self.dir))?;
        self.time_index.trim().map_err(io_error("trim time index", &self.dir))?;
        let handles = [self.index.sync_handle(), self.time_index.sync_handle()];
        handles.into_iter().collect::<Result<_, _>>().map_err(io_error("open index", &self.dir))
    }

    /// Renames the segment's log to a quarantine file and removes its
    /// indexes (derived data): for a segment that cannot be part of the
    /// log (it does not follow the one before it). Returns the new path.
    pub fn quarantine_files(dir: &Path, base_offset: u64) -> Result<PathBuf, StorageError> {
        let to = files::quarantine_path(dir, base_offset, 0);
        durable::rename_durably(&files::segment_path(dir, base_offset, SegmentFile::Log), &to)?;
        for kind in [SegmentFile::Index, SegmentFile::TimeIndex] {
            durable::remove_durably(&files::segment_path(dir, base_offset, kind))?;
        }
        Ok(to)
    }

    /// Cuts the log at `position` (a batch boundary). Needs the only
    /// reference to the mapping: fails while a reader holds bytes of it.
    pub fn cut(&mut self, position: usize) -> Result<(), StorageError> {
        if position >= self.size() {
            return Ok(());
        }
        let log =
            Arc::get_mut(&mut self.log).ok_or(StorageError::ReadersActive { segment: self.base_offset })?;
        log.truncate_published(position);
        log.set_len(position).map_err(io_error("truncate", &self.dir))
    }

    /// Calls `f` with every batch header, in order.
    pub fn for_each_header(&self, mut f: impl FnMut(&BatchHeader)) {
        let data = self.log.slice(0, self.size());
        let mut pos = 0;
        while let Some(h) = header_at(data, pos) {
            f(&h);
            pos += h.total_len();
        }
    }

    /// Renames the segment's files to `*.deleted` (log first), so a crash
    /// part-way leaves nothing that looks like a live segment; returns the
    /// new paths for [`remove_files`].
    pub fn rename_for_delete(&self) -> Result<Vec<PathBuf>, StorageError> {
        let mut renamed = Vec::new();
        for kind in SegmentFile::ALL {
            let path = files::segment_path(&self.dir, self.base_offset, kind);
            let to = files::deleted_path(&path);
            match std::fs::rename(&path, &to) {
                Ok(()) => renamed.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("rename", &path)(e)),
            }
        }
        Ok(renamed)
    }
}

/// Removes files renamed by [`Segment::rename_for_delete`].
pub fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!(path = %p.display(), error = %e, "could not remove deleted segment file");
        }
    }
}

/// Reads whole batches from `start` (a batch boundary) up to `end`, at most
/// `max_bytes` unless the first batch alone is larger. Every batch is CRC
/// checked: a corrupt first batch is an error, a later one ends the read.
pub fn read_batches(
    file: &Arc<MappedFile>,
    segment_base: u64,
    start: usize,
    end: usize,
    max_bytes: usize,
) -> Result<Bytes, StorageError> {
    let data = file.slice(start, end);
    let mut pos = 0;
    while pos < data.len() {
        let checked = header_at(data, pos)
            .ok_or(BatchError::TooShort { have: data.len() - pos, need: HEADER_LEN })
            .and_then(|h| {
                let computed = batch::compute_crc(&data[pos..pos + h.total_len()]);
                if computed == h.crc {
                    Ok(h)
                } else {
                    Err(BatchError::CrcMismatch { stored: h.crc, computed })
                }
            });
        match checked {
            Ok(h) if pos > 0 && pos + h.total_len() > max_bytes => break,
            Ok(h) => pos += h.total_len(),
            Err(source) if pos == 0 => {
                return Err(StorageError::CorruptBatch { segment: segment_base, position: start, source });
            }
            Err(source) => {
                tracing::error!(segment = segment_base, position = start + pos, error = %source, "corrupt batch; not served");
                break;
            }
        }
    }
    Ok(file.bytes(start, start + pos))
}
