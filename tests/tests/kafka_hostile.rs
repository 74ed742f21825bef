//! Hostile input on the Kafka port gets what it gets on the native port:
//! random frames, mutated valid requests (lying counts and lengths,
//! truncations), oversized and lying frame lengths, unknown apis and
//! versions each get a response or a closed connection, never a crash,
//! while a well-behaved Kafka client keeps producing and fetching without
//! an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, FetchResponse, MetadataRequest, ProduceResponse};
use kafka_wire::{fetch, frame, name, produce, KafkaConn};
use rand::{Rng, SeedableRng};
use sluice_protocol::batch::BatchBuilder;
use sluice_tests::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A one-record Produce (`acks=-1`) whose value names `n`.
fn produce_one(topic: &str, n: u64) -> ProduceRequest {
    let mut b = BatchBuilder::new();
    b.append(1_700_000_000_000, Some(b"k"), Some(format!("value {n}").as_bytes()), &[]);
    produce(topic, -1, b.build())
}

/// Produces one record and fetches it back, in a loop until `stop`.
fn well_behaved(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut c = KafkaConn::connect(addr).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut next = 0i64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_one("good", next as u64)).await;
            let p = &r.responses[0].partition_responses[0];
            assert_eq!((p.error_code, p.base_offset), (0, next), "the good producer is unharmed");
            let f: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch("good", next, 0)).await;
            let p = &f.responses[0].partitions[0];
            assert!(
                p.error_code == 0 && !p.records.as_ref().unwrap().is_empty(),
                "the good consumer is unharmed"
            );
            next += 1;
            rounds.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Valid request frames to mutate (length prefix included).
fn valid_frames() -> Vec<Bytes> {
    let mut metadata = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name("good"));
    metadata.topics = Some(vec![t.clone(), t]);
    let mut frames = vec![frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default())];
    for v in [1, 4, 9, 12] {
        frames.push(frame(ApiKey::Metadata, v, 2, &metadata));
    }
    for v in [3, 7, 9] {
        frames.push(frame(ApiKey::Produce, v, 3, &produce_one("hostile", 1)));
    }
    for v in [4, 11, 12] {
        frames.push(frame(ApiKey::Fetch, v, 4, &fetch("hostile", 0, 0)));
    }
    frames
}

/// Sends `wire` on a new connection, closes the write side, and reads
/// until the broker closes (or answers and closes); fails if the broker
/// neither answers nor closes within 10 s.
async fn send_hostile(addr: std::net::SocketAddr, wire: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(wire).await;
    let _ = s.shutdown().await;
    let mut sink = vec![0u8; 1 << 16];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the broker neither answered nor closed: {:?}", &wire[..wire.len().min(32)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_kafka_requests_get_an_answer_or_a_close_and_harm_no_one() {
    let broker = TestBroker::start(|c| c.auto_create_topics = true).await;
    let addr = broker.kafka.unwrap();
    let (stop, rounds) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let good = well_behaved(addr, Arc::clone(&stop), Arc::clone(&rounds));
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let valid = valid_frames();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..600 {
        if Instant::now() > deadline {
            break;
        }
        let base = &valid[i % valid.len()];
        let mut wire = base.to_vec();
        match i % 6 {
            0 => {
                // Random body behind a real header.
                wire.truncate(12);
                wire.extend((0..rng.gen_range(0..120)).map(|_| rng.gen::<u8>()));
            }
            1 => {
                for _ in 0..rng.gen_range(1..4) {
                    let pos = rng.gen_range(4..wire.len());
                    wire[pos] = rng.gen();
                }
            }
            2 => {
                // A lying count or length somewhere in the body.
                let pos = rng.gen_range(12..wire.len().saturating_sub(4).max(13));
                let end = (pos + 4).min(wire.len());
                wire[pos..end].copy_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF][..end - pos]);
            }
            3 => wire.truncate(rng.gen_range(4..wire.len())),
            4 => wire[..4].copy_from_slice(&rng.gen::<u32>().to_be_bytes()), // a lying frame length
            _ => wire[4..6].copy_from_slice(&rng.gen::<i16>().to_be_bytes()), // any api key
        }
        if i % 6 != 4 && i % 6 != 3 {
            let len = (wire.len() - 4) as u32;
            wire[..4].copy_from_slice(&len.to_be_bytes());
        }
        send_hostile(addr, &wire).await;
    }
    // An oversized frame is refused before anything is allocated for it.
    send_hostile(addr, &0x7FFF_FFF0u32.to_be_bytes()).await;
    send_hostile(addr, &(-5i32).to_be_bytes()).await;
    stop.store(true, Ordering::Relaxed);
    good.await.unwrap();
    assert!(rounds.load(Ordering::Relaxed) > 0, "the well-behaved client made progress");
    let mut c = KafkaConn::connect(addr).await;
    let _: kafka_protocol::messages::ApiVersionsResponse =
        c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
}
