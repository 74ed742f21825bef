//! Topic configs under Kafka's names, DescribeConfigs and
//! IncrementalAlterConfigs. Kafka's names map onto the topic config table
//! (`storage::config`), converting values where Kafka's differ: `-1`
//! (Kafka's "no limit") is Sluice's `0`, and `message.timestamp.type`'s
//! `CreateTime`/`LogAppendTime` are `create`/`log_append`. `fsync` is
//! Sluice's own (`always`, `interval:MS`, `never`).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::wire::{decode, encode, Chunks, Header};
use super::{error, KafkaError};
use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::storage::LogConfig;

/// A config key under its Kafka name.
struct Key {
    /// Kafka's name.
    kafka: &'static str,
    /// The topic config table's key.
    sluice: &'static str,
    /// How values differ.
    value: Value,
}

/// How a value is written on each side.
#[derive(Clone, Copy)]
enum Value {
    /// The same text.
    Same,
    /// A number where Kafka's `-1` is Sluice's `0` (no limit).
    Limit,
    /// `CreateTime`/`LogAppendTime` against `create`/`log_append`.
    TimestampType,
}

const KEYS: &[Key] = &[
    Key { kafka: "retention.ms", sluice: "retention_ms", value: Value::Limit },
    Key { kafka: "retention.bytes", sluice: "retention_bytes", value: Value::Limit },
    Key { kafka: "segment.bytes", sluice: "segment_bytes", value: Value::Same },
    Key { kafka: "segment.ms", sluice: "segment_ms", value: Value::Same },
    Key { kafka: "max.message.bytes", sluice: "max_message_bytes", value: Value::Same },
    Key { kafka: "message.timestamp.type", sluice: "message_timestamp", value: Value::TimestampType },
    Key { kafka: "min.insync.replicas", sluice: "min_insync_replicas", value: Value::Same },
    Key { kafka: "fsync", sluice: "fsync", value: Value::Same },
];

/// Kafka's resource type for a topic.
pub const TOPIC: i8 = 2;
/// Kafka's resource type for a broker.
const BROKER: i8 = 4;
/// `config_source`: set on the topic.
const TOPIC_CONFIG: i8 = 1;
/// `config_source`: the broker's default.
const DEFAULT_CONFIG: i8 = 5;

/// A Kafka config entry as a topic config table entry.
///
/// # Errors
/// `InvalidConfig` for a name Sluice does not have or a value it cannot
/// convert.
pub fn to_sluice(name: &str, value: &str) -> Result<(String, String), BrokerError> {
    let key = KEYS.iter().find(|k| k.kafka == name).ok_or_else(|| {
        let known: Vec<&str> = KEYS.iter().map(|k| k.kafka).collect();
        BrokerError::InvalidConfig(format!("unsupported config `{name}` (supported: {})", known.join(", ")))
    })?;
    let value = match (key.value, value) {
        (Value::Limit, "-1") => "0".to_owned(),
        (Value::TimestampType, "CreateTime") => "create".to_owned(),
        (Value::TimestampType, "LogAppendTime") => "log_append".to_owned(),
        (Value::TimestampType, other) => {
            return Err(BrokerError::InvalidConfig(format!(
                "{name}: `{other}` is not CreateTime or LogAppendTime"
            )))
        }
        (_, v) => v.to_owned(),
    };
    Ok((key.sluice.to_owned(), value))
}

/// Every Kafka-named entry of `config`.
pub fn entries(config: &LogConfig) -> Vec<(&'static str, String)> {
    let all = config.entries();
    KEYS.iter()
        .filter_map(|k| {
            let (_, v) = all.iter().find(|(name, _)| *name == k.sluice)?;
            let v = match (k.value, v.as_str()) {
                (Value::Limit, "0") => "-1".to_owned(),
                (Value::TimestampType, "create") => "CreateTime".to_owned(),
                (Value::TimestampType, "log_append") => "LogAppendTime".to_owned(),
                (_, v) => v.to_owned(),
            };
            Some((k.kafka, v))
        })
        .collect()
}

/// The entries the controller holds rather than the topic's log config
/// (`min.insync.replicas`), on a clustered broker.
fn cluster_entries(broker: &Broker, topic: &str) -> Option<(&'static str, String)> {
    let state = broker.cluster()?.state();
    let t = state.topics.get(topic)?;
    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
    Some(("min.insync.replicas", crate::reconcile::plan::min_insync_replicas(t, rf).to_string()))
}

/// Answers DescribeConfigs for topics and this broker (its topic defaults).
///
/// # Errors
/// `Malformed` or `Encode`; per-resource failures are answered.
pub fn describe(broker: &Broker, header: &Header, mut body: Bytes) -> Result<Chunks, KafkaError> {
    let req: DescribeConfigsRequest = decode(header, &mut body)?;
    let defaults = entries(&broker.config.topic_defaults);
    let mut response = DescribeConfigsResponse::default();
    for resource in req.resources {
        let mut result = DescribeConfigsResult::default();
        let current = match resource.resource_type {
            TOPIC => match broker.topics.get(&resource.resource_name) {
                Some(t) => {
                    let mut all = entries(&t.config());
                    all.extend(cluster_entries(broker, &resource.resource_name));
                    Ok(all)
                }
                None => Err(error::code(&BrokerError::UnknownTopic(resource.resource_name.to_string()))),
            },
            BROKER => Ok(defaults.clone()),
            _ => Err(ResponseError::InvalidRequest.code()),
        };
        match current {
            Ok(current) => {
                let wanted = resource.configuration_keys.as_ref();
                result.configs = current
                    .into_iter()
                    .filter(|(k, _)| wanted.is_none_or(|w| w.iter().any(|x| x.as_str() == *k)))
                    .map(|(k, v)| {
                        let default = defaults.iter().any(|(dk, dv)| *dk == k && *dv == v);
                        let mut c = DescribeConfigsResourceResult::default();
                        c.config_type = if v.parse::<i64>().is_ok() { 5 } else { 2 };
                        c.name = StrBytes::from_static_str(k);
                        c.value = Some(StrBytes::from_string(v));
                        c.config_source = if default || resource.resource_type == BROKER {
                            DEFAULT_CONFIG
                        } else {
                            TOPIC_CONFIG
                        };
                        c
                    })
                    .collect();
            }
            Err(code) => result.error_code = code,
        }
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name;
        response.results.push(result);
    }
    encode(header, &response)
}

