//! The crash tests' workload and checker, shared by the crash loops
//! (`reliability.rs`: `kill -9` and damaged files; `powerloss.rs`: the
//! power-loss file system).
//!
//! The workload: two idempotent `acks=durable` producers on topic
//! [`TOPIC`], a two-member consumer group [`GROUP`] committing what it
//! processed, and optionally a fast standalone committer (group
//! [`COMMITTER_GROUP`], to grow the committed-offsets log past its
//! compaction threshold) and topic churn (create, then delete). Everything
//! the clients are told is recorded in [`Acked`].
//!
//! With a `gate` (a power-loss file system's cut flag) an acknowledgement is
//! recorded only if it arrived before the power was cut: what came after may
//! legitimately be lost. The checker ([`check_invariants`]) then demands
//! every recorded acknowledgement back after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_consumer::Consumer;
use sluice_producer::{Producer, Record};
use sluice_protocol::api::{
    CommitOffset, DeleteTopicRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, NO_OFFSET,
};
use sluice_protocol::client::Connection;
use sluice_protocol::ErrorCode;
use tokio::task::JoinHandle;

use crate::{create_topic, fetch_once, read_partition, ProcessBroker};

/// The produced topic.
pub const TOPIC: &str = "t";
/// The consumer group that commits after processing.
pub const GROUP: &str = "g";
/// The standalone committer's group.
pub const COMMITTER_GROUP: &str = "c";

/// What the clients were told.
#[derive(Debug, Default)]
pub struct Acked {
    /// (partition, offset) → value of every acknowledged record of [`TOPIC`].
    pub records: BTreeMap<(u32, u64), Bytes>,
    /// Group → commits acknowledged, in order: (partition, offset).
    pub commits: BTreeMap<String, Vec<(u32, u64)>>,
    /// Churn topic → whether it exists, as last acknowledged (absent: a
    /// request was in flight, either outcome is fine).
    pub topics: BTreeMap<String, bool>,
}

impl Acked {
    /// The acknowledged commits of `group`.
    pub fn commits_of(&self, group: &str) -> &[(u32, u64)] {
        self.commits.get(group).map_or(&[], Vec::as_slice)
    }

    /// Adds what a later run was told.
    pub fn extend(&mut self, later: Acked) {
        self.records.extend(later.records);
        for (group, commits) in later.commits {
            self.commits.entry(group).or_default().extend(commits);
        }
        self.topics.extend(later.topics);
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Drives every random choice.
    pub seed: u64,
    /// Makes values unique across runs on one data directory.
    pub tag: String,
    /// Partitions of [`TOPIC`].
    pub partitions: u32,
    /// Run the standalone committer.
    pub committer: bool,
    /// Create and delete topics.
    pub churn: bool,
    /// Record acknowledgements only while this is false.
    pub gate: Option<Arc<AtomicBool>>,
}

impl WorkloadOptions {
    /// Producers and the group only, no gate.
    pub fn new(seed: u64, partitions: u32) -> Self {
        Self { seed, tag: String::new(), partitions, committer: false, churn: false, gate: None }
    }
}

/// The running clients.
#[derive(Debug)]
pub struct Workload {
    tasks: Vec<JoinHandle<()>>,
    acked: Arc<Mutex<Acked>>,
    /// The seed's generator, after the workload's own draws (for the caller's).
    pub rng: StdRng,
}

/// A recorder that drops acknowledgements arriving after a power cut.
#[derive(Debug, Clone)]
struct Recorder {
    acked: Arc<Mutex<Acked>>,
    gate: Option<Arc<AtomicBool>>,
}

impl Recorder {
    fn record(&self, f: impl FnOnce(&mut Acked)) {
        if self.gate.as_ref().is_none_or(|g| !g.load(Ordering::SeqCst)) {
            f(&mut self.acked.lock().unwrap());
        }
    }
}

impl Workload {
    /// Starts the clients against `addr` (topic [`TOPIC`] must exist).
    pub fn start(addr: SocketAddr, options: WorkloadOptions) -> Self {
        let acked = Arc::new(Mutex::new(Acked::default()));
        let rec = Recorder { acked: Arc::clone(&acked), gate: options.gate.clone() };
        let mut rng = StdRng::seed_from_u64(options.seed);
        let addr = addr.to_string();
        let mut tasks = Vec::new();
        for w in 0..2u64 {
            let rng = StdRng::seed_from_u64(options.seed * 31 + w);
            tasks.push(tokio::spawn(produce(addr.clone(), rec.clone(), rng, format!("{}{w}", options.tag))));
        }
        for member in 0..2u64 {
            let delay = Duration::from_millis(rng.gen_range(0..300) * member);
            tasks.push(tokio::spawn(consume(addr.clone(), rec.clone(), delay)));
        }
        if options.committer {
            tasks.push(tokio::spawn(commit_fast(addr.clone(), rec.clone(), options.partitions)));
        }
        if options.churn {
            tasks.push(tokio::spawn(churn(addr, rec, options.tag)));
        }
        Self { tasks, acked, rng }
    }

