//! Time-bounded fuzzing of every decoder on the stable toolchain: random
//! bytes and mutations of valid encodings (bit flips, byte changes,
//! truncations, splices, length-field lies) fed to the frame codec, every
//! request and response decoder, and record-batch validation. Any panic
//! fails the test. `SLUICE_FUZZ_SECS` (default 5) sets the budget; an hour:
//! `SLUICE_FUZZ_SECS=3600 cargo test --release -p sluice-tests --test fuzz -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use sluice_protocol::api::*;
use sluice_protocol::batch::{BatchBuilder, Compression, HeaderRef, RecordBatch};
use sluice_protocol::{ErrorCode, FrameCodec};
use tokio_util::codec::Decoder;

fn corpus() -> Vec<(u16, Bytes)> {
    let mut b = BatchBuilder::new().compression(Compression::Lz4);
    b.append(1, Some(b"k"), Some(b"value"), &[HeaderRef { key: b"h", value: Some(b"v") }]);
    let lz4 = b.build();
    let mut b = BatchBuilder::new();
    b.append(1, None, Some(&[7; 300]), &[]);
    let plain = b.build();
    let tp = vec![TopicPartitions { topic: "t".into(), partitions: vec![0, 1] }];
    vec![
        (
            ApiKey::Produce as u16,
            ProduceRequest {
                acks: Acks::Durable,
                timeout_ms: 1,
                topic: "t".into(),
                partition: 0,
                batch: plain.clone(),
            }
            .to_bytes(),
        ),
        (
            ApiKey::Fetch as u16,
            FetchRequest {
                max_wait_ms: 1,
                min_bytes: 1,
                max_bytes: 9,
                partitions: vec![FetchPartition { topic: "t".into(), partition: 0, offset: 5, max_bytes: 9 }],
            }
            .to_bytes(),
        ),
        (ApiKey::Metadata as u16, MetadataRequest { topics: vec!["a".into(), "b".into()] }.to_bytes()),
        (
            ApiKey::CreateTopic as u16,
            CreateTopicRequest {
                name: "t".into(),
                partitions: 3,
                configs: vec![ConfigEntry::new("fsync", "never")],
            }
            .to_bytes(),
        ),
        (
            ApiKey::ListOffsets as u16,
            ListOffsetsRequest {
                partitions: vec![ListOffsetsPartition {
                    topic: "t".into(),
                    partition: 0,
                    spec: OffsetSpec::Timestamp(5),
                }],
            }
            .to_bytes(),
        ),
        (
            ApiKey::GroupHeartbeat as u16,
            GroupHeartbeatRequest {
                group: "g".into(),
                member_id: "m".into(),
                member_epoch: 1,
                client_host: "h".into(),
                session_timeout_ms: 9,
                topics: vec!["t".into()],
                owned: tp.clone(),
            }
            .to_bytes(),
        ),
        (
            ApiKey::OffsetCommit as u16,
            OffsetCommitRequest {
                group: "g".into(),
                member_id: "m".into(),
                member_epoch: 1,
                offsets: vec![CommitOffset {
                    topic: "t".into(),
                    partition: 0,
                    offset: 1,
                    metadata: "x".into(),
                }],
            }
            .to_bytes(),
        ),
        (
            ApiKey::ResetOffsets as u16,
            ResetOffsetsRequest {
                group: "g".into(),
                topic: "t".into(),
                partitions: vec![1],
                spec: ResetSpec::ShiftBy(-3),
                dry_run: true,
            }
            .to_bytes(),
        ),
        (
            u16::MAX,
            FetchResponse {
                partitions: vec![FetchPartitionResponse {
                    topic: "t".into(),
                    partition: 0,
                    error_code: ErrorCode::None,
                    high_watermark: 1,
                    log_start_offset: 0,
                    records: lz4.clone(),
                }],
            }
            .to_bytes(),
        ),
        (
            u16::MAX - 1,
            GroupHeartbeatResponse {
                member_id: "m".into(),
                member_epoch: 2,
                heartbeat_interval_ms: 3,
                assignment: tp,
            }
            .to_bytes(),
        ),
        (u16::MAX - 2, lz4),
        (u16::MAX - 2, plain),
    ]
    .into_iter()
    .chain([Compression::Gzip, Compression::Snappy, Compression::Zstd].map(|codec| {
        let mut b = BatchBuilder::new().compression(codec);
        b.append(1, Some(b"k"), Some(&[9; 200]), &[HeaderRef { key: b"h", value: None }]);
        (u16::MAX - 2, b.build())
    }))
    .collect()
}

fn mutate(rng: &mut impl Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..5) {
        match rng.gen_range(0..6) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            2 if !v.is_empty() => v.truncate(rng.gen_range(0..v.len())),
            3 => {
                let at = rng.gen_range(0..=v.len());
                let extra: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                v.splice(at..at, extra);
            }
            4 if v.len() >= 4 => {
                // A lying length or count field.
                let i = rng.gen_range(0..v.len() - 3);
                let lie: u32 = [0, 1, 0xFFFF, 0x7FFF_FFFF, u32::MAX][rng.gen_range(0..5)];
                v[i..i + 4].copy_from_slice(&lie.to_be_bytes());
            }
            _ => v.extend((0..rng.gen_range(0..8)).map(|_| rng.gen::<u8>())),
        }
    }
    v
}

fn run_one(key: u16, input: Bytes) {
    // As a request body of its api (and of every api), and as each response.
    for api_key in [key, key.wrapping_add(1) % 16] {
        let header = RequestHeader { api_key, api_version: 0, correlation_id: 1, client_id: String::new() };
        let _ = RequestBody::decode(&header, input.clone());
    }
    let _ = RequestHeader::decode_all(input.clone());
    let _ = FetchResponse::decode_all(input.clone());
    let _ = MetadataResponse::decode_all(input.clone());
    let _ = DescribeGroupResponse::decode_all(input.clone());
    let _ = GroupHeartbeatResponse::decode_all(input.clone());
    let _ = OffsetFetchResponse::decode_all(input.clone());
    let _ = StatusResponse::decode_all(input.clone());
    if let Ok(batch) = RecordBatch::new(input.clone()) {
        let _ = batch.validate(1 << 20);
    }
    let mut framed = BytesMut::from(&input[..]);
    let mut codec = FrameCodec::new(4096);
    while let Ok(Some(_)) = codec.decode(&mut framed) {}
}

#[test]
fn decoders_survive_random_and_mutated_input() {
    let secs: u64 = std::env::var("SLUICE_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let corpus = corpus();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x51u64);
    let mut executions = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let (key, base) = &corpus[rng.gen_range(0..corpus.len())];
            let input = if rng.gen_bool(0.2) {
                (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect::<Vec<u8>>()
            } else {
                mutate(&mut rng, base)
            };
            run_one(*key, Bytes::from(input));
            executions += 1;
        }
    }
    eprintln!("fuzz: {executions} executions in {secs} s, no panic");
    assert!(executions > 1000);
}
