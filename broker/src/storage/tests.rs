//! Log-level tests: behaviour, a model-based property test, crash
//! consistency, corruption and a full disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_protocol::batch::{split_batches, BatchBuilder, BatchHeader, RecordBatch, HEADER_LEN};

use super::*;

fn batch_with(records: usize, value_len: usize, ts: i64, tag: u8) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        b.append(ts + i as i64, Some(&[tag]), Some(&vec![tag.wrapping_add(i as u8); value_len]), &[]);
    }
    b.build()
}

fn batch(tag: u8) -> Bytes {
    batch_with(3, 50, 1_000, tag)
}

fn config() -> LogConfig {
    LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() }
}

fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, max_message_bytes: 4096, ..config() }
}

fn open(dir: &Path, config: LogConfig) -> (Log, RecoveryReport) {
    Log::open(dir, config, DiskSpace::Real).unwrap()
}

/// Reads every batch from `from` to the high watermark, following offsets.
fn read_all(log: &Log, from: u64) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.high_watermark() {
        let bytes = log.read(next, 1 << 20).unwrap();
        assert!(!bytes.is_empty(), "no progress at offset {next}");
        for b in split_batches(bytes) {
            let b = b.unwrap();
            b.verify_crc().unwrap();
            if b.header().last_offset() >= next {
                next = b.header().next_offset();
                out.push(b);
            }
        }
    }
    out
}

/// Compares stored batches with what was appended (all but base_offset).
/// Stored as appended, but for what the log stamps: `base_offset` and
/// `partition_leader_epoch` (0 on a single node), both before `magic`.
fn same_batch(stored: &RecordBatch, appended: &Bytes) -> bool {
    stored.header().partition_leader_epoch == 0 && stored.as_bytes()[16..] == appended[16..]
}

#[test]
fn append_then_read_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = open(dir.path(), config());
    assert!(!report.clean);
    let batches: Vec<_> = (0..50).map(batch).collect();
    for (i, b) in batches.iter().enumerate() {
        let info = log.append(b, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (i as u64 * 3, i as u64 * 3 + 2));
    }
    assert_eq!(log.log_end_offset(), 150);
    for offset in 0..150u64 {
        let got = split_batches(log.read(offset, 1).unwrap()).next().unwrap().unwrap();
        assert_eq!(got.header().base_offset, offset / 3 * 3, "first batch holds the offset");
        assert!(same_batch(&got, &batches[offset as usize / 3]));
    }
    assert_eq!(read_all(&log, 0).len(), 50);
    assert!(log.read(150, 100).unwrap().is_empty(), "at the end: empty");
    assert!(matches!(log.read(151, 100), Err(StorageError::OffsetOutOfRange { log_end_offset: 150, .. })));
    assert!(matches!(log.read(u64::MAX, 100), Err(StorageError::OffsetOutOfRange { .. })));
}

#[test]
fn reads_are_zero_copy_views_of_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), config());
    log.append(&batch(1), 0).unwrap();
    let a = log.read(0, 1 << 20).unwrap();
    let b = log.read(0, 1 << 20).unwrap();
    assert_eq!(a.as_ptr(), b.as_ptr(), "two reads share the mapped bytes");
}

#[test]
fn max_bytes_bounds_reads_but_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), config());
    let big = batch_with(10, 1000, 0, 1);
    log.append(&big, 0).unwrap();
    log.append(&big, 0).unwrap();
    assert_eq!(log.read(0, 10).unwrap().len(), big.len(), "one whole batch even if larger");
    assert_eq!(log.read(0, 2 * big.len()).unwrap().len(), 2 * big.len());
}

#[test]
fn always_mode_serves_only_durable_data() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { fsync: FsyncPolicy::Always, ..config() });
    let info = log.append(&batch(1), 0).unwrap();
    assert_eq!(log.high_watermark(), 0);
    assert!(log.read(0, 1 << 20).unwrap().is_empty());
    log.sync_to(info.last_offset + 1).unwrap();
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(read_all(&log, 0).len(), 1);
}

