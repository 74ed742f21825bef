//! The classic group state machine (Kafka's JoinGroup/SyncGroup protocol
//! with client-side assignment): `Empty` → `PreparingRebalance` (members
//! rejoin; the barrier) → `CompletingRebalance` (the leader assigns) →
//! `Stable`, and back to `PreparingRebalance` when a member joins, leaves,
//! expires or changes its protocols.
//!
//! Invariants: every member in `members` has a live session or a waiting
//! request; a rebalance completes when every member has rejoined (after
//! the initial delay, for a group that was empty) or at its deadline, when
//! the members that did not rejoin are removed; the leader is a member
//! while the group is not `Empty`; a waiting request is always answered
//! (or its channel dropped) when its member leaves or the state moves on.
//! The clock is an input (`now`, tokio's `Instant`, so tests pause it);
//! callers hold the group's lock around each call, never across an await.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::member::{ClassicError, JoinOutcome, JoinRequest, JoinResult, JoinedMember, Member, Reply};

/// Members (and ids handed out awaiting their rejoin) one group may have.
pub const MAX_MEMBERS: usize = 1000;
/// Accepted session timeouts (Kafka's `group.min/max.session.timeout.ms`
/// are 6 s and 30 min; lower here, so tests run fast).
pub const SESSION_TIMEOUT_MS: (i32, i32) = (100, 1_800_000);
/// The state a waiter sleeps at most, before it looks again.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Where the group is in its rebalance cycle (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No members.
    Empty,
    /// Waiting for the members to rejoin.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignments.
    CompletingRebalance,
    /// Everyone has its assignment.
    Stable,
}

impl State {
    /// Kafka's name of the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// One classic group.
#[derive(Debug)]
pub struct ClassicGroup {
    pub(super) state: State,
    pub(super) generation: i32,
    /// The chosen protocol (assignor) of the current generation.
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, until when they may rejoin.
    pub(super) pending: HashMap<String, Instant>,
    /// Static members: `group.instance.id` to member id.
    pub(super) instances: HashMap<String, String>,
    /// How long a group that was empty waits for more members.
    initial_delay: Duration,
    /// The rebalance waits for more members until then (initial delay).
    delay_until: Instant,
    /// The rebalance completes at the latest then.
    rebalance_deadline: Instant,
    /// The leader must sync by then.
    sync_deadline: Instant,
    seq: u64,
    /// Removed from the registry: whoever holds it must look again.
    pub(super) dead: bool,
    /// Members last reported to the native coordinator.
    pub(super) claimed: usize,
}

impl ClassicGroup {
    /// An empty group whose first rebalance waits `initial_delay`.
    pub fn new(initial_delay: Duration, now: Instant) -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            instances: HashMap::new(),
            initial_delay,
            delay_until: now,
            rebalance_deadline: now,
            sync_deadline: now,
            seq: 0,
            dead: false,
            claimed: 0,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Neither members nor ids awaiting their rejoin: it can be forgotten
    /// (its offsets live in the native coordinator).
    pub fn is_unused(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// The protocol type of the group's members.
    pub fn protocol_type(&self) -> Option<&str> {
        self.members.values().next().map(|m| m.protocol_type.as_str())
    }

    /// Joins (or rejoins) at `now`; `new_id` names a new member. The answer
    /// waits for the rebalance unless the member rejoined a settled group
    /// with unchanged protocols.
    pub fn join(
        &mut self,
        req: &JoinRequest,
        new_id: impl FnOnce() -> String,
        now: Instant,
    ) -> Reply<JoinOutcome> {
        self.tick(now);
        if let Err(e) = self.check_protocols(req) {
            return Reply::Now(Err(e));
        }
        let (id, known) = match self.admit(req, new_id, now) {
            Ok(admitted) => admitted,
            Err(e) => return Reply::Now(Err(e)),
        };
        let changed = match self.members.get_mut(&id) {
            Some(m) => m.update(req, now),
            None => return Reply::Now(Err(ClassicError::UnknownMember)),
        };
        let settled = matches!(self.state, State::CompletingRebalance | State::Stable);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let retry = settled && known && !changed && (self.state == State::CompletingRebalance || !is_leader);
        if retry {
            return Reply::Now(Ok(self.join_result(&id)));
        }
        let (tx, rx) = oneshot::channel();
        self.prepare_rebalance(now);
        if !known && self.delay_until > now {
            self.delay_until = (now + self.initial_delay).min(self.rebalance_deadline);
        }
        if let Some(m) = self.members.get_mut(&id) {
            // A retried join replaces the first; that one's channel drops.
            m.joining = Some(tx);
        }
        self.tick(now);
        Reply::Wait(rx)
    }

    /// The member's protocol type and protocols must fit the group's: the
    /// same type, and a protocol every other member supports.
    fn check_protocols(&self, req: &JoinRequest) -> Result<(), ClassicError> {
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(ClassicError::InconsistentProtocol);
        }
        let min = SESSION_TIMEOUT_MS.0 as u128;
        let max = SESSION_TIMEOUT_MS.1 as u128;
        if !(min..=max).contains(&req.session_timeout.as_millis()) {
            return Err(ClassicError::InvalidSessionTimeout);
        }
        let others: Vec<&Member> =
            self.members.iter().filter(|(id, _)| **id != req.member_id).map(|(_, m)| m).collect();
        if others.is_empty() {
            return Ok(());
        }
        let fits = others[0].protocol_type == req.protocol_type
            && req
                .protocols
                .iter()
                .any(|(p, _)| others.iter().all(|m| m.protocols.iter().any(|(q, _)| q == p)));
        if fits {
            Ok(())
        } else {
            Err(ClassicError::InconsistentProtocol)
        }
    }

