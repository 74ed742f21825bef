use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn sample_batch() -> Bytes {
    let mut b = BatchBuilder::new().producer(7, 1, 42);
    b.append(1_700_000_000_000, Some(b"k"), Some(b"hello"), &[HeaderRef { key: b"h", value: Some(b"v") }]);
    b.append(1_700_000_000_005, None, None, &[]);
    b.build()
}

/// The record-batch layout (Kafka RecordBatch v2), pinned byte for byte. If
/// this fails, the on-disk and wire format changed: it must not (the Kafka
/// golden batches in tests/kafka_golden.rs pin it against a real client).
#[test]
fn golden_bytes() {
    let hex: String = sample_batch().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        concat!(
            "0000000000000000",
            "00000049",
            "ffffffff", // partition_leader_epoch: -1 until the broker stamps it
            "02",       // magic
            "7f3331e5", // CRC-32C
            "0000",
            "00000001",
            "0000018bcfe56800",
            "0000018bcfe56805",
            "0000000000000007",
            "0001",
            "0000002a",
            "00000002",
            // record 0: len 16, attrs, ts 0, off 0, key "k", value "hello", 1 header h=v
            "20",
            "00",
            "00",
            "00",
            "02",
            "6b",
            "0a",
            "68656c6c6f",
            "02",
            "02",
            "68",
            "02",
            "76",
            // record 1: len 6, attrs, ts +5, off 1, null key, null value, 0 headers
            "0c",
            "00",
            "0a",
            "02",
            "01",
            "01",
            "00",
        )
    );
}

#[test]
fn header_fields_and_records_read_back() {
    let mut bytes = BytesMut::from(&sample_batch()[..]);
    set_base_offset(&mut bytes, 1000);
    let batch = RecordBatch::new(bytes.freeze()).unwrap();
    batch.validate(1 << 20).unwrap();
    let h = batch.header();
    assert_eq!((h.base_offset, h.last_offset(), h.next_offset()), (1000, 1001, 1002));
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 1, 42));
    assert_eq!((h.first_timestamp, h.max_timestamp), (1_700_000_000_000, 1_700_000_000_005));
    let records = batch.records().unwrap();
    let all = records.to_owned_records().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].offset, 1000);
    assert_eq!(all[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(all[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        all[0].headers,
        vec![OwnedHeader { key: Bytes::from_static(b"h"), value: Some(Bytes::from_static(b"v")) }]
    );
    assert_eq!(
        (all[1].offset, all[1].timestamp, all[1].key.clone(), all[1].value.clone()),
        (1001, 1_700_000_000_005, None, None)
    );
}

#[test]
fn reading_is_zero_copy() {
    let bytes = sample_batch();
    let range = bytes.as_ptr_range();
    let batch = RecordBatch::new(bytes.clone()).unwrap();
    let records = batch.records().unwrap();
    let first = records.iter().next().unwrap().unwrap();
    let value = first.value.unwrap();
    assert!(range.contains(&value.as_ptr()), "value must point into the batch");
    assert!(range.contains(&records.share(value).as_ptr()));
}

#[test]
fn base_offset_is_outside_the_crc() {
    let mut bytes = BytesMut::from(&sample_batch()[..]);
    set_base_offset(&mut bytes, u64::MAX - 5);
    RecordBatch::new(bytes.freeze()).unwrap().verify_crc().unwrap();
}

#[test]
fn partition_leader_epoch_is_outside_the_crc() {
    let mut bytes = BytesMut::from(&sample_batch()[..]);
    set_partition_leader_epoch(&mut bytes, 77);
    let batch = RecordBatch::new(bytes.freeze()).unwrap();
    batch.validate(1 << 20).unwrap();
    assert_eq!(batch.header().partition_leader_epoch, 77);
}

#[test]
fn only_magic_2_is_read() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut bytes = BytesMut::from(&sample_batch()[..]);
        bytes[MAGIC_POS] = magic;
        assert_eq!(RecordBatch::new(bytes.freeze()).unwrap_err(), BatchError::UnsupportedMagic(magic as i8));
    }
}

