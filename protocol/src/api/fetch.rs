//! Fetch: reads whole record batches from one or more partitions, long-
//! polling until `min_bytes` are available or `max_wait_ms` passes.
//!
//! ```text
//! request:  max_wait_ms u32 | min_bytes u32 | max_bytes u32
//!           | partitions [topic string | partition u32 | offset u64 | max_bytes u32]
//! response: partitions [topic string | partition u32 | error_code u16
//!                       | high_watermark u64 | log_start_offset u64 | records bytes]
//! ```
//!
//! `records` holds whole batches back to back, exactly as stored; the first
//! batch may start before the requested offset (it contains it), and at least
//! one batch is returned even when it is larger than `max_bytes`. On
//! `OffsetOutOfRange`, `log_start_offset` and `high_watermark` give the valid
//! range.

use bytes::Bytes;

use super::{ApiKey, Message, Request};
use crate::{ErrorCode, Reader, WireError, Writer};

/// Reads from partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker may wait for `min_bytes`.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available in total.
    pub min_bytes: u32,
    /// Bytes at most in the whole response (beyond the first batch).
    pub max_bytes: u32,
    /// Partitions and start offsets.
    pub partitions: Vec<FetchPartition>,
}

/// One partition to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Bytes at most from this partition (beyond the first batch).
    pub max_bytes: u32,
}

/// Batches per partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponse {
    /// One entry per requested partition, in request order.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// The result for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// `None`, or why nothing could be read.
    pub error_code: ErrorCode,
    /// Offsets below this are readable.
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Whole batches, back to back.
    pub records: Bytes,
}

impl Message for FetchRequest {
    const NAME: &'static str = "Fetch request";
    fn encode(&self, w: &mut Writer) {
        w.u32(self.max_wait_ms);
        w.u32(self.min_bytes);
        w.u32(self.max_bytes);
        w.vec(&self.partitions, |w, p| {
            w.string(&p.topic);
            w.u32(p.partition);
            w.u64(p.offset);
            w.u32(p.max_bytes);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            max_wait_ms: r.u32()?,
            min_bytes: r.u32()?,
            max_bytes: r.u32()?,
            partitions: r.vec("partitions", 18, |r| {
                Ok(FetchPartition {
                    topic: r.string()?,
                    partition: r.u32()?,
                    offset: r.u64()?,
                    max_bytes: r.u32()?,
                })
            })?,
        })
    }
}

impl Request for FetchRequest {
    const API_KEY: ApiKey = ApiKey::Fetch;
    type Response = FetchResponse;
}

impl Message for FetchResponse {
    const NAME: &'static str = "Fetch response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.partitions, |w, p| {
            w.string(&p.topic);
            w.u32(p.partition);
            w.u16(p.error_code.as_u16());
            w.u64(p.high_watermark);
            w.u64(p.log_start_offset);
            w.len_bytes(&p.records);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            partitions: r.vec("partitions", 28, |r| {
                Ok(FetchPartitionResponse {
                    topic: r.string()?,
                    partition: r.u32()?,
                    error_code: ErrorCode::from_u16(r.u16()?),
                    high_watermark: r.u64()?,
                    log_start_offset: r.u64()?,
                    records: r.len_bytes()?,
                })
            })?,
        })
    }
}
