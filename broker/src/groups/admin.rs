//! Group administration on the coordinator: describe (lag), reset offsets,
//! delete, and the start-up clamp of committed offsets to the log ends.
//! Each works under one group's lock at a time and fsyncs outside it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use super::assign::Tp;
use super::group::{group_tps, Group};
use super::store::{Committed, OffsetKey};
use super::{offset_entries, validate_group, Coordinator, GroupError};
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::topics::{Topic, Topics};
use sluice_protocol::api::{
    DescribeGroupResponse, MemberDescription, OffsetChange, PartitionLag, ResetOffsetsRequest, ResetSpec,
    NO_OFFSET,
};

fn unknown(name: &str) -> BrokerError {
    GroupError::UnknownGroup { group: name.to_owned() }.into()
}

/// Refuses to change a group that has members.
fn ensure_empty(group: &Group, name: &str, action: &'static str) -> Result<(), GroupError> {
    match group.members.len() + group.classic_members {
        0 => Ok(()),
        members => Err(GroupError::NotEmpty { group: name.to_owned(), members, action }),
    }
}

/// The offset `spec` moves partition `part` to, from `previous` (the
/// committed offset, if any), within the log's range.
fn reset_target(part: &Partition, spec: &ResetSpec, previous: Option<u64>) -> Result<u64, BrokerError> {
    let (start, end) = (part.log().log_start_offset(), part.log().high_watermark());
    Ok(match *spec {
        ResetSpec::Earliest => start,
        ResetSpec::Latest => end,
        ResetSpec::Offset(o) => o.clamp(start, end),
        ResetSpec::Timestamp(ts) => part.log().offset_for_timestamp(ts)?.map_or(end, |(o, _)| o),
        ResetSpec::ShiftBy(n) => {
            let base = previous.unwrap_or(start) as i128 + i128::from(n);
            base.clamp(i128::from(start), i128::from(end)) as u64
        }
    })
}

/// The changes `req` makes to `group`'s offsets of `topic`: every partition
/// the request names (all when it names none).
fn plan_reset(
    group: &Group,
    topic: &Topic,
    req: &ResetOffsetsRequest,
) -> Result<Vec<OffsetChange>, BrokerError> {
    let count = topic.partitions.len() as u32;
    let partitions: Vec<u32> =
        if req.partitions.is_empty() { (0..count).collect() } else { req.partitions.clone() };
    partitions
        .into_iter()
        .map(|p| {
            let part = topic.partitions.get(p as usize).ok_or_else(|| BrokerError::UnknownPartition {
                topic: req.topic.clone(),
                partition: p,
                count,
            })?;
            let previous = group.offsets.get(&Tp::new(req.topic.clone(), p)).map(|(c, _)| c.offset);
            Ok(OffsetChange {
                topic: req.topic.clone(),
                partition: p,
                previous: previous.unwrap_or(NO_OFFSET),
                new: reset_target(part, &req.spec, previous)?,
            })
        })
        .collect()
}

