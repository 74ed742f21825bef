//! The cluster tests' workload and readers, feeding [`crate::checker`].
//!
//! - [`ClusterWorkload`]: idempotent `acks=durable` producers (the
//!   `sluice-producer` crate, bootstrapped with every node) sending unique
//!   values, each acknowledgement logged with its arrival time; optionally
//!   a consumer (assigned every partition, committing what it read to a
//!   group) logging its sequence per partition and its acknowledged
//!   commits; and the faults the test injects, timestamped by
//!   [`ClusterWorkload::fault`]. Every loop is bounded in count and stops
//!   when [`ClusterWorkload::stop`] is called.
//! - [`read_replicas`]: at the end, every partition read from its start on
//!   every node that serves it (fetch requests; a follower that refuses
//!   client fetches is skipped and counted).
//! - [`read_disk_copy`]: a stopped node's copy of a partition straight
//!   from its segment files (`<data>/topics/<topic>/<p>/*.log`), for
//!   comparing a follower's copy with the leader's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_consumer::Consumer;
use sluice_producer::{Producer, Record};
use sluice_protocol::batch::split_batches;
use sluice_protocol::client::Connection;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::checker::{Ack, Commit, Fault, History, Read, ReadKind};
use crate::fetch_once;

/// What to run.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Comma-separated client addresses.
    pub bootstrap: String,
    /// The topic (must exist).
    pub topic: String,
    /// Its partition count.
    pub partitions: u32,
    /// Producers.
    pub producers: usize,
    /// Records each producer sends at most.
    pub max_records: u64,
    /// Records each producer sends per second at most (0: as fast as
    /// acknowledged), so a long run keeps producing without filling the
    /// disk or the history.
    pub rate: u32,
    /// Makes values unique across runs.
    pub tag: String,
    /// Run a committing consumer in this group.
    pub group: Option<String>,
    /// When produces are acknowledged (`Durable` for every invariant;
    /// weaker only to show the checker catching what it permits losing).
    pub acks: sluice_producer::Acks,
}

impl WorkloadConfig {
    /// Two durable producers of 500 records/s each (at most 10 million
    /// each), a consumer in group `g`.
    pub fn new(bootstrap: String, topic: &str, partitions: u32) -> Self {
        Self {
            bootstrap,
            topic: topic.into(),
            partitions,
            producers: 2,
            max_records: 10_000_000,
            rate: 500,
            tag: "w".into(),
            group: Some("g".into()),
            acks: sluice_producer::Acks::Durable,
        }
    }
}

/// The consumer's `(offset, value)` sequence per partition.
type Consumed = Arc<Mutex<BTreeMap<u32, Vec<(u64, Bytes)>>>>;

/// The running clients and what they were told.
#[derive(Debug)]
pub struct ClusterWorkload {
    tasks: Vec<JoinHandle<()>>,
    history: Arc<Mutex<History>>,
    consumed: Consumed,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
}

impl ClusterWorkload {
    /// Starts the clients (on the current tokio runtime).
    pub fn start(config: &WorkloadConfig) -> Self {
        let w = Self {
            tasks: Vec::new(),
            history: Arc::default(),
            consumed: Arc::default(),
            stop: Arc::default(),
            acked: Arc::default(),
        };
        let mut tasks = Vec::new();
        for i in 0..config.producers {
            let ctx = w.context(config);
            tasks.push(tokio::spawn(produce(ctx, format!("{}-p{i}", config.tag))));
        }
        if let Some(group) = &config.group {
            tasks.push(tokio::spawn(consume(w.context(config), Arc::clone(&w.consumed), group.clone())));
        }
        Self { tasks, ..w }
    }

    fn context(&self, config: &WorkloadConfig) -> Ctx {
        Ctx {
            config: config.clone(),
            history: Arc::clone(&self.history),
            stop: Arc::clone(&self.stop),
            acked: Arc::clone(&self.acked),
        }
    }

    /// Records a fault injected now.
    pub fn fault(&self, label: impl Into<String>) {
        self.history.lock().unwrap().faults.push(Fault { label: label.into(), at: Instant::now() });
    }