    /// The joining member's id, and whether it was a member already: a new
    /// member is added (or, v4+, told to rejoin with an id), a static
    /// member rejoining under a new id takes its old entry.
    fn admit(
        &mut self,
        req: &JoinRequest,
        new_id: impl FnOnce() -> String,
        now: Instant,
    ) -> Result<(String, bool), ClassicError> {
        if !req.member_id.is_empty() {
            let id = req.member_id.clone();
            if self.members.contains_key(&id) {
                self.check_instance(&id, req.instance_id.as_deref())?;
                return Ok((id, true));
            }
            if self.pending.remove(&id).is_none() {
                return Err(ClassicError::UnknownMember);
            }
            self.add_member(&id, req, now);
            return Ok((id, false));
        }
        if let Some(old) = req.instance_id.as_ref().and_then(|i| self.instances.get(i)).cloned() {
            let id = new_id();
            self.rename(&old, &id);
            return Ok((id, true));
        }
        if self.members.len() + self.pending.len() >= MAX_MEMBERS {
            return Err(ClassicError::GroupFull);
        }
        let id = new_id();
        if req.require_known_id && req.instance_id.is_none() {
            self.pending.insert(id.clone(), now + req.session_timeout);
            return Err(ClassicError::MemberIdRequired { member_id: id });
        }
        self.add_member(&id, req, now);
        Ok((id, false))
    }

    fn add_member(&mut self, id: &str, req: &JoinRequest, now: Instant) {
        self.seq += 1;
        if let Some(instance) = &req.instance_id {
            self.instances.insert(instance.clone(), id.to_owned());
        }
        self.members.insert(id.to_owned(), Member::new(req, self.seq, now));
        tracing::info!(member = %id, "kafka group member joined");
    }

    /// A static member came back under a new id: the old id is fenced.
    fn rename(&mut self, old: &str, new: &str) {
        let Some(mut member) = self.members.remove(old) else { return };
        member.fail_waiters(&ClassicError::FencedInstance);
        if let Some(instance) = &member.instance_id {
            self.instances.insert(instance.clone(), new.to_owned());
        }
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(new.to_owned());
        }
        self.members.insert(new.to_owned(), member);
    }

    /// A static member's id must be the one its instance id maps to.
    pub(super) fn check_instance(&self, id: &str, instance: Option<&str>) -> Result<(), ClassicError> {
        match instance.and_then(|i| self.instances.get(i)) {
            Some(mapped) if mapped != id => Err(ClassicError::FencedInstance),
            _ => Ok(()),
        }
    }

