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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cpu::BROKER_THREADS;

    /// Starts the in-process broker as `main` does for `line`; returns
    /// its runtime, server and the address the clients get.
    fn broker(
        args: &Args,
    ) -> (tokio::runtime::Runtime, tempfile::TempDir, sluice_broker::server::Server, String) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(BROKER_THREADS)
            .enable_all()
            .build()
            .unwrap();
        let temp = tempfile::tempdir().unwrap();
        let (addr, server) = rt.block_on(crate::start_broker(args, temp.path())).unwrap();
        (rt, temp, server.unwrap(), addr)
    }

    #[test]
    fn kafka_clients_get_the_kafka_port() {
        let args = Args::parse_from("b produce --client kafka".split_whitespace());
        let (rt, _temp, server, addr) = broker(&args);
        assert_eq!(Some(addr), server.kafka_addr().map(|a| a.to_string()));
        rt.block_on(async { server.shutdown() });
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn without_the_feature_a_kafka_run_names_it() {
        let args = Args::parse_from("b produce --client kafka".split_whitespace());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = run(&args, "127.0.0.1:1", &rt).unwrap_err().to_string();
        assert!(err.contains("--features kafka"), "{err}");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn small_kafka_runs_report_their_records_and_cpu() {
        for scenario in ["produce", "consume", "e2e"] {
            let line = format!(
                "b {scenario} --client kafka --messages 3000 --producers 2 --consumers 2 --partitions 3 \
                 --acks durable --fsync never --duration 20"
            );
            let args = Args::parse_from(line.split_whitespace());
            let (rt, _temp, server, addr) = broker(&args);
            let report = crate::run_here(&args, &addr, true).unwrap();
            rt.block_on(async { server.shutdown() });
            assert_eq!(report.messages, 3000, "{scenario}");
            let json = serde_json::to_value(&report).unwrap();
            assert_eq!(json["parameters"]["client"], "kafka");
            if cfg!(target_os = "linux") {
                assert!(json["cpu_s_per_million"]["clients"].as_f64().unwrap() > 0.0, "{json}");
            }
        }
    }
}
