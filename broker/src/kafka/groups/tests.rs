//! The group apis through [`KafkaGroups::handle`] on a real broker (a
//! temporary data directory): each request encoded with the
//! `kafka-protocol` crate at every advertised version, each response
//! decoded at that version.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::BrokerConfig;
use crate::metrics::Metrics;

struct Rig {
    groups: KafkaGroups,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        group_initial_rebalance_delay_ms: 0,
        ..Default::default()
    };
    let (broker, _) = Broker::open(config, CancellationToken::new(), Arc::new(Metrics::new())).await.unwrap();
    let b = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || b.create_topic("t", 2, &[]).unwrap()).await.unwrap();
    let endpoint = Endpoint { node_id: 0, host: "127.0.0.1".into(), port: 9092 };
    Rig { groups: KafkaGroups::new(Arc::clone(&broker), endpoint), broker, _dir: dir }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

async fn call<Q: Encodable, R: Decodable>(rig: &Rig, api: ApiKey, version: i16, req: &Q) -> R {
    let mut body = BytesMut::new();
    req.encode(&mut body, version).unwrap();
    let mut out = rig.groups.handle(api, version, body.freeze()).await.unwrap().freeze();
    let response = R::decode(&mut out, version).unwrap();
    assert!(out.is_empty(), "{api:?} v{version}: bytes left over");
    response
}

#[tokio::test]
async fn find_coordinator_answers_this_broker_at_every_version() {
    let rig = rig().await;
    for v in 0..=4 {
        let req = match v {
            4 => FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]),
            _ => FindCoordinatorRequest::default().with_key(s("g")),
        };
        let r: FindCoordinatorResponse = call(&rig, ApiKey::FindCoordinator, v, &req).await;
        if v >= 4 {
            assert_eq!(r.coordinators.len(), 2);
            assert!(r.coordinators.iter().all(|c| c.port == 9092 && c.error_code == 0));
        } else {
            assert_eq!((r.error_code, r.port, r.host.as_str()), (0, 9092, "127.0.0.1"), "v{v}");
        }
    }
    let txn = FindCoordinatorRequest::default().with_key(s("tx")).with_key_type(1);
    let r: FindCoordinatorResponse = call(&rig, ApiKey::FindCoordinator, 3, &txn).await;
    assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code());
}

fn join_req(member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from("m"))])
}

/// One member through join, sync, heartbeat, commit, fetch and leave at
/// `v` (JoinGroup's version; the others at their matching versions).
async fn lifecycle(rig: &Rig, v: i16) {
    let mut joined: JoinGroupResponse = call(rig, ApiKey::JoinGroup, v, &join_req("")).await;
    if v >= 4 {
        assert_eq!(joined.error_code, ResponseError::MemberIdRequired.code(), "v{v}");
        let id = joined.member_id.to_string();
        joined = call(rig, ApiKey::JoinGroup, v, &join_req(&id)).await;
    }
    assert_eq!(joined.error_code, 0, "v{v}");
    assert_eq!((joined.leader.clone(), joined.members.len()), (joined.member_id.clone(), 1));
    assert_eq!(joined.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    let (id, generation) = (joined.member_id.clone(), joined.generation_id);
    let sv = v.min(5);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(id.clone())
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(id.clone())
            .with_assignment(Bytes::from("a"))]);
    let synced: SyncGroupResponse = call(rig, ApiKey::SyncGroup, sv, &sync).await;
    assert_eq!((synced.error_code, synced.assignment.clone()), (0, Bytes::from("a")), "v{v}");
    let hv = v.min(4);
    let beat = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(id.clone());
    let r: HeartbeatResponse = call(rig, ApiKey::Heartbeat, hv, &beat).await;
    assert_eq!(r.error_code, 0);
    let stale = beat.clone().with_generation_id(generation + 5);
    let r: HeartbeatResponse = call(rig, ApiKey::Heartbeat, hv, &stale).await;
    assert_eq!(r.error_code, ResponseError::IllegalGeneration.code());
    let cv = (v + 2).clamp(2, 9);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(id.clone())
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(
            vec![OffsetCommitRequestPartition::default().with_partition_index(1).with_committed_offset(0)],
        )]);
    let r: OffsetCommitResponse = call(rig, ApiKey::OffsetCommit, cv, &commit).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v{cv}");
    let wrong = commit.clone().with_generation_id_or_member_epoch(generation + 1);
    let r: OffsetCommitResponse = call(rig, ApiKey::OffsetCommit, cv, &wrong).await;
    assert_eq!(r.topics[0].partitions[0].error_code, ResponseError::IllegalGeneration.code());
    let lv = v.min(5);
    let leave = if lv >= 3 {
        LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(id.clone())])
    } else {
        LeaveGroupRequest::default().with_group_id(GroupId(s("g"))).with_member_id(id.clone())
    };
    let r: LeaveGroupResponse = call(rig, ApiKey::LeaveGroup, lv, &leave).await;
    assert_eq!(r.error_code, 0);
    assert!(r.members.iter().all(|m| m.error_code == 0));
}

