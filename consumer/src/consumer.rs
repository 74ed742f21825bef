//! The consumer: a heartbeat task that follows the group's assignment, a
//! fetcher task that prefetches into a bounded channel, an auto-commit
//! task, and `poll` that hands records to the application.
//!
//! Offsets per partition: `position` is the next offset to fetch;
//! `delivered` follows the last record handed out by `poll`; `processed`
//! catches up with `delivered` when the next `poll` starts (the application
//! is done with what it was given). Auto-commit and revocation commit
//! `processed`; `commit()` and `close()` commit `delivered`.
//!
//! Fetching, and how a partition whose fetches fail backs off and is
//! reported, is in [`fetcher`].

mod builder;
mod fetcher;

pub use builder::ConsumerBuilder;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::api::{
    CommitOffset, GroupHeartbeatRequest, ListOffsetsPartition, ListOffsetsRequest, OffsetCommitRequest,
    OffsetFetchRequest, OffsetSpec, TopicPartition, TopicPartitions, LEAVE_EPOCH, NO_OFFSET,
};
use sluice_protocol::batch::OwnedHeader;
use sluice_protocol::client::{ClientError, Connection};
use sluice_protocol::ErrorCode;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;

use crate::error::ConsumerError;

/// A partition: topic and index.
pub type Tp = (Arc<str>, u32);

/// Where to start in a partition with no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still stored.
    #[default]
    Earliest,
    /// Only records written from now on.
    Latest,
}

/// A change of the partitions this consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentEvent {
    /// These partitions were given to this consumer.
    Assigned(Vec<(String, u32)>),
    /// These partitions were taken away (after the auto-commit of what was
    /// processed, when auto-commit is on).
    Revoked(Vec<(String, u32)>),
}

/// One record, its key and value sharing the fetched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<OwnedHeader>,
}

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    position: u64,
    delivered: u64,
    processed: u64,
    committed: Option<u64>,
    /// Bumped on assignment and seek: older fetch results are dropped.
    epoch: u64,
    /// Fetches of this partition that failed in a row (at this epoch).
    failures: u32,
    /// Not fetched before this after a failure (the backoff).
    retry_at: Option<Instant>,
}