/// `config_operation`: set the value.
const SET: i8 = 0;
/// `config_operation`: back to the broker's default.
const DELETE: i8 = 1;

/// Answers IncrementalAlterConfigs for topics (SET and DELETE; list
/// operations are refused: no Sluice config is a list).
///
/// # Errors
/// `Malformed` or `Encode`; per-resource failures are answered.
pub async fn alter(
    broker: Arc<Broker>,
    header: Header,
    mut body: Bytes,
) -> Result<Option<Chunks>, KafkaError> {
    let req: IncrementalAlterConfigsRequest = decode(&header, &mut body)?;
    super::wire::blocking(header, move || {
        let mut response = IncrementalAlterConfigsResponse::default();
        for resource in req.resources {
            let mut out = AlterConfigsResourceResponse::default();
            let changes: Result<Vec<(String, String)>, BrokerError> = resource
                .configs
                .iter()
                .map(|c| match c.config_operation {
                    SET => to_sluice(&c.name, c.value.as_deref().unwrap_or_default()),
                    DELETE => {
                        let (key, _) = to_sluice(&c.name, "0")?;
                        let default = broker.config.topic_defaults.entries();
                        let value = default.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v);
                        Ok((key, value.unwrap_or_default()))
                    }
                    op => Err(BrokerError::InvalidConfig(format!(
                        "{}: operation {op} is not supported",
                        &*c.name
                    ))),
                })
                .collect();
            let result = match (resource.resource_type, changes) {
                (TOPIC, Ok(changes)) => apply(&broker, &resource.resource_name, &changes, req.validate_only),
                (TOPIC, Err(e)) => Err(e),
                _ => Err(BrokerError::InvalidConfig("only topic configs can be altered".into())),
            };
            if let Err(e) = result {
                out.error_code = error::code(&e);
                out.error_message = Some(StrBytes::from_string(e.to_string()));
            }
            out.resource_type = resource.resource_type;
            out.resource_name = resource.resource_name;
            response.responses.push(out);
        }
        response
    })
    .await
}

/// Applies (or with `validate_only`, checks) config changes to a topic.
///
/// # Errors
/// `UnknownTopic`, `InvalidConfig`, or `Storage` when `topic.json` cannot
/// be written.
pub fn apply(
    broker: &Broker,
    topic: &str,
    changes: &[(String, String)],
    validate_only: bool,
) -> Result<(), BrokerError> {
    if let Some(c) = broker.cluster() {
        if validate_only {
            let state = c.state();
            let t = state.topics.get(topic).ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
            let mut config = crate::clustering::admin::local_config(&broker.config.topic_defaults, &t.config)
                .map_err(BrokerError::InvalidConfig)?;
            for (k, v) in changes {
                config.set(k, v).map_err(BrokerError::InvalidConfig)?;
            }
            return Ok(());
        }
        return super::clustered::block_on(crate::clustering::admin::alter_topic(
            c,
            &broker.config,
            topic,
            changes,
            false,
        ));
    }
    let Some(t) = broker.topics.get(topic) else {
        return Err(BrokerError::UnknownTopic(topic.to_owned()));
    };
    if validate_only {
        let mut config = t.config();
        for (k, v) in changes {
            config.set(k, v).map_err(BrokerError::InvalidConfig)?;
        }
        return Ok(());
    }
    let config = broker.topics.alter(topic, changes)?;
    tracing::info!(topic, ?config, "topic altered (kafka)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_map_both_ways() {
        assert_eq!(to_sluice("retention.ms", "-1").unwrap(), ("retention_ms".into(), "0".into()));
        assert_eq!(
            to_sluice("segment.bytes", "1048576").unwrap(),
            ("segment_bytes".into(), "1048576".into())
        );
        assert_eq!(
            to_sluice("message.timestamp.type", "LogAppendTime").unwrap(),
            ("message_timestamp".into(), "log_append".into())
        );
        assert!(to_sluice("message.timestamp.type", "Whenever").is_err());
        assert!(to_sluice("cleanup.policy", "compact").is_err());
        let mut config = LogConfig::default();
        config.set("retention_ms", "0").unwrap();
        let e = entries(&config);
        assert!(e.contains(&("retention.ms", "-1".to_owned())));
        assert!(e.contains(&("message.timestamp.type", "CreateTime".to_owned())));
        assert!(e.iter().any(|(k, _)| *k == "fsync"));
        // Every key but the one the controller holds has a table entry.
        assert_eq!(e.len(), KEYS.len() - 1);
        assert_eq!(
            to_sluice("min.insync.replicas", "2").unwrap(),
            ("min_insync_replicas".into(), "2".into())
        );
    }
}
