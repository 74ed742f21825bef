//! Metadata: on a clustered broker, the cluster from the controller state
//! ([`super::clustered`]). On a single node: this broker as the only node, the leader (epoch 0) and only
//! replica of every partition; topics with their real ids (Fetch v13+ and
//! librdkafka need them). A named topic that does not exist is created
//! when the broker auto-creates topics and the request allows it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::clustered;
use super::state::{partition, CLUSTER_ID, NODE_ID};
use super::wire::{decode, encode, Chunks, Header};
use super::{error, KafkaError};
use crate::broker::Broker;
use crate::clustering::ClusterHandle;
use crate::errors::BrokerError;
use crate::topics::{validate_topic_name, Topic};

/// This broker as Kafka clients reach it: `kafka_advertise` when set, else
/// the address the client connected to (`local`), else the configured
/// listen address.
pub fn endpoint(broker: &Broker, local: Option<SocketAddr>) -> (String, i32) {
    if let Some(advertised) = clustered::host_port(&broker.config.kafka_advertise) {
        return advertised;
    }
    let addr = local.or_else(|| broker.config.kafka_listen.parse().ok());
    addr.map_or_else(|| ("127.0.0.1".to_owned(), 9092), |a| (a.ip().to_string(), i32::from(a.port())))
}

/// Answers a Metadata request.
///
/// # Errors
/// `Malformed` or `Encode`; unknown topics are answered in their entries.
pub fn handle(
    broker: &Broker,
    header: &Header,
    mut body: Bytes,
    local: Option<SocketAddr>,
) -> Result<Chunks, KafkaError> {
    let req: MetadataRequest = decode(header, &mut body)?;
    if let Some(c) = broker.cluster() {
        return encode(header, &clustered_metadata(broker, c, req));
    }
    let create = req.allow_auto_topic_creation && broker.config.auto_create_topics;
    let topics = match req.topics {
        None => broker.topics.list().iter().map(describe).collect(),
        Some(wanted) => each_wanted(wanted, |name| by_name(broker, name, create), |id| by_id(broker, id)),
    };
    let (host, port) = endpoint(broker, local);
    let mut node = MetadataResponseBroker::default();
    node.node_id = BrokerId(NODE_ID);
    node.host = StrBytes::from_string(host);
    node.port = port;
    let mut response = MetadataResponse::default();
    response.brokers = vec![node];
    response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    response.controller_id = BrokerId(NODE_ID);
    response.topics = topics;
    encode(header, &response)
}

/// Each requested topic once (by name, or by id for a nameless entry), in
/// the order first asked for, described by `by_name` or `by_id`.
fn each_wanted(
    wanted: Vec<kafka_protocol::messages::metadata_request::MetadataRequestTopic>,
    mut by_name: impl FnMut(&TopicName) -> MetadataResponseTopic,
    mut by_id: impl FnMut(Uuid) -> MetadataResponseTopic,
) -> Vec<MetadataResponseTopic> {
    let mut seen = HashSet::with_capacity(wanted.len());
    wanted
        .into_iter()
        .filter(|t| seen.insert((t.name.clone(), t.topic_id)))
        .map(|t| match t.name {
            Some(name) => by_name(&name),
            None => by_id(t.topic_id),
        })
        .collect()
}

/// Metadata of a clustered broker, from the controller state.
fn clustered_metadata(broker: &Broker, c: &ClusterHandle, req: MetadataRequest) -> MetadataResponse {
    let state = c.state();
    let create = req.allow_auto_topic_creation && broker.config.auto_create_topics;
    let topics = match req.topics {
        // Internal topics only when asked for by name.
        None => state
            .topics
            .iter()
            .filter(|(name, _)| !crate::groups::offsets_topic::is_internal(name))
            .map(|(name, t)| clustered::describe(c, name, t))
            .collect(),
        Some(wanted) => each_wanted(
            wanted,
            |name: &TopicName| match state.topics.get(name.as_str()) {
                Some(topic) => clustered::describe(c, name, topic),
                None => {
                    let err = validate_topic_name(name)
                        .err()
                        .unwrap_or_else(|| BrokerError::UnknownTopic(name.to_string()));
                    if create && matches!(err, BrokerError::UnknownTopic(_)) {
                        // Through the controller; the client asks again.
                        let _ = broker.partition(name, 0);
                    }
                    failed(name, error::code(&err))
                }
            },
            |id| match clustered::by_id(c, &state, id) {
                Some((name, topic)) => clustered::describe(c, name, topic),
                None => {
                    let mut out = MetadataResponseTopic::default();
                    out.topic_id = id;
                    out.error_code = ResponseError::UnknownTopicId.code();
                    out
                }
            },
        ),
    };
    let mut response = MetadataResponse::default();
    response.brokers = clustered::brokers(&state);
    response.cluster_id = Some(StrBytes::from_string(c.settings.cluster_id.clone()));
    response.controller_id = clustered::controller_id(c);
    response.topics = topics;
    response
}

fn by_name(broker: &Broker, name: &str, create: bool) -> MetadataResponseTopic {
    if let Some(t) = broker.topics.get(name) {
        return describe(&t);
    }
    let code = match validate_topic_name(name) {
        Err(e) => error::code(&e),
        Ok(()) if create => match partition(broker, name, 0) {
            Ok(_) => return broker.topics.get(name).map_or_else(|| failed(name, 3), |t| describe(&t)),
            Err(e) => error::code(&e),
        },
        Ok(()) => error::code(&BrokerError::UnknownTopic(name.to_owned())),
    };
    failed(name, code)
}

fn by_id(broker: &Broker, id: Uuid) -> MetadataResponseTopic {
    match broker.topics.list().into_iter().find(|t| t.id() == id) {
        Some(t) => describe(&t),
        None => {
            let mut t = MetadataResponseTopic::default();
            t.topic_id = id;
            t.error_code = ResponseError::UnknownTopicId.code();
            t
        }
    }
}

fn failed(name: &str, code: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(name.to_owned())));
    t.error_code = code;
    t
}

fn describe(topic: &Arc<Topic>) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.name.to_string())));
    t.topic_id = topic.id();
    t.partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let mut m = MetadataResponsePartition::default();
            m.partition_index = p.index as i32;
            m.leader_id = BrokerId(NODE_ID);
            m.leader_epoch = 0;
            m.replica_nodes = vec![BrokerId(NODE_ID)];
            m.isr_nodes = vec![BrokerId(NODE_ID)];
            m
        })
        .collect();
    t
}
