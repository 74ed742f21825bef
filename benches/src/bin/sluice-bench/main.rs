//! `sluice-bench`: end-to-end throughput and latency of a running broker,
//! or of one it starts itself on a temporary data directory.
//!
//! `sluice-bench produce --message-size 100 --messages 5000000 --acks leader`
//!
//! Scenarios: `produce` (`--producers` producers; latency is send to
//! acknowledgement of sampled records), `consume` (writes a backlog, then a
//! `--consumers` group reads it; latency is per poll), and `e2e` (producers
//! and a group at once; latency is from the producer's send to the
//! consumer's receipt). Reports msgs/s, MB/s, latency percentiles and the
//! CPU-seconds per million records of the broker and of the clients;
//! `--json` prints one JSON object. Every run is bounded by `--messages`
//! and `--duration`. Only loopback addresses are used.
//!
//! The broker this tool starts runs on its own runtime (`--broker-threads`
//! workers named `broker`); the clients on another, with one worker per
//! actor up to the machine's cores (`--client-threads` overrides it).
//! `--processes N` runs N such processes against one broker and sums them.
//!
//! The program is its own module tree (it uses `anyhow`, which libraries
//! here do not): [`args`] (the command line), [`load`] (topic, producers,
//! group members), [`scenarios`], [`processes`] (`--processes`), [`cpu`]
//! (CPU accounting from `/proc`), [`report`] (JSON and summary),
//! [`progress`] (progress bar, `--plot`) and [`kafka`] (`--client kafka`:
//! the scenarios through librdkafka on the Kafka port, feature `kafka`).

mod args;
mod cpu;
mod kafka;
mod load;
mod processes;
mod progress;
mod report;
mod scenarios;

use anyhow::{bail, Context};
use clap::Parser;
use sluice_broker::config::BrokerConfig;
use sluice_broker::server::Server;

use crate::args::{Args, ClientArg, Scenario};
use crate::scenarios::{consume, e2e, produce};

/// The machine's cores (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The broker gets its own runtime (and threads), like a separate process.
    let broker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.broker_threads.max(1))
        .thread_name(cpu::BROKER_THREADS)
        .enable_all()
        .build()?;
    let temp = match &args.data_dir {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let (addr, server) = broker_rt.block_on(start_broker(&args, temp.path()))?;
    let result = if args.processes > 1 {
        processes::run(&args, &addr, args.broker_cpu())?
    } else {
        run_here(&args, &addr, server.is_some())?
    };
    if let Some(server) = server {
        broker_rt.block_on(async {
            server.shutdown();
            server.wait().await
        })?;
    }
    result.print(&args)
}

/// The broker's address: `--broker` (loopback only), or one started here
/// on `data_dir` with `--fsync` (then the server is returned too).
async fn start_broker(args: &Args, data_dir: &std::path::Path) -> anyhow::Result<(String, Option<Server>)> {
    if let Some(addr) = &args.broker {
        if !addr.starts_with("127.") && !addr.starts_with("[::1]") && !addr.starts_with("localhost") {
            bail!("benchmarks only talk to loopback addresses, not {addr}");
        }
        return Ok((addr.clone(), None));
    }
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        admin_listen: String::new(),
        kafka_listen: if args.client == ClientArg::Kafka { "127.0.0.1:0".into() } else { String::new() },
        metrics: !args.no_metrics,
        data_dir: data_dir.to_owned(),
        ..BrokerConfig::default()
    };
    config.topic_defaults.fsync = args.fsync;
    let (server, _) = Server::start(config).await.context("starting the broker")?;
    let addr = match server.kafka_addr() {
        Some(kafka) if args.client == ClientArg::Kafka => kafka,
        _ => server.local_addr(),
    };
    Ok((addr.to_string(), Some(server)))
}

/// Runs the scenario in this process, on a client runtime sized to it.
fn run_here(args: &Args, addr: &str, create: bool) -> anyhow::Result<report::Report> {
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("clients")
        .worker_threads(args.client_threads(cores()))
        .enable_all()
        .build()?;
    if args.client == ClientArg::Kafka {
        return kafka::run(args, addr, &client_rt);
    }
    Ok(match args.scenario {
        Scenario::Produce => client_rt.block_on(produce(args, addr, create))?,
        Scenario::Consume => {
            let backlog = client_rt.block_on(produce(args, addr, create))?;
            client_rt.block_on(consume(args, addr, backlog.messages))?
        }
        Scenario::E2e => client_rt.block_on(e2e(args, addr, create))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_its_records_threads_and_cpu() {
        let args = Args::parse_from(
            "b e2e --messages 3000 --producers 2 --consumers 2 --partitions 2 --acks leader --fsync never"
                .split_whitespace(),
        );
        let broker_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(cpu::BROKER_THREADS)
            .enable_all()
            .build()
            .unwrap();
        let temp = tempfile::tempdir().unwrap();
        let (addr, server) = broker_rt.block_on(start_broker(&args, temp.path())).unwrap();
        let report = run_here(&args, &addr, true).unwrap();
        broker_rt.block_on(async { server.map(|s| s.shutdown()) });
        assert_eq!(report.messages, 3000);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["parameters"]["client_threads"], 4.min(cores()));
        if cfg!(target_os = "linux") {
            // Known (both sampled from /proc), though a short run may
            // spend less than one 10 ms tick on either side.
            assert!(json["cpu_s_per_million"]["broker"].is_number(), "{json}");
            assert!(json["cpu_s_per_million"]["clients"].is_number(), "{json}");
        }
    }
}
