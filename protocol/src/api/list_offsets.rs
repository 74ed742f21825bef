//! ListOffsets: the earliest or latest offset of partitions, or the first
//! offset whose timestamp is at or after a given time.
//!
//! ```text
//! request:  partitions [topic string | partition u32 | spec u8 | (timestamp i64 when spec = 2)]
//!           spec: 0 = earliest, 1 = latest, 2 = by timestamp
//! response: partitions [topic string | partition u32 | error_code u16 | offset u64 | timestamp i64]
//! ```
//!
//! For a timestamp past every record, `offset` is the log end offset and
//! `timestamp` is -1.

use super::{tag, ApiKey, Message, Request};
use crate::{ErrorCode, Reader, WireError, Writer};

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the next offset a consumer would read).
    Latest,
    /// The first offset with a timestamp at or after this one (ms).
    Timestamp(i64),
}

/// Looks up offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsRequest {
    /// Partitions to look up.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// One lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// What to look up.
    pub spec: OffsetSpec,
}

/// The offsets found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsResponse {
    /// One entry per lookup, in request order.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// One lookup's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// `None`, or why the lookup failed.
    pub error_code: ErrorCode,
    /// The offset found.
    pub offset: u64,
    /// Timestamp of the record at `offset`, or -1.
    pub timestamp: i64,
}

impl Message for ListOffsetsRequest {
    const NAME: &'static str = "ListOffsets request";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.partitions, |w, p| {
            w.string(&p.topic);
            w.u32(p.partition);
            match p.spec {
                OffsetSpec::Earliest => w.u8(0),
                OffsetSpec::Latest => w.u8(1),
                OffsetSpec::Timestamp(ts) => {
                    w.u8(2);
                    w.i64(ts);
                }
            }
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let partitions = r.vec("partitions", 7, |r| {
            let topic = r.string()?;
            let partition = r.u32()?;
            let spec = match tag(r, "spec", |v| (v <= 2).then_some(v))? {
                0 => OffsetSpec::Earliest,
                1 => OffsetSpec::Latest,
                _ => OffsetSpec::Timestamp(r.i64()?),
            };
            Ok(ListOffsetsPartition { topic, partition, spec })
        })?;
        Ok(Self { partitions })
    }
}

impl Request for ListOffsetsRequest {
    const API_KEY: ApiKey = ApiKey::ListOffsets;
    type Response = ListOffsetsResponse;
}

impl Message for ListOffsetsResponse {
    const NAME: &'static str = "ListOffsets response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.partitions, |w, p| {
            w.string(&p.topic);
            w.u32(p.partition);
            w.u16(p.error_code.as_u16());
            w.u64(p.offset);
            w.i64(p.timestamp);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let partitions = r.vec("partitions", 24, |r| {
            Ok(ListOffsetsPartitionResponse {
                topic: r.string()?,
                partition: r.u32()?,
                error_code: ErrorCode::from_u16(r.u16()?),
                offset: r.u64()?,
                timestamp: r.i64()?,
            })
        })?;
        Ok(Self { partitions })
    }
}
