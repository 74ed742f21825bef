//! The consumer: a heartbeat task that follows the group's assignment, a
//! fetcher task that prefetches into a bounded channel, an auto-commit
//! task, and `poll` that hands records to the application.
//!
//! Offsets per partition: `position` is the next offset to fetch;
//! `delivered` follows the last record handed out by `poll`; `processed`
//! catches up with `delivered` when the next `poll` starts (the application
//! is done with what it was given). Auto-commit and revocation commit
//! `processed`; `commit()` and `close()` commit `delivered`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::api::{
    CommitOffset, FetchPartition, FetchRequest, GroupHeartbeatRequest, ListOffsetsPartition,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetSpec, TopicPartition, TopicPartitions,
    LEAVE_EPOCH, NO_OFFSET,
};
use sluice_protocol::batch::{split_batches, OwnedHeader};
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

/// Builds a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    bootstrap: String,
    client_id: String,
    group: Option<String>,
    topics: Vec<String>,
    assignment: Vec<(String, u32)>,
    offset_reset: OffsetReset,
    auto_commit: bool,
    auto_commit_interval: Duration,
    session_timeout: Duration,
    fetch_max_wait: Duration,
    fetch_max_bytes: u32,
    prefetch: usize,
}

impl Default for ConsumerBuilder {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9500".into(),
            client_id: "sluice-consumer".into(),
            group: None,
            topics: Vec::new(),
            assignment: Vec::new(),
            offset_reset: OffsetReset::Earliest,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            fetch_max_wait: Duration::from_millis(500),
            // Measured (docs/benchmarks.md): 2 MiB reads 100 B records 25%
            // faster than 8 MiB and 1 KiB records as fast, with a quarter of
            // the poll latency: each response is a fresh allocation the
            // records point into, and smaller ones are reused by the
            // allocator instead of being faulted in page by page.
            fetch_max_bytes: 2 << 20,
            prefetch: 4,
        }
    }
}

impl ConsumerBuilder {
    /// Broker address (default `127.0.0.1:9500`).
    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.bootstrap = addr.into();
        self
    }
    /// Client id (default `sluice-consumer`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }
    /// The consumer group (needed to subscribe and to commit).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Topics to consume as a group member (the broker assigns partitions).
    pub fn subscribe<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }
    /// Partitions to read without group membership.
    pub fn assign<S: Into<String>>(mut self, partitions: impl IntoIterator<Item = (S, u32)>) -> Self {
        self.assignment = partitions.into_iter().map(|(t, p)| (t.into(), p)).collect();
        self
    }
    /// Start of partitions without a committed offset (default earliest).
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }
    /// Commit processed records automatically (default on, with a group).
    pub fn enable_auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }
    /// Auto-commit period (default 5 s).
    pub fn auto_commit_interval(mut self, every: Duration) -> Self {
        self.auto_commit_interval = every;
        self
    }
    /// Removed from the group after this long without a heartbeat (default 10 s).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }
    /// Longest a fetch waits for data (default 500 ms).
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }
    /// Bytes per fetch at most, shared by the assigned partitions (each
    /// gets at least 64 KiB, and at least one whole batch); default 2 MiB.
    pub fn fetch_max_bytes(mut self, bytes: u32) -> Self {
        self.fetch_max_bytes = bytes;
        self
    }
    /// Fetch results buffered ahead of the application (default 4).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Connects, joins the group (when subscribing) and starts fetching.
    pub async fn build(self) -> Result<Consumer, ConsumerError> {
        if !self.topics.is_empty() && self.group.is_none() {
            return Err(ConsumerError::Config(
                "subscribe needs a group; use assign to read without one".into(),
            ));
        }
        if self.topics.is_empty() && self.assignment.is_empty() {
            return Err(ConsumerError::Config(
                "nothing to consume: subscribe to topics or assign partitions".into(),
            ));
        }
        let conn = Connection::connect(&self.bootstrap, &self.client_id).await?;
        let (tx, rx) = mpsc::channel(self.prefetch);
        let (events, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            config: self,
            conn: tokio::sync::Mutex::new(conn),
            state: Mutex::new(State::default()),
            chunks: tokio::sync::Mutex::new(rx),
            wake_fetcher: Notify::new(),
            wake_heartbeat: Notify::new(),
            closed: AtomicBool::new(false),
            events,
        });
        let mut tasks = Vec::new();
        if inner.config.topics.is_empty() {
            let tps: Vec<Tp> =
                inner.config.assignment.iter().map(|(t, p)| (Arc::<str>::from(t.as_str()), *p)).collect();
            inner.add_partitions(tps).await?;
        } else {
            tasks.push(tokio::spawn(Arc::clone(&inner).run_heartbeats()));
        }
        tasks.push(tokio::spawn(Arc::clone(&inner).run_fetcher(tx)));
        if inner.config.group.is_some() && inner.config.auto_commit {
            tasks.push(tokio::spawn(Arc::clone(&inner).run_auto_commit()));
        }
        Ok(Consumer { inner, tasks: Mutex::new(tasks) })
    }
}

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    position: u64,
    delivered: u64,
    processed: u64,
    committed: Option<u64>,
    /// Bumped on assignment and seek: older fetch results are dropped.
    epoch: u64,
}

