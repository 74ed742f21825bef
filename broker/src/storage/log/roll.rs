//! Rolling a log's segment: sealing the active segment and starting a new
//! one at the log end, when it is full, old, or its relative offsets would
//! overflow. A roll creates files but syncs nothing (see `PendingSync`):
//! [`Log::roll_due`] lets an async caller move such an append off its
//! workers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_protocol::batch::BatchHeader;

use super::{lock, segment_options, Log, State};
use crate::storage::segment::Segment;
use crate::storage::{AppendInfo, LogConfig, StorageError};

impl Log {
    /// Writes a checked batch at the log end (a produce's or a replica's):
    /// rolls the segment when due, appends it stamped with `leader_epoch`
    /// (and `log_append_time`), records its producer state, and publishes
    /// the new end.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_at_end(
        &self,
        state: &mut State,
        config: &LogConfig,
        header: &BatchHeader,
        batch: &[u8],
        leader_epoch: i32,
        log_append_time: Option<i64>,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let rolled = self.maybe_roll(state, config, header, batch.len())?;
        if batch.len() > state.active.capacity() {
            return Err(StorageError::BatchTooLarge { size: batch.len(), max: state.active.capacity() });
        }
        let base_offset = state.active.next_offset();
        state.active.append(batch, header, leader_epoch, log_append_time)?;
        if header.is_idempotent() {
            state.producers.record(
                header,
                base_offset,
                now_ms,
                config.producer_expiry_ms,
                config.max_producers_per_partition as usize,
            );
        }
        let next = state.active.next_offset();
        self.end.store(next, Ordering::Release);
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_append_time, duplicate: false, rolled })
    }

    pub(super) fn maybe_roll(
        &self,
        state: &mut State,
        config: &LogConfig,
        header: &BatchHeader,
        len: usize,
    ) -> Result<bool, StorageError> {
        let due = Self::roll_due_locked(state, config, len, header.record_count);
        if due {
            self.roll_locked(state, config)?;
        }
        Ok(due)
    }

    /// Whether appending a batch of `len` bytes and `records` records now
    /// would roll the segment (which creates files): callers on an async
    /// runtime then append off its workers. A guess that another append may
    /// make stale; it costs one uncontended lock.
    pub fn roll_due(&self, len: usize, records: u32) -> bool {
        let config = self.config();
        Self::roll_due_locked(&lock(&self.state), &config, len, records)
    }

    fn roll_due_locked(state: &State, config: &LogConfig, len: usize, records: u32) -> bool {
        let active = &state.active;
        if active.is_empty() {
            return false;
        }
        let full = active.size() + len > (config.segment_bytes as usize).min(active.capacity());
        let old = active.opened().elapsed() >= Duration::from_millis(config.segment_ms);
        let relative_end = active.next_offset() - active.base_offset() + u64::from(records);
        full || old || relative_end > u64::from(u32::MAX)
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub fn roll(&self) -> Result<(), StorageError> {
        let config = self.config();
        let mut state = lock(&self.state);
        self.check_failed()?;
        if state.active.is_empty() {
            return Ok(());
        }
        self.roll_locked(&mut state, &config)
    }

    /// Seals the active segment, then starts a new one at the log end.
    /// Sealing first means a failure (no space for the final time-index
    /// entry, a failed truncate) leaves the active segment active and
    /// nothing lost. Syncs nothing (see [`PendingSync`]).
    fn roll_locked(&self, state: &mut State, config: &LogConfig) -> Result<(), StorageError> {
        let indexes = state.active.seal()?;
        let next = state.active.next_offset();
        let fresh = Segment::create(&self.dir, next, &segment_options(config, &self.space))?;
        let old = std::mem::replace(&mut state.active, fresh);
        let old_base = old.base_offset();
        state.sealed.insert(old_base, old);
        state.pending.dir = true;
        state.pending.indexes.extend(indexes);
        state.pending.sealed.push(old_base);
        // Producer state as of the new segment, so opening the log replays
        // only the segments after it.
        state.queue_snapshot(next);
        Ok(())
    }
}
