//! What replication needs from a log (DESIGN.md §10, KIP-101/279):
//! appending a leader's batch verbatim on a follower, reading past the
//! high watermark for followers, the leader-epoch lookups
//! (`OffsetForLeaderEpoch`), and replication's cap on the high watermark.
//!
//! No epoch file: leader epochs never decrease along a log (a follower
//! refuses a batch whose epoch is below its last one), so "the first
//! offset whose epoch is above `e`" is a binary search over offsets, each
//! probe a sparse-index lookup plus a short header scan.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use sluice_protocol::batch::{BatchError, BatchHeader};

use super::read::ByteRange;
use super::{lock, AppendInfo, Log, State};
use crate::storage::segment::read_batches;
use crate::storage::StorageError;

/// `partition_leader_epoch` of an empty log, as Kafka's `UNDEFINED_EPOCH`.
pub const NO_EPOCH: i32 = -1;

impl State {
    /// The leader epoch of the batch holding `offset`.
    fn epoch_at(&self, offset: u64) -> Option<i32> {
        self.segment_for(offset).header_for(offset).map(|h| h.partition_leader_epoch)
    }

    fn last_epoch(&self) -> i32 {
        let end = self.active.next_offset();
        if end == self.log_start_offset() {
            return NO_EPOCH;
        }
        self.epoch_at(end - 1).unwrap_or(NO_EPOCH)
    }
}

impl Log {
    /// The leader epoch of the last batch, [`NO_EPOCH`] when empty.
    pub fn last_epoch(&self) -> i32 {
        lock(&self.state).last_epoch()
    }

    /// Kafka's OffsetForLeaderEpoch answer for `epoch`: the largest epoch
    /// `<= epoch` present in the log (`None` when there is none) and the
    /// first offset whose epoch is above that (the log end when none is).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (Option<i32>, u64) {
        let state = lock(&self.state);
        let (start, end) = (state.log_start_offset(), state.active.next_offset());
        // First offset in [start, end) whose epoch is above `epoch`.
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if state.epoch_at(mid).is_some_and(|e| e > epoch) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let found = if lo > start { state.epoch_at(lo - 1) } else { None };
        (found, lo)
    }

    /// Appends a leader's batch on a follower, verbatim: its base offset
    /// (which must be the log end) and leader epoch (which must not be
    /// below the log's last) are kept, log-append time is not restamped.
    /// Producer state is recorded as a produce records it, so idempotent
    /// retries are deduplicated after this replica becomes leader. Rolls
    /// like any append. The CRC is the caller's to check.
    ///
    /// # Errors
    /// `InvalidBatch` for a bad header or length, `ReplicaMismatch`, and
    /// the errors of [`append_batch`](Self::append_batch).
    pub fn append_replica(&self, batch: &[u8], now_ms: i64) -> Result<AppendInfo, StorageError> {
        let header = BatchHeader::parse(batch).map_err(StorageError::InvalidBatch)?;
        if header.total_len() != batch.len() || header.record_count == 0 {
            return Err(StorageError::InvalidBatch(BatchError::LengthMismatch {
                declared: header.batch_length,
                actual: batch.len().saturating_sub(sluice_protocol::batch::LOG_OVERHEAD),
            }));
        }
        let config = self.config();
        let mut state = lock(&self.state);
        if state.closed {
            return Err(StorageError::Closed);
        }
        self.check_failed()?;
        let (end, last_epoch) = (state.active.next_offset(), state.last_epoch());
        if header.base_offset != end || header.partition_leader_epoch < last_epoch {
            return Err(StorageError::ReplicaMismatch {
                base_offset: header.base_offset,
                epoch: header.partition_leader_epoch,
                log_end_offset: end,
                last_epoch,
            });
        }
        self.write_at_end(&mut state, &config, &header, batch, header.partition_leader_epoch, None, now_ms)
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes`
    /// (at least one batch), up to the log end: what a leader sends a
    /// follower. Empty at the log end.
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `[log_start_offset, log_end_offset]`,
    /// `CorruptBatch` when the first batch fails its CRC.
    pub fn read_for_replica(&self, offset: u64, max_bytes: usize) -> Result<Bytes, StorageError> {
        let ByteRange { file, segment: base, start, end } = {
            let state = lock(&self.state);
            let (log_start_offset, log_end_offset) = (state.log_start_offset(), state.active.next_offset());
            if offset < log_start_offset || offset > log_end_offset {
                return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
            }
            if offset == log_end_offset {
                return Ok(Bytes::new());
            }
            let seg = state.segment_for(offset);
            let (file, size) = seg.reader();
            ByteRange { file, segment: seg.base_offset(), start: seg.position_of(offset), end: size }
        };
        read_batches(&file, base, start, end, max_bytes)
    }

    /// Caps the high watermark at `limit` (`u64::MAX`: no cap): a leader
    /// passes the smallest durable offset its other in-sync replicas
    /// reported, a follower its leader's high watermark.
    pub fn set_high_watermark_limit(&self, limit: u64) {
        self.hw_limit.store(limit, Ordering::Release);
    }

    /// The cap set by [`set_high_watermark_limit`](Self::set_high_watermark_limit).
    pub fn high_watermark_limit(&self) -> u64 {
        self.hw_limit.load(Ordering::Acquire)
    }
}
