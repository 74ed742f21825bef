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
//!
//! Locking: a short-lived map lock finds a group's [`Slot`]; the group's
//! own lock guards its state, so a busy group never stalls another. No code
//! holds the map lock while it takes a group lock (a group lock may be held
//! while the map lock is taken, when a group is deleted). Heartbeats (which
//! may recompute an assignment) run on blocking threads, one per group at a
//! time: a heartbeat waits for its group's turn asynchronously
//! ([`Slot::turn`]), so a storm on one group holds no thread and no worker.
//! Fsyncs of the offsets log happen outside every lock. The coordinator keeps
//! at most `max_groups` groups: a new one past that is refused with
//! `TooManyGroups` after groups with neither members nor offsets are dropped.

mod admin;
pub mod assign;
mod backend;
mod group;
pub mod offsets_topic;
pub mod store;
mod topic_ids;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sluice_protocol::api::{
    CommitOffset, FetchedOffset, GroupHeartbeatRequest, GroupHeartbeatResponse, GroupListing,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, PartitionResult,
    NO_OFFSET,
};
use sluice_protocol::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::BrokerError;
use crate::topics::Topics;
use assign::Tp;
use backend::Backend;
use group::{Group, Member};
use store::{Committed, OffsetKey, OffsetStore};

pub use crate::errors::GroupError;

/// Checks a group name: 1 to 249 bytes.
///
/// # Errors
/// `InvalidGroupId` (with the name's first 300 characters) otherwise.
pub fn validate_group(name: &str) -> Result<(), GroupError> {
    if name.is_empty() || name.len() > 249 {
        return Err(GroupError::InvalidGroupId { name: name.chars().take(300).collect() });
    }
    Ok(())
}

/// The partition count of each topic: all the coordinator's assignment
/// needs to know about topics (so its state machine runs without them).
pub trait PartitionCounts {
    /// The topic's partition count, or `None` when it does not exist.
    fn partition_count(&self, topic: &str) -> Option<u32>;
}

impl PartitionCounts for Topics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.get(topic).map(|t| t.partitions.len() as u32)
    }
}

impl PartitionCounts for BTreeMap<String, u32> {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
}

/// One group: its state behind its own lock, and the turn heartbeats take.
#[derive(Debug)]
pub struct Slot {
    /// The group's state. Held briefly, never across an fsync.
    state: Mutex<Group>,
    /// One permit: heartbeats of this group run one at a time, and wait for
    /// their turn without holding a thread.
    turn: Arc<Semaphore>,
}

impl Slot {
    fn new(group: Group) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(group), turn: Arc::new(Semaphore::new(1)) })
    }

    fn lock(&self) -> MutexGuard<'_, Group> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (asynchronously) until no other heartbeat of this group runs.
    pub async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.turn).acquire_owned().await.ok()
    }
}

/// Checks each offset of a commit by `member` (`None`: into a group
/// without members): its partition exists, the member holds it, and it is
/// not past the log end. Returns every partition's result and the accepted
/// offsets.
fn check_commits(
    topics: &Topics,
    group: &str,
    member: Option<(&String, &Member)>,
    offsets: Vec<CommitOffset>,
) -> (Vec<PartitionResult>, Vec<(Tp, Committed)>) {
    let mut results = Vec::with_capacity(offsets.len());
    let mut accepted = Vec::new();
    for CommitOffset { topic, partition, offset, metadata } in offsets {
        let tp = Tp::new(topic, partition);
        let held = |tp: &Tp| member.map_or(Ok(()), |(id, m)| m.check_holds(group, id, tp));
        let code = match topics.get(&tp.topic) {
            None => ErrorCode::UnknownTopic,
            Some(t) => match (t.partitions.get(partition as usize), held(&tp)) {
                (None, _) => ErrorCode::UnknownPartition,
                (Some(_), Err(e)) => e.code(),
                (Some(p), Ok(())) if offset > p.log().log_end_offset() => ErrorCode::OffsetOutOfRange,
                (Some(_), Ok(())) => {
                    accepted.push((tp.clone(), Committed { offset, metadata, topic_id: Some(t.id()) }));
                    ErrorCode::None
                }
            },
        };
        results.push(PartitionResult { topic: tp.topic, partition: tp.partition, error_code: code });
    }
    (results, accepted)
}

/// Offsets-log entries that write `offsets` of `group`.
fn offset_entries(group: &str, offsets: &[(Tp, Committed)]) -> Vec<(OffsetKey, Option<Committed>)> {
    offsets
        .iter()
        .map(|(tp, c)| ((group.to_owned(), tp.topic.clone(), tp.partition), Some(c.clone())))
        .collect()
}

