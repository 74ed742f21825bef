//! Round trips for every message, decoders fed arbitrary bytes, and the
//! sample encodings in docs/format.md checked against the code.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::batch::BatchBuilder;

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9._-]{1,40}",
        Just("x".repeat(249)),
        any::<String>().prop_map(|s| s.chars().take(64).collect())
    ]
}
fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just(Bytes::new()), proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Bytes::from)]
}
fn arb_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL)
}
fn arb_configs() -> impl Strategy<Value = Vec<ConfigEntry>> {
    proptest::collection::vec((arb_string(), arb_string()).prop_map(|(k, v)| ConfigEntry::new(k, v)), 0..4)
}
fn arb_acks() -> impl Strategy<Value = Acks> {
    prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::Durable)]
}
fn arb_spec() -> impl Strategy<Value = OffsetSpec> {
    prop_oneof![
        Just(OffsetSpec::Earliest),
        Just(OffsetSpec::Latest),
        any::<i64>().prop_map(OffsetSpec::Timestamp)
    ]
}
fn arb_partition_metadata() -> impl Strategy<Value = PartitionMetadata> {
    let replicas = || proptest::collection::vec(any::<u64>(), 0..4);
    (
        (any::<u32>(), arb_code(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()),
        (any::<i64>(), any::<u32>(), replicas(), replicas()),
    )
        .prop_map(
            |(
                (
                    partition,
                    error_code,
                    log_start_offset,
                    log_end_offset,
                    high_watermark,
                    size_bytes,
                    segment_count,
                ),
                (leader, leader_epoch, replicas, isr),
            )| PartitionMetadata {
                partition,
                error_code,
                log_start_offset,
                log_end_offset,
                high_watermark,
                size_bytes,
                segment_count,
                leader,
                leader_epoch,
                replicas,
                isr,
            },
        )
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
    let mut w = Writer::new();
    m.encode(&mut w);
    let len = w.len();
    let bytes = w.into_bytes();
    assert_eq!(bytes.len(), len);
    assert_eq!(&M::decode_all(bytes.clone()).unwrap(), m);
    // Every strict prefix is an error, never a panic.
    for cut in [0, len / 2, len.saturating_sub(1)] {
        if cut < len {
            assert!(M::decode_all(bytes.slice(..cut)).is_err(), "prefix of {cut} bytes decoded");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn headers(api_key in any::<u16>(), api_version in any::<u16>(), correlation_id in any::<u32>(), client_id in arb_string(), code in arb_code()) {
        round_trip(&RequestHeader { api_key, api_version, correlation_id, client_id });
        round_trip(&ResponseHeader { correlation_id, error_code: code });
    }

    #[test]
    fn admin_requests(name in arb_string(), partitions in any::<u32>(), configs in arb_configs(), topics in proptest::collection::vec(arb_string(), 0..5)) {
        round_trip(&ApiVersionsRequest);
        round_trip(&MetadataRequest { topics });
        round_trip(&CreateTopicRequest { name: name.clone(), partitions, configs: configs.clone() });
        round_trip(&DeleteTopicRequest { name: name.clone() });
        round_trip(&AlterTopicRequest { name, configs });
        round_trip(&ErrorBody { message: "x".repeat(300) });
    }

    #[test]
    fn admin_responses(apis in proptest::collection::vec((any::<u16>(), any::<u16>(), any::<u16>()), 0..10),
                       name in arb_string(), code in arb_code(), configs in arb_configs(),
                       partitions in proptest::collection::vec(arb_partition_metadata(), 0..10)) {
        round_trip(&ApiVersionsResponse { apis: apis.into_iter().map(|(api_key, min_version, max_version)| ApiVersionRange { api_key, min_version, max_version }).collect() });
        round_trip(&MetadataResponse {
            node_id: 2,
            brokers: vec![BrokerMetadata { id: 2, addr: "127.0.0.1:9000".into() }],
            topics: vec![TopicMetadata { error_code: code, name, configs, partitions }],
        });
        round_trip(&MetadataResponse::default());
        round_trip(&CreateTopicResponse);
        round_trip(&DeleteTopicResponse);
        round_trip(&AlterTopicResponse);
    }

    #[test]
    fn produce(acks in arb_acks(), timeout_ms in any::<u32>(), topic in arb_string(), partition in any::<u32>(), batch in arb_bytes(),
               base_offset in any::<u64>(), log_append_time in any::<i64>(), log_start_offset in any::<u64>()) {
        round_trip(&ProduceRequest { acks, timeout_ms, topic, partition, batch });
        round_trip(&ProduceResponse { base_offset, log_append_time, log_start_offset });
    }

    #[test]
    fn fetch(max_wait_ms in any::<u32>(), min_bytes in any::<u32>(), max_bytes in any::<u32>(),
             parts in proptest::collection::vec((arb_string(), any::<u32>(), any::<u64>(), any::<u32>(), arb_code(), any::<u64>(), arb_bytes()), 0..6)) {
        round_trip(&FetchRequest { max_wait_ms, min_bytes, max_bytes, partitions: parts.iter().map(|p| FetchPartition { topic: p.0.clone(), partition: p.1, offset: p.2, max_bytes: p.3 }).collect() });
        round_trip(&FetchResponse { partitions: parts.into_iter().map(|p| FetchPartitionResponse { topic: p.0, partition: p.1, error_code: p.4, high_watermark: p.2, log_start_offset: p.5, records: p.6 }).collect() });
    }

    #[test]
    fn list_offsets(parts in proptest::collection::vec((arb_string(), any::<u32>(), arb_spec(), arb_code(), any::<u64>(), any::<i64>()), 0..6)) {
        round_trip(&ListOffsetsRequest { partitions: parts.iter().map(|p| ListOffsetsPartition { topic: p.0.clone(), partition: p.1, spec: p.2 }).collect() });
        round_trip(&ListOffsetsResponse { partitions: parts.into_iter().map(|p| ListOffsetsPartitionResponse { topic: p.0, partition: p.1, error_code: p.3, offset: p.4, timestamp: p.5 }).collect() });
    }

    #[test]
    fn group_messages(group in arb_string(), member in arb_string(), epoch in any::<u32>(), n in any::<u32>(), offset in any::<u64>(),
                      topics in proptest::collection::vec(arb_string(), 0..4), parts in proptest::collection::vec(any::<u32>(), 0..8),
                      code in arb_code(), value in any::<i64>(), dry_run in any::<bool>(), spec in 0u8..5) {
        let tps = vec![TopicPartitions { topic: group.clone(), partitions: parts.clone() }];
        round_trip(&GroupHeartbeatRequest { group: group.clone(), member_id: member.clone(), member_epoch: epoch, client_host: member.clone(), session_timeout_ms: n, topics: topics.clone(), owned: tps.clone() });
        round_trip(&GroupHeartbeatResponse { member_id: member.clone(), member_epoch: epoch, heartbeat_interval_ms: n, assignment: tps.clone() });
        round_trip(&OffsetCommitRequest { group: group.clone(), member_id: member.clone(), member_epoch: epoch, offsets: vec![CommitOffset { topic: group.clone(), partition: n, offset, metadata: member.clone() }] });
        round_trip(&OffsetCommitResponse { results: vec![PartitionResult { topic: group.clone(), partition: n, error_code: code }] });
        round_trip(&OffsetFetchRequest { group: group.clone(), partitions: vec![TopicPartition { topic: member.clone(), partition: n }] });
        round_trip(&OffsetFetchResponse { offsets: vec![FetchedOffset { topic: group.clone(), partition: n, offset, metadata: member.clone(), error_code: code }] });
        round_trip(&ListGroupsRequest);
        round_trip(&ListGroupsResponse { groups: vec![GroupListing { group: group.clone(), state: member.clone(), members: n }] });
        round_trip(&DescribeGroupRequest { group: group.clone() });
        round_trip(&DescribeGroupResponse { group: group.clone(), state: member.clone(), epoch, members: vec![MemberDescription { member_id: member.clone(), client_id: group.clone(), host: member.clone(), assignment: tps }], offsets: vec![PartitionLag { topic: group.clone(), partition: n, committed: offset, log_end_offset: offset, lag: 0 }] });
        let spec = match spec { 0 => ResetSpec::Earliest, 1 => ResetSpec::Latest, 2 => ResetSpec::Offset(value as u64), 3 => ResetSpec::Timestamp(value), _ => ResetSpec::ShiftBy(value) };
        round_trip(&ResetOffsetsRequest { group: group.clone(), topic: member.clone(), partitions: parts, spec, dry_run });
        round_trip(&ResetOffsetsResponse { offsets: vec![OffsetChange { topic: group.clone(), partition: n, previous: offset, new: offset }] });
        round_trip(&DeleteGroupRequest { group: group.clone() });
        round_trip(&DeleteGroupResponse);
        round_trip(&StatusRequest);
        round_trip(&StatusResponse { version: member.clone(), uptime_ms: offset, data_dir: group.clone(), fsync: member, topics: n, partitions: epoch, total_bytes: offset, connections: n, groups: vec![GroupStatus { group: group.clone(), members: n, lag: offset }], failed_topics: vec![FailedTopic { topic: group.clone(), error: group }], default_partitions: n });
    }

    /// Every decoder, fed arbitrary bytes, returns (an error or a value)
    /// without panicking or allocating past what the input can hold.
    #[test]
    fn decoders_never_panic(api_key in 0u16..20, api_version in 0u16..2, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let body = Bytes::from(body);
        let header = RequestHeader { api_key, api_version, correlation_id: 1, client_id: String::new() };
        let _ = RequestBody::decode(&header, body.clone());
        let _ = RequestHeader::decode_all(body.clone());
        let _ = ResponseHeader::decode_all(body.clone());
        let _ = ErrorBody::decode_all(body.clone());
        let _ = ApiVersionsResponse::decode_all(body.clone());
        let _ = MetadataResponse::decode_all(body.clone());
        let _ = ProduceResponse::decode_all(body.clone());
        let _ = FetchResponse::decode_all(body.clone());
        let _ = ListOffsetsResponse::decode_all(body.clone());
        let _ = GroupHeartbeatResponse::decode_all(body.clone());
        let _ = OffsetCommitResponse::decode_all(body.clone());
        let _ = OffsetFetchResponse::decode_all(body.clone());
        let _ = ListGroupsResponse::decode_all(body.clone());
        let _ = DescribeGroupResponse::decode_all(body.clone());
        let _ = ResetOffsetsResponse::decode_all(body.clone());
        let _ = StatusResponse::decode_all(body);
    }
}

#[test]
fn request_dispatch_distinguishes_unsupported_from_malformed() {
    let header = |api_key, api_version| RequestHeader {
        api_key,
        api_version,
        correlation_id: 9,
        client_id: "t".into(),
    };
    let err = RequestBody::decode(&header(999, 0), Bytes::new()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
    let err = RequestBody::decode(&header(ApiKey::Produce as u16, 7), Bytes::new()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
    let err = RequestBody::decode(&header(ApiKey::Produce as u16, 0), Bytes::from_static(&[9])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    let ok = RequestBody::decode(&header(ApiKey::ApiVersions as u16, 0), Bytes::new()).unwrap();
    assert_eq!(ok.api_key(), ApiKey::ApiVersions);
    assert_eq!(supported_apis().len(), ApiKey::ALL.len());
}

#[test]
fn maximum_size_fields_round_trip() {
    let big = Bytes::from(vec![7u8; crate::frame::DEFAULT_MAX_FRAME_BYTES - 64]);
    round_trip(&ProduceRequest {
        acks: Acks::Durable,
        timeout_ms: u32::MAX,
        topic: "t".repeat(249),
        partition: u32::MAX,
        batch: big.clone(),
    });
    round_trip(&FetchResponse {
        partitions: vec![FetchPartitionResponse {
            topic: "t".into(),
            partition: 0,
            error_code: ErrorCode::None,
            high_watermark: u64::MAX,
            log_start_offset: 0,
            records: big,
        }],
    });
    round_trip(&ErrorBody { message: "m".repeat(usize::from(u16::MAX)) });
}

/// One sample of each message, as drawn in docs/format.md.
fn samples() -> Vec<(&'static str, Bytes)> {
    let mut batch = BatchBuilder::new();
    batch.append(1_000, Some(b"k"), Some(b"v"), &[]);
    let batch = batch.build();
    let header = RequestHeader {
        api_key: ApiKey::Produce as u16,
        api_version: 0,
        correlation_id: 7,
        client_id: "cli".into(),
    };
    vec![
        ("request_header", header.to_bytes()),
        (
            "response_header",
            ResponseHeader { correlation_id: 7, error_code: ErrorCode::UnknownTopic }.to_bytes(),
        ),
        ("error_body", ErrorBody { message: "no".into() }.to_bytes()),
        (
            "api_versions_response",
            ApiVersionsResponse {
                apis: vec![ApiVersionRange { api_key: 5, min_version: 0, max_version: 0 }],
            }
            .to_bytes(),
        ),
        ("metadata_request", MetadataRequest { topics: vec!["t".into()] }.to_bytes()),
        (
            "metadata_response",
            MetadataResponse {
                node_id: 0,
                brokers: vec![BrokerMetadata { id: 0, addr: "127.0.0.1:7070".into() }],
                topics: vec![TopicMetadata {
                    error_code: ErrorCode::None,
                    name: "t".into(),
                    configs: vec![ConfigEntry::new("fsync", "always")],
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        error_code: ErrorCode::None,
                        log_start_offset: 0,
                        log_end_offset: 2,
                        high_watermark: 2,
                        size_bytes: 150,
                        segment_count: 1,
                        leader: 0,
                        leader_epoch: 0,
                        replicas: vec![0],
                        isr: vec![0],
                    }],
                }],
            }
            .to_bytes(),
        ),
        (
            "create_topic_request",
            CreateTopicRequest {
                name: "t".into(),
                partitions: 3,
                configs: vec![ConfigEntry::new("retention_ms", "60000")],
            }
            .to_bytes(),
        ),
        ("delete_topic_request", DeleteTopicRequest { name: "t".into() }.to_bytes()),
        ("add_partitions_request", AddPartitionsRequest { name: "t".into(), count: 6 }.to_bytes()),
        ("add_partitions_response", AddPartitionsResponse { old_count: 3, new_count: 6 }.to_bytes()),
        ("add_node_request", AddNodeRequest { node_id: 4, peer_addr: "h:4".into() }.to_bytes()),
        (
            "cluster_status_response",
            ClusterStatusResponse {
                node_id: 2,
                clustered: true,
                controller_leader: 1,
                controller_term: 3,
                nodes: vec![ClusterNode {
                    id: 1,
                    client_addr: "h:1".into(),
                    kafka_addr: "h:2".into(),
                    peer_addr: "h:3".into(),
                    live: true,
                    lease_until_ms: 7,
                    voter: true,
                }],
                topics: 1,
                partitions: 3,
                under_replicated: vec![StatusPartition { topic: "t".into(), partition: 2 }],
                offline: vec![],
            }
            .to_bytes(),
        ),
        (
            "alter_topic_request",
            AlterTopicRequest { name: "t".into(), configs: vec![ConfigEntry::new("fsync", "never")] }
                .to_bytes(),
        ),
        (
            "produce_request",
            ProduceRequest {
                acks: Acks::Durable,
                timeout_ms: 30_000,
                topic: "t".into(),
                partition: 1,
                batch: batch.clone(),
            }
            .to_bytes(),
        ),
        (
            "produce_response",
            ProduceResponse { base_offset: 42, log_append_time: -1, log_start_offset: 0 }.to_bytes(),
        ),
        (
            "fetch_request",
            FetchRequest {
                max_wait_ms: 500,
                min_bytes: 1,
                max_bytes: 1 << 20,
                partitions: vec![FetchPartition {
                    topic: "t".into(),
                    partition: 1,
                    offset: 42,
                    max_bytes: 1 << 20,
                }],
            }
            .to_bytes(),
        ),
        (
            "fetch_response",
            FetchResponse {
                partitions: vec![FetchPartitionResponse {
                    topic: "t".into(),
                    partition: 1,
                    error_code: ErrorCode::None,
                    high_watermark: 43,
                    log_start_offset: 0,
                    records: Bytes::from_static(b"<batches>"),
                }],
            }
            .to_bytes(),
        ),
        (
            "list_offsets_request",
            ListOffsetsRequest {
                partitions: vec![ListOffsetsPartition {
                    topic: "t".into(),
                    partition: 0,
                    spec: OffsetSpec::Timestamp(1_000),
                }],
            }
            .to_bytes(),
        ),
        (
            "list_offsets_response",
            ListOffsetsResponse {
                partitions: vec![ListOffsetsPartitionResponse {
                    topic: "t".into(),
                    partition: 0,
                    error_code: ErrorCode::None,
                    offset: 42,
                    timestamp: 1_000,
                }],
            }
            .to_bytes(),
        ),
        (
            "group_heartbeat_request",
            GroupHeartbeatRequest {
                group: "g".into(),
                member_id: String::new(),
                member_epoch: 0,
                client_host: "h".into(),
                session_timeout_ms: 10_000,
                topics: vec!["t".into()],
                owned: vec![],
            }
            .to_bytes(),
        ),
        (
            "group_heartbeat_response",
            GroupHeartbeatResponse {
                member_id: "m".into(),
                member_epoch: 1,
                heartbeat_interval_ms: 1000,
                assignment: vec![TopicPartitions { topic: "t".into(), partitions: vec![0, 1] }],
            }
            .to_bytes(),
        ),
        (
            "offset_commit_request",
            OffsetCommitRequest {
                group: "g".into(),
                member_id: "m".into(),
                member_epoch: 1,
                offsets: vec![CommitOffset {
                    topic: "t".into(),
                    partition: 0,
                    offset: 42,
                    metadata: String::new(),
                }],
            }
            .to_bytes(),
        ),
        (
            "offset_fetch_response",
            OffsetFetchResponse {
                offsets: vec![FetchedOffset {
                    topic: "t".into(),
                    partition: 0,
                    offset: 42,
                    metadata: String::new(),
                    error_code: ErrorCode::None,
                }],
            }
            .to_bytes(),
        ),
        (
            "describe_group_response",
            DescribeGroupResponse {
                group: "g".into(),
                state: "Stable".into(),
                epoch: 1,
                members: vec![],
                offsets: vec![PartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    committed: 40,
                    log_end_offset: 42,
                    lag: 2,
                }],
            }
            .to_bytes(),
        ),
        (
            "reset_offsets_request",
            ResetOffsetsRequest {
                group: "g".into(),
                topic: "t".into(),
                partitions: vec![],
                spec: ResetSpec::ShiftBy(-5),
                dry_run: true,
            }
            .to_bytes(),
        ),
        ("record_batch", batch),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// docs/format.md carries, after each `<!-- sample: NAME -->` marker, a text
/// block with the hex of the sample above. If the format changes, this
/// fails until the document is updated. `SLUICE_BLESS=1` prints the blocks.
#[test]
fn docs_format_samples_match_the_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format.md")).unwrap();
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut missing = Vec::new();
    for (name, bytes) in samples() {
        let want = hex(&bytes);
        if bless {
            println!("<!-- sample: {name} -->\n```text\n{want}\n```\n");
            continue;
        }
        let marker = format!("<!-- sample: {name} -->");
        let Some(at) = doc.find(&marker) else {
            missing.push(name);
            continue;
        };
        let block = doc[at + marker.len()..].split("```").nth(1).unwrap_or_default();
        let got = block.trim_start_matches("text").trim();
        assert_eq!(got, want, "docs/format.md sample `{name}` does not match the code");
    }
    assert!(missing.is_empty(), "docs/format.md lacks samples for {missing:?}");
    // Every error code is in the document's table with its value.
    for code in ErrorCode::ALL {
        let row = format!("| {} | {:?} |", code.as_u16(), code);
        assert!(bless || doc.contains(&row), "docs/format.md lacks the row `{row}`");
    }
}
