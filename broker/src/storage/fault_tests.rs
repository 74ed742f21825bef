//! Log-level tests of the failure edges: a failed seal, a failed sync,
//! damage that recovery must quarantine rather than delete, a checkpoint
//! that must stay true, a file system without `fallocate`, and a roll that
//! must not sync on the append path. Faults are injected through
//! [`DiskSpace::Faulty`].

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::{split_batches, BatchBuilder};

use super::files::{self, FileName, SegmentFile};
use super::*;

fn batch(tag: u8) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..3u8 {
        b.append(1_000 + i64::from(i), Some(&[tag]), Some(&[tag.wrapping_add(i); 50]), &[]);
    }
    b.build()
}

/// Small segments; the time index gets its first entry only at seal (so a
/// seal has to reserve space for it).
fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig { fsync, segment_bytes: 4096, index_interval_bytes: 1 << 20, ..LogConfig::default() }
}

fn faulty() -> (Arc<Faults>, DiskSpace) {
    let faults = Arc::new(Faults::default());
    (Arc::clone(&faults), DiskSpace::Faulty(faults))
}

/// Every record's first value byte (its batch tag plus its index), read
/// from `from` to the high watermark.
fn values(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let bytes = log.read(next, 1 << 20).unwrap();
        assert!(!bytes.is_empty(), "no progress at {next}");
        for b in split_batches(bytes) {
            let b = b.unwrap();
            for r in b.records().unwrap().iter() {
                let r = r.unwrap();
                if r.offset >= next {
                    out.push(r.value.unwrap()[0]);
                }
            }
            next = next.max(b.header().next_offset());
        }
    }
    out
}

fn expected(tags: impl IntoIterator<Item = u8>) -> Vec<u8> {
    tags.into_iter().flat_map(|t| (0..3u8).map(move |i| t.wrapping_add(i))).collect()
}

fn names(dir: &Path) -> Vec<(String, FileName)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|n| (n.clone(), files::parse(&n)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_failed_seal_keeps_the_segment_active_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, space) = faulty();
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), space.clone()).unwrap();
    for tag in 0..5 {
        log.append(&batch(tag * 3), 0).unwrap();
    }
    // The seal's first time-index entry cannot get space.
    faults.failing_reservations.store(1, Ordering::SeqCst);
    assert!(matches!(log.roll(), Err(StorageError::NoSpace { .. })));
    assert_eq!(log.stats().segment_count, 1, "the segment stays active");
    log.append(&batch(15), 0).unwrap();
    log.flush().unwrap();
    assert_eq!(values(&log), expected((0..6).map(|t| t * 3)));
    log.roll().unwrap();
    log.append(&batch(18), 0).unwrap();
    log.flush().unwrap();
    assert_eq!(log.stats().segment_count, 2);
    drop(log); // a crash
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), space).unwrap();
    assert_eq!(values(&log), expected((0..7).map(|t| t * 3)), "everything survives the reopen");
}

#[test]
fn a_failed_sync_is_never_retried_and_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, space) = faulty();
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), space.clone()).unwrap();
    log.append(&batch(0), 0).unwrap();
    log.sync_to(3).unwrap();
    let info = log.append(&batch(3), 0).unwrap();
    faults.failing_syncs.store(1, Ordering::SeqCst);
    assert!(log.sync_to(info.last_offset + 1).is_err());
    // The next sync would succeed at the OS level: it must not be believed.
    assert!(matches!(log.flush(), Err(StorageError::Failed { durable_offset: 3, .. })));
    assert!(matches!(log.sync_to(info.last_offset + 1), Err(StorageError::Failed { .. })));
    assert!(matches!(log.append(&batch(6), 0), Err(StorageError::Failed { .. })));
    assert!(matches!(log.close(), Err(StorageError::Failed { .. })), "no clean-shutdown marker");
    assert!(log.is_failed());
    assert_eq!((log.durable_offset(), log.high_watermark()), (3, 3));
    assert_eq!(values(&log), expected([0]), "reads below the durable offset keep working");
    // Reopening recovers from the last durable offset, not from whatever
    // the page cache still shows.
    drop(log);
    let (log, report) = Log::open(dir.path(), config(FsyncPolicy::Always), space).unwrap();
    assert_eq!(report.failed_sync_cut, Some(3));
    assert_eq!(log.log_end_offset(), 3);
    assert!(!dir.path().join(files::FAILED_SYNC).exists());
    log.append(&batch(9), 0).unwrap();
    log.flush().unwrap();
    assert_eq!(values(&log), expected([0, 9]));
}