#[test]
fn interval_mode_also_serves_only_flushed_data() {
    let dir = tempfile::tempdir().unwrap();
    let interval = FsyncPolicy::Interval(std::time::Duration::from_millis(50));
    let (log, _) = open(dir.path(), LogConfig { fsync: interval, ..config() });
    log.append(&batch(1), 0).unwrap();
    assert_eq!(log.high_watermark(), 0, "a power loss could still take it back");
    log.flush().unwrap();
    assert_eq!(log.high_watermark(), 3);
    log.set_config(LogConfig { fsync: FsyncPolicy::Never, ..config() });
    log.append(&batch(2), 0).unwrap();
    assert_eq!(log.high_watermark(), 6, "never: served at once, documented as unsafe");
}

#[test]
fn group_commit_serves_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { fsync: FsyncPolicy::Always, ..config() });
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..20u8 {
                    let info = log.append(&batch(t.wrapping_mul(20).wrapping_add(i)), 0).unwrap();
                    log.sync_to(info.last_offset + 1).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.high_watermark(), 8 * 20 * 3);
    assert_eq!(read_all(&log, 0).len(), 160);
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    let batches: Vec<_> = (0..60).map(batch).collect();
    for b in &batches {
        log.append(b, 0).unwrap();
    }
    let stats = log.stats();
    assert!(stats.segment_count >= 3, "{stats:?}");
    let read = read_all(&log, 0);
    assert_eq!(read.len(), 60);
    assert!(read.iter().zip(&batches).all(|(r, b)| same_batch(r, b)));
    for (i, r) in read.iter().enumerate() {
        assert_eq!(r.header().base_offset, i as u64 * 3, "offsets stay dense across segments");
    }
    // Sealed segment files are cut to their contents.
    let logs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(logs.len() as u32, stats.segment_count);
}

#[test]
fn rolls_by_age_and_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { segment_ms: 1, ..config() });
    log.append(&batch(1), 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3)); // the age is what is under test
    log.append(&batch(2), 0).unwrap();
    assert_eq!(log.stats().segment_count, 2);
    log.roll().unwrap();
    log.roll().unwrap(); // an empty active segment is not rolled again
    assert_eq!(log.stats().segment_count, 3);
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn retention_by_bytes_and_time_deletes_whole_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { retention_bytes: 8192, retention_ms: 0, ..small_segments() });
    for i in 0..60 {
        log.append(&batch(i), 0).unwrap();
    }
    let before = log.stats();
    let report = log.apply_retention(0).unwrap();
    let after = log.stats();
    assert!(report.deleted_segments > 0);
    assert_eq!(after.segment_count as usize, before.segment_count as usize - report.deleted_segments);
    assert_eq!(after.log_start_offset, report.log_start_offset);
    assert!(
        matches!(log.read(0, 100), Err(StorageError::OffsetOutOfRange { log_start_offset, .. }) if log_start_offset == after.log_start_offset)
    );
    assert_eq!(read_all(&log, after.log_start_offset).last().unwrap().header().next_offset(), 180);
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".deleted")));

    // By time: everything sealed is old; the active segment stays.
    log.set_config(LogConfig { retention_ms: 1, retention_bytes: 0, ..small_segments() });
    log.apply_retention(i64::MAX).unwrap();
    assert_eq!(log.stats().segment_count, 1);
    assert_eq!(log.log_end_offset(), 180);
    // Reopening keeps the new start.
    let start = log.stats().log_start_offset;
    log.close().unwrap();
    drop(log);
    let (log, _) = open(dir.path(), small_segments());
    assert_eq!(log.stats().log_start_offset, start);
}

#[test]
fn half_deleted_segments_are_cleaned_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for i in 0..30 {
        log.append(&batch(i), 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    // A crash between renaming the first segment's .log and its indexes.
    let first = files::segment_path(dir.path(), 0, files::SegmentFile::Log);
    fs::rename(&first, files::deleted_path(&first)).unwrap();
    let (log, _) = open(dir.path(), small_segments());
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("00000000000000000000")), "{names:?}");
    let start = log.stats().log_start_offset;
    assert!(start > 0);
    assert_eq!(read_all(&log, start).last().unwrap().header().next_offset(), 90);
}