#[derive(Debug, Default)]
struct State {
    member_id: String,
    member_epoch: u32,
    parts: HashMap<Tp, PartitionState>,
    next_epoch: u64,
}

/// Fetched records of one partition, or a failure to report.
#[derive(Debug)]
enum Chunk {
    Records { tp: Tp, epoch: u64, records: Vec<ConsumerRecord>, next: u64 },
    Failed(ConsumerError),
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
                state.parts.insert(
                    tp.clone(),
                    PartitionState {
                        position: start,
                        delivered: start,
                        processed: start,
                        committed: committed.get(tp).copied(),
                        epoch,
                    },
                );
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

    async fn run_fetcher(self: Arc<Self>, tx: mpsc::Sender<Chunk>) {
        while !self.closed.load(Ordering::Acquire) {
            let targets: Vec<(Tp, u64, u64)> =
                self.state().parts.iter().map(|(tp, s)| (tp.clone(), s.position, s.epoch)).collect();
            if targets.is_empty() {
                tokio::select! {
                    _ = self.wake_fetcher.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            let per_partition = (self.config.fetch_max_bytes / targets.len() as u32).max(64 * 1024);
            let req = FetchRequest {
                max_wait_ms: self.config.fetch_max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
                min_bytes: 1,
                max_bytes: self.config.fetch_max_bytes,
                partitions: targets
                    .iter()
                    .map(|((t, p), pos, _)| FetchPartition {
                        topic: t.to_string(),
                        partition: *p,
                        offset: *pos,
                        max_bytes: per_partition,
                    })
                    .collect(),
            };
            let conn = match self.conn().await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let resp = tokio::select! {
                r = conn.call(&req) => r,
                _ = self.wake_fetcher.notified() => continue, // assignment changed: refetch
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for (part, (tp, position, epoch)) in resp.partitions.into_iter().zip(targets) {
                match part.error_code {
                    ErrorCode::None => {}
                    ErrorCode::OffsetOutOfRange => {
                        let to = match self.config.offset_reset {
                            OffsetReset::Earliest => part.log_start_offset,
                            OffsetReset::Latest => part.high_watermark,
                        };
                        tracing::warn!(topic = %tp.0, partition = tp.1, position, to, "offset out of range; resetting");
                        self.seek_internal(&tp, to, Some(epoch));
                        continue;
                    }
                    code => {
                        tracing::debug!(topic = %tp.0, partition = tp.1, ?code, "fetch error");
                        continue;
                    }
                }
                if part.records.is_empty() {
                    continue;
                }
                let chunk = match decode(&tp, position, part.records) {
                    Ok((records, next)) => Chunk::Records { tp: tp.clone(), epoch, records, next },
                    Err(e) => Chunk::Failed(e),
                };
                if let Chunk::Records { next, .. } = &chunk {
                    let mut s = self.state();
                    if let Some(ps) = s.parts.get_mut(&tp).filter(|ps| ps.epoch == epoch) {
                        ps.position = ps.position.max(*next);
                    }
                }
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }

    fn seek_internal(&self, tp: &Tp, offset: u64, only_epoch: Option<u64>) {
        let mut s = self.state();
        s.next_epoch += 1;
        let epoch = s.next_epoch;
        if let Some(ps) = s.parts.get_mut(tp).filter(|ps| only_epoch.is_none_or(|e| e == ps.epoch)) {
            *ps = PartitionState {
                position: offset,
                delivered: offset,
                processed: offset,
                committed: ps.committed,
                epoch,
            };
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

/// Records at or after `from`, CRC checked and decompressed.
fn decode(tp: &Tp, from: u64, bytes: Bytes) -> Result<(Vec<ConsumerRecord>, u64), ConsumerError> {
    let corrupt = |reason: String| ConsumerError::CorruptBatch {
        topic: tp.0.to_string(),
        partition: tp.1,
        offset: from,
        reason,
    };
    let mut out = Vec::new();
    let mut next = from;
    for batch in split_batches(bytes) {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        batch.verify_crc().map_err(|e| corrupt(e.to_string()))?;
        next = next.max(batch.header().next_offset());
        if batch.header().last_offset() < from {
            continue;
        }
        let records = batch.records().map_err(|e| corrupt(e.to_string()))?;
        out.reserve(records.len() as usize);
        for r in records.iter() {
            let r = r.map_err(|e| corrupt(e.to_string()))?;
            if r.offset < from {
                continue;
            }
            let owned = records.to_owned_record(&r);
            out.push(ConsumerRecord {
                topic: Arc::clone(&tp.0),
                partition: tp.1,
                offset: owned.offset,
                timestamp: owned.timestamp,
                key: owned.key,
                value: owned.value,
                headers: owned.headers,
            });
        }
    }
    Ok((out, next))
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
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ConsumerError::Closed);
        }
        for s in self.inner.state().parts.values_mut() {
            s.processed = s.delivered;
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
                Chunk::Failed(e) if out.is_empty() => return Err(e),
                Chunk::Failed(_) => return Ok(out),
                Chunk::Records { tp, epoch, mut records, next: _ } => {
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

    /// Reads `partition` from `offset` next.
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
