//! Retention (deleting whole sealed segments by age or size), truncation
//! (cutting the log back to an offset), and a reset (starting the log over
//! at an offset past its end).

use std::sync::atomic::Ordering;

use super::producer_load::remove_snapshots;
use super::{files, lock, segment_options, sync_dir, write_atomically, Log, RetentionReport, Segment};
use crate::storage::segment;
use crate::storage::StorageError;

impl Log {
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
        state.load_producers(&self.dir, &config);
        self.end.store(end, Ordering::Release);
        self.durable.fetch_min(end, Ordering::AcqRel);
        write_atomically(&self.dir, files::RECOVERY_POINT, format!("{}\n", self.durable_offset()).as_bytes())
    }

    /// Empties the log and starts it again, empty, at `offset` (past its
    /// end): a follower whose whole log lies below its leader's log start
    /// (the leader's retention deleted what it would fetch next, or this
    /// replica lost its data) starts over there, as Kafka's followers do.
    /// Every old segment is renamed for deletion and the directory synced
    /// before the new segment exists, so a crash in between leaves an
    /// empty log (which fetches and resets again), never a gap. Needs
    /// exclusive use, as [`truncate_to`](Self::truncate_to).
    ///
    /// # Errors
    /// `OffsetOutOfRange` when `offset` is below the log end; I/O failures
    /// (after the old segments went, the log is then failed).
    pub fn reset_to(&mut self, offset: u64) -> Result<(), StorageError> {
        let config = self.config();
        let opts = segment_options(&config, &self.space);
        let state = self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (log_start_offset, log_end_offset) = (state.log_start_offset(), state.active.next_offset());
        if offset < log_end_offset {
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        let mut removed = Vec::new();
        for (_, seg) in std::mem::take(&mut state.sealed) {
            removed.extend(seg.rename_for_delete()?);
        }
        removed.extend(state.active.rename_for_delete()?);
        remove_snapshots(&self.dir, &mut state.snapshots, 0)?;
        sync_dir(&self.dir)?;
        segment::remove_files(&removed);
        match Segment::create(&self.dir, offset, &opts) {
            Ok(fresh) => state.active = fresh,
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        state.load_producers(&self.dir, &config);
        self.end.store(offset, Ordering::Release);
        self.durable.store(offset, Ordering::Release);
        tracing::warn!(dir = %self.dir.display(), from = log_start_offset, to = log_end_offset, offset, "log reset: starts over at the leader's log start");
        // Its directory sync also makes the new segment's name durable.
        write_atomically(&self.dir, files::RECOVERY_POINT, format!("{offset}\n").as_bytes())
    }
}
