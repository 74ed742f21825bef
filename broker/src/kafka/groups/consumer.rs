//! KIP-848's ConsumerGroupHeartbeat (v0-v1) on the native coordinator: a
//! Kafka "consumer" protocol member is a native member, so the broker
//! computes the assignment (sticky, revoke before reassign) exactly as for
//! native consumers, and both kinds may share a group.
//!
//! Mapping: Kafka's member epoch is the native member epoch plus one (a
//! Kafka epoch of 0 means "join", and a native member that was never
//! assigned anything has epoch 0); -1 leaves, -2 (static leave) too. Kafka
//! sends the subscription and the owned partitions only when they change
//! (null otherwise): the last ones sent are kept per member here. Owned
//! partitions and the assignment name topics by id. A v1 member chooses its
//! own id; a v0 member is named by the coordinator. Subscription by regex
//! is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::ResponseError;
use sluice_protocol::api::{self as native, LEAVE_EPOCH};
use uuid::Uuid;

use super::codec::{broker_code, text, At};
use super::{KafkaGroups, MalformedRequest};
use crate::broker::Broker;
use crate::errors::BrokerError;

/// KIP-848 members' session timeout (Kafka's
/// `group.consumer.session.timeout.ms`).
const SESSION_TIMEOUT_MS: u32 = 45_000;
/// Members whose subscription is remembered; past it, entries of members
/// the coordinator no longer has are dropped.
const MAX_REMEMBERED: usize = 100_000;

/// What a member last sent of what Kafka sends only on change.
#[derive(Debug, Clone, Default)]
pub(super) struct Remembered {
    topics: Vec<String>,
    owned: Vec<sluice_protocol::TopicPartitions>,
}

/// (group, member id) → what it last sent.
pub(super) type Memory = std::sync::Mutex<HashMap<(String, String), Remembered>>;

fn error(code: ResponseError, message: &str) -> ConsumerGroupHeartbeatResponse {
    tracing::info!(?code, message, "ConsumerGroupHeartbeat refused");
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(text(message)))
}

/// Answers ConsumerGroupHeartbeat.
pub(super) async fn heartbeat(
    groups: &KafkaGroups,
    at: At,
    body: Bytes,
) -> Result<BytesMut, MalformedRequest> {
    let req: ConsumerGroupHeartbeatRequest = at.decode(body)?;
    let response = match beat(groups, &req).await {
        Ok(response) => response,
        Err(e) => {
            let message = e.to_string();
            tracing::info!(error = %message, "ConsumerGroupHeartbeat refused");
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(broker_code(&e))
                .with_error_message(Some(text(message)))
        }
    };
    at.encode(&response)
}

