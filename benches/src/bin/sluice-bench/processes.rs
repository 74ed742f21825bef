//! `--processes N`: N benchmark processes against one broker, started
//! together, their results summed; so a many-core run is not limited by one
//! client process.
//!
//! The parent starts the broker (or uses `--broker`), then runs this same
//! program N times with its own command line and, appended (the later flag
//! wins), `--processes 1 --broker ADDR --topic TOPIC-i --messages SHARE
//! --json --barrier DIR`. Each child sets up (topic, connections, its
//! backlog for `consume`, its group settled), creates `DIR/ready-PID` and
//! waits for `DIR/go`; the parent creates `go` once all are ready, so the
//! timed sections start together.
//!
//! Summed: messages, bytes, msgs/s, MB/s and the clients' CPU (each child's
//! own timed section). Seconds is the longest child's. Latency: the
//! children's histograms (in their JSON, hdrhistogram's V2 serialization
//! in hex) merged; where one is missing, each percentile is the largest of
//! the children's (an upper bound). The broker's CPU is measured by the parent from `go`
//! until the last child has exited (so it includes the children closing
//! their connections, which costs little).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::args::Args;
use crate::cpu::{self, BrokerCpu};
use crate::report::{Cpu, Latency, Parameters, Report};

/// How long setting up (a child) or waiting for the others may take.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(300);

