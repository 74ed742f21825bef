//! OffsetCommit: commits a group's offsets, durably.
//!
//! ```text
//! request:  group string | member_id string ("" = not a member) | member_epoch u32
//!           | offsets [topic string | partition u32 | offset u64 | metadata string]
//! response: results [topic string | partition u32 | error_code u16]
//! ```

use super::{ApiKey, Message, Request};
use crate::{ErrorCode, Reader, WireError, Writer};

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The next offset to consume.
    pub offset: u64,
    /// Free-form text stored with it.
    pub metadata: String,
}

/// Commits offsets, durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// Group name.
    pub group: String,
    /// The committing member ("" for a consumer outside the group protocol).
    pub member_id: String,
    /// Its epoch.
    pub member_epoch: u32,
    /// What to commit.
    pub offsets: Vec<CommitOffset>,
}

/// Per-partition result of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// `None`, or why this partition's offset was not committed.
    pub error_code: ErrorCode,
}

/// Results of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitResponse {
    /// One per offset, in request order.
    pub results: Vec<PartitionResult>,
}

impl Message for OffsetCommitRequest {
    const NAME: &'static str = "OffsetCommit request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.member_id);
        w.u32(self.member_epoch);
        w.vec(&self.offsets, |w, o| {
            w.string(&o.topic);
            w.u32(o.partition);
            w.u64(o.offset);
            w.string(&o.metadata);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            group: r.string()?,
            member_id: r.string()?,
            member_epoch: r.u32()?,
            offsets: r.vec("offsets", 16, |r| {
                Ok(CommitOffset {
                    topic: r.string()?,
                    partition: r.u32()?,
                    offset: r.u64()?,
                    metadata: r.string()?,
                })
            })?,
        })
    }
}

impl Request for OffsetCommitRequest {
    const API_KEY: ApiKey = ApiKey::OffsetCommit;
    type Response = OffsetCommitResponse;
}

impl Message for OffsetCommitResponse {
    const NAME: &'static str = "OffsetCommit response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.results, |w, p| {
            w.string(&p.topic);
            w.u32(p.partition);
            w.u16(p.error_code.as_u16());
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            results: r.vec("results", 8, |r| {
                Ok(PartitionResult {
                    topic: r.string()?,
                    partition: r.u32()?,
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
        let req = OffsetCommitRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![CommitOffset { topic: "t".into(), partition: 1, offset: 42, metadata: "m".into() }],
        };
        assert_eq!(OffsetCommitRequest::decode_all(req.to_bytes()), Ok(req));
        let resp = OffsetCommitResponse {
            results: vec![PartitionResult {
                topic: "t".into(),
                partition: 1,
                error_code: ErrorCode::StaleMemberEpoch,
            }],
        };
        assert_eq!(OffsetCommitResponse::decode_all(resp.to_bytes()), Ok(resp));
    }
}
