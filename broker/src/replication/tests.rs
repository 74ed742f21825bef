//! Replication between in-process brokers (see `test_support`): durable
//! acknowledgements wait for the followers' fsync, the high watermark is
//! the ISR's minimum, replicated bytes are identical, a diverged follower
//! is truncated by epoch (KIP-279), fencing, and idempotent dedup across a
//! failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::test_support::*;
use crate::errors::BrokerError;
use crate::storage::FsyncPolicy;

const MAX_FRAME: usize = 1 << 20;
const SHORT: Duration = Duration::from_millis(400);

/// A durable produce on the leader is acknowledged only once the follower
/// has fsynced it: the follower below fetches the batch but cannot flush
/// (interval of an hour), and the acknowledgement does not come; once it
/// flushes, it does. The high watermark is the minimum meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_ack_waits_for_the_followers_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    let f = node(dir.path(), 2, FsyncPolicy::Interval(Duration::from_secs(3600))).await;
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1, 2], 2));
    f.mgr.set_role(&f.p, follower(1, &l));

    l.p.check_writable(true).unwrap();
    let appended = l.p.append(records(3), MAX_FRAME, now_ms()).unwrap();
    eventually("the follower fetched the batch", || f.p.log().log_end_offset() == 3).await;
    let err = l.p.wait_durable(&appended, SHORT).await.unwrap_err();
    assert!(matches!(err, BrokerError::Timeout(_)), "{err:?}");
    assert_eq!(l.p.log().durable_offset(), 3, "the leader's own flush is done");
    assert_eq!(f.p.log().durable_offset(), 0);
    assert_eq!(l.p.high_watermark(), 0, "HW = min over the ISR");
    assert!(l.p.log().read(0, MAX_FRAME).unwrap().is_empty(), "consumers see nothing yet");

    // The follower flushes: the acknowledgement comes.
    let mut cfg = f.p.config();
    cfg.fsync = FsyncPolicy::Always;
    let fp = std::sync::Arc::clone(&f.p);
    tokio::task::spawn_blocking(move || fp.set_config(cfg)).await.unwrap();
    l.p.wait_durable(&appended, WAIT).await.unwrap();
    assert_eq!(l.p.high_watermark(), 3);
    assert_eq!(all_bytes(&l.p), all_bytes(&f.p), "replicated bytes are identical");
    eventually("the follower learns the HW", || f.p.high_watermark() == 3).await;
    assert_eq!(f.p.log().last_epoch(), 1, "the leader stamped its epoch");
}

/// With the follower's fetcher stopped (role offline), no acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_while_the_follower_does_not_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    let f = node(dir.path(), 2, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1, 2], 2));
    f.mgr.set_role(&f.p, super::Role::Offline { epoch: 1 });
    let appended = l.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
    assert!(matches!(l.p.wait_durable(&appended, SHORT).await, Err(BrokerError::Timeout(_))));
    f.mgr.set_role(&f.p, follower(1, &l));
    l.p.wait_durable(&appended, WAIT).await.unwrap();
    assert_eq!(all_bytes(&l.p), all_bytes(&f.p));
}

/// KIP-279: the follower's tail at epoch 2 was never on the new leader,
/// which went from epoch 1 to 3; the follower asks for the end of epoch 2,
/// gets (1, 3), cuts its log to 3 and then fetches the leader's tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_follower_is_truncated_by_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), 1, FsyncPolicy::Always).await;
    let b = node(dir.path(), 2, FsyncPolicy::Always).await;
    // Both hold offsets 0..3 at epoch 1.
    a.mgr.set_role(&a.p, leader(1, &[1, 2], &[1], 1));
    a.p.append(records(3), MAX_FRAME, now_ms()).unwrap();
    b.p.append_replica(a.p.log().read_for_replica(0, MAX_FRAME).unwrap()).unwrap();
    // A leads epoch 2 alone and appends 4 records nobody else has.
    a.mgr.set_role(&a.p, leader(2, &[1, 2], &[1], 1));
    a.p.append(records(4), MAX_FRAME, now_ms()).unwrap();
    // B leads epoch 3 and appends 2 records.
    b.mgr.set_role(&b.p, leader(3, &[1, 2], &[2], 1));
    b.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
    assert_eq!(b.p.log().end_offset_for_epoch(2), (Some(1), 3));

    a.mgr.set_role(&a.p, follower(3, &b));
    eventually("A agrees with B", || all_bytes(&a.p) == all_bytes(&b.p)).await;
    assert_eq!(a.p.log().log_end_offset(), 5);
    assert_eq!(a.p.log().end_offset_for_epoch(2), (Some(1), 3), "epoch 2 is gone");
    assert_eq!(a.p.log().last_epoch(), 3);
}

