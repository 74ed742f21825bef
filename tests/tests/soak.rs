//! Soak: a steady produce rate with a consuming group, segment rolls and
//! retention, while the broker's RSS, open files and produce latency are
//! sampled; none may creep. `SLUICE_SOAK_SECS` (default 20) sets the length;
//! an hour: `SLUICE_SOAK_SECS=3600 cargo test --release -p sluice-tests --test soak -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sluice_consumer::Consumer;
use sluice_producer::{Producer, Record};
use sluice_tests::{create_topic, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_does_not_leak_or_slow_down() {
    let secs: u64 = std::env::var("SLUICE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "retention_check_interval_ms = 200\n[topic_defaults]\nsegment_bytes = 65536\nretention_bytes = 262144\nretention_ms = 0\n").unwrap();
    let broker =
        ProcessBroker::spawn(SLUICE, &dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let admin = broker.connect().await;
    create_topic(&admin, "t", 4, &[]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let window: Arc<Mutex<Histogram<u64>>> = Arc::new(Mutex::new(Histogram::new(3).unwrap()));

    let producer = {
        let (addr, stop, window) = (broker.addr.to_string(), Arc::clone(&stop), Arc::clone(&window));
        tokio::spawn(async move {
            let p =
                Producer::builder().bootstrap(addr).linger(Duration::from_millis(2)).build().await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                // 2,000 records/s of 200 B; one sampled per tick.
                let sent = Instant::now();
                let mut last = None;
                for _ in 0..20 {
                    last = Some(p.send(Record::new("t", vec![b'x'; 200]).key(i.to_string())).await.unwrap());
                    i += 1;
                }
                let (window, f) = (Arc::clone(&window), last.unwrap());
                tokio::spawn(async move {
                    f.await.unwrap();
                    window.lock().unwrap().record(sent.elapsed().as_micros() as u64).unwrap();
                });
            }
            p.close().await.unwrap();
        })
    };
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let (addr, stop) = (broker.addr.to_string(), Arc::clone(&stop));
        consumers.push(tokio::spawn(async move {
            let c = Consumer::builder()
                .bootstrap(addr)
                .group("soak")
                .subscribe(["t"])
                .auto_commit_interval(Duration::from_millis(500))
                .build()
                .await
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                c.poll(Duration::from_millis(100)).await.unwrap();
            }
            c.close().await.unwrap();
        }));
    }

    let pid = broker.pid();
    let mut samples = Vec::new();
    let started = Instant::now();
    let every = Duration::from_secs((secs / 10).max(2));
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(every).await;
        let (p99, p50) = {
            let mut h = window.lock().unwrap();
            let v = (h.value_at_quantile(0.99), h.value_at_quantile(0.5));
            h.reset();
            v
        };
        let sample =
            (started.elapsed().as_secs(), broker.rss_bytes().unwrap_or(0) >> 20, open_files(pid), p99, p50);
        eprintln!(
            "soak t={}s rss={} MiB fds={} produce p99={} µs p50={} µs",
            sample.0, sample.1, sample.2, sample.3, sample.4
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    for c in consumers {
        c.await.unwrap();
    }
    // Compare the end with the state after warm-up (the second sample).
    let (first, last) = (samples[1.min(samples.len() - 1)], *samples.last().unwrap());
    assert!(last.1 <= first.1 * 3 / 2 + 32, "RSS crept: {samples:?}");
    assert!(last.2 <= first.2 + 24, "open files crept: {samples:?}");
    // A creep is a trend, not noisy windows: the disk's fsync latency has
    // spikes of 100+ ms that decide a 2-second window's p99 (a CI run saw
    // late-window p99s of 71 and 166 ms with the p50 flat), so compare the
    // medians of the early and late windows' p50, which a real slowdown
    // (a leak, a growing scan) moves too.
    let median = |w: &[(u64, u64, usize, u64, u64)]| {
        let mut v: Vec<u64> = w.iter().map(|s| s.4).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (early, late) = samples.split_at(samples.len() / 2);
    assert!(median(late) <= median(early) * 2 + 10_000, "latency crept: {samples:?}");
}