#[test]
fn truncate_to_cuts_at_batch_boundaries_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_segments());
    for i in 0..60 {
        log.append(&batch(i), 0).unwrap();
    }
    log.truncate_to(100).unwrap(); // offset 100 is inside the batch 99..=101
    assert_eq!(log.log_end_offset(), 99);
    assert_eq!(log.append(&batch(7), 0).unwrap().base_offset, 99);
    assert_eq!(read_all(&log, 0).len(), 34);
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.stats().segment_count, 1);
    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn truncate_refuses_while_a_reader_holds_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    log.append(&batch(1), 0).unwrap();
    log.append(&batch(2), 0).unwrap();
    let held = log.read(3, 1 << 20).unwrap();
    assert!(matches!(log.truncate_to(3), Err(StorageError::ReadersActive { .. })));
    drop(held);
    log.truncate_to(3).unwrap();
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for i in 0..40i64 {
        log.append(&batch_with(3, 50, 1_000 + i * 10, i as u8), 0).unwrap(); // records at t, t+1, t+2
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((1, 1_001)));
    assert_eq!(log.offset_for_timestamp(1_200).unwrap(), Some((60, 1_200)));
    assert_eq!(log.offset_for_timestamp(1_205).unwrap(), Some((63, 1_210)));
    assert_eq!(log.offset_for_timestamp(1_202).unwrap(), Some((62, 1_202)));
    assert_eq!(log.offset_for_timestamp(1_203).unwrap(), Some((63, 1_210)));
    assert_eq!(log.offset_for_timestamp(2_000).unwrap(), None);
}

#[test]
fn log_append_time_is_stamped_and_crc_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { message_timestamp: TimestampType::LogAppend, ..config() });
    let info = log.append(&batch(1), 42_000).unwrap();
    assert_eq!(info.log_append_time, Some(42_000));
    let stored = &read_all(&log, 0)[0];
    stored.validate(1 << 20).unwrap();
    assert!(stored.records().unwrap().iter().all(|r| r.unwrap().timestamp == 42_000));
}

#[test]
fn idempotent_retries_are_deduplicated_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let idem = |seq: i32, tag: u8| {
        let mut b = BatchBuilder::new().producer(9, 0, seq);
        b.append(0, None, Some(&[tag; 20]), &[]);
        b.append(0, None, Some(&[tag; 20]), &[]);
        b.build()
    };
    let (log, _) = open(dir.path(), config());
    assert_eq!(log.append(&idem(0, 1), 0).unwrap().base_offset, 0);
    assert_eq!(log.append(&idem(2, 2), 0).unwrap().base_offset, 2);
    let dup = log.append(&idem(0, 1), 0).unwrap();
    assert!(dup.duplicate && dup.base_offset == 0);
    assert!(matches!(
        log.append(&idem(7, 3), 0),
        Err(StorageError::Sequence(SequenceError::OutOfOrder { expected: 4, .. }))
    ));
    drop(log); // crash: state rebuilt from batch headers
    let (log, _) = open(dir.path(), config());
    let dup = log.append(&idem(2, 2), 0).unwrap();
    assert!(dup.duplicate && dup.base_offset == 2);
    assert_eq!(log.append(&idem(4, 4), 0).unwrap().base_offset, 4);
}

fn idem(producer: i64, seq: i32, tag: u8) -> Bytes {
    let mut b = BatchBuilder::new().producer(producer, 0, seq);
    b.append(0, None, Some(&[tag; 40]), &[]);
    b.append(0, None, Some(&[tag; 40]), &[]);
    b.build()
}