#[tokio::test]
async fn the_classic_protocol_works_at_every_version() {
    let rig = rig().await;
    for v in 0..=9 {
        lifecycle(&rig, v).await;
    }
    for v in 1..=9 {
        let fetch = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(None),
            ])
        } else {
            OffsetFetchRequest::default().with_group_id(GroupId(s("g"))).with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1]),
            ]))
        };
        let r: OffsetFetchResponse = call(&rig, ApiKey::OffsetFetch, v, &fetch).await;
        let offsets: Vec<(i32, i64)> = if v >= 8 {
            r.groups[0].topics[0].partitions.iter().map(|p| (p.partition_index, p.committed_offset)).collect()
        } else {
            r.topics[0].partitions.iter().map(|p| (p.partition_index, p.committed_offset)).collect()
        };
        let expected: Vec<(i32, i64)> = if v >= 8 { vec![(1, 0)] } else { vec![(0, -1), (1, 0)] };
        assert_eq!(offsets, expected, "OffsetFetch v{v}");
    }
    assert_eq!(rig.broker.groups.list().len(), 1, "the commits are the native coordinator's");
}

#[tokio::test]
async fn groups_are_listed_described_and_deleted_only_when_empty() {
    let rig = rig().await;
    let joined: JoinGroupResponse = call(&rig, ApiKey::JoinGroup, 3, &join_req("")).await;
    assert_eq!(joined.error_code, 0);
    for v in 0..=5 {
        let r: ListGroupsResponse = call(&rig, ApiKey::ListGroups, v, &ListGroupsRequest::default()).await;
        assert_eq!(r.groups.len(), 1, "v{v}");
        assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");
        let d: DescribeGroupsResponse = call(
            &rig,
            ApiKey::DescribeGroups,
            v,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g")), GroupId(s("none"))]),
        )
        .await;
        assert_eq!(d.groups[0].group_state.as_str(), "CompletingRebalance", "v{v}");
        assert_eq!(d.groups[0].members.len(), 1);
        assert_eq!(d.groups[1].group_state.as_str(), "Dead");
    }
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]);
    let r: DeleteGroupsResponse = call(&rig, ApiKey::DeleteGroups, 2, &delete).await;
    assert_eq!(r.results[0].error_code, ResponseError::NonEmptyGroup.code());
    // A native member may not join a group with classic members.
    let native = sluice_protocol::api::GroupHeartbeatRequest {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        client_host: String::new(),
        session_timeout_ms: 10_000,
        topics: vec!["t".into()],
        owned: Vec::new(),
    };
    let slot = rig.broker.groups.slot_or_create("g", 10).unwrap();
    let refused = rig.broker.groups.heartbeat(&slot, &rig.broker.topics, "native", native, None).unwrap_err();
    assert!(refused.to_string().contains("another group protocol"), "{refused}");
    let kip848 = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s("m"))
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]));
    let r: ConsumerGroupHeartbeatResponse = call(&rig, ApiKey::ConsumerGroupHeartbeat, 1, &kip848).await;
    assert_eq!(r.error_code, ResponseError::InconsistentGroupProtocol.code(), "nor a KIP-848 member");
    let leave =
        LeaveGroupRequest::default().with_group_id(GroupId(s("g"))).with_member_id(joined.member_id.clone());
    let _: LeaveGroupResponse = call(&rig, ApiKey::LeaveGroup, 0, &leave).await;
    let r: DeleteGroupsResponse = call(&rig, ApiKey::DeleteGroups, 2, &delete).await;
    assert_eq!(r.results[0].error_code, 0, "empty now");
}

