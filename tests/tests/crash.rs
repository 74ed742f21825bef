//! Crash tests with a real `sluice serve` process: acknowledged data
//! survives `kill -9`, and a broker with thousands of partitions starts,
//! accepts writes and recovers quickly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice_protocol::api::Acks;
use sluice_tests::{batch, create_topic, disk_usage, produce, read_partition, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

type Acked = Arc<Mutex<Vec<(u32, u64, Bytes)>>>;

/// Several producers on their own connections write durable batches of
/// random sizes to 3 partitions (small segments, so rolls happen) until the
/// broker is killed; returns what was acknowledged.
async fn produce_until_killed(broker: &mut ProcessBroker, seed: u64) -> Vec<(u32, u64, Bytes)> {
    let acked: Acked = Arc::default();
    let mut producers = Vec::new();
    for w in 0..4u64 {
        let conn = broker.connect().await;
        let acked = Arc::clone(&acked);
        producers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + w);
            for i in 0..100_000u64 {
                let partition = rng.gen_range(0..3u32);
                let b = batch(rng.gen_range(1..20), rng.gen_range(0..400), (w << 32) | i);
                match produce(&conn, "t", partition, Acks::Durable, b.clone()).await {
                    Ok(resp) => acked.lock().unwrap().push((partition, resp.base_offset, b)),
                    Err(_) => return, // the broker died
                }
            }
        }));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
    broker.kill9();
    for p in producers {
        p.await.unwrap();
    }
    let out = acked.lock().unwrap().clone();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_kill_9() {
    for seed in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--fsync", "always"]);
        let admin = broker.connect().await;
        create_topic(&admin, "t", 3, &[("segment_bytes", "65536")]).await.unwrap();
        let acked = produce_until_killed(&mut broker, seed).await;
        assert!(!acked.is_empty(), "seed {seed}: nothing was acknowledged before the kill");

        let restarted = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
        let conn = restarted.connect().await;
        let mut stored: HashMap<(u32, u64), Bytes> = HashMap::new();
        for partition in 0..3 {
            let batches = read_partition(&conn, "t", partition, 0).await;
            let mut expected_base = 0;
            for b in batches {
                assert_eq!(
                    b.header().base_offset,
                    expected_base,
                    "seed {seed}: offsets dense in partition {partition}"
                );
                expected_base = b.header().next_offset();
                stored.insert((partition, b.header().base_offset), b.into_bytes());
            }
        }
        for (partition, base, sent) in &acked {
            let got = stored.get(&(*partition, *base)).unwrap_or_else(|| {
                panic!(
                    "seed {seed}: acknowledged batch at partition {partition} offset {base} lost\n{}",
                    restarted.log_text()
                )
            });
            // Past the stamped base_offset and leader epoch.
            assert_eq!(&got[16..], &sent[16..], "seed {seed}: batch at {partition}/{base} differs");
        }
        eprintln!("seed {seed}: {} acknowledged batches survived kill -9", acked.len());
    }
}

fn log_value(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find(|l| l.contains("sluice listening"))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))?
        .parse()
        .ok()
}

/// 20 topics × 100 partitions: start, produce to every partition, restart
/// cleanly and after `kill -9`. Prints start-up time, recovery time, RSS and
/// disk use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let admin = broker.connect().await;
    for t in 0..20 {
        create_topic(&admin, &format!("topic-{t}"), 100, &[]).await.unwrap();
    }
    let conns: Vec<_> = futures_util::future::join_all((0..8).map(|_| broker.connect())).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in (i..2000).step_by(8) {
                let (t, p) = (n / 100, (n % 100) as u32);
                produce(&conn, &format!("topic-{t}"), p, Acks::Durable, batch(1, 100, n as u64))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let produce_time = started.elapsed();
    let rss_running = broker.rss_bytes().unwrap_or(0);
    assert!(broker.terminate(), "graceful shutdown exits 0");

    let started = Instant::now();
    let mut clean = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let clean_start = started.elapsed();
    let clean_log = clean.log_text();
    let rss_idle = clean.rss_bytes().unwrap_or(0);
    let disk = disk_usage(dir.path());
    let c = clean.connect().await;
    assert_eq!(read_partition(&c, "topic-19", 99, 0).await.len(), 1);
    clean.kill9();

    let started = Instant::now();
    let recovered = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let crash_start = started.elapsed();
    let crash_log = recovered.log_text();
    let c = recovered.connect().await;
    assert_eq!(read_partition(&c, "topic-7", 42, 0).await.len(), 1);
    assert_eq!(log_value(&crash_log, "recovered_partitions="), Some(2000));

    let listening =
        |log: &str| log.lines().rev().find(|l| l.contains("sluice listening")).unwrap_or_default().to_owned();
    eprintln!("clean start: {}\nafter kill -9: {}", listening(&clean_log), listening(&crash_log));
    assert_eq!(
        log_value(&clean_log, "recovered_partitions="),
        Some(0),
        "graceful shutdown closed every partition cleanly"
    );
    eprintln!(
        "2000 partitions: produce 1 record each {produce_time:?}; clean start {clean_start:?} (load {} ms); \
         start after kill -9 {crash_start:?} (recovery {} ms); RSS running {} MiB, idle after restart {} MiB; disk {} MiB",
        log_value(&clean_log, "recovery_ms=").unwrap_or(0),
        log_value(&crash_log, "recovery_ms=").unwrap_or(0),
        rss_running >> 20,
        rss_idle >> 20,
        disk >> 20,
    );
    assert!(clean_start < Duration::from_secs(10), "clean start took {clean_start:?}");
    assert!(rss_idle < 600 << 20, "idle RSS {} MiB", rss_idle >> 20);
    assert!(disk < 1 << 30, "disk {} MiB", disk >> 20);
}
