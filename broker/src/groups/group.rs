//! One consumer group's in-memory state: its members, the target
//! assignment and its committed offsets, and the cooperative
//! reconciliation that moves members toward the target (module docs of
//! `groups` describe the protocol). A `Group` is only touched under its own
//! lock (`groups::Slot`), never under the coordinator's map lock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sluice_protocol::api::TopicPartitions;

use super::assign::{self, Tp};
use super::store::Committed;

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
}

impl Group {
    pub(super) fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.reconciling() {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Neither members nor committed offsets: the group can be dropped.
    pub(super) fn is_unused(&self) -> bool {
        self.members.is_empty() && self.offsets.is_empty()
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
        self.members.iter().any(|(id, m)| id != me && (m.given.contains(tp) || m.revoking.contains_key(tp)))
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

pub(super) fn group_tps(tps: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions { topic: topic.to_owned(), partitions })
        .collect()
}