fn snapshot_files(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| match files::parse(&e.unwrap().file_name().to_string_lossy()) {
            files::FileName::ProducerSnapshot(base) => Some(base),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v
}

/// Producer 10 writes once, into the first segment; producer 9 writes 150
/// batches across several, each flushed (snapshots are written by the
/// flush after a roll). Returns producer 9's batches' offsets.
fn idempotent_history(log: &Log) -> Vec<u64> {
    assert_eq!(log.append(&idem(10, 0, 0), now_ms()).unwrap().base_offset, 0);
    (0..150i32)
        .map(|i| {
            let offset = log.append(&idem(9, i * 2, i as u8), now_ms()).unwrap().base_offset;
            log.flush().unwrap();
            offset
        })
        .collect()
}

#[test]
fn producer_state_loads_from_the_newest_snapshot_and_replays_only_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    let offsets = idempotent_history(&log);
    let segments = log.stats().segment_count;
    assert!(segments >= 5, "{segments} segments");
    let snapshots = snapshot_files(dir.path());
    assert_eq!(snapshots.len(), 2, "only the newest two are kept: {snapshots:?}");
    drop(log); // a crash: the last snapshot is from the last roll

    let (log, report) = open(dir.path(), small_segments());
    let newest = *snapshots.last().unwrap();
    assert_eq!(report.producer_snapshot, Some(newest));
    let active_batches = offsets.iter().filter(|o| **o >= newest).count();
    assert_eq!(report.producer_batches_replayed, active_batches, "only the active segment is read");
    // A clean close snapshots the end: the next open reads no header.
    log.close().unwrap();
    drop(log);
    let (log, report) = open(dir.path(), small_segments());
    let end = log.log_end_offset();
    assert_eq!((report.producer_snapshot, report.producer_batches_replayed), (Some(end), 0));
    // Producer 10's only batch is in the first segment: known from the snapshot.
    let dup = log.append(&idem(10, 0, 0), now_ms()).unwrap();
    assert!(dup.duplicate && dup.base_offset == 0);
    let dup = log.append(&idem(9, 149 * 2, 149), now_ms()).unwrap();
    assert!(dup.duplicate && dup.base_offset == offsets[149]);
    assert!(matches!(log.append(&idem(9, 7, 0), now_ms()), Err(StorageError::Sequence(_))));
    assert!(!log.append(&idem(9, 300, 0), now_ms()).unwrap().duplicate);
}

#[test]
fn a_damaged_snapshot_falls_back_to_an_older_one_then_to_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    let offsets = idempotent_history(&log);
    log.close().unwrap();
    drop(log);
    let snapshots = snapshot_files(dir.path());
    let flip = |base: u64| {
        let path = files::snapshot_path(dir.path(), base);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
    };
    flip(snapshots[1]);
    let (log, report) = open(dir.path(), small_segments());
    assert_eq!(report.producer_snapshot, Some(snapshots[0]));
    assert_eq!(snapshot_files(dir.path()), vec![snapshots[0]], "the damaged one is deleted");
    drop(log);
    flip(snapshots[0]);
    let (log, report) = open(dir.path(), small_segments());
    assert_eq!(report.producer_snapshot, None);
    assert_eq!(report.producer_batches_replayed, offsets.len() + 1, "every batch header");
    let dup = log.append(&idem(10, 0, 0), now_ms()).unwrap();
    assert!(dup.duplicate && dup.base_offset == 0);
}

#[test]
fn snapshots_past_the_log_end_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_segments());
    let offsets = idempotent_history(&log);
    // Truncating into the middle removes the snapshots after the cut, and
    // producer 9 continues from its last surviving batch.
    let cut = offsets[40];
    log.truncate_to(cut).unwrap();
    assert!(snapshot_files(dir.path()).iter().all(|b| *b <= cut));
    let again = log.append(&idem(9, 80, 80), now_ms()).unwrap();
    assert!(!again.duplicate && again.base_offset == cut, "a cut batch is written again, not deduplicated");
    log.close().unwrap();
    drop(log);
    // A snapshot beyond the end (from records a crash took back) is removed
    // on open, never loaded: its producer 77 stays unknown.
    let mut bogus = super::producers::ProducerStates::default();
    let header = BatchHeader::parse(&idem(77, 0, 0)).unwrap();
    bogus.record(&header, 5, 0, u64::MAX, usize::MAX);
    fs::write(files::snapshot_path(dir.path(), 1_000_000), bogus.encode(1_000_000)).unwrap();
    let (log, report) = open(dir.path(), small_segments());
    assert_eq!(report.producer_snapshot, Some(cut + 2), "the one the clean close wrote");
    assert!(!files::snapshot_path(dir.path(), 1_000_000).exists());
    assert!(!log.append(&idem(77, 9, 0), now_ms()).unwrap().duplicate, "producer 77 is unknown: accepted");
    let dup = log.append(&idem(9, 80, 80), now_ms()).unwrap();
    assert!(dup.duplicate && dup.base_offset == cut);
}

