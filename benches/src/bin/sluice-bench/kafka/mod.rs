//! `--client kafka`: the produce, consume and e2e scenarios through
//! librdkafka (the `rdkafka` crate's poll-based `BaseProducer` and
//! `BaseConsumer`, its cheapest APIs) against the broker's Kafka listener,
//! reporting what the native runs report (the same [`Report`]).
//!
//! The address is the broker's Kafka port: the in-process broker's Kafka
//! listener (on 127.0.0.1:0 when `--client kafka` is given), or `--broker`.
//! Built only with the benches crate's `kafka` feature (librdkafka compiles
//! from source, which CI and a plain `cargo build` skip); without it
//! `--client kafka` is an error that names the feature.
//!
//! Invariants: every loop is bounded by `--messages` and `--duration`; the
//! clients are built and connected before any clock starts, and the CPU of
//! the timed section is sampled before they are dropped (librdkafka's
//! threads count as the clients' CPU only while they live).

#[cfg(feature = "kafka")]
mod clients;
#[cfg(feature = "kafka")]
mod scenarios;

use crate::args::Args;
use crate::report::Report;

/// Runs `--scenario` with Kafka clients against the Kafka port `addr`.
///
/// # Errors
/// The run fails (see the scenarios), or the tool was built without the
/// `kafka` feature.
#[cfg(feature = "kafka")]
pub fn run(args: &Args, addr: &str, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    // The progress sampler is a task on the client runtime.
    let _enter = rt.enter();
    match args.scenario {
        crate::args::Scenario::Produce => scenarios::produce(args, addr, rt),
        crate::args::Scenario::Consume => {
            let backlog = scenarios::produce(args, addr, rt)?;
            scenarios::consume(args, addr, backlog.messages, rt)
        }
        crate::args::Scenario::E2e => scenarios::e2e(args, addr, rt),
    }
}

/// Without the `kafka` feature: an error saying how to build with it.
///
/// # Errors
/// Always.
#[cfg(not(feature = "kafka"))]
pub fn run(_args: &Args, _addr: &str, _rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    anyhow::bail!(
        "--client kafka needs librdkafka: build with \
         `cargo build --release -p sluice-benches --features kafka --bin sluice-bench`"
    )
}
