//! The producer and the consumer follow partition leaders: against a fake
//! cluster (`routing_fake`: two fake nodes in front of one real broker)
//! whose leader moves mid-stream, every record is acknowledged once, in
//! order per partition, without duplicates (the lost acknowledgements are
//! deduplicated by idempotence), and the clients find the new leader by
//! themselves, starting from a bootstrap list whose first address is dead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod routing_fake;

use std::time::Duration;

use routing_fake::{dead_addr, FakeCluster};
use sluice_consumer::Consumer;
use sluice_producer::{Producer, Record};
use sluice_protocol::api::ApiKey;
use sluice_tests::{create_topic, read_partition, run_cli, TestBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

const PER_PHASE: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_follows_a_moved_leader_without_losing_reordering_or_duplicating() {
    let broker = TestBroker::start(|_| {}).await;
    create_topic(&broker.connect().await, "t", 2, &[]).await.unwrap();
    let cluster = FakeCluster::start(broker.addr, &[1, 2], 1).await;
    let producer = Producer::builder()
        .bootstrap(format!("{},{}", dead_addr().await, cluster.addr(2)))
        .linger(Duration::from_millis(1))
        .batch_bytes(4096usize)
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(50))
        .delivery_timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap();

    let mut acked = Vec::new();
    for phase in 0..2 {
        if phase == 1 {
            cluster.lose_acks(3);
            cluster.set_leader(2);
        }
        let mut futures = Vec::new();
        for i in phase * PER_PHASE..(phase + 1) * PER_PHASE {
            let record = Record::new("t", format!("{i:06}")).partition((i % 2) as u32);
            futures.push(producer.send(record).await.unwrap());
        }
        for f in futures {
            let m = tokio::time::timeout(Duration::from_secs(30), f).await.expect("acknowledged in time");
            acked.push(m.expect("every record is acknowledged"));
        }
    }
    producer.close().await.unwrap();

    for partition in 0..2u32 {
        let offsets: Vec<u64> = acked.iter().filter(|m| m.partition == partition).map(|m| m.offset).collect();
        assert_eq!(offsets, (0..PER_PHASE).collect::<Vec<_>>(), "partition {partition}: once each, in order");
        let stored = stored_values(&broker, partition).await;
        let sent: Vec<String> =
            (0..2 * PER_PHASE).filter(|i| i % 2 == u64::from(partition)).map(|i| format!("{i:06}")).collect();
        assert_eq!(stored, sent, "partition {partition}: stored once each, in send order");
    }
    assert!(cluster.lost_acks() >= 1, "a write whose ack was lost was retried (and deduplicated)");
    assert!(cluster.counts(1, ApiKey::Produce).refused >= 1, "the old leader refused");
    assert!(cluster.counts(2, ApiKey::Produce).served >= 1, "the new leader was found");
    assert!(cluster.counts(1, ApiKey::Produce).served >= 1, "the first leader took the first phase");
}

