//! `Producer::send_batch` and `Producer::send_messages` against a real
//! broker process: idempotence and ordering hold when batches are retried
//! across a broker crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_producer::{BatchDelivery, Message, Producer, ProducerError, Record};
use sluice_tests::{create_topic, read_partition, ProcessBroker, TestBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

async fn values_of(conn: &sluice_protocol::client::Connection, partition: u32) -> Vec<(u64, Bytes)> {
    values_in(conn, "t", partition).await
}

async fn values_in(
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

/// Which batch call a test makes.
#[derive(Clone, Copy)]
enum Call {
    SendBatch,
    SendMessages,
}

impl Call {
    /// Sends `messages` to topic `t` with this call.
    async fn send(self, producer: &Producer, messages: Vec<Message>) -> BatchDelivery {
        match self {
            Call::SendBatch => {
                let records = messages.into_iter().map(|m| Record {
                    topic: "t".into(),
                    partition: m.partition,
                    key: m.key,
                    value: m.value,
                    headers: m.headers,
                    timestamp: m.timestamp,
                });
                producer.send_batch(records).await.unwrap()
            }
            Call::SendMessages => producer.send_messages("t", &messages).await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_retried_across_a_broker_restart_keep_offsets_order_and_no_duplicates() {
    retried_across_a_restart(Call::SendBatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_retried_across_a_broker_restart_keep_offsets_order_and_no_duplicates() {
    retried_across_a_restart(Call::SendMessages).await;
}

async fn retried_across_a_restart(call_kind: Call) {
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
    let (calls, per_call) = (100u32, 200u32);
    let mut deliveries = Vec::new();
    for call in 0..calls {
        let messages = (0..per_call).map(|i| {
            let n = call * per_call + i;
            Message::new(format!("{n:08}")).partition(n % 2)
        });
        deliveries.push(call_kind.send(&producer, messages.collect()).await);
        if call == calls / 2 {
            // Crash mid-stream, then come back on the same address.
            broker.kill9();
            broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--listen", &addr]);
        }
    }
    producer.flush().await.unwrap();
    let mut reported: HashMap<(u32, u64), Bytes> = HashMap::new();
    for (call, delivery) in deliveries.into_iter().enumerate() {
        let results = delivery.await;
        assert_eq!(results.len(), per_call as usize);
        for (i, r) in results.into_iter().enumerate() {
            let meta = r.expect("every record acknowledged after retries");
            let n = call as u32 * per_call + i as u32;
            assert_eq!(meta.partition, n % 2);
            let value = Bytes::from(format!("{n:08}"));
            assert!(reported.insert((meta.partition, meta.offset), value).is_none(), "offset reported twice");
        }
    }
    producer.close().await.unwrap();
    let conn = broker.connect().await;
    for p in 0..2 {
        let log = values_of(&conn, p).await;
        assert_eq!(log.len(), (calls * per_call / 2) as usize, "partition {p}: none lost, none duplicated");
        let mut last = None;
        for (offset, value) in &log {
            assert_eq!(reported.get(&(p, *offset)), Some(value), "the reported offset holds the record");
            assert!(last < Some(value.clone()), "partition {p} keeps send order");
            last = Some(value.clone());
        }
    }
}

#[tokio::test]
async fn a_batch_too_large_for_the_buffer_is_sent_chunk_by_chunk() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 1, &[]).await.unwrap();
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .batch_bytes(1024usize)
        .buffer_memory(4096usize)
        .linger(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let records = (0..500u32).map(|i| Record::new("t", format!("{i:08}")));
    let results = producer.send_batch(records).await.unwrap().await;
    let offsets: Vec<u64> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (0..500).collect::<Vec<u64>>(), "dense, in order, past the buffer's size");
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_one_partition_among_keyed_and_headed_records_report_where_each_landed() {
    runs_among_keyed_and_headed(Call::SendBatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_runs_among_keyed_and_headed_ones_report_where_each_landed() {
    runs_among_keyed_and_headed(Call::SendMessages).await;
}

async fn runs_among_keyed_and_headed(call_kind: Call) {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    // Small batches: runs of one partition cross batch boundaries.
    let producer =
        Producer::builder().bootstrap(broker.addr.to_string()).batch_bytes(2048usize).build().await.unwrap();
    let mut deliveries = Vec::new();
    for call in 0..4u32 {
        let messages = (0..300u32).map(|i| {
            let n = call * 300 + i;
            let message = Message::new(format!("{n:08}"));
            match i % 50 {
                7 => message.partition(1).header("h", "v"), // breaks a run
                9 => message.key(format!("k{n}")),          // partition from the key
                _ => message.partition((i / 100) % 2),      // runs of 100
            }
        });
        deliveries.push(call_kind.send(&producer, messages.collect()).await);
    }
    let mut reported: HashMap<(u32, u64), Bytes> = HashMap::new();
    for (call, delivery) in deliveries.into_iter().enumerate() {
        for (i, r) in delivery.await.into_iter().enumerate() {
            let meta = r.unwrap();
            let value = Bytes::from(format!("{:08}", call * 300 + i));
            assert!(reported.insert((meta.partition, meta.offset), value).is_none(), "offset reported twice");
        }
    }
    producer.close().await.unwrap();
    let mut logged = 0;
    for p in 0..2 {
        for (offset, value) in values_of(&admin, p).await {
            assert_eq!(reported.get(&(p, offset)), Some(&value), "partition {p} offset {offset}");
            logged += 1;
        }
    }
    assert_eq!(logged, 1200);
}

#[tokio::test]
async fn messages_that_could_never_be_written_fail_the_call_before_anything_is_buffered() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    let producer = Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    let err = producer.send_messages("nope", &[Message::new("x")]).await.unwrap_err();
    assert!(matches!(err, ProducerError::UnknownTopic(ref t) if t == "nope"), "{err:?}");
    let messages = [Message::new("a").partition(0), Message::new("b").partition(2)];
    let err = producer.send_messages("t", &messages).await.unwrap_err();
    assert!(matches!(err, ProducerError::UnknownPartition { partition: 2, count: 2, .. }), "{err:?}");
    // The messages are borrowed: the same slice sent again, now valid.
    let messages = [Message::new("a").partition(0), Message::new("b").partition(1).timestamp(42)];
    for _ in 0..2 {
        let results = producer.send_messages("t", &messages).await.unwrap().await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(results[1].as_ref().unwrap().timestamp, 42);
    }
    producer.close().await.unwrap();
    let logged: Vec<_> = [values_of(&admin, 0).await, values_of(&admin, 1).await].concat();
    let values: Vec<&[u8]> = logged.iter().map(|(_, v)| &v[..]).collect();
    assert_eq!(values, [&b"a"[..], b"a", b"b", b"b"], "only the valid calls' messages were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_a_partition_stick_as_records_sent_one_by_one_do() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    for topic in ["one-by-one", "messages"] {
        create_topic(&admin, topic, 3, &[]).await.unwrap();
    }
    // Small batches that close only when full (no linger in the test's
    // time), so the sticky partition moves at the same records both ways.
    let producer = Producer::builder()
        .bootstrap(broker.addr.to_string())
        .batch_bytes(1024usize)
        .linger(Duration::from_secs(600))
        .build()
        .await
        .unwrap();
    let messages: Vec<Message> = (0..600u32)
        .map(|n| {
            let message = Message::new(format!("{n:08}"));
            match n % 40 {
                5 => message.key(format!("k{n}")), // murmur2 picks its partition
                6 => message.header("h", "v"),     // sticky, but one by one
                _ => message,
            }
        })
        .collect();
    let mut one_by_one = Vec::new();
    for m in &messages {
        let record = Record {
            topic: "one-by-one".into(),
            partition: None,
            key: m.key.clone(),
            value: m.value.clone(),
            headers: m.headers.clone(),
            timestamp: None,
        };
        one_by_one.push(producer.send(record).await.unwrap().partition());
    }
    let delivery = producer.send_messages("messages", &messages).await.unwrap();
    producer.flush().await.unwrap();
    let landed: Vec<u32> = delivery.await.into_iter().map(|r| r.unwrap().partition).collect();
    assert_eq!(landed, one_by_one, "every message where send put the same record");
    let mut used = 0;
    for p in 0..3 {
        let a: Vec<Bytes> = values_in(&admin, "one-by-one", p).await.into_iter().map(|(_, v)| v).collect();
        let b: Vec<Bytes> = values_in(&admin, "messages", p).await.into_iter().map(|(_, v)| v).collect();
        assert_eq!(a, b, "partition {p}: the same records in the same order");
        used += usize::from(!b.is_empty());
    }
    assert_eq!(used, 3, "the sticky partition moved on as batches filled");
    producer.close().await.unwrap();
}
