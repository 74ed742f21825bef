//! The Kafka listener at the wire level, with requests encoded by the
//! `kafka-protocol` crate: ApiVersions (and its downgrade answer), produce
//! `acks` and response order, idempotent duplicates and sequence errors,
//! fetch long polls and empty record sets, ListOffsets, and one
//! connection's long poll not holding back another's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_wire;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceResponse,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_wire::{fetch, name, produce, KafkaConn};
use sluice_broker::storage::FsyncPolicy;
use sluice_protocol::batch::BatchBuilder;
use sluice_tests::TestBroker;

async fn broker() -> (TestBroker, std::net::SocketAddr) {
    let broker = TestBroker::start(|c| c.auto_create_topics = true).await;
    let kafka = broker.kafka.expect("the Kafka listener is on");
    (broker, kafka)
}

/// A batch of `n` records; with `producer`, an idempotent one.
fn batch(n: usize, producer: Option<(i64, i16, i32)>) -> Bytes {
    let mut b = BatchBuilder::new();
    if let Some((id, epoch, seq)) = producer {
        b = b.producer(id, epoch, seq);
    }
    for i in 0..n {
        b.append(1_700_000_000_000 + i as i64, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
    }
    b.build()
}

fn part(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_lists_what_is_served_and_answers_newer_versions_at_v0() {
    let (_broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
    let fetch = r.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
    assert!(fetch.min_version <= 4 && fetch.max_version >= 12);
    assert!(r.api_keys.iter().all(|k| k.api_key != ApiKey::EndTxn as i16), "no transactions");
    // A version from the future: header v2, body as v3; the answer is v0.
    let mut frame = kafka_wire::frame(ApiKey::ApiVersions, 3, 77, &ApiVersionsRequest::default()).to_vec();
    frame[6..8].copy_from_slice(&99i16.to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut c.stream, &frame).await.unwrap();
    let (id, r): (i32, ApiVersionsResponse) = c.read(ApiKey::ApiVersions, 0).await;
    assert_eq!((id, r.error_code), (77, 35), "UNSUPPORTED_VERSION at v0, so the client downgrades");
    assert!(!r.api_keys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_answers_by_acks_in_request_order() {
    let (broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    let none = c.send(ApiKey::Produce, 9, &produce("acks", 0, batch(2, None))).await;
    let leader = c.send(ApiKey::Produce, 9, &produce("acks", 1, batch(3, None))).await;
    let versions = c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    let all = c.send(ApiKey::Produce, 3, &produce("acks", -1, batch(1, None))).await;
    let (id, r): (i32, ProduceResponse) = c.read(ApiKey::Produce, 9).await;
    assert!(id == leader && id != none, "acks=0 gets no response");
    assert_eq!(part(&r), (0, 2));
    let (id, _): (i32, ApiVersionsResponse) = c.read(ApiKey::ApiVersions, 3).await;
    assert_eq!(id, versions);
    let (id, r): (i32, ProduceResponse) = c.read(ApiKey::Produce, 3).await;
    assert_eq!((id, part(&r)), (all, (0, 5)));
    let bad = c
        .call::<_, ProduceResponse>(ApiKey::Produce, 9, &produce("acks", 1, Bytes::from_static(b"junk")))
        .await;
    assert_eq!(part(&bad).0, 2, "CORRUPT_MESSAGE");
    let mut tx = produce("acks", 1, batch(1, None));
    tx.transactional_id = Some(StrBytes::from_static_str("tx").into());
    let refused: ProduceResponse = c.call(ApiKey::Produce, 9, &tx).await;
    assert_eq!(part(&refused).0, 53, "transactions are not served");
    let admin = broker.server().admin_addr().unwrap();
    let (_, text) = sluice_tests::http_get(admin, "/metrics");
    assert!(text.contains(r#"sluice_requests_total{api="kafka_Produce"} 5"#), "{text}");
    assert!(text.contains(r#"sluice_requests_total{api="kafka_ApiVersions"} 1"#));
}

/// `acks=-1` is answered only once the batch is on stable storage: with
/// a 300 ms flush interval the answer waits for the flush, so the log's
/// durable offset covers the batch when it arrives (answering after the
/// append alone would find it at 0), while `acks=1` is answered before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_answered_after_the_flush_that_covers_the_batch() {
    let broker = TestBroker::start(|c| {
        c.auto_create_topics = true;
        c.topic_defaults.fsync = FsyncPolicy::Interval(Duration::from_millis(300));
    })
    .await;
    let mut c = KafkaConn::connect(broker.kafka.expect("the Kafka listener is on")).await;
    let durable = || broker.server().broker().partition("durable", 0).unwrap().log().durable_offset();
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce("durable", 1, batch(2, None))).await;
    assert_eq!(part(&r), (0, 0));
    assert_eq!(durable(), 0, "acks=1 is answered after the append, before the timed flush");
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce("durable", -1, batch(3, None))).await;
    assert_eq!(part(&r), (0, 2));
    assert!(durable() >= 5, "acks=-1 answered before its batch was synced: durable offset {}", durable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_get_their_first_offset_and_sequence_errors_their_codes() {
    let (_broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    let mut fresh = InitProducerIdRequest::default();
    fresh.transactional_id = None;
    let init: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &fresh).await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let again: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &fresh).await;
    assert_ne!(again.producer_id.0, pid, "ids are not reused");
    let first: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce("idem", -1, batch(3, Some((pid, epoch, 0))))).await;
    assert_eq!(part(&first), (0, 0));
    let retry: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce("idem", -1, batch(3, Some((pid, epoch, 0))))).await;
    assert_eq!(part(&retry), (0, 0), "a duplicate is answered with its original offset");
    let gap: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce("idem", -1, batch(1, Some((pid, epoch, 7))))).await;
    assert_eq!(part(&gap).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    let mut bump = fresh.clone();
    bump.producer_id = ProducerId(pid);
    bump.producer_epoch = epoch;
    let bumped: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &bump).await;
    assert_eq!((bumped.producer_id.0, bumped.producer_epoch), (pid, epoch + 1));
    let next: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce("idem", -1, batch(1, Some((pid, epoch + 1, 0))))).await;
    assert_eq!(part(&next), (0, 3));
    let stale: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce("idem", -1, batch(1, Some((pid, epoch, 3))))).await;
    assert_eq!(part(&stale).0, 47, "INVALID_PRODUCER_EPOCH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_polls_serves_empty_not_null_and_refuses_bad_offsets() {
    let (_broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    let _: MetadataResponse = c
        .call(ApiKey::Metadata, 12, &{
            let mut m = MetadataRequest::default();
            let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
            t.name = Some(name("lp"));
            m.topics = Some(vec![t]);
            m
        })
        .await;
    for v in [4, 11, 12] {
        let r: FetchResponse = c.call(ApiKey::Fetch, v, &fetch("lp", 0, 0)).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(
            p.records.as_deref(),
            Some(&b""[..]),
            "v{v}: an empty record set is empty bytes, not null"
        );
    }
    let started = Instant::now();
    let id = c.send(ApiKey::Fetch, 12, &fetch("lp", 0, 20_000)).await;
    let mut other = KafkaConn::connect(addr).await;
    let _: ProduceResponse = other.call(ApiKey::Produce, 9, &produce("lp", -1, batch(4, None))).await;
    let (got, r): (i32, FetchResponse) = c.read(ApiKey::Fetch, 12).await;
    assert_eq!(got, id);
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the produce, not the timeout");
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark, p.preferred_read_replica.0), (0, 4, -1));
    assert!(p.records.as_ref().unwrap().len() > 61);
    let out: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch("lp", 99, 0)).await;
    assert_eq!(out.responses[0].partitions[0].error_code, 1, "OFFSET_OUT_OF_RANGE");
    let unknown: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch("nope", 0, 0)).await;
    assert_eq!(unknown.responses[0].partitions[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_time() {
    let (_broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    for _ in 0..3 {
        let _: ProduceResponse = c.call(ApiKey::Produce, 9, &produce("lo", -1, batch(2, None))).await;
    }
    let ask = |timestamp: i64| {
        let mut p = ListOffsetsPartition::default();
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = name("lo");
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.topics = vec![t];
        r
    };
    for (v, timestamp, want) in [(1, -2, 0), (6, -1, 6), (4, 1_700_000_000_001, 1), (6, i64::MAX / 2, 6)] {
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &ask(timestamp)).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, want), "v{v} timestamp {timestamp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_holds_back_only_its_own_connection() {
    let (_broker, addr) = broker().await;
    let mut a = KafkaConn::connect(addr).await;
    let _: ProduceResponse = a.call(ApiKey::Produce, 9, &produce("hold", 1, batch(1, None))).await;
    let started = Instant::now();
    let polling = a.send(ApiKey::Fetch, 12, &fetch("hold", 1, 1500)).await;
    let after = a.send(ApiKey::Metadata, 12, &MetadataRequest::default()).await;
    let mut b = KafkaConn::connect(addr).await;
    let _: MetadataResponse = b.call(ApiKey::Metadata, 12, &MetadataRequest::default()).await;
    assert!(started.elapsed() < Duration::from_millis(1400), "another connection is not held back");
    let (first, _): (i32, FetchResponse) = a.read(ApiKey::Fetch, 12).await;
    let (second, _): (i32, MetadataResponse) = a.read(ApiKey::Metadata, 12).await;
    assert_eq!((first, second), (polling, after), "one connection's responses stay in request order");
    assert!(started.elapsed() >= Duration::from_millis(1400), "the fetch waited out its max_wait_ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_kafka_listen_turns_the_listener_off() {
    let broker = TestBroker::start(|c| c.kafka_listen = String::new()).await;
    assert!(broker.kafka.is_none());
    assert!(broker.server().kafka_addr().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_long_poll_and_closes_kafka_connections() {
    let (mut broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    let _: ProduceResponse = c.call(ApiKey::Produce, 9, &produce("bye", -1, batch(1, None))).await;
    let id = c.send(ApiKey::Fetch, 12, &fetch("bye", 1, 30_000)).await;
    // A produce pipelined behind the fetch: once it is appended, the fetch
    // was read and is waiting (its response holds the produce's back).
    let _marker = c.send(ApiKey::Produce, 9, &produce("marker", 1, batch(1, None))).await;
    let idle = KafkaConn::connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker
        .server()
        .broker()
        .topics
        .get("marker")
        .is_none_or(|t| t.partitions[0].log().log_end_offset() == 0)
    {
        assert!(Instant::now() < deadline, "the pipelined produce was never appended");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    broker.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown does not wait out the long poll");
    let (got, r): (i32, FetchResponse) = c.read(ApiKey::Fetch, 12).await;
    assert_eq!((got, r.responses[0].partitions[0].error_code), (id, 0), "the long poll was answered");
    let (_, marker): (i32, ProduceResponse) = c.read(ApiKey::Produce, 9).await;
    assert_eq!(part(&marker), (0, 0), "then the produce behind it");
    assert!(c.read_raw(ApiKey::Fetch, 12).await.is_none(), "then the connection closed");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_of_the_data_apis_round_trips() {
    let (broker, addr) = broker().await;
    let mut c = KafkaConn::connect(addr).await;
    let versions: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    let range = |api: ApiKey| {
        let v = versions.api_keys.iter().find(|k| k.api_key == api as i16).unwrap();
        v.min_version..=v.max_version
    };
    let mut next = 0;
    for v in range(ApiKey::Produce) {
        let r: ProduceResponse = c.call(ApiKey::Produce, v, &produce("every", -1, batch(1, None))).await;
        assert_eq!(part(&r), (0, next), "Produce v{v}");
        next += 1;
    }
    let id = broker.server().broker().topics.get("every").unwrap().id();
    for v in range(ApiKey::Fetch) {
        let mut req = fetch("every", 1, 0);
        req.topics[0].topic_id = id;
        if v >= 13 {
            req.topics[0].topic = TopicName::default();
        }
        let r: FetchResponse = c.call(ApiKey::Fetch, v, &req).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, next), "Fetch v{v}");
        assert!(!p.records.as_ref().unwrap().is_empty(), "Fetch v{v}");
        if v >= 13 {
            assert_eq!(r.responses[0].topic_id, id, "Fetch v{v} answers by topic id");
        }
    }
    for v in range(ApiKey::Metadata) {
        let mut all = MetadataRequest::default();
        all.topics = None; // every topic
        let r: MetadataResponse = c.call(ApiKey::Metadata, v, &all).await;
        let t = r.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "every")).unwrap();
        assert_eq!((t.error_code, t.partitions.len()), (0, 1), "Metadata v{v}");
        if v >= 10 {
            assert_eq!(t.topic_id, id, "Metadata v{v} has the real topic id");
        }
    }
}
