//! One run's result: the JSON object `--json` prints (every parameter,
//! throughput, latency percentiles, and what the scenario adds) and the
//! one-line summary printed otherwise.
//!
//! The structs list their fields in alphabetical order, and scenario-only
//! fields are left out when absent: the report's keys and their order are
//! those it has always had.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Args, Scenario};
use crate::cpu::{per_million, CpuSample};
use crate::progress::plot;

/// A run's result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Payload bytes moved (`messages` × `--message-size`).
    pub bytes: u64,
    /// CPU-seconds of the timed section (`null` where unknown).
    pub cpu_s: Cpu,
    /// CPU-seconds per million records (`messages`).
    pub cpu_s_per_million: Cpu,
    /// consume: how long the group took to settle before the clock started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_settle_ms: Option<u64>,
    /// consume: what the latency measures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<&'static str>,
    /// A `--processes` child's latency histogram for its parent to merge
    /// (hex of hdrhistogram's V2 serialization).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_histogram: Option<String>,
    /// Latency percentiles (µs).
    pub latency_us: Latency,
    /// Payload megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// Messages sent (produce) or read (consume, e2e).
    pub messages: u64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// The run's parameters.
    pub parameters: Parameters,
    /// `--processes`: each process's msgs/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_process_msgs_per_sec: Option<Vec<f64>>,
    /// e2e: messages the producers sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produced: Option<u64>,
    /// `produce`, `consume` or `e2e`.
    pub scenario: &'static str,
    /// Timed seconds.
    pub seconds: f64,
}

/// CPU-seconds of the broker and of the clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cpu {
    /// The broker: its runtime's threads, or its process (`--broker-pid`).
    pub broker: Option<f64>,
    /// The benchmark's producers and consumers (whole processes, less the
    /// in-process broker).
    pub clients: Option<f64>,
}

impl Cpu {
    /// From a sample of the timed section.
    pub fn spent(sample: CpuSample) -> Self {
        Self { broker: sample.broker, clients: sample.clients }
    }

    /// Per million of `records`.
    pub fn per_million(self, records: u64) -> Self {
        Self { broker: per_million(self.broker, records), clients: per_million(self.clients, records) }
    }
}

impl Latency {
    /// The percentiles of a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        let q = |quantile| h.value_at_quantile(quantile);
        Self { max: h.max(), p50: q(0.5), p90: q(0.9), p99: q(0.99), p99_9: q(0.999) }
    }
}

/// Latency percentiles, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// The largest.
    pub max: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
}

/// The parameters of a run, as the report records them.
#[derive(Debug, Serialize)]
pub struct Parameters {
    acks: String,
    /// `send_batch` or `send_messages`, with `send_batch` > 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_call: Option<&'static str>,
    batch_bytes: usize,
    broker_threads: Option<usize>,
    buffer_memory: usize,
    /// `kafka` with `--client kafka` (absent for the native client).
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'static str>,
    client_threads: usize,
    compression: String,
    consumers: usize,
    fetch_bytes: Option<u32>,
    fsync: String,
    linger_ms: u64,
    message_size: usize,
    partitions: u32,
    processes: usize,
    producers: usize,
    rate: u64,
    send_batch: u64,
    /// `--sticky`: records named no partition.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sticky: bool,
    warmup_s: u64,
}

impl Parameters {
    pub fn new(args: &Args) -> Self {
        Self {
            acks: format!("{:?}", args.acks).to_lowercase(),
            batch_bytes: args.batch_bytes,
            batch_call: (args.send_batch > 0).then_some(match args.batch_call {
                crate::args::BatchCallArg::Records => "send_batch",
                crate::args::BatchCallArg::Messages => "send_messages",
            }),
            broker_threads: args.broker.is_none().then_some(args.broker_threads),
            buffer_memory: args.buffer_memory,
            client: (args.client == crate::args::ClientArg::Kafka).then_some("kafka"),
            client_threads: args.client_threads(crate::cores()),
            compression: format!("{:?}", args.compression).to_lowercase(),
            consumers: args.consumers,
            fetch_bytes: args.fetch_bytes,
            fsync: args.fsync_label(),
            linger_ms: args.linger,
            message_size: args.message_size,
            partitions: args.partitions,
            processes: args.processes.max(1),
            producers: args.producers,
            rate: args.rate,
            send_batch: args.send_batch,
            sticky: args.sticky,
            warmup_s: args.warmup,
        }
    }
}

/// What a scenario adds to its report.
#[derive(Debug, Default)]
pub struct Extra {
    /// CPU spent in the timed section.
    pub cpu: CpuSample,
    /// consume: see [`Report::group_settle_ms`].
    pub group_settle_ms: Option<u64>,
    /// consume: see [`Report::latency`].
    pub latency: Option<&'static str>,
    /// e2e: see [`Report::produced`].
    pub produced: Option<u64>,
}

