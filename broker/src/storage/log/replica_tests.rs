//! The log's replication operations: epoch stamping, verbatim replica
//! appends (offsets and epochs kept, a gap refused), the epoch lookups
//! over several segments, and reading past the high watermark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_protocol::batch::{BatchBuilder, BatchHeader, RecordBatch};

use super::*;
use crate::storage::{DiskSpace, StorageError};

fn batch(records: usize) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        b.append(1_700_000_000_000 + i as i64, None, Some(b"value"), &[]);
    }
    RecordBatch::new(b.build()).unwrap()
}

fn open(dir: &Path, segment_bytes: u64) -> Log {
    let config = LogConfig { segment_bytes, fsync: FsyncPolicy::Never, ..LogConfig::default() };
    Log::open(dir, config, DiskSpace::Real).unwrap().0
}

/// Every batch of `log` as (base offset, epoch).
fn epochs(log: &Log) -> Vec<(u64, i32)> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let bytes = log.read_for_replica(at, 1).unwrap();
        let h = BatchHeader::parse(&bytes).unwrap();
        out.push((h.base_offset, h.partition_leader_epoch));
        at = h.last_offset() + 1;
    }
    out
}

#[test]
fn epochs_are_stamped_and_looked_up_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1024);
    assert_eq!(log.last_epoch(), NO_EPOCH);
    assert_eq!(log.end_offset_for_epoch(3), (None, 0));
    // Epoch 1: offsets 0..30, epoch 4: 30..60, epoch 7: 60..90; several segments.
    for epoch in [1, 4, 7] {
        for _ in 0..10 {
            log.append_batch_at_epoch(&batch(3), 0, epoch).unwrap();
        }
    }
    assert!(log.stats().segment_count > 1, "the test needs several segments");
    assert_eq!(log.last_epoch(), 7);
    assert_eq!(log.end_offset_for_epoch(0), (None, 0));
    assert_eq!(log.end_offset_for_epoch(1), (Some(1), 30));
    assert_eq!(log.end_offset_for_epoch(2), (Some(1), 30));
    assert_eq!(log.end_offset_for_epoch(4), (Some(4), 60));
    assert_eq!(log.end_offset_for_epoch(6), (Some(4), 60));
    assert_eq!(log.end_offset_for_epoch(7), (Some(7), 90));
    assert_eq!(log.end_offset_for_epoch(99), (Some(7), 90));
    assert_eq!(epochs(&log)[10], (30, 4));
}

#[test]
fn replica_appends_are_verbatim_and_refuse_gaps_and_older_epochs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(a.path(), 4096);
    let follower = open(b.path(), 4096);
    for epoch in [2, 2, 5, 5, 5] {
        leader.append_batch_at_epoch(&batch(4), 123, epoch).unwrap();
    }
    // The leader's log past its high watermark is served to followers.
    leader.set_high_watermark_limit(0);
    assert_eq!(leader.high_watermark(), 0);
    let mut at = 0;
    while at < leader.log_end_offset() {
        let bytes = leader.read_for_replica(at, 1).unwrap();
        let info = follower.append_replica(&bytes, 0).unwrap();
        assert_eq!(info.base_offset, at);
        at = info.last_offset + 1;
    }
    assert_eq!(epochs(&follower), epochs(&leader));
    assert_eq!(follower.read_for_replica(0, 1 << 20).unwrap(), leader.read_for_replica(0, 1 << 20).unwrap());
    // A gap and an older epoch are refused.
    leader.append_batch_at_epoch(&batch(1), 0, 5).unwrap();
    leader.append_batch_at_epoch(&batch(1), 0, 6).unwrap();
    let gap = leader.read_for_replica(21, 1).unwrap();
    assert!(matches!(follower.append_replica(&gap, 0), Err(StorageError::ReplicaMismatch { .. })));
    let mut older = leader.read_for_replica(20, 1).unwrap().to_vec();
    sluice_protocol::batch::set_partition_leader_epoch(&mut older, 1);
    assert!(matches!(follower.append_replica(&older, 0), Err(StorageError::ReplicaMismatch { .. })));
    assert_eq!(follower.log_end_offset(), 20);
}

/// A new leader's high watermark lags what its predecessor served: a
/// consumer positioned between it and the log end waits (an empty read),
/// and is told "out of range" only past the log end. Before, the read
/// refused every offset past the high watermark and the consumer reset to
/// the start of the log, re-reading and re-committing older offsets.
#[test]
fn reads_between_the_high_watermark_and_the_log_end_are_empty_not_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4096);
    for _ in 0..5 {
        log.append_batch_at_epoch(&batch(4), 0, 3).unwrap();
    }
    log.set_high_watermark_limit(8);
    assert_eq!((log.high_watermark(), log.log_end_offset()), (8, 20));
    assert!(!log.read(4, 1 << 20).unwrap().is_empty());
    for offset in [8, 12, 20] {
        assert!(log.read(offset, 1 << 20).unwrap().is_empty(), "offset {offset}");
    }
    assert!(matches!(
        log.read(21, 1 << 20),
        Err(StorageError::OffsetOutOfRange { offset: 21, log_end_offset: 20, .. })
    ));
    // Below the high watermark a read ends at it.
    let bytes = log.read(0, 1 << 20).unwrap();
    let last = sluice_protocol::batch::split_batches(bytes).last().unwrap().unwrap();
    assert_eq!(last.header().last_offset() + 1, 8);
}

/// A reset empties the log and starts it at an offset past its end; the
/// directory then opens at that offset, appends continue from it, and an
/// offset below the end is refused.
#[test]
fn a_reset_starts_the_log_over_past_its_end_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    for epoch in [1, 1, 2] {
        log.append_batch_at_epoch(&batch(3), 0, epoch).unwrap();
    }
    log.roll().unwrap();
    log.append_batch_at_epoch(&batch(3), 0, 2).unwrap();
    assert!(matches!(log.reset_to(5), Err(StorageError::OffsetOutOfRange { .. })));
    log.reset_to(40).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.durable_offset()), (40, 40, 40));
    assert_eq!(log.stats().segment_count, 1);
    assert!(log.read_for_replica(40, 1 << 20).unwrap().is_empty());
    let info = log.append_batch_at_epoch(&batch(2), 0, 3).unwrap();
    assert_eq!(info.base_offset, 40);
    log.flush().unwrap();
    drop(log);
    let log = open(dir.path(), 4096);
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.last_epoch()), (40, 42, 3));
    assert_eq!(epochs(&log), vec![(40, 3)]);
}
