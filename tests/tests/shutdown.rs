//! Durable produces at the edges of a broker's life: a client's unbounded
//! `timeout_ms` is clamped to `max_request_timeout_ms`, and a graceful
//! shutdown flushes and answers pending durable produces instead of
//! waiting out their timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_protocol::api::{Acks, ProduceRequest};
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, create_topic, fetch_once, TestBroker};

/// An `interval` topic whose timer never fires during a test: a durable
/// produce stays pending until something else flushes it.
const NEVER_TICKS: (&str, &str) = ("fsync", "interval:3600000");

fn unbounded_produce(tag: u64) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::Durable,
        timeout_ms: u32::MAX,
        topic: "t".into(),
        partition: 0,
        batch: batch(2, 16, tag),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_pending_durable_produce_and_finishes_promptly() {
    let mut broker = TestBroker::start(|_| {}).await;
    let conn = broker.connect().await.with_timeout(Duration::from_secs(3600));
    create_topic(&conn, "t", 1, &[NEVER_TICKS]).await.unwrap();
    let pending = tokio::spawn(async move { conn.call(&unbounded_produce(1)).await });
    let partition = broker.server().broker().partition("t", 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while partition.log().log_end_offset() < 2 {
        assert!(Instant::now() < deadline, "the produce was never appended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!pending.is_finished(), "answered before any flush");

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), broker.stop())
        .await
        .expect("shutdown finished within 10 s");
    let answer = tokio::time::timeout(Duration::from_secs(1), pending).await.expect("answered").unwrap();
    assert_eq!(answer.expect("flushed by the shutdown, so acknowledged").base_offset, 0);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Acknowledged means durable: the record is there after a restart.
    let broker = broker.restart().await;
    let conn = broker.connect().await;
    let fetched = fetch_once(&conn, "t", 0, 0, 0).await.unwrap();
    assert_eq!(fetched.high_watermark, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_produce_waits_at_most_max_request_timeout_ms() {
    let mut broker = TestBroker::start(|c| c.max_request_timeout_ms = 200).await;
    let conn = broker.connect().await.with_timeout(Duration::from_secs(3600));
    create_topic(&conn, "t", 1, &[NEVER_TICKS]).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), conn.call(&unbounded_produce(2)))
        .await
        .expect("answered within the broker's limit, not the client's u32::MAX ms");
    assert_eq!(answer.unwrap_err().code(), Some(ErrorCode::RequestTimedOut));
    assert!(started.elapsed() >= Duration::from_millis(200));
    broker.stop().await;
}