impl Coordinator {
    /// State, members, and per-partition committed offset, log end and lag.
    ///
    /// # Errors
    /// `Group` (`UnknownGroup`) when the group has neither members nor
    /// offsets, or was deleted.
    pub fn describe(&self, topics: &Topics, name: &str) -> Result<DescribeGroupResponse, BrokerError> {
        let slot = self.slot(name).ok_or_else(|| unknown(name))?;
        let mut g = slot.lock();
        g.expire(Instant::now());
        if g.is_unused() || g.deleted {
            return Err(unknown(name));
        }
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                assignment: group_tps(&m.given),
            })
            .collect();
        // Every partition of every topic the group subscribes to or has
        // committed to (uncommitted partitions lag from the log start).
        let names: BTreeSet<String> = g
            .offsets
            .keys()
            .map(|tp| tp.topic.clone())
            .chain(g.members.values().flat_map(|m| m.topics.iter().cloned()))
            .collect();
        let mut tps: BTreeSet<Tp> = g.offsets.keys().cloned().collect();
        for t in names {
            if let Some(topic) = topics.get(&t) {
                tps.extend((0..topic.partitions.len() as u32).map(|p| Tp::new(t.clone(), p)));
            }
        }
        let offsets = tps
            .into_iter()
            .filter_map(|tp| {
                let partition = topics.get(&tp.topic)?.partitions.get(tp.partition as usize)?.clone();
                let end = partition.log().log_end_offset();
                let committed = g.offsets.get(&tp).map(|(c, _)| c.offset);
                let lag = end.saturating_sub(committed.unwrap_or_else(|| partition.log().log_start_offset()));
                Some(PartitionLag {
                    topic: tp.topic,
                    partition: tp.partition,
                    committed: committed.unwrap_or(NO_OFFSET),
                    log_end_offset: end,
                    lag,
                })
            })
            .collect();
        Ok(DescribeGroupResponse {
            group: name.to_owned(),
            state: g.state().into(),
            epoch: g.epoch,
            members,
            offsets,
        })
    }

    /// Moves committed offsets while the group has no members. Blocking.
    ///
    /// # Errors
    /// `UnknownTopic` or `UnknownPartition` for what the request names;
    /// `Group` when the name is invalid, the group cannot be created, was
    /// deleted meanwhile or has members; `Storage` when the log or the
    /// offsets log fails.
    pub fn reset_offsets(
        &self,
        topics: &Topics,
        req: &ResetOffsetsRequest,
        max_groups: usize,
    ) -> Result<Vec<OffsetChange>, BrokerError> {
        validate_group(&req.group)?;
        let topic = topics.get(&req.topic).ok_or_else(|| BrokerError::UnknownTopic(req.topic.clone()))?;
        let slot = self.slot_or_create(&req.group, max_groups)?;
        let mut group = slot.lock();
        if group.deleted {
            return Err(unknown(&req.group));
        }
        group.expire(Instant::now());
        ensure_empty(&group, &req.group, "resetting offsets")?;
        let changes = plan_reset(&group, &topic, req)?;
        if req.dry_run || changes.is_empty() {
            return Ok(changes);
        }
        let committed = |c: &OffsetChange| Committed {
            offset: c.new,
            metadata: String::new(),
            topic_id: Some(topic.id()),
        };
        let offsets: Vec<(Tp, Committed)> =
            changes.iter().map(|c| (Tp::new(c.topic.clone(), c.partition), committed(c))).collect();
        let pending = self.backend.append(&offset_entries(&req.group, &offsets))?;
        drop(group);
        let position = pending.position();
        self.backend.sync(pending)?;
        slot.lock().apply_synced(offsets, position);
        Ok(changes)
    }

    /// Deletes a group without members, and its offsets. Blocking.
    ///
    /// # Errors
    /// `Group` when the group is unknown or has members; `Storage` when
    /// the offsets log fails.
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let slot = self.slot(name).ok_or_else(|| unknown(name))?;
        let mut group = slot.lock();
        if group.deleted {
            return Err(unknown(name));
        }
        group.expire(Instant::now());
        ensure_empty(&group, name, "deleting it")?;
        let entries: Vec<(OffsetKey, Option<Committed>)> = group
            .offsets
            .keys()
            .map(|tp| ((name.to_owned(), tp.topic.clone(), tp.partition), None))
            .collect();
        // Tombstones are appended under the group's lock (so they precede
        // any later commit to a group of the same name) and synced after it.
        let pending = if entries.is_empty() { None } else { Some(self.backend.append(&entries)?) };
        group.deleted = true;
        group.offsets.clear();
        {
            let mut map = self.map();
            if map.get(name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                map.remove(name);
            }
        }
        drop(group);
        if let Some(pending) = pending {
            self.backend.sync(pending)?;
        }
        Ok(())
    }

    /// After recovery: a committed offset past its partition's end (data
    /// lost with `fsync = never`) is moved back to the end, so consumers
    /// resume at the next record written instead of skipping it. Blocking.
    ///
    /// # Errors
    /// `Storage` when the corrections cannot be written to the offsets log.
    pub fn clamp_to_log_ends(&self, topics: &Topics) -> Result<(), BrokerError> {
        let mut fixes: Vec<(OffsetKey, Option<Committed>)> = Vec::new();
        for (name, slot) in self.slots() {
            let mut group = slot.lock();
            for (Tp { topic, partition }, (committed, _)) in group.offsets.iter_mut() {
                let Some(end) = topics
                    .get(topic)
                    .and_then(|t| t.partitions.get(*partition as usize).map(|p| p.log().log_end_offset()))
                else {
                    continue;
                };
                if committed.offset > end {
                    tracing::warn!(group = %name, %topic, partition, committed = committed.offset, log_end_offset = end, "committed offset past the log end after recovery; moved back");
                    committed.offset = end;
                    fixes.push(((name.clone(), topic.clone(), *partition), Some(committed.clone())));
                }
            }
        }
        if !fixes.is_empty() {
            let pending = self.backend.append(&fixes)?;
            self.backend.sync(pending)?;
        }
        Ok(())
    }
}
