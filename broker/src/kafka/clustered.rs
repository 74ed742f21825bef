//! Kafka's view of a clustered broker: the brokers with their Kafka
//! listeners, each partition's leader, leader epoch, replicas and ISR, and
//! the controller, all from the controller state this broker reconciled.
//! Topic ids are the local ids every replica derives from the controller's
//! topic id, so they agree across brokers.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::cluster::state::{BrokerInfo, ControllerState, TopicState};
use crate::clustering::ClusterHandle;
use crate::reconcile::plan::local_topic_id;

/// A node id as Kafka's wire carries it.
pub fn kafka_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(i32::MAX))
}

/// `host:port` split for Kafka's wire.
pub fn host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port.parse().ok()?))
}

/// A broker's Kafka listener, if it runs one.
pub fn kafka_endpoint(b: &BrokerInfo) -> Option<(String, i32)> {
    b.kafka_addr.as_deref().and_then(host_port)
}

/// The live brokers that run a Kafka listener.
pub fn brokers(state: &ControllerState) -> Vec<MetadataResponseBroker> {
    state
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let (host, port) = kafka_endpoint(b)?;
            let mut node = MetadataResponseBroker::default();
            node.node_id = kafka_id(b.id);
            node.host = StrBytes::from_string(host);
            node.port = port;
            Some(node)
        })
        .collect()
}

/// The controller leader's id for Kafka (-1 when none is known).
pub fn controller_id(c: &ClusterHandle) -> BrokerId {
    c.leader().map_or(BrokerId(-1), kafka_id)
}

/// A topic of the controller state as Kafka's Metadata describes it.
pub fn describe(c: &ClusterHandle, name: &str, t: &TopicState) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(name.to_owned())));
    out.topic_id = local_topic_id(&c.settings.cluster_id, t.id);
    out.is_internal = crate::groups::offsets_topic::is_internal(name);
    out.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut m = MetadataResponsePartition::default();
            m.partition_index = i32::try_from(i).unwrap_or(i32::MAX);
            m.leader_id = p.leader.map_or(BrokerId(-1), kafka_id);
            if p.leader.is_none() {
                m.error_code = ResponseError::LeaderNotAvailable.code();
            }
            m.leader_epoch = i32::try_from(p.leader_epoch).unwrap_or(i32::MAX);
            m.replica_nodes = p.replicas.iter().copied().map(kafka_id).collect();
            m.isr_nodes = p.isr.iter().copied().map(kafka_id).collect();
            m
        })
        .collect();
    out
}

/// The controller topic whose Kafka id is `id`.
pub fn by_id<'a>(
    c: &ClusterHandle,
    state: &'a ControllerState,
    id: Uuid,
) -> Option<(&'a String, &'a TopicState)> {
    state.topics.iter().find(|(_, t)| local_topic_id(&c.settings.cluster_id, t.id) == id)
}

/// Runs an admin future to completion from a blocking thread (the Kafka
/// admin handlers run on one).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}
