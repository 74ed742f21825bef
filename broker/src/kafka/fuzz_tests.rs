//! Every served request decoder fed mutated valid requests: each byte
//! replaced by `0xFF`, each 4-byte window by `0x7FFFFFFF` (a lying count or
//! length), and truncations, at every served version. The guard and the
//! decoder must return (an error or a value), never panic, and never be
//! handed a count the body cannot hold (a huge reservation would abort the
//! test process).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::dispatch::SERVED;
use super::guard;
use super::wire::Header;

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic() -> TopicName {
    TopicName(s("orders"))
}

fn produce() -> ProduceRequest {
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(Bytes::from_static(&[0; 70]));
    let mut t = produce_request::TopicProduceData::default();
    t.name = topic();
    t.partition_data = vec![p.clone(), p];
    let mut r = ProduceRequest::default();
    r.transactional_id = None;
    r.topic_data = vec![t];
    r
}

fn fetch(v: i16) -> FetchRequest {
    let mut t = fetch_request::FetchTopic::default();
    t.topic = topic();
    t.partitions = vec![Default::default(), Default::default()];
    let mut f = fetch_request::ForgottenTopic::default();
    f.topic = topic();
    f.partitions = vec![1, 2];
    let mut r = FetchRequest::default();
    r.topics = vec![t];
    if v >= 7 {
        r.forgotten_topics_data = vec![f];
    }
    if v >= 11 {
        r.rack_id = s("rack");
    }
    r
}

fn requests(api: ApiKey, v: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let named = || {
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(topic());
        t
    };
    match api {
        ApiKey::Produce => produce().encode(&mut buf, v),
        ApiKey::Fetch => fetch(v).encode(&mut buf, v),
        ApiKey::ListOffsets => {
            let mut t = list_offsets_request::ListOffsetsTopic::default();
            t.name = topic();
            t.partitions = vec![Default::default(), Default::default()];
            let mut r = ListOffsetsRequest::default();
            r.topics = vec![t];
            r.encode(&mut buf, v)
        }
        ApiKey::Metadata => {
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![named(), named()]);
            r.encode(&mut buf, v)
        }
        ApiKey::CreateTopics => {
            let mut a = create_topics_request::CreatableReplicaAssignment::default();
            a.broker_ids = vec![BrokerId(0)];
            let mut c = create_topics_request::CreatableTopicConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("1"));
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = topic();
            t.assignments = vec![a];
            t.configs = vec![c];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            r.encode(&mut buf, v)
        }
        ApiKey::DeleteTopics => {
            let mut t = delete_topics_request::DeleteTopicState::default();
            t.name = Some(topic());
            let mut r = DeleteTopicsRequest::default();
            if v >= 6 {
                r.topics = vec![t];
            } else {
                r.topic_names = vec![topic(), topic()];
            }
            r.encode(&mut buf, v)
        }
        ApiKey::CreatePartitions => {
            let mut a = create_partitions_request::CreatePartitionsAssignment::default();
            a.broker_ids = vec![BrokerId(0)];
            let mut t = create_partitions_request::CreatePartitionsTopic::default();
            t.name = topic();
            t.assignments = Some(vec![a]);
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            r.encode(&mut buf, v)
        }
        ApiKey::DescribeConfigs => {
            let mut res = describe_configs_request::DescribeConfigsResource::default();
            res.resource_name = s("orders");
            res.configuration_keys = Some(vec![s("retention.ms")]);
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![res];
            r.encode(&mut buf, v)
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut c = incremental_alter_configs_request::AlterableConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("5"));
            let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
            res.resource_name = s("orders");
            res.configs = vec![c];
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![res];
            r.encode(&mut buf, v)
        }
        ApiKey::DescribeCluster => DescribeClusterRequest::default().encode(&mut buf, v),
        ApiKey::InitProducerId => InitProducerIdRequest::default().encode(&mut buf, v),
        ApiKey::ApiVersions => ApiVersionsRequest::default().encode(&mut buf, v),
        other => panic!("no request builder for {other:?}"),
    }
    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
    buf.to_vec()
}

