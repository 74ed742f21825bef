//! `sluice-bench`'s command line: the scenario and every knob of a run.

use clap::{Parser, ValueEnum};
use sluice_broker::storage::FsyncPolicy;
use sluice_producer::{Acks, Compression};

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `--producers` producers send `--messages` records between them;
    /// latency is send to acknowledgement.
    Produce,
    /// Writes a backlog of `--messages` records, then a `--consumers` group
    /// reads it all (timed once the group has settled); latency is per poll.
    Consume,
    /// `--producers` and a `--consumers` group at once; latency is from the
    /// producer's send to the consumer's receipt.
    E2e,
}

/// `--acks`: when the broker acknowledges.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    None,
    Leader,
    Durable,
}

/// `--compression`: the producers' batch compression.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `sluice-bench` arguments.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Throughput and latency benchmarks for Sluice")]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// A running broker (loopback); when absent, one is started on a temp dir.
    #[arg(long)]
    pub broker: Option<String>,
    /// Topic (created when missing).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Bytes per message value.
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    /// Messages to send at most.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Seconds to run at most.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Acknowledgement mode.
    #[arg(long, value_enum, default_value = "durable")]
    pub acks: AcksArg,
    /// fsync mode of the broker this tool starts.
    #[arg(long, default_value = "always")]
    pub fsync: FsyncPolicy,
    /// Producer linger (ms).
    #[arg(long, default_value_t = 5)]
    pub linger: u64,
    /// Producer batch size (bytes).
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// Data directory parent for a self-started broker.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Producers, each with its own connection (all scenarios).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Cap on messages per second over all producers (0 = no cap).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds at the start whose latencies are not recorded.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Start the broker with request metrics off (to measure their cost).
    #[arg(long)]
    pub no_metrics: bool,
    /// Batch compression of the producers.
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Write a chart of throughput over time and the latency distribution.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// Bytes per consumer fetch (default: the consumer's default).
    #[arg(long)]
    pub fetch_bytes: Option<u32>,
    /// Members of the consumer group (consume and e2e).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The fsync mode this run used: ours, or the running broker's own.
    pub fn fsync_label(&self) -> String {
        match self.broker {
            Some(_) => "broker's setting".into(),
            None => self.fsync.to_string(),
        }
    }
}

impl AcksArg {
    pub fn acks(self) -> Acks {
        match self {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }
}
