//! Batches written by real Kafka clients (kafka-python and librdkafka, every
//! codec; the golden files of the protocol crate) go through a real broker: accepted,
//! stored and served compressed as they came, with the broker's stamps
//! (base offset, leader epoch 0) and nothing else changed. Transactional and
//! control batches are refused: Sluice has no transactions yet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use sluice_protocol::api::Acks;
use sluice_protocol::batch::{
    compute_crc, BatchError, RecordBatch, ATTRIBUTES_POS, CONTROL_FLAG, CRC_POS, MAGIC_POS,
    TRANSACTIONAL_FLAG,
};
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, create_topic, produce, read_partition, TestBroker};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn golden(name: &str) -> Bytes {
    golden_of("kafka-python", name)
}

fn golden_of(client: &str, name: &str) -> Bytes {
    let path = format!("{}/../protocol/tests/data/{client}-{name}.bin", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

#[tokio::test]
async fn kafka_python_batches_are_stored_and_served_as_they_came() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    // One partition per codec: the golden batches share one producer id and
    // sequence, so on one partition the later ones would be duplicates.
    create_topic(&c, "k", CODECS.len() as u32, &[]).await.unwrap();
    let mut stored = Vec::new();
    for (partition, name) in (0..).zip(CODECS) {
        let resp = produce(&c, "k", partition, Acks::Durable, golden(name)).await.unwrap();
        assert_eq!(resp.base_offset, 0, "{name}");
        let dup = produce(&c, "k", partition, Acks::Durable, golden(name)).await.unwrap();
        assert_eq!(dup.base_offset, 0, "{name}: a retry is answered with its original offset");
        let mut batches = read_partition(&c, "k", partition, 0).await;
        assert_eq!(batches.len(), 1, "{name}");
        stored.push(batches.remove(0));
    }
    for (name, got) in CODECS.iter().zip(&stored) {
        let sent = golden(name);
        assert_eq!(&got.as_bytes()[MAGIC_POS..], &sent[MAGIC_POS..], "{name}: stored as sent (compressed)");
        assert_eq!(got.header().partition_leader_epoch, 0, "{name}");
        got.validate(1 << 20).unwrap();
        let records = got.records().unwrap().to_owned_records().unwrap();
        assert_eq!(records.len(), 5, "{name}");
        assert_eq!(records[0].key.as_deref(), Some(&b"key-0"[..]), "{name}");
        assert_eq!(records[2].value, None, "{name}");
    }
}

#[tokio::test]
async fn librdkafka_batches_are_stored_and_served_as_they_came() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "r", 1, &[]).await.unwrap();
    for (i, name) in (0..).zip(CODECS) {
        let resp = produce(&c, "r", 0, Acks::Durable, golden_of("librdkafka", name)).await.unwrap();
        assert_eq!(resp.base_offset, 5 * i, "{name}");
    }
    let stored = read_partition(&c, "r", 0, 0).await;
    for (name, got) in CODECS.iter().zip(&stored) {
        let sent = golden_of("librdkafka", name);
        assert_eq!(&got.as_bytes()[MAGIC_POS..], &sent[MAGIC_POS..], "{name}: stored as sent");
        assert_eq!(got.records().unwrap().to_owned_records().unwrap().len(), 5, "{name}");
    }
    assert_eq!(stored.len(), CODECS.len());
}

fn with_attribute(bytes: &Bytes, flag: u16) -> Bytes {
    let mut b = BytesMut::from(&bytes[..]);
    b[ATTRIBUTES_POS + 1] |= flag as u8;
    let crc = compute_crc(&b);
    b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[tokio::test]
async fn transactional_control_and_old_magic_batches_are_refused() {
    let broker = TestBroker::start(|_| {}).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    for flag in [TRANSACTIONAL_FLAG, CONTROL_FLAG] {
        let bad = with_attribute(&batch(2, 10, 1), flag);
        RecordBatch::new(bad.clone()).unwrap().validate(1 << 20).unwrap();
        let err = produce(&c, "t", 0, Acks::Durable, bad).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    }
    let mut old = BytesMut::from(&batch(2, 10, 1)[..]);
    old[MAGIC_POS] = 1;
    assert_eq!(RecordBatch::new(old.clone().freeze()).unwrap_err(), BatchError::UnsupportedMagic(1));
    let err = produce(&c, "t", 0, Acks::Durable, old.freeze()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CorruptBatch), "{err}");
    // Nothing was appended; a good batch goes in at 0.
    assert_eq!(produce(&c, "t", 0, Acks::Durable, batch(1, 10, 2)).await.unwrap().base_offset, 0);
}