/// A fetch with a newer epoch makes the leader stale: writes refused and
/// a pending durable produce fails instead of being acknowledged. A fetch
/// with an older epoch is fenced and moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_gets_no_durable_ack() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    let f = node(dir.path(), 2, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(5, &[1, 2], &[1, 2], 2));
    // An older-epoch follower is fenced: no progress, no acknowledgement.
    f.mgr.set_role(&f.p, follower(4, &l));
    let appended = l.p.append(records(1), MAX_FRAME, now_ms()).unwrap();
    assert!(matches!(l.p.wait_durable(&appended, SHORT).await, Err(BrokerError::Timeout(_))));
    assert_eq!(f.p.log().log_end_offset(), 0, "a fenced follower gets nothing");
    // A newer-epoch follower: the leader learns it is stale.
    let waiter = {
        let p = std::sync::Arc::clone(&l.p);
        tokio::spawn(async move { p.wait_durable(&appended, WAIT).await })
    };
    f.mgr.set_role(&f.p, follower(6, &l));
    eventually("the leader is stale", || l.p.is_stale()).await;
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, BrokerError::NotLeader { .. }), "{err:?}");
    assert!(matches!(l.p.check_writable(false), Err(BrokerError::NotLeader { .. })));
    assert_eq!(l.p.high_watermark(), 0);
}

/// A leader whose lease lapsed refuses writes until it is renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(1, &[1], &[1], 1));
    l.p.check_writable(true).unwrap();
    l.mgr.set_lease_until(now_ms() as u64 - 1);
    assert!(matches!(l.p.check_writable(false), Err(BrokerError::NotLeader { .. })));
    l.mgr.set_lease_until(now_ms() as u64 + 60_000);
    l.p.check_writable(true).unwrap();
    assert!(matches!(l.p.check_writable(true), Ok(())));
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1], 2));
    assert!(matches!(l.p.check_writable(true), Err(BrokerError::NotEnoughReplicas { .. })));
}

/// An idempotent batch replicated to the follower is recognized as a
/// duplicate there after it becomes leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_dedup_survives_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), 1, FsyncPolicy::Always).await;
    let b = node(dir.path(), 2, FsyncPolicy::Always).await;
    a.mgr.set_role(&a.p, leader(1, &[1, 2], &[1, 2], 2));
    b.mgr.set_role(&b.p, follower(1, &a));
    a.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
    let first = a.p.append(idempotent(42, 0), MAX_FRAME, now_ms()).unwrap();
    a.p.wait_durable(&first, WAIT).await.unwrap();
    assert!(b.p.log().log_end_offset() >= 3);

    // Failover: B leads epoch 2, A follows.
    b.mgr.set_role(&b.p, leader(2, &[1, 2], &[2], 1));
    a.mgr.set_role(&a.p, follower(2, &b));
    let retry = b.p.append(idempotent(42, 0), MAX_FRAME, now_ms()).unwrap();
    assert!(retry.info.duplicate, "the retry is deduplicated on the new leader");
    assert_eq!(retry.info.base_offset, first.info.base_offset);
    let next = b.p.append(idempotent(42, 1), MAX_FRAME, now_ms()).unwrap();
    assert!(!next.info.duplicate);
    assert_eq!(next.info.base_offset, 3);
    eventually("A follows B", || all_bytes(&a.p) == all_bytes(&b.p)).await;
    assert_eq!(b.p.log().last_epoch(), 2);
}