    /// Commits acknowledged so far by `group`.
    pub fn commits_so_far(&self, group: &str) -> usize {
        self.acked.lock().unwrap().commits_of(group).len()
    }

    /// Stops the clients (the broker should be dead: nothing more can be
    /// acknowledged) and returns what they were told.
    pub async fn stop(self) -> Acked {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let mut guard = self.acked.lock().unwrap();
        std::mem::take(&mut *guard)
    }
}

/// An idempotent, durable producer sending keyed records until it fails.
async fn produce(addr: String, rec: Recorder, mut rng: StdRng, name: String) {
    let Ok(p) = Producer::builder()
        .bootstrap(addr)
        .linger(Duration::from_millis(1))
        .batch_bytes(4096usize)
        .retries(3u32)
        .delivery_timeout(Duration::from_secs(3))
        .build()
        .await
    else {
        return;
    };
    for i in 0..1_000_000u64 {
        let value = Bytes::from(format!("{name}-{i}-{}", "x".repeat(rng.gen_range(0..300))));
        let key = format!("{}", rng.gen_range(0..100));
        let Ok(f) = p.send(Record::new(TOPIC, value.clone()).key(key)).await else { return };
        match f.await {
            Ok(m) => rec.record(|a| drop(a.records.insert((m.partition, m.offset), value))),
            Err(_) => return,
        }
    }
}

/// A group member that commits exactly what it processed after each poll.
async fn consume(addr: String, rec: Recorder, delay: Duration) {
    tokio::time::sleep(delay).await;
    let Ok(c) = Consumer::builder()
        .bootstrap(addr)
        .group(GROUP)
        .subscribe([TOPIC])
        .session_timeout(Duration::from_millis(1000))
        .fetch_max_wait(Duration::from_millis(50))
        .enable_auto_commit(false)
        .build()
        .await
    else {
        return;
    };
    for _ in 0..1_000_000u32 {
        let Ok(records) = c.poll(Duration::from_millis(50)).await else { return };
        let mut last: HashMap<u32, u64> = HashMap::new();
        for r in &records {
            last.insert(r.partition, r.offset + 1);
        }
        let offsets: Vec<_> = last.iter().map(|(p, o)| ((TOPIC.to_string(), *p), *o)).collect();
        match c.commit_offsets(offsets.clone()).await {
            Ok(()) => rec.record(|a| {
                a.commits.entry(GROUP.into()).or_default().extend(offsets.iter().map(|((_, p), o)| (*p, *o)))
            }),
            Err(sluice_consumer::ConsumerError::Commit { .. }) => {}
            Err(_) => return,
        }
    }
}

/// Standalone commits, as fast as the broker syncs them, of offsets already
/// acknowledged to the producers (so never past a durable log end).
async fn commit_fast(addr: String, rec: Recorder, partitions: u32) {
    let Ok(conn) = Connection::connect(&addr, "committer").await else { return };
    for _ in 0..1_000_000u32 {
        let ends: Vec<(u32, u64)> = {
            let acked = rec.acked.lock().unwrap();
            (0..partitions)
                .filter_map(|p| {
                    acked.records.range((p, 0)..(p + 1, 0)).next_back().map(|((_, o), _)| (p, o + 1))
                })
                .collect()
        };
        if ends.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let offsets = ends
            .iter()
            .map(|(p, o)| CommitOffset {
                topic: TOPIC.into(),
                partition: *p,
                offset: *o,
                metadata: String::new(),
            })
            .collect();
        let req = OffsetCommitRequest {
            group: COMMITTER_GROUP.into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets,
        };
        match conn.call(&req).await {
            Ok(resp) if resp.results.iter().all(|r| r.error_code.is_ok()) => rec.record(|a| {
                a.commits.entry(COMMITTER_GROUP.into()).or_default().extend(ends.iter().copied())
            }),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Creates a topic, then deletes it, again and again.
async fn churn(addr: String, rec: Recorder, tag: String) {
    let Ok(conn) = Connection::connect(&addr, "churn").await else { return };
    for i in 0..100_000u32 {
        let name = format!("churn-{tag}-{i}");
        if create_topic(&conn, &name, 2, &[]).await.is_err() {
            return;
        }
        rec.record(|a| {
            a.topics.insert(name.clone(), true);
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        rec.record(|a| {
            a.topics.remove(&name);
        });
        if conn.call(&DeleteTopicRequest { name: name.clone() }).await.is_err() {
            return;
        }
        rec.record(|a| {
            a.topics.insert(name, false);
        });
    }
}

/// What a check covered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    /// Acknowledged records found intact.
    pub records: usize,
    /// Groups' partitions whose acknowledged commits were checked.
    pub commits: usize,
    /// Churn topics whose acknowledged existence was checked.
    pub topics: usize,
}

/// Checks every invariant on a restarted broker against `acked`: records at
/// their offsets with their bytes, offsets dense, no duplicates, commits
/// never lost or moved back (nor past the log end), consumers resuming at
/// the committed offset, churn topics as last acknowledged.
///
/// # Panics
/// On any violation, with `label` and the broker's log.
pub async fn check_invariants(
    broker: &ProcessBroker,
    acked: &Acked,
    partitions: u32,
    label: &str,
) -> Checked {
    let conn = broker.connect().await;
    let mut seen_values = HashSet::new();
    let mut checked = Checked::default();
    let mut ends = HashMap::new();
    for p in 0..partitions {
        let start = fetch_once(&conn, TOPIC, p, 0, 0).await.unwrap().log_start_offset;
        let mut stored: HashMap<u64, Bytes> = HashMap::new();
        let mut expected = start;
        for batch in read_partition(&conn, TOPIC, p, start).await {
            assert_eq!(batch.header().base_offset, expected, "{label}: offsets dense in partition {p}");
            expected = batch.header().next_offset();
            for r in batch.records().unwrap().to_owned_records().unwrap() {
                let v = r.value.unwrap();
                assert!(
                    seen_values.insert(v.clone()),
                    "{label}: duplicate record {v:?} (idempotence broken)"
                );
                stored.insert(r.offset, v);
            }
        }
        ends.insert(p, expected);
        for ((_, offset), value) in acked.records.range((p, start)..(p + 1, 0)) {
            let got = stored.get(offset).unwrap_or_else(|| {
                panic!("{label}: acknowledged record {p}/{offset} lost\n{}", broker.log_text())
            });
            assert_eq!(got, value, "{label}: record {p}/{offset} changed");
            checked.records += 1;
        }
    }
    for (group, commits) in &acked.commits {
        checked.commits += check_commits(&conn, broker, group, commits, &ends, label).await;
    }
    check_resume(&conn, broker, &ends, label).await;
    checked.topics += check_every_topic_whole(&conn, broker, label).await;
    for (topic, exists) in &acked.topics {
        let code = fetch_once(&conn, topic, 0, 0, 0).await.unwrap().error_code;
        let want = if *exists { ErrorCode::None } else { ErrorCode::UnknownTopic };
        assert_eq!(
            code,
            want,
            "{label}: topic {topic} acknowledged as existing={exists}\n{}",
            broker.log_text()
        );
        checked.topics += 1;
    }
    checked
}

/// Every topic the broker lists has every partition, each readable at its
/// start (a topic is created and deleted all or nothing). Returns the
/// number of topics checked.
async fn check_every_topic_whole(conn: &Connection, broker: &ProcessBroker, label: &str) -> usize {
    let meta = conn.call(&MetadataRequest { topics: vec![] }).await.unwrap();
    for topic in &meta.topics {
        assert!(
            topic.error_code.is_ok(),
            "{label}: topic {} listed with {:?}\n{}",
            topic.name,
            topic.error_code,
            broker.log_text()
        );
        assert!(!topic.partitions.is_empty(), "{label}: topic {} listed without partitions", topic.name);
        for p in 0..topic.partitions.len() as u32 {
            let code = fetch_once(conn, &topic.name, p, 0, 0).await.map(|r| r.error_code);
            let readable = matches!(code, Ok(c) if c.is_ok() || c == ErrorCode::OffsetOutOfRange);
            assert!(
                readable,
                "{label}: partition {}/{p} of a listed topic: {code:?}\n{}",
                topic.name,
                broker.log_text()
            );
        }
    }
    meta.topics.len()
}

/// The group's committed offsets: the last acknowledged one per partition
/// (or a later acknowledged one), never past the log end. Returns the
/// number of partitions checked.
async fn check_commits(
    conn: &Connection,
    broker: &ProcessBroker,
    group: &str,
    commits: &[(u32, u64)],
    ends: &HashMap<u32, u64>,
    label: &str,
) -> usize {
    let committed = conn.call(&OffsetFetchRequest { group: group.into(), partitions: vec![] }).await.unwrap();
    let committed: HashMap<u32, u64> =
        committed.offsets.iter().filter(|o| o.offset != NO_OFFSET).map(|o| (o.partition, o.offset)).collect();
    let mut last_acked: HashMap<u32, u64> = HashMap::new();
    for (p, o) in commits {
        last_acked.insert(*p, *o);
    }
    for (p, acked_commit) in &last_acked {
        let now = committed.get(p).copied().unwrap_or_else(|| {
            panic!("{label}: acknowledged commit of {group}/{p} lost\n{}", broker.log_text())
        });
        // A group's members may commit a lower offset after a rebalance; the
        // standalone committer only ever moves forward.
        let earlier_acked = group != COMMITTER_GROUP && commits.iter().any(|(cp, co)| cp == p && *co == now);
        assert!(
            now >= *acked_commit || earlier_acked,
            "{label}: committed offset of {group}/{p} went back to {now} from {acked_commit}\n{}",
            broker.log_text()
        );
        assert!(now <= ends[p], "{label}: committed offset {now} of {group} beyond log end {}", ends[p]);
    }
    last_acked.len()
}

/// A consumer of [`GROUP`] resumes at the committed offset.
async fn check_resume(conn: &Connection, broker: &ProcessBroker, ends: &HashMap<u32, u64>, label: &str) {
    let committed = conn.call(&OffsetFetchRequest { group: GROUP.into(), partitions: vec![] }).await.unwrap();
    let Some((p, from)) = committed
        .offsets
        .iter()
        .filter(|o| o.offset != NO_OFFSET)
        .map(|o| (o.partition, o.offset))
        .find(|(p, o)| *o < ends[p])
    else {
        return;
    };
    let c = Consumer::builder()
        .bootstrap(broker.addr.to_string())
        .group(GROUP)
        .assign([(TOPIC, p)])
        .enable_auto_commit(false)
        .build()
        .await
        .unwrap();
    let first = c.poll(Duration::from_secs(10)).await.unwrap();
    let start = fetch_once(conn, TOPIC, p, 0, 0).await.unwrap().log_start_offset;
    assert_eq!(
        first.first().map(|r| r.offset),
        Some(from.max(start)),
        "{label}: consumer resumes at the committed offset"
    );
}
