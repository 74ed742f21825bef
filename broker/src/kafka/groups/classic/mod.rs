//! Kafka classic groups (JoinGroup/SyncGroup with client-side assignment):
//! the registry of [`ClassicGroup`]s, and the asynchronous waits of the
//! rebalance barrier.
//!
//! Each group sits behind its own lock, held briefly and never across an
//! await; the registry's map lock is only held to find, add or drop a
//! group, never while a group lock is taken. A JoinGroup or SyncGroup that
//! must wait holds a channel, not a thread: it sleeps until the answer
//! comes or the group's next deadline, when it moves the group along
//! itself ([`ClassicGroup::tick`]), so no timer task is needed and every
//! wait ends by the rebalance deadline. After every change the group's
//! member count is reported to the native coordinator ([`Claim`]): native
//! and KIP-848 members may not join a group with classic members, and a
//! classic member may not join a group with native ones. At most
//! `max_groups` groups are kept; empty ones are forgotten (their committed
//! offsets live in the native coordinator).

mod group;
mod member;
mod ops;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use group::{ClassicGroup, State, MAX_MEMBERS, SESSION_TIMEOUT_MS};
pub use member::{ClassicError, JoinOutcome, JoinRequest, JoinResult, JoinedMember, Reply, SyncOutcome};
pub use ops::{GroupView, MemberView, SyncRequest};

/// Reports a classic group's member count to the native coordinator; an
/// error refuses a first member (the group has native members).
pub type Claim = Arc<dyn Fn(&str, usize) -> Result<(), ClassicError> + Send + Sync>;

type Slot = Arc<Mutex<ClassicGroup>>;

fn lock(slot: &Slot) -> MutexGuard<'_, ClassicGroup> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every classic group.
pub struct ClassicGroups {
    groups: Mutex<HashMap<String, Slot>>,
    /// How long a group that was empty waits for more members.
    initial_delay: Duration,
    /// Groups kept at once.
    max_groups: usize,
    claim: Claim,
    /// Cancelled when the broker stops: waits end.
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ClassicGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassicGroups").field("groups", &self.map().len()).finish_non_exhaustive()
    }
}

impl ClassicGroups {
    /// No groups yet.
    pub fn new(
        initial_delay: Duration,
        max_groups: usize,
        claim: Claim,
        shutdown: CancellationToken,
    ) -> Self {
        Self { groups: Mutex::new(HashMap::new()), initial_delay, max_groups, claim, shutdown }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, name: &str) -> Option<Slot> {
        self.map().get(name).cloned()
    }

    fn slot_or_create(&self, name: &str) -> Result<Slot, ClassicError> {
        if let Some(slot) = self.slot(name) {
            return Ok(slot);
        }
        if self.map().len() >= self.max_groups {
            self.sweep();
        }
        let mut map = self.map();
        if let Some(slot) = map.get(name) {
            return Ok(Arc::clone(slot));
        }
        if map.len() >= self.max_groups {
            return Err(ClassicError::CoordinatorNotAvailable);
        }
        let slot = Arc::new(Mutex::new(ClassicGroup::new(self.initial_delay, Instant::now())));
        map.insert(name.to_owned(), Arc::clone(&slot));
        Ok(slot)
    }

    /// Tells the native coordinator the group's member count if it moved.
    fn publish(&self, name: &str, group: &mut ClassicGroup) {
        if group.len() != group.claimed && (self.claim)(name, group.len()).is_ok() {
            group.claimed = group.len();
        }
    }