impl PartitionState {
    /// A partition read from `offset` at `epoch`, without failures.
    fn at(offset: u64, committed: Option<u64>, epoch: u64) -> Self {
        Self {
            position: offset,
            delivered: offset,
            processed: offset,
            committed,
            epoch,
            failures: 0,
            retry_at: None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    member_id: String,
    member_epoch: u32,
    parts: HashMap<Tp, PartitionState>,
    next_epoch: u64,
}

/// Fetched records of one partition, or its failure to report (both
/// dropped when the partition's epoch moved on: revoked or sought).
#[derive(Debug)]
enum Chunk {
    Records { tp: Tp, epoch: u64, records: Vec<ConsumerRecord> },
    Failed { tp: Tp, epoch: u64, error: ConsumerError },
}

#[derive(Debug)]
struct Inner {
    config: ConsumerBuilder,
    conn: tokio::sync::Mutex<Connection>,
    state: Mutex<State>,
    chunks: tokio::sync::Mutex<mpsc::Receiver<Chunk>>,
    wake_fetcher: Notify,
    wake_heartbeat: Notify,
    closed: AtomicBool,
    events: broadcast::Sender<AssignmentEvent>,
    /// A failure that arrived while `poll` had records to return: the
    /// next `poll` returns it.
    deferred: Mutex<Option<ConsumerError>>,
}

fn names(tps: &[Tp]) -> Vec<(String, u32)> {
    tps.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

fn grouped(tps: impl Iterator<Item = Tp>) -> Vec<TopicPartitions> {
    let mut by: std::collections::BTreeMap<Arc<str>, Vec<u32>> = Default::default();
    for (t, p) in tps {
        by.entry(t).or_default().push(p);
    }
    by.into_iter()
        .map(|(t, mut partitions)| {
            partitions.sort_unstable();
            TopicPartitions { topic: t.to_string(), partitions }
        })
        .collect()
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn conn(&self) -> Result<Connection, ConsumerError> {
        let mut conn = self.conn.lock().await;
        if conn.is_closed() {
            *conn = Connection::connect(&self.config.bootstrap, &self.config.client_id).await?;
        }
        Ok(conn.clone())
    }

    /// Starting positions: committed offsets (with a group), else the reset policy.
    async fn add_partitions(&self, tps: Vec<Tp>) -> Result<(), ConsumerError> {
        if tps.is_empty() {
            return Ok(());
        }
        let conn = self.conn().await?;
        let mut committed: HashMap<Tp, u64> = HashMap::new();
        if let Some(group) = &self.config.group {
            let req = OffsetFetchRequest {
                group: group.clone(),
                partitions: tps
                    .iter()
                    .map(|(t, p)| TopicPartition { topic: t.to_string(), partition: *p })
                    .collect(),
            };
            for o in conn.call(&req).await?.offsets {
                if o.offset != NO_OFFSET {
                    committed.insert((Arc::from(o.topic.as_str()), o.partition), o.offset);
                }
            }
        }
        let spec = match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        };
        let missing: Vec<&Tp> = tps.iter().filter(|tp| !committed.contains_key(*tp)).collect();
        let mut reset: HashMap<Tp, u64> = HashMap::new();
        if !missing.is_empty() {
            let req = ListOffsetsRequest {
                partitions: missing
                    .iter()
                    .map(|(t, p)| ListOffsetsPartition { topic: t.to_string(), partition: *p, spec })
                    .collect(),
            };
            for p in conn.call(&req).await?.partitions {
                if p.error_code.is_ok() {
                    reset.insert((Arc::from(p.topic.as_str()), p.partition), p.offset);
                }
            }
        }
        {
            let mut state = self.state();
            for tp in &tps {
                let start = committed.get(tp).or_else(|| reset.get(tp)).copied().unwrap_or(0);
                state.next_epoch += 1;
                let epoch = state.next_epoch;
                state.parts.insert(tp.clone(), PartitionState::at(start, committed.get(tp).copied(), epoch));
            }
        }
        let _ = self.events.send(AssignmentEvent::Assigned(names(&tps)));
        self.wake_fetcher.notify_one();
        Ok(())
    }

    /// Commits `delivered` (all) or `processed` offsets of `only` (or every
    /// partition) that moved since the last commit.
    async fn commit(&self, delivered: bool, only: Option<&[Tp]>) -> Result<(), ConsumerError> {
        let offsets: Vec<(Tp, u64)> = {
            let state = self.state();
            state
                .parts
                .iter()
                .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
                .map(|(tp, s)| (tp.clone(), if delivered { s.delivered } else { s.processed }, s.committed))
                .filter(|(_, o, committed)| *committed != Some(*o))
                .map(|(tp, o, _)| (tp, o))
                .collect()
        };
        self.commit_exact(offsets).await
    }

    /// Commits exactly these offsets.
    async fn commit_exact(&self, offsets: Vec<(Tp, u64)>) -> Result<(), ConsumerError> {
        let Some(group) = self.config.group.clone() else { return Ok(()) };
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = {
            let state = self.state();
            (state.member_id.clone(), state.member_epoch)
        };
        let req = OffsetCommitRequest {
            group,
            member_id,
            member_epoch,
            offsets: offsets
                .iter()
                .map(|((t, p), o)| CommitOffset {
                    topic: t.to_string(),
                    partition: *p,
                    offset: *o,
                    metadata: String::new(),
                })
                .collect(),
        };
        let resp = self.conn().await?.call(&req).await?;
        let mut failed = resp.results.iter().filter(|r| !r.error_code.is_ok());
        let first = failed.next().map(|r| r.error_code);
        let mut state = self.state();
        for ((tp, o), r) in offsets.iter().zip(&resp.results) {
            if r.error_code.is_ok() {
                if let Some(s) = state.parts.get_mut(tp) {
                    s.committed = Some(*o);
                }
            }
        }
        match first {
            Some(code) => Err(ConsumerError::Commit { count: 1 + failed.count(), code }),
            None => Ok(()),
        }
    }

    async fn run_heartbeats(self: Arc<Self>) {
        let group = self.config.group.clone().unwrap_or_default();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into());
        let mut interval = Duration::from_millis(500);
        while !self.closed.load(Ordering::Acquire) {
            let (member_id, member_epoch, owned) = {
                let s = self.state();
                (s.member_id.clone(), s.member_epoch, grouped(s.parts.keys().cloned()))
            };
            let req = GroupHeartbeatRequest {
                group: group.clone(),
                member_id,
                member_epoch,
                client_host: host.clone(),
                session_timeout_ms: self.config.session_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
                topics: self.config.topics.clone(),
                owned,
            };
            let result = match self.conn().await {
                Ok(conn) => conn.call(&req).await.map_err(ConsumerError::from),
                Err(e) => Err(e),
            };
            let mut again_now = false;
            match result {
                Ok(resp) => {
                    interval = Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(10)));
                    let target: BTreeSet<Tp> = resp
                        .assignment
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| (Arc::<str>::from(t.topic.as_str()), *p)))
                        .collect();
                    let (revoked, added) = {
                        let mut s = self.state();
                        s.member_id = resp.member_id;
                        s.member_epoch = resp.member_epoch;
                        let revoked: Vec<Tp> =
                            s.parts.keys().filter(|tp| !target.contains(*tp)).cloned().collect();
                        let added: Vec<Tp> =
                            target.iter().filter(|tp| !s.parts.contains_key(*tp)).cloned().collect();
                        (revoked, added)
                    };
                    if !revoked.is_empty() {
                        if self.config.auto_commit {
                            if let Err(e) = self.commit(false, Some(&revoked)).await {
                                tracing::warn!(error = %e, "commit before revocation failed");
                            }
                        }
                        let mut s = self.state();
                        for tp in &revoked {
                            s.parts.remove(tp);
                        }
                        drop(s);
                        let _ = self.events.send(AssignmentEvent::Revoked(names(&revoked)));
                        again_now = true; // report the release at once
                    }
                    if let Err(e) = self.add_partitions(added).await {
                        tracing::warn!(error = %e, "could not start assigned partitions");
                    }
                }
                Err(ConsumerError::Client(ClientError::Server {
                    code: ErrorCode::UnknownMemberId, ..
                })) => {
                    let lost: Vec<Tp> = {
                        let mut s = self.state();
                        s.member_id.clear();
                        s.member_epoch = 0;
                        s.parts.drain().map(|(tp, _)| tp).collect()
                    };
                    if !lost.is_empty() {
                        let _ = self.events.send(AssignmentEvent::Revoked(names(&lost)));
                    }
                    again_now = true;
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed; retrying"),
            }
            if !again_now {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = self.wake_heartbeat.notified() => {}
                }
            }
        }
    }

    fn seek_internal(&self, tp: &Tp, offset: u64, only_epoch: Option<u64>) {
        let mut s = self.state();
        s.next_epoch += 1;
        let epoch = s.next_epoch;
        if let Some(ps) = s.parts.get_mut(tp).filter(|ps| only_epoch.is_none_or(|e| e == ps.epoch)) {
            *ps = PartitionState::at(offset, ps.committed, epoch);
        }
        drop(s);
        self.wake_fetcher.notify_one();
    }

    async fn run_auto_commit(self: Arc<Self>) {
        while !self.closed.load(Ordering::Acquire) {
            tokio::time::sleep(self.config.auto_commit_interval).await;
            if let Err(e) = self.commit(false, None).await {
                tracing::debug!(error = %e, "auto-commit failed");
            }
        }
    }
}