#[test]
fn a_failed_index_sync_after_a_roll_fails_the_log_too() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, space) = faulty();
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), space).unwrap();
    log.append(&batch(0), 0).unwrap();
    log.flush().unwrap();
    log.roll().unwrap();
    // The data is synced already: the flush's first sync is the sealed
    // segment's index.
    faults.failing_syncs.store(1, Ordering::SeqCst);
    assert!(log.flush().is_err());
    assert!(log.is_failed());
    assert!(matches!(log.append(&batch(3), 0), Err(StorageError::Failed { .. })));
}

#[test]
fn rolls_run_no_sync_on_the_append_path() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, space) = faulty();
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Never), space).unwrap();
    faults.failing_syncs.store(u32::MAX, Ordering::SeqCst);
    for tag in 0..60 {
        let info = log.append(&batch(tag), 0).unwrap();
        assert!(!log.is_failed(), "append {tag} synced (rolled: {})", info.rolled);
    }
    assert!(log.stats().segment_count > 3);
    assert!(log.flush().is_err(), "the flush does the syncs the rolls left");
}

#[test]
fn without_fallocate_the_log_works_across_rolls_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, space) = faulty();
    faults.no_fallocate.store(true, Ordering::SeqCst);
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), space.clone()).unwrap();
    for tag in 0..40 {
        log.append(&batch(tag), 0).unwrap();
        log.flush().unwrap();
    }
    assert!(log.stats().segment_count > 2);
    drop(log);
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), space).unwrap();
    assert_eq!(values(&log), expected(0..40));
}

/// Three segments, flushed, then a crash with no recovery point: every
/// batch is walked on the next open.
fn three_segments(dir: &Path) -> Vec<u64> {
    let (log, _) = Log::open(dir, config(FsyncPolicy::Always), DiskSpace::Real).unwrap();
    for tag in 0..30 {
        log.append(&batch(tag), 0).unwrap();
        if tag % 10 == 9 {
            log.roll().unwrap();
        }
    }
    log.flush().unwrap();
    drop(log);
    fs::remove_file(dir.join(files::RECOVERY_POINT)).unwrap();
    let mut bases: Vec<u64> = names(dir)
        .into_iter()
        .filter_map(|(_, n)| match n {
            FileName::Segment(base, SegmentFile::Log) => Some(base),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    bases
}

#[test]
fn recovery_quarantines_damage_instead_of_deleting_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let bases = three_segments(dir.path());
    assert_eq!(bases, vec![0, 30, 60, 90]);
    // Damage the length of the third batch of the second segment.
    let second = files::segment_path(dir.path(), 30, SegmentFile::Log);
    let mut bytes = fs::read(&second).unwrap();
    let batch_len = batch(0).len();
    bytes[2 * batch_len + 8..2 * batch_len + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&second, &bytes).unwrap();
    let third_len = fs::metadata(files::segment_path(dir.path(), 60, SegmentFile::Log)).unwrap().len();

    let (log, report) = Log::open(dir.path(), config(FsyncPolicy::Always), DiskSpace::Real).unwrap();
    assert_eq!(log.log_end_offset(), 36, "cut at the damaged batch");
    assert_eq!(values(&log), expected(0..12));
    let quarantined: Vec<String> =
        names(dir.path()).into_iter().filter(|(_, n)| *n == FileName::Quarantined).map(|(n, _)| n).collect();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert_eq!(report.quarantined.len(), 2);
    let cut = files::quarantine_path(dir.path(), 30, 2 * batch_len as u64);
    assert_eq!(fs::read(&cut).unwrap(), bytes[2 * batch_len..], "the cut bytes are kept");
    let whole = files::quarantine_path(dir.path(), 60, 0);
    assert_eq!(fs::metadata(&whole).unwrap().len(), third_len, "the later segment is kept whole");
    // The log goes on, dense, and reopens again.
    log.append(&batch(99), 0).unwrap();
    log.flush().unwrap();
    drop(log);
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), DiskSpace::Real).unwrap();
    assert_eq!(values(&log), expected((0..12).chain([99])));
    assert!(whole.exists() && cut.exists(), "quarantine files are never removed by the broker");
}

#[test]
fn the_checkpoint_never_claims_offsets_the_log_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    // A checkpoint past the end (a truncation below it that did not
    // rewrite it, as older versions did).
    fs::write(dir.path().join(files::RECOVERY_POINT), "1000000\n").unwrap();
    let (log, _) = Log::open(dir.path(), config(FsyncPolicy::Always), DiskSpace::Real).unwrap();
    let end = log.log_end_offset();
    let checkpoint: u64 =
        fs::read_to_string(dir.path().join(files::RECOVERY_POINT)).unwrap().trim().parse().unwrap();
    assert!(checkpoint <= end, "checkpoint {checkpoint} past the log end {end}");
}
