//! OffsetCommit (v2-v9) and OffsetFetch (v1-v9; v8+ batches groups) on the
//! native coordinator's committed offsets, so Kafka and native consumers
//! of a group see the same offsets.
//!
//! A commit from a KIP-848 member (a native member) goes to the native
//! coordinator with its member id, which checks that the member holds each
//! partition. Any other commit is checked against the classic group
//! (member and generation, or a "simple" commit while the group is empty)
//! and then written as a memberless commit (the native group has no
//! members while a classic group has: see `classic`). The write is durable
//! (fsynced, on a blocking thread) before it is answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::ResponseError;
use sluice_protocol::api::{self as native, CommitOffset, NO_OFFSET};
use sluice_protocol::TopicPartition;

use super::codec::{broker_code, sluice_code, text, At};
use super::{KafkaGroups, MalformedRequest};
use crate::broker::Broker;

/// Longest commit metadata (Kafka's `offset.metadata.max.bytes`).
const MAX_METADATA: usize = 4096;

/// Per partition: topic, partition, and the error code.
type Results = Vec<(String, i32, i16)>;

/// Answers OffsetCommit.
pub(super) async fn commit(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: OffsetCommitRequest = at.decode(body)?;
    let results = commit_offsets(groups, &req).await;
    let mut topics: BTreeMap<String, Vec<OffsetCommitResponsePartition>> = BTreeMap::new();
    for (topic, partition, code) in results {
        let p =
            OffsetCommitResponsePartition::default().with_partition_index(partition).with_error_code(code);
        topics.entry(topic).or_default().push(p);
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default().with_name(TopicName(text(name))).with_partitions(partitions)
        })
        .collect();
    at.encode(&OffsetCommitResponse::default().with_topics(topics))
}

/// Every partition of the request with `code`.
fn all_with(req: &OffsetCommitRequest, code: i16) -> Results {
    req.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, code)))
        .collect()
}

async fn commit_offsets(groups: &KafkaGroups, req: &OffsetCommitRequest) -> Results {
    let group = req.group_id.to_string();
    if crate::groups::validate_group(&group).is_err() {
        return all_with(req, ResponseError::InvalidGroupId.code());
    }
    if let Some(code) = groups.not_coordinator() {
        return all_with(req, code);
    }
    let broker = &groups.broker;
    let member = req.member_id.to_string();
    let native_member = !member.is_empty()
        && broker.groups.slot(&group).is_some_and(|slot| broker.groups.has_member(&slot, &member));
    let committer = if native_member {
        member
    } else {
        let instance = req.group_instance_id.as_ref().map(|s| s.as_str());
        if let Err(e) =
            groups.classic.check_commit(&group, &member, instance, req.generation_id_or_member_epoch)
        {
            return all_with(req, e.code());
        }
        String::new()
    };
    let mut results = Vec::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let refused = match (u32::try_from(p.partition_index), u64::try_from(p.committed_offset)) {
                (Err(_), _) => Some(ResponseError::UnknownTopicOrPartition),
                (_, Err(_)) => Some(ResponseError::InvalidCommitOffsetSize),
                _ if metadata.len() > MAX_METADATA => Some(ResponseError::OffsetMetadataTooLarge),
                (Ok(partition), Ok(offset)) => {
                    offsets.push(CommitOffset { topic: t.name.to_string(), partition, offset, metadata });
                    None
                }
            };
            if let Some(e) = refused {
                results.push((t.name.to_string(), p.partition_index, e.code()));
            }
        }
    }
    if offsets.is_empty() {
        return results;
    }
    let commit = native::OffsetCommitRequest { group, member_id: committer, member_epoch: 0, offsets };
    results.extend(write(Arc::clone(broker), commit).await);
    results
}