#[tokio::test]
async fn kip848_members_are_native_members_and_exclude_classic_ones() {
    let rig = rig().await;
    let topic_id = rig.broker.topics.get("t").unwrap().id();
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("k")))
        .with_member_id(s("my-own-id"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(10_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(vec![]));
    let r: ConsumerGroupHeartbeatResponse = call(&rig, ApiKey::ConsumerGroupHeartbeat, 1, &join).await;
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.member_id.as_ref().map(|m| m.as_str()), Some("my-own-id"));
    assert!(r.member_epoch > 0);
    let assignment = r.assignment.unwrap();
    assert_eq!(assignment.topic_partitions[0].topic_id, topic_id);
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0, 1]);
    let mut req = join_req("");
    req.group_id = GroupId(s("k"));
    let refused: JoinGroupResponse = call(&rig, ApiKey::JoinGroup, 3, &req).await;
    assert_eq!(refused.error_code, ResponseError::InconsistentGroupProtocol.code());
    // A heartbeat sending nothing new keeps the subscription.
    let beat = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("k")))
        .with_member_id(s("my-own-id"))
        .with_member_epoch(r.member_epoch);
    let again: ConsumerGroupHeartbeatResponse = call(&rig, ApiKey::ConsumerGroupHeartbeat, 1, &beat).await;
    assert_eq!((again.error_code, again.assignment.unwrap().topic_partitions[0].partitions.len()), (0, 2));
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("k")))
        .with_generation_id_or_member_epoch(again.member_epoch)
        .with_member_id(s("my-own-id"))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(
            vec![OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(0)],
        )]);
    let r: OffsetCommitResponse = call(&rig, ApiKey::OffsetCommit, 9, &commit).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let leave = beat.with_member_epoch(-1);
    let left: ConsumerGroupHeartbeatResponse = call(&rig, ApiKey::ConsumerGroupHeartbeat, 1, &leave).await;
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let joined: JoinGroupResponse = call(&rig, ApiKey::JoinGroup, 3, &req).await;
    assert_eq!(joined.error_code, 0, "the group is empty again: a classic member may join");
}

#[tokio::test]
async fn unsupported_versions_and_garbage_are_malformed() {
    let rig = rig().await;
    assert!(rig.groups.handle(ApiKey::JoinGroup, 10, Bytes::new()).await.is_err());
    assert!(rig.groups.handle(ApiKey::Produce, 3, Bytes::new()).await.is_err());
    assert!(rig.groups.handle(ApiKey::Heartbeat, 0, Bytes::from_static(&[0, 5, b'g'])).await.is_err());
    let mut body = BytesMut::new();
    HeartbeatRequest::default().with_group_id(GroupId(s("g"))).encode(&mut body, 0).unwrap();
    body.extend_from_slice(b"trailing");
    assert!(rig.groups.handle(ApiKey::Heartbeat, 0, body.freeze()).await.is_err());
}

/// A broker in cluster mode that does not lead `__sluice_offsets` (no
/// controller runs: nothing makes it the coordinator).
async fn clustered_rig() -> Rig {
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
    let endpoint = Endpoint { node_id: 1, host: "127.0.0.1".into(), port: 9092 };
    Rig { groups: KafkaGroups::new(Arc::clone(&broker), endpoint), broker, _dir: dir }
}