/// One run's report; writes `--plot`.
pub fn report(
    args: &Args,
    scenario: &'static str,
    messages: u64,
    secs: f64,
    throughput: &[(f64, f64)],
    latency: &Histogram<u64>,
    extra: Extra,
) -> anyhow::Result<Report> {
    if let Some(path) = &args.plot {
        plot(path, scenario, throughput, latency)?;
    }
    let bytes = messages * args.message_size as u64;
    Ok(Report {
        bytes,
        cpu_s: Cpu::spent(extra.cpu),
        cpu_s_per_million: Cpu::spent(extra.cpu).per_million(messages),
        group_settle_ms: extra.group_settle_ms,
        latency: extra.latency,
        latency_histogram: args.barrier.is_some().then(|| crate::processes::encode(latency)).transpose()?,
        latency_us: Latency::of(latency),
        mb_per_sec: bytes as f64 / secs / 1e6,
        messages,
        msgs_per_sec: messages as f64 / secs,
        parameters: Parameters::new(args),
        per_process_msgs_per_sec: None,
        produced: extra.produced,
        scenario,
        seconds: secs,
    })
}

/// A rate as the summary prints it: 0 when it is not a number (JSON
/// has none for those either: they print as `null`).
fn rate(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// A CPU figure as the summary prints it.
fn cpu_text(x: Option<f64>) -> String {
    x.map_or_else(|| "unknown".into(), |s| format!("{s:.3} s"))
}

impl Report {
    /// Prints the report: one JSON object with `--json`, else one line.
    ///
    /// # Errors
    /// The report does not serialize (it always does).
    pub fn print(&self, args: &Args) -> anyhow::Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        let (l, msgs, mb) = (&self.latency_us, rate(self.msgs_per_sec), rate(self.mb_per_sec));
        match args.scenario {
            Scenario::E2e => println!(
                "e2e: {} {} B messages, {} producer(s), {} consumer(s), acks={:?}, fsync={}{}: {msgs:.0} msgs/s, {mb:.1} MB/s; end-to-end latency p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                self.messages, args.message_size, args.producers, args.consumers, args.acks, args.fsync_label(),
                if args.rate > 0 { format!(", rate cap {}/s", args.rate) } else { String::new() },
                l.p50, l.p90, l.p99, l.p99_9, l.max,
            ),
            Scenario::Consume => println!(
                "{} {} B messages read by {} consumer(s): {msgs:.0} msgs/s, {mb:.1} MB/s; poll latency p50 {} µs, p99 {} µs, max {} µs",
                self.messages, args.message_size, args.consumers, l.p50, l.p99, l.max,
            ),
            Scenario::Produce => println!(
                "{} {} B messages from {} producer(s), acks={:?}, fsync={}: {msgs:.0} msgs/s, {mb:.1} MB/s; latency p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                self.messages, args.message_size, args.producers, args.acks, args.fsync_label(),
                l.p50, l.p90, l.p99, l.p99_9, l.max,
            ),
        }
        let c = &self.cpu_s_per_million;
        println!(
            "  CPU-seconds per million records: broker {}, clients {} ({} process(es), {} client thread(s) each)",
            cpu_text(c.broker), cpu_text(c.clients), self.parameters.processes, self.parameters.client_threads,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_report_keeps_its_keys_in_order() {
        let report = Report {
            bytes: 1,
            cpu_s: Cpu { broker: Some(0.5), clients: None },
            cpu_s_per_million: Cpu { broker: Some(0.25), clients: None },
            group_settle_ms: None,
            latency: None,
            latency_histogram: None,
            latency_us: Latency { max: 5, p50: 1, p90: 2, p99: 3, p99_9: 4 },
            mb_per_sec: 0.5,
            messages: 1,
            msgs_per_sec: f64::INFINITY,
            per_process_msgs_per_sec: None,
            parameters: Parameters {
                acks: "durable".into(),
                batch_bytes: 2,
                batch_call: None,
                broker_threads: Some(2),
                buffer_memory: 3,
                client: None,
                client_threads: 1,
                compression: "none".into(),
                consumers: 1,
                fetch_bytes: None,
                fsync: "always".into(),
                linger_ms: 5,
                message_size: 1,
                partitions: 1,
                processes: 1,
                producers: 1,
                rate: 0,
                send_batch: 0,
                sticky: false,
                warmup_s: 0,
            },
            produced: Some(1),
            scenario: "e2e",
            seconds: 2.0,
        };
        let text = serde_json::to_string(&report).unwrap();
        // What `json!` printed: keys sorted, absent extras left out, a
        // rate that is not a number as null.
        let sorted = serde_json::to_value(&report).unwrap().to_string();
        assert_eq!(text, sorted);
        assert!(text.starts_with(concat!(
            r#"{"bytes":1,"cpu_s":{"broker":0.5,"clients":null},"#,
            r#""cpu_s_per_million":{"broker":0.25,"clients":null},"#,
            r#""latency_us":{"max":5,"p50":1,"p90":2,"p99":3,"p99.9":4},"#
        )));
        assert!(text.contains(r#""msgs_per_sec":null"#) && !text.contains("group_settle_ms"), "{text}");
    }
}
