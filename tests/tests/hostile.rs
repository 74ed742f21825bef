//! Bad input never takes the broker down: malformed frames, oversized
//! lengths, unknown apis, corrupt batches, out-of-range offsets, deleted
//! topics, stalled half frames and connection floods each get a typed error
//! or a closed connection, while a well-behaved client keeps producing and
//! consuming without a single error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use sluice_protocol::api::{
    encode_request, Acks, DeleteTopicRequest, Message, ProduceRequest, RequestHeader, ResponseHeader,
};
use sluice_protocol::{ErrorCode, Reader};
use sluice_tests::{batch, create_topic, fetch_once, produce, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Produces and consumes in a loop until `stop`; counts round trips.
fn well_behaved_client(
    broker: &TestBroker,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let addr = broker.addr.to_string();
    tokio::spawn(async move {
        let c = sluice_protocol::client::Connection::connect(&addr, "good").await.unwrap();
        let mut next = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let resp = produce(&c, "good", 0, Acks::Durable, batch(3, 30, next))
                .await
                .expect("good producer failed");
            assert_eq!(resp.base_offset, next * 3, "offsets stay dense");
            let p = fetch_once(&c, "good", 0, next * 3, 1000).await.expect("good consumer failed");
            assert!(p.error_code.is_ok() && !p.records.is_empty());
            next += 1;
            rounds.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Reads one response frame, or `None` when the broker closed the connection.
async fn read_response(sock: &mut TcpStream) -> Option<(ResponseHeader, Bytes)> {
    let len =
        tokio::time::timeout(Duration::from_secs(10), sock.read_u32()).await.expect("broker hung").ok()?
            as usize;
    let mut buf = vec![0; len];
    sock.read_exact(&mut buf).await.ok()?;
    let mut r = Reader::new(buf.into());
    let header = ResponseHeader::decode(&mut r).unwrap();
    Some((header, r.bytes(r.remaining()).unwrap()))
}

/// Whether the broker closed the connection (EOF, reset) within 10 s.
async fn closed(sock: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

async fn raw_request(broker: &TestBroker, payload: &[u8]) -> (TcpStream, Option<(ResponseHeader, Bytes)>) {
    let mut sock = TcpStream::connect(broker.addr).await.unwrap();
    sock.write_all(&frame(payload)).await.unwrap();
    let resp = read_response(&mut sock).await;
    (sock, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_never_disturb_a_good_one() {
    let broker = TestBroker::start(|c| {
        c.max_connections = 200;
        c.connection_idle_ms = 300;
    })
    .await;
    let admin = broker.connect().await;
    create_topic(&admin, "good", 1, &[]).await.unwrap();
    create_topic(&admin, "doomed", 1, &[]).await.unwrap();
    create_topic(&admin, "fuzz", 1, &[]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let good = well_behaved_client(&broker, Arc::clone(&stop), Arc::clone(&rounds));

    // A 4 GiB frame length: an error frame, then the connection closes.
    let mut sock = TcpStream::connect(broker.addr).await.unwrap();
    sock.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let (header, _) = read_response(&mut sock).await.expect("an error response first");
    assert_eq!(header.error_code, ErrorCode::InvalidRequest);
    assert!(closed(&mut sock).await);

    // Unknown api key and unknown version: UnsupportedVersion, connection stays usable.
    for (key, version) in [(999u16, 0u16), (5, 42)] {
        let header =
            RequestHeader { api_key: key, api_version: version, correlation_id: 77, client_id: "x".into() };
        let (mut sock, resp) = raw_request(&broker, &header.to_bytes()).await;
        let (h, _) = resp.unwrap();
        assert_eq!((h.correlation_id, h.error_code), (77, ErrorCode::UnsupportedVersion));
        let ok = encode_request(78, "x", &sluice_protocol::api::ApiVersionsRequest).into_bytes();
        sock.write_all(&frame(&ok)).await.unwrap();
        assert_eq!(read_response(&mut sock).await.unwrap().0.error_code, ErrorCode::None);
    }

    // A malformed body: InvalidRequest. A malformed header: error, then closed.
    let mut bad_body = encode_request(
        5,
        "x",
        &ProduceRequest {
            acks: Acks::Durable,
            timeout_ms: 1,
            topic: "good".into(),
            partition: 0,
            batch: Bytes::new(),
        },
    )
    .into_bytes()
    .to_vec();
    bad_body.truncate(bad_body.len() - 2);
    let (_, resp) = raw_request(&broker, &bad_body).await;
    assert_eq!(resp.unwrap().0.error_code, ErrorCode::InvalidRequest);
    let (mut sock, resp) = raw_request(&broker, &[0, 1]).await;
    assert_eq!(resp.unwrap().0.error_code, ErrorCode::InvalidRequest);
    assert!(closed(&mut sock).await);

    // Corrupt CRC, wrong lengths, empty batch: CorruptBatch, nothing appended.
    let mut corrupt = BytesMut::from(&batch(2, 20, 1)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    for bad in [corrupt.freeze(), batch(2, 20, 1).slice(..40), Bytes::from_static(&[0; 80])] {
        let err = produce(&admin, "good", 0, Acks::Durable, bad).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::CorruptBatch), "{err}");
    }

    // Offsets out of range, unknown partition, unknown topic.
    for offset in [u64::MAX, u64::MAX - 1, 1 << 40] {
        let p = fetch_once(&admin, "good", 0, offset, 0).await.unwrap();
        assert_eq!(p.error_code, ErrorCode::OffsetOutOfRange, "offset {offset}");
    }
    assert_eq!(fetch_once(&admin, "good", 9, 0, 0).await.unwrap().error_code, ErrorCode::UnknownPartition);
    assert_eq!(fetch_once(&admin, "nope", 0, 0, 0).await.unwrap().error_code, ErrorCode::UnknownTopic);

    // Produce to a deleted topic.
    produce(&admin, "doomed", 0, Acks::Durable, batch(1, 1, 1)).await.unwrap();
    admin.call(&DeleteTopicRequest { name: "doomed".into() }).await.unwrap();
    let err = produce(&admin, "doomed", 0, Acks::Durable, batch(1, 1, 2)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));

    // Random bytes and mutated valid frames (seeded, bounded): an answer or
    // a closed connection, never a hang.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let valid = encode_request(
        1,
        "fuzz",
        &ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 100,
            topic: "fuzz".into(),
            partition: 0,
            batch: batch(2, 10, 5),
        },
    )
    .into_bytes();
    for i in 0..300 {
        let payload: Vec<u8> = if i % 2 == 0 {
            (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect()
        } else {
            let mut m = valid.to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let pos = rng.gen_range(0..m.len());
                m[pos] = rng.gen();
            }
            m
        };
        let mut sock = TcpStream::connect(broker.addr).await.unwrap();
        let mut wire = frame(&payload);
        if i % 7 == 0 {
            wire[..4].copy_from_slice(&rng.gen::<u32>().to_be_bytes()); // a lying length
        }
        sock.write_all(&wire).await.unwrap();
        sock.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "fuzz case {i}: broker hung");
    }

    // Half a frame, then silence: closed after the idle timeout, harmless meanwhile.
    let mut staller = TcpStream::connect(broker.addr).await.unwrap();
    staller.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    assert!(closed(&mut staller).await, "a stalled half frame is dropped after connection_idle_ms");

    // 10,000 connections at once: at most max_connections are served, the
    // rest are refused; the good client keeps going.
    let mut flood = Vec::new();
    for _ in 0..10_000 {
        match TcpStream::connect(broker.addr).await {
            Ok(s) => flood.push(s),
            Err(e) => panic!("connect failed: {e}"),
        }
    }
    let before = rounds.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rounds.load(Ordering::Relaxed) < before + 20 {
        assert!(Instant::now() < deadline, "the good client stalled during the flood");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(flood);

    stop.store(true, Ordering::Relaxed);
    good.await.expect("the well-behaved client saw an error");
    assert!(rounds.load(Ordering::Relaxed) > 20);
    // And the broker still works for new clients.
    let fresh = broker.connect().await;
    produce(&fresh, "good", 0, Acks::Durable, batch(1, 1, 1000)).await.unwrap();
}

#[tokio::test]
async fn clients_that_vanish_mid_request_do_not_leak_or_hang() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 1, &[]).await.unwrap();
    for i in 0..50u32 {
        let mut sock = TcpStream::connect(broker.addr).await.unwrap();
        let req = if i % 2 == 0 {
            encode_request(
                i,
                "x",
                &sluice_protocol::api::FetchRequest {
                    max_wait_ms: 10_000,
                    min_bytes: 1 << 20,
                    max_bytes: 1 << 20,
                    partitions: vec![sluice_protocol::api::FetchPartition {
                        topic: "t".into(),
                        partition: 0,
                        offset: 0,
                        max_bytes: 1 << 20,
                    }],
                },
            )
            .into_bytes()
        } else {
            encode_request(
                i,
                "x",
                &ProduceRequest {
                    acks: Acks::Durable,
                    timeout_ms: 10_000,
                    topic: "t".into(),
                    partition: 0,
                    batch: batch(10, 100, u64::from(i)),
                },
            )
            .into_bytes()
        };
        let wire = frame(&req);
        // Half of them leave in the middle of the frame, half right after it.
        let cut = if i % 4 < 2 { wire.len() / 2 } else { wire.len() };
        sock.write_all(&wire[..cut]).await.unwrap();
        drop(sock);
    }
    // Every complete produce was appended; the broker still answers promptly.
    let started = Instant::now();
    produce(&admin, "t", 0, Acks::Durable, batch(1, 1, 999)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut broker = broker;
    let stopped = tokio::time::timeout(Duration::from_secs(20), broker.stop()).await;
    assert!(stopped.is_ok(), "shutdown waits for long polls of vanished clients no longer than they allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_half_frame_is_closed_after_the_read_timeout() {
    // The idle timeout stays at its 10 minutes: only request_read_timeout_ms can close these.
    let broker = TestBroker::start(|c| c.request_read_timeout_ms = 300).await;
    let mut idle = TcpStream::connect(broker.addr).await.unwrap();
    let started = Instant::now();
    let mut staller = TcpStream::connect(broker.addr).await.unwrap();
    staller.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    assert!(closed(&mut staller).await, "a frame stalled halfway holds its connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A length prefix cut in half stalls the same way.
    let mut staller = TcpStream::connect(broker.addr).await.unwrap();
    staller.write_all(&[0, 0]).await.unwrap();
    assert!(closed(&mut staller).await);
    // A connection with nothing half-sent is idle, not stalled: it still works.
    let ok = encode_request(1, "x", &sluice_protocol::api::ApiVersionsRequest).into_bytes();
    idle.write_all(&frame(&ok)).await.unwrap();
    assert_eq!(read_response(&mut idle).await.unwrap().0.error_code, ErrorCode::None);
}

/// Fetch requests the broker has answered so far.
fn fetches_answered(broker: &TestBroker) -> u64 {
    let labels = sluice_broker::metrics::ApiLabels { api: "Fetch".into() };
    broker.server().broker().metrics.requests.get_or_create(&labels).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_bounded_response_bytes() {
    const LIMIT: usize = 1 << 20;
    let broker = TestBroker::start(|c| c.max_queued_response_bytes = LIMIT).await;
    let admin = broker.connect().await;
    create_topic(&admin, "big", 1, &[]).await.unwrap();
    for i in 0..16 {
        produce(&admin, "big", 0, Acks::Leader, batch(8, 32 << 10, i)).await.unwrap();
        // 256 KiB each
    }
    // 1,000 pipelined fetches of 1 MiB each, and never a byte read back.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hostile = socket.connect(broker.addr).await.unwrap();
    let fetch = sluice_protocol::api::FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![sluice_protocol::api::FetchPartition {
            topic: "big".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
        }],
    };
    let mut wire = Vec::new();
    for i in 0..1000 {
        wire.extend(frame(&encode_request(i, "hostile", &fetch).into_bytes()));
    }
    let writer = tokio::spawn(async move {
        let _ = hostile.write_all(&wire).await; // blocks once the broker stops reading
        hostile
    });
    // Wait until the broker stops answering (no new answer for 500 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (fetches_answered(&broker), Instant::now());
    while last.1.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the broker kept answering a client that never reads");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = fetches_answered(&broker);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    // Each answer is ~1 MiB. Counting only (channel + in flight) would let
    // 2 × max_in_flight_per_connection (256) answers pile up; the byte bound
    // stops at the limit, the socket buffers and the answers already started.
    let answered = fetches_answered(&broker);
    let max_in_flight = broker.config.max_in_flight_per_connection as u64;
    assert!(
        answered < max_in_flight + 40,
        "{answered} MiB-sized answers buffered for a client that never reads"
    );
    // Meanwhile other clients are served as usual.
    let other = broker.connect().await;
    let p = fetch_once(&other, "big", 0, 0, 0).await.unwrap();
    assert!(p.error_code.is_ok() && !p.records.is_empty());
    produce(&other, "big", 0, Acks::Durable, batch(1, 10, 99)).await.unwrap();
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_bounded_and_a_heartbeat_storm_does_not_stall_other_groups() {
    use sluice_protocol::api::{GroupHeartbeatRequest, OffsetFetchRequest};
    let broker = TestBroker::start(|c| c.max_groups = 50).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 4, &[]).await.unwrap();
    let join = |group: String| GroupHeartbeatRequest {
        group,
        member_id: String::new(),
        member_epoch: 0,
        client_host: "h".into(),
        session_timeout_ms: 30_000,
        topics: vec!["t".into()],
        owned: vec![],
    };
    for i in 0..50 {
        admin.call(&join(format!("g{i}"))).await.unwrap();
    }
    let err = admin.call(&join("one-too-many".into())).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooManyGroups), "{err}");
    assert!(err.to_string().contains("max_groups"), "a clear message: {err}");
    // Reading offsets of unknown groups creates none; existing groups still work.
    admin.call(&OffsetFetchRequest { group: "nope".into(), partitions: vec![] }).await.unwrap();
    admin.call(&join("g7".into())).await.unwrap();

    // A storm: 4 connections pipelining joins into one group.
    let stop = Arc::new(AtomicBool::new(false));
    let mut storm = Vec::new();
    for c in 0..4 {
        let (addr, stop) = (broker.addr.to_string(), Arc::clone(&stop));
        let join = join("g0".into());
        storm.push(tokio::spawn(async move {
            let conn =
                sluice_protocol::client::Connection::connect(&addr, &format!("storm{c}")).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let calls: Vec<_> = (0..32).map(|_| conn.call(&join)).collect();
                for r in futures_util::future::join_all(calls).await {
                    r.unwrap();
                }
            }
        }));
    }
    // Another group's heartbeats stay prompt meanwhile.
    let quiet = broker.connect().await;
    let first = quiet.call(&join("g1".into())).await.unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let mut beat = join("g1".into());
        beat.member_id = first.member_id.clone();
        beat.member_epoch = first.member_epoch;
        quiet.call(&beat).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for s in storm {
        s.await.unwrap();
    }
    assert!(slowest < Duration::from_millis(500), "a heartbeat of a quiet group took {slowest:?}");
}

#[tokio::test]
async fn timestamps_from_the_future_are_refused_with_a_typed_error() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    create_topic(&admin, "t", 1, &[]).await.unwrap();
    create_topic(&admin, "stamped", 1, &[("message_timestamp", "log_append")]).await.unwrap();
    let now = sluice_broker::storage::now_ms();
    let future_batch = |ts: i64| {
        let mut b = sluice_protocol::batch::BatchBuilder::new();
        b.append(ts, None, Some(b"from the future"), &[]);
        b.build()
    };
    let two_hours = 2 * 3600 * 1000;
    let err = produce(&admin, "t", 0, Acks::Durable, future_batch(now + two_hours)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidTimestamp), "{err}");
    assert!(err.to_string().contains("message_timestamp_after_max_ms"), "{err}");
    produce(&admin, "t", 0, Acks::Durable, future_batch(now + 60_000)).await.unwrap();
    produce(&admin, "stamped", 0, Acks::Durable, future_batch(now + two_hours)).await.unwrap();
    // The producer client surfaces it as the same typed error.
    let producer =
        sluice_producer::Producer::builder().bootstrap(broker.addr.to_string()).build().await.unwrap();
    let err = producer
        .send_and_wait(sluice_producer::Record::new("t", "v").partition(0).timestamp(now + two_hours))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidTimestamp), "{err}");
}
