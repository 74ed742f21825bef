//! Opening a log: listing its directory, loading clean segments, recovering
//! the rest from the recovery point, setting aside (quarantining) what
//! cannot be part of the log, cutting the log back after a failed sync, and
//! keeping the recovery-point checkpoint true.
//!
//! Recovery never deletes bytes it could not read: a segment cut short
//! keeps its cut-off bytes in a quarantine file, and a later segment that
//! no longer follows it is renamed to one (an all-zero one, holding
//! nothing, is removed). The log stays dense: offsets are never skipped.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use super::producer_load::remove_snapshots;
use super::{
    durable, files, io_error, read_checkpoint, segment_options, sync_dir, FlushState, Log, PendingSync,
    ProducerStates, RecoveryReport, Segment, State,
};
use crate::storage::files::{FileName, SegmentFile};
use crate::storage::segment::SegmentOptions;
use crate::storage::{DiskSpace, FsyncPolicy, LogConfig, StorageError};

/// What a partition directory holds.
#[derive(Debug, Default)]
struct Listing {
    /// Base offsets of the segment logs, ascending.
    bases: Vec<u64>,
    /// Base offsets of the producer-state snapshots, ascending.
    snapshots: Vec<u64>,
}

/// Lists `dir`, removing leftovers of interrupted writes and deletions and
/// index files whose segment log is gone.
fn list(dir: &Path) -> Result<Listing, StorageError> {
    let mut listing = Listing::default();
    let mut index_files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        match files::parse(&entry.file_name().to_string_lossy()) {
            FileName::Segment(base, SegmentFile::Log) => listing.bases.push(base),
            FileName::Segment(base, _) => index_files.push((base, entry.path())),
            FileName::ProducerSnapshot(base) => listing.snapshots.push(base),
            FileName::Leftover => {
                let _ = fs::remove_file(entry.path());
            }
            FileName::Quarantined | FileName::Control | FileName::Unknown => {}
        }
    }
    listing.bases.sort_unstable();
    listing.snapshots.sort_unstable();
    for (base, path) in index_files {
        if listing.bases.binary_search(&base).is_err() {
            let _ = fs::remove_file(path); // orphan of a half-deleted segment
        }
    }
    Ok(listing)
}

/// The offset a failed sync left recorded, if any.
fn read_failed_sync(dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(dir.join(files::FAILED_SYNC)).ok()?;
    // An unreadable marker still says a sync failed: trust nothing unsynced.
    Some(text.trim().parse().unwrap_or(0))
}

