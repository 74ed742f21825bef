//! The partition's fsync-policy decisions: a failed sync stops it and it
//! recovers by reopening its log; policy changes take effect at once and
//! never move the high watermark back. Faults are injected through the
//! partition's test-only hooks (a sync that fails before reaching the log,
//! reopens that fail while a flag is set): the storage below is real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::batch::{BatchBuilder, RecordBatch};
use sluice_protocol::ErrorCode;

use super::*;
use crate::storage::DiskSpace;

fn batch(records: usize) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        b.append(1_700_000_000_000 + i as i64, None, Some(b"value"), &[]);
    }
    RecordBatch::new(b.build()).unwrap()
}

/// A partition over a fresh log with `fsync`, its flusher running.
fn partition(dir: &std::path::Path, fsync: FsyncPolicy) -> Arc<Partition> {
    let config = LogConfig { fsync, ..LogConfig::default() };
    let (log, _) = Log::open(&dir.join("0"), config, DiskSpace::Real).unwrap();
    let p = Arc::new(Partition::new("t".into(), 0, log, CancellationToken::new(), Arc::default()));
    tokio::spawn(Arc::clone(&p).run_flusher());
    p
}

/// Polls `done` until it holds, at most 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_stops_acknowledging_then_reopens_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), FsyncPolicy::Always);
    let first = p.append_checked(&batch(3), 0).unwrap();
    p.wait_durable(&first, WAIT).await.unwrap();
    assert_eq!(p.high_watermark(), 3);
    let failed_log = p.log();

    p.faults.fail_reopens.store(true, Ordering::SeqCst);
    p.faults.fail_syncs.store(1, Ordering::SeqCst);
    let second = p.append_checked(&batch(2), 0).unwrap();
    // The pending durable produce fails with the typed, retriable error.
    let err = p.wait_durable(&second, WAIT).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert!(matches!(err, BrokerError::Storage(StorageError::Failed { durable_offset: 3, .. })), "{err:?}");
    assert!(p.is_failed());
    assert_eq!((p.metrics.sync_failures.get(), p.metrics.failed_partitions.get()), (1, 1));

    // Later produces fail at once, even though the failed log's next flush
    // would return Ok: it is never trusted again.
    failed_log.flush().unwrap();
    let refused = p.append_checked(&batch(1), 0).unwrap_err();
    assert!(matches!(refused, StorageError::Failed { durable_offset: 3, .. }), "{refused:?}");
    // Reads keep working below the high watermark, which did not move.
    assert_eq!(p.high_watermark(), 3);
    assert!(!p.log().read(0, 1 << 20).unwrap().is_empty());
    // Reopening is retried while it fails.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(p.is_failed() && Arc::ptr_eq(&p.log(), &failed_log));

    p.faults.fail_reopens.store(false, Ordering::SeqCst);
    eventually("the log reopened", || !p.is_failed()).await;
    assert!(!Arc::ptr_eq(&p.log(), &failed_log));
    assert_eq!(p.metrics.failed_partitions.get(), 0);
    assert!(p.high_watermark() >= 3);
    let third = p.append_checked(&batch(1), 0).unwrap();
    p.wait_durable(&third, WAIT).await.unwrap();
    assert_eq!(p.high_watermark(), third.info.last_offset + 1);
    p.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_made_durable_before_a_later_failure_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), FsyncPolicy::Always);
    let first = p.append_checked(&batch(1), 0).unwrap();
    eventually("first flushed", || p.high_watermark() == 1).await;
    p.faults.fail_syncs.store(1, Ordering::SeqCst);
    let second = p.append_checked(&batch(1), 0).unwrap();
    assert!(p.wait_durable(&second, WAIT).await.is_err());
    // Its generation failed, but it was below the durable offset at the failure.
    p.wait_durable(&first, WAIT).await.unwrap();
    p.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_always_to_interval_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), FsyncPolicy::Always);
    let first = p.append_checked(&batch(1), 0).unwrap();
    p.wait_durable(&first, WAIT).await.unwrap();
    // The flusher is now idle in `always` mode (waiting to be asked).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let interval = LogConfig { fsync: FsyncPolicy::Interval(Duration::from_millis(20)), ..p.config() };
    let q = Arc::clone(&p);
    tokio::task::spawn_blocking(move || q.set_config(interval)).await.unwrap();
    let second = p.append_checked(&batch(1), 0).unwrap();
    p.wait_durable(&second, WAIT).await.unwrap();
    assert_eq!(p.high_watermark(), 2);
    p.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_never_to_always_keeps_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), FsyncPolicy::Never);
    for _ in 0..3 {
        p.append_checked(&batch(2), 0).unwrap();
    }
    assert_eq!(p.high_watermark(), 6);
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never, FsyncPolicy::Interval(Duration::from_secs(3600))] {
        p.append_checked(&batch(1), 0).unwrap();
        let before = p.high_watermark();
        let end = p.log().log_end_offset();
        let q = Arc::clone(&p);
        let config = LogConfig { fsync, ..p.config() };
        tokio::task::spawn_blocking(move || q.set_config(config)).await.unwrap();
        assert!(p.high_watermark() >= before, "{fsync}: {} < {before}", p.high_watermark());
        let log = p.log();
        assert!(log.high_watermark() >= before, "{fsync}: the log serves less than was served");
        // What consumers could read before is still readable.
        assert!(!log.read(end - 1, 1 << 20).unwrap().is_empty(), "{fsync}");
    }
    p.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_partition_flushes_its_pending_durable_produces() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), FsyncPolicy::Interval(Duration::from_secs(3600)));
    let appended = p.append_checked(&batch(1), 0).unwrap();
    let q = Arc::clone(&p);
    let waiter = tokio::spawn(async move { q.wait_durable(&appended, Duration::from_secs(3600)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    p.cancel.cancel();
    tokio::time::timeout(WAIT, waiter).await.expect("answered promptly").unwrap().unwrap();
    assert_eq!(p.log().durable_offset(), 1);
}

/// A replica dropped from the ISR at the same epoch (the controller did it
/// when that broker restarted) must fetch again before it can rejoin: what
/// its old incarnation reported is forgotten, so the leader neither counts
/// it toward the high watermark nor adds it straight back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dropped_from_the_isr_is_forgotten_until_it_fetches_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), FsyncPolicy::Always);
    p.attach_replication(1, Arc::new(AtomicU64::new(u64::MAX)));
    let leader = |isr: &[u64]| crate::replication::Role::Leader {
        epoch: 4,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        min_insync_replicas: 2,
    };
    p.set_role(leader(&[1, 2, 3]));
    p.append(batch(5).into_bytes(), 1 << 20, 1_700_000_000_000).unwrap();
    for follower in [2, 3] {
        p.record_follower_fetch(follower, 5, 5);
    }
    let fetched = |id| p.follower_progress().get(&id).map(|f| (f.fetched, f.durable));
    assert_eq!((fetched(2), fetched(3)), (Some((true, 5)), Some((true, 5))));
    p.set_role(leader(&[1, 2]));
    assert_eq!(fetched(2), Some((true, 5)), "an ISR member keeps its progress");
    assert_eq!(fetched(3), Some((false, 0)), "the dropped replica starts over");
    p.record_follower_fetch(3, 2, 2);
    assert_eq!(fetched(3), Some((true, 2)));
}