/// A broker that does not coordinate answers every group api, at every
/// version, with NOT_COORDINATOR (so Kafka clients find the coordinator).
#[tokio::test]
async fn a_broker_that_does_not_coordinate_answers_not_coordinator() {
    let rig = clustered_rig().await;
    let nc = ResponseError::NotCoordinator.code();
    let g = || GroupId(s("g"));
    for v in 0..=9 {
        let r: JoinGroupResponse = call(&rig, ApiKey::JoinGroup, v, &join_req("")).await;
        assert_eq!(r.error_code, nc, "JoinGroup v{v}");
    }
    for v in 0..=5 {
        let sync = SyncGroupRequest::default().with_group_id(g()).with_member_id(s("m"));
        let r: SyncGroupResponse = call(&rig, ApiKey::SyncGroup, v, &sync).await;
        assert_eq!(r.error_code, nc, "SyncGroup v{v}");
        let leave = LeaveGroupRequest::default().with_group_id(g());
        let leave = if v >= 3 { leave } else { leave.with_member_id(s("m")) };
        let r: LeaveGroupResponse = call(&rig, ApiKey::LeaveGroup, v, &leave).await;
        assert_eq!(r.error_code, nc, "LeaveGroup v{v}");
        let r: ListGroupsResponse = call(&rig, ApiKey::ListGroups, v, &ListGroupsRequest::default()).await;
        assert_eq!(r.error_code, nc, "ListGroups v{v}");
        let describe = DescribeGroupsRequest::default().with_groups(vec![g()]);
        let r: DescribeGroupsResponse = call(&rig, ApiKey::DescribeGroups, v, &describe).await;
        assert_eq!(r.groups[0].error_code, nc, "DescribeGroups v{v}");
    }
    for v in 0..=4 {
        let beat = HeartbeatRequest::default().with_group_id(g()).with_member_id(s("m"));
        let r: HeartbeatResponse = call(&rig, ApiKey::Heartbeat, v, &beat).await;
        assert_eq!(r.error_code, nc, "Heartbeat v{v}");
    }
    for v in 0..=2 {
        let delete = DeleteGroupsRequest::default().with_groups_names(vec![g()]);
        let r: DeleteGroupsResponse = call(&rig, ApiKey::DeleteGroups, v, &delete).await;
        assert_eq!(r.results[0].error_code, nc, "DeleteGroups v{v}");
    }
    for v in 2..=9 {
        let commit = OffsetCommitRequest::default().with_group_id(g()).with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(0),
            ]),
        ]);
        let r: OffsetCommitResponse = call(&rig, ApiKey::OffsetCommit, v, &commit).await;
        assert_eq!(r.topics[0].partitions[0].error_code, nc, "OffsetCommit v{v}");
    }
    for v in 1..=9 {
        let topics = vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0])];
        let req = if v >= 8 {
            use kafka_protocol::messages::offset_fetch_request::{
                OffsetFetchRequestGroup, OffsetFetchRequestTopics,
            };
            let t = OffsetFetchRequestTopics::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0]);
            let group = OffsetFetchRequestGroup::default().with_group_id(g()).with_topics(Some(vec![t]));
            OffsetFetchRequest::default().with_groups(vec![group])
        } else {
            OffsetFetchRequest::default().with_group_id(g()).with_topics(Some(topics))
        };
        let r: OffsetFetchResponse = call(&rig, ApiKey::OffsetFetch, v, &req).await;
        let code = match v {
            8.. => r.groups[0].error_code,
            2.. => r.error_code,
            _ => r.topics[0].partitions[0].error_code,
        };
        assert_eq!(code, nc, "OffsetFetch v{v}");
    }
    for v in 0..=1 {
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(g())
            .with_member_id(s(&uuid::Uuid::new_v4().to_string()))
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
            .with_topic_partitions(Some(vec![]));
        let r: ConsumerGroupHeartbeatResponse = call(&rig, ApiKey::ConsumerGroupHeartbeat, v, &join).await;
        assert_eq!(r.error_code, nc, "ConsumerGroupHeartbeat v{v}");
    }
}
