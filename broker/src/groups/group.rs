//! One consumer group's in-memory state and its state machine: members
//! join, heartbeat and leave ([`Group::heartbeat`]), expire after their
//! session timeout, and are moved toward the target assignment by
//! cooperative reconciliation (module docs of `groups` describe the
//! protocol). The state machine is pure: the clock (`now`), the partition
//! counts and new member ids are inputs, so it is unit-tested without a
//! broker. A `Group` is only touched under its own lock (`groups::Slot`),
//! never under the coordinator's map lock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sluice_protocol::api::{GroupHeartbeatRequest, GroupHeartbeatResponse, TopicPartitions, LEAVE_EPOCH};

use super::assign::{self, Tp};
use super::store::Committed;
use super::{GroupError, PartitionCounts};

/// Shortest and longest session timeouts accepted.
const SESSION_TIMEOUT_RANGE: (u32, u32) = (100, 300_000);
/// Heartbeat interval handed to members while their group reconciles.
const RECONCILING_HEARTBEAT_MS: u32 = 50;

/// The session timeout a member asked for, within the accepted range.
fn session_timeout(asked_ms: u32) -> Duration {
    Duration::from_millis(u64::from(asked_ms.clamp(SESSION_TIMEOUT_RANGE.0, SESSION_TIMEOUT_RANGE.1)))
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) client_id: String,
    pub(super) host: String,
    /// Moves when the member's assignment changes.
    pub(super) epoch: u32,
    pub(super) topics: BTreeSet<String>,
    pub(super) session_timeout: Duration,
    pub(super) last_seen: Instant,
    /// Partitions the member may consume.
    pub(super) given: BTreeSet<Tp>,
    /// Partitions taken from it that it has not released yet, with the
    /// time after which they are reassigned anyway.
    pub(super) revoking: BTreeMap<Tp, Instant>,
}

impl Member {
    /// The member may consume (or still commit) `tp`: given to it, or
    /// revoked and not yet released.
    pub(super) fn holds(&self, tp: &Tp) -> bool {
        self.given.contains(tp) || self.revoking.contains_key(tp)
    }

