//! GroupHeartbeat: joins, heartbeats in, or leaves a consumer group (one
//! heartbeat api for membership and assignment, as in Kafka's KIP-848).
//!
//! ```text
//! request:  group string | member_id string ("" = join) | member_epoch u32 (0 = join,
//!           u32::MAX = leave) | client_host string | session_timeout_ms u32
//!           | topics [string] | owned [topic string | partitions [u32]]
//! response: member_id string | member_epoch u32 | heartbeat_interval_ms u32
//!           | assignment [topic string | partitions [u32]]
//! ```

use super::{ApiKey, Message, Request};
use crate::topic_partition::TopicPartitions;
use crate::{Reader, WireError, Writer};

/// `member_epoch` that leaves the group.
pub const LEAVE_EPOCH: u32 = u32::MAX;

/// Joins, heartbeats in, or leaves a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatRequest {
    /// Group name.
    pub group: String,
    /// Empty to join; then the id the broker gave.
    pub member_id: String,
    /// 0 to join, [`LEAVE_EPOCH`] to leave, else the last epoch received.
    pub member_epoch: u32,
    /// Where the member runs (for describe).
    pub client_host: String,
    /// The member is removed after this long without a heartbeat.
    pub session_timeout_ms: u32,
    /// Subscribed topic names.
    pub topics: Vec<String>,
    /// Partitions the member still owns (revoked ones it has released are gone).
    pub owned: Vec<TopicPartitions>,
}

/// The member's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupHeartbeatResponse {
    /// The member's id.
    pub member_id: String,
    /// The member's epoch (moves when its assignment changes).
    pub member_epoch: u32,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u32,
    /// The partitions the member may consume now.
    pub assignment: Vec<TopicPartitions>,
}

impl Message for GroupHeartbeatRequest {
    const NAME: &'static str = "GroupHeartbeat request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        w.string(&self.member_id);
        w.u32(self.member_epoch);
        w.string(&self.client_host);
        w.u32(self.session_timeout_ms);
        w.vec(&self.topics, |w, t| w.string(t));
        TopicPartitions::encode_all(w, &self.owned);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            group: r.string()?,
            member_id: r.string()?,
            member_epoch: r.u32()?,
            client_host: r.string()?,
            session_timeout_ms: r.u32()?,
            topics: r.vec("topics", 2, Reader::string)?,
            owned: TopicPartitions::decode_all(r)?,
        })
    }
}

impl Request for GroupHeartbeatRequest {
    const API_KEY: ApiKey = ApiKey::GroupHeartbeat;
    type Response = GroupHeartbeatResponse;
}

impl Message for GroupHeartbeatResponse {
    const NAME: &'static str = "GroupHeartbeat response";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.member_id);
        w.u32(self.member_epoch);
        w.u32(self.heartbeat_interval_ms);
        TopicPartitions::encode_all(w, &self.assignment);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            member_id: r.string()?,
            member_epoch: r.u32()?,
            heartbeat_interval_ms: r.u32()?,
            assignment: TopicPartitions::decode_all(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let req = GroupHeartbeatRequest {
            group: "g".into(),
            member_id: "m-1".into(),
            member_epoch: LEAVE_EPOCH,
            client_host: "host".into(),
            session_timeout_ms: 10_000,
            topics: vec!["a".into(), "b".into()],
            owned: vec![TopicPartitions { topic: "a".into(), partitions: vec![0, 2] }],
        };
        assert_eq!(GroupHeartbeatRequest::decode_all(req.to_bytes()), Ok(req));
        let resp = GroupHeartbeatResponse {
            member_id: "m-1".into(),
            member_epoch: 3,
            heartbeat_interval_ms: 500,
            assignment: vec![TopicPartitions { topic: "b".into(), partitions: vec![1] }],
        };
        assert_eq!(GroupHeartbeatResponse::decode_all(resp.to_bytes()), Ok(resp));
    }
}
