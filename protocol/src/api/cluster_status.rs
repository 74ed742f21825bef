//! ClusterStatus: the cluster as one broker's controller node sees it, for
//! `sluice cluster status`.
//!
//! ```text
//! request:  (empty)
//! response: node_id u64 | clustered u8 | controller_leader i64 | controller_term u64
//!           | nodes [id u64 | client_addr string | kafka_addr string | peer_addr string
//!                    | live u8 | lease_until_ms u64 | voter u8]
//!           | topics u32 | partitions u32
//!           | under_replicated [topic string | partition u32]
//!           | offline [topic string | partition u32]
//! ```
//! `clustered` is 0 on a single-node broker, which reports itself as the
//! one node (id 0, live, no peer address) and `controller_leader` -1.
//! `kafka_addr` is empty when the node runs no Kafka listener.

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Asks for the cluster's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStatusRequest;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterNode {
    /// Its node id.
    pub id: u64,
    /// Native client address.
    pub client_addr: String,
    /// Kafka listener address ("" when none).
    pub kafka_addr: String,
    /// Peer address ("" on a single node).
    pub peer_addr: String,
    /// Registered and its lease not lapsed.
    pub live: bool,
    /// When its lease ends unless renewed (ms since the Unix epoch; 0 on a
    /// single node).
    pub lease_until_ms: u64,
    /// A voter of the controller quorum (listed in `--peers`), not a node
    /// added later with `sluice cluster add-node`.
    pub voter: bool,
}

/// A topic partition named in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

/// The cluster's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStatusResponse {
    /// The answering broker's node id.
    pub node_id: u64,
    /// Whether the broker runs in cluster mode.
    pub clustered: bool,
    /// The controller leader's node id, -1 when none is known.
    pub controller_leader: i64,
    /// The controller's Raft term as this node knows it.
    pub controller_term: u64,
    /// Every registered node, by id.
    pub nodes: Vec<ClusterNode>,
    /// Topics the controller holds.
    pub topics: u32,
    /// Their partitions.
    pub partitions: u32,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated: Vec<StatusPartition>,
    /// Partitions with no leader.
    pub offline: Vec<StatusPartition>,
}

impl Message for ClusterStatusRequest {
    const NAME: &'static str = "ClusterStatus request";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

impl Request for ClusterStatusRequest {
    const API_KEY: ApiKey = ApiKey::ClusterStatus;
    type Response = ClusterStatusResponse;
}

fn encode_partitions(w: &mut Writer, parts: &[StatusPartition]) {
    w.vec(parts, |w, p| {
        w.string(&p.topic);
        w.u32(p.partition);
    });
}

fn decode_partitions(r: &mut Reader, field: &'static str) -> Result<Vec<StatusPartition>, WireError> {
    r.vec(field, 6, |r| Ok(StatusPartition { topic: r.string()?, partition: r.u32()? }))
}

impl Message for ClusterStatusResponse {
    const NAME: &'static str = "ClusterStatus response";
    fn encode(&self, w: &mut Writer) {
        w.u64(self.node_id);
        w.u8(u8::from(self.clustered));
        w.i64(self.controller_leader);
        w.u64(self.controller_term);
        w.vec(&self.nodes, |w, n| {
            w.u64(n.id);
            w.string(&n.client_addr);
            w.string(&n.kafka_addr);
            w.string(&n.peer_addr);
            w.u8(u8::from(n.live));
            w.u64(n.lease_until_ms);
            w.u8(u8::from(n.voter));
        });
        w.u32(self.topics);
        w.u32(self.partitions);
        encode_partitions(w, &self.under_replicated);
        encode_partitions(w, &self.offline);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            node_id: r.u64()?,
            clustered: r.u8()? != 0,
            controller_leader: r.i64()?,
            controller_term: r.u64()?,
            nodes: r.vec("nodes", 24, |r| {
                Ok(ClusterNode {
                    id: r.u64()?,
                    client_addr: r.string()?,
                    kafka_addr: r.string()?,
                    peer_addr: r.string()?,
                    live: r.u8()? != 0,
                    lease_until_ms: r.u64()?,
                    voter: r.u8()? != 0,
                })
            })?,
            topics: r.u32()?,
            partitions: r.u32()?,
            under_replicated: decode_partitions(r, "under_replicated")?,
            offline: decode_partitions(r, "offline")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let status = ClusterStatusResponse {
            node_id: 2,
            clustered: true,
            controller_leader: 1,
            controller_term: 3,
            nodes: vec![ClusterNode {
                id: 1,
                client_addr: "127.0.0.1:9500".into(),
                kafka_addr: String::new(),
                peer_addr: "127.0.0.1:9600".into(),
                live: true,
                lease_until_ms: 5,
                voter: true,
            }],
            topics: 1,
            partitions: 3,
            under_replicated: vec![StatusPartition { topic: "t".into(), partition: 2 }],
            offline: vec![],
        };
        assert_eq!(ClusterStatusResponse::decode_all(status.to_bytes()).unwrap(), status);
        assert!(ClusterStatusResponse::decode_all(status.to_bytes().slice(..10)).is_err());
    }
}
