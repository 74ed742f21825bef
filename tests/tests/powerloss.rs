//! Crash loops on the power-loss file system (`sluice_tests::powerfs`): the
//! real broker runs as a subprocess with its data directory on a FUSE mount
//! that keeps only what was fsynced (bytes) and dir-synced (names). Power
//! goes out at random moments and at targeted ones (during the first start,
//! inside a segment roll, inside the committed-offsets compaction at
//! start-up); after each, the broker must start without repair and give
//! back everything it acknowledged before the cut.
//!
//! `SLUICE_POWERLOSS_ROUNDS=N` (default 4) sets the seeds per scenario.
//! Skips, saying so, where FUSE cannot be mounted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_protocol::api::Acks;
use sluice_tests::powerfs::{CutTrigger, FsyncFault, Op, PowerFs};
use sluice_tests::workload::{check_invariants, Acked, Workload, WorkloadOptions, COMMITTER_GROUP, TOPIC};
use sluice_tests::{create_topic, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");
const PARTITIONS: u32 = 3;

fn rounds() -> u64 {
    std::env::var("SLUICE_POWERLOSS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4)
}

/// Totals over every scenario of this test binary (printed by each).
static POWER_LOSSES: AtomicU64 = AtomicU64::new(0);
static RECORDS: AtomicU64 = AtomicU64::new(0);
static COMMITS: AtomicU64 = AtomicU64::new(0);
static RESTARTS: AtomicU64 = AtomicU64::new(0);
static FSYNCS: AtomicU64 = AtomicU64::new(0);
static DIR_SYNCS: AtomicU64 = AtomicU64::new(0);
static FAILED_FSYNCS: AtomicU64 = AtomicU64::new(0);

/// One data directory on a power-loss mount, and what its broker acknowledged.
struct Rig {
    /// Unmounted before the temporary directory goes.
    fs: PowerFs,
    config: PathBuf,
    data: PathBuf,
    acked: Acked,
    /// Whether creating [`TOPIC`] was acknowledged before a power cut.
    topic_acked: bool,
    scenario: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(scenario: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let fs = PowerFs::mount_or_skip(&mnt, &format!("powerloss::{scenario}"))?;
        let config = dir.path().join("sluice.toml");
        std::fs::write(
            &config,
            "retention_check_interval_ms = 100\n[topic_defaults]\nfsync = \"always\"\nsegment_bytes = 16384\nretention_bytes = 131072\nretention_ms = 0\n",
        )
        .unwrap();
        let data = mnt.join("data");
        Some(Self {
            fs,
            config,
            data,
            acked: Acked::default(),
            topic_acked: false,
            scenario: scenario.into(),
            _dir: dir,
        })
    }

    /// Starts the broker (a start failure panics with its log) and makes
    /// sure the topic exists.
    async fn start(&mut self) -> ProcessBroker {
        let broker = ProcessBroker::spawn(SLUICE, &self.data, &["--config", self.config.to_str().unwrap()]);
        self.create_topic(&broker).await;
        broker
    }

    async fn create_topic(&mut self, broker: &ProcessBroker) {
        let created = create_topic(&broker.connect().await, TOPIC, PARTITIONS, &[]).await.is_ok();
        self.topic_acked |= created && !self.fs.cut_happened();
    }

    fn workload(&self, broker: &ProcessBroker, seed: u64, cycle: u32, committer: bool) -> Workload {
        let options = WorkloadOptions {
            seed: seed * 1000 + u64::from(cycle),
            tag: format!("s{seed}c{cycle}w"),
            partitions: PARTITIONS,
            committer,
            churn: true,
            gate: Some(self.fs.cut_flag()),
        };
        Workload::start(broker.addr, options)
    }

    /// Mounts, starts the broker, and seeds the scenario's generator.
    async fn boot(scenario: &str, seed: u64) -> Option<(Self, ProcessBroker, StdRng)> {
        let mut rig = Self::new(scenario)?;
        let broker = rig.start().await;
        Some((rig, broker, StdRng::seed_from_u64(seed)))
    }

    /// Starts the workload and lets it run for a random time in `pause_ms`.
    async fn run_for(
        &self,
        broker: &ProcessBroker,
        (seed, cycle): (u64, u32),
        rng: &mut StdRng,
        pause_ms: std::ops::Range<u64>,
    ) -> Workload {
        let workload = self.workload(broker, seed, cycle, false);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(pause_ms))).await;
        workload
    }

    /// Kills the broker, stops the clients, cuts the power (if no cut came
    /// first, now), restarts and checks every invariant. Returns the
    /// restarted broker.
    async fn power_loss(
        &mut self,
        mut broker: ProcessBroker,
        workload: Workload,
        label: &str,
    ) -> ProcessBroker {
        self.fs.cut_now();
        broker.kill9();
        let old_log = broker.log_text();
        drop(broker);
        self.acked.extend(workload.stop().await);
        self.fs.power_loss_and_remount().unwrap();
        POWER_LOSSES.fetch_add(1, Ordering::Relaxed);
        let label = format!("{}: {label}", self.scenario);
        let restarted = ProcessBroker::spawn_admin_first(
            SLUICE,
            &self.data,
            &["--config", self.config.to_str().unwrap()],
        );
        let restarted = wait_started(restarted, &label, &old_log);
        RESTARTS.fetch_add(1, Ordering::Relaxed);
        if !self.topic_acked {
            // Its creation was cut short (legitimately lost): create it now.
            self.create_topic(&restarted).await;
        }
        let checked = check_invariants(&restarted, &self.acked, PARTITIONS, &label).await;
        RECORDS.fetch_add(checked.records as u64, Ordering::Relaxed);
        COMMITS.fetch_add(checked.commits as u64, Ordering::Relaxed);
        restarted
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let stats = self.fs.stats();
        FSYNCS.fetch_add(stats.fsyncs, Ordering::Relaxed);
        DIR_SYNCS.fetch_add(stats.dir_syncs, Ordering::Relaxed);
        FAILED_FSYNCS.fetch_add(stats.failed_fsyncs, Ordering::Relaxed);
    }
}

