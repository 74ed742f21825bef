//! The group coordinator: membership, sticky cooperative assignment and
//! durable committed offsets (DESIGN.md §7).
//!
//! A member joins and heartbeats with one api. The coordinator computes a
//! target assignment ([`assign::assign`]) whenever the group changes (a
//! member joins, leaves or expires, a subscription changes, a subscribed
//! topic appears or grows: the group epoch moves). Reconciliation is
//! cooperative: a partition leaving a member is first removed from that
//! member's assignment (it commits and reports it released), and only then
//! handed to its new owner; a member that does not release it within its
//! session timeout loses it anyway. Commits are accepted only from the
//! member that holds the partition (or from anyone while the group has no
//! members), written to the offsets log and fsynced before they are
//! acknowledged.

pub mod assign;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_protocol::api::{
    CommitOffset, DescribeGroupResponse, FetchedOffset, GroupHeartbeatRequest, GroupHeartbeatResponse,
    GroupListing, MemberDescription, OffsetChange, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, PartitionLag, PartitionResult, ResetOffsetsRequest, ResetSpec,
    TopicPartitions, LEAVE_EPOCH, NO_OFFSET,
};
use sluice_protocol::ErrorCode;

use crate::errors::BrokerError;
use crate::topics::Topics;
use assign::Tp;
use store::{Committed, OffsetKey, OffsetStore};

/// Shortest and longest session timeouts accepted.
const SESSION_TIMEOUT_RANGE: (u32, u32) = (100, 300_000);
/// Heartbeat interval handed to members while their group reconciles.
const RECONCILING_HEARTBEAT_MS: u32 = 50;

#[derive(Debug)]
struct Member {
    client_id: String,
    host: String,
    /// Moves when the member's assignment changes.
    epoch: u32,
    topics: BTreeSet<String>,
    session_timeout: Duration,
    last_seen: Instant,
    /// Partitions the member may consume.
    given: BTreeSet<Tp>,
    /// Partitions taken from it that it has not released yet, with the
    /// time after which they are reassigned anyway.
    revoking: BTreeMap<Tp, Instant>,
}

#[derive(Debug, Default)]
struct Group {
    epoch: u32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<Tp, String>,
    /// The group epoch `target` was computed at, and the partition counts.
    target_epoch: u32,
    partition_counts: BTreeMap<String, u32>,
    /// Committed offsets, with the offsets-log position that wrote each
    /// (a later write never loses to an earlier one).
    offsets: BTreeMap<Tp, (Committed, u64)>,
}

impl Group {
    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.reconciling() {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// A member still has to release a partition, or to be given one.
    fn reconciling(&self) -> bool {
        self.members.values().any(|m| !m.revoking.is_empty())
            || self.target.iter().any(|(tp, m)| self.members.get(m).is_some_and(|mm| !mm.given.contains(tp)))
    }

    fn remove_member(&mut self, id: &str) -> bool {
        let removed = self.members.remove(id).is_some();
        if removed {
            self.epoch += 1;
        }
        removed
    }

    fn expire(&mut self, now: Instant) {
        let dead: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            tracing::info!(member = %id, "group member expired");
            self.remove_member(&id);
        }
    }

    fn held_by_other(&self, tp: &Tp, me: &str) -> bool {
        self.members.iter().any(|(id, m)| id != me && (m.given.contains(tp) || m.revoking.contains_key(tp)))
    }

    fn refresh_target(&mut self, counts: BTreeMap<String, u32>) {
        if counts != self.partition_counts {
            self.partition_counts = counts;
            self.epoch += 1;
        }
        if self.target_epoch == self.epoch && !self.target.is_empty() {
            return;
        }
        let subscriptions = self.members.iter().map(|(id, m)| (id.clone(), m.topics.clone())).collect();
        let current = self
            .members
            .iter()
            .flat_map(|(id, m)| m.given.iter().map(move |tp| (tp.clone(), id.clone())))
            .collect();
        self.target = assign::assign(&subscriptions, &self.partition_counts, &current);
        self.target_epoch = self.epoch;
    }

