//! The classic group's other requests: SyncGroup (the leader's
//! assignments handed out; followers wait for them), Heartbeat,
//! LeaveGroup, the generation check of OffsetCommit, and describe.

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::group::{ClassicGroup, State};
use super::member::{ClassicError, Reply, SyncOutcome};

/// A SyncGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The member.
    pub member_id: String,
    /// Its `group.instance.id`.
    pub instance_id: Option<String>,
    /// The generation it joined.
    pub generation: i32,
    /// v5+: the protocol type it expects.
    pub protocol_type: Option<String>,
    /// v5+: the protocol it expects.
    pub protocol: Option<String>,
    /// The leader's assignments: member id and its assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub member_id: String,
    /// Its `group.instance.id`.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Kafka's state name.
    pub state: &'static str,
    /// Its members' protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol: String,
    /// Its members.
    pub members: Vec<MemberView>,
}

impl ClassicGroup {
    /// The member exists, is not fenced, and names the current generation.
    fn check_member(&self, id: &str, instance: Option<&str>, generation: i32) -> Result<(), ClassicError> {
        self.check_instance(id, instance)?;
        if !self.members.contains_key(id) {
            return Err(ClassicError::UnknownMember);
        }
        if generation != self.generation {
            return Err(ClassicError::IllegalGeneration);
        }
        Ok(())
    }

    fn touch(&mut self, id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(id) {
            m.last_seen = now;
        }
    }

    /// SyncGroup: the leader's call hands every member its assignment and
    /// settles the group; a follower's waits for it.
    pub fn sync(&mut self, req: SyncRequest, now: Instant) -> Reply<SyncOutcome> {
        self.tick(now);
        if let Err(e) = self.check_member(&req.member_id, req.instance_id.as_deref(), req.generation) {
            return Reply::Now(Err(e));
        }
        let type_differs = req.protocol_type.as_deref().is_some_and(|t| Some(t) != self.protocol_type());
        let protocol_differs = req.protocol.is_some() && req.protocol != self.protocol;
        if type_differs || protocol_differs {
            return Reply::Now(Err(ClassicError::InconsistentProtocol));
        }
        self.touch(&req.member_id, now);
        match self.state {
            State::Empty => Reply::Now(Err(ClassicError::UnknownMember)),
            State::PreparingRebalance => Reply::Now(Err(ClassicError::RebalanceInProgress)),
            State::Stable => Reply::Now(Ok(self.members[&req.member_id].assignment.clone())),
            State::CompletingRebalance if self.leader.as_deref() == Some(req.member_id.as_str()) => {
                self.settle(req.assignments);
                Reply::Now(Ok(self.members[&req.member_id].assignment.clone()))
            }
            State::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.syncing = Some(tx);
                }
                Reply::Wait(rx)
            }
        }
    }

    /// The leader's assignments arrived: the group is stable.
    fn settle(&mut self, assignments: Vec<(String, Bytes)>) {
        for (id, assignment) in assignments {
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = assignment;
            }
        }
        self.state = State::Stable;
        for m in self.members.values_mut() {
            if let Some(tx) = m.syncing.take() {
                let _ = tx.send(Ok(m.assignment.clone()));
            }
        }
    }

    /// Heartbeat: renews the member's session; tells it to rejoin while
    /// the group rebalances.
    ///
    /// # Errors
    /// `UnknownMember`, `FencedInstance`, `IllegalGeneration`,
    /// `RebalanceInProgress`.
    pub fn heartbeat(
        &mut self,
        id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ClassicError> {
        self.tick(now);
        self.check_member(id, instance, generation)?;
        self.touch(id, now);
        match self.state {
            State::PreparingRebalance => Err(ClassicError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup of one member (by id, or a static member by instance id
    /// alone); returns the id that left.
    ///
    /// # Errors
    /// `UnknownMember`, `FencedInstance`.
    pub fn leave(&mut self, id: &str, instance: Option<&str>, now: Instant) -> Result<String, ClassicError> {
        self.tick(now);
        let id = match (id.is_empty(), instance.and_then(|i| self.instances.get(i))) {
            (true, Some(mapped)) => mapped.clone(),
            (false, Some(mapped)) if mapped != id => return Err(ClassicError::FencedInstance),
            _ => id.to_owned(),
        };
        if !self.members.contains_key(&id) {
            return Err(ClassicError::UnknownMember);
        }
        tracing::info!(member = %id, "kafka group member left");
        self.remove_member(&id, now);
        self.tick(now);
        Ok(id)
    }

    /// Whether an OffsetCommit by `id` at `generation` is accepted: a
    /// "simple" commit (generation < 0, no member) only while the group is
    /// empty; else a member of the current generation, not while the
    /// leader is assigning. A commit proves the member alive.
    ///
    /// # Errors
    /// `UnknownMember`, `FencedInstance`, `IllegalGeneration`,
    /// `RebalanceInProgress`.
    pub fn check_commit(
        &mut self,
        id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ClassicError> {
        self.tick(now);
        if generation < 0 && id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        self.check_member(id, instance, generation)?;
        self.touch(id, now);
        match self.state {
            State::CompletingRebalance => Err(ClassicError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// State, protocol and members (with their metadata and assignment).
    pub fn describe(&mut self, now: Instant) -> GroupView {
        self.tick(now);
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut members: Vec<_> = self.members.iter().collect();
        members.sort_by_key(|(_, m)| m.seq);
        GroupView {
            state: self.state.name(),
            protocol_type: self.protocol_type().unwrap_or_default().to_owned(),
            members: members
                .into_iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        }
    }
}
