//! End-to-end tests against an in-process broker on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_protocol::api::{
    Acks, AlterTopicRequest, ApiVersionsRequest, ConfigEntry, DeleteTopicRequest, ListOffsetsPartition,
    ListOffsetsRequest, MetadataRequest, OffsetSpec,
};
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, create_topic, fetch_once, produce, read_partition, TestBroker};

#[tokio::test]
async fn topics_create_list_describe_alter_delete() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    let versions = c.call(&ApiVersionsRequest).await.unwrap();
    assert!(versions.apis.len() >= 8);
    create_topic(&c, "orders", 3, &[("retention_ms", "60000")]).await.unwrap();
    create_topic(&c, "audit.log-v2", 1, &[]).await.unwrap();
    let all = c.call(&MetadataRequest::default()).await.unwrap();
    let names: Vec<_> = all.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["audit.log-v2", "orders"]);
    let orders = &c.call(&MetadataRequest { topics: vec!["orders".into()] }).await.unwrap().topics[0];
    assert_eq!(orders.partitions.len(), 3);
    assert!(orders.configs.contains(&ConfigEntry::new("retention_ms", "60000")));
    assert!(orders.partitions.iter().all(|p| p.segment_count == 1 && p.log_end_offset == 0));

    c.call(&AlterTopicRequest {
        name: "orders".into(),
        configs: vec![ConfigEntry::new("retention_bytes", "1000000")],
    })
    .await
    .unwrap();
    let orders = &c.call(&MetadataRequest { topics: vec!["orders".into()] }).await.unwrap().topics[0];
    assert!(orders.configs.contains(&ConfigEntry::new("retention_bytes", "1000000")));

    c.call(&DeleteTopicRequest { name: "orders".into() }).await.unwrap();
    let unknown = &c.call(&MetadataRequest { topics: vec!["orders".into()] }).await.unwrap().topics[0];
    assert_eq!(unknown.error_code, ErrorCode::UnknownTopic);
    assert!(!broker.config.data_dir.join("topics/orders").exists());
}

#[tokio::test]
async fn topic_name_and_config_validation() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    let code = |r: Result<(), sluice_protocol::client::ClientError>| r.unwrap_err().code().unwrap();
    for bad in ["", ".", "..", "has space", "slash/y", &"x".repeat(250)] {
        assert_eq!(code(create_topic(&c, bad, 1, &[]).await), ErrorCode::InvalidTopicName, "{bad:?}");
    }
    assert_eq!(code(create_topic(&c, "t", 0, &[]).await), ErrorCode::InvalidPartitions);
    assert_eq!(code(create_topic(&c, "t", 1, &[("fsync", "sometimes")]).await), ErrorCode::InvalidConfig);
    assert_eq!(code(create_topic(&c, "t", 1, &[("no_such_key", "1")]).await), ErrorCode::InvalidConfig);
    create_topic(&c, "t", 1, &[]).await.unwrap();
    assert_eq!(code(create_topic(&c, "t", 1, &[]).await), ErrorCode::TopicAlreadyExists);
    let err = c.call(&DeleteTopicRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    // The message names the cause.
    let err = create_topic(&c, "a b", 1, &[]).await.unwrap_err();
    assert!(err.to_string().contains("a b"), "{err}");
}

#[tokio::test]
async fn produce_and_fetch_across_segment_rolls() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 2, &[("segment_bytes", "16384")]).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..100u64 {
        let b = batch(5, 100, i);
        let resp = produce(&c, "t", 1, Acks::Durable, b.clone()).await.unwrap();
        assert_eq!(resp.base_offset, i * 5);
        sent.push(b);
    }
    let meta = &c.call(&MetadataRequest { topics: vec!["t".into()] }).await.unwrap().topics[0];
    assert!(meta.partitions[1].segment_count >= 3, "{:?}", meta.partitions[1]);
    assert_eq!(meta.partitions[1].high_watermark, 500);
    assert_eq!(meta.partitions[0].log_end_offset, 0);
    let got = read_partition(&c, "t", 1, 0).await;
    assert_eq!(got.len(), 100);
    for (g, s) in got.iter().zip(&sent) {
        // Byte for byte after the stamped base_offset and leader epoch.
        assert_eq!(&g.as_bytes()[16..], &s[16..], "stored byte for byte");
        assert_eq!(g.header().partition_leader_epoch, 0, "a single node stamps epoch 0");
    }
    // A fetch from the middle of a batch returns the batch holding it.
    let mid = fetch_once(&c, "t", 1, 257, 0).await.unwrap();
    let first = sluice_protocol::batch::split_batches(mid.records).next().unwrap().unwrap();
    assert_eq!(first.header().base_offset, 255);
}

