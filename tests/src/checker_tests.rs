//! The checker on synthetic histories: a clean one passes, and each kind
//! of violation is found and counted.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn v(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn ack(t0: Instant, ms: u64, partition: u32, offset: u64, value: &str) -> Ack {
    Ack { partition, offset, value: v(value), at: t0 + Duration::from_millis(ms) }
}

fn replica(source: &str, partition: u32, records: &[(u64, &str)]) -> Read {
    Read {
        source: source.into(),
        kind: ReadKind::Replica,
        partition,
        records: records.iter().map(|(o, s)| (*o, v(s))).collect(),
        stable_end: None,
        log_start: 0,
    }
}

fn consumer(partition: u32, records: &[(u64, &str)]) -> Read {
    Read { kind: ReadKind::Consumer, ..replica("consumer", partition, records) }
}

fn commit(t0: Instant, ms: u64, partition: u32, offset: u64) -> Commit {
    Commit { group: "g".into(), partition, offset, at: t0 + Duration::from_millis(ms) }
}

/// Three acks on two partitions, both replicas holding them, a consumer
/// that re-reads (allowed) and commits moving forward.
fn clean(t0: Instant) -> History {
    History {
        acks: vec![ack(t0, 10, 0, 0, "a"), ack(t0, 20, 0, 1, "b"), ack(t0, 30, 1, 0, "c")],
        failed: 1,
        reads: vec![
            replica("leader", 0, &[(0, "a"), (1, "b")]),
            replica("follower", 0, &[(0, "a"), (1, "b"), (2, "unacked tail")]),
            replica("leader", 1, &[(0, "c")]),
            consumer(0, &[(0, "a"), (1, "b"), (0, "a"), (1, "b")]),
        ],
        commits: vec![commit(t0, 40, 0, 1), commit(t0, 50, 0, 2), commit(t0, 50, 1, 1)],
        faults: vec![Fault { label: "kill -9 node 1".into(), at: t0 + Duration::from_millis(15) }],
    }
}

#[test]
fn a_clean_history_passes_and_is_counted() {
    let t0 = Instant::now();
    let report = check(&clean(t0));
    assert!(report.ok(), "{report}");
    assert_eq!((report.acknowledged, report.failed, report.replica_reads, report.consumed), (3, 1, 3, 4));
    assert_eq!(report.windows.len(), 1);
    assert_eq!(report.windows[0].unavailable, Some(Duration::from_millis(5)));
    // Partition 1's first acknowledgement after the fault came at 30 ms.
    assert_eq!(report.windows[0].every_partition, Some(Duration::from_millis(15)));
    assert_eq!(report.worst_window(), (Some(Duration::from_millis(5)), 0));
}

#[test]
fn a_record_missing_from_one_replica_is_lost() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.reads[1] = replica("follower", 0, &[(0, "a")]);
    let report = check(&h);
    assert_eq!(report.lost, 1, "{report}");
    assert!(!report.ok() && !report.data_ok());
    assert!(report.messages[0].contains("0/1") && report.messages[0].contains("follower"), "{report}");
}

#[test]
fn a_changed_record_is_lost_and_a_conflict() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.reads[0] = replica("leader", 0, &[(0, "a"), (1, "other")]);
    let report = check(&h);
    assert_eq!((report.lost, report.conflicts), (1, 1), "{report}");
}

#[test]
fn acknowledged_records_below_the_log_start_were_deleted_not_lost() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.reads[0] = Read { log_start: 1, ..replica("leader", 0, &[(1, "b")]) };
    assert!(check(&h).ok());
}

#[test]
fn two_values_at_one_position_conflict_but_not_past_the_stable_end() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.reads.push(consumer(1, &[(0, "c"), (1, "x")]));
    h.reads.push(replica("old leader", 1, &[(0, "c"), (1, "y")]));
    let report = check(&h);
    assert_eq!(report.conflicts, 1, "{report}");
    // The old leader's tail past its high watermark may be truncated.
    h.reads.last_mut().unwrap().stable_end = Some(1);
    assert!(check(&h).ok());
}

#[test]
fn one_value_at_two_positions_is_a_duplicate() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.reads[0] = replica("leader", 0, &[(0, "a"), (1, "b"), (2, "a")]);
    h.reads[1].stable_end = Some(2);
    let report = check(&h);
    assert_eq!((report.duplicated, report.lost, report.conflicts), (1, 0, 0), "{report}");
    // Seen again by another read: still one duplicated value.
    h.reads.push(consumer(0, &[(2, "a")]));
    assert_eq!(check(&h).duplicated, 1);
    // In two partitions counts too.
    let mut h = clean(t0);
    h.reads.push(consumer(1, &[(0, "c"), (1, "a")]));
    assert_eq!(check(&h).duplicated, 1);
}

#[test]
fn a_consumer_skipping_forward_has_a_gap() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.reads[3] = consumer(0, &[(0, "a"), (2, "z")]);
    let report = check(&h);
    assert_eq!(report.gaps, 1, "{report}");
    // A replica's read is not a consumer's: its holes are losses, not gaps.
    let mut h = clean(t0);
    h.reads[3] = Read { kind: ReadKind::Replica, ..consumer(0, &[(0, "a"), (1, "b"), (5, "q")]) };
    assert_eq!(check(&h).gaps, 0);
}

#[test]
fn a_commit_going_backwards_is_a_regression() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.commits.push(commit(t0, 60, 0, 1));
    let report = check(&h);
    assert_eq!(report.commit_regressions, 1, "{report}");
    assert!(report.data_ok() && !report.ok());
    // Other groups and partitions are separate sequences.
    let mut h = clean(t0);
    h.commits.push(Commit { group: "other".into(), ..commit(t0, 60, 0, 0) });
    assert!(check(&h).ok());
}

#[test]
fn a_fault_with_no_acknowledgement_after_it_has_an_open_window() {
    let t0 = Instant::now();
    let mut h = clean(t0);
    h.faults.push(Fault { label: "cut 1->2".into(), at: t0 + Duration::from_millis(35) });
    h.faults.push(Fault { label: "kill -9 node 2".into(), at: t0 + Duration::from_millis(25) });
    let report = check(&h);
    assert_eq!(report.windows[1].unavailable, None);
    // Partition 0 had no acknowledgement after 25 ms: not every partition came back.
    assert_eq!(report.windows[2].unavailable, Some(Duration::from_millis(5)));
    assert_eq!(report.windows[2].every_partition, None);
    assert_eq!(report.worst_window().1, 1);
    assert!(report.to_string().contains("cut 1->2: no acknowledgement after it"), "{report}");
}

#[test]
fn messages_are_bounded() {
    let t0 = Instant::now();
    let acks = (0..100).map(|i| ack(t0, i, 0, i, &format!("v{i}"))).collect();
    let h = History { acks, reads: vec![replica("empty", 0, &[])], ..History::default() };
    let report = check(&h);
    assert_eq!(report.lost, 100);
    assert_eq!(report.messages.len(), MAX_MESSAGES);
}