/// Writes the offsets durably, on a blocking thread.
async fn write(broker: Arc<Broker>, req: native::OffsetCommitRequest) -> Results {
    let asked: Results = req.offsets.iter().map(|o| (o.topic.clone(), o.partition as i32, 0)).collect();
    let written = tokio::task::spawn_blocking(move || {
        let max_groups = broker.config.max_groups;
        broker.groups.commit(&broker.topics, req, max_groups)
    })
    .await;
    match written {
        Ok(Ok(response)) => response
            .results
            .into_iter()
            .map(|r| (r.topic, r.partition as i32, sluice_code(r.error_code)))
            .collect(),
        Ok(Err(e)) => asked.into_iter().map(|(t, p, _)| (t, p, broker_code(&e))).collect(),
        Err(_) => {
            asked.into_iter().map(|(t, p, _)| (t, p, ResponseError::UnknownServerError.code())).collect()
        }
    }
}

/// One group's committed offsets: for the named partitions (`None`: all
/// the group has), as (topic, partition, offset or -1, metadata).
fn fetch_group(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, i32, i64, String)> {
    let partitions = match wanted {
        None => Vec::new(),
        Some(topics) => {
            let listed: Vec<TopicPartition> = topics
                .into_iter()
                .flat_map(|(topic, ps)| {
                    ps.into_iter().filter_map(move |p| {
                        Some(TopicPartition { topic: topic.clone(), partition: u32::try_from(p).ok()? })
                    })
                })
                .collect();
            if listed.is_empty() {
                return Vec::new();
            }
            listed
        }
    };
    let request = native::OffsetFetchRequest { group: group.to_owned(), partitions };
    // Not coordinating (a leadership change since `fetch` checked): no rows.
    let Ok(fetched) = broker.groups.fetch_offsets(&request) else { return Vec::new() };
    fetched
        .offsets
        .into_iter()
        .map(|o| {
            let offset = if o.offset == NO_OFFSET { -1 } else { o.offset as i64 };
            (o.topic, o.partition as i32, offset, o.metadata)
        })
        .collect()
}

/// A fetch refused as a whole (this broker does not coordinate): v8+ per
/// group, v2-v7 at the top, v1 (no top-level code) per named partition.
fn refused(at: At, req: &OffsetFetchRequest, code: i16) -> OffsetFetchResponse {
    if at.version >= 8 {
        let answers = req
            .groups
            .iter()
            .map(|g| {
                OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_error_code(code)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(answers);
    }
    if at.version >= 2 {
        return OffsetFetchResponse::default().with_error_code(code);
    }
    let topics = req.topics.iter().flatten().map(|t| {
        let partitions = t
            .partition_indexes
            .iter()
            .map(|p| {
                OffsetFetchResponsePartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(-1)
                    .with_error_code(code)
            })
            .collect();
        OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
    });
    OffsetFetchResponse::default().with_topics(topics.collect())
}

/// Groups (topic → partitions) the way both response layouts need.
fn by_topic(rows: Vec<(String, i32, i64, String)>) -> BTreeMap<String, Vec<(i32, i64, String)>> {
    let mut out: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
    for (topic, partition, offset, metadata) in rows {
        out.entry(topic).or_default().push((partition, offset, metadata));
    }
    out
}

/// Answers OffsetFetch.
pub(super) fn fetch(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: OffsetFetchRequest = at.decode(body)?;
    let broker = &groups.broker;
    if let Some(code) = groups.not_coordinator() {
        return at.encode(&refused(at, &req, code));
    }
    if at.version >= 8 {
        let answers =
            req.groups
                .iter()
                .map(|g| {
                    let wanted = g.topics.as_ref().map(|ts| {
                        ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect()
                    });
                    let topics = by_topic(fetch_group(broker, &g.group_id, wanted))
                        .into_iter()
                        .map(|(name, ps)| {
                            let partitions = ps
                                .into_iter()
                                .map(|(p, o, m)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_metadata(Some(text(m)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(text(name)))
                                .with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_topics(topics)
                })
                .collect();
        return at.encode(&OffsetFetchResponse::default().with_groups(answers));
    }
    let wanted = req
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
    let topics = by_topic(fetch_group(broker, &req.group_id, wanted))
        .into_iter()
        .map(|(name, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, o, m)| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(o)
                        .with_metadata(Some(text(m)))
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(TopicName(text(name))).with_partitions(partitions)
        })
        .collect();
    at.encode(&OffsetFetchResponse::default().with_topics(topics))
}
