//! Metadata (version 1): lists topics, or describes the named ones, with
//! their configs, per-partition offsets and sizes, and where each
//! partition's leader and replicas are (the brokers of the cluster).
//!
//! ```text
//! request:  topics [name string]            (empty array = every topic;
//!                                            at most MAX_NAMED_TOPICS)
//! response: node_id u64 | brokers [id u64 | addr string]
//!           | topics [error_code u16 | name string | configs [key string | value string]
//!                   | partitions [partition u32 | error_code u16 | log_start_offset u64
//!                                 | log_end_offset u64 | high_watermark u64
//!                                 | size_bytes u64 | segment_count u32
//!                                 | leader i64 | leader_epoch u32
//!                                 | replicas [u64] | isr [u64]]]
//! ```
//!
//! A single-node broker answers with itself as the only broker and the
//! leader (epoch 0) of every partition. `leader` is -1 for an offline
//! partition. Offsets and sizes are the answering broker's own copy's
//! (its high watermark is the cluster's only where it leads).

use super::{ApiKey, ConfigEntry, Message, Request};
use crate::{ErrorCode, Reader, WireError, Writer};

/// Most topics one metadata request may name (a bound on the work and the
/// response one request can cause; the broker also answers each distinct
/// name once). Ask for every topic with an empty list instead.
pub const MAX_NAMED_TOPICS: usize = 10_000;

/// Asks for topic metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// Topics to describe; empty means all. At most [`MAX_NAMED_TOPICS`].
    pub topics: Vec<String>,
}

/// Metadata of the requested topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataResponse {
    /// The answering broker's id (0 on a single node).
    pub node_id: u64,
    /// Every broker of the cluster the answering broker knows, itself
    /// included, with its native client address.
    pub brokers: Vec<BrokerMetadata>,
    /// One entry per topic (an unknown requested topic has `UnknownTopic`).
    pub topics: Vec<TopicMetadata>,
}

/// One broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// Its node id.
    pub id: u64,
    /// Its native client address (`host:port`).
    pub addr: String,
}

/// The internal topic of a cluster's committed offsets: the leader of its
/// partition 0 is every group's coordinator (docs/cluster.md, "Groups").
/// A single-node broker has no such topic and coordinates its own groups.
pub const OFFSETS_TOPIC: &str = "__sluice_offsets";

/// The `leader` of a partition that has none (offline).
pub const NO_LEADER: i64 = -1;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// `None`, or why the topic could not be described.
    pub error_code: ErrorCode,
    /// Topic name.
    pub name: String,
    /// Effective configs (defaults included).
    pub configs: Vec<ConfigEntry>,
    /// Partitions in index order.
    pub partitions: Vec<PartitionMetadata>,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: u32,
    /// `None`, or why the partition could not be described.
    pub error_code: ErrorCode,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Offset the next record will get.
    pub log_end_offset: u64,
    /// Offsets below this are visible to consumers.
    pub high_watermark: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Number of segments.
    pub segment_count: u32,
    /// The leader's node id, or [`NO_LEADER`].
    pub leader: i64,
    /// The leader epoch (bumped on every leader change).
    pub leader_epoch: u32,
    /// The brokers holding a copy, in preference order.
    pub replicas: Vec<u64>,
    /// The replicas in sync with the leader.
    pub isr: Vec<u64>,
}

impl Message for MetadataRequest {
    const NAME: &'static str = "Metadata request";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.topics, |w, t| w.string(t));
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { topics: r.vec_max("topics", 2, MAX_NAMED_TOPICS, Reader::string)? })
    }
}

impl Request for MetadataRequest {
    const API_KEY: ApiKey = ApiKey::Metadata;
    const VERSION: u16 = 1;
    type Response = MetadataResponse;
}

impl Message for MetadataResponse {
    const NAME: &'static str = "Metadata response";
    fn encode(&self, w: &mut Writer) {
        w.u64(self.node_id);
        w.vec(&self.brokers, |w, b| {
            w.u64(b.id);
            w.string(&b.addr);
        });
        w.vec(&self.topics, |w, t| {
            w.u16(t.error_code.as_u16());
            w.string(&t.name);
            ConfigEntry::encode_all(w, &t.configs);
            w.vec(&t.partitions, |w, p| {
                w.u32(p.partition);
                w.u16(p.error_code.as_u16());
                w.u64(p.log_start_offset);
                w.u64(p.log_end_offset);
                w.u64(p.high_watermark);
                w.u64(p.size_bytes);
                w.u32(p.segment_count);
                w.i64(p.leader);
                w.u32(p.leader_epoch);
                w.vec(&p.replicas, |w, r| w.u64(*r));
                w.vec(&p.isr, |w, r| w.u64(*r));
            });
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let node_id = r.u64()?;
        let brokers = r.vec("brokers", 12, |r| Ok(BrokerMetadata { id: r.u64()?, addr: r.string()? }))?;
        let topics = r.vec("topics", 12, |r| {
            Ok(TopicMetadata {
                error_code: ErrorCode::from_u16(r.u16()?),
                name: r.string()?,
                configs: ConfigEntry::decode_all(r)?,
                partitions: r.vec("partitions", 54, |r| {
                    Ok(PartitionMetadata {
                        partition: r.u32()?,
                        error_code: ErrorCode::from_u16(r.u16()?),
                        log_start_offset: r.u64()?,
                        log_end_offset: r.u64()?,
                        high_watermark: r.u64()?,
                        size_bytes: r.u64()?,
                        segment_count: r.u32()?,
                        leader: r.i64()?,
                        leader_epoch: r.u32()?,
                        replicas: r.vec("replicas", 8, Reader::u64)?,
                        isr: r.vec("isr", 8, Reader::u64)?,
                    })
                })?,
            })
        })?;
        Ok(Self { node_id, brokers, topics })
    }
}