#[tokio::test]
async fn long_poll_returns_when_data_arrives_and_not_before_max_wait() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();

    let started = Instant::now();
    let empty = fetch_once(&c, "t", 0, 0, 300).await.unwrap();
    let waited = started.elapsed();
    assert!(empty.records.is_empty());
    assert!(waited >= Duration::from_millis(290), "returned after {waited:?}, before max_wait");

    let poller = {
        let c = broker.connect().await;
        tokio::spawn(async move {
            let started = Instant::now();
            let p = fetch_once(&c, "t", 0, 0, 20_000).await.unwrap();
            (p, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await; // let the poll start waiting
    produce(&c, "t", 0, Acks::Durable, batch(1, 10, 1)).await.unwrap();
    let (p, waited) = poller.await.unwrap();
    assert!(!p.records.is_empty());
    assert!(waited < Duration::from_secs(5), "woken by the append, not the timeout: {waited:?}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_and_appended_in_order() {
    use sluice_protocol::api::{encode_request, Message, ProduceRequest, ProduceResponse, ResponseHeader};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    // 200 requests written back to back before reading any response.
    let mut wire = Vec::new();
    for id in 1..=200u32 {
        let req = ProduceRequest {
            acks: Acks::Durable,
            timeout_ms: 10_000,
            topic: "t".into(),
            partition: 0,
            batch: batch(2, 20, u64::from(id)),
        };
        let payload = encode_request(id, "raw", &req).into_bytes();
        wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        wire.extend_from_slice(&payload);
    }
    let mut sock = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    sock.write_all(&wire).await.unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let len = sock.read_u32().await.unwrap() as usize;
        let mut buf = vec![0; len];
        sock.read_exact(&mut buf).await.unwrap();
        let mut r = sluice_protocol::Reader::new(buf.into());
        let header = ResponseHeader::decode(&mut r).unwrap();
        assert!(header.error_code.is_ok());
        let resp = ProduceResponse::decode(&mut r).unwrap();
        seen.insert(header.correlation_id, resp.base_offset);
    }
    assert_eq!(seen.len(), 200, "every request answered once");
    for (id, base) in seen {
        assert_eq!(base, u64::from(id - 1) * 2, "request {id} appended in send order");
    }
}

#[tokio::test]
async fn acks_none_gets_no_response_and_acks_leader_answers_before_flush() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    c.send(&sluice_protocol::api::ProduceRequest {
        acks: Acks::None,
        timeout_ms: 1000,
        topic: "t".into(),
        partition: 0,
        batch: batch(1, 10, 0),
    })
    .await
    .unwrap();
    let resp = produce(&c, "t", 0, Acks::Leader, batch(1, 10, 1)).await.unwrap();
    assert_eq!(resp.base_offset, 1, "the acks=none batch was appended first");
    // The flusher makes leader-acked data durable (and visible) promptly.
    let p = fetch_once(&c, "t", 0, 0, 5_000).await.unwrap();
    assert!(p.high_watermark >= 1);
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_time() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    for i in 0..5 {
        produce(&c, "t", 0, Acks::Durable, batch(3, 10, i)).await.unwrap();
    }
    let ask = |spec| ListOffsetsPartition { topic: "t".into(), partition: 0, spec };
    let resp = c
        .call(&ListOffsetsRequest {
            partitions: vec![
                ask(OffsetSpec::Earliest),
                ask(OffsetSpec::Latest),
                ask(OffsetSpec::Timestamp(1_700_000_000_001)),
                ask(OffsetSpec::Timestamp(i64::MAX)),
                ListOffsetsPartition { topic: "nope".into(), partition: 0, spec: OffsetSpec::Latest },
            ],
        })
        .await
        .unwrap();
    let offsets: Vec<_> = resp.partitions.iter().map(|p| (p.error_code, p.offset, p.timestamp)).collect();
    assert_eq!(offsets[0], (ErrorCode::None, 0, -1));
    assert_eq!(offsets[1], (ErrorCode::None, 15, -1));
    assert_eq!(offsets[2], (ErrorCode::None, 1, 1_700_000_000_001));
    assert_eq!(offsets[3], (ErrorCode::None, 15, -1));
    assert_eq!(offsets[4].0, ErrorCode::UnknownTopic);
}

#[tokio::test]
async fn restart_keeps_data_and_graceful_shutdown_skips_recovery() {
    let (config, _dir) = sluice_tests::test_config();
    let mut broker = TestBroker::start_with(config.clone(), None).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 2, &[]).await.unwrap();
    for i in 0..20 {
        produce(&c, "t", (i % 2) as u32, Acks::Durable, batch(4, 50, i)).await.unwrap();
    }
    drop(c);
    broker.stop().await;
    for p in ["0", "1"] {
        assert!(
            config.data_dir.join("topics/t").join(p).join("clean-shutdown").exists(),
            "graceful shutdown leaves the marker"
        );
    }
    let (server, report) = sluice_broker::server::Server::start(config.clone()).await.unwrap();
    assert_eq!((report.partitions, report.recovered), (2, 0), "clean shutdown: recovery skipped");
    let c =
        sluice_protocol::client::Connection::connect(&server.local_addr().to_string(), "t").await.unwrap();
    assert_eq!(read_partition(&c, "t", 0, 0).await.len(), 10);
    assert_eq!(read_partition(&c, "t", 1, 0).await.len(), 10);
    assert_eq!(produce(&c, "t", 0, Acks::Durable, batch(1, 1, 99)).await.unwrap().base_offset, 40);
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test]
async fn retention_runs_in_the_background() {
    let broker = TestBroker::start(|c| c.retention_check_interval_ms = 50).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[("segment_bytes", "8192"), ("retention_bytes", "16384")]).await.unwrap();
    for i in 0..60 {
        produce(&c, "t", 0, Acks::Durable, batch(5, 100, i)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = &c.call(&MetadataRequest { topics: vec!["t".into()] }).await.unwrap().topics[0].partitions[0];
        if p.log_start_offset > 0 {
            assert_eq!(p.log_end_offset, 300);
            break;
        }
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = fetch_once(&c, "t", 0, 0, 0).await.unwrap();
    assert_eq!(p.error_code, ErrorCode::OffsetOutOfRange);
    assert!(p.log_start_offset > 0 && p.high_watermark == 300, "the valid range comes with the error");
}

#[tokio::test]
async fn a_second_broker_cannot_open_the_same_data_dir() {
    let (config, _dir) = sluice_tests::test_config();
    let mut first = TestBroker::start_with(config.clone(), None).await;
    let err = sluice_broker::server::Server::start(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("in use by another sluice process"), "{err}");
    first.stop().await;
    let (second, _) = sluice_broker::server::Server::start(config).await.unwrap();
    second.shutdown();
    second.wait().await.unwrap();
}