#[test]
fn invalid_appends_are_refused_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { max_message_bytes: 1024, ..config() });
    assert!(matches!(log.append(&[0u8; 10], 0), Err(StorageError::InvalidBatch(_))));
    let good = batch(1);
    assert!(matches!(log.append(&good[..good.len() - 1], 0), Err(StorageError::InvalidBatch(_))));
    assert!(matches!(log.append(&batch_with(3, 2000, 0, 1), 0), Err(StorageError::BatchTooLarge { .. })));
    assert_eq!(log.log_end_offset(), 0);
    log.append(&good, 0).unwrap();
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn clean_close_reopens_without_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for i in 0..40 {
        log.append(&batch(i), 0).unwrap();
    }
    log.close().unwrap();
    assert!(matches!(log.append(&batch(1), 0), Err(StorageError::Closed)));
    drop(log);
    let (log, report) = open(dir.path(), small_segments());
    assert!(report.clean);
    assert_eq!(report.batches_checked, 0);
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(log.append(&batch(1), 0).unwrap().base_offset, 120);
    assert_eq!(read_all(&log, 0).len(), 41);
    drop(log);
    let (_, report) = open(dir.path(), small_segments());
    assert!(!report.clean, "the marker is consumed by open");
}

#[test]
fn recovery_starts_at_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for i in 0..40 {
        log.append(&batch(i), 0).unwrap();
    }
    log.flush().unwrap();
    for i in 0..3 {
        log.append(&batch(i), 0).unwrap();
    }
    drop(log); // crash
    let (log, report) = open(dir.path(), small_segments());
    assert_eq!(report.recovery_point, 120);
    assert!(report.batches_checked < 10, "only the tail is CRC-checked: {report:?}");
    assert_eq!(log.log_end_offset(), 129);
}

#[test]
fn missing_or_garbage_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for i in 0..40 {
        log.append(&batch(i), 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let indexes: Vec<_> =
        names.iter().filter(|p| p.extension().is_some_and(|x| x == "index" || x == "timeindex")).collect();
    fs::remove_file(indexes[0]).unwrap();
    fs::write(indexes[1], [0xAB; 100]).unwrap();
    fs::write(indexes[2], [0x00; 96]).unwrap();
    let (log, _) = open(dir.path(), small_segments());
    for offset in (0..120).step_by(7) {
        let b = split_batches(log.read(offset, 1).unwrap()).next().unwrap().unwrap();
        assert!(b.header().base_offset <= offset && offset <= b.header().last_offset());
    }
    assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((1, 1_001)));
}

