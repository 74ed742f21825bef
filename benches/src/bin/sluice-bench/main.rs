//! `sluice-bench`: end-to-end throughput and latency of a running broker,
//! or of one it starts itself on a temporary data directory.
//!
//! `sluice-bench produce --message-size 100 --messages 5000000 --acks leader`
//!
//! Scenarios: `produce` (`--producers` producers; latency is send to
//! acknowledgement of sampled records), `consume` (writes a backlog, then a
//! `--consumers` group reads it; latency is per poll), and `e2e` (producers
//! and a group at once; latency is from the producer's send to the
//! consumer's receipt). Reports msgs/s, MB/s and latency percentiles;
//! `--json` prints one JSON object. Every run is bounded by `--messages`
//! and `--duration`. Only loopback addresses are used.
//!
//! The program is its own module tree (it uses `anyhow`, which libraries
//! here do not): [`args`] (the command line), [`load`] (topic, producers,
//! group members), [`scenarios`], [`report`] (JSON and summary) and
//! [`progress`] (progress bar, `--plot`).

mod args;
mod load;
mod progress;
mod report;
mod scenarios;

use anyhow::{bail, Context};
use clap::Parser;
use sluice_broker::config::BrokerConfig;
use sluice_broker::server::Server;

use crate::args::{Args, Scenario};
use crate::scenarios::{consume, e2e, produce};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The broker gets its own runtime (and threads), like a separate process.
    let broker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("broker")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("clients")
        .worker_threads((args.consumers + args.producers).clamp(1, 2))
        .enable_all()
        .build()?;
    let temp = match &args.data_dir {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let (addr, server) = match &args.broker {
        Some(addr) => {
            if !addr.starts_with("127.") && !addr.starts_with("[::1]") && !addr.starts_with("localhost") {
                bail!("benchmarks only talk to loopback addresses, not {addr}");
            }
            (addr.clone(), None)
        }
        None => {
            let mut config = BrokerConfig {
                listen: "127.0.0.1:0".into(),
                admin_listen: String::new(),
                metrics: !args.no_metrics,
                data_dir: temp.path().to_owned(),
                ..BrokerConfig::default()
            };
            config.topic_defaults.fsync = args.fsync;
            let (server, _) = broker_rt.block_on(Server::start(config)).context("starting the broker")?;
            (server.local_addr().to_string(), Some(server))
        }
    };
    let result = match args.scenario {
        Scenario::Produce => client_rt.block_on(produce(&args, &addr, server.is_some()))?,
        Scenario::Consume => {
            let backlog = client_rt.block_on(produce(&args, &addr, server.is_some()))?;
            client_rt.block_on(consume(&args, &addr, backlog.messages))?
        }
        Scenario::E2e => client_rt.block_on(e2e(&args, &addr, server.is_some()))?,
    };
    if let Some(server) = server {
        broker_rt.block_on(async {
            server.shutdown();
            server.wait().await
        })?;
    }
    result.print(&args)
}