    /// Records a fault injected at `at` (before it was held and healed).
    pub fn fault_at(&self, label: impl Into<String>, at: Instant) {
        self.history.lock().unwrap().faults.push(Fault { label: label.into(), at });
    }

    /// Produces acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until `more` further produces are
    /// acknowledged; returns whether they were.
    pub async fn wait_for_acks(&self, more: usize, timeout: Duration) -> bool {
        let target = self.acked() + more;
        let me = self;
        crate::cluster::wait_until_async(timeout, move || async move { me.acked() >= target }).await
    }

    /// Stops the clients and returns the history (the consumer's reads
    /// included).
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            // Each loop checks the flag between requests; a request stuck
            // on a dead node is bounded by the clients' timeouts.
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
        let mut history = std::mem::take(&mut *self.history.lock().unwrap());
        for (partition, records) in std::mem::take(&mut *self.consumed.lock().unwrap()) {
            history.reads.push(Read {
                source: "consumer".into(),
                kind: ReadKind::Consumer,
                partition,
                records,
                stable_end: None,
                log_start: 0,
            });
        }
        history
    }
}

/// What every client task shares.
#[derive(Debug, Clone)]
struct Ctx {
    config: WorkloadConfig,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Builds a producer, retrying while no node answers.
async fn producer(ctx: &Ctx) -> Option<Producer> {
    while !ctx.stopped() {
        let built = Producer::builder()
            .bootstrap(ctx.config.bootstrap.clone())
            .idempotent(true)
            .acks(ctx.config.acks)
            .linger(Duration::from_millis(2))
            .request_timeout(Duration::from_secs(5))
            .delivery_timeout(Duration::from_secs(30))
            .build()
            .await;
        match built {
            Ok(p) => return Some(p),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}

/// Sends unique values (at `rate` per second, at most 64 unacknowledged),
/// logging each outcome.
async fn produce(ctx: Ctx, name: String) {
    let Some(p) = producer(&ctx).await else { return };
    let window = Arc::new(Semaphore::new(64));
    let mut pace =
        (ctx.config.rate > 0).then(|| tokio::time::interval(Duration::from_secs(1) / ctx.config.rate));
    if let Some(p) = pace.as_mut() {
        p.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    for i in 0..ctx.config.max_records {
        if ctx.stopped() {
            break;
        }
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        let permit = Arc::clone(&window).acquire_owned().await.unwrap();
        let value = Bytes::from(format!("{name}-{i}"));
        let Ok(delivery) = p.send(Record::new(ctx.config.topic.as_str(), value.clone())).await else {
            ctx.history.lock().unwrap().failed += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let outcome = delivery.await;
            let mut h = ctx.history.lock().unwrap();
            match outcome {
                Ok(m) => {
                    h.acks.push(Ack { partition: m.partition, offset: m.offset, value, at: Instant::now() });
                    ctx.acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => h.failed += 1,
            }
            drop(permit);
        });
    }
    // Every delivery settled (or given up on) before the producer goes.
    let _ = tokio::time::timeout(Duration::from_secs(40), window.acquire_many(64)).await;
    let _ = p.close().await;
}

/// Reads every partition, committing what it read after each poll; logs
/// the sequence per partition and each acknowledged commit.
async fn consume(ctx: Ctx, consumed: Consumed, group: String) {
    let topic = ctx.config.topic.clone();
    while !ctx.stopped() {
        let built = Consumer::builder()
            .bootstrap(ctx.config.bootstrap.clone())
            .group(group.clone())
            .assign((0..ctx.config.partitions).map(|p| (topic.clone(), p)))
            .enable_auto_commit(false)
            .fetch_max_wait(Duration::from_millis(50))
            .build()
            .await;
        let Ok(c) = built else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for _ in 0..1_000_000u32 {
            if ctx.stopped() {
                break;
            }
            let Ok(records) = c.poll(Duration::from_millis(100)).await else { break };
            let mut next: BTreeMap<u32, u64> = BTreeMap::new();
            {
                let mut seen = consumed.lock().unwrap();
                for r in records {
                    next.insert(r.partition, r.offset + 1);
                    seen.entry(r.partition).or_default().push((r.offset, r.value.unwrap_or_default()));
                }
            }
            if next.is_empty() {
                continue;
            }
            let offsets: Vec<_> = next.iter().map(|(p, o)| ((topic.clone(), *p), *o)).collect();
            if c.commit_offsets(offsets).await.is_ok() {
                let at = Instant::now();
                let mut h = ctx.history.lock().unwrap();
                h.commits.extend(next.iter().map(|(p, o)| Commit {
                    group: group.clone(),
                    partition: *p,
                    offset: *o,
                    at,
                }));
            }
        }
        let _ = c.close().await;
    }
}

/// Every partition of `topic` read from its start to its high watermark on
/// each of `nodes` (`(id, client address)`) that serves client fetches;
/// returns the reads and the `(node, partition)` pairs that refused.
pub async fn read_replicas(
    nodes: &[(u32, String)],
    topic: &str,
    partitions: u32,
) -> (Vec<Read>, Vec<(u32, u32)>) {
    let mut reads = Vec::new();
    let mut refused = Vec::new();
    for (id, addr) in nodes {
        let Ok(conn) = Connection::connect(addr, "cluster-reader").await else {
            refused.extend((0..partitions).map(|p| (*id, p)));
            continue;
        };
        for p in 0..partitions {
            match read_whole(&conn, topic, p).await {
                Some((log_start, records)) => reads.push(Read {
                    source: format!("node {id}"),
                    kind: ReadKind::Replica,
                    partition: p,
                    records,
                    stable_end: None,
                    log_start,
                }),
                None => refused.push((*id, p)),
            }
        }
    }
    (reads, refused)
}

/// One partition from its log start to its high watermark; `None` when
/// the node refuses (not the leader, unknown, unreachable).
async fn read_whole(conn: &Connection, topic: &str, partition: u32) -> Option<(u64, Vec<(u64, Bytes)>)> {
    let first = fetch_once(conn, topic, partition, 0, 0).await.ok()?;
    if !first.error_code.is_ok() && first.error_code != sluice_protocol::ErrorCode::OffsetOutOfRange {
        return None;
    }
    let log_start = first.log_start_offset;
    let mut offset = log_start;
    let mut records = Vec::new();
    for _ in 0..1_000_000u32 {
        let resp = fetch_once(conn, topic, partition, offset, 0).await.ok()?;
        if !resp.error_code.is_ok() {
            return None;
        }
        let before = offset;
        for batch in split_batches(resp.records) {
            let batch = batch.ok()?;
            batch.verify_crc().ok()?;
            for r in batch.records().ok()?.to_owned_records().ok()? {
                if r.offset >= offset {
                    offset = r.offset + 1;
                    records.push((r.offset, r.value.unwrap_or_default()));
                }
            }
            offset = offset.max(batch.header().next_offset());
        }
        if offset >= resp.high_watermark || offset == before {
            break;
        }
    }
    Some((log_start, records))
}

/// A partition's records straight from a (stopped) node's segment files,
/// up to the first torn or zeroed batch; `stable_end` as given (offsets
/// past the high watermark may still be truncated).
pub fn read_disk_copy(data_dir: &Path, topic: &str, partition: u32, stable_end: Option<u64>) -> Read {
    let dir = data_dir.join("topics").join(topic).join(partition.to_string());
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "log")).collect()
        })
        .unwrap_or_default();
    segments.sort();
    let mut records = Vec::new();
    'segments: for path in segments {
        let bytes = Bytes::from(std::fs::read(&path).unwrap_or_default());
        for batch in split_batches(bytes) {
            let Ok(batch) = batch else { continue 'segments };
            if batch.verify_crc().is_err() {
                continue 'segments;
            }
            let Ok(owned) = batch.records().and_then(|r| r.to_owned_records()) else { continue 'segments };
            records.extend(owned.into_iter().map(|r| (r.offset, r.value.unwrap_or_default())));
        }
    }
    let log_start = records.first().map_or(0, |(o, _)| *o);
    Read {
        source: format!("disk copy in {}", dir.display()),
        kind: ReadKind::Replica,
        partition,
        records,
        stable_end,
        log_start,
    }
}
