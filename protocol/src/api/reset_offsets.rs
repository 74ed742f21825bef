//! ResetOffsets: moves a group's committed offsets while it has no members.
//!
//! ```text
//! request:  group string | topic string | partitions [u32] ([] = all) | spec u8
//!           | value i64 | dry_run u8    spec: 0 earliest, 1 latest, 2 offset,
//!           3 timestamp, 4 shift by (value is the offset, timestamp or shift)
//! response: offsets [topic string | partition u32 | previous u64 | new u64]
//! ```

use super::{tag, ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Where to move a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// This offset (clamped to the valid range).
    Offset(u64),
    /// The first offset at or after this timestamp (ms).
    Timestamp(i64),
    /// The committed offset moved by this much (clamped).
    ShiftBy(i64),
}

/// Moves a group's committed offsets (only while it has no members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetOffsetsRequest {
    /// Group name.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partitions; empty = all of the topic's.
    pub partitions: Vec<u32>,
    /// Where to.
    pub spec: ResetSpec,
    /// Compute and report, change nothing.
    pub dry_run: bool,
}

/// One partition's old and new committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Before ([`NO_OFFSET`] when none).
    pub previous: u64,
    /// After.
    pub new: u64,
}

/// What reset-offsets did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResetOffsetsResponse {
    /// Per partition.
    pub offsets: Vec<OffsetChange>,
}

impl Message for ResetOffsetsRequest {
    const NAME: &'static str = "ResetOffsets request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.topic);
        w.vec(&self.partitions, |w, p| w.u32(*p));
        let (tag, value) = match self.spec {
            ResetSpec::Earliest => (0, 0),
            ResetSpec::Latest => (1, 0),
            ResetSpec::Offset(o) => (2, o as i64),
            ResetSpec::Timestamp(t) => (3, t),
            ResetSpec::ShiftBy(n) => (4, n),
        };
        w.u8(tag);
        w.i64(value);
        w.u8(u8::from(self.dry_run));
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let group = r.string()?;
        let topic = r.string()?;
        let partitions = r.vec("partitions", 4, Reader::u32)?;
        let spec_tag = tag(r, "spec", |v| (v <= 4).then_some(v))?;
        let value = r.i64()?;
        let spec = match spec_tag {
            0 => ResetSpec::Earliest,
            1 => ResetSpec::Latest,
            2 => ResetSpec::Offset(value as u64),
            3 => ResetSpec::Timestamp(value),
            _ => ResetSpec::ShiftBy(value),
        };
        let dry_run = tag(r, "dry_run", |v| (v <= 1).then_some(v == 1))?;
        Ok(Self { group, topic, partitions, spec, dry_run })
    }
}

impl Request for ResetOffsetsRequest {
    const API_KEY: ApiKey = ApiKey::ResetOffsets;
    type Response = ResetOffsetsResponse;
}

impl Message for ResetOffsetsResponse {
    const NAME: &'static str = "ResetOffsets response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.offsets, |w, o| {
            w.string(&o.topic);
            w.u32(o.partition);
            w.u64(o.previous);
            w.u64(o.new);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            offsets: r.vec("offsets", 22, |r| {
                Ok(OffsetChange {
                    topic: r.string()?,
                    partition: r.u32()?,
                    previous: r.u64()?,
                    new: r.u64()?,
                })
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_round_trips() {
        let specs = [
            ResetSpec::Earliest,
            ResetSpec::Latest,
            ResetSpec::Offset(17),
            ResetSpec::Timestamp(-1),
            ResetSpec::ShiftBy(-3),
        ];
        for spec in specs {
            let req = ResetOffsetsRequest {
                group: "g".into(),
                topic: "t".into(),
                partitions: vec![2],
                spec,
                dry_run: true,
            };
            assert_eq!(ResetOffsetsRequest::decode_all(req.to_bytes()), Ok(req));
        }
        let resp = ResetOffsetsResponse {
            offsets: vec![OffsetChange { topic: "t".into(), partition: 2, previous: u64::MAX, new: 0 }],
        };
        assert_eq!(ResetOffsetsResponse::decode_all(resp.to_bytes()), Ok(resp));
    }
}