/// All groups and where their offsets are written.
#[derive(Debug)]
pub struct Coordinator {
    /// Group name to its slot. Held only to find, add or remove a slot.
    groups: Mutex<HashMap<String, Arc<Slot>>>,
    /// The local offsets log, or the replicated offsets partition.
    backend: Backend,
    next_member: AtomicU64,
}

impl Coordinator {
    /// Opens the offsets store and rebuilds the groups from it. Blocking.
    ///
    /// # Errors
    /// `Storage` when the offsets log cannot be opened or recovered.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, BrokerError> {
        let (store, offsets) = OffsetStore::open(data_dir)?;
        Ok(Self::with_backend(Backend::Local(store), offsets))
    }

    fn with_backend(backend: Backend, offsets: HashMap<OffsetKey, Committed>) -> Self {
        let groups = backend::groups_from(offsets);
        Self { groups: Mutex::new(groups), backend, next_member: AtomicU64::new(1) }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The group's slot, when it exists.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.map().get(name).cloned()
    }

    /// Every slot, taken under the map lock and used after it.
    fn slots(&self) -> Vec<(String, Arc<Slot>)> {
        self.map().iter().map(|(n, s)| (n.clone(), Arc::clone(s))).collect()
    }

    /// The group's slot, created when it does not exist and fewer than
    /// `max_groups` exist (after dropping unused groups, when at the limit).
    ///
    /// # Errors
    /// `Group`: `InvalidGroupId` for a bad name, `TooManyGroups` at the
    /// limit, `NotCoordinator` when this broker does not coordinate.
    pub fn slot_or_create(&self, name: &str, max_groups: usize) -> Result<Arc<Slot>, BrokerError> {
        validate_group(name)?;
        self.check_coordinator()?;
        if let Some(slot) = self.slot(name) {
            return Ok(slot);
        }
        if self.map().len() >= max_groups {
            self.drop_unused();
        }
        let mut map = self.map();
        if let Some(slot) = map.get(name) {
            return Ok(Arc::clone(slot));
        }
        if map.len() >= max_groups {
            return Err(
                GroupError::TooManyGroups { group: name.to_owned(), groups: map.len(), max_groups }.into()
            );
        }
        let slot = Slot::new(Group::default());
        map.insert(name.to_owned(), Arc::clone(&slot));
        Ok(slot)
    }

    /// Drops groups without members (after expiry) or offsets. A group busy
    /// elsewhere is skipped (`try_lock`): this never waits on a group.
    fn drop_unused(&self) {
        let now = Instant::now();
        for (name, slot) in self.slots() {
            let Ok(mut g) = slot.state.try_lock() else { continue };
            g.expire(now);
            if g.is_unused() && !g.deleted {
                g.deleted = true;
                let mut map = self.map();
                if map.get(&name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(&name);
                }
            }
        }
    }

    /// Groups the coordinator holds.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins, heartbeats or leaves group `slot` (from
    /// [`slot_or_create`](Self::slot_or_create)): `Group::heartbeat` under
    /// the group's lock. A joining member (empty id) is named `join_id`
    /// when given (a KIP-848 member's own id), else by the coordinator. Blocking: may recompute the group's assignment; run
    /// it on a blocking thread, in the group's [`turn`](Slot::turn).
    ///
    /// # Errors
    /// `Group` when the group was deleted meanwhile or the member is not
    /// one of the group's (it must rejoin).
    pub fn heartbeat(
        &self,
        slot: &Slot,
        counts: &dyn PartitionCounts,
        client_id: &str,
        req: GroupHeartbeatRequest,
        join_id: Option<String>,
    ) -> Result<GroupHeartbeatResponse, BrokerError> {
        let now = Instant::now();
        let mut group = slot.lock();
        if group.deleted {
            return Err(GroupError::Deleted { group: req.group }.into());
        }
        let new_id = || match join_id {
            Some(id) => id,
            None => {
                let prefix = if client_id.is_empty() { "member" } else { client_id };
                format!("{prefix}-{}", self.next_member.fetch_add(1, Ordering::Relaxed))
            }
        };
        Ok(group.heartbeat(&req, client_id, counts, new_id, now)?)
    }

    /// Whether group `slot` has a native member `id` (Kafka's KIP-848
    /// members choose their own ids: the listener asks before joining).
    pub fn has_member(&self, slot: &Slot, id: &str) -> bool {
        slot.lock().members.contains_key(id)
    }

    /// Native members of group `name` (after expiring the dead).
    pub fn native_members(&self, name: &str) -> usize {
        self.slot(name).map_or(0, |s| {
            let mut g = s.lock();
            g.expire(Instant::now());
            g.members.len()
        })
    }

    /// Records that the Kafka classic group `name` has `members` members
    /// (creating the group, within `max_groups`, when it has any): native
    /// members may not join while it has, and it is listed and never
    /// dropped as unused.
    ///
    /// # Errors
    /// `Group`: `InconsistentProtocol` when `members > 0` and the group has
    /// native members; `InvalidGroupId`, `TooManyGroups`.
    pub fn set_classic_members(
        &self,
        name: &str,
        members: usize,
        max_groups: usize,
    ) -> Result<(), BrokerError> {
        let slot = match members {
            0 => match self.slot(name) {
                Some(slot) => slot,
                None => return Ok(()),
            },
            _ => self.slot_or_create(name, max_groups)?,
        };
        let mut g = slot.lock();
        g.expire(Instant::now());
        if members > 0 && !g.members.is_empty() {
            return Err(GroupError::InconsistentProtocol { group: name.to_owned(), other: "consumer" }.into());
        }
        g.classic_members = members;
        Ok(())
    }

    /// Removes expired members of every group (a periodic sweep).
    pub fn expire_all(&self) {
        let now = Instant::now();
        for (_, slot) in self.slots() {
            slot.lock().expire(now);
        }
    }

    /// Commits offsets durably (creating the group, within `max_groups`).
    /// Blocking (waits for the fsync, outside every lock). Each partition
    /// gets its own result code (unknown topic or partition, not held by
    /// the member, past the log end).
    ///
    /// # Errors
    /// `Group` when the group cannot be created, was deleted meanwhile, or
    /// the member is not one of its members (or none is named while it has
    /// members); `Storage` when the offsets log fails.
    pub fn commit(
        &self,
        topics: &Topics,
        req: OffsetCommitRequest,
        max_groups: usize,
    ) -> Result<OffsetCommitResponse, BrokerError> {
        self.check_coordinator()?;
        let slot = self.slot_or_create(&req.group, max_groups)?;
        let (results, accepted, pending) = {
            let mut group = slot.lock();
            if group.deleted {
                return Err(GroupError::Deleted { group: req.group }.into());
            }
            group.expire(Instant::now());
            let member = group.committer(&req.group, &req.member_id)?;
            let (results, accepted) = check_commits(topics, &req.group, member, req.offsets);
            if accepted.is_empty() {
                return Ok(OffsetCommitResponse { results });
            }
            let pending = self.backend.append(&offset_entries(&req.group, &accepted))?;
            (results, accepted, pending)
        };
        let position = pending.position();
        self.backend.sync(pending)?;
        slot.lock().apply_synced(accepted, position);
        Ok(OffsetCommitResponse { results })
    }

    /// Reads committed offsets.
    ///
    /// # Errors
    /// `Group` (`NotCoordinator`) when this broker does not coordinate.
    pub fn fetch_offsets(&self, req: &OffsetFetchRequest) -> Result<OffsetFetchResponse, BrokerError> {
        self.check_coordinator()?;
        let slot = self.slot(&req.group);
        let guard = slot.as_ref().map(|s| s.lock());
        let group = guard.as_deref();
        let found = |tp: &Tp| group.and_then(|g| g.offsets.get(tp)).map(|(c, _)| c.clone());
        let offsets = if req.partitions.is_empty() {
            group
                .map(|g| g.offsets.iter().map(|(tp, (c, _))| (tp.clone(), Some(c.clone()))).collect())
                .unwrap_or_default()
        } else {
            req.partitions
                .iter()
                .map(|p| {
                    let tp = Tp::new(p.topic.clone(), p.partition);
                    let committed = found(&tp);
                    (tp, committed)
                })
                .collect::<Vec<_>>()
        };
        Ok(OffsetFetchResponse {
            offsets: offsets
                .into_iter()
                .map(|(Tp { topic, partition }, c)| FetchedOffset {
                    topic,
                    partition,
                    offset: c.as_ref().map_or(NO_OFFSET, |c| c.offset),
                    metadata: c.map(|c| c.metadata).unwrap_or_default(),
                    error_code: ErrorCode::None,
                })
                .collect(),
        })
    }

    /// Every group with members or offsets.
    pub fn list(&self) -> Vec<GroupListing> {
        let now = Instant::now();
        let mut out: Vec<GroupListing> = self
            .slots()
            .into_iter()
            .filter_map(|(name, slot)| {
                let mut g = slot.lock();
                g.expire(now);
                (!g.is_unused() && !g.deleted).then(|| GroupListing {
                    group: name,
                    state: g.state().into(),
                    members: (g.members.len() + g.classic_members) as u32,
                })
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Flushes and closes the offsets log. Blocking.
    ///
    /// # Errors
    /// `Storage` when the final flush fails.
    pub fn close(&self) -> Result<(), BrokerError> {
        self.backend.close()
    }
}
