//! CreateTopics, DeleteTopics and CreatePartitions, over the broker's topic
//! administration (file system work runs on a blocking thread). Kafka's
//! config names are mapped by [`super::configs`]; `num_partitions = -1`
//! means the broker's `default_partitions`; a replication factor must be
//! 1 or -1 (one broker); `validate_only` checks without changing anything.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::clustered;
use super::configs::{entries, to_sluice};
use super::wire::{blocking, decode, Chunks, Header};
use super::{error, KafkaError};
use crate::broker::Broker;
use crate::clustering::{admin as cluster_admin, ClusterHandle};
use crate::errors::BrokerError;
use crate::topics::validate_topic_name;

fn message(e: &BrokerError) -> Option<StrBytes> {
    Some(StrBytes::from_string(e.to_string()))
}

/// Answers CreateTopics.
///
/// # Errors
/// `Malformed` or `Encode`; per-topic failures are answered.
pub async fn create(
    broker: Arc<Broker>,
    header: Header,
    mut body: Bytes,
) -> Result<Option<Chunks>, KafkaError> {
    let req: CreateTopicsRequest = decode(&header, &mut body)?;
    blocking(header, move || {
        let mut response = CreateTopicsResponse::default();
        for topic in req.topics {
            let mut out = CreatableTopicResult::default();
            out.name = topic.name.clone();
            out.num_partitions = -1;
            out.replication_factor = -1;
            match create_one(&broker, &topic, req.validate_only) {
                Ok((partitions, config, id, rf)) => {
                    out.num_partitions = partitions as i32;
                    out.replication_factor = i16::try_from(rf).unwrap_or(i16::MAX);
                    out.topic_id = id;
                    out.configs = Some(described(&broker, &config));
                }
                Err((code, e)) => {
                    out.error_code = code;
                    out.error_message = e;
                }
            }
            response.topics.push(out);
        }
        response
    })
    .await
}

/// `config_source` of a value set on the topic.
const TOPIC_CONFIG: i8 = 1;
/// `config_source` of a value left at the broker's default.
const DEFAULT_CONFIG: i8 = 5;

/// A new topic's configs as CreateTopics (v5+) reports them.
fn described(broker: &Broker, config: &crate::storage::LogConfig) -> Vec<CreatableTopicConfigs> {
    let defaults = entries(&broker.config.topic_defaults);
    entries(config)
        .into_iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfigs::default();
            let default = defaults.iter().any(|(dk, dv)| *dk == k && *dv == v);
            c.config_source = if default { DEFAULT_CONFIG } else { TOPIC_CONFIG };
            c.name = StrBytes::from_static_str(k);
            c.value = Some(StrBytes::from_string(v));
            c
        })
        .collect()
}

type Refusal = (i16, Option<StrBytes>);

fn refuse(e: &BrokerError) -> Refusal {
    (error::code(e), message(e))
}

