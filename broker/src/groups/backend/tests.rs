//! The clustered coordinator on a real broker (a temporary data directory,
//! no controller): commits go to the offsets partition, requests are
//! refused unless this broker leads it, and a new leadership reads the
//! commits back from the partition's log.

use std::sync::Arc;

use sluice_protocol::api::{CommitOffset, OffsetCommitRequest, OffsetFetchRequest};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::{ErrorCode, TopicPartition};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::groups::offsets_topic::{self, OFFSETS_TOPIC};
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::reconcile::offsets::follow_role;
use crate::replication::Role;
use crate::storage::{now_ms, LogConfig};

struct Rig {
    broker: Arc<Broker>,
    offsets: Arc<Partition>,
    _dir: tempfile::TempDir,
}

/// A broker in cluster mode (node 1) with topic `t` (3 records in
/// partition 0) and a local copy of the offsets topic.
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        node_id: Some(1),
        peer_listen: "127.0.0.1:1".into(),
        peers: [("1".to_owned(), "127.0.0.1:1".to_owned())].into_iter().collect(),
        cluster_id: "test".into(),
        ..Default::default()
    };
    let (broker, _) = Broker::open(config, CancellationToken::new(), Arc::new(Metrics::new())).await.unwrap();
    let b = Arc::clone(&broker);
    let offsets = tokio::task::spawn_blocking(move || {
        let t = b.create_topic("t", 2, &[]).unwrap();
        let mut batch = BatchBuilder::new();
        for _ in 0..3 {
            batch.append(now_ms(), None, Some(b"v"), &[]);
        }
        t.partitions[0].append(batch.build(), 1 << 20, now_ms()).unwrap();
        let mut config = LogConfig::default();
        for (k, v) in offsets_topic::topic_config() {
            config.set(&k, &v).unwrap();
        }
        let topic = b.create_topic_with(OFFSETS_TOPIC, 1, config, uuid::Uuid::new_v4()).unwrap();
        // As the replica manager does for every partition it is given.
        topic.partitions[0].attach_replication(1, Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)));
        Arc::clone(&topic.partitions[0])
    })
    .await
    .unwrap();
    Rig { broker, offsets, _dir: dir }
}

fn leader() -> Role {
    Role::Leader { epoch: 1, replicas: vec![1, 2, 3], isr: vec![1], min_insync_replicas: 1 }
}

fn follower() -> Role {
    Role::Follower { epoch: 2, leader: 2, leader_peer_addr: "127.0.0.1:1".into() }
}

/// Sets the offsets partition's role and lets the coordinator follow it.
async fn set_role(rig: &Rig, role: Role) {
    let (b, p) = (Arc::clone(&rig.broker), Arc::clone(&rig.offsets));
    tokio::task::spawn_blocking(move || {
        p.set_role(role.clone());
        follow_role(&b, &p, &role);
    })
    .await
    .unwrap();
}

async fn commit(rig: &Rig, group: &str, offset: u64) -> Result<ErrorCode, ErrorCode> {
    let b = Arc::clone(&rig.broker);
    let req = OffsetCommitRequest {
        group: group.into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![CommitOffset { topic: "t".into(), partition: 0, offset, metadata: "m".into() }],
    };
    let done = tokio::task::spawn_blocking(move || b.groups.commit(&b.topics, req, 100)).await.unwrap();
    done.map(|r| r.results[0].error_code).map_err(|e| e.code())
}

