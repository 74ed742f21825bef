//! Sluice benchmarks. The criterion micro-benchmarks live in `benches/`
//! (`cargo bench -p sluice-benches`); the end-to-end throughput and latency
//! harness (`sluice-bench`) joins them with the client crates.
