//! A partition's replication state and the rules that depend on its
//! [`Role`] (DESIGN.md §10, docs/cluster.md "Replication"):
//!
//! - The high watermark (what consumers see, what long polls and durable
//!   acknowledgements wait for) is the log's own (its fsync policy's),
//!   capped by replication ([`Log::set_high_watermark_limit`]): on a leader
//!   by the smallest durable offset the *other* ISR members last reported
//!   (never below the high watermark already published: it never
//!   decreases), on a follower by the leader's high watermark. A single
//!   node, and a leader whose ISR is itself, have no cap.
//! - A leader stamps its epoch into every batch it appends; a follower
//!   appends the leader's batches verbatim.
//! - Writes are refused unless this broker leads, its lease is current,
//!   and it has not learned of a newer epoch (a stale leader).
//! - A follower's log is cut back (live, under the partition's write lock)
//!   to where it agrees with the leader before it fetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_protocol::batch::RecordBatch;
use tokio::sync::watch;

use super::{blocking_in_place, lock, read, write, Partition};
use crate::errors::BrokerError;
use crate::storage::{AppendInfo, FsyncPolicy, StorageError};

/// A broker (and controller node) id.
pub type NodeId = u64;

/// Longest a live truncation waits for readers to let go of the log.
const TRUNCATE_PATIENCE: Duration = Duration::from_secs(10);

/// What a partition is on this broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Role {
    /// A single-node broker: leader of everything at epoch 0, no replicas.
    #[default]
    Single,
    /// This broker leads the partition at `epoch`.
    Leader {
        /// The leader epoch (stamped into every batch appended).
        epoch: u32,
        /// Every replica, this broker included, in preference order.
        replicas: Vec<NodeId>,
        /// The in-sync replicas, this broker included.
        isr: Vec<NodeId>,
        /// Durable writes need at least this many in the ISR.
        min_insync_replicas: usize,
    },
    /// Another broker leads; this one fetches from it.
    Follower {
        /// The leader epoch this broker believes current.
        epoch: u32,
        /// The leader's node id.
        leader: NodeId,
        /// The leader's peer address (`--peer-listen`), fetched from.
        leader_peer_addr: String,
    },
    /// No live in-sync replica: nobody leads; writes and reads refused.
    Offline {
        /// The epoch the controller moved it offline at.
        epoch: u32,
    },
}

impl Role {
    /// The leader epoch this role carries (0 for a single node).
    pub fn epoch(&self) -> u32 {
        match self {
            Role::Single => 0,
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } | Role::Offline { epoch } => *epoch,
        }
    }
}

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// The follower's durable offset (its own high watermark) as it last
    /// reported it.
    pub durable: u64,
    /// The offset it last fetched from.
    pub fetch_offset: u64,
    /// Whether it fetched at all in this leader epoch.
    pub fetched: bool,
    /// When it was last caught up to this leader's log end.
    pub last_caught_up: Instant,
    /// The log end when the last answer to it was sent, and when.
    last_answer: Option<(u64, Instant)>,
}

impl FollowerProgress {
    fn new(now: Instant) -> Self {
        Self { durable: 0, fetch_offset: 0, fetched: false, last_caught_up: now, last_answer: None }
    }
}

/// A partition's role plus what replication tracks for it.
#[derive(Debug)]
pub struct ReplicaState {
    /// The role, watched by waits that must end when it changes.
    role: watch::Sender<Role>,
    /// This broker's node id (set by the replica manager).
    node_id: OnceLock<NodeId>,
    /// The broker's lease end (unix ms), shared by the replica manager; a
    /// leader refuses writes past it.
    lease: OnceLock<Arc<AtomicU64>>,
    /// A follower fetched with a newer epoch: this leader is stale until
    /// its role is updated.
    stale: AtomicBool,
    /// Leader side: each follower's progress in the current epoch.
    followers: Mutex<HashMap<NodeId, FollowerProgress>>,
    /// Follower side: the leader's high watermark from the last fetch.
    leader_hw: AtomicU64,
    /// The log end, bumped by every append (long-polling replica fetches).
    log_end: watch::Sender<u64>,
    /// Held while a role change moves the high watermark and publishes
    /// the role, and while an acknowledgement decides: it sees the high
    /// watermark and the ISR that produced it together.
    update: Mutex<()>,
}