#[test]
fn bit_rot_in_a_flushed_batch_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), config());
    let batches: Vec<_> = (0..10).map(batch).collect();
    for b in &batches {
        log.append(b, 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    // Flip a byte inside the value of the fifth batch (offsets 12..=14).
    let path = files::segment_path(dir.path(), 0, files::SegmentFile::Log);
    let mut bytes = fs::read(&path).unwrap();
    let pos = 4 * batches[0].len() + HEADER_LEN + 20;
    bytes[pos] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let (log, report) = open(dir.path(), config());
    assert!(report.clean, "below the recovery point nothing is scanned");
    for offset in 12..15 {
        assert!(
            matches!(log.read(offset, 1 << 20), Err(StorageError::CorruptBatch { .. })),
            "offset {offset}"
        );
    }
    assert_eq!(
        split_batches(log.read(0, 1 << 20).unwrap()).count(),
        4,
        "a read stops before the corrupt batch"
    );
    assert!(same_batch(&split_batches(log.read(15, 1).unwrap()).next().unwrap().unwrap(), &batches[5]));
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Arc::new(AtomicUsize::new(0));
    // Budget for the first reservation step only.
    budget.store(64 * 1024, std::sync::atomic::Ordering::SeqCst);
    let (log, _) = Log::open(dir.path(), config(), DiskSpace::Budget(Arc::clone(&budget))).unwrap();
    let b = batch_with(10, 500, 0, 1);
    let mut appended = 0u64;
    let err = loop {
        match log.append(&b, 0) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 1000, "the budget must run out");
    };
    assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
    assert_eq!(log.log_end_offset(), appended * 10);
    assert_eq!(read_all(&log, 0).len() as u64, appended, "nothing written before is lost");
    budget.store(usize::MAX / 2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(log.append(&b, 0).unwrap().base_offset, appended * 10, "offsets stay dense");
    log.flush().unwrap();
}

/// How a simulated crash damages the bytes past the last flush.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Cut,
    Zeros,
    Garbage(u8),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![Just(Damage::Cut), Just(Damage::Zeros), any::<u8>().prop_map(Damage::Garbage)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Crash consistency: after batches are appended and a prefix flushed,
    /// the file is damaged at an arbitrary position past the flushed bytes.
    /// Recovery yields exactly a prefix of the appended batches that holds
    /// every flushed one, and the log accepts appends with dense offsets.
    #[test]
    fn recovery_returns_a_prefix_holding_every_flushed_batch(
        sizes in proptest::collection::vec((1usize..6, 0usize..300), 1..30),
        flushed_count in 0usize..30,
        cut_fraction in 0.0f64..1.0,
        damage in damage_strategy(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), config());
        let batches: Vec<_> = sizes.iter().enumerate().map(|(i, (n, len))| batch_with(*n, *len, i as i64, i as u8)).collect();
        let flushed_count = flushed_count.min(batches.len());
        let mut flushed_bytes = 0;
        for (i, b) in batches.iter().enumerate() {
            log.append(b, 0).unwrap();
            if i + 1 == flushed_count {
                log.flush().unwrap();
                flushed_bytes = batches[..=i].iter().map(Bytes::len).sum::<usize>();
            }
        }
        drop(log); // crash: no clean-shutdown marker
        let path = files::segment_path(dir.path(), 0, files::SegmentFile::Log);
        let file_len = fs::metadata(&path).unwrap().len() as usize;
        let at = flushed_bytes + ((file_len - flushed_bytes) as f64 * cut_fraction) as usize;
        let mut bytes = fs::read(&path).unwrap();
        match damage {
            Damage::Cut => bytes.truncate(at),
            Damage::Zeros => bytes[at..].fill(0),
            Damage::Garbage(seed) => {
                for (i, b) in bytes[at..].iter_mut().enumerate() {
                    *b = seed.wrapping_mul(31).wrapping_add((i * 131) as u8);
                }
            }
        }
        fs::write(&path, &bytes).unwrap();

        let (log, _) = open(dir.path(), config());
        let recovered = read_all(&log, 0);
        prop_assert!(recovered.len() >= flushed_count, "lost flushed batches: {} < {}", recovered.len(), flushed_count);
        prop_assert!(recovered.len() <= batches.len());
        for (r, b) in recovered.iter().zip(&batches) {
            prop_assert!(same_batch(r, b), "recovered batches are a prefix of the appended ones");
        }
        let end = log.log_end_offset();
        prop_assert_eq!(log.append(&batch(9), 0).unwrap().base_offset, end);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize, usize),
    Read(usize),
    Roll,
    Flush,
    Reopen {
        clean: bool,
    },
    Retention,
    /// An idempotent producer (0-2) sends its next batch, or retries its last.
    Idempotent {
        producer: i64,
        retry: bool,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..400).prop_map(|(n, len)| Op::Append(n, len)),
        3 => any::<usize>().prop_map(Op::Read),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => Just(Op::Retention),
        3 => (0i64..3, any::<bool>()).prop_map(|(producer, retry)| Op::Idempotent { producer, retry }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Model-based test: random appends, reads, rolls, flushes, reopens
    /// (clean, or crash after a flush), retention and idempotent producers'
    /// retries, against a plain list of the batches appended. A retry is
    /// answered with the original offset whatever happened in between
    /// (producer state survives rolls, retention and reopens).
    #[test]
    fn log_matches_a_simple_model(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { retention_bytes: 6000, retention_ms: 0, ..small_segments() };
        let (mut log, _) = open(dir.path(), cfg.clone());
        let mut model: Vec<(u64, Bytes)> = Vec::new(); // (base offset, batch)
        let mut next = 0u64;
        // Per producer: next sequence, and its last batch with its offset.
        let mut producers: BTreeMap<i64, (i32, Option<(Bytes, u64)>)> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Idempotent { producer, retry } => {
                    let (seq, last) = producers.entry(producer).or_insert((0, None));
                    match last {
                        Some((b, base)) if retry => {
                            let info = log.append(b, now_ms()).unwrap();
                            prop_assert!(info.duplicate, "retry of producer {}'s batch at {} was rewritten", producer, base);
                            prop_assert_eq!(info.base_offset, *base);
                        }
                        _ => {
                            let b = idem(producer + 100, *seq, i as u8);
                            let info = log.append(&b, now_ms()).unwrap();
                            prop_assert!(!info.duplicate);
                            prop_assert_eq!(info.base_offset, next);
                            model.push((next, b.clone()));
                            *last = Some((b, next));
                            *seq += 2;
                            next += 2;
                        }
                    }
                }
                Op::Append(n, len) => {
                    let b = batch_with(n, len, i as i64, i as u8);
                    let info = log.append(&b, 0).unwrap();
                    prop_assert_eq!(info.base_offset, next);
                    model.push((next, b));
                    next += n as u64;
                }
                Op::Read(pick) => {
                    let start = log.stats().log_start_offset;
                    if next > start {
                        let offset = start + (pick as u64 % (next - start));
                        let got = split_batches(log.read(offset, 1).unwrap()).next().unwrap().unwrap();
                        let (base, want) = model.iter().rev().find(|(b, _)| *b <= offset).unwrap();
                        prop_assert_eq!(got.header().base_offset, *base);
                        prop_assert!(same_batch(&got, want));
                    }
                }
                Op::Roll => log.roll().unwrap(),
                Op::Flush => log.flush().unwrap(),
                Op::Reopen { clean } => {
                    if clean { log.close().unwrap() } else { log.flush().unwrap() }
                    drop(log);
                    log = open(dir.path(), cfg.clone()).0;
                    prop_assert_eq!(log.log_end_offset(), next);
                }
                Op::Retention => {
                    log.apply_retention(0).unwrap();
                }
            }
            let start = log.stats().log_start_offset;
            prop_assert!(model.iter().any(|(b, _)| *b == start) || start == next);
        }
        let start = log.stats().log_start_offset;
        let read = read_all(&log, start);
        let expected: Vec<_> = model.iter().filter(|(b, _)| *b >= start).collect();
        prop_assert_eq!(read.len(), expected.len());
        for (r, (base, b)) in read.iter().zip(expected) {
            prop_assert_eq!(r.header().base_offset, *base);
            prop_assert!(same_batch(r, b));
        }
    }
}

/// Open descriptors of this process on files under `dir`.
fn open_files_under(dir: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn flushed_sealed_segments_hold_no_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Always, ..small_segments() };
    let (log, _) = open(dir.path(), config.clone());
    for tag in 0..200u8 {
        log.append(&batch(tag), 0).unwrap();
        log.flush().unwrap();
    }
    assert!(log.stats().segment_count > 10);
    assert_eq!(open_files_under(dir.path()), 3, "only the active segment's log and indexes");
    drop(log);
    // After an unclean stop too, once the open-time flush is done.
    let (log, _) = open(dir.path(), config);
    assert_eq!(open_files_under(dir.path()), 3);
    assert_eq!(read_all(&log, 0).len(), 200, "sealed segments still read through their maps");
}