    /// Moves member `id` toward its target: revokes first, then gives what
    /// no one else holds.
    fn reconcile(&mut self, id: &str, now: Instant) {
        let target: BTreeSet<Tp> =
            self.target.iter().filter(|(_, m)| *m == id).map(|(tp, _)| tp.clone()).collect();
        let Some(member) = self.members.get(id) else { return };
        let to_revoke: Vec<Tp> = member.given.iter().filter(|tp| !target.contains(*tp)).cloned().collect();
        let to_give: Vec<Tp> = target.iter().filter(|tp| !member.given.contains(*tp)).cloned().collect();
        let to_give: Vec<Tp> = to_give.into_iter().filter(|tp| !self.held_by_other(tp, id)).collect();
        let epoch = self.epoch;
        let Some(member) = self.members.get_mut(id) else { return };
        let deadline = now + member.session_timeout;
        let changed = !to_revoke.is_empty() || !to_give.is_empty();
        for tp in to_revoke {
            member.given.remove(&tp);
            member.revoking.insert(tp, deadline);
        }
        member.given.extend(to_give);
        if changed {
            member.epoch = epoch;
        }
    }
}

fn group_tps(tps: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions { topic: topic.to_owned(), partitions })
        .collect()
}

/// Checks a group name: 1 to 249 bytes.
pub fn validate_group(name: &str) -> Result<(), BrokerError> {
    if name.is_empty() || name.len() > 249 {
        return Err(BrokerError::Group(
            ErrorCode::InvalidGroupId,
            format!(
                "invalid group name `{}`: must be 1-249 bytes",
                name.chars().take(300).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// All groups and the offsets store.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    store: OffsetStore,
    next_member: AtomicU64,
}

impl Coordinator {
    /// Opens the offsets store and rebuilds the groups from it. Blocking.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, BrokerError> {
        let (store, offsets) = OffsetStore::open(data_dir)?;
        let mut groups: HashMap<String, Group> = HashMap::new();
        for ((group, topic, partition), committed) in offsets {
            groups.entry(group).or_default().offsets.insert((topic, partition), (committed, 0));
        }
        Ok(Self { groups: Mutex::new(groups), store, next_member: AtomicU64::new(1) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Partition counts of the topics some member subscribes to.
    fn counts(topics: &Topics, subscribed: &BTreeSet<String>) -> BTreeMap<String, u32> {
        subscribed
            .iter()
            .filter_map(|t| topics.get(t).map(|topic| (t.clone(), topic.partitions.len() as u32)))
            .collect()
    }

    /// Joins, heartbeats or leaves.
    pub fn heartbeat(
        &self,
        topics: &Topics,
        client_id: &str,
        req: GroupHeartbeatRequest,
    ) -> Result<GroupHeartbeatResponse, BrokerError> {
        validate_group(&req.group)?;
        let now = Instant::now();
        let mut groups = self.lock();
        let group = groups.entry(req.group.clone()).or_default();
        group.expire(now);
        if req.member_epoch == LEAVE_EPOCH {
            if group.remove_member(&req.member_id) {
                tracing::info!(group = %req.group, member = %req.member_id, "member left");
            }
            return Ok(GroupHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: LEAVE_EPOCH,
                ..Default::default()
            });
        }
        let timeout = Duration::from_millis(u64::from(
            req.session_timeout_ms.clamp(SESSION_TIMEOUT_RANGE.0, SESSION_TIMEOUT_RANGE.1),
        ));
        let topics_wanted: BTreeSet<String> = req.topics.iter().cloned().collect();
        let member_id = if req.member_id.is_empty() {
            let id = format!(
                "{}-{}",
                if client_id.is_empty() { "member" } else { client_id },
                self.next_member.fetch_add(1, Ordering::Relaxed)
            );
            group.members.insert(
                id.clone(),
                Member {
                    client_id: client_id.to_owned(),
                    host: req.client_host.clone(),
                    epoch: 0,
                    topics: topics_wanted.clone(),
                    session_timeout: timeout,
                    last_seen: now,
                    given: BTreeSet::new(),
                    revoking: BTreeMap::new(),
                },
            );
            group.epoch += 1;
            tracing::info!(group = %req.group, member = %id, "member joined");
            id
        } else if group.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else {
            return Err(BrokerError::Group(
                ErrorCode::UnknownMemberId,
                format!("group `{}` has no member `{}`: rejoin", req.group, req.member_id),
            ));
        };
        let owned: BTreeSet<Tp> =
            req.owned.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p))).collect();
        let mut subscription_changed = false;
        if let Some(m) = group.members.get_mut(&member_id) {
            m.last_seen = now;
            m.session_timeout = timeout;
            if m.topics != topics_wanted {
                m.topics = topics_wanted;
                subscription_changed = true;
            }
            // Released (or timed out) revocations free their partitions.
            m.revoking.retain(|tp, deadline| owned.contains(tp) && now < *deadline);
        }
        if subscription_changed {
            group.epoch += 1;
        }
        let subscribed: BTreeSet<String> =
            group.members.values().flat_map(|m| m.topics.iter().cloned()).collect();
        group.refresh_target(Self::counts(topics, &subscribed));
        // Release timed-out revocations of other members too.
        for m in group.members.values_mut() {
            m.revoking.retain(|_, deadline| now < *deadline);
        }
        group.reconcile(&member_id, now);
        let m =
            group.members.get(&member_id).ok_or_else(|| BrokerError::Internal("member vanished".into()))?;
        // Members only learn of revocations and new partitions when they
        // heartbeat: while the group reconciles they heartbeat quickly, so a
        // rebalance takes a few round trips, not a few heartbeat intervals.
        let steady = (m.session_timeout.as_millis() / 3).clamp(20, 3000) as u32;
        let interval = if group.reconciling() { steady.min(RECONCILING_HEARTBEAT_MS) } else { steady };
        Ok(GroupHeartbeatResponse {
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment: group_tps(&m.given),
        })
    }

    /// Removes expired members of every group (a periodic sweep).
    pub fn expire_all(&self) {
        let now = Instant::now();
        for group in self.lock().values_mut() {
            group.expire(now);
        }
    }

    /// Commits offsets durably. Blocking (waits for the fsync).
    pub fn commit(
        &self,
        topics: &Topics,
        req: OffsetCommitRequest,
    ) -> Result<OffsetCommitResponse, BrokerError> {
        validate_group(&req.group)?;
        let mut results = Vec::with_capacity(req.offsets.len());
        let mut accepted: Vec<(Tp, Committed)> = Vec::new();
        let sync_to = {
            let mut groups = self.lock();
            let group = groups.entry(req.group.clone()).or_default();
            group.expire(Instant::now());
            let member = if req.member_id.is_empty() {
                if !group.members.is_empty() {
                    return Err(BrokerError::Group(
                        ErrorCode::UnknownMemberId,
                        format!("group `{}` has active members: join it to commit", req.group),
                    ));
                }
                None
            } else {
                Some(group.members.get(&req.member_id).ok_or_else(|| {
                    BrokerError::Group(
                        ErrorCode::UnknownMemberId,
                        format!("group `{}` has no member `{}`: rejoin", req.group, req.member_id),
                    )
                })?)
            };
            for CommitOffset { topic, partition, offset, metadata } in req.offsets {
                let tp = (topic, partition);
                let code = match topics.get(&tp.0) {
                    None => ErrorCode::UnknownTopic,
                    Some(t) => match t.partitions.get(partition as usize) {
                        None => ErrorCode::UnknownPartition,
                        Some(_)
                            if member
                                .is_some_and(|m| !m.given.contains(&tp) && !m.revoking.contains_key(&tp)) =>
                        {
                            ErrorCode::StaleMemberEpoch
                        }
                        Some(p) if offset > p.log().log_end_offset() => ErrorCode::OffsetOutOfRange,
                        Some(_) => ErrorCode::None,
                    },
                };
                if code.is_ok() {
                    accepted.push((tp.clone(), Committed { offset, metadata }));
                }
                results.push(PartitionResult { topic: tp.0, partition: tp.1, error_code: code });
            }
            if accepted.is_empty() {
                return Ok(OffsetCommitResponse { results });
            }
            let entries: Vec<(OffsetKey, Option<Committed>)> = accepted
                .iter()
                .map(|(tp, c)| ((req.group.clone(), tp.0.clone(), tp.1), Some(c.clone())))
                .collect();
            self.store.append(&entries)?
        };
        self.store.sync_to(sync_to)?;
        let mut groups = self.lock();
        let group = groups.entry(req.group).or_default();
        for (tp, c) in accepted {
            let newer = group.offsets.get(&tp).is_none_or(|(_, at)| *at < sync_to);
            if newer {
                group.offsets.insert(tp, (c, sync_to));
            }
        }
        Ok(OffsetCommitResponse { results })
    }

    /// Reads committed offsets.
    pub fn fetch_offsets(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        let groups = self.lock();
        let group = groups.get(&req.group);
        let found = |tp: &Tp| group.and_then(|g| g.offsets.get(tp)).map(|(c, _)| c.clone());
        let offsets = if req.partitions.is_empty() {
            group
                .map(|g| g.offsets.iter().map(|(tp, (c, _))| (tp.clone(), Some(c.clone()))).collect())
                .unwrap_or_default()
        } else {
            req.partitions
                .iter()
                .map(|p| ((p.topic.clone(), p.partition), found(&(p.topic.clone(), p.partition))))
                .collect::<Vec<_>>()
        };
        OffsetFetchResponse {
            offsets: offsets
                .into_iter()
                .map(|((topic, partition), c)| FetchedOffset {
                    topic,
                    partition,
                    offset: c.as_ref().map_or(NO_OFFSET, |c| c.offset),
                    metadata: c.map(|c| c.metadata).unwrap_or_default(),
                    error_code: ErrorCode::None,
                })
                .collect(),
        }
    }

    /// Every group with members or offsets.
    pub fn list(&self) -> Vec<GroupListing> {
        let now = Instant::now();
        let mut groups = self.lock();
        let mut out: Vec<GroupListing> = groups
            .iter_mut()
            .filter_map(|(name, g)| {
                g.expire(now);
                (!g.members.is_empty() || !g.offsets.is_empty()).then(|| GroupListing {
                    group: name.clone(),
                    state: g.state().into(),
                    members: g.members.len() as u32,
                })
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// State, members, and per-partition committed offset, log end and lag.
    pub fn describe(&self, topics: &Topics, name: &str) -> Result<DescribeGroupResponse, BrokerError> {
        let mut groups = self.lock();
        let g = groups.get_mut(name).filter(|g| !g.members.is_empty() || !g.offsets.is_empty());
        let g =
            g.ok_or_else(|| BrokerError::Group(ErrorCode::UnknownGroup, format!("unknown group `{name}`")))?;
        g.expire(Instant::now());
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
    ) -> Result<Vec<OffsetChange>, BrokerError> {
        validate_group(&req.group)?;
        let topic = topics.get(&req.topic).ok_or_else(|| BrokerError::UnknownTopic(req.topic.clone()))?;
        let partitions: Vec<u32> = if req.partitions.is_empty() {
            (0..topic.partitions.len() as u32).collect()
        } else {
            req.partitions.clone()
        };
        let mut groups = self.lock();
        let group = groups.entry(req.group.clone()).or_default();
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
            let log = part.log();
            let (start, end) = (log.log_start_offset(), log.high_watermark());
            let previous = group.offsets.get(&(req.topic.clone(), p)).map(|(c, _)| c.offset);
            let new = match req.spec {
                ResetSpec::Earliest => start,
                ResetSpec::Latest => end,
                ResetSpec::Offset(o) => o.clamp(start, end),
                ResetSpec::Timestamp(ts) => log.offset_for_timestamp(ts)?.map_or(end, |(o, _)| o),
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
                    Some(Committed { offset: c.new, metadata: String::new() }),
                )
            })
            .collect();
        let sync_to = self.store.append(&entries)?;
        self.store.sync_to(sync_to)?;
        for c in &changes {
            group.offsets.insert(
                (c.topic.clone(), c.partition),
                (Committed { offset: c.new, metadata: String::new() }, sync_to),
            );
        }
        Ok(changes)
    }

    /// Deletes a group without members, and its offsets. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let mut groups = self.lock();
        let group = groups
            .get_mut(name)
            .ok_or_else(|| BrokerError::Group(ErrorCode::UnknownGroup, format!("unknown group `{name}`")))?;
        group.expire(Instant::now());
        if !group.members.is_empty() {
            return Err(BrokerError::Group(
                ErrorCode::GroupNotEmpty,
                format!("group `{name}` has active members"),
            ));
        }
        let entries: Vec<(OffsetKey, Option<Committed>)> =
            group.offsets.keys().map(|(t, p)| ((name.to_owned(), t.clone(), *p), None)).collect();
        if !entries.is_empty() {
            let sync_to = self.store.append(&entries)?;
            self.store.sync_to(sync_to)?;
        }
        groups.remove(name);
        Ok(())
    }

    /// After recovery: a committed offset past its partition's end (data
    /// lost with `fsync = never`) is moved back to the end, so consumers
    /// resume at the next record written instead of skipping it. Blocking.
    pub fn clamp_to_log_ends(&self, topics: &Topics) -> Result<(), BrokerError> {
        let mut groups = self.lock();
        let mut fixes: Vec<(OffsetKey, Option<Committed>)> = Vec::new();
        for (name, group) in groups.iter_mut() {
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

    /// Flushes and closes the offsets log. Blocking.
    pub fn close(&self) -> Result<(), BrokerError> {
        Ok(self.store.close()?)
    }
}