/// Waits until a restarting broker accepts clients; on failure prints the
/// log of the run before the power loss too.
fn wait_started(mut broker: ProcessBroker, label: &str, before: &str) -> ProcessBroker {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| broker.wait_listening()));
    if let Err(e) = outcome {
        eprintln!("{label}: the broker did not restart after the power loss.\n--- log before the power loss (tail) ---\n{}", tail(before, 40));
        std::panic::resume_unwind(e);
    }
    broker
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn summary(scenario: &str) {
    eprintln!(
        "powerloss {scenario}: done; totals so far in this binary: {} power losses, {} acknowledged records checked, {} group partitions' commits checked, {} restarts (all without repair); {} file fsyncs, {} directory fsyncs, {} failed on purpose",
        POWER_LOSSES.load(Ordering::Relaxed),
        RECORDS.load(Ordering::Relaxed),
        COMMITS.load(Ordering::Relaxed),
        RESTARTS.load(Ordering::Relaxed),
        FSYNCS.load(Ordering::Relaxed),
        DIR_SYNCS.load(Ordering::Relaxed),
        FAILED_FSYNCS.load(Ordering::Relaxed),
    );
}

/// Polls `done` every 10 ms until it holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_random_moments() {
    for seed in 0..rounds() {
        let Some((mut rig, mut broker, mut rng)) = Rig::boot("random", seed).await else { return };
        for cycle in 0..3 {
            let workload = rig.run_for(&broker, (seed, cycle), &mut rng, 200..1000).await;
            rig.fs.cut_now();
            // The broker goes on for a moment: all of that is lost.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
            broker = rig.power_loss(broker, workload, &format!("seed {seed} cycle {cycle}")).await;
        }
    }
    summary("random moments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_during_the_first_start() {
    for seed in 0..rounds() * 2 {
        let Some(mut rig) = Rig::new("first start") else { return };
        let mut rng = StdRng::seed_from_u64(100 + seed);
        // The first start and the topic creation take about 60 mutating operations.
        let then_ops = rng.gen_range(0..80);
        rig.fs.arm_cut(CutTrigger { op: None, path_contains: None, then_ops, crash: false });
        let broker = rig.start().await;
        let start_ops = rig.fs.stats().ops;
        let workload = rig.workload(&broker, seed, 0, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let label =
            format!("seed {seed}, cut at operation {then_ops} (start and topic creation: {start_ops})");
        let broker = rig.power_loss(broker, workload, &label).await;
        // And the broker keeps working after it.
        let workload = rig.workload(&broker, seed, 1, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        rig.power_loss(broker, workload, &format!("seed {seed}, after the first-start cut")).await;
    }
    summary("first start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_inside_a_segment_roll() {
    for seed in 0..rounds() {
        let Some((mut rig, mut broker, mut rng)) = Rig::boot("segment roll", 200 + seed).await else {
            return;
        };
        for cycle in 0..4 {
            // Producer snapshots and recovery points failing to sync (both
            // tolerated by the broker) leave the roll's own directory sync
            // as the only thing making the new segment's name durable.
            let masking = vec![".producers".to_string(), "recovery-point".to_string()];
            let fault = (cycle % 2 == 1).then_some(FsyncFault { paths: masking, count: u64::MAX });
            rig.fs.fail_fsyncs(fault);
            let workload = rig.run_for(&broker, (seed, cycle), &mut rng, 50..300).await;
            let then_ops = rng.gen_range(0..40);
            rig.fs.arm_cut(CutTrigger {
                op: Some(Op::Create),
                path_contains: Some(".log".into()),
                then_ops,
                crash: false,
            });
            let flag = rig.fs.cut_flag();
            let cut = wait_until(Duration::from_secs(10), || flag.load(Ordering::SeqCst)).await;
            assert!(cut, "no segment rolled within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let label = format!("seed {seed} cycle {cycle}, cut {then_ops} operations into a roll");
            broker = rig.power_loss(broker, workload, &label).await;
        }
    }
    summary("segment roll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_inside_the_offsets_compaction_at_start() {
    for seed in 0..rounds() {
        let Some(mut rig) = Rig::new("offsets compaction") else { return };
        let mut rng = StdRng::seed_from_u64(300 + seed);
        let broker = rig.start().await;
        // Grow the committed-offsets log past the compaction threshold
        // (more than 1000 records, more than twice the live ones).
        let workload = rig.workload(&broker, seed, 0, true);
        let grown =
            wait_until(Duration::from_secs(60), || workload.commits_so_far(COMMITTER_GROUP) > 1200).await;
        assert!(grown, "the committer did not reach 1200 commits in 60 s");
        let broker = rig.power_loss(broker, workload, &format!("seed {seed}, before compaction")).await;
        // That restart compacted; grow it again, then cut inside the next compaction.
        let then_ops = rng.gen_range(0..60);
        grow_offsets_log_then_kill(&mut rig, broker, seed, 1).await;
        rig.fs.arm_cut(CutTrigger {
            op: None,
            path_contains: Some("offsets-".into()),
            then_ops,
            crash: false,
        });
        let broker = rig.start().await;
        assert!(broker.log_text().contains("compacted the committed-offsets log"), "{}", broker.log_text());
        let workload = rig.workload(&broker, seed, 2, false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let label = format!("seed {seed}, cut {then_ops} operations into the offsets compaction");
        rig.power_loss(broker, workload, &label).await;
    }
    summary("offsets compaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_after_failed_fsyncs() {
    for seed in 0..rounds() {
        let Some((mut rig, mut broker, mut rng)) = Rig::boot("failed fsyncs", 400 + seed).await else {
            return;
        };
        for cycle in 0..3 {
            let workload = rig.run_for(&broker, (seed, cycle), &mut rng, 100..500).await;
            // The next syncs of one partition's files fail (a flush or a seal).
            let partition = rng.gen_range(0..PARTITIONS);
            let count = rng.gen_range(1..4);
            let paths = vec![format!("/topics/{TOPIC}/{partition}/")];
            rig.fs.fail_fsyncs(Some(FsyncFault { paths, count }));
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..500))).await;
            let label = format!("seed {seed} cycle {cycle}, {count} failed fsyncs in partition {partition}");
            broker = rig.power_loss(broker, workload, &label).await;
        }
    }
    summary("failed fsyncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_inside_topic_create_and_delete() {
    for seed in 0..rounds() {
        let Some((mut rig, mut broker, mut rng)) = Rig::boot("topic churn", 500 + seed).await else { return };
        for cycle in 0..3 {
            let workload = rig.run_for(&broker, (seed, cycle), &mut rng, 50..300).await;
            let then_ops = rng.gen_range(0..30);
            // Odd cycles: a process crash at that operation instead (what was
            // written before it kept, synced or not).
            let crash = cycle % 2 == 1;
            let inside_churn =
                CutTrigger { op: None, path_contains: Some("/topics/churn".into()), then_ops, crash };
            rig.fs.arm_cut(inside_churn);
            let flag = rig.fs.cut_flag();
            assert!(
                wait_until(Duration::from_secs(10), || flag.load(Ordering::SeqCst)).await,
                "no topic churn in 10 s"
            );
            let cut = if crash { "crash" } else { "power cut" };
            let label = format!(
                "seed {seed} cycle {cycle}, {cut} {then_ops} operations into a topic create or delete"
            );
            broker = rig.power_loss(broker, workload, &label).await;
        }
    }
    summary("topic create and delete");
}

/// A sync fails right after a roll (the first file fsync in the partition
/// after it creates a new segment), then the power goes. Earlier the roll
/// synced the old segment's index inline, a failure there dropped the
/// segment from the log, and recovery deleted acknowledged records after
/// the gap. Now the failed sync fails the log (nothing is acknowledged over
/// it), the partition reopens it from its durable offset, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_after_a_failed_seal() {
    for seed in 0..rounds() {
        let Some((mut rig, mut broker, mut rng)) = Rig::boot("failed seal", 600 + seed).await else { return };
        for cycle in 0..3 {
            let workload = rig.run_for(&broker, (seed, cycle), &mut rng, 50..300).await;
            // The first file fsync in partition 0 after it starts a new
            // segment is the seal of the old one: it fails.
            let partition = rng.gen_range(0..PARTITIONS);
            let new_segment = CutTrigger {
                op: Some(Op::Create),
                path_contains: Some(format!("/topics/{TOPIC}/{partition}/0")),
                ..CutTrigger::default()
            };
            let fault = FsyncFault { paths: vec![format!("/topics/{TOPIC}/{partition}/")], count: 1 };
            let failed_before = rig.fs.stats().failed_fsyncs;
            rig.fs.arm_fault(new_segment, fault);
            let failed =
                wait_until(Duration::from_secs(10), || rig.fs.stats().failed_fsyncs > failed_before).await;
            assert!(failed, "no roll in partition {partition} within 10 s");
            tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
            let label = format!("seed {seed} cycle {cycle}, failed seal in partition {partition}");
            broker = rig.power_loss(broker, workload, &label).await;
        }
    }
    summary("failed seal");
}

/// Commits until the committed-offsets log is past the compaction
/// threshold (more than 1000 records, more than twice the live ones), then
/// `kill -9` (no power loss): the next start compacts.
async fn grow_offsets_log_then_kill(rig: &mut Rig, mut broker: ProcessBroker, seed: u64, cycle: u32) {
    let workload = rig.workload(&broker, seed, cycle, true);
    let grown = wait_until(Duration::from_secs(60), || workload.commits_so_far(COMMITTER_GROUP) > 1200).await;
    assert!(grown, "the committer did not reach 1200 commits in 60 s");
    broker.kill9();
    rig.acked.extend(workload.stop().await);
}

/// The compaction's one switch is the rename of `offsets.current.tmp` over
/// `offsets.current` (an earlier two-rename swap lost every committed
/// offset when a crash fell between its renames): a crash right before,
/// at, or right after it leaves exactly one complete offsets log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_around_the_offsets_log_switch() {
    for then_ops in 0..3 {
        let Some(mut rig) = Rig::new("offsets log switch") else { return };
        let broker = rig.start().await;
        grow_offsets_log_then_kill(&mut rig, broker, then_ops, 0).await;
        let switch = CutTrigger {
            op: Some(Op::Rename),
            path_contains: Some("offsets.current.tmp ->".into()),
            then_ops,
            crash: true,
        };
        rig.fs.arm_cut(switch);
        let broker = rig.start().await;
        assert!(rig.fs.cut_happened(), "the compaction did not switch logs");
        let workload = rig.workload(&broker, then_ops, 1, false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        rig.power_loss(broker, workload, &format!("crash {then_ops} operations from the switch")).await;
    }
    summary("offsets log switch");
}

/// On a file system without `fallocate` (EOPNOTSUPP) the broker must still
/// accept and keep acknowledged records across a power loss (files grow
/// with ftruncate). This test found every append failing with
/// `STORAGE_ERROR` "Operation not supported (os error 95)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_without_fallocate() {
    let Some(mut rig) = Rig::new("no fallocate") else { return };
    rig.fs.set_fallocate_unsupported(true);
    let broker = rig.start().await;
    let batch = sluice_tests::batch(1, 10, 1);
    let first = sluice_tests::produce(&broker.connect().await, TOPIC, 0, Acks::Durable, batch).await;
    assert!(first.is_ok(), "a produce where fallocate is unsupported: {first:?}");
    let workload = rig.workload(&broker, 0, 0, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.power_loss(broker, workload, "fallocate refused").await;
    assert!(!rig.acked.records.is_empty(), "nothing was acknowledged where fallocate is unsupported");
    summary("no fallocate");
}

/// A follower's log reset (`Log::reset_to`: it starts over at its leader's
/// log start) survives a power loss: the old segments stay gone and the
/// log opens at the new start with what was synced after it (the new
/// segment's name is made durable by the directory sync of the recovery
/// point's write; without it the log comes back empty at offset 0).
#[test]
fn a_log_reset_survives_a_power_loss() {
    use sluice_broker::storage::{DiskSpace, FsyncPolicy, Log, LogConfig};
    use sluice_protocol::batch::{BatchBuilder, RecordBatch};
    let batch = |n: usize| {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.append(1_700_000_000_000 + i as i64, None, Some(b"value"), &[]);
        }
        RecordBatch::new(b.build()).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(mut fs) = PowerFs::mount_or_skip(&mnt, "powerloss::log reset") else { return };
    let data = mnt.join("log");
    let config = LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() };
    let (mut log, _) = Log::open(&data, config.clone(), DiskSpace::Real).unwrap();
    for _ in 0..3 {
        log.append_batch_at_epoch(&batch(4), 0, 1).unwrap();
    }
    log.flush().unwrap();
    log.reset_to(40).unwrap();
    log.append_batch_at_epoch(&batch(2), 0, 2).unwrap();
    log.flush().unwrap();
    fs.cut_now();
    drop(log);
    fs.power_loss_and_remount().unwrap();
    let (log, _) = Log::open(&data, config, DiskSpace::Real).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.last_epoch()), (40, 42, 2));
    drop(log);
    fs.unmount().unwrap();
}

/// Power cut at every step of a log reset: the log always opens (no
/// repair), either as it was before the reset or empty (at 0 or at the
/// new start), never with the old records below a gap.
#[test]
fn a_log_reset_cut_at_any_step_opens_whole_or_empty() {
    use sluice_broker::storage::{DiskSpace, FsyncPolicy, Log, LogConfig};
    use sluice_protocol::batch::{BatchBuilder, RecordBatch};
    let mut b = BatchBuilder::new();
    b.append(1_700_000_000_000, None, Some(b"value"), &[]);
    let batch = RecordBatch::new(b.build()).unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() };
    for then_ops in 0..64 {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let Some(mut fs) = PowerFs::mount_or_skip(&mnt, "powerloss::log reset cut") else { return };
        let data = mnt.join("log");
        let (mut log, _) = Log::open(&data, config.clone(), DiskSpace::Real).unwrap();
        for _ in 0..12 {
            log.append_batch_at_epoch(&batch, 0, 1).unwrap();
        }
        log.flush().unwrap();
        fs.arm_cut(CutTrigger {
            op: Some(Op::Rename),
            path_contains: Some(".deleted".into()),
            then_ops,
            crash: false,
        });
        log.reset_to(40).unwrap();
        let cut = fs.cut_happened();
        fs.cut_now();
        drop(log);
        fs.power_loss_and_remount().unwrap();
        let (log, _) = Log::open(&data, config.clone(), DiskSpace::Real)
            .unwrap_or_else(|e| panic!("cut {then_ops} operations into the reset: {e}"));
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        assert!(
            (start, end) == (0, 12) || (start == end && (start == 0 || start == 40)),
            "cut {then_ops} operations into the reset: the log opened as [{start}, {end})"
        );
        drop(log);
        fs.unmount().unwrap();
        if !cut {
            assert!(then_ops > 2, "the cut never came inside the reset");
            assert_eq!((start, end), (40, 40), "the whole reset was durable");
            eprintln!("log reset: cut at each of its first {then_ops} file operations");
            return;
        }
    }
    panic!("the reset took more than 64 file operations");
}
