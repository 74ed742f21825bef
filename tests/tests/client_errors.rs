//! Clients facing errors they cannot retry away: records too large for the
//! broker (the producer must fail them at once, not resend them until the
//! delivery timeout) and partitions whose fetches keep failing (the
//! consumer must back off and tell the application).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_consumer::{Consumer, ConsumerError};
use sluice_producer::{Producer, ProducerError, Record};
use sluice_protocol::api::Acks;
use sluice_protocol::batch::{BatchHeader, HEADER_LEN};
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, create_topic, produce, test_config, TestBroker};

/// Far below the producer's 120 s delivery timeout: an answer within it
/// was not a resend loop running out of time.
const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_over_the_brokers_frame_limit_fails_at_once_and_others_are_delivered() {
    let broker = TestBroker::start(|c| c.max_frame_bytes = 64 * 1024).await;
    create_topic(&broker.connect().await, "t", 3, &[]).await.unwrap();
    // The producer does not know the broker's frame limit (its own
    // max_request_bytes is the 16 MiB default).
    let producer = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    producer.send_and_wait(Record::new("t", "before").partition(0)).await.unwrap();

    let started = Instant::now();
    let oversized = producer.send(Record::new("t", vec![7u8; 200 * 1024]).partition(1)).await.unwrap();
    let mut others = Vec::new();
    for p in [0, 2, 0, 2] {
        others.push(producer.send(Record::new("t", format!("after-{p}")).partition(p)).await.unwrap());
    }
    let failed = tokio::time::timeout(PROMPTLY, oversized).await.expect("failed at once, not resent");
    match failed {
        Err(ProducerError::RecordTooLarge { size, max }) => {
            assert!(size > 200 * 1024, "{size}");
            assert_eq!(max, 64 * 1024, "the limit the broker named");
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    for f in others {
        let meta = tokio::time::timeout(PROMPTLY, f).await.unwrap().expect("records around it are delivered");
        assert_ne!(meta.partition, 1);
    }
    assert!(started.elapsed() < PROMPTLY);

    // The limit is learned: the next oversized record fails in `send`.
    let again = producer.send(Record::new("t", vec![7u8; 100 * 1024]).partition(2)).await;
    assert!(matches!(again, Err(ProducerError::RecordTooLarge { max, .. }) if max <= 64 * 1024), "{again:?}");
    producer.send_and_wait(Record::new("t", "later").partition(1)).await.unwrap();
    tokio::time::timeout(PROMPTLY, producer.close()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_known_limits_fail_in_send_and_batches_stay_under_them() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "small", 1, &[("max_message_bytes", "4096")]).await.unwrap();
    create_topic(&admin, "big", 1, &[]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .max_request_bytes(64 * 1024usize)
        .linger(Duration::from_millis(50))
        .build()
        .await
        .unwrap();

    // Over max_request_bytes (Kafka's max.request.size): refused unsent.
    let r = producer.send(Record::new("big", vec![1u8; 100 * 1024])).await;
    assert!(matches!(r, Err(ProducerError::RecordTooLarge { max, .. }) if max < 64 * 1024), "{r:?}");
    // Over the topic's max_message_bytes, learned from metadata.
    let r = producer.send(Record::new("small", vec![1u8; 8 * 1024])).await;
    assert!(matches!(r, Err(ProducerError::RecordTooLarge { max: 4096, .. })), "{r:?}");

    // Many records that fit alone: their batches close before 4 KiB (a
    // 512 KiB batch would be refused whole with BatchTooLarge).
    let mut futures = Vec::new();
    for i in 0..40u32 {
        futures.push(producer.send(Record::new("small", vec![i as u8; 1000])).await.unwrap());
    }
    for f in futures {
        let delivered = tokio::time::timeout(PROMPTLY, f).await.unwrap();
        assert!(
            delivered.is_ok() || delivered.as_ref().unwrap_err().code() != Some(ErrorCode::BatchTooLarge),
            "{delivered:?}"
        );
        delivered.unwrap();
    }
    producer.close().await.unwrap();
}

/// Fetch requests the broker has handled.
fn fetches(broker: &TestBroker) -> f64 {
    let text = broker.server().broker().metrics.render(None);
    let series = r#"sluice_requests_total{api="Fetch"}"#;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_partition_is_reported_backed_off_and_skippable_while_others_flow() {
    let (config, _dir) = test_config();
    let mut broker = TestBroker::start_with(config.clone(), None).await;
    let conn = broker.connect().await;
    create_topic(&conn, "t", 2, &[("segment_bytes", "8192")]).await.unwrap();
    for i in 0..60 {
        produce(&conn, "t", 0, Acks::Durable, batch(3, 100, i)).await.unwrap();
    }
    broker.stop().await;
    // Damage the third batch (offsets 6..=8) of t/0's first, sealed segment.
    let segment = config.data_dir.join("topics/t/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let batch_len = BatchHeader::parse(&bytes).unwrap().total_len();
    bytes[2 * batch_len + HEADER_LEN + 30] ^= 0x20;
    std::fs::write(&segment, bytes).unwrap();
    let broker = TestBroker::start_with(config.clone(), None).await;
    let conn = broker.connect().await;
    for i in 0..20 {
        produce(&conn, "t", 1, Acks::Durable, batch(1, 10, i)).await.unwrap();
    }

    let consumer = Consumer::builder()
        .bootstrap(broker.addr.to_string())
        .assign([("t", 0), ("t", 1)])
        .build()
        .await
        .unwrap();
    let mut seen: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut errors = Vec::new();
    let deadline = Instant::now() + PROMPTLY;
    while errors.is_empty() || seen.iter().filter(|(p, _)| *p == 1).count() < 20 {
        assert!(Instant::now() < deadline, "seen {} records, errors {errors:?}", seen.len());
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => seen.extend(records.iter().map(|r| (r.partition, r.offset))),
            Err(e) => errors.push(e),
        }
    }
    // The application learns which partition and offset, with the code.
    match &errors[0] {
        ConsumerError::Fetch { topic, partition: 0, offset: 6, code: ErrorCode::CorruptBatch, .. } => {
            assert_eq!(topic, "t");
        }
        other => panic!("expected a CorruptBatch fetch error for t/0 at 6, got {other:?}"),
    }
    assert_eq!(errors[0].position(), Some(("t", 0, 6)));
    assert_eq!(seen.iter().filter(|(p, _)| *p == 0).count(), 6, "t/0 up to the corrupt batch");

    // The failing partition is refetched with backoff, not in a hot loop.
    let before = fetches(&broker);
    let window = Instant::now() + Duration::from_secs(2);
    while Instant::now() < window {
        if let Err(e) = consumer.poll(Duration::from_millis(200)).await {
            assert_eq!(e.position(), Some(("t", 0, 6)), "{e}");
        }
    }
    let during = fetches(&broker) - before;
    assert!(during <= 25.0, "{during} fetches in 2 s: not backing off");

    // Skipping the corrupt batch: seek past it.
    consumer.seek("t", 0, 9);
    let deadline = Instant::now() + PROMPTLY;
    while !seen.contains(&(0, 9)) {
        assert!(Instant::now() < deadline, "t/0 did not resume after the seek");
        if let Ok(records) = consumer.poll(Duration::from_millis(200)).await {
            seen.extend(records.iter().map(|r| (r.partition, r.offset)));
        }
    }
    consumer.close().await.unwrap();
}
