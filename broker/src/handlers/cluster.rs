//! What a clustered broker says about the cluster: native Metadata from
//! the controller state (every live broker, each partition's leader,
//! epoch, replicas and ISR; log figures from this broker's copy when it
//! holds one) and ClusterStatus (single-node brokers report themselves).

use std::collections::HashSet;
use std::sync::Arc;

use sluice_protocol::api::{
    AddNodeRequest, AddNodeResponse, BrokerMetadata, ClusterNode, ClusterStatusResponse, ConfigEntry,
    MetadataRequest, MetadataResponse, PartitionMetadata, StatusPartition, TopicMetadata,
};
use sluice_protocol::ErrorCode;

use crate::broker::Broker;
use crate::cluster::state::TopicState;
use crate::clustering::admin::local_config;
use crate::clustering::ClusterHandle;
use crate::errors::BrokerError;

/// Native Metadata on a clustered broker.
pub fn metadata(broker: &Broker, c: &ClusterHandle, req: &MetadataRequest) -> MetadataResponse {
    let state = c.state();
    let brokers = state
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| BrokerMetadata { id: b.id, addr: b.client_addr.clone() })
        .collect();
    let topics = if req.topics.is_empty() {
        // Internal topics only when asked for by name.
        let listed = state.topics.iter().filter(|(name, _)| !crate::groups::offsets_topic::is_internal(name));
        listed.map(|(name, t)| describe(broker, name, t)).collect()
    } else {
        let mut seen = HashSet::with_capacity(req.topics.len());
        req.topics
            .iter()
            .filter(|name| seen.insert(name.as_str()))
            .map(|name| match state.topics.get(name) {
                Some(t) => describe(broker, name, t),
                None => {
                    // Auto-create goes through the controller; the client
                    // asks again.
                    let _ = broker.partition(name, 0);
                    TopicMetadata {
                        error_code: ErrorCode::UnknownTopic,
                        name: name.clone(),
                        configs: vec![],
                        partitions: vec![],
                    }
                }
            })
            .collect()
    };
    MetadataResponse { node_id: c.node_id(), brokers, topics }
}

fn describe(broker: &Broker, name: &str, t: &TopicState) -> TopicMetadata {
    let local = broker.topics.get(name);
    let log_config = local_config(&broker.config.topic_defaults, &t.config).unwrap_or_default();
    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
    let mut configs: Vec<ConfigEntry> =
        log_config.entries().into_iter().map(|(k, v)| ConfigEntry::new(k, v)).collect();
    configs.push(ConfigEntry::new("replication_factor", rf.to_string()));
    let min_isr = crate::reconcile::plan::min_insync_replicas(t, rf);
    configs.push(ConfigEntry::new("min_insync_replicas", min_isr.to_string()));
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let stats = local.as_ref().and_then(|l| l.partitions.get(i)).map(|lp| lp.log().stats());
            PartitionMetadata {
                partition: index,
                error_code: if p.leader.is_some() { ErrorCode::None } else { ErrorCode::NotLeaderOrFollower },
                log_start_offset: stats.as_ref().map_or(0, |s| s.log_start_offset),
                log_end_offset: stats.as_ref().map_or(0, |s| s.log_end_offset),
                high_watermark: stats.as_ref().map_or(0, |s| s.high_watermark),
                size_bytes: stats.as_ref().map_or(0, |s| s.size_bytes),
                segment_count: stats.as_ref().map_or(0, |s| s.segment_count),
                leader: p.leader_id(),
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            }
        })
        .collect();
    TopicMetadata { error_code: ErrorCode::None, name: name.to_owned(), configs, partitions }
}

fn named(parts: Vec<(String, u32)>) -> Vec<StatusPartition> {
    parts.into_iter().map(|(topic, partition)| StatusPartition { topic, partition }).collect()
}

/// ClusterStatus: the controller's view, or this broker alone.
pub fn status(broker: &Broker) -> ClusterStatusResponse {
    let Some(c) = broker.cluster() else {
        let topics = broker.topics.list();
        let kafka_addr = broker.config.kafka_listen.clone();
        return ClusterStatusResponse {
            node_id: 0,
            clustered: false,
            controller_leader: -1,
            controller_term: 0,
            nodes: vec![ClusterNode {
                id: 0,
                client_addr: broker.client_addr(),
                kafka_addr,
                peer_addr: String::new(),
                live: true,
                lease_until_ms: 0,
                voter: true,
            }],
            topics: topics.len() as u32,
            partitions: topics.iter().map(|t| t.partitions.len() as u32).sum(),
            under_replicated: vec![],
            offline: vec![],
        };
    };
    let state = c.state();
    let nodes = state
        .brokers
        .values()
        .map(|b| ClusterNode {
            id: b.id,
            client_addr: b.client_addr.clone(),
            kafka_addr: b.kafka_addr.clone().unwrap_or_default(),
            peer_addr: b.peer_addr.clone(),
            live: !b.fenced,
            lease_until_ms: b.lease_until_ms,
            voter: c.is_voter(b.id),
        })
        .collect();
    ClusterStatusResponse {
        node_id: c.node_id(),
        clustered: true,
        controller_leader: c.leader().and_then(|l| i64::try_from(l).ok()).unwrap_or(-1),
        controller_term: c.node().map(|n| n.term()).unwrap_or(0),
        nodes,
        topics: state.topics.len() as u32,
        partitions: state.topics.values().map(|t| t.partitions.len() as u32).sum(),
        under_replicated: named(state.under_replicated_partitions()),
        offline: named(state.offline_partitions()),
    }
}

/// AddNode: admits a broker as a non-voting member (`sluice cluster add-node`).
///
/// # Errors
/// `InvalidRequest` on a single node, for a voter's id or an empty
/// address; `ControllerNotAvailable` when the controller does not answer.
pub async fn add_node(broker: Arc<Broker>, req: AddNodeRequest) -> Result<AddNodeResponse, BrokerError> {
    let Some(c) = broker.cluster() else {
        return Err(BrokerError::InvalidRequest(
            "this broker runs as a single node: start every node with --node-id, --peer-listen and --peers"
                .into(),
        ));
    };
    c.add_node(req.node_id, &req.peer_addr).await?;
    tracing::info!(node = req.node_id, peer_addr = %req.peer_addr, "added a node to the cluster (non-voting)");
    Ok(AddNodeResponse)
}
