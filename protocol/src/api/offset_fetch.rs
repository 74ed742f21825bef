//! OffsetFetch: reads a group's committed offsets.
//!
//! ```text
//! request:  group string | partitions [topic string | partition u32]  ([] = all)
//! response: offsets [topic string | partition u32 | offset u64 (u64::MAX = none)
//!           | metadata string | error_code u16]
//! ```

use super::{ApiKey, Message, Request};
use crate::topic_partition::TopicPartition;
use crate::{ErrorCode, Reader, WireError, Writer};

/// "No committed offset" on the wire.
pub const NO_OFFSET: u64 = u64::MAX;

/// Reads committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchRequest {
    /// Group name.
    pub group: String,
    /// Partitions to read; empty = every partition the group committed.
    pub partitions: Vec<TopicPartition>,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The committed offset, or [`NO_OFFSET`].
    pub offset: u64,
    /// Stored with it.
    pub metadata: String,
    /// `None`, or why it could not be read.
    pub error_code: ErrorCode,
}

/// Committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchResponse {
    /// One per requested partition (or per committed one).
    pub offsets: Vec<FetchedOffset>,
}

impl Message for OffsetFetchRequest {
    const NAME: &'static str = "OffsetFetch request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.vec(&self.partitions, |w, p| p.encode(w));
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { group: r.string()?, partitions: r.vec("partitions", 6, TopicPartition::decode)? })
    }
}

impl Request for OffsetFetchRequest {
    const API_KEY: ApiKey = ApiKey::OffsetFetch;
    type Response = OffsetFetchResponse;
}

impl Message for OffsetFetchResponse {
    const NAME: &'static str = "OffsetFetch response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.offsets, |w, o| {
            w.string(&o.topic);
            w.u32(o.partition);
            w.u64(o.offset);
            w.string(&o.metadata);
            w.u16(o.error_code.as_u16());
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            offsets: r.vec("offsets", 18, |r| {
                Ok(FetchedOffset {
                    topic: r.string()?,
                    partition: r.u32()?,
                    offset: r.u64()?,
                    metadata: r.string()?,
                    error_code: ErrorCode::from_u16(r.u16()?),
                })
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let req = OffsetFetchRequest { group: "g".into(), partitions: vec![TopicPartition::new("t", 7)] };
        assert_eq!(OffsetFetchRequest::decode_all(req.to_bytes()), Ok(req));
        let resp = OffsetFetchResponse {
            offsets: vec![FetchedOffset {
                topic: "t".into(),
                partition: 7,
                offset: NO_OFFSET,
                metadata: String::new(),
                error_code: ErrorCode::None,
            }],
        };
        assert_eq!(OffsetFetchResponse::decode_all(resp.to_bytes()), Ok(resp));
    }
}
