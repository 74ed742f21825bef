//! The reconcile decisions, pure: from the controller state and what this
//! broker holds locally, the topic changes to make ([`plan_topics`]) and
//! each partition's [`Role`] ([`role_for`]). No I/O, no clock.
//!
//! Rules:
//! - a controller topic with at least one partition replicated on this
//!   node exists locally with the same partition count and settings, its
//!   local id derived from the controller's topic id
//!   ([`local_topic_id`]), so a re-created topic (new controller id) is a
//!   new local topic;
//! - a local topic created by the controller (a derived id) that the
//!   controller no longer has, or has under another id, is deleted; a
//!   local topic with any other id (made before this broker joined a
//!   cluster) is never touched;
//! - a follower's leader address comes from this node's own `--peers`.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::cluster::state::{BrokerId, ControllerState, PartitionState, TopicState};
use crate::replication::Role;
use crate::storage::LogConfig;

/// What this broker holds of a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTopic {
    /// Its local id.
    pub id: Uuid,
    /// Its partition count.
    pub partitions: u32,
    /// Its settings.
    pub config: LogConfig,
}

/// One change to the local topics.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete the local topic.
    Delete {
        /// Its name.
        name: String,
    },
    /// Create it with this id, partition count and settings.
    Create {
        /// Its name.
        name: String,
        /// Its local id.
        id: Uuid,
        /// Partition count.
        partitions: u32,
        /// Settings.
        config: LogConfig,
    },
    /// Grow it to `count` partitions.
    Grow {
        /// Its name.
        name: String,
        /// The new count.
        count: u32,
    },
    /// Replace its settings.
    Alter {
        /// Its name.
        name: String,
        /// Every setting.
        config: LogConfig,
    },
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The local id of the controller's topic `topic_id` in cluster
/// `cluster_id`: the same on every broker, different for every topic.
pub fn local_topic_id(cluster_id: &str, topic_id: u64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv1a(cluster_id).to_be_bytes());
    bytes[8..].copy_from_slice(&topic_id.to_be_bytes());
    // A version 8 (custom) UUID of the RFC 9562 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// Whether `id` is a local id the controller of `cluster_id` made.
pub fn is_controller_topic(cluster_id: &str, id: Uuid) -> bool {
    let probe = local_topic_id(cluster_id, 0);
    id.get_version_num() == 8 && id.as_bytes()[..6] == probe.as_bytes()[..6]
}

/// The local settings of a controller topic: `defaults` with its entries
/// laid over (the cluster-only keys left out).
///
/// # Errors
/// An entry the local log refuses, as a message.
pub fn local_config(defaults: &LogConfig, topic: &TopicState) -> Result<LogConfig, String> {
    crate::clustering::admin::local_config(defaults, &topic.config)
}

/// The topic changes that make `local` match `state` on node `me`.
/// Deletions come first (a re-created name is deleted, then created).
pub fn plan_topics(
    state: &ControllerState,
    me: BrokerId,
    cluster_id: &str,
    defaults: &LogConfig,
    local: &BTreeMap<String, LocalTopic>,
) -> Vec<Action> {
    let mut deletes = Vec::new();
    let mut rest = Vec::new();
    for (name, have) in local {
        let wanted = state.topics.get(name).map(|t| local_topic_id(cluster_id, t.id));
        if wanted != Some(have.id) && is_controller_topic(cluster_id, have.id) {
            deletes.push(Action::Delete { name: name.clone() });
        }
    }
    for (name, topic) in &state.topics {
        if !topic.partitions.iter().any(|p| p.replicas.contains(&me)) {
            continue;
        }
        let Ok(config) = local_config(defaults, topic) else { continue };
        let id = local_topic_id(cluster_id, topic.id);
        let count = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        match local.get(name) {
            Some(have) if have.id == id => {
                if have.partitions < count {
                    rest.push(Action::Grow { name: name.clone(), count });
                }
                if have.config != config {
                    rest.push(Action::Alter { name: name.clone(), config });
                }
            }
            Some(have) if !is_controller_topic(cluster_id, have.id) => {} // not ours: left alone
            _ => rest.push(Action::Create { name: name.clone(), id, partitions: count, config }),
        }
    }
    deletes.extend(rest);
    deletes
}

/// `min_insync_replicas` of a topic: its setting, else min(2, replicas).
pub fn min_insync_replicas(topic: &TopicState, replicas: usize) -> usize {
    topic.config.get("min_insync_replicas").and_then(|v| v.parse().ok()).unwrap_or_else(|| replicas.min(2))
}

/// The role on node `me` of a partition in `state`; `peers` is this
/// node's `--peers` map (a follower fetches from the address there).
pub fn role_for(
    p: &PartitionState,
    min_isr: usize,
    me: BrokerId,
    peer_addr: impl Fn(BrokerId) -> Option<String>,
) -> Role {
    match p.leader {
        Some(l) if l == me => Role::Leader {
            epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            min_insync_replicas: min_isr,
        },
        Some(l) if p.replicas.contains(&me) => match peer_addr(l) {
            Some(addr) => Role::Follower { epoch: p.leader_epoch, leader: l, leader_peer_addr: addr },
            None => Role::Offline { epoch: p.leader_epoch },
        },
        _ => Role::Offline { epoch: p.leader_epoch },
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
