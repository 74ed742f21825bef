//! `sluice-bench`'s command line: the scenario and every knob of a run.

use clap::{Parser, ValueEnum};
use sluice_broker::storage::FsyncPolicy;
use sluice_producer::{Acks, Compression};

use crate::cpu::BrokerCpu;

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

/// `--client`: which client library the scenario's producers and
/// consumers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientArg {
    /// Sluice's own producer and consumer, on the native port.
    Native,
    /// librdkafka on the Kafka port (needs the `kafka` feature; see
    /// [`crate::kafka`]).
    Kafka,
}

/// `--batch-call`: which producer call `--send-batch N` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BatchCallArg {
    /// `send_batch(records)`: each record names its topic.
    Records,
    /// `send_messages(topic, &messages)`: one topic per call, the messages
    /// borrowed (built once per producer task and sent again).
    Messages,
}

/// `--compression`: the producers' batch compression.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `sluice-bench` arguments.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Throughput and latency benchmarks for Sluice")]
// A later `--flag` wins over an earlier one: `--processes` children get the
// parent's command line with their own topic, broker and share appended.
#[command(args_override_self = true)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// A running broker (loopback; its Kafka port with `--client kafka`);
    /// when absent, one is started on a temp dir.
    #[arg(long)]
    pub broker: Option<String>,
    /// The client library: Sluice's own, or librdkafka over the Kafka port.
    #[arg(long, value_enum, default_value = "native")]
    pub client: ClientArg,
    /// Topic (created when missing).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Native producers name no partition: the producer's sticky
    /// partitioner picks it (Kafka's default for records without a key),
    /// instead of the round robin over the partitions.
    #[arg(long)]
    pub sticky: bool,
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
    /// Producer buffer memory (bytes): how far a producer may run ahead of
    /// the broker's acknowledgements. Eight batches: enough to keep one
    /// partition's five requests in flight with batches filling behind
    /// them, and small enough that the batches stay in the CPU's caches
    /// from encoding to the socket (docs/client-cost.md, sixth round).
    #[arg(long, default_value_t = 8 << 20)]
    pub buffer_memory: usize,
    /// Records per batch call (0: one `send` per record).
    #[arg(long, default_value_t = 0)]
    pub send_batch: u64,
    /// The batch call of `--send-batch`.
    #[arg(long, value_enum, default_value = "records")]
    pub batch_call: BatchCallArg,
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
    /// Worker threads of the client runtime (default: one per producer and
    /// consumer, up to the machine's cores).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Worker threads of the broker this tool starts.
    #[arg(long, default_value_t = 2)]
    pub broker_threads: usize,
    /// Pid of the `--broker` process, to report its CPU (else unknown).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Benchmark processes run against one broker, each on its own topic
    /// (`TOPIC-0`, `TOPIC-1`, ...) with `--messages` split between them,
    /// starting together; their results are summed.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// A `--processes` child's start barrier: it creates `DIR/ready-PID`
    /// when set up, then waits for `DIR/go`.
    #[arg(long, hide = true)]
    pub barrier: Option<std::path::PathBuf>,
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

impl Args {
    /// The client runtime's worker threads: `--client-threads`, else one
    /// per actor of the scenario (producers, consumers or both), at least
    /// one and at most `cores`.
    pub fn client_threads(&self, cores: usize) -> usize {
        let actors = match self.scenario {
            Scenario::Produce => self.producers,
            Scenario::Consume => self.producers.max(self.consumers),
            Scenario::E2e => self.producers + self.consumers,
        };
        self.client_threads.unwrap_or_else(|| actors.min(cores)).max(1)
    }

    /// Where the broker's CPU is read from.
    pub fn broker_cpu(&self) -> BrokerCpu {
        match (&self.broker, self.broker_pid) {
            (None, _) => BrokerCpu::InProcess,
            (Some(_), Some(pid)) => BrokerCpu::Process(pid),
            (Some(_), None) => BrokerCpu::Unknown,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Args {
        Args::parse_from(line.split_whitespace())
    }

    #[test]
    fn the_client_runtime_is_sized_to_the_actors_up_to_the_cores() {
        assert_eq!(parse("b produce --producers 4").client_threads(16), 4);
        assert_eq!(parse("b produce --producers 4").client_threads(2), 2);
        assert_eq!(parse("b produce --producers 0").client_threads(2), 1);
        assert_eq!(parse("b consume --producers 1 --consumers 3").client_threads(8), 3);
        assert_eq!(parse("b e2e --producers 4 --consumers 4").client_threads(16), 8);
        assert_eq!(parse("b produce --producers 8 --client-threads 3").client_threads(2), 3);
    }

    #[test]
    fn a_later_flag_overrides_an_earlier_one() {
        let args = parse("b produce --topic a --processes 4 --topic a-1 --processes 1 --broker 127.0.0.1:1");
        assert_eq!((args.topic.as_str(), args.processes), ("a-1", 1));
        assert_eq!(args.broker_cpu(), BrokerCpu::Unknown);
        assert_eq!(
            parse("b produce --broker 127.0.0.1:1 --broker-pid 7").broker_cpu(),
            BrokerCpu::Process(7)
        );
        assert_eq!(parse("b produce").broker_cpu(), BrokerCpu::InProcess);
    }
}
