//! Storage micro-benchmarks: appending batches of 1,000 records (100 B and
//! 1 KiB values) with `fsync = never` and `fsync = always` (one writer, and 8
//! writers sharing group commit), and sequential reads from page cache.
//! Run: `cargo bench -p sluice-benches --bench storage`. The data directory
//! is a temporary directory under `$SLUICE_BENCH_DIR` (default: the system's).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_broker::storage::{DiskSpace, FsyncPolicy, Log, LogConfig};
use sluice_protocol::batch::BatchBuilder;

const RECORDS: usize = 1_000;

fn batch(value_len: usize) -> Bytes {
    let value: Vec<u8> = (0..value_len).map(|i| (i % 251) as u8).collect();
    let mut b = BatchBuilder::with_capacity(RECORDS * (value_len + 16));
    for i in 0..RECORDS {
        b.append(i as i64, None, Some(&value), &[]);
    }
    b.build()
}

fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("SLUICE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Log {
    let config = LogConfig { fsync, segment_bytes: 1 << 30, ..LogConfig::default() };
    Log::open(dir, config, DiskSpace::Real).unwrap().0
}

/// `writers` threads each append `per_writer` batches, syncing each one
/// when `sync` is set; returns the elapsed time.
fn run_writers(log: &Arc<Log>, batch: &Bytes, writers: usize, per_writer: u64, sync: bool) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..writers {
            s.spawn(|| {
                for _ in 0..per_writer {
                    let info = log.append(batch, 0).unwrap();
                    if sync {
                        log.sync_to(info.last_offset + 1).unwrap();
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn append(c: &mut Criterion) {
    for value_len in [100usize, 1024] {
        let b = batch(value_len);
        let mut g = c.benchmark_group(format!("append/{value_len}B"));
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.sample_size(20);
        for (name, policy, writers) in [
            ("never", FsyncPolicy::Never, 1),
            ("always-1-writer", FsyncPolicy::Always, 1),
            ("always-8-writers", FsyncPolicy::Always, 8),
        ] {
            g.bench_function(BenchmarkId::from_parameter(name), |bench| {
                bench.iter_custom(|iters| {
                    // A fresh log per sample, rolled well before 1 GiB.
                    let dir = temp_dir();
                    let log = Arc::new(open(dir.path(), policy));
                    let per_writer = iters.div_ceil(writers as u64);
                    let elapsed = run_writers(&log, &b, writers, per_writer, policy == FsyncPolicy::Always);
                    elapsed.mul_f64(iters as f64 / (per_writer * writers as u64) as f64)
                })
            });
        }
        g.finish();
    }
}

fn read(c: &mut Criterion) {
    for value_len in [100usize, 1024] {
        let b = batch(value_len);
        let dir = temp_dir();
        let log = open(dir.path(), FsyncPolicy::Never);
        let batches = (256 << 20) / b.len();
        for _ in 0..batches {
            log.append(&b, 0).unwrap();
        }
        let end = log.log_end_offset();
        let mut g = c.benchmark_group(format!("read/{value_len}B"));
        g.throughput(Throughput::Bytes((batches * b.len()) as u64));
        g.sample_size(10);
        g.bench_function("sequential-1MiB-reads", |bench| {
            bench.iter(|| {
                let mut offset = 0;
                let mut bytes = 0;
                while offset < end {
                    let chunk = log.read(offset, 1 << 20).unwrap();
                    bytes += chunk.len();
                    let last = sluice_protocol::batch::split_batches(chunk).last().unwrap().unwrap();
                    offset = last.header().next_offset();
                }
                assert_eq!(bytes, batches * b.len());
            })
        });
        g.finish();
    }
}

criterion_group!(storage, append, read);
criterion_main!(storage);