/// Three brokers: the high watermark is the minimum over the ISR, and the
/// acknowledgement waits for the slowest in-sync follower's flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_hw_is_the_isr_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    let fast = node(dir.path(), 2, FsyncPolicy::Always).await;
    let slow = node(dir.path(), 3, FsyncPolicy::Interval(Duration::from_secs(3600))).await;
    l.mgr.set_role(&l.p, leader(7, &[1, 2, 3], &[1, 2, 3], 2));
    fast.mgr.set_role(&fast.p, follower(7, &l));
    slow.mgr.set_role(&slow.p, follower(7, &l));
    let appended = l.p.append(records(4), MAX_FRAME, now_ms()).unwrap();
    eventually("both followers fetched", || {
        fast.p.log().durable_offset() == 4 && slow.p.log().log_end_offset() == 4
    })
    .await;
    assert!(matches!(l.p.wait_durable(&appended, SHORT).await, Err(BrokerError::Timeout(_))));
    assert_eq!(l.p.high_watermark(), 0, "the slow follower holds the HW back");
    let progress = l.p.follower_progress();
    assert_eq!((progress[&2].durable, progress[&3].durable), (4, 0));
    let mut cfg = slow.p.config();
    cfg.fsync = FsyncPolicy::Always;
    let sp = std::sync::Arc::clone(&slow.p);
    tokio::task::spawn_blocking(move || sp.set_config(cfg)).await.unwrap();
    l.p.wait_durable(&appended, WAIT).await.unwrap();
    assert_eq!(l.p.high_watermark(), 4);
    assert_eq!(all_bytes(&l.p), all_bytes(&fast.p));
    assert_eq!(all_bytes(&l.p), all_bytes(&slow.p));
}

/// A live truncation waits while a reader still holds bytes of the
/// segment it cuts (cutting a mapped file under a reader could fault),
/// then cuts once the reader lets go; appends continue at the new end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_truncation_waits_for_readers() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1, FsyncPolicy::Always).await;
    n.mgr.set_role(&n.p, leader(1, &[1], &[1], 1));
    for _ in 0..3 {
        let a = n.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
        n.p.wait_durable(&a, WAIT).await.unwrap();
    }
    let held = n.p.log().read_for_replica(0, MAX_FRAME).unwrap();
    let p = std::sync::Arc::clone(&n.p);
    let cut = tokio::task::spawn_blocking(move || p.truncate_live(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!cut.is_finished(), "the cut waits for the reader");
    assert_eq!(n.p.log().log_end_offset(), 6);
    drop(held);
    cut.await.unwrap().unwrap();
    assert_eq!(n.p.log().log_end_offset(), 2);
    assert_eq!(n.p.high_watermark(), 2, "the high watermark moved back with the cut");
    let a = n.p.append(records(1), MAX_FRAME, now_ms()).unwrap();
    assert_eq!(a.info.base_offset, 2);
}

/// A follower whose log lies wholly below the leader's log start (the
/// leader's retention deleted what it would fetch next; here it holds
/// nothing at all) starts over at the leader's log start instead of
/// retrying forever, catches up, and rejoins the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_below_the_leaders_log_start_starts_over_there() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    let f = node(dir.path(), 2, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1], 1));
    for _ in 0..5 {
        let a = l.p.append(records(3), MAX_FRAME, now_ms()).unwrap();
        l.p.wait_durable(&a, WAIT).await.unwrap();
        l.p.log().roll().unwrap();
    }
    let mut cfg = l.p.config();
    cfg.retention_bytes = 1;
    let lp = std::sync::Arc::clone(&l.p);
    tokio::task::spawn_blocking(move || lp.set_config(cfg)).await.unwrap();
    l.p.log().apply_retention(now_ms()).unwrap();
    let start = l.p.log().log_start_offset();
    assert!(start > 0, "retention deleted the first segments");

    f.mgr.set_role(&f.p, follower(1, &l));
    eventually("the follower starts at the leader's log start and catches up", || {
        let log = f.p.log();
        (log.log_start_offset(), log.log_end_offset()) == (start, 15)
    })
    .await;
    let a = l.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
    l.p.wait_durable(&a, WAIT).await.unwrap();
    eventually("the follower back in the ISR", || isr_of(&l.p) == vec![1, 2]).await;
    eventually("the follower holds the leader's bytes", || all_bytes(&l.p) == all_bytes(&f.p)).await;
}