async fn beat(
    groups: &KafkaGroups,
    req: &ConsumerGroupHeartbeatRequest,
) -> Result<ConsumerGroupHeartbeatResponse, BrokerError> {
    let broker = &groups.broker;
    let group = req.group_id.to_string();
    crate::groups::validate_group(&group)?;
    if req.subscribed_topic_regex.as_ref().is_some_and(|r| !r.is_empty()) {
        return Ok(error(ResponseError::InvalidRequest, "subscription by regex is not supported"));
    }
    let member = req.member_id.to_string();
    if req.member_epoch < 0 {
        return Ok(leave(groups, &group, member, req.member_epoch).await);
    }
    let slot = broker.groups.slot_or_create(&group, broker.config.max_groups)?;
    let _turn = slot.turn().await;
    let known = !member.is_empty() && broker.groups.has_member(&slot, &member);
    if !known && req.member_epoch > 0 {
        return Ok(error(ResponseError::UnknownMemberId, "unknown member: rejoin"));
    }
    let remembered = remember(groups, &group, &member, req);
    if !known && req.subscribed_topic_names.is_none() {
        return Ok(error(ResponseError::InvalidRequest, "a joining member must send its subscription"));
    }
    let join_id = (!known && !member.is_empty()).then(|| member.clone());
    let native_req = native::GroupHeartbeatRequest {
        group: group.clone(),
        member_id: if known { member.clone() } else { String::new() },
        member_epoch: req.member_epoch.saturating_sub(1).max(0) as u32,
        client_host: String::new(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        topics: remembered.topics.clone(),
        owned: remembered.owned.clone(),
    };
    let b = Arc::clone(broker);
    let answer = tokio::task::spawn_blocking(move || {
        b.groups.heartbeat(&slot, &b.topics, "kafka", native_req, join_id)
    })
    .await
    .map_err(|e| BrokerError::Internal(e.to_string()))??;
    if answer.member_id != member {
        let mut memory = lock(&groups.kip848);
        memory.remove(&(group.clone(), member));
        memory.insert((group, answer.member_id.clone()), remembered);
    }
    Ok(ConsumerGroupHeartbeatResponse::default()
        .with_error_message(None)
        .with_member_id(Some(text(answer.member_id)))
        .with_member_epoch(answer.member_epoch as i32 + 1)
        .with_heartbeat_interval_ms(answer.heartbeat_interval_ms as i32)
        .with_assignment(Some(assignment(broker, &answer.assignment))))
}

fn lock(memory: &Memory) -> std::sync::MutexGuard<'_, HashMap<(String, String), Remembered>> {
    memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes what the request sent (subscription, owned partitions) and
/// returns the member's whole view.
fn remember(
    groups: &KafkaGroups,
    group: &str,
    member: &str,
    req: &ConsumerGroupHeartbeatRequest,
) -> Remembered {
    let mut memory = lock(&groups.kip848);
    if memory.len() >= MAX_REMEMBERED {
        memory.retain(|(g, m), _| {
            groups.broker.groups.slot(g).is_some_and(|s| groups.broker.groups.has_member(&s, m))
        });
    }
    let entry = memory.entry((group.to_owned(), member.to_owned())).or_default();
    if let Some(topics) = &req.subscribed_topic_names {
        entry.topics = topics.iter().map(|t| t.to_string()).collect();
    }
    if let Some(owned) = &req.topic_partitions {
        let names = topic_names(&groups.broker);
        entry.owned = owned
            .iter()
            .filter_map(|t| {
                let topic = names.get(&t.topic_id)?.clone();
                let partitions = t.partitions.iter().filter_map(|p| u32::try_from(*p).ok()).collect();
                Some(sluice_protocol::TopicPartitions { topic, partitions })
            })
            .collect();
    }
    entry.clone()
}

/// Topic ids to names.
fn topic_names(broker: &Broker) -> HashMap<Uuid, String> {
    broker.topics.list().iter().map(|t| (t.id(), t.name.to_string())).collect()
}

/// The native assignment with topic ids.
fn assignment(broker: &Broker, given: &[sluice_protocol::TopicPartitions]) -> Assignment {
    let mut by_id: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for t in given {
        if let Some(topic) = broker.topics.get(&t.topic) {
            by_id.entry(topic.id()).or_default().extend(t.partitions.iter().map(|p| *p as i32));
        }
    }
    let topic_partitions = by_id
        .into_iter()
        .map(|(topic_id, partitions)| {
            TopicPartitions::default().with_topic_id(topic_id).with_partitions(partitions)
        })
        .collect();
    Assignment::default().with_topic_partitions(topic_partitions)
}

/// A leave (epoch -1, or -2 for a static member).
async fn leave(
    groups: &KafkaGroups,
    group: &str,
    member: String,
    epoch: i32,
) -> ConsumerGroupHeartbeatResponse {
    lock(&groups.kip848).remove(&(group.to_owned(), member.clone()));
    let req = native::GroupHeartbeatRequest {
        group: group.to_owned(),
        member_id: member.clone(),
        member_epoch: LEAVE_EPOCH,
        client_host: String::new(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        topics: Vec::new(),
        owned: Vec::new(),
    };
    if let Some(slot) = groups.broker.groups.slot(group) {
        let _turn = slot.turn().await;
        let b = Arc::clone(&groups.broker);
        let _ = tokio::task::spawn_blocking(move || b.groups.heartbeat(&slot, &b.topics, "kafka", req, None))
            .await;
    }
    ConsumerGroupHeartbeatResponse::default()
        .with_error_message(None)
        .with_member_id(Some(text(member)))
        .with_member_epoch(epoch)
}