    /// Runs `f` on the live group `name` (`None` when it does not exist),
    /// then publishes its member count.
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut ClassicGroup) -> T) -> Option<T> {
        let slot = self.slot(name)?;
        let mut group = lock(&slot);
        if group.dead {
            return None;
        }
        let out = f(&mut group);
        self.publish(name, &mut group);
        Some(out)
    }

    /// JoinGroup: waits for the rebalance to complete.
    pub async fn join(&self, name: &str, req: JoinRequest) -> JoinOutcome {
        let (slot, reply) = loop {
            let slot = self.slot_or_create(name)?;
            let mut group = lock(&slot);
            if group.dead {
                continue;
            }
            if group.is_empty() && group.claimed == 0 {
                (self.claim)(name, 1)?;
                group.claimed = 1;
            }
            let new_id = || format!("{}-{}", member_prefix(&req.client_id), uuid::Uuid::new_v4());
            let reply = group.join(&req, new_id, Instant::now());
            self.publish(name, &mut group);
            drop(group);
            break (slot, reply);
        };
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Wait(rx) => self.wait(name, &slot, rx).await,
        }
    }

    /// SyncGroup: a follower waits for the leader's assignments.
    pub async fn sync(&self, name: &str, req: SyncRequest) -> SyncOutcome {
        let Some(slot) = self.slot(name) else { return Err(ClassicError::UnknownMember) };
        let reply = {
            let mut group = lock(&slot);
            let reply = group.sync(req, Instant::now());
            self.publish(name, &mut group);
            reply
        };
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Wait(rx) => self.wait(name, &slot, rx).await,
        }
    }

    /// Waits for `rx`, moving the group along at its deadlines.
    async fn wait<T>(
        &self,
        name: &str,
        slot: &Slot,
        mut rx: oneshot::Receiver<Result<T, ClassicError>>,
    ) -> Result<T, ClassicError> {
        loop {
            let deadline = lock(slot).next_deadline(Instant::now());
            tokio::select! {
                answer = &mut rx => return answer.unwrap_or(Err(ClassicError::RebalanceInProgress)),
                () = tokio::time::sleep_until(deadline) => {
                    let mut group = lock(slot);
                    group.tick(Instant::now());
                    self.publish(name, &mut group);
                }
                () = self.shutdown.cancelled() => return Err(ClassicError::CoordinatorNotAvailable),
            }
        }
    }

    /// Heartbeat.
    ///
    /// # Errors
    /// What [`ClassicGroup::heartbeat`] refuses; `UnknownMember` for an
    /// unknown group.
    pub fn heartbeat(
        &self,
        name: &str,
        id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ClassicError> {
        self.with(name, |g| g.heartbeat(id, instance, generation, Instant::now()))
            .unwrap_or(Err(ClassicError::UnknownMember))
    }

    /// LeaveGroup of one member; returns its id.
    ///
    /// # Errors
    /// What [`ClassicGroup::leave`] refuses; `UnknownMember` for an
    /// unknown group.
    pub fn leave(&self, name: &str, id: &str, instance: Option<&str>) -> Result<String, ClassicError> {
        self.with(name, |g| g.leave(id, instance, Instant::now())).unwrap_or(Err(ClassicError::UnknownMember))
    }

    /// Whether an OffsetCommit by `id` at `generation` is accepted (a
    /// simple commit to a group unknown here is).
    ///
    /// # Errors
    /// What [`ClassicGroup::check_commit`] refuses; `UnknownMember` for a
    /// member of a group unknown here.
    pub fn check_commit(
        &self,
        name: &str,
        id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ClassicError> {
        match self.with(name, |g| g.check_commit(id, instance, generation, Instant::now())) {
            Some(checked) => checked,
            None if id.is_empty() && generation < 0 => Ok(()),
            None => Err(ClassicError::UnknownMember),
        }
    }

    /// The group as DescribeGroups shows it (`None`: unknown here).
    pub fn describe(&self, name: &str) -> Option<GroupView> {
        self.with(name, |g| g.describe(Instant::now()))
    }

    /// Whether the group has members (DeleteGroups refuses it).
    pub fn has_members(&self, name: &str) -> bool {
        self.with(name, |g| {
            g.tick(Instant::now());
            !g.is_empty()
        })
        .unwrap_or(false)
    }

    /// Every group with members: name, state and protocol type.
    pub fn list(&self) -> Vec<(String, &'static str, String)> {
        let names: Vec<String> = self.map().keys().cloned().collect();
        let mut out: Vec<_> = names
            .into_iter()
            .filter_map(|name| {
                let view = self.describe(&name)?;
                (!view.members.is_empty()).then_some((name, view.state, view.protocol_type))
            })
            .collect();
        out.sort();
        out
    }

    /// Moves every group along (expiries, deadlines) and forgets empty
    /// ones.
    pub fn sweep(&self) {
        let slots: Vec<(String, Slot)> = self.map().iter().map(|(n, s)| (n.clone(), Arc::clone(s))).collect();
        for (name, slot) in slots {
            let Ok(mut group) = slot.try_lock() else { continue };
            group.tick(Instant::now());
            self.publish(&name, &mut group);
            if group.is_unused() && group.claimed == 0 && !group.dead {
                group.dead = true;
                let mut map = self.map();
                if map.get(&name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(&name);
                }
            }
        }
    }
}

/// A member id's prefix: the client id, like Kafka's, or "member".
fn member_prefix(client_id: &str) -> &str {
    if client_id.is_empty() {
        "member"
    } else {
        client_id
    }
}
