//! DescribeGroup: one group's state, members and lag.
//!
//! ```text
//! request:  group string
//! response: group string | state string | epoch u32
//!           | members [member_id string | client_id string | host string
//!                      | assignment [topic string | partitions [u32]]]
//!           | offsets [topic string | partition u32 | committed u64 (u64::MAX = none)
//!                      | log_end_offset u64 | lag u64]
//! ```

use super::{ApiKey, Message, Request};
use crate::topic_partition::TopicPartitions;
use crate::{Reader, WireError, Writer};

/// Describes one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupRequest {
    /// Group name.
    pub group: String,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Its client id.
    pub client_id: String,
    /// Its host.
    pub host: String,
    /// What it consumes.
    pub assignment: Vec<TopicPartitions>,
}

/// One partition's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Committed offset, or [`NO_OFFSET`].
    pub committed: u64,
    /// The partition's log end offset.
    pub log_end_offset: u64,
    /// `log_end_offset - committed` (everything when nothing is committed).
    pub lag: u64,
}

/// A group's state, members and lag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeGroupResponse {
    /// Group name.
    pub group: String,
    /// `Empty`, `Stable` or `Reconciling`.
    pub state: String,
    /// The group epoch.
    pub epoch: u32,
    /// Active members.
    pub members: Vec<MemberDescription>,
    /// Per partition of the subscribed or committed topics.
    pub offsets: Vec<PartitionLag>,
}

impl Message for DescribeGroupRequest {
    const NAME: &'static str = "DescribeGroup request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { group: r.string()? })
    }
}

impl Request for DescribeGroupRequest {
    const API_KEY: ApiKey = ApiKey::DescribeGroup;
    type Response = DescribeGroupResponse;
}

impl Message for DescribeGroupResponse {
    const NAME: &'static str = "DescribeGroup response";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.state);
        w.u32(self.epoch);
        w.vec(&self.members, |w, m| {
            w.string(&m.member_id);
            w.string(&m.client_id);
            w.string(&m.host);
            TopicPartitions::encode_all(w, &m.assignment);
        });
        w.vec(&self.offsets, |w, o| {
            w.string(&o.topic);
            w.u32(o.partition);
            w.u64(o.committed);
            w.u64(o.log_end_offset);
            w.u64(o.lag);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            group: r.string()?,
            state: r.string()?,
            epoch: r.u32()?,
            members: r.vec("members", 10, |r| {
                Ok(MemberDescription {
                    member_id: r.string()?,
                    client_id: r.string()?,
                    host: r.string()?,
                    assignment: TopicPartitions::decode_all(r)?,
                })
            })?,
            offsets: r.vec("offsets", 30, |r| {
                Ok(PartitionLag {
                    topic: r.string()?,
                    partition: r.u32()?,
                    committed: r.u64()?,
                    log_end_offset: r.u64()?,
                    lag: r.u64()?,
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
        let req = DescribeGroupRequest { group: "g".into() };
        assert_eq!(DescribeGroupRequest::decode_all(req.to_bytes()), Ok(req));
        let resp = DescribeGroupResponse {
            group: "g".into(),
            state: "Reconciling".into(),
            epoch: 4,
            members: vec![MemberDescription {
                member_id: "m".into(),
                client_id: "c".into(),
                host: "h".into(),
                assignment: vec![TopicPartitions { topic: "t".into(), partitions: vec![0, 1] }],
            }],
            offsets: vec![PartitionLag {
                topic: "t".into(),
                partition: 0,
                committed: 5,
                log_end_offset: 9,
                lag: 4,
            }],
        };
        assert_eq!(DescribeGroupResponse::decode_all(resp.to_bytes()), Ok(resp));
    }
}