fn fetch(rig: &Rig, group: &str) -> Result<Option<u64>, ErrorCode> {
    let req = OffsetFetchRequest {
        group: group.into(),
        partitions: vec![TopicPartition { topic: "t".into(), partition: 0 }],
    };
    let got = rig.broker.groups.fetch_offsets(&req).map_err(|e| e.code())?;
    Ok(Some(got.offsets[0].offset).filter(|o| *o != sluice_protocol::api::NO_OFFSET))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_offsets_leader_coordinates() {
    let rig = rig().await;
    assert!(!rig.broker.groups.is_coordinator(), "not before leading the offsets partition");
    assert_eq!(commit(&rig, "g", 3).await, Err(ErrorCode::NotCoordinator));
    assert_eq!(fetch(&rig, "g"), Err(ErrorCode::NotCoordinator));
    assert!(ErrorCode::NotCoordinator.is_retriable());
    let slot = rig.broker.groups.slot_or_create("g", 100).map(drop).map_err(|e| e.code());
    assert_eq!(slot, Err(ErrorCode::NotCoordinator));

    set_role(&rig, leader()).await;
    assert!(rig.broker.groups.is_coordinator());
    assert_eq!(commit(&rig, "g", 3).await, Ok(ErrorCode::None));
    assert_eq!(commit(&rig, "g", 4).await, Ok(ErrorCode::OffsetOutOfRange), "past the log end");
    assert_eq!(fetch(&rig, "g"), Ok(Some(3)));
    assert!(rig.offsets.log().log_end_offset() >= 1, "the commit is a record of the offsets partition");
    assert!(rig.offsets.high_watermark() >= 1, "and durable there before it was acknowledged");

    set_role(&rig, follower()).await;
    assert!(!rig.broker.groups.is_coordinator());
    assert_eq!(fetch(&rig, "g"), Err(ErrorCode::NotCoordinator));
    assert!(rig.broker.groups.list().is_empty(), "a follower keeps no groups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leadership_reads_the_commits_from_the_partition() {
    let rig = rig().await;
    set_role(&rig, leader()).await;
    assert_eq!(commit(&rig, "kept", 2).await, Ok(ErrorCode::None));
    assert_eq!(commit(&rig, "kept", 3).await, Ok(ErrorCode::None));
    assert_eq!(commit(&rig, "gone", 1).await, Ok(ErrorCode::None));
    let b = Arc::clone(&rig.broker);
    tokio::task::spawn_blocking(move || b.groups.delete("gone")).await.unwrap().unwrap();
    // An ISR change keeps the leadership: nothing is reloaded or lost.
    let wider = Role::Leader { epoch: 1, replicas: vec![1, 2, 3], isr: vec![1, 2], min_insync_replicas: 1 };
    set_role(&rig, wider).await;
    assert_eq!(fetch(&rig, "kept"), Ok(Some(3)));

    set_role(&rig, follower()).await;
    let again = Role::Leader { epoch: 3, replicas: vec![1, 2, 3], isr: vec![1], min_insync_replicas: 1 };
    set_role(&rig, again).await;
    assert!(rig.broker.groups.is_coordinator());
    assert_eq!(fetch(&rig, "kept"), Ok(Some(3)), "the latest commit wins after a reload");
    assert_eq!(fetch(&rig, "gone"), Ok(None), "a deleted group stays deleted");
    let names: Vec<_> = rig.broker.groups.list().into_iter().map(|g| g.group).collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(commit(&rig, "kept", 1).await, Ok(ErrorCode::None), "commits go on after a reload");
    assert_eq!(fetch(&rig, "kept"), Ok(Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_enough_in_sync_replicas_refuses_commits() {
    let rig = rig().await;
    set_role(&rig, leader()).await;
    let short = Role::Leader { epoch: 1, replicas: vec![1, 2, 3], isr: vec![1], min_insync_replicas: 2 };
    set_role(&rig, short).await;
    assert_eq!(commit(&rig, "g", 3).await, Err(ErrorCode::NotEnoughReplicas));
    assert_eq!(fetch(&rig, "g"), Ok(None), "nothing was acknowledged");
}

/// Between the partition's role change and the coordinator following it,
/// a commit is refused with NotCoordinator (not the partition's
/// NotLeaderOrFollower), so the client finds the coordinator again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_after_the_leadership_moved_is_not_coordinator() {
    let rig = rig().await;
    set_role(&rig, leader()).await;
    rig.offsets.set_role(follower());
    assert_eq!(commit(&rig, "g", 3).await, Err(ErrorCode::NotCoordinator));
    assert_eq!(rig.offsets.log().log_end_offset(), 0, "nothing appended");
}
