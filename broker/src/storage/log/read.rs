//! The read side of a partition's log: whole batches by offset (what a
//! fetch serves) and the first record at or after a timestamp (what
//! `ListOffsets` by time answers). Both hold the log's `state` lock only to
//! find the byte ranges, then read the segment maps without it, and never
//! past the high watermark.

use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::RecordBatch;

use super::{lock, Log};
use crate::storage::mmap::MappedFile;
use crate::storage::segment::read_batches;
use crate::storage::StorageError;

/// A byte range of a segment's log.
#[derive(Debug)]
pub(super) struct ByteRange {
    /// Base offset of the segment.
    pub(super) segment: u64,
    /// Its log file.
    pub(super) file: Arc<MappedFile>,
    /// First byte.
    pub(super) start: usize,
    /// Byte after the last.
    pub(super) end: usize,
}

impl Log {
    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (at least one batch), from one segment, below the high
    /// watermark. Empty from the high watermark to the log end (appended,
    /// not yet acknowledged: as Kafka answers there); `OffsetOutOfRange`
    /// outside `[log_start_offset, log_end_offset]`; `CorruptBatch` when the
    /// first batch fails its CRC.
    ///
    /// A newly elected leader's high watermark lags the offsets its
    /// predecessor served (it learns it from its followers' next fetches):
    /// a consumer positioned there must wait, not be told its offset is out
    /// of range and reset to the start of the log.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, StorageError> {
        let hw = self.high_watermark();
        let ByteRange { file, segment: base, start, end } = {
            let state = lock(&self.state);
            let log_start_offset = state.log_start_offset();
            let log_end_offset = state.active.next_offset().max(hw);
            if offset < log_start_offset || offset > log_end_offset {
                return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
            }
            if offset >= hw {
                return Ok(Bytes::new());
            }
            let seg = state.segment_for(offset);
            let start = seg.position_of(offset);
            let end = if hw < seg.next_offset() { seg.position_of(hw) } else { seg.size() };
            let (file, _) = seg.reader();
            ByteRange { file, segment: seg.base_offset(), start, end }
        };
        read_batches(&file, base, start, end, max_bytes)
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
                    let start = s.position_for_timestamp(timestamp);
                    ByteRange { segment: s.base_offset(), file: s.reader().0, start, end }
                })
                .collect()
        };
        for ByteRange { segment: base, file, start, end } in candidates {
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
}