/// A group api request with one element in each array.
fn group_request(api: ApiKey, v: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    let group = || GroupId(s("billing"));
    match api {
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if v >= 4 {
                r.coordinator_keys = vec![s("billing")];
            } else {
                r.key = s("billing");
            }
            r.encode(&mut buf, v)
        }
        ApiKey::JoinGroup => {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = s("range");
            p.metadata = Bytes::from_static(&[0, 1, 2, 3]);
            let mut r = JoinGroupRequest::default();
            r.group_id = group();
            r.protocol_type = s("consumer");
            r.protocols = vec![p];
            r.encode(&mut buf, v)
        }
        ApiKey::SyncGroup => {
            let mut a = sync_group_request::SyncGroupRequestAssignment::default();
            a.member_id = s("m");
            a.assignment = Bytes::from_static(&[0, 1]);
            let mut r = SyncGroupRequest::default();
            r.group_id = group();
            r.assignments = vec![a];
            r.encode(&mut buf, v)
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatRequest::default();
            r.group_id = group();
            r.encode(&mut buf, v)
        }
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default();
            r.group_id = group();
            if v >= 3 {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = s("m");
                r.members = vec![m];
            }
            r.encode(&mut buf, v)
        }
        ApiKey::OffsetCommit => {
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = topic();
            t.partitions = vec![Default::default()];
            let mut r = OffsetCommitRequest::default();
            r.group_id = group();
            r.topics = vec![t];
            r.encode(&mut buf, v)
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if v >= 8 {
                let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                t.name = topic();
                t.partition_indexes = vec![0, 1];
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = group();
                g.topics = Some(vec![t]);
                r.groups = vec![g];
            } else {
                let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = topic();
                t.partition_indexes = vec![0, 1];
                r.group_id = group();
                r.topics = Some(vec![t]);
            }
            r.encode(&mut buf, v)
        }
        ApiKey::ListGroups => ListGroupsRequest::default().encode(&mut buf, v),
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![group(), group()];
            r.encode(&mut buf, v)
        }
        ApiKey::DeleteGroups => {
            let mut r = DeleteGroupsRequest::default();
            r.groups_names = vec![group()];
            r.encode(&mut buf, v)
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let mut t = consumer_group_heartbeat_request::TopicPartitions::default();
            t.partitions = vec![0, 1];
            let mut r = ConsumerGroupHeartbeatRequest::default();
            r.group_id = group();
            r.subscribed_topic_names = Some(vec![topic()]);
            r.topic_partitions = Some(vec![t]);
            r.encode(&mut buf, v)
        }
        ApiKey::ConsumerGroupDescribe => {
            let mut r = ConsumerGroupDescribeRequest::default();
            r.group_ids = vec![group()];
            r.encode(&mut buf, v)
        }
        other => panic!("no request builder for {other:?}"),
    }
    .ok()?; // a version ApiKey lists but the message type does not encode
    Some(buf.to_vec())
}

/// The group apis, every version kafka-protocol decodes.
const GROUP_APIS: [ApiKey; 12] = [
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
];

/// Guards then decodes `body` as `api` at `v`; whether both accepted it.
fn accepted(api: ApiKey, v: i16, body: &[u8]) -> bool {
    let header = Header { api, version: v, correlation_id: 0 };
    if guard::check(&header, body).is_err() {
        return false;
    }
    let mut b = Bytes::copy_from_slice(body);
    match api {
        ApiKey::Produce => ProduceRequest::decode(&mut b, v).is_ok(),
        ApiKey::Fetch => FetchRequest::decode(&mut b, v).is_ok(),
        ApiKey::ListOffsets => ListOffsetsRequest::decode(&mut b, v).is_ok(),
        ApiKey::Metadata => MetadataRequest::decode(&mut b, v).is_ok(),
        ApiKey::CreateTopics => CreateTopicsRequest::decode(&mut b, v).is_ok(),
        ApiKey::DeleteTopics => DeleteTopicsRequest::decode(&mut b, v).is_ok(),
        ApiKey::CreatePartitions => CreatePartitionsRequest::decode(&mut b, v).is_ok(),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::decode(&mut b, v).is_ok(),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::decode(&mut b, v).is_ok(),
        ApiKey::DescribeCluster => DescribeClusterRequest::decode(&mut b, v).is_ok(),
        ApiKey::InitProducerId => InitProducerIdRequest::decode(&mut b, v).is_ok(),
        ApiKey::ApiVersions => ApiVersionsRequest::decode(&mut b, v).is_ok(),
        ApiKey::FindCoordinator => FindCoordinatorRequest::decode(&mut b, v).is_ok(),
        ApiKey::JoinGroup => JoinGroupRequest::decode(&mut b, v).is_ok(),
        ApiKey::SyncGroup => SyncGroupRequest::decode(&mut b, v).is_ok(),
        ApiKey::Heartbeat => HeartbeatRequest::decode(&mut b, v).is_ok(),
        ApiKey::LeaveGroup => LeaveGroupRequest::decode(&mut b, v).is_ok(),
        ApiKey::OffsetCommit => OffsetCommitRequest::decode(&mut b, v).is_ok(),
        ApiKey::OffsetFetch => OffsetFetchRequest::decode(&mut b, v).is_ok(),
        ApiKey::ListGroups => ListGroupsRequest::decode(&mut b, v).is_ok(),
        ApiKey::DescribeGroups => DescribeGroupsRequest::decode(&mut b, v).is_ok(),
        ApiKey::DeleteGroups => DeleteGroupsRequest::decode(&mut b, v).is_ok(),
        ApiKey::ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::decode(&mut b, v).is_ok(),
        ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::decode(&mut b, v).is_ok(),
        other => panic!("no decoder for {other:?}"),
    }
}

/// Every served request, and every group request at every version.
fn cases() -> Vec<(ApiKey, i16, Vec<u8>)> {
    let mut all = Vec::new();
    for &(api, lo, hi) in SERVED {
        all.extend((lo..=hi).map(|v| (api, v, requests(api, v))));
    }
    for api in GROUP_APIS {
        let range = api.valid_versions();
        all.extend((range.min..=range.max).filter_map(|v| Some((api, v, group_request(api, v)?))));
    }
    all
}

#[test]
fn every_served_request_passes_the_guard_and_mutations_never_panic_or_overallocate() {
    let mut cases = 0;
    for (api, v, valid) in self::cases() {
        {
            assert!(accepted(api, v, &valid), "{api:?} v{v}: a valid request is refused by the guard");
            for pos in 0..valid.len() {
                let mut m = valid.clone();
                m[pos] = 0xFF;
                accepted(api, v, &m);
                let mut m = valid.clone();
                let end = (pos + 4).min(m.len());
                m[pos..end].copy_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF][..end - pos]);
                accepted(api, v, &m);
                accepted(api, v, &valid[..pos]);
                cases += 3;
            }
        }
    }
    assert!(cases > 10_000, "{cases} cases");
}