impl Default for ReplicaState {
    fn default() -> Self {
        Self {
            role: watch::Sender::new(Role::Single),
            node_id: OnceLock::new(),
            lease: OnceLock::new(),
            stale: AtomicBool::new(false),
            followers: Mutex::new(HashMap::new()),
            leader_hw: AtomicU64::new(0),
            log_end: watch::Sender::new(0),
            update: Mutex::new(()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Partition {
    /// The partition's role on this broker.
    pub fn role(&self) -> Role {
        self.role.role.borrow().clone()
    }

    /// A receiver that sees role changes.
    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.role.subscribe()
    }

    /// Sets the partition's role (the replica manager's call; alone it
    /// starts or stops no fetcher, and a leader's high watermark needs the
    /// node id the manager attaches). A new epoch forgets followers'
    /// progress; a changed role clears staleness; the same role again
    /// changes nothing.
    pub fn set_role(&self, role: Role) {
        if *self.role.role.borrow() == role {
            return;
        }
        let (epoch_changed, old_isr) = {
            let old = self.role.role.borrow();
            let old_isr = match &*old {
                Role::Leader { isr, .. } => Some(isr.clone()),
                _ => None,
            };
            (old.epoch() != role.epoch(), old_isr)
        };
        let now = Instant::now();
        match (&role, old_isr) {
            // The same leadership, its ISR changed: a replica dropped from
            // it (by this leader, or by the controller when it restarted)
            // must fetch again before it counts, so that what its old
            // incarnation reported cannot bring it straight back.
            (Role::Leader { isr, .. }, Some(old_isr)) if !epoch_changed => {
                let mut followers = lock(&self.role.followers);
                for r in old_isr.iter().filter(|r| !isr.contains(r)) {
                    if let Some(f) = followers.get_mut(r) {
                        *f = FollowerProgress::new(now);
                    }
                }
            }
            _ => {
                let mut followers = lock(&self.role.followers);
                followers.clear();
                if let Role::Leader { replicas, .. } = &role {
                    for r in replicas.iter().filter(|r| Some(*r) != self.role.node_id.get()) {
                        followers.insert(*r, FollowerProgress::new(now));
                    }
                }
            }
        }
        self.role.stale.store(false, Ordering::Release);
        let _deciding = lock(&self.role.update);
        self.apply_high_watermark_limit(&role);
        self.role.role.send_replace(role);
    }

    /// Fences a clustered broker's partition until the controller's role
    /// reaches it: `Offline` at epoch 0, refusing writes and reads. A
    /// partition starts as a single node's (`Single`, which acknowledges
    /// on its own durability), so without this a restarted node would
    /// acknowledge writes that no other replica holds (and that truncation
    /// to the elected leader's log later removes). A no-op once a role was set.
    pub fn fence(&self) {
        if *self.role.role.borrow() == Role::Single {
            self.set_role(Role::Offline { epoch: 0 });
        }
    }

    /// Tells the partition its broker's node id and lease (the replica
    /// manager's call, before the first role).
    pub fn attach_replication(&self, node_id: NodeId, lease: Arc<AtomicU64>) {
        let _ = self.role.node_id.set(node_id);
        let _ = self.role.lease.set(lease);
    }

    /// Refuses a write unless this broker leads the partition (with a
    /// current lease, and not stale), and a `durable` one when the ISR is
    /// under `min_insync_replicas`.
    ///
    /// # Errors
    /// `NotLeader`, `NotEnoughReplicas`.
    pub fn check_writable(&self, durable: bool) -> Result<(), BrokerError> {
        match self.role() {
            Role::Single => Ok(()),
            Role::Leader { isr, min_insync_replicas, .. } => {
                let lapsed = self.role.lease.get().is_some_and(|l| l.load(Ordering::Acquire) < now_ms());
                if lapsed || self.is_stale() {
                    return Err(self.not_leader());
                }
                if durable && isr.len() < min_insync_replicas {
                    return Err(BrokerError::NotEnoughReplicas {
                        topic: self.topic.to_string(),
                        partition: self.index,
                        isr: isr.len(),
                        min: min_insync_replicas,
                    });
                }
                Ok(())
            }
            Role::Follower { .. } | Role::Offline { .. } => Err(self.not_leader()),
        }
    }

    /// Refuses a consumer's read unless this broker leads the partition.
    ///
    /// # Errors
    /// `NotLeader`.
    pub fn check_readable(&self) -> Result<(), BrokerError> {
        match self.role() {
            Role::Single | Role::Leader { .. } => Ok(()),
            Role::Follower { .. } | Role::Offline { .. } => Err(self.not_leader()),
        }
    }

    pub(super) fn not_leader(&self) -> BrokerError {
        BrokerError::NotLeader { topic: self.topic.to_string(), partition: self.index }
    }

    /// Whether a follower showed this leader a newer epoch.
    pub fn is_stale(&self) -> bool {
        self.role.stale.load(Ordering::Acquire)
    }

    /// A follower fetched with a newer epoch: stop acknowledging and
    /// refuse writes until the role is updated.
    pub fn mark_stale(&self) {
        if !self.role.stale.swap(true, Ordering::AcqRel) {
            tracing::warn!(topic = %self.topic, partition = self.index, "a follower knows a newer leader epoch: this leader is stale and refuses writes until its role is updated");
            self.role.role.send_modify(|_| {}); // wakes acknowledgement waits
        }
    }

    /// The epoch stamped into appended batches (`partition_leader_epoch`).
    pub(super) fn append_epoch(&self) -> i32 {
        i32::try_from(self.role.role.borrow().epoch()).unwrap_or(i32::MAX)
    }

    /// Publishes the log end after an append (wakes long-polling replica fetches).
    pub(super) fn appended_to(&self, end: u64) {
        self.role.log_end.send_if_modified(|v| std::mem::replace(v, end) != end);
    }

    /// A receiver that sees appends (the log end).
    pub fn watch_log_end(&self) -> watch::Receiver<u64> {
        self.role.log_end.subscribe()
    }

    /// Each follower's progress (leader side), for metrics and the ISR check.
    pub fn follower_progress(&self) -> HashMap<NodeId, FollowerProgress> {
        lock(&self.role.followers).clone()
    }

    /// Records a follower's fetch (leader side) and recomputes the high
    /// watermark. Caught up: it fetched from the log end as it was now, or
    /// as it was when this leader last answered it.
    pub fn record_follower_fetch(&self, follower: NodeId, fetch_offset: u64, durable: u64) {
        let now = Instant::now();
        let end = self.log().log_end_offset();
        {
            let mut followers = lock(&self.role.followers);
            let f = followers.entry(follower).or_insert_with(|| FollowerProgress::new(now));
            f.durable = f.durable.max(durable.min(fetch_offset).min(end));
            tracing::debug!(topic = %self.topic, partition = self.index, follower, fetch_offset, reported = durable, counted = f.durable, log_end_offset = end, "follower fetch");
            f.fetch_offset = fetch_offset;
            f.fetched = true;
            if fetch_offset >= end {
                f.last_caught_up = now;
            } else if let Some((answered_end, at)) = f.last_answer {
                if fetch_offset >= answered_end {
                    f.last_caught_up = f.last_caught_up.max(at);
                }
            }
        }
        self.update_high_watermark_limit();
    }

    /// Notes the log end as of an answer to `follower` (leader side).
    pub fn record_follower_answer(&self, follower: NodeId, log_end: u64) {
        if let Some(f) = lock(&self.role.followers).get_mut(&follower) {
            f.last_answer = Some((log_end, Instant::now()));
        }
    }

    /// Follower side: the leader's high watermark from a fetch answer.
    pub fn set_leader_high_watermark(&self, hw: u64) {
        self.role.leader_hw.fetch_max(hw, Ordering::AcqRel);
        self.update_high_watermark_limit();
    }

    /// Recomputes replication's cap on the high watermark from the role
    /// and publishes the high watermark.
    pub fn update_high_watermark_limit(&self) {
        let role = self.role.role.borrow().clone();
        self.apply_high_watermark_limit(&role);
    }

    /// Sets the cap on the high watermark that `role` implies, and
    /// publishes the high watermark.
    fn apply_high_watermark_limit(&self, role: &Role) {
        let me = self.role.node_id.get().copied();
        let hw_now = self.high_watermark();
        let limit = match role {
            Role::Single => u64::MAX,
            Role::Leader { isr, .. } => {
                let followers = lock(&self.role.followers);
                isr.iter()
                    .filter(|r| Some(**r) != me)
                    .map(|r| followers.get(r).map_or(0, |f| f.durable))
                    .min()
                    .map_or(u64::MAX, |m| m.max(hw_now))
            }
            Role::Follower { .. } => self.role.leader_hw.load(Ordering::Acquire),
            Role::Offline { .. } => hw_now,
        };
        let log = read(&self.log);
        log.set_high_watermark_limit(limit);
        self.publish_high_watermark(&log);
        if let Role::Leader { epoch, isr, .. } = role {
            tracing::debug!(topic = %self.topic, partition = self.index, epoch, ?isr, limit, local = log.local_high_watermark(), hw = self.high_watermark(), "leader high watermark");
        }
    }

    /// After this broker's own flush covered a batch ending at `last`:
    /// waits until the high watermark covers it too (every other ISR
    /// member made it durable). Immediate for a single node and a leader
    /// alone in its ISR.
    ///
    /// # Errors
    /// `NotLeader` when the role changes or the leader turns out stale
    /// first; `NotEnoughReplicas` when the ISR shrinks below
    /// `min_insync_replicas` first; `Timeout`.
    pub(super) async fn wait_replicated(&self, last: u64, timeout: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let epoch = match self.role() {
            Role::Single => return Ok(()),
            Role::Leader { epoch, .. } => epoch,
            Role::Follower { .. } | Role::Offline { .. } => return Err(self.not_leader()),
        };
        let mut roles = self.role.role.subscribe();
        let mut hw = self.hw.subscribe();
        loop {
            {
                // One consistent view: the ISR and the high watermark it made.
                let _deciding = lock(&self.role.update);
                let isr_short = match &*roles.borrow_and_update() {
                    Role::Leader { epoch: e, isr, min_insync_replicas, .. } if *e == epoch => {
                        (isr.len() < *min_insync_replicas).then_some((isr.len(), *min_insync_replicas))
                    }
                    _ => return Err(self.not_leader()),
                };
                if self.is_stale() {
                    return Err(self.not_leader());
                }
                if let Some((isr, min)) = isr_short {
                    // Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: fewer copies
                    // than promised would hold it.
                    let (topic, partition) = (self.topic.to_string(), self.index);
                    return Err(BrokerError::NotEnoughReplicas { topic, partition, isr, min });
                }
                if *hw.borrow_and_update() > last {
                    return Ok(());
                }
            }
            tokio::select! {
                r = roles.changed() => r.map_err(|_| BrokerError::ShuttingDown)?,
                r = hw.changed() => r.map_err(|_| BrokerError::ShuttingDown)?,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(BrokerError::Timeout(timeout.as_millis().min(u128::from(u32::MAX)) as u32));
                }
                () = self.cancel.cancelled() => return Err(BrokerError::ShuttingDown),
            }
        }
    }

    /// Follower side: appends a leader's batch verbatim (CRC checked, base
    /// offset and epoch kept) and applies the fsync policy as a produce
    /// does, so the flusher group-commits replica appends.
    ///
    /// # Errors
    /// `CorruptBatch`, and the storage errors of
    /// [`Log::append_replica`](crate::storage::Log::append_replica).
    pub fn append_replica(&self, batch: Bytes) -> Result<AppendInfo, BrokerError> {
        let batch = RecordBatch::new(batch).map_err(BrokerError::CorruptBatch)?;
        batch.verify_crc().map_err(BrokerError::CorruptBatch)?;
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let log = read(&self.log);
        let d = *self.durable.borrow();
        if d.failed {
            return Err(self.failed_error(d.failed_at).into());
        }
        let bytes = batch.as_bytes();
        let info = if log.roll_due(bytes.len(), batch.header().record_count) {
            blocking_in_place(|| log.append_replica(bytes, now))?
        } else {
            log.append_replica(bytes, now)?
        };
        self.counters.messages_in.inc_by(u64::from(batch.header().record_count));
        self.counters.bytes_in.inc_by(bytes.len() as u64);
        self.appends_since_flush.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match log.config().fsync {
            FsyncPolicy::Always => self.flush_wanted.notify_one(),
            FsyncPolicy::Interval(_) => {}
            FsyncPolicy::Never => self.publish_high_watermark(&log),
        }
        if info.rolled {
            self.flush_wanted.notify_one();
        }
        self.appended_to(info.last_offset + 1);
        Ok(info)
    }

    /// Cuts the log back to `offset` while the partition serves (a follower
    /// before it fetches): takes the partition's write lock once no reader
    /// holds the log, truncates it in place, and moves the durable offset
    /// and the high watermark back to the new end if they were past it.
    /// Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// Storage errors of the truncation; `ReadersActive` when readers hold
    /// the log for longer than the patience allows.
    pub fn truncate_live(&self, offset: u64) -> Result<(), StorageError> {
        self.rewrite_live(offset, false, |log| {
            if log.log_end_offset() <= offset {
                return Ok(false);
            }
            log.truncate_to(offset).map(|()| true)
        })
    }

    /// Empties the log and starts it over at `offset` (past its end) while
    /// the partition serves: a follower whose log lies wholly below its
    /// leader's log start ([`Log::reset_to`]). Blocking.
    ///
    /// # Errors
    /// As [`truncate_live`](Self::truncate_live).
    pub fn reset_live(&self, offset: u64) -> Result<(), StorageError> {
        self.rewrite_live(offset, true, |log| log.reset_to(offset).map(|()| true))
    }

    /// Runs `op` on the log alone (no reader holding it, the partition's
    /// write lock taken), then publishes the log's new end, durable offset
    /// and high watermark (moved back, or forward when `forward`: a reset);
    /// `op` answers whether it changed the log.
    fn rewrite_live(
        &self,
        offset: u64,
        forward: bool,
        op: impl Fn(&mut crate::storage::Log) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let deadline = Instant::now() + TRUNCATE_PATIENCE;
        loop {
            {
                let _held = lock(&self.syncing);
                let mut slot = write(&self.log);
                if let Some(log) = Arc::get_mut(&mut slot) {
                    match op(log) {
                        Ok(false) => return Ok(()),
                        Ok(true) => {
                            let (end, durable) = (log.log_end_offset(), log.durable_offset());
                            if forward {
                                self.durable.send_modify(|d| d.offset = durable);
                                self.hw.send_modify(|h| *h = (*h).max(end));
                            } else {
                                self.durable.send_modify(|d| d.offset = d.offset.min(durable));
                                self.hw.send_modify(|h| *h = (*h).min(end));
                            }
                            self.role.log_end.send_replace(end);
                            tracing::warn!(topic = %self.topic, partition = self.index, log_start_offset = log.log_start_offset(), log_end_offset = end, "log rewritten to agree with the leader");
                            return Ok(());
                        }
                        Err(StorageError::ReadersActive { segment }) if Instant::now() < deadline => {
                            tracing::debug!(segment, "truncation waits for readers");
                        }
                        Err(e) => return Err(e),
                    }
                } else if Instant::now() >= deadline {
                    return Err(StorageError::ReadersActive { segment: offset });
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