/// Creates (or checks) one topic: its partition count, config and id.
fn create_one(broker: &Broker, topic: &CreatableTopic, validate_only: bool) -> Result<Created, Refusal> {
    if !matches!(topic.replication_factor, -1 | 1) && broker.cluster().is_none() {
        let why = format!("replication factor {} on a single broker", topic.replication_factor);
        return Err((ResponseError::InvalidReplicationFactor.code(), Some(StrBytes::from_string(why))));
    }
    let partitions = match (topic.num_partitions, topic.assignments.len()) {
        (-1, 0) => broker.config.default_partitions,
        (-1, n) => n as u32,
        (n, _) => u32::try_from(n).unwrap_or(0),
    };
    let configs = topic
        .configs
        .iter()
        .map(|c| to_sluice(&c.name, c.value.as_deref().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse(&e))?;
    if let Some(c) = broker.cluster() {
        return create_in_cluster(broker, c, topic, partitions, configs, validate_only);
    }
    if validate_only {
        validate_topic_name(&topic.name).map_err(|e| refuse(&e))?;
        if broker.topics.get(&topic.name).is_some() {
            return Err(refuse(&BrokerError::TopicAlreadyExists(topic.name.to_string())));
        }
        if partitions == 0 || partitions > broker.config.max_partitions {
            let max = broker.config.max_partitions;
            return Err(refuse(&BrokerError::InvalidPartitions { count: partitions, max }));
        }
        let mut config = broker.config.topic_defaults.clone();
        for (k, v) in &configs {
            config.set(k, v).map_err(|e| refuse(&BrokerError::InvalidConfig(e)))?;
        }
        return Ok((partitions, config, uuid::Uuid::nil(), 1));
    }
    let created = broker.create_topic(&topic.name, partitions, &configs).map_err(|e| refuse(&e))?;
    Ok((partitions, created.config(), created.id(), 1))
}

/// A created topic: partitions, settings, id, replication factor.
type Created = (u32, crate::storage::LogConfig, uuid::Uuid, u16);

/// Creates (or checks) one topic through the controller.
fn create_in_cluster(
    broker: &Broker,
    c: &ClusterHandle,
    topic: &CreatableTopic,
    partitions: u32,
    mut configs: Vec<(String, String)>,
    validate_only: bool,
) -> Result<Created, Refusal> {
    let rf = cluster_admin::replication_factor(c, Some(&topic.replication_factor.to_string()))
        .map_err(|e| refuse(&e))?;
    let local = |configs: &[(String, String)]| {
        let map = configs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>();
        cluster_admin::local_config(&broker.config.topic_defaults, &map)
            .map_err(|e| refuse(&BrokerError::InvalidConfig(e)))
    };
    if validate_only {
        validate_topic_name(&topic.name).map_err(|e| refuse(&e))?;
        let state = c.state();
        if state.topics.contains_key(topic.name.as_str()) {
            return Err(refuse(&BrokerError::TopicAlreadyExists(topic.name.to_string())));
        }
        let live = state.live_brokers().len();
        if usize::from(rf) > live {
            let why = format!("{live} live brokers");
            return Err(refuse(&BrokerError::InvalidReplicationFactor { asked: u32::from(rf), why }));
        }
        return Ok((partitions, local(&configs)?, uuid::Uuid::nil(), rf));
    }
    configs.push(("replication_factor".into(), rf.to_string()));
    let created = cluster_admin::create_topic(c, &broker.config, &topic.name, partitions, &configs);
    clustered::block_on(created).map_err(|e| refuse(&e))?;
    let state = c.state();
    let t = state
        .topics
        .get(topic.name.as_str())
        .ok_or_else(|| refuse(&BrokerError::UnknownTopic(topic.name.to_string())))?;
    let id = crate::reconcile::plan::local_topic_id(&c.settings.cluster_id, t.id);
    Ok((partitions, local(&configs)?, id, rf))
}

/// Answers DeleteTopics (by name; v6+ also by id).
///
/// # Errors
/// `Malformed` or `Encode`; per-topic failures are answered.
pub async fn delete(
    broker: Arc<Broker>,
    header: Header,
    mut body: Bytes,
) -> Result<Option<Chunks>, KafkaError> {
    let req: DeleteTopicsRequest = decode(&header, &mut body)?;
    blocking(header, move || {
        let mut wanted: Vec<(Option<String>, uuid::Uuid)> =
            req.topic_names.iter().map(|n| (Some(n.to_string()), uuid::Uuid::nil())).collect();
        wanted.extend(req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)));
        let mut response = DeleteTopicsResponse::default();
        for (name, id) in wanted {
            let mut out = DeletableTopicResult::default();
            let name = name
                .or_else(|| broker.topics.list().iter().find(|t| t.id() == id).map(|t| t.name.to_string()));
            out.topic_id = id;
            match name {
                Some(name) => {
                    if let Some(t) = broker.topics.get(&name) {
                        out.topic_id = t.id();
                    }
                    let deleted = match broker.cluster() {
                        Some(c) => clustered::block_on(cluster_admin::delete_topic(c, &name)),
                        None => broker.delete_topic(&name),
                    };
                    if let Err(e) = deleted {
                        (out.error_code, out.error_message) = refuse(&e);
                    }
                    out.name = Some(StrBytes::from_string(name).into());
                }
                None => out.error_code = ResponseError::UnknownTopicId.code(),
            }
            response.responses.push(out);
        }
        response
    })
    .await
}

/// Answers CreatePartitions (growth only; assignments are ignored: one
/// broker holds every partition).
///
/// # Errors
/// `Malformed` or `Encode`; per-topic failures are answered.
pub async fn create_partitions(
    broker: Arc<Broker>,
    header: Header,
    mut body: Bytes,
) -> Result<Option<Chunks>, KafkaError> {
    let req: CreatePartitionsRequest = decode(&header, &mut body)?;
    blocking(header, move || {
        let mut response = CreatePartitionsResponse::default();
        for topic in req.topics {
            let mut out = CreatePartitionsTopicResult::default();
            let count = u32::try_from(topic.count).unwrap_or(0);
            let result = match broker.cluster() {
                Some(c) => grow_in_cluster(&broker, c, &topic.name, count, req.validate_only),
                None => grow(&broker, &topic.name, count, req.validate_only),
            };
            if let Err(e) = result {
                (out.error_code, out.error_message) = refuse(&e);
            }
            out.name = topic.name;
            response.results.push(out);
        }
        response
    })
    .await
}

fn grow(broker: &Broker, name: &str, count: u32, validate_only: bool) -> Result<(), BrokerError> {
    match broker.topics.get(name) {
        None => Err(BrokerError::UnknownTopic(name.to_owned())),
        Some(t) if count <= t.partitions.len() as u32 => {
            Err(BrokerError::InvalidPartitions { count, max: broker.config.max_partitions })
        }
        Some(_) if validate_only => Ok(()),
        Some(_) => broker.add_partitions(name, count).map(|_| ()),
    }
}

fn grow_in_cluster(
    broker: &Broker,
    c: &ClusterHandle,
    name: &str,
    count: u32,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let state = c.state();
    match state.topics.get(name) {
        None => Err(BrokerError::UnknownTopic(name.to_owned())),
        Some(t) if count as usize <= t.partitions.len() || count > broker.config.max_partitions => {
            Err(BrokerError::InvalidPartitions { count, max: broker.config.max_partitions })
        }
        Some(_) if validate_only => Ok(()),
        Some(_) => {
            clustered::block_on(cluster_admin::add_partitions(c, &broker.config, name, count)).map(|_| ())
        }
    }
}