/// A batch refused by a deposed leader goes to the new one as soon as the
/// metadata names it (KIP-951), not after its retry backoff: here 3 s,
/// which a failover would otherwise add to the election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_a_new_leader_at_once_not_after_the_backoff() {
    let broker = TestBroker::start(|_| {}).await;
    create_topic(&broker.connect().await, "t", 1, &[]).await.unwrap();
    let cluster = FakeCluster::start(broker.addr, &[1, 2], 1).await;
    let producer = Producer::builder()
        .bootstrap(cluster.addr(1))
        .retry_backoff(Duration::from_secs(3))
        .retry_backoff_max(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    producer.send_and_wait(Record::new("t", "before")).await.unwrap();
    cluster.set_leader(2);
    let started = std::time::Instant::now();
    let m = producer.send_and_wait(Record::new("t", "after")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(m.offset, 1);
    assert!(cluster.counts(1, ApiKey::Produce).refused >= 1, "the old leader refused it first");
    assert!(took < Duration::from_millis(1500), "resent after {took:?}: waited out the 3 s backoff");
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_while_a_partition_is_offline_until_a_leader_appears_or_the_delivery_timeout() {
    let broker = TestBroker::start(|_| {}).await;
    create_topic(&broker.connect().await, "t", 1, &[]).await.unwrap();
    let cluster = FakeCluster::start(broker.addr, &[1, 2], 1).await;
    let producer = |timeout: u64| {
        Producer::builder()
            .bootstrap(cluster.addr(1))
            .retry_backoff(Duration::from_millis(5))
            .retry_backoff_max(Duration::from_millis(20))
            .delivery_timeout(Duration::from_millis(timeout))
            .build()
    };
    let patient = producer(20_000).await.unwrap();
    patient.send_and_wait(Record::new("t", "before")).await.unwrap();
    cluster.set_offline();
    let waiting = patient.send(Record::new("t", "during")).await.unwrap();
    // Several refused sends while offline, then a leader appears.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.counts(1, ApiKey::Produce).refused < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the offline partition was tried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.set_leader(2);
    let m = waiting.await.expect("delivered once a leader appeared");
    assert_eq!(m.offset, 1);

    cluster.set_offline();
    let impatient = producer(300).await.unwrap();
    let error = impatient.send_and_wait(Record::new("t", "never")).await.expect_err("no leader in time");
    assert!(matches!(error, sluice_producer::ProducerError::DeliveryTimeout(_)), "{error:?}");
    assert_eq!(stored_values(&broker, 0).await, ["before", "during"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_fetches_from_the_moved_leader_and_keeps_group_traffic_on_the_lowest_node() {
    let broker = TestBroker::start(|_| {}).await;
    create_topic(&broker.connect().await, "t", 1, &[]).await.unwrap();
    let direct = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    let produce = |from: u64| {
        let direct = &direct;
        async move {
            for i in from..from + PER_PHASE {
                direct.send(Record::new("t", format!("{i:06}")).partition(0)).await.unwrap();
            }
            direct.flush().await.unwrap();
        }
    };
    produce(0).await;
    let cluster = FakeCluster::start(broker.addr, &[1, 2], 2).await;
    let consumer = Consumer::builder()
        .bootstrap_servers([dead_addr().await, cluster.addr(2)])
        .group("g")
        .subscribe(["t"])
        .fetch_max_bytes(64 * 1024)
        .fetch_backoff(Duration::from_millis(5))
        .fetch_max_wait(Duration::from_millis(50))
        .build()
        .await
        .unwrap();

    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut moved, mut produced) = (false, false);
    while (values.len() as u64) < 2 * PER_PHASE {
        assert!(tokio::time::Instant::now() < deadline, "read {} records in time", values.len());
        let records = consumer.poll(Duration::from_millis(100)).await.expect("moves are not reported");
        values.extend(records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()));
        if !moved && !values.is_empty() {
            moved = true;
            cluster.set_leader(1);
        }
        // Phase two once the old leader refused a fetch: a long poll it
        // forwarded before the move cannot carry phase two's records.
        if moved && !produced && cluster.counts(2, ApiKey::Fetch).refused >= 1 {
            produced = true;
            produce(PER_PHASE).await;
        }
    }
    consumer.commit().await.unwrap();
    consumer.close().await.unwrap();

    let expected: Vec<String> = (0..2 * PER_PHASE).map(|i| format!("{i:06}")).collect();
    assert_eq!(values, expected, "every record once, in order");
    assert!(cluster.counts(2, ApiKey::Fetch).refused >= 1, "the old leader refused a fetch");
    assert!(cluster.counts(1, ApiKey::Fetch).served >= 1, "the new leader was found");
    let heartbeats = (cluster.counts(1, ApiKey::GroupHeartbeat), cluster.counts(2, ApiKey::GroupHeartbeat));
    assert!(heartbeats.0.served >= 1 && heartbeats.1.served == 0, "group traffic on node 1: {heartbeats:?}");
    assert_eq!(cluster.counts(2, ApiKey::OffsetCommit).served, 0, "commits on node 1 too");
    assert!(cluster.counts(1, ApiKey::OffsetCommit).served >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_a_broker_list_and_uses_the_first_reachable_one() {
    let broker = TestBroker::start(|_| {}).await;
    let list = format!("{},{}", dead_addr().await, broker.addr);
    let out = tokio::task::spawn_blocking(move || {
        let created = run_cli(SLUICE, &list, &["topic", "create", "t"], b"");
        let produced = run_cli(SLUICE, &list, &["produce", "t"], b"a\nb\n");
        (created, produced)
    })
    .await
    .unwrap();
    for o in [&out.0, &out.1] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(stored_values(&broker, 0).await, ["a", "b"]);
}

/// The values stored in `t/partition` on the real broker, in offset order.
async fn stored_values(broker: &TestBroker, partition: u32) -> Vec<String> {
    let conn = broker.connect().await;
    let mut out = Vec::new();
    for batch in read_partition(&conn, "t", partition, 0).await {
        let records = batch.records().unwrap();
        for r in records.iter() {
            let owned = records.to_owned_record(&r.unwrap());
            out.push(String::from_utf8(owned.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}
