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
mod group;
pub mod store;
mod topic_ids;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_protocol::api::{
    CommitOffset, FetchedOffset, GroupHeartbeatRequest, GroupHeartbeatResponse, GroupListing,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, PartitionResult,
    LEAVE_EPOCH, NO_OFFSET,
};
use sluice_protocol::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::BrokerError;
use crate::topics::Topics;
use assign::Tp;
use group::{group_tps, Group, Member};
use store::{Committed, OffsetKey, OffsetStore};

/// Shortest and longest session timeouts accepted.
const SESSION_TIMEOUT_RANGE: (u32, u32) = (100, 300_000);
/// Heartbeat interval handed to members while their group reconciles.
const RECONCILING_HEARTBEAT_MS: u32 = 50;

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

/// All groups and the offsets store.
#[derive(Debug)]
pub struct Coordinator {
    /// Group name to its slot. Held only to find, add or remove a slot.
    groups: Mutex<HashMap<String, Arc<Slot>>>,
    store: OffsetStore,
    next_member: AtomicU64,
}

/// Why a group lookup found nothing to use.
fn deleted(group: &str) -> BrokerError {
    BrokerError::Group(ErrorCode::UnknownMemberId, format!("group `{group}` was deleted meanwhile: rejoin"))
}

impl Coordinator {
    /// Opens the offsets store and rebuilds the groups from it. Blocking.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, BrokerError> {
        let (store, offsets) = OffsetStore::open(data_dir)?;
        let mut groups: HashMap<String, Group> = HashMap::new();
        for ((group, topic, partition), committed) in offsets {
            groups.entry(group).or_default().offsets.insert((topic, partition), (committed, 0));
        }
        let groups = groups.into_iter().map(|(name, g)| (name, Slot::new(g))).collect();
        Ok(Self { groups: Mutex::new(groups), store, next_member: AtomicU64::new(1) })
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
    pub fn slot_or_create(&self, name: &str, max_groups: usize) -> Result<Arc<Slot>, BrokerError> {
        validate_group(name)?;
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
            return Err(BrokerError::Group(
                ErrorCode::TooManyGroups,
                format!("cannot create group `{name}`: the broker keeps {} groups (max_groups = {max_groups}); delete unused groups or raise max_groups", map.len()),
            ));
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

    /// Partition counts of the topics some member subscribes to.
    fn counts(topics: &Topics, subscribed: &BTreeSet<String>) -> BTreeMap<String, u32> {
        subscribed
            .iter()
            .filter_map(|t| topics.get(t).map(|topic| (t.clone(), topic.partitions.len() as u32)))
            .collect()
    }

    /// Joins, heartbeats or leaves group `slot` (from
    /// [`slot_or_create`](Self::slot_or_create)). Blocking: may recompute
    /// the group's assignment; run it on a blocking thread, in the group's
    /// [`turn`](Slot::turn).
    pub fn heartbeat(
        &self,
        slot: &Slot,
        topics: &Topics,
        client_id: &str,
        req: GroupHeartbeatRequest,
    ) -> Result<GroupHeartbeatResponse, BrokerError> {
        let now = Instant::now();
        let mut group = slot.lock();
        if group.deleted {
            return Err(deleted(&req.group));
        }
        let group = &mut *group;
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
        for (_, slot) in self.slots() {
            slot.lock().expire(now);
        }
    }

    /// Commits offsets durably (creating the group, within `max_groups`).
    /// Blocking (waits for the fsync, outside every lock).
    pub fn commit(
        &self,
        topics: &Topics,
        req: OffsetCommitRequest,
        max_groups: usize,
    ) -> Result<OffsetCommitResponse, BrokerError> {
        let slot = self.slot_or_create(&req.group, max_groups)?;
        let mut results = Vec::with_capacity(req.offsets.len());
        let mut accepted: Vec<(Tp, Committed)> = Vec::new();
        let sync_to = {
            let mut group = slot.lock();
            if group.deleted {
                return Err(deleted(&req.group));
            }
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
                    accepted.push((
                        tp.clone(),
                        Committed { offset, metadata, topic_id: topics.get(&tp.0).map(|t| t.id()) },
                    ));
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
        let mut group = slot.lock();
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
        let mut out: Vec<GroupListing> = self
            .slots()
            .into_iter()
            .filter_map(|(name, slot)| {
                let mut g = slot.lock();
                g.expire(now);
                (!g.is_unused() && !g.deleted).then(|| GroupListing {
                    group: name,
                    state: g.state().into(),
                    members: g.members.len() as u32,
                })
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Flushes and closes the offsets log. Blocking.
    pub fn close(&self) -> Result<(), BrokerError> {
        Ok(self.store.close()?)
    }
}
