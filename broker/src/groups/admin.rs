//! Group administration on the coordinator: describe (lag), reset offsets,
//! delete, and the start-up clamp of committed offsets to the log ends.
//! Each works under one group's lock at a time and fsyncs outside it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use sluice_protocol::api::{
    DescribeGroupResponse, MemberDescription, OffsetChange, PartitionLag, ResetOffsetsRequest, ResetSpec,
    NO_OFFSET,
};
use sluice_protocol::ErrorCode;

use super::assign::Tp;
use super::group::group_tps;
use super::store::{Committed, OffsetKey};
use super::{validate_group, Coordinator};
use crate::errors::BrokerError;
use crate::topics::Topics;

fn unknown(name: &str) -> BrokerError {
    BrokerError::Group(ErrorCode::UnknownGroup, format!("unknown group `{name}`"))
}

impl Coordinator {
    /// State, members, and per-partition committed offset, log end and lag.
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
            .map(|(t, _)| t.clone())
            .chain(g.members.values().flat_map(|m| m.topics.iter().cloned()))
            .collect();
        let mut tps: BTreeSet<Tp> = g.offsets.keys().cloned().collect();
        for t in names {
            if let Some(topic) = topics.get(&t) {
                tps.extend((0..topic.partitions.len() as u32).map(|p| (t.clone(), p)));
            }
        }
        let offsets = tps
            .into_iter()
            .filter_map(|tp| {
                let partition = topics.get(&tp.0)?.partitions.get(tp.1 as usize)?.clone();
                let end = partition.log().log_end_offset();
                let committed = g.offsets.get(&tp).map(|(c, _)| c.offset);
                let lag = end.saturating_sub(committed.unwrap_or_else(|| partition.log().log_start_offset()));
                Some(PartitionLag {
                    topic: tp.0,
                    partition: tp.1,
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
    pub fn reset_offsets(
        &self,
        topics: &Topics,
        req: &ResetOffsetsRequest,
        max_groups: usize,
    ) -> Result<Vec<OffsetChange>, BrokerError> {
        validate_group(&req.group)?;
        let topic = topics.get(&req.topic).ok_or_else(|| BrokerError::UnknownTopic(req.topic.clone()))?;
        let partitions: Vec<u32> = if req.partitions.is_empty() {
            (0..topic.partitions.len() as u32).collect()
        } else {
            req.partitions.clone()
        };
        let slot = self.slot_or_create(&req.group, max_groups)?;
        let mut group = slot.lock();
        if group.deleted {
            return Err(unknown(&req.group));
        }
        group.expire(Instant::now());
        if !group.members.is_empty() {
            return Err(BrokerError::Group(
                ErrorCode::GroupNotEmpty,
                format!(
                    "group `{}` has {} active member(s): stop its consumers before resetting offsets",
                    req.group,
                    group.members.len()
                ),
            ));
        }
        let mut changes = Vec::new();
        for p in partitions {
            let part = topic.partitions.get(p as usize).ok_or_else(|| BrokerError::UnknownPartition {
                topic: req.topic.clone(),
                partition: p,
                count: topic.partitions.len() as u32,
            })?;
            let (start, end) = (part.log().log_start_offset(), part.log().high_watermark());
            let previous = group.offsets.get(&(req.topic.clone(), p)).map(|(c, _)| c.offset);
            let new = match req.spec {
                ResetSpec::Earliest => start,
                ResetSpec::Latest => end,
                ResetSpec::Offset(o) => o.clamp(start, end),
                ResetSpec::Timestamp(ts) => part.log().offset_for_timestamp(ts)?.map_or(end, |(o, _)| o),
                ResetSpec::ShiftBy(n) => {
                    let base = previous.unwrap_or(start) as i128 + i128::from(n);
                    base.clamp(i128::from(start), i128::from(end)) as u64
                }
            };
            changes.push(OffsetChange {
                topic: req.topic.clone(),
                partition: p,
                previous: previous.unwrap_or(NO_OFFSET),
                new,
            });
        }
        if req.dry_run || changes.is_empty() {
            return Ok(changes);
        }
        let entries: Vec<(OffsetKey, Option<Committed>)> = changes
            .iter()
            .map(|c| {
                (
                    (req.group.clone(), c.topic.clone(), c.partition),
                    Some(Committed { offset: c.new, metadata: String::new(), topic_id: Some(topic.id()) }),
                )
            })
            .collect();
        let sync_to = self.store.append(&entries)?;
        drop(group);
        self.store.sync_to(sync_to)?;
        let mut group = slot.lock();
        for c in &changes {
            let tp = (c.topic.clone(), c.partition);
            if group.offsets.get(&tp).is_none_or(|(_, at)| *at < sync_to) {
                group.offsets.insert(
                    tp,
                    (
                        Committed { offset: c.new, metadata: String::new(), topic_id: Some(topic.id()) },
                        sync_to,
                    ),
                );
            }
        }
        Ok(changes)
    }

    /// Deletes a group without members, and its offsets. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let slot = self.slot(name).ok_or_else(|| unknown(name))?;
        let mut group = slot.lock();
        if group.deleted {
            return Err(unknown(name));
        }
        group.expire(Instant::now());
        if !group.members.is_empty() {
            return Err(BrokerError::Group(
                ErrorCode::GroupNotEmpty,
                format!("group `{name}` has active members"),
            ));
        }
        let entries: Vec<(OffsetKey, Option<Committed>)> =
            group.offsets.keys().map(|(t, p)| ((name.to_owned(), t.clone(), *p), None)).collect();
        // Tombstones are appended under the group's lock (so they precede
        // any later commit to a group of the same name) and synced after it.
        let sync_to = if entries.is_empty() { None } else { Some(self.store.append(&entries)?) };
        group.deleted = true;
        group.offsets.clear();
        {
            let mut map = self.map();
            if map.get(name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                map.remove(name);
            }
        }
        drop(group);
        if let Some(sync_to) = sync_to {
            self.store.sync_to(sync_to)?;
        }
        Ok(())
    }

    /// After recovery: a committed offset past its partition's end (data
    /// lost with `fsync = never`) is moved back to the end, so consumers
    /// resume at the next record written instead of skipping it. Blocking.
    pub fn clamp_to_log_ends(&self, topics: &Topics) -> Result<(), BrokerError> {
        let mut fixes: Vec<(OffsetKey, Option<Committed>)> = Vec::new();
        for (name, slot) in self.slots() {
            let mut group = slot.lock();
            for ((topic, partition), (committed, _)) in group.offsets.iter_mut() {
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
            let end = self.store.append(&fixes)?;
            self.store.sync_to(end)?;
        }
        Ok(())
    }
}
