//! A running producer picks up partitions added to its topic through its
//! periodic metadata refresh (`metadata_max_age`), with no error to
//! trigger it: keyless records spread onto the new partitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_producer::{Producer, Record};
use sluice_protocol::api::AddPartitionsRequest;
use sluice_tests::{create_topic, read_partition, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_producer_sends_to_partitions_added_to_its_topic() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "grow", 1, &[]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .linger(Duration::from_millis(1))
        .batch_bytes(1024usize)
        .metadata_max_age(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    // Before: one partition, every record on it.
    for i in 0..20 {
        let meta = producer.send_and_wait(Record::new("grow", format!("before-{i}"))).await.unwrap();
        assert_eq!(meta.partition, 0);
    }
    let grown = admin.call(&AddPartitionsRequest { name: "grow".into(), count: 3 }).await.unwrap();
    assert_eq!((grown.old_count, grown.new_count), (1, 3));
    // After: keep sending (bounded in time and count) until records were
    // acknowledged on both new partitions.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = BTreeSet::new();
    let mut sent = 0u32;
    while seen.len() < 3 && Instant::now() < deadline && sent < 100_000 {
        let records = (0..50).map(|i| Record::new("grow", format!("after-{}", sent + i)));
        let results = producer.send_batch(records).await.unwrap().await;
        for r in results {
            seen.insert(r.unwrap().partition);
        }
        sent += 50;
    }
    assert_eq!(seen, BTreeSet::from([0, 1, 2]), "records reach the added partitions");
    producer.close().await.unwrap();
    for partition in 1..3 {
        let batches = read_partition(&admin, "grow", partition, 0).await;
        assert!(!batches.is_empty(), "partition {partition} holds records");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_refresh_due_the_producer_keeps_the_partitions_it_knows() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "fixed", 1, &[]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .linger(Duration::from_millis(1))
        .batch_bytes(1024usize)
        .metadata_max_age(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    producer.send_and_wait(Record::new("fixed", "first")).await.unwrap();
    admin.call(&AddPartitionsRequest { name: "fixed".into(), count: 3 }).await.unwrap();
    let records = (0..2000).map(|i| Record::new("fixed", format!("v{i}")));
    let results = producer.send_batch(records).await.unwrap().await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().partition == 0), "no refresh yet: partition 0 only");
    producer.close().await.unwrap();
}
