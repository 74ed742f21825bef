//! The producer client against real brokers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_producer::{partition_for_key, Acks, Producer, ProducerError, Record};
use sluice_tests::{create_topic, read_partition, ProcessBroker, TestBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

async fn values_of(
    conn: &sluice_protocol::client::Connection,
    topic: &str,
    partition: u32,
) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    for b in read_partition(conn, topic, partition, 0).await {
        for r in b.records().unwrap().to_owned_records().unwrap() {
            out.push((r.offset, r.value.unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_partition_and_stable_keys_under_pipelining() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 4, &[]).await.unwrap();
    // Small batches: many requests in flight at once.
    let producer =
        Producer::builder().bootstrap(broker.addr.to_string()).batch_bytes(2048usize).build().await.unwrap();
    let mut futures = Vec::new();
    for i in 0..5000u32 {
        let key = format!("key-{}", i % 37);
        let record = Record::new("t", format!("{i}")).key(key.clone());
        futures.push((key, producer.send(record).await.unwrap()));
    }
    let mut expected: HashMap<u32, Vec<(u64, Bytes)>> = HashMap::new();
    let mut key_partition: HashMap<String, u32> = HashMap::new();
    for (i, (key, f)) in futures.into_iter().enumerate() {
        let meta = f.await.unwrap();
        assert_eq!(meta.partition, partition_for_key(key.as_bytes(), 4), "murmur2 of the key");
        assert_eq!(
            *key_partition.entry(key).or_insert(meta.partition),
            meta.partition,
            "a key always maps to one partition"
        );
        expected.entry(meta.partition).or_default().push((meta.offset, Bytes::from(i.to_string())));
    }
    for (partition, want) in expected {
        let got = values_of(&admin, "t", partition).await;
        assert_eq!(got, want, "partition {partition}: stored in send order at the acknowledged offsets");
    }
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_close_and_per_record_errors() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "ok", 1, &[]).await.unwrap();
    create_topic(&admin, "tiny", 1, &[("max_message_bytes", "256")]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .linger(Duration::from_secs(60))
        .build()
        .await
        .unwrap();

    // Errors are per record: the oversized one fails (in `send`: the
    // topic's max_message_bytes is known from metadata), the other topic is fine.
    let big = producer.send(Record::new("tiny", vec![0u8; 1000])).await;
    assert!(matches!(big, Err(ProducerError::RecordTooLarge { max: 256, .. })), "{big:?}");
    let mut small = Vec::new();
    for i in 0..10 {
        small.push(producer.send(Record::new("ok", format!("{i}"))).await);
    }
    // Linger is a minute: only flush sends them.
    producer.flush().await.unwrap();
    for (i, f) in small.into_iter().enumerate() {
        assert_eq!(f.unwrap().await.unwrap().offset, i as u64);
    }
    assert!(matches!(producer.send(Record::new("missing", "x")).await, Err(ProducerError::UnknownTopic(_))));
    assert!(matches!(
        producer.send(Record::new("ok", "x").partition(7)).await,
        Err(ProducerError::UnknownPartition { .. })
    ));

    // A failed batch does not poison its partition: later records go through.
    let after = producer.send(Record::new("tiny", "fits")).await.unwrap();
    producer.flush().await.unwrap();
    assert_eq!(after.await.unwrap().offset, 0);

    // close() flushes what is buffered, then refuses new records.
    let last = producer.send(Record::new("ok", "last")).await.unwrap();
    producer.close().await.unwrap();
    assert_eq!(last.await.unwrap().offset, 10);
    assert!(matches!(producer.send(Record::new("ok", "x")).await, Err(ProducerError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_makes_send_wait_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let admin = broker.connect().await;
    create_topic(&admin, "t", 1, &[]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .buffer_memory(64 * 1024usize)
        .batch_bytes(8 * 1024usize)
        .linger(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    producer.send_and_wait(Record::new("t", "warm-up")).await.unwrap();
    broker.signal("STOP");
    let value = Bytes::from(vec![7u8; 1000]);
    let mut accepted = Vec::new();
    let blocked = loop {
        let send = producer.send(Record::new("t", value.clone()));
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(f) => accepted.push(f.unwrap()),
            Err(_) => break true,
        }
        assert!(accepted.len() < 1000, "send never blocked: memory is not bounded");
    };
    assert!(blocked);
    assert!(accepted.len() <= 64, "at most buffer_memory of records accepted: {}", accepted.len());
    broker.signal("CONT");
    for f in accepted {
        f.await.unwrap();
    }
    producer.send_and_wait(Record::new("t", "after")).await.unwrap();
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_across_a_broker_restart_neither_lose_nor_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let addr = broker.addr.to_string();
    let admin = broker.connect().await;
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    drop(admin);
    let producer = Producer::builder()
        .bootstrap(addr.clone())
        .batch_bytes(4096usize)
        .retry_backoff(Duration::from_millis(50))
        .delivery_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let total = 20_000u32;
    let mut futures = Vec::new();
    for i in 0..total {
        futures.push(
            producer.send(Record::new("t", format!("{i:08}")).key(format!("{}", i % 10))).await.unwrap(),
        );
        if i == total / 2 {
            // Crash mid-stream, then come back on the same address.
            broker.kill9();
            broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--listen", &addr]);
        }
    }
    producer.flush().await.unwrap();
    for f in futures {
        f.await.expect("every record acknowledged after retries");
    }
    producer.close().await.unwrap();
    let conn = broker.connect().await;
    let mut seen: HashMap<Bytes, u32> = HashMap::new();
    for p in 0..2 {
        for (_, v) in values_of(&conn, "t", p).await {
            *seen.entry(v).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), total as usize, "no record lost");
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicates: {} (e.g. {:?})", dupes.len(), dupes.first());
}

#[tokio::test]
async fn acks_none_and_leader() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 1, &[]).await.unwrap();
    for acks in [Acks::None, Acks::Leader] {
        let producer =
            Producer::builder().bootstrap(broker.addr.to_string()).acks(acks).build().await.unwrap();
        let meta = producer.send_and_wait(Record::new("t", "x")).await.unwrap();
        if acks == Acks::None {
            assert_eq!(meta.offset, sluice_producer::UNKNOWN_OFFSET);
        }
        producer.close().await.unwrap();
    }
    // Both records arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while values_of(&admin, "t", 0).await.len() < 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_spread_over_partitions() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 3, &[]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .linger(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let mut partitions = std::collections::HashSet::new();
    for round in 0..30u32 {
        let futures =
            producer.send_batch((0..10).map(|i| Record::new("t", format!("{round}-{i}")))).await.unwrap();
        producer.flush().await.unwrap();
        for f in futures {
            partitions.insert(f.await.unwrap().partition);
        }
    }
    assert_eq!(partitions.len(), 3, "sticky partitioning moves on as batches close");
    producer.close().await.unwrap();
}