    /// Starts a rebalance (if none runs): sync waiters are told to rejoin.
    pub(super) fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::PreparingRebalance {
            return;
        }
        let from_empty = self.state == State::Empty;
        for m in self.members.values_mut() {
            if let Some(tx) = m.syncing.take() {
                let _ = tx.send(Err(ClassicError::RebalanceInProgress));
            }
        }
        let longest = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = now + longest;
        self.delay_until =
            if from_empty { (now + self.initial_delay).min(self.rebalance_deadline) } else { now };
    }

    /// Moves the group along at `now`: expires dead members and ids, and
    /// completes a rebalance whose barrier or deadline passed.
    pub fn tick(&mut self, now: Instant) {
        self.pending.retain(|_, until| *until > now);
        for m in self.members.values_mut() {
            m.drop_abandoned();
        }
        let dead: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.waiting() && now.duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            tracing::info!(member = %id, "kafka group member's session expired");
            self.remove_member(&id, now);
        }
        match self.state {
            State::PreparingRebalance => {
                let all = self.members.values().all(|m| m.joining.is_some());
                if (all && now >= self.delay_until) || now >= self.rebalance_deadline {
                    self.complete_join(now);
                }
            }
            State::CompletingRebalance if now >= self.sync_deadline => {
                // The leader did not sync in time: drop it and whoever else
                // did not sync, and start over.
                let late: Vec<String> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.syncing.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in late {
                    self.remove_member(&id, now);
                }
            }
            _ => {}
        }
    }

    /// When a waiter should look again: the next session expiry, initial
    /// delay end or deadline.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let sessions =
            self.members.values().filter(|m| !m.waiting()).map(|m| m.last_seen + m.session_timeout);
        let phase = match self.state {
            // Everyone rejoining completes it without a deadline (the last
            // join does); the initial delay's end and the deadline do not.
            State::PreparingRebalance if self.delay_until > now => Some(self.delay_until),
            State::PreparingRebalance => Some(self.rebalance_deadline),
            State::CompletingRebalance => Some(self.sync_deadline),
            _ => None,
        };
        // One tick past an expiry: a session expires strictly after it.
        let next = sessions.map(|t| t + Duration::from_millis(1)).chain(phase).min();
        next.unwrap_or(now + IDLE_WAKE).max(now)
    }

    /// Removes a member (it left or expired); the group rebalances, or
    /// empties.
    pub(super) fn remove_member(&mut self, id: &str, now: Instant) {
        let Some(mut member) = self.members.remove(id) else { return };
        member.fail_waiters(&ClassicError::UnknownMember);
        if let Some(instance) = &member.instance_id {
            if self.instances.get(instance).is_some_and(|m| m == id) {
                self.instances.remove(instance);
            }
        }
        if self.members.is_empty() {
            self.become_empty();
        } else if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now);
        }
    }

    fn become_empty(&mut self) {
        if self.state != State::Empty {
            self.generation += 1;
        }
        self.state = State::Empty;
        self.protocol = None;
        self.leader = None;
    }

    /// The barrier passed: members that did not rejoin are removed, the
    /// generation moves, a protocol is voted, and every joiner is answered
    /// (the leader with every member's metadata).
    fn complete_join(&mut self, now: Instant) {
        let absent: Vec<String> =
            self.members.iter().filter(|(_, m)| m.joining.is_none()).map(|(id, _)| id.clone()).collect();
        for id in absent {
            tracing::info!(member = %id, "kafka group member did not rejoin in time");
            if let Some(mut m) = self.members.remove(&id) {
                m.fail_waiters(&ClassicError::UnknownMember);
                if let Some(instance) = m.instance_id {
                    self.instances.remove(&instance);
                }
            }
        }
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        self.protocol = Some(self.vote());
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.iter().min_by_key(|(_, m)| m.seq).map(|(id, _)| id.clone());
        }
        self.state = State::CompletingRebalance;
        let longest = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.sync_deadline = now + longest;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = bytes::Bytes::new();
                m.last_seen = now;
                if let Some(tx) = m.joining.take() {
                    let _ = tx.send(Ok(result));
                }
            }
        }
        tracing::info!(generation = self.generation, members = self.members.len(), protocol = ?self.protocol, "kafka group rebalanced");
    }

    /// The protocol most members prefer among those all support; a tie
    /// goes to the one the longest-standing member prefers.
    fn vote(&self) -> String {
        let mut by_seq: Vec<&Member> = self.members.values().collect();
        by_seq.sort_by_key(|m| m.seq);
        let supported = |p: &str| by_seq.iter().all(|m| m.protocols.iter().any(|(q, _)| q == p));
        let candidates: Vec<&str> =
            by_seq[0].protocols.iter().map(|(p, _)| p.as_str()).filter(|p| supported(p)).collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &by_seq {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p.as_str())) {
                *votes.entry(p.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max().unwrap_or(0);
        candidates.into_iter().find(|p| votes.get(p) == Some(&most)).unwrap_or_default().to_owned()
    }

    /// Member `id`'s answer for the current generation.
    pub(super) fn join_result(&self, id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == id {
            let mut all: Vec<(&String, &Member)> = self.members.iter().collect();
            all.sort_by_key(|(_, m)| m.seq);
            all.into_iter()
                .map(|(mid, m)| JoinedMember {
                    member_id: mid.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            generation: self.generation,
            protocol_type: self.protocol_type().unwrap_or_default().to_owned(),
            protocol,
            leader,
            member_id: id.to_owned(),
            members,
        }
    }
}
