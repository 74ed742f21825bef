//! Golden batches written by real Kafka clients, one per codec, checked in
//! under `tests/data/` with the scripts that made them: kafka-python's
//! `DefaultRecordBatchBuilder` (`make_golden.py`) and librdkafka's producer
//! (`capture_librdkafka.py`, batches taken from its Produce requests). Our
//! decoder must read every field of every one, and our builder, given the
//! kafka-python inputs, must write the uncompressed one byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{
    set_partition_leader_epoch, BatchBuilder, Compression, HeaderRef, OwnedRecord, RecordBatch,
};

const BASE_TS: i64 = 1_700_000_000_000;
const PRODUCER: (i64, i16, i32) = (4242, 3, 17);

fn value() -> Vec<u8> {
    b"sluice golden value ".repeat(8)
}

/// The inputs of `make_golden.py`: (timestamp, key, value, headers).
type Input = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(&'static str, Option<Vec<u8>>)>);

fn inputs() -> Vec<Input> {
    let v = value();
    let mut v4 = v.clone();
    v4.push(b'!');
    vec![
        (BASE_TS, Some(b"key-0".to_vec()), Some(v.clone()), vec![("h1", Some(b"v1".to_vec())), ("h2", None)]),
        (BASE_TS + 5, None, Some(v), vec![]),
        (BASE_TS + 3, Some(b"key-2".to_vec()), None, vec![("trace", Some(b"abc".to_vec()))]),
        (BASE_TS + 1000, Some(vec![]), Some(vec![]), vec![]),
        (
            BASE_TS + 7,
            Some(b"key-4".to_vec()),
            Some(v4),
            vec![("a", Some(vec![])), ("b", Some(vec![b'x'; 40]))],
        ),
    ]
}

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

fn golden(name: &str) -> Bytes {
    let path = format!("{}/tests/data/kafka-python-{name}.bin", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn build(codec: Compression) -> Bytes {
    let (id, epoch, seq) = PRODUCER;
    let mut b = BatchBuilder::new().compression(codec).producer(id, epoch, seq);
    for (ts, key, value, headers) in inputs() {
        let headers: Vec<_> =
            headers.iter().map(|(k, v)| HeaderRef { key: k.as_bytes(), value: v.as_deref() }).collect();
        b.append(ts, key.as_deref(), value.as_deref(), &headers);
    }
    b.build()
}

/// Checks every header field and record of `batch` against the inputs.
fn check(batch: &RecordBatch, codec: Compression, what: &str) {
    batch.validate(1 << 20).unwrap_or_else(|e| panic!("{what}: {e}"));
    batch.check_producible().unwrap();
    let h = batch.header();
    assert_eq!(h.compression().unwrap(), codec, "{what}");
    assert_eq!((h.base_offset, h.record_count, h.last_offset_delta), (0, 5, 4), "{what}");
    assert_eq!((h.first_timestamp, h.max_timestamp), (BASE_TS, BASE_TS + 1000), "{what}");
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), PRODUCER, "{what}");
    assert_eq!(h.last_sequence(), 21, "{what}");
    assert!(!h.is_transactional() && !h.is_control() && !h.is_log_append_time(), "{what}");
    let records: Vec<OwnedRecord> = batch.records().unwrap().to_owned_records().unwrap();
    assert_eq!(records.len(), 5, "{what}");
    for (i, (got, (ts, key, value, headers))) in records.iter().zip(inputs()).enumerate() {
        assert_eq!(got.offset, i as u64, "{what} record {i}");
        assert_eq!(got.timestamp, ts, "{what} record {i}");
        assert_eq!(got.key.as_deref(), key.as_deref(), "{what} record {i}");
        assert_eq!(got.value.as_deref(), value.as_deref(), "{what} record {i}");
        let got_headers: Vec<_> =
            got.headers.iter().map(|h| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec()))).collect();
        let want: Vec<_> = headers.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect();
        assert_eq!(got_headers, want, "{what} record {i}");
    }
}

#[test]
fn every_kafka_python_batch_reads_back() {
    for (name, codec) in CODECS {
        let bytes = golden(name);
        let batch = RecordBatch::new(bytes).unwrap();
        batch.verify_crc().unwrap();
        // kafka-python writes partition_leader_epoch 0 (the Java client -1).
        assert_eq!(batch.header().partition_leader_epoch, 0, "{name}");
        check(&batch, codec, name);
    }
}

#[test]
fn the_builder_writes_what_kafka_python_writes() {
    let mut ours = BytesMut::from(&build(Compression::None)[..]);
    // Producers leave the epoch to the broker: we write -1 like the Java
    // client, kafka-python 0; it is outside the CRC.
    set_partition_leader_epoch(&mut ours, 0);
    assert_eq!(&ours[..], &golden("none")[..]);
}

#[test]
fn our_compressed_batches_round_trip() {
    let out_dir = std::env::var_os("SLUICE_WRITE_GOLDEN_TO");
    for (name, codec) in CODECS {
        let bytes = build(codec);
        if codec != Compression::None {
            assert!(bytes.len() < golden("none").len(), "{name} compresses");
        }
        check(&RecordBatch::new(bytes.clone()).unwrap(), codec, name);
        // The one-off check that kafka-python reads ours (see
        // tests/data/read_ours.py) starts from these files.
        if let Some(dir) = &out_dir {
            std::fs::write(std::path::Path::new(dir).join(format!("sluice-{name}.bin")), &bytes).unwrap();
        }
    }
}

/// librdkafka's batches (`capture_librdkafka.py`): five records at
/// 1_700_000_000_000 + i, key `key-i` (null for 1), the value of
/// `make_golden.py` (null for 2), headers h1=v1, h2=null on record 0; no
/// producer id. Its snappy is a raw block and its zstd frame has no content
/// size.
#[test]
fn every_librdkafka_batch_reads_back() {
    for (name, codec) in CODECS {
        let path = format!("{}/tests/data/librdkafka-{name}.bin", env!("CARGO_MANIFEST_DIR"));
        let batch = RecordBatch::new(Bytes::from(std::fs::read(&path).unwrap())).unwrap();
        batch.validate(1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = batch.header();
        assert_eq!(h.compression().unwrap(), codec, "{name}");
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (-1, -1, -1), "{name}");
        assert_eq!((h.record_count, h.first_timestamp, h.max_timestamp), (5, BASE_TS, BASE_TS + 4), "{name}");
        let records = batch.records().unwrap().to_owned_records().unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!((r.offset, r.timestamp), (i as u64, BASE_TS + i as i64), "{name} {i}");
            let key = format!("key-{i}");
            assert_eq!(r.key.as_deref(), (i != 1).then_some(key.as_bytes()), "{name} {i}");
            assert_eq!(r.value.as_deref(), (i != 2).then_some(&value()[..]), "{name} {i}");
            let headers: Vec<_> =
                r.headers.iter().map(|h| (h.key.to_vec(), h.value.clone().map(|v| v.to_vec()))).collect();
            let want = if i == 0 {
                vec![(b"h1".to_vec(), Some(b"v1".to_vec())), (b"h2".to_vec(), None)]
            } else {
                vec![]
            };
            assert_eq!(headers, want, "{name} {i}");
        }
    }
}
