//! Consumer groups against real brokers: assignment and rebalancing,
//! at-least-once delivery across membership churn, durable offsets, lag
//! and offset administration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_consumer::{Consumer, OffsetReset, Polled};
use sluice_producer::{Producer, Record};
use sluice_protocol::api::{
    DeleteGroupRequest, DescribeGroupRequest, ListGroupsRequest, OffsetFetchRequest, ResetOffsetsRequest,
    ResetSpec, TopicPartition,
};
use sluice_protocol::ErrorCode;
use sluice_tests::{create_topic, ProcessBroker, TestBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

async fn member(broker: &TestBroker, group: &str, topic: &str) -> Consumer {
    member_with_session(broker, group, topic, Duration::from_millis(1000)).await
}

async fn member_with_session(broker: &TestBroker, group: &str, topic: &str, session: Duration) -> Consumer {
    Consumer::builder()
        .bootstrap(broker.addr.to_string())
        .group(group)
        .subscribe([topic])
        .session_timeout(session)
        .fetch_max_wait(Duration::from_millis(100))
        .enable_auto_commit(false)
        .build()
        .await
        .unwrap()
}

/// Waits until the members' assignments cover `partitions` exactly once
/// with the given sizes (sorted); returns each member's partitions. The
/// members poll meanwhile (records dropped): revoked partitions are
/// released only by a poll.
async fn stable(members: &[&Consumer], partitions: u32, sizes: &[usize]) -> Vec<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for c in members {
            c.poll(Duration::ZERO).await.unwrap();
        }
        let now: Vec<Vec<u32>> =
            members.iter().map(|c| c.assignment().into_iter().map(|(_, p)| p).collect()).collect();
        let mut all: Vec<u32> = now.iter().flatten().copied().collect();
        all.sort_unstable();
        let mut got: Vec<usize> = now.iter().map(Vec::len).collect();
        got.sort_unstable();
        if all == (0..partitions).collect::<Vec<_>>() && got == sizes {
            return now;
        }
        // Never two owners at once.
        let unique: HashSet<u32> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "a partition had two owners: {now:?}");
        assert!(Instant::now() < deadline, "no stable assignment: {now:?}, want sizes {sizes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn moved(before: &[Vec<u32>], after: &[Vec<u32>]) -> usize {
    before.iter().zip(after).map(|(b, a)| b.iter().filter(|p| !a.contains(p)).count()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_is_balanced_sticky_and_follows_members() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 6, &[]).await.unwrap();
    // A long session timeout, so "moved because it left" is clearly
    // faster than "moved because its session expired", even under load.
    let session = Duration::from_millis(2500);
    let a = member_with_session(&broker, "g", "t", session).await;
    let b = member_with_session(&broker, "g", "t", session).await;
    let c = member_with_session(&broker, "g", "t", session).await;
    let three = stable(&[&a, &b, &c], 6, &[2, 2, 2]).await;

    let d = member_with_session(&broker, "g", "t", session).await;
    let four = stable(&[&a, &b, &c, &d], 6, &[1, 1, 2, 2]).await;
    assert_eq!(
        moved(&three, &four[..3]),
        1,
        "a joining member takes exactly one partition: {three:?} -> {four:?}"
    );

    // close(): leaves at once, its partitions move without waiting for the session timeout.
    let started = Instant::now();
    d.close().await.unwrap();
    let after_leave = stable(&[&a, &b, &c], 6, &[2, 2, 2]).await;
    assert!(started.elapsed() < Duration::from_millis(2000), "moved after {:?}", started.elapsed());
    assert_eq!(moved(&four[..3], &after_leave), 0, "nobody else lost a partition");

    // Killed (dropped without leaving): moved after the session timeout.
    drop(c);
    let after_crash = stable(&[&a, &b], 6, &[3, 3]).await;
    assert_eq!(moved(&after_leave[..2], &after_crash), 0);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_joins_leaves_and_crashes() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 6, &[]).await.unwrap();
    let total = 6000u64;
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .linger(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let processed: Arc<Mutex<HashSet<(u32, u64)>>> = Arc::default();

    // A member processes, then commits what it processed, until stopped.
    let spawn_member = |stop: Arc<std::sync::atomic::AtomicBool>| {
        let addr = broker.addr.to_string();
        let processed = Arc::clone(&processed);
        tokio::spawn(async move {
            let c = Consumer::builder()
                .bootstrap(addr)
                .group("g")
                .subscribe(["t"])
                .session_timeout(Duration::from_millis(800))
                .fetch_max_wait(Duration::from_millis(50))
                .enable_auto_commit(false)
                .build()
                .await
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let records = c.poll(Duration::from_millis(50)).await.unwrap();
                for r in &records {
                    processed.lock().unwrap().insert((r.partition, r.offset));
                }
                let _ = c.commit().await; // may be refused for revoked partitions: at-least-once
            }
            c
        })
    };
    let stop_all = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = spawn_member(Arc::clone(&stop_all));
    let crash_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut crasher = Some(spawn_member(Arc::clone(&crash_flag)));
    let leave_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut leaver = Some(spawn_member(Arc::clone(&leave_flag)));

    for i in 0..total {
        producer.send(Record::new("t", i.to_string()).key(i.to_string())).await.unwrap();
        if i == total / 3 {
            producer.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            crash_flag.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(crasher.take().unwrap().await.unwrap()); // dropped without leaving
        }
        if i == total / 2 {
            producer.flush().await.unwrap();
            leave_flag.store(true, std::sync::atomic::Ordering::Relaxed);
            leaver.take().unwrap().await.unwrap().close().await.unwrap();
        }
    }
    producer.close().await.unwrap();
    let late = spawn_member(Arc::clone(&stop_all));
    let deadline = Instant::now() + Duration::from_secs(30);
    while (processed.lock().unwrap().len() as u64) < total {
        assert!(Instant::now() < deadline, "only {} of {total} processed", processed.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_all.store(true, std::sync::atomic::Ordering::Relaxed);
    first.await.unwrap().close().await.unwrap();
    late.await.unwrap().close().await.unwrap();
    assert_eq!(
        processed.lock().unwrap().len() as u64,
        total,
        "every produced record was processed by some member"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_describe_list_reset_and_delete() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    let producer = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    for i in 0..100u32 {
        producer.send(Record::new("t", i.to_string()).partition(i % 2)).await.unwrap();
    }
    producer.close().await.unwrap();

    let c = member(&broker, "g", "t").await;
    let mut got = 0;
    while got < 30 {
        got += c.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    c.commit().await.unwrap();
    let committed = c.committed();
    let d = admin.call(&DescribeGroupRequest { group: "g".into() }).await.unwrap();
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.state, "Stable");
    for o in &d.offsets {
        let mine = committed.get(&(o.topic.clone(), o.partition)).copied();
        assert_eq!(Some(o.committed), mine);
        assert_eq!(o.log_end_offset, 50);
        assert_eq!(o.lag, o.log_end_offset - o.committed, "lag = log end offset - committed offset");
    }
    let listed = admin.call(&ListGroupsRequest).await.unwrap();
    assert_eq!(listed.groups[0].group, "g");

    let reset = ResetOffsetsRequest {
        group: "g".into(),
        topic: "t".into(),
        partitions: vec![],
        spec: ResetSpec::Earliest,
        dry_run: false,
    };
    let err = admin.call(&reset).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GroupNotEmpty));
    assert!(err.to_string().contains("active member"), "{err}");
    assert_eq!(
        admin.call(&DeleteGroupRequest { group: "g".into() }).await.unwrap_err().code(),
        Some(ErrorCode::GroupNotEmpty)
    );

    c.close().await.unwrap();
    let dry = admin
        .call(&ResetOffsetsRequest { dry_run: true, spec: ResetSpec::ShiftBy(-5), ..reset.clone() })
        .await
        .unwrap();
    for change in &dry.offsets {
        assert_eq!(change.new, change.previous.saturating_sub(5));
    }
    let fetched = |p| OffsetFetchRequest {
        group: "g".into(),
        partitions: vec![TopicPartition { topic: "t".into(), partition: p }],
    };
    let before = admin.call(&fetched(0)).await.unwrap().offsets[0].offset;
    assert_eq!(before, committed[&("t".to_string(), 0)], "dry run changed nothing");
    admin.call(&reset).await.unwrap();
    assert_eq!(admin.call(&fetched(0)).await.unwrap().offsets[0].offset, 0);
    admin.call(&ResetOffsetsRequest { spec: ResetSpec::Latest, ..reset.clone() }).await.unwrap();
    assert_eq!(admin.call(&fetched(1)).await.unwrap().offsets[0].offset, 50);

    // A consumer resumes from the committed offset.
    let again = member(&broker, "g", "t").await;
    assert!(
        again.poll(Duration::from_millis(500)).await.unwrap().is_empty(),
        "reset to latest: nothing left"
    );
    again.close().await.unwrap();

    admin.call(&DeleteGroupRequest { group: "g".into() }).await.unwrap();
    assert_eq!(
        admin.call(&DescribeGroupRequest { group: "g".into() }).await.unwrap_err().code(),
        Some(ErrorCode::UnknownGroup)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_members_cannot_commit() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    let a = member(&broker, "g", "t").await;
    stable(&[&a], 2, &[2]).await;
    let b = member(&broker, "g", "t").await;
    let now = stable(&[&a, &b], 2, &[1, 1]).await;
    // `a` commits for the partition it lost: refused with a typed error.
    let lost = if now[0].contains(&0) { 1 } else { 0 };
    let err = a.commit_offsets([(("t".to_string(), lost), 0)]).await.unwrap_err();
    assert!(
        matches!(err, sluice_consumer::ConsumerError::Commit { code: ErrorCode::StaleMemberEpoch, .. }),
        "{err}"
    );
    use sluice_protocol::api::{CommitOffset, OffsetCommitRequest};
    let describe = admin.call(&DescribeGroupRequest { group: "g".into() }).await.unwrap();
    let a_id =
        describe.members.iter().find(|m| m.assignment[0].partitions != vec![lost]).unwrap().member_id.clone();
    let resp = admin
        .call(&OffsetCommitRequest {
            group: "g".into(),
            member_id: a_id,
            member_epoch: 0,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: lost,
                offset: 0,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap();
    assert_eq!(resp.results[0].error_code, ErrorCode::StaleMemberEpoch);
    // Outsiders cannot commit while the group has members.
    let outsider = admin
        .call(&OffsetCommitRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(outsider.code(), Some(ErrorCode::UnknownMemberId));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let admin = broker.connect().await;
    create_topic(&admin, "t", 3, &[]).await.unwrap();
    let producer = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    for i in 0..300u32 {
        producer.send(Record::new("t", i.to_string()).partition(i % 3)).await.unwrap();
    }
    producer.close().await.unwrap();
    let c = Consumer::builder()
        .bootstrap(broker.addr.to_string())
        .group("g")
        .assign([("t", 0), ("t", 1), ("t", 2)])
        .build()
        .await
        .unwrap();
    let mut got = 0;
    while got < 150 {
        got += c.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    c.commit().await.unwrap();
    let acknowledged: BTreeMap<(String, u32), u64> = c.committed().into_iter().collect();
    assert!(!acknowledged.is_empty());
    broker.kill9();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let admin = broker.connect().await;
    let fetched = admin.call(&OffsetFetchRequest { group: "g".into(), partitions: vec![] }).await.unwrap();
    let after: BTreeMap<(String, u32), u64> =
        fetched.offsets.into_iter().map(|o| ((o.topic, o.partition), o.offset)).collect();
    assert_eq!(after, acknowledged, "every acknowledged commit survived kill -9");
    // And a consumer resumes there.
    let resumed = Consumer::builder()
        .bootstrap(broker.addr.to_string())
        .group("g")
        .assign([("t", 0)])
        .auto_offset_reset(OffsetReset::Latest)
        .build()
        .await
        .unwrap();
    let first = resumed.poll(Duration::from_secs(5)).await.unwrap();
    if let Some(start) = after.get(&("t".to_string(), 0)).filter(|o| **o < 100) {
        assert_eq!(first.first().map(|r| r.offset), Some(*start));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_later_is_picked_up_and_events_are_reported() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    let c = member(&broker, "g", "later").await;
    let mut events = c.assignment_events();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.assignment().is_empty(), "nothing to assign yet");
    create_topic(&admin, "later", 2, &[]).await.unwrap();
    stable(&[&c], 2, &[2]).await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(
        event,
        sluice_consumer::AssignmentEvent::Assigned(vec![("later".to_string(), 0), ("later".to_string(), 1)])
    );
    let other = member(&broker, "g", "later").await;
    stable(&[&c, &other], 2, &[1, 1]).await;
    let revoked = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap() {
            sluice_consumer::AssignmentEvent::Revoked(tps) => break tps,
            _ => continue,
        }
    };
    assert_eq!(revoked.len(), 1, "exactly one partition moved to the new member");
    c.close().await.unwrap();
    other.close().await.unwrap();
}

/// DESIGN §8: auto-commit only commits records that were handed out *and*
/// followed by another poll (processed); `close()` commits what was handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_never_runs_ahead_of_processing() {
    use sluice_protocol::api::NO_OFFSET;
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 1, &[]).await.unwrap();
    let producer = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    for i in 0..10u32 {
        producer.send(Record::new("t", i.to_string())).await.unwrap();
    }
    producer.flush().await.unwrap();
    let committed = || async {
        let req = OffsetFetchRequest {
            group: "g".into(),
            partitions: vec![TopicPartition { topic: "t".into(), partition: 0 }],
        };
        admin.call(&req).await.unwrap().offsets[0].offset
    };
    let c = Consumer::builder()
        .bootstrap(broker.addr.to_string())
        .group("g")
        .assign([("t", 0)])
        .auto_commit_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let mut got = 0;
    while got < 10 {
        got += c.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    // Several auto-commit intervals pass while the records are "in processing".
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = committed().await;
    assert!(early == NO_OFFSET || early == 0, "auto-commit ran ahead of processing: {early}");
    // The next poll marks them processed; the next interval commits them.
    assert!(c.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while committed().await != 10 {
        assert!(Instant::now() < deadline, "processed records were never auto-committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 10..15u32 {
        producer.send(Record::new("t", i.to_string())).await.unwrap();
    }
    producer.close().await.unwrap();
    let mut got = 0;
    while got < 5 {
        got += c.poll(Duration::from_secs(5)).await.unwrap().len();
    }
    c.close().await.unwrap();
    assert_eq!(committed().await, 15, "close() commits what was handed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_heartbeat_quickly_while_the_group_reconciles() {
    use sluice_protocol::api::{GroupHeartbeatRequest, GroupHeartbeatResponse, TopicPartitions};
    let broker = TestBroker::start(|_| {}).await;
    let conn = broker.connect().await;
    create_topic(&conn, "t", 4, &[]).await.unwrap();
    let beat = |member: &GroupHeartbeatResponse, owned: Vec<u32>| GroupHeartbeatRequest {
        group: "g".into(),
        member_id: member.member_id.clone(),
        member_epoch: member.member_epoch,
        client_host: "test".into(),
        session_timeout_ms: 30_000,
        topics: vec!["t".into()],
        owned: if owned.is_empty() {
            vec![]
        } else {
            vec![TopicPartitions { topic: "t".into(), partitions: owned }]
        },
    };
    let joining = GroupHeartbeatResponse::default();
    let held = |r: &GroupHeartbeatResponse| -> Vec<u32> {
        r.assignment.iter().flat_map(|t| t.partitions.clone()).collect()
    };

    // Alone and settled: the steady interval (a third of the session).
    let a = conn.call(&beat(&joining, vec![])).await.unwrap();
    assert_eq!((held(&a), a.heartbeat_interval_ms), (vec![0, 1, 2, 3], 3_000));
    // A second member makes the group reconcile: both are told to come back soon.
    let b = conn.call(&beat(&joining, vec![])).await.unwrap();
    assert_eq!((held(&b), b.heartbeat_interval_ms), (vec![], 50));
    let a = conn.call(&beat(&a, vec![0, 1, 2, 3])).await.unwrap();
    assert_eq!((held(&a).len(), a.heartbeat_interval_ms), (2, 50), "A is asked to revoke two");
    let a = conn.call(&beat(&a, held(&a))).await.unwrap();
    assert_eq!(a.heartbeat_interval_ms, 50, "B has not taken them yet");
    let b = conn.call(&beat(&b, vec![])).await.unwrap();
    assert_eq!(held(&b).len(), 2);
    // Settled again: back to the steady interval.
    assert_eq!(b.heartbeat_interval_ms, 3_000);
    let a = conn.call(&beat(&a, held(&a))).await.unwrap();
    assert_eq!(a.heartbeat_interval_ms, 3_000);
}

/// A revocation is announced by `poll_event` and the partition stays with
/// its owner until the next poll, so the owner commits what it processed
/// first and the next owner starts there: nothing read twice, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_the_owner_to_commit_then_moves() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    let producer = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    for i in 0..200u32 {
        producer.send(Record::new("t", i.to_string()).partition(i % 2)).await.unwrap();
    }
    producer.flush().await.unwrap();
    let a = member(&broker, "g", "t").await;
    let mut seen: Vec<(u32, u64)> = Vec::new();
    while seen.len() < 200 {
        if let Polled::Records(records) = a.poll_event(Duration::from_secs(5)).await.unwrap() {
            seen.extend(records.iter().map(|r| (r.partition, r.offset)));
        }
    }
    let b = member(&broker, "g", "t").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let revoked = loop {
        assert!(Instant::now() < deadline, "no revocation announced");
        b.poll(Duration::ZERO).await.unwrap();
        match a.poll_event(Duration::from_millis(50)).await.unwrap() {
            Polled::Revoked(tps) => break tps,
            Polled::Records(records) => assert!(records.is_empty(), "nothing new was produced"),
        }
    };
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    // Announced, not released: still `a`'s, and its commit is accepted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.poll(Duration::ZERO).await.unwrap();
    assert!(b.assignment().is_empty(), "moved before the owner's next poll: {:?}", b.assignment());
    assert_eq!(a.assignment().len(), 2);
    a.commit().await.unwrap();
    stable(&[&a, &b], 2, &[1, 1]).await;
    assert_eq!(b.assignment(), revoked);
    // More records: each member reads only its own, and nothing again.
    for i in 200..220u32 {
        producer.send(Record::new("t", i.to_string()).partition(i % 2)).await.unwrap();
    }
    producer.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 220 {
        assert!(Instant::now() < deadline, "only {} of 220 read", seen.len());
        for c in [&a, &b] {
            if let Polled::Records(records) = c.poll_event(Duration::from_millis(50)).await.unwrap() {
                seen.extend(records.iter().map(|r| (r.partition, r.offset)));
            }
        }
    }
    let unique: HashSet<(u32, u64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no record read twice");
    a.close().await.unwrap();
    b.close().await.unwrap();
}