    /// Whether member `id` (this one) of `group` may commit `tp`.
    ///
    /// # Errors
    /// `StaleMemberEpoch` when it does not hold `tp`.
    pub(super) fn check_holds(&self, group: &str, id: &str, tp: &Tp) -> Result<(), GroupError> {
        if self.holds(tp) {
            return Ok(());
        }
        Err(GroupError::StaleMemberEpoch {
            group: group.to_owned(),
            member: id.to_owned(),
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) epoch: u32,
    pub(super) members: BTreeMap<String, Member>,
    pub(super) target: BTreeMap<Tp, String>,
    /// The group epoch `target` was computed at, and the partition counts.
    pub(super) target_epoch: u32,
    pub(super) partition_counts: BTreeMap<String, u32>,
    /// Committed offsets, with the offsets-log position that wrote each
    /// (a later write never loses to an earlier one).
    pub(super) offsets: BTreeMap<Tp, (Committed, u64)>,
    /// Deleted and removed from the coordinator's map: whoever still holds
    /// it must look the group up again.
    pub(super) deleted: bool,
    /// Members of the Kafka classic group of this name (the Kafka listener
    /// keeps their state): while any, native members may not join.
    pub(super) classic_members: usize,
}

impl Group {
    pub(super) fn state(&self) -> &'static str {
        if self.members.is_empty() && self.classic_members > 0 {
            // Kafka classic members: their state is the Kafka listener's.
            "Classic"
        } else if self.members.is_empty() {
            "Empty"
        } else if self.reconciling() {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Neither members nor committed offsets: the group can be dropped.
    pub(super) fn is_unused(&self) -> bool {
        self.members.is_empty() && self.offsets.is_empty() && self.classic_members == 0
    }

    /// A member still has to release a partition, or to be given one.
    pub(super) fn reconciling(&self) -> bool {
        self.members.values().any(|m| !m.revoking.is_empty())
            || self.target.iter().any(|(tp, m)| self.members.get(m).is_some_and(|mm| !mm.given.contains(tp)))
    }

    pub(super) fn remove_member(&mut self, id: &str) -> bool {
        let removed = self.members.remove(id).is_some();
        if removed {
            self.epoch += 1;
        }
        removed
    }

    pub(super) fn expire(&mut self, now: Instant) {
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

    pub(super) fn held_by_other(&self, tp: &Tp, me: &str) -> bool {
        self.members.iter().any(|(id, m)| id != me && m.holds(tp))
    }

    /// Records offsets written to the offsets log up to `sync_to` (and
    /// synced): an offset written later by another request is kept.
    pub(super) fn apply_synced(&mut self, offsets: Vec<(Tp, Committed)>, sync_to: u64) {
        for (tp, c) in offsets {
            if self.offsets.get(&tp).is_none_or(|(_, at)| *at < sync_to) {
                self.offsets.insert(tp, (c, sync_to));
            }
        }
    }

    /// The member a commit comes from: `None` for an empty id, which only
    /// a group without members accepts.
    ///
    /// # Errors
    /// `MemberRequired` for an empty id while the group has members,
    /// `UnknownMember` for an id that is not a member's.
    pub(super) fn committer(
        &self,
        group: &str,
        member_id: &str,
    ) -> Result<Option<(&String, &Member)>, GroupError> {
        if member_id.is_empty() {
            return match self.members.is_empty() {
                true => Ok(None),
                false => Err(GroupError::MemberRequired { group: group.to_owned() }),
            };
        }
        self.members.get_key_value(member_id).map(Some).ok_or_else(|| GroupError::UnknownMember {
            group: group.to_owned(),
            member: member_id.to_owned(),
        })
    }

    pub(super) fn refresh_target(&mut self, counts: BTreeMap<String, u32>) {
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
    pub(super) fn reconcile(&mut self, id: &str, now: Instant) {
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

/// The heartbeat state machine.
impl Group {
    /// Joins, heartbeats or leaves, at `now`: the member's session is
    /// renewed, its subscription and released partitions recorded, the
    /// target recomputed when the group changed, and the member moved toward
    /// it (revoke first, then give). `counts` gives the partition count of a
    /// subscribed topic; `new_id` names a joining member.
    ///
    /// # Errors
    /// `UnknownMember` when `req.member_id` is not a member (it expired or
    /// left): the member must rejoin.
    pub(super) fn heartbeat(
        &mut self,
        req: &GroupHeartbeatRequest,
        client_id: &str,
        counts: &dyn PartitionCounts,
        new_id: impl FnOnce() -> String,
        now: Instant,
    ) -> Result<GroupHeartbeatResponse, GroupError> {
        self.expire(now);
        if req.member_epoch == LEAVE_EPOCH {
            return Ok(self.leave(&req.group, &req.member_id));
        }
        let member_id = self.member_for(req, client_id, new_id, now)?;
        self.record_beat(&member_id, req, now);
        self.rebalance(&member_id, counts, now);
        self.answer(&req.group, member_id)
    }

    fn leave(&mut self, group: &str, member_id: &str) -> GroupHeartbeatResponse {
        if self.remove_member(member_id) {
            tracing::info!(%group, member = %member_id, "member left");
        }
        GroupHeartbeatResponse {
            member_id: member_id.to_owned(),
            member_epoch: LEAVE_EPOCH,
            ..Default::default()
        }
    }

    /// The heartbeating member's id: a joining member (empty id) is added
    /// and moves the group epoch.
    fn member_for(
        &mut self,
        req: &GroupHeartbeatRequest,
        client_id: &str,
        new_id: impl FnOnce() -> String,
        now: Instant,
    ) -> Result<String, GroupError> {
        if !req.member_id.is_empty() {
            return match self.members.contains_key(&req.member_id) {
                true => Ok(req.member_id.clone()),
                false => {
                    Err(GroupError::UnknownMember { group: req.group.clone(), member: req.member_id.clone() })
                }
            };
        }
        if self.classic_members > 0 {
            return Err(GroupError::InconsistentProtocol { group: req.group.clone(), other: "classic" });
        }
        let id = new_id();
        let member = Member {
            client_id: client_id.to_owned(),
            host: req.client_host.clone(),
            epoch: 0,
            topics: req.topics.iter().cloned().collect(),
            session_timeout: session_timeout(req.session_timeout_ms),
            last_seen: now,
            given: BTreeSet::new(),
            revoking: BTreeMap::new(),
        };
        self.members.insert(id.clone(), member);
        self.epoch += 1;
        tracing::info!(group = %req.group, member = %id, "member joined");
        Ok(id)
    }

    /// Renews member `id`'s session and records its subscription (a change
    /// moves the group epoch) and the revoked partitions it released (no
    /// longer in `req.owned`) or kept past their deadline.
    fn record_beat(&mut self, id: &str, req: &GroupHeartbeatRequest, now: Instant) {
        let owned: BTreeSet<Tp> = req
            .owned
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| Tp::new(t.topic.clone(), *p)))
            .collect();
        let topics: BTreeSet<String> = req.topics.iter().cloned().collect();
        let Some(m) = self.members.get_mut(id) else { return };
        m.last_seen = now;
        m.session_timeout = session_timeout(req.session_timeout_ms);
        let subscription_changed = m.topics != topics;
        m.topics = topics;
        m.revoking.retain(|tp, deadline| owned.contains(tp) && now < *deadline);
        if subscription_changed {
            self.epoch += 1;
        }
    }

    /// Recomputes the target if the group or its topics changed, frees
    /// every member's timed-out revocations, and moves member `id` toward
    /// its target.
    fn rebalance(&mut self, id: &str, counts: &dyn PartitionCounts, now: Instant) {
        let subscribed: BTreeSet<&String> = self.members.values().flat_map(|m| m.topics.iter()).collect();
        let counts = subscribed
            .into_iter()
            .filter_map(|t| counts.partition_count(t).map(|n| (t.clone(), n)))
            .collect();
        self.refresh_target(counts);
        for m in self.members.values_mut() {
            m.revoking.retain(|_, deadline| now < *deadline);
        }
        self.reconcile(id, now);
    }

    /// Member `id`'s assignment and how soon to heartbeat again. While the
    /// group reconciles members heartbeat quickly (they learn of
    /// revocations and new partitions only then), so a rebalance takes a
    /// few round trips, not a few heartbeat intervals.
    fn answer(&self, group: &str, id: String) -> Result<GroupHeartbeatResponse, GroupError> {
        let Some(m) = self.members.get(&id) else {
            return Err(GroupError::UnknownMember { group: group.to_owned(), member: id });
        };
        let steady = (m.session_timeout.as_millis() / 3).clamp(20, 3000) as u32;
        let interval = if self.reconciling() { steady.min(RECONCILING_HEARTBEAT_MS) } else { steady };
        Ok(GroupHeartbeatResponse {
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment: group_tps(&m.given),
            member_id: id,
        })
    }
}

pub(super) fn group_tps(tps: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for Tp { topic, partition } in tps {
        by_topic.entry(topic).or_default().push(*partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions { topic: topic.to_owned(), partitions })
        .collect()
}

#[cfg(test)]
mod tests;
