//! Record-batch micro-benchmarks: building (encode + CRC) and reading
#![allow(clippy::unwrap_used)]
//! (CRC check + iterating every record) a batch of 1,000 records of 100 B and
//! of 1 KiB, uncompressed and lz4. Run: `cargo bench -p sluice-benches --bench batch`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_protocol::batch::{BatchBuilder, Compression, RecordBatch};

const RECORDS: usize = 1_000;

fn build(value: &[u8], codec: Compression) -> Bytes {
    let mut b = BatchBuilder::with_capacity(RECORDS * (value.len() + 16)).compression(codec);
    for i in 0..RECORDS {
        b.append(1_700_000_000_000 + i as i64, Some(&(i as u32).to_be_bytes()), Some(value), &[]);
    }
    b.build()
}

/// Semi-compressible values (like JSON-ish payloads), not all zeros.
fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"sluice-message-"[i % 15] ^ ((i / 64) as u8)).collect()
}

fn benches(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let v = value(size);
        for codec in [Compression::None, Compression::Lz4] {
            let id = format!("{size}B/{codec:?}");
            let mut g = c.benchmark_group("batch");
            g.throughput(Throughput::Bytes((RECORDS * size) as u64));
            g.bench_function(BenchmarkId::new("encode", &id), |b| b.iter(|| build(black_box(&v), codec)));
            let bytes = build(&v, codec);
            g.bench_function(BenchmarkId::new("read", &id), |b| {
                b.iter(|| {
                    let batch = RecordBatch::new(black_box(bytes.clone())).unwrap();
                    batch.verify_crc().unwrap();
                    let records = batch.records().unwrap();
                    let mut total = 0usize;
                    for r in records.iter() {
                        total += r.unwrap().value.map_or(0, <[u8]>::len);
                    }
                    assert_eq!(total, RECORDS * size);
                })
            });
            g.finish();
        }
    }
}

criterion_group!(batch, benches);
criterion_main!(batch);