/// A child's side of the start barrier (nothing without `--barrier`).
///
/// # Errors
/// The ready file cannot be written, or `go` does not appear in time.
pub async fn barrier(args: &Args) -> anyhow::Result<()> {
    let Some(dir) = &args.barrier else { return Ok(()) };
    std::fs::write(dir.join(format!("ready-{}", std::process::id())), b"")?;
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    while !dir.join("go").exists() {
        if Instant::now() > deadline {
            bail!("no start signal in {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Runs `--processes` children against the broker at `addr` and sums them.
///
/// # Errors
/// A child cannot start, fails, or prints no report.
pub fn run(args: &Args, addr: &str, broker: BrokerCpu) -> anyhow::Result<Report> {
    if args.plot.is_some() {
        bail!("--plot draws one process's run: leave it out with --processes");
    }
    let n = args.processes;
    let dir = tempfile::tempdir()?;
    let mut children = Vec::new();
    for i in 0..n {
        children.push(spawn(args, addr, i, dir.path())?);
    }
    wait_ready(&mut children, dir.path())?;
    let before = cpu::sample(broker);
    std::fs::write(dir.path().join("go"), b"")?;
    let mut results = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("process {i} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let json: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("process {i} printed: {}", String::from_utf8_lossy(&out.stdout)))?;
        results.push(ProcessResult::from_json(&json).with_context(|| format!("process {i}'s report"))?);
    }
    let broker_cpu = before.until(cpu::sample(broker)).broker;
    Ok(sum(args, &results, broker_cpu))
}

/// Starts child `i` with the parent's command line and its own share.
fn spawn(args: &Args, addr: &str, i: usize, dir: &Path) -> anyhow::Result<Child> {
    let share = args.messages.div_ceil(args.processes as u64);
    let child = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .args(["--processes", "1", "--broker", addr, "--json"])
        .arg("--topic")
        .arg(format!("{}-{i}", args.topic))
        .arg("--messages")
        .arg(share.to_string())
        .arg("--barrier")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a benchmark process")?;
    Ok(child)
}

/// Waits until every child has created its ready file (or one has exited).
fn wait_ready(children: &mut [Child], dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    loop {
        let ready = std::fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ready-"))
            .count();
        if ready == children.len() {
            return Ok(());
        }
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("a benchmark process exited before the start ({status})");
            }
        }
        if Instant::now() > deadline {
            bail!("{ready} of {} processes ready in {BARRIER_TIMEOUT:?}", children.len());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the parent takes from one child's JSON report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessResult {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency: Latency,
    /// The child's own CPU-seconds in its timed section.
    pub clients_cpu_s: Option<f64>,
    /// The child's latency histogram, when it sent one.
    pub histogram: Option<Histogram<u64>>,
}

impl ProcessResult {
    /// Reads the fields of a child's `--json` report.
    ///
    /// # Errors
    /// A field is missing or of the wrong type.
    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        let u = |key: &str| v[key].as_u64().with_context(|| format!("no {key}"));
        let f = |key: &str| v[key].as_f64().with_context(|| format!("no {key}"));
        let l = |key: &str| v["latency_us"][key].as_u64().with_context(|| format!("no latency {key}"));
        Ok(Self {
            messages: u("messages")?,
            bytes: u("bytes")?,
            seconds: f("seconds")?,
            msgs_per_sec: f("msgs_per_sec")?,
            mb_per_sec: f("mb_per_sec")?,
            latency: Latency {
                max: l("max")?,
                p50: l("p50")?,
                p90: l("p90")?,
                p99: l("p99")?,
                p99_9: l("p99.9")?,
            },
            clients_cpu_s: v["cpu_s"]["clients"].as_f64(),
            histogram: v["latency_histogram"].as_str().map(decode).transpose()?,
        })
    }
}

/// The parent's report: the children summed (see the module doc).
pub fn sum(args: &Args, results: &[ProcessResult], broker_cpu_s: Option<f64>) -> Report {
    let max = |f: fn(&Latency) -> u64| results.iter().map(|r| f(&r.latency)).max().unwrap_or(0);
    let messages = results.iter().map(|r| r.messages).sum();
    let clients = results.iter().map(|r| r.clients_cpu_s).sum::<Option<f64>>();
    let merged = merge(results);
    let cpu = Cpu { broker: broker_cpu_s, clients };
    Report {
        bytes: results.iter().map(|r| r.bytes).sum(),
        cpu_s: cpu,
        cpu_s_per_million: cpu.per_million(messages),
        group_settle_ms: None,
        latency: Some(match merged {
            Some(_) => "the processes' histograms merged",
            None => "each percentile the largest of the processes'",
        }),
        latency_histogram: None,
        latency_us: merged.as_ref().map_or_else(
            || Latency {
                max: max(|l| l.max),
                p50: max(|l| l.p50),
                p90: max(|l| l.p90),
                p99: max(|l| l.p99),
                p99_9: max(|l| l.p99_9),
            },
            Latency::of,
        ),
        mb_per_sec: results.iter().map(|r| r.mb_per_sec).sum(),
        messages,
        msgs_per_sec: results.iter().map(|r| r.msgs_per_sec).sum(),
        parameters: Parameters::new(args),
        per_process_msgs_per_sec: Some(results.iter().map(|r| r.msgs_per_sec).collect()),
        produced: None,
        scenario: match args.scenario {
            crate::args::Scenario::Produce => "produce",
            crate::args::Scenario::Consume => "consume",
            crate::args::Scenario::E2e => "e2e",
        },
        seconds: results.iter().map(|r| r.seconds).fold(0.0, f64::max),
    }
}

/// Every child's histogram added up; `None` if one has none.
fn merge(results: &[ProcessResult]) -> Option<Histogram<u64>> {
    let mut merged = Histogram::<u64>::new(3).ok()?;
    for r in results {
        merged.add(r.histogram.as_ref()?).ok()?;
    }
    Some(merged)
}

/// A histogram as a child sends it: V2 serialization, in hex.
///
/// # Errors
/// The histogram does not serialize.
pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(h, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The histogram [`encode`] wrote.
///
/// # Errors
/// Not hex, or not a serialized histogram.
pub fn decode(hex: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).context("not hex"))
        .collect::<anyhow::Result<Vec<u8>>>()?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn child(messages: u64, rate: f64, p99: u64, cpu: Option<f64>) -> Value {
        serde_json::json!({
            "bytes": messages * 100, "messages": messages, "seconds": messages as f64 / rate,
            "msgs_per_sec": rate, "mb_per_sec": rate * 100.0 / 1e6,
            "latency_us": {"max": p99 * 2, "p50": 10, "p90": 20, "p99": p99, "p99.9": p99 + 1},
            "cpu_s": {"broker": null, "clients": cpu},
        })
    }

    #[test]
    fn the_processes_are_summed_and_their_latencies_bounded() {
        let args = Args::parse_from(["b", "produce", "--processes", "2"]);
        let results: Vec<_> = [child(1_000_000, 2e6, 300, Some(0.5)), child(1_000_000, 1e6, 900, Some(0.7))]
            .iter()
            .map(|v| ProcessResult::from_json(v).unwrap())
            .collect();
        let r = sum(&args, &results, Some(0.2));
        assert_eq!((r.messages, r.bytes, r.msgs_per_sec, r.seconds), (2_000_000, 200_000_000, 3e6, 1.0));
        assert!((r.mb_per_sec - 300.0).abs() < 1e-9);
        assert_eq!(r.latency_us, Latency { max: 1800, p50: 10, p90: 20, p99: 900, p99_9: 901 });
        assert_eq!(r.cpu_s.broker, Some(0.2));
        assert!((r.cpu_s.clients.unwrap() - 1.2).abs() < 1e-9);
        assert!((r.cpu_s_per_million.clients.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(r.cpu_s_per_million.broker, Some(0.1));
        assert_eq!(r.per_process_msgs_per_sec, Some(vec![2e6, 1e6]));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["parameters"]["processes"], 2);
    }

    #[test]
    fn an_unknown_cpu_figure_stays_unknown_and_a_bad_report_is_an_error() {
        let args = Args::parse_from(["b", "produce", "--processes", "2"]);
        let results: Vec<_> = [child(10, 1e3, 1, None), child(10, 1e3, 1, Some(1.0))]
            .iter()
            .map(|v| ProcessResult::from_json(v).unwrap())
            .collect();
        let r = sum(&args, &results, None);
        assert_eq!(r.cpu_s_per_million, Cpu { broker: None, clients: None });
        assert!(ProcessResult::from_json(&serde_json::json!({"messages": 1})).is_err());
    }

    #[test]
    fn histograms_travel_in_hex_and_are_merged() {
        let args = Args::parse_from(["b", "produce", "--processes", "2"]);
        let (mut a, mut b) = (Histogram::<u64>::new(3).unwrap(), Histogram::<u64>::new(3).unwrap());
        a.record_n(100, 99).unwrap();
        b.record_n(10_000, 1).unwrap();
        assert_eq!(decode(&encode(&a).unwrap()).unwrap(), a);
        assert!(decode("zz").is_err() && decode("0102").is_err());
        let results: Vec<_> = [(a, 300), (b, 20_000)]
            .iter()
            .map(|(h, p99)| {
                let mut v = child(100, 1e3, *p99, Some(0.1));
                v["latency_histogram"] = encode(h).unwrap().into();
                ProcessResult::from_json(&v).unwrap()
            })
            .collect();
        let r = sum(&args, &results, None);
        // Merged: 99 of 100 samples are 100 µs, so the p50 and p90 are
        // too, where the per-percentile maximum would say 10 ms for p99.
        assert_eq!((r.latency_us.p50, r.latency_us.p90, r.latency_us.p99), (100, 100, 100));
        assert!(r.latency_us.max >= 10_000 && r.latency.unwrap().contains("merged"));
    }
}