/// An asynchronous consumer.
#[derive(Debug)]
pub struct Consumer {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Consumer {
    /// A builder with documented defaults.
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder::default()
    }

    /// The next records (one or more partitions' worth), waiting at most
    /// `timeout`; empty when none arrived. Records handed out by the
    /// previous call count as processed from now on.
    ///
    /// # Errors
    ///
    /// A partition whose fetches fail is reported here, naming it and the
    /// offset (see [`ConsumerError::position`]) — [`ConsumerError::Fetch`]
    /// for the broker's code (`CORRUPT_BATCH` at once, a retriable code
    /// after repeated failures), [`ConsumerError::CorruptBatch`] for a batch
    /// that failed its CRC here — while other partitions keep flowing and
    /// the failing one is refetched with backoff. To skip a corrupt batch,
    /// `seek` past the offset (`offset + 1`; repeat while the error names
    /// the same batch).
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ConsumerError::Closed);
        }
        for s in self.inner.state().parts.values_mut() {
            s.processed = s.delivered;
        }
        if let Some(e) = self.inner.deferred.lock().ok().and_then(|mut d| d.take()) {
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.chunks.lock().await;
        let mut out = Vec::new();
        loop {
            let chunk = if out.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return Err(ConsumerError::Closed),
                    Err(_) => return Ok(out),
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(_) => return Ok(out),
                }
            };
            match chunk {
                Chunk::Failed { tp, epoch, error } => {
                    if self.inner.state().parts.get(&tp).is_none_or(|ps| ps.epoch != epoch) {
                        continue; // sought past, or revoked
                    }
                    if out.is_empty() {
                        return Err(error);
                    }
                    if let Ok(mut d) = self.inner.deferred.lock() {
                        *d = Some(error);
                    }
                    return Ok(out);
                }
                Chunk::Records { tp, epoch, mut records } => {
                    let mut state = self.inner.state();
                    let Some(ps) = state.parts.get_mut(&tp).filter(|ps| ps.epoch == epoch) else { continue };
                    records.retain(|r| r.offset >= ps.delivered);
                    if let Some(last) = records.last() {
                        ps.delivered = last.offset + 1;
                    }
                    out.append(&mut records);
                }
            }
        }
    }

    /// Commits everything handed out by `poll` so far (the application has
    /// processed it).
    pub async fn commit(&self) -> Result<(), ConsumerError> {
        self.inner.commit(true, None).await
    }

    /// Commits exactly these offsets (the next offset to read, per
    /// partition); other partitions are left alone.
    pub async fn commit_offsets(
        &self,
        offsets: impl IntoIterator<Item = ((String, u32), u64)>,
    ) -> Result<(), ConsumerError> {
        let offsets = offsets
            .into_iter()
            .map(|((topic, partition), offset)| ((Arc::from(topic.as_str()), partition), offset))
            .collect();
        self.inner.commit_exact(offsets).await
    }

    /// Reads `partition` from `offset` next (and forgets its fetch failures).
    pub fn seek(&self, topic: &str, partition: u32, offset: u64) {
        self.inner.seek_internal(&(Arc::from(topic), partition), offset, None);
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self.inner.state().parts.keys().map(|(t, p)| (t.to_string(), *p)).collect();
        v.sort();
        v
    }

    /// The committed offset of each assigned partition, as this consumer knows it.
    pub fn committed(&self) -> HashMap<(String, u32), u64> {
        self.inner
            .state()
            .parts
            .iter()
            .filter_map(|((t, p), s)| s.committed.map(|c| ((t.to_string(), *p), c)))
            .collect()
    }

    /// Assignment changes, from now on.
    pub fn assignment_events(&self) -> broadcast::Receiver<AssignmentEvent> {
        self.inner.events.subscribe()
    }

    /// Commits what was handed out (auto-commit mode), leaves the group so
    /// its partitions move at once, and stops.
    pub async fn close(&self) -> Result<(), ConsumerError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let committed =
            if self.inner.config.auto_commit { self.inner.commit(true, None).await } else { Ok(()) };
        if let (Some(group), false) = (&self.inner.config.group, self.inner.config.topics.is_empty()) {
            let member_id = self.inner.state().member_id.clone();
            if !member_id.is_empty() {
                let req = GroupHeartbeatRequest {
                    group: group.clone(),
                    member_id,
                    member_epoch: LEAVE_EPOCH,
                    client_host: String::new(),
                    session_timeout_ms: 0,
                    topics: Vec::new(),
                    owned: Vec::new(),
                };
                if let Ok(conn) = self.inner.conn().await {
                    let _ = conn.call(&req).await;
                }
            }
        }
        let tasks: Vec<_> = self.tasks.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        committed
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Dropped without close(): stop the tasks; the session times out.
        self.inner.closed.store(true, Ordering::Release);
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}
