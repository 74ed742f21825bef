//! Topic administration of a clustered broker: every change is a
//! controller command ([`ClusterHandle::propose`]), answered once the
//! reconcile loop applied it on this broker. The native and Kafka admin
//! handlers both call these.
//!
//! Settings are checked here against the local log's rules before they
//! are proposed, so the controller never holds a topic config a broker
//! cannot open. `replication_factor` and `min_insync_replicas` are topic
//! settings only the controller keeps ([`CLUSTER_KEYS`]).
//!
//! The internal offsets topic is never created, deleted or changed here
//! (`InvalidTopicName`): the reconcile loop creates it at bootstrap.

use std::collections::BTreeMap;

use super::ClusterHandle;
use crate::cluster::state::{Command, Outcome};
use crate::config::BrokerConfig;
use crate::errors::BrokerError;
use crate::groups::offsets_topic::refuse_client_change;
use crate::storage::LogConfig;
use crate::topics::validate_topic_name;

/// Topic config keys kept by the controller, not by the local log.
pub const CLUSTER_KEYS: [&str; 2] = ["replication_factor", "min_insync_replicas"];

/// `defaults` with `entries` laid over (the cluster-only keys left out).
///
/// # Errors
/// An entry the local log refuses, as a message.
pub fn local_config<'a>(
    defaults: &LogConfig,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<LogConfig, String> {
    let mut config = defaults.clone();
    for (k, v) in entries.into_iter().filter(|(k, _)| !CLUSTER_KEYS.contains(&k.as_str())) {
        config.set(k, v)?;
    }
    Ok(config)
}

/// Checks a whole topic config: the log's keys, and a
/// `min_insync_replicas` between 1 and the replication factor.
fn check_config(cfg: &BrokerConfig, config: &BTreeMap<String, String>, rf: u16) -> Result<(), BrokerError> {
    local_config(&cfg.topic_defaults, config).map_err(BrokerError::InvalidConfig)?;
    if let Some(v) = config.get("min_insync_replicas") {
        match v.trim().parse::<u16>() {
            Ok(n) if (1..=rf).contains(&n) => {}
            _ => {
                return Err(BrokerError::InvalidConfig(format!(
                    "min_insync_replicas `{v}`: must be between 1 and the replication factor {rf}"
                )))
            }
        }
    }
    Ok(())
}

/// The replication factor asked for: `asked` (from the request, or the
/// `replication_factor` config entry); none or -1 is the default.
///
/// # Errors
/// `InvalidReplicationFactor` for 0, a negative other than -1, or text
/// that is not a number.
pub fn replication_factor(c: &ClusterHandle, asked: Option<&str>) -> Result<u16, BrokerError> {
    let Some(text) = asked else { return Ok(c.settings.default_replication_factor) };
    match text.trim().parse::<i64>() {
        Ok(-1) => Ok(c.settings.default_replication_factor),
        Ok(n) if n >= 1 => Ok(u16::try_from(n).unwrap_or(u16::MAX)),
        _ => Err(BrokerError::InvalidReplicationFactor {
            asked: text.trim().parse().unwrap_or(0),
            why: "must be at least 1 (or -1 for the default)".into(),
        }),
    }
}

/// Creates a topic through the controller.
///
/// # Errors
/// `InvalidTopicName`, `InvalidPartitions`, `InvalidConfig`,
/// `InvalidReplicationFactor`, `TopicAlreadyExists`,
/// `ControllerNotAvailable`.
pub async fn create_topic(
    c: &ClusterHandle,
    cfg: &BrokerConfig,
    name: &str,
    partitions: u32,
    configs: &[(String, String)],
) -> Result<(), BrokerError> {
    validate_topic_name(name)?;
    refuse_client_change(name)?;
    if partitions == 0 || partitions > cfg.max_partitions {
        return Err(BrokerError::InvalidPartitions { count: partitions, max: cfg.max_partitions });
    }
    let mut config: BTreeMap<String, String> = configs.iter().cloned().collect();
    let rf = replication_factor(c, config.remove("replication_factor").as_deref())?;
    check_config(cfg, &config, rf)?;
    let cmd = Command::CreateTopic { name: name.to_owned(), partitions, replication_factor: rf, config };
    let wanted = name.to_owned();
    c.propose(cmd, move |s, out| match out {
        Outcome::TopicCreated { id } => s.topics.get(&wanted).is_some_and(|t| t.id == *id),
        _ => true,
    })
    .await
    .map(|_| ())
}

/// Deletes a topic through the controller.
///
/// # Errors
/// `UnknownTopic`, `ControllerNotAvailable`.
pub async fn delete_topic(c: &ClusterHandle, name: &str) -> Result<(), BrokerError> {
    refuse_client_change(name)?;
    let id = c.node()?.state().ok().and_then(|s| s.topics.get(name).map(|t| t.id));
    let wanted = name.to_owned();
    let cmd = Command::DeleteTopic { name: name.to_owned() };
    c.propose(cmd, move |s, _| s.topics.get(&wanted).map(|t| t.id) != id).await.map(|_| ())
}

/// Sets a topic's settings through the controller: `entries` laid over
/// its current ones, or replacing them all when `replace`.
///
/// # Errors
/// `UnknownTopic`, `InvalidConfig`, `ControllerNotAvailable`.
pub async fn alter_topic(
    c: &ClusterHandle,
    cfg: &BrokerConfig,
    name: &str,
    entries: &[(String, String)],
    replace: bool,
) -> Result<(), BrokerError> {
    refuse_client_change(name)?;
    let state = c.node()?.state().map_err(|e| BrokerError::ControllerNotAvailable(e.to_string()))?;
    let topic = state.topics.get(name).ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
    let mut config = if replace { BTreeMap::new() } else { topic.config.clone() };
    for (k, v) in entries {
        if ["replication_factor", "segment_preallocate_bytes", "index_interval_bytes"].contains(&k.as_str()) {
            return Err(BrokerError::InvalidConfig(format!("`{k}` cannot change on a live topic")));
        }
        config.insert(k.clone(), v.clone());
    }
    let rf = topic.partitions.first().map_or(1, |p| u16::try_from(p.replicas.len()).unwrap_or(u16::MAX));
    check_config(cfg, &config, rf)?;
    let (wanted, want_config) = (name.to_owned(), config.clone());
    let cmd = Command::AlterTopicConfig { name: name.to_owned(), config };
    c.propose(cmd, move |s, _| s.topics.get(&wanted).is_none_or(|t| t.config == want_config))
        .await
        .map(|_| ())
}

/// Grows a topic to `count` partitions through the controller; returns
/// the count before.
///
/// # Errors
/// `UnknownTopic`, `InvalidPartitions`, `InvalidConfig` (not a growth),
/// `InvalidReplicationFactor` (too few live brokers),
/// `ControllerNotAvailable`.
pub async fn add_partitions(
    c: &ClusterHandle,
    cfg: &BrokerConfig,
    name: &str,
    count: u32,
) -> Result<u32, BrokerError> {
    refuse_client_change(name)?;
    if count > cfg.max_partitions {
        return Err(BrokerError::InvalidPartitions { count, max: cfg.max_partitions });
    }
    let state = c.node()?.state().map_err(|e| BrokerError::ControllerNotAvailable(e.to_string()))?;
    let topic = state.topics.get(name).ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
    let old = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
    let wanted = name.to_owned();
    let cmd = Command::AddPartitions { name: name.to_owned(), count };
    c.propose(cmd, move |s, _| s.topics.get(&wanted).is_none_or(|t| t.partitions.len() >= count as usize))
        .await?;
    Ok(old)
}
