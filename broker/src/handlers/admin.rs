//! Topic administration and metadata: create, delete, alter, add
//! partitions, describe (auto-creating a named topic when allowed).

use std::sync::Arc;

use sluice_protocol::api::{
    supported_apis, AddPartitionsRequest, AddPartitionsResponse, AlterTopicRequest, AlterTopicResponse,
    ApiVersionsResponse, BrokerMetadata, ConfigEntry, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicRequest, DeleteTopicResponse, FailedTopic, GroupStatus, MetadataRequest, MetadataResponse,
    PartitionMetadata, StatusResponse, TopicMetadata,
};
use sluice_protocol::ErrorCode;

use super::blocking;
use crate::broker::Broker;
use crate::clustering::admin as cluster_admin;
use crate::errors::BrokerError;
use crate::topics::Topic;

fn pairs(configs: Vec<ConfigEntry>) -> Vec<(String, String)> {
    configs.into_iter().map(|c| (c.key, c.value)).collect()
}

/// The api versions the broker speaks.
pub fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse { apis: supported_apis() }
}

/// Creates a topic.
///
/// # Errors
/// What [`Broker::create_topic`] refuses.
pub async fn create_topic(
    broker: Arc<Broker>,
    req: CreateTopicRequest,
) -> Result<CreateTopicResponse, BrokerError> {
    if let Some(c) = broker.cluster() {
        let configs = pairs(req.configs);
        cluster_admin::create_topic(c, &broker.config, &req.name, req.partitions, &configs).await?;
        return Ok(CreateTopicResponse);
    }
    blocking(move || {
        broker.create_topic(&req.name, req.partitions, &pairs(req.configs)).map(|_| CreateTopicResponse)
    })
    .await
}

/// Deletes a topic.
///
/// # Errors
/// `UnknownTopic`, or `Storage` when its files cannot be removed.
pub async fn delete_topic(
    broker: Arc<Broker>,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, BrokerError> {
    if let Some(c) = broker.cluster() {
        cluster_admin::delete_topic(c, &req.name).await?;
        return Ok(DeleteTopicResponse);
    }
    blocking(move || {
        broker.delete_topic(&req.name)?;
        Ok(DeleteTopicResponse)
    })
    .await
}

/// Changes a live topic's settings.
///
/// # Errors
/// `UnknownTopic`, `InvalidConfig`, or `Storage` when `topic.json`
/// cannot be written.
pub async fn alter_topic(
    broker: Arc<Broker>,
    req: AlterTopicRequest,
) -> Result<AlterTopicResponse, BrokerError> {
    if let Some(c) = broker.cluster() {
        cluster_admin::alter_topic(c, &broker.config, &req.name, &pairs(req.configs), false).await?;
        return Ok(AlterTopicResponse);
    }
    blocking(move || {
        let config = broker.topics.alter(&req.name, &pairs(req.configs))?;
        tracing::info!(topic = %req.name, ?config, "topic altered");
        Ok(AlterTopicResponse)
    })
    .await
}

/// Grows a topic's partition count.
///
/// # Errors
/// `UnknownTopic`, `InvalidPartitions`, `InvalidConfig` (not a growth),
/// `OpenFileLimit`, or `Storage`.
pub async fn add_partitions(
    broker: Arc<Broker>,
    req: AddPartitionsRequest,
) -> Result<AddPartitionsResponse, BrokerError> {
    if let Some(c) = broker.cluster() {
        let old_count = cluster_admin::add_partitions(c, &broker.config, &req.name, req.count).await?;
        return Ok(AddPartitionsResponse { old_count, new_count: req.count });
    }
    blocking(move || {
        let old_count = broker.add_partitions(&req.name, req.count)?;
        Ok(AddPartitionsResponse { old_count, new_count: req.count })
    })
    .await
}

fn describe(topic: &Topic) -> TopicMetadata {
    let configs = topic.config().entries().into_iter().map(|(k, v)| ConfigEntry::new(k, v)).collect();
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let s = p.log().stats();
            PartitionMetadata {
                partition: p.index,
                error_code: ErrorCode::None,
                log_start_offset: s.log_start_offset,
                log_end_offset: s.log_end_offset,
                high_watermark: s.high_watermark,
                size_bytes: s.size_bytes,
                segment_count: s.segment_count,
                leader: 0,
                leader_epoch: 0,
                replicas: vec![0],
                isr: vec![0],
            }
        })
        .collect();
    TopicMetadata { error_code: ErrorCode::None, name: topic.name.to_string(), configs, partitions }
}

/// One screen about the broker.
pub fn status(broker: &Broker) -> StatusResponse {
    let topics = broker.topics.list();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .map(|g| {
            let lag = broker
                .groups
                .describe(&broker.topics, &g.group)
                .map_or(0, |d| d.offsets.iter().map(|o| o.lag).sum());
            GroupStatus { group: g.group, members: g.members, lag }
        })
        .collect();
    StatusResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_ms: broker.started.elapsed().as_millis() as u64,
        data_dir: broker.config.data_dir.display().to_string(),
        fsync: broker.config.topic_defaults.fsync.to_string(),
        topics: topics.len() as u32,
        partitions: topics.iter().map(|t| t.partitions.len() as u32).sum(),
        total_bytes: topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.log().stats().size_bytes)
            .sum(),
        connections: u32::try_from(broker.metrics.connections.get()).unwrap_or(0),
        groups,
        failed_topics: broker
            .topics
            .failed()
            .into_iter()
            .map(|(topic, error)| FailedTopic { topic, error })
            .collect(),
        default_partitions: broker.config.default_partitions,
    }
}

/// Describes the named topics (each distinct name once, in the order first
/// named: naming a large topic many times does not multiply the response),
/// or all of them. A named topic that does not exist is created first
/// (with `default_partitions`) when the broker auto-creates topics, in
/// place on this worker as [`super::partition`] does.
///
/// # Errors
/// None: an unknown topic (or one that could not be created) is answered
/// in its entry.
pub fn metadata(broker: &Broker, req: MetadataRequest) -> Result<MetadataResponse, BrokerError> {
    if let Some(c) = broker.cluster() {
        return Ok(super::cluster::metadata(broker, c, &req));
    }
    let topics = if req.topics.is_empty() {
        broker.topics.list().iter().map(|t| describe(t)).collect()
    } else {
        let mut seen = std::collections::HashSet::with_capacity(req.topics.len());
        req.topics
            .iter()
            .filter(|name| seen.insert(name.as_str()))
            .map(|name| match found_or_created(broker, name) {
                Some(t) => describe(&t),
                None => TopicMetadata {
                    error_code: ErrorCode::UnknownTopic,
                    name: name.clone(),
                    configs: vec![],
                    partitions: vec![],
                },
            })
            .collect()
    };
    let brokers = vec![BrokerMetadata { id: 0, addr: broker.client_addr() }];
    Ok(MetadataResponse { node_id: 0, brokers, topics })
}

/// The topic `name`, created when missing and the broker auto-creates
/// topics.
fn found_or_created(broker: &Broker, name: &str) -> Option<Arc<Topic>> {
    if let Some(t) = broker.topics.get(name) {
        return Some(t);
    }
    if !broker.config.auto_create_topics {
        return None;
    }
    if let Err(e) = super::partition(broker, name, 0) {
        tracing::warn!(topic = %name, error = %e, "auto-creating a topic for metadata failed");
    }
    broker.topics.get(name)
}
