//! Consumer-group apis: membership and assignment (one heartbeat api, as in
//! Kafka's KIP-848), committed offsets, and administration.
//!
//! ```text
//! GroupHeartbeat    request:  group string | member_id string ("" = join) | member_epoch u32 (0 = join,
//!                             u32::MAX = leave) | client_host string | session_timeout_ms u32
//!                             | topics [string] | owned [topic string | partitions [u32]]
//!                   response: member_id string | member_epoch u32 | heartbeat_interval_ms u32
//!                             | assignment [topic string | partitions [u32]]
//! OffsetCommit      request:  group string | member_id string ("" = not a member) | member_epoch u32
//!                             | offsets [topic string | partition u32 | offset u64 | metadata string]
//!                   response: results [topic string | partition u32 | error_code u16]
//! OffsetFetch       request:  group string | partitions [topic string | partition u32]  ([] = all)
//!                   response: offsets [topic string | partition u32 | offset u64 (u64::MAX = none)
//!                             | metadata string | error_code u16]
//! ListGroups        request:  (empty)
//!                   response: groups [group string | state string | members u32]
//! DescribeGroup     request:  group string
//!                   response: group string | state string | epoch u32
//!                             | members [member_id string | client_id string | host string
//!                                        | assignment [topic string | partitions [u32]]]
//!                             | offsets [topic string | partition u32 | committed u64 (u64::MAX = none)
//!                                        | log_end_offset u64 | lag u64]
//! ResetOffsets      request:  group string | topic string | partitions [u32] ([] = all) | spec u8
//!                             | value i64 | dry_run u8    spec: 0 earliest, 1 latest, 2 offset,
//!                             3 timestamp, 4 shift by (value is the offset, timestamp or shift)
//!                   response: offsets [topic string | partition u32 | previous u64 | new u64]
//! DeleteGroup       request:  group string
//!                   response: (empty)
//! ```

use super::{tag, ApiKey, Message, Request};
use crate::{ErrorCode, Reader, WireError, Writer};

/// "No committed offset" on the wire.
pub const NO_OFFSET: u64 = u64::MAX;
/// `member_epoch` that leaves the group.
pub const LEAVE_EPOCH: u32 = u32::MAX;

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partition indexes.
    pub partitions: Vec<u32>,
}

fn put_tps(w: &mut Writer, tps: &[TopicPartitions]) {
    w.vec(tps, |w, t| {
        w.string(&t.topic);
        w.vec(&t.partitions, |w, p| w.u32(*p));
    });
}

fn get_tps(r: &mut Reader) -> Result<Vec<TopicPartitions>, WireError> {
    r.vec("topic partitions", 6, |r| {
        Ok(TopicPartitions { topic: r.string()?, partitions: r.vec("partitions", 4, Reader::u32)? })
    })
}

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
        put_tps(w, &self.owned);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            group: r.string()?,
            member_id: r.string()?,
            member_epoch: r.u32()?,
            client_host: r.string()?,
            session_timeout_ms: r.u32()?,
            topics: r.vec("topics", 2, Reader::string)?,
            owned: get_tps(r)?,
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
        put_tps(w, &self.assignment);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            member_id: r.string()?,
            member_epoch: r.u32()?,
            heartbeat_interval_ms: r.u32()?,
            assignment: get_tps(r)?,
        })
    }
}

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

/// A partition of a topic, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

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
        w.vec(&self.partitions, |w, p| {
            w.string(&p.topic);
            w.u32(p.partition);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            group: r.string()?,
            partitions: r
                .vec("partitions", 6, |r| Ok(TopicPartition { topic: r.string()?, partition: r.u32()? }))?,
        })
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

/// Lists groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsRequest;

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group name.
    pub group: String,
    /// `Empty`, `Stable` or `Reconciling`.
    pub state: String,
    /// Active members.
    pub members: u32,
}

/// Every group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsResponse {
    /// By name.
    pub groups: Vec<GroupListing>,
}

impl Message for ListGroupsRequest {
    const NAME: &'static str = "ListGroups request";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

impl Request for ListGroupsRequest {
    const API_KEY: ApiKey = ApiKey::ListGroups;
    type Response = ListGroupsResponse;
}

impl Message for ListGroupsResponse {
    const NAME: &'static str = "ListGroups response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.groups, |w, g| {
            w.string(&g.group);
            w.string(&g.state);
            w.u32(g.members);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            groups: r.vec("groups", 8, |r| {
                Ok(GroupListing { group: r.string()?, state: r.string()?, members: r.u32()? })
            })?,
        })
    }
}

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
            put_tps(w, &m.assignment);
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
                    assignment: get_tps(r)?,
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

/// Deletes a group and its committed offsets (only while it has no members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupRequest {
    /// Group name.
    pub group: String,
}

/// The group was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupResponse;

impl Message for DeleteGroupRequest {
    const NAME: &'static str = "DeleteGroup request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { group: r.string()? })
    }
}

impl Request for DeleteGroupRequest {
    const API_KEY: ApiKey = ApiKey::DeleteGroup;
    type Response = DeleteGroupResponse;
}

impl Message for DeleteGroupResponse {
    const NAME: &'static str = "DeleteGroup response";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}