#[test]
fn transactional_and_control_batches_are_not_producible() {
    for flag in [TRANSACTIONAL_FLAG, CONTROL_FLAG] {
        let mut bytes = BytesMut::from(&sample_batch()[..]);
        bytes[ATTRIBUTES_POS + 1] |= flag as u8;
        let crc = compute_crc(&bytes);
        bytes[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        let batch = RecordBatch::new(bytes.freeze()).unwrap();
        batch.validate(1 << 20).unwrap();
        assert!(matches!(batch.check_producible(), Err(BatchError::Unsupported(_))));
    }
    RecordBatch::new(sample_batch()).unwrap().check_producible().unwrap();
}

#[test]
fn idempotent_batches_need_valid_producer_fields() {
    for (epoch, seq) in [(-1, 0), (0, -1), (-5, -5)] {
        let mut b = BatchBuilder::new().producer(7, epoch, seq);
        b.append(0, None, Some(b"v"), &[]);
        let batch = RecordBatch::new(b.build()).unwrap();
        assert!(matches!(batch.validate(1 << 20), Err(BatchError::InvalidHeader(_))), "{epoch} {seq}");
    }
}

#[test]
fn sequences_wrap_at_i32_max_as_in_kafka() {
    assert_eq!(increment_sequence(5, 3), 8);
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    let mut b = BatchBuilder::new().producer(7, 0, i32::MAX - 1);
    for _ in 0..4 {
        b.append(0, None, Some(b"v"), &[]);
    }
    assert_eq!(BatchHeader::parse(&b.build()).unwrap().last_sequence(), 1);
}

#[test]
fn log_append_time_replaces_record_timestamps() {
    let mut bytes = BytesMut::from(&sample_batch()[..]);
    set_log_append_time(&mut bytes, 99);
    let batch = RecordBatch::new(bytes.freeze()).unwrap();
    batch.validate(1 << 20).unwrap();
    assert!(batch.header().is_log_append_time());
    assert!(batch.records().unwrap().iter().all(|r| r.unwrap().timestamp == 99));
}

#[test]
fn every_byte_under_the_crc_is_protected() {
    let good = sample_batch();
    for pos in ATTRIBUTES_POS..good.len() {
        let mut bad = BytesMut::from(&good[..]);
        bad[pos] ^= 0x10;
        let batch = RecordBatch::new(bad.freeze()).unwrap();
        assert!(matches!(batch.verify_crc(), Err(BatchError::CrcMismatch { .. })), "byte {pos}");
    }
}

/// Rewrites a sample batch's records section with `records` and fixes the
/// header (length, count, CRC), so structural checks are what fails.
fn with_records(count: u32, records: &[u8]) -> RecordBatch {
    let mut buf = BytesMut::from(&sample_batch()[..HEADER_LEN]);
    buf.extend_from_slice(records);
    let len = (buf.len() - LOG_OVERHEAD) as u32;
    buf[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&len.to_be_bytes());
    buf[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
    buf[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
        .copy_from_slice(&count.saturating_sub(1).to_be_bytes());
    let crc = compute_crc(&buf);
    buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::new(buf.freeze()).unwrap()
}

#[test]
fn structural_errors_are_rejected() {
    // A valid one-record section: len 6, attrs 0, ts 0, off 0, key null, value null, 0 headers.
    let one = [0x0c, 0, 0, 0, 1, 1, 0];
    with_records(1, &one).validate(1 << 20).unwrap();
    let cases: &[(&str, u32, Vec<u8>)] = &[
        ("count says 2, one present", 2, one.to_vec()),
        ("count says 1, two present", 1, [one, one].concat()),
        ("zero records", 0, vec![]),
        ("negative record length", 1, vec![0x01, 0, 0, 0, 1, 1, 0]),
        ("record length past the end", 1, vec![0x7e, 0, 0, 0, 1, 1, 0]),
        ("offset delta not the index", 1, vec![0x0c, 0, 0, 2, 1, 1, 0]),
        ("key length below -1", 1, vec![0x0c, 0, 0, 0, 3, 1, 0]),
        ("value length past the record", 1, vec![0x0c, 0, 0, 0, 1, 0x10, 0]),
        ("bytes left in the record", 1, vec![0x0e, 0, 0, 0, 1, 1, 0, 0]),
        ("varint longer than 10 bytes", 1, [vec![0x18, 0], vec![0xff; 11]].concat()),
        ("null header key", 1, vec![0x10, 0, 0, 0, 1, 1, 2, 1, 1]),
        ("header count past the record", 1, vec![0x0c, 0, 0, 0, 1, 1, 0x7e]),
    ];
    for (what, count, records) in cases {
        assert!(with_records(*count, records).validate(1 << 20).is_err(), "{what}");
    }
}

#[test]
fn length_and_codec_checks() {
    let good = sample_batch();
    assert!(matches!(RecordBatch::new(good.slice(..HEADER_LEN - 1)), Err(BatchError::TooShort { .. })));
    assert!(matches!(RecordBatch::new(good.slice(..good.len() - 1)), Err(BatchError::LengthMismatch { .. })));
    let mut bad_codec = BytesMut::from(&good[..]);
    bad_codec[ATTRIBUTES_POS + 1] = 7;
    let crc = compute_crc(&bad_codec);
    bad_codec[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    let batch = RecordBatch::new(bad_codec.freeze()).unwrap();
    assert_eq!(batch.validate(1 << 20), Err(BatchError::UnknownCompression(7)));
}

#[test]
fn split_batches_walks_back_to_back_batches() {
    let one = sample_batch();
    let two = [&one[..], &one[..]].concat();
    let batches: Vec<_> = split_batches(Bytes::from(two.clone())).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 2);
    let torn = Bytes::copy_from_slice(&two[..two.len() - 3]);
    let results: Vec<_> = split_batches(torn).collect();
    assert!(results[0].is_ok() && results[1].is_err() && results.len() == 2);
}

#[derive(Debug, Clone)]
struct TestRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn arb_record() -> impl Strategy<Value = TestRecord> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    (
        any::<i64>(),
        proptest::option::of(bytes()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2048)),
        proptest::collection::vec((bytes(), proptest::option::of(bytes())), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| TestRecord { timestamp, key, value, headers })
}

fn arb_compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(records in proptest::collection::vec(arb_record(), 1..40), codec in arb_compression(),
                  base in any::<u64>(), pid in 0..i64::MAX, epoch in 0..i16::MAX, seq in 0..i32::MAX) {
        let mut b = BatchBuilder::new().compression(codec).producer(pid, epoch, seq);
        for r in &records {
            let headers: Vec<_> = r.headers.iter().map(|(k, v)| HeaderRef { key: k, value: v.as_deref() }).collect();
            b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        }
        let mut bytes = BytesMut::from(&b.build()[..]);
        set_base_offset(&mut bytes, base);
        let batch = RecordBatch::new(bytes.freeze()).unwrap();
        batch.validate(DEFAULT_MAX_DECOMPRESSED_BYTES).unwrap();
        prop_assert_eq!(batch.header().record_count as usize, records.len());
        prop_assert_eq!(batch.header().compression().unwrap(), codec);
        let read = batch.records().unwrap().to_owned_records().unwrap();
        for (i, (got, want)) in read.iter().zip(&records).enumerate() {
            prop_assert_eq!(got.offset, base.wrapping_add(i as u64));
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(got.key.as_deref(), want.key.as_deref());
            prop_assert_eq!(got.value.as_deref(), want.value.as_deref());
            let headers: Vec<_> = got.headers.iter().map(|h| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(&headers, &want.headers);
        }
    }

    /// Arbitrary bytes never panic, and never validate unless they are a batch.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(batch) = RecordBatch::new(Bytes::from(bytes)) {
            let _ = batch.validate(1 << 16);
            if let Ok(records) = batch.records_with_limit(1 << 16) {
                for r in records.iter() { let _ = r.map(|r| r.headers.count()); }
            }
        }
    }

    /// Any corruption of a real batch under the CRC is caught by validation,
    /// and mutated batches with a recomputed CRC never panic either.
    #[test]
    fn mutated_batches_are_caught(pos in HEADER_LEN..300usize, byte in any::<u8>(), codec in arb_compression()) {
        let mut b = BatchBuilder::new().compression(codec);
        for i in 0..20u8 { b.append(i64::from(i), Some(&[i]), Some(&[i; 10]), &[]); }
        let good = b.build();
        let pos = ATTRIBUTES_POS + pos % (good.len() - ATTRIBUTES_POS);
        let mut bad = BytesMut::from(&good[..]);
        bad[pos] = byte;
        if bad[..] != good[..] {
            let batch = RecordBatch::new(bad.clone().freeze()).unwrap();
            prop_assert!(batch.validate(1 << 20).is_err());
        }
        let crc = compute_crc(&bad);
        bad[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        let _ = RecordBatch::new(bad.freeze()).map(|b| b.validate(1 << 20));
    }
}

#[test]
fn crc_streams_in_pieces() {
    let bytes = sample_batch();
    let (a, b) = bytes[ATTRIBUTES_POS..].split_at(10);
    assert_eq!(crc_append(crc_append(0, a), b), compute_crc(&bytes));
    assert_eq!(compute_crc(&bytes), RecordBatch::new(bytes).unwrap().header().crc);
}