/// Whether the file holds only zero bytes (or nothing).
fn is_all_zeros(path: &Path) -> std::io::Result<bool> {
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Sets aside a segment that does not follow the one before it (a segment
/// before it was cut short, or a stale leftover): removed when it holds
/// nothing, otherwise quarantined.
fn set_aside(dir: &Path, base: u64, expected: u64, report: &mut RecoveryReport) -> Result<(), StorageError> {
    let log = files::segment_path(dir, base, SegmentFile::Log);
    if is_all_zeros(&log).map_err(io_error("read", &log))? {
        for kind in SegmentFile::ALL {
            durable::remove_durably(&files::segment_path(dir, base, kind))?;
        }
        tracing::warn!(dir = %dir.display(), base, expected, "removed an empty segment that does not follow the previous one");
        return Ok(());
    }
    let to = Segment::quarantine_files(dir, base)?;
    tracing::error!(dir = %dir.display(), base, expected, quarantined = %to.display(), "segment does not follow the previous one (a segment before it was cut short, or a leftover); its bytes are kept aside, not served");
    report.quarantined.push(to);
    Ok(())
}

/// Opens every segment: cleanly when the log was closed cleanly or the
/// segment lies wholly below the recovery point, by a CRC-checking walk
/// otherwise.
fn load_segments(
    dir: &Path,
    opts: &SegmentOptions,
    bases: &[u64],
    report: &mut RecoveryReport,
) -> Result<Vec<Segment>, StorageError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
    for (i, &base) in bases.iter().enumerate() {
        if let Some(expected) = segments.last().map(Segment::next_offset) {
            if expected != base {
                set_aside(dir, base, expected, report)?;
                continue;
            }
        }
        let fully_below = bases.get(i + 1).is_some_and(|next| *next <= report.recovery_point);
        if report.clean || fully_below {
            segments.push(Segment::open_clean(dir, base, opts)?);
            continue;
        }
        let (seg, walk) = Segment::recover(dir, base, opts, report.recovery_point)?;
        report.batches_checked += walk.batches_checked;
        report.truncated_bytes += walk.discarded_bytes;
        report.torn |= walk.torn;
        if walk.torn {
            tracing::warn!(dir = %dir.display(), segment = base, valid_bytes = walk.valid_bytes, discarded_bytes = walk.discarded_bytes, next_offset = seg.next_offset(), quarantined = ?walk.quarantined, "cut a torn or corrupt tail");
        }
        report.quarantined.extend(walk.quarantined);
        segments.push(seg);
    }
    Ok(segments)
}

impl Log {
    /// Opens the log in `dir` (creating it when empty), recovering it if it
    /// was not closed cleanly, and cutting it back to its last durable
    /// offset if a sync failed.
    ///
    /// # Errors
    /// `Io`/`NoSpace` when the directory or a segment cannot be read,
    /// created or repaired.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        space: DiskSpace,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        Self::open_cut(dir, config, space, None)
    }

    /// Opens this failed log's directory again, cut back to the offset it
    /// was durable up to when its sync failed (unless its policy is
    /// `never`: readers may hold bytes past it, and nothing was promised).
    /// Unlike a plain [`open`](Self::open), it does not depend on the
    /// `failed-sync` marker having reached the disk: the failing disk may
    /// have refused that write too.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn reopen(&self) -> Result<(Self, RecoveryReport), StorageError> {
        let config = self.config();
        let cut = (!matches!(config.fsync, FsyncPolicy::Never)).then(|| self.durable_offset());
        Self::open_cut(&self.dir, config, self.space.clone(), cut)
    }

    fn open_cut(
        dir: &Path,
        config: LogConfig,
        space: DiskSpace,
        cut: Option<u64>,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        durable::create_dir_durably(dir)?;
        let opts = segment_options(&config, &space);
        let Listing { bases, mut snapshots } = list(dir)?;
        let marker = dir.join(files::CLEAN_SHUTDOWN);
        let clean = marker.exists();
        let recovery_point = read_checkpoint(dir);
        let mut report = RecoveryReport { clean, recovery_point, ..RecoveryReport::default() };
        let mut segments = load_segments(dir, &opts, &bases, &mut report)?;
        let created = segments.is_empty();
        let active = match segments.pop() {
            Some(seg) => seg,
            None => Segment::create(dir, 0, &opts)?,
        };
        report.segments = segments.len() + 1;
        let sealed: BTreeMap<u64, Segment> = segments.into_iter().map(|s| (s.base_offset(), s)).collect();
        let end = active.next_offset();
        report.log_end_offset = end;
        // A snapshot past the recovered end describes records that are gone.
        remove_snapshots(dir, &mut snapshots, end)?;
        // The first segment's name is durable with the first flush.
        let pending = PendingSync { dir: created, ..PendingSync::default() };
        let mut state =
            State { sealed, active, producers: ProducerStates::default(), snapshots, pending, closed: false };
        let load = state.load_producers(dir, &config);
        (report.producer_snapshot, report.producer_batches_replayed) = (load.snapshot, load.replayed);
        // The checkpoint must not claim offsets the log no longer has: a
        // later recovery would skip CRC checks below it.
        let checkpointed = recovery_point.min(end);
        let mut log = Self {
            dir: dir.to_owned(),
            config: RwLock::new(config),
            space,
            state: Mutex::new(state),
            flush: Mutex::new(FlushState {
                last_checkpoint: dir.join(files::RECOVERY_POINT).exists().then(Instant::now),
                checkpointed,
            }),
            durable: AtomicU64::new(if clean { end } else { 0 }),
            end: AtomicU64::new(end),
            failed: AtomicBool::new(false),
            hw_limit: AtomicU64::new(u64::MAX),
        };
        if checkpointed < recovery_point {
            tracing::warn!(dir = %dir.display(), recovery_point, log_end_offset = end, "the log ends below its recovery point; moving the checkpoint back");
            let mut flush = super::lock(&log.flush);
            flush.last_checkpoint = None;
            Log::checkpoint(dir, &mut flush, checkpointed)?;
        }
        let cut = match (read_failed_sync(dir), cut) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(durable_offset) = cut {
            if log.log_end_offset() > durable_offset {
                log.truncate_to(durable_offset)?;
            }
            tracing::warn!(dir = %dir.display(), durable_offset, "a sync failed before: the log was cut back to its last durable offset");
            report.failed_sync_cut = Some(durable_offset);
            report.log_end_offset = log.log_end_offset();
            durable::remove_durably(&dir.join(files::FAILED_SYNC))?;
        }
        if !clean {
            // What survived in the page cache is valid; make it durable
            // before serving it.
            log.flush()?;
        }
        // Sealed segments that are on disk need no open file.
        super::lock(&log.state).sealed.values().for_each(Segment::release_fds);
        if clean {
            fs::remove_file(&marker).map_err(io_error("remove", &marker))?;
            sync_dir(dir)?;
        }
        Ok((log, report))
    }
}
