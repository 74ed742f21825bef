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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use sluice_broker::config::BrokerConfig;
use sluice_broker::server::Server;
use sluice_broker::storage::FsyncPolicy;
use sluice_producer::{Acks, Compression, Producer, Record};
use sluice_protocol::api::{CreateTopicRequest, MetadataRequest};
use sluice_protocol::client::Connection;
use sluice_protocol::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AcksArg {
    None,
    Leader,
    Durable,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

impl CompressionArg {
    fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Counts messages during a run: drives the progress bar (on a terminal)
/// and samples throughput every 100 ms for `--plot`.
#[derive(Debug, Clone)]
struct Progress {
    count: Arc<std::sync::atomic::AtomicU64>,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    fn start(total: u64, label: &'static str) -> Self {
        use std::io::IsTerminal;
        let p = Self { count: Arc::default(), samples: Arc::default(), stop: Arc::default() };
        let bar = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(label);
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let q = p.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut last_count, mut last_at) = (0u64, 0f64);
            while !q.stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = q.count.load(std::sync::atomic::Ordering::Relaxed);
                let t = started.elapsed().as_secs_f64();
                bar.set_position(n);
                if let Ok(mut s) = q.samples.lock() {
                    s.push((t, (n - last_count) as f64 / (t - last_at).max(1e-9)));
                }
                (last_count, last_at) = (n, t);
            }
            bar.finish_and_clear();
        });
        p
    }

    fn add(&self, n: u64) {
        self.count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn finish(&self) -> Vec<(f64, f64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Throughput over time above the latency by percentile, as one SVG.
fn plot(
    path: &std::path::Path,
    title: &str,
    throughput: &[(f64, f64)],
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(350);
    let max_t = throughput.iter().map(|s| s.0).fold(0.1, f64::max);
    let max_r = throughput.iter().map(|s| s.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: throughput"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, 0.0..max_r)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("seconds").y_desc("msgs/s").draw().map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(throughput.iter().copied(), &BLUE)).map_err(|e| err(&e))?;
    let quantiles: Vec<(f64, f64)> = (0..=1000)
        .map(|i| {
            let q = f64::from(i) / 1000.0 * 0.999;
            (q * 100.0, latency.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let max_l = quantiles.iter().map(|q| q.1).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency by percentile (to p99.9)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..100.0, 0.0..max_l)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("percentile").y_desc("ms").draw().map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(quantiles, &RED)).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Throughput and latency benchmarks for Sluice")]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// A running broker (loopback); when absent, one is started on a temp dir.
    #[arg(long)]
    broker: Option<String>,
    /// Topic (created when missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Bytes per message value.
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Messages to send at most.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    /// Seconds to run at most.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Acknowledgement mode.
    #[arg(long, value_enum, default_value = "durable")]
    acks: AcksArg,
    /// fsync mode of the broker this tool starts.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Producer linger (ms).
    #[arg(long, default_value_t = 5)]
    linger: u64,
    /// Producer batch size (bytes).
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Data directory parent for a self-started broker.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Producers, each with its own connection (all scenarios).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Cap on messages per second over all producers (0 = no cap).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds at the start whose latencies are not recorded.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Start the broker with request metrics off (to measure their cost).
    #[arg(long)]
    no_metrics: bool,
    /// Batch compression of the producers.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Write a chart of throughput over time and the latency distribution.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Bytes per consumer fetch (default: the consumer's default).
    #[arg(long)]
    fetch_bytes: Option<u32>,
    /// Members of the consumer group (consume and e2e).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// One of every this many messages has its latency measured.
const SAMPLE_EVERY: u64 = 997;

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
            let messages = backlog["messages"].as_u64().unwrap_or(0);
            client_rt.block_on(consume(&args, &addr, messages))?
        }
        Scenario::E2e => client_rt.block_on(e2e(&args, &addr, server.is_some()))?,
    };
    if let Some(server) = server {
        broker_rt.block_on(async {
            server.shutdown();
            server.wait().await
        })?;
    }
    if args.json {
        println!("{result}");
    } else if args.scenario == Scenario::E2e {
        println!(
            "e2e: {} {} B messages, {} producer(s), {} consumer(s), acks={:?}, fsync={}{}: {:.0} msgs/s, {:.1} MB/s; end-to-end latency p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            result["messages"], args.message_size, args.producers, args.consumers, args.acks, args.fsync_label(),
            if args.rate > 0 { format!(", rate cap {}/s", args.rate) } else { String::new() },
            result["msgs_per_sec"].as_f64().unwrap_or(0.0), result["mb_per_sec"].as_f64().unwrap_or(0.0),
            result["latency_us"]["p50"], result["latency_us"]["p90"], result["latency_us"]["p99"],
            result["latency_us"]["p99.9"], result["latency_us"]["max"],
        );
    } else if args.scenario == Scenario::Consume {
        println!(
            "{} {} B messages read by {} consumer(s): {:.0} msgs/s, {:.1} MB/s; poll latency p50 {} µs, p99 {} µs, max {} µs",
            result["messages"], args.message_size, args.consumers,
            result["msgs_per_sec"].as_f64().unwrap_or(0.0), result["mb_per_sec"].as_f64().unwrap_or(0.0),
            result["latency_us"]["p50"], result["latency_us"]["p99"], result["latency_us"]["max"],
        );
    } else {
        println!(
            "{} {} B messages from {} producer(s), acks={:?}, fsync={}: {:.0} msgs/s, {:.1} MB/s; latency p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            result["messages"], args.message_size, args.producers, args.acks, args.fsync_label(),
            result["msgs_per_sec"].as_f64().unwrap_or(0.0), result["mb_per_sec"].as_f64().unwrap_or(0.0),
            result["latency_us"]["p50"], result["latency_us"]["p90"], result["latency_us"]["p99"],
            result["latency_us"]["p99.9"], result["latency_us"]["max"],
        );
    }
    Ok(())
}

impl Args {
    /// The fsync mode this run used: ours, or the running broker's own.
    fn fsync_label(&self) -> String {
        match self.broker {
            Some(_) => "broker's setting".into(),
            None => self.fsync.to_string(),
        }
    }
}

impl AcksArg {
    fn acks(self) -> Acks {
        match self {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }
}

/// Creates the benchmark topic with `--partitions` partitions, or checks
/// that the one on a running broker has that many (the producers address
/// partitions by number, and the group's settling counts them).
async fn prepare_topic(args: &Args, addr: &str, create: bool) -> anyhow::Result<()> {
    let conn = Connection::connect(addr, "bench").await?;
    let create_req =
        CreateTopicRequest { name: args.topic.clone(), partitions: args.partitions, configs: vec![] };
    if create {
        conn.call(&create_req).await?;
        return Ok(());
    }
    let meta = conn.call(&MetadataRequest { topics: vec![args.topic.clone()] }).await?;
    match meta.topics.first() {
        Some(t) if t.error_code == ErrorCode::None && t.partitions.len() != args.partitions as usize => {
            bail!(
                "topic {} has {} partitions: pass --partitions {}",
                args.topic,
                t.partitions.len(),
                t.partitions.len()
            )
        }
        Some(t) if t.error_code == ErrorCode::None => Ok(()),
        _ => {
            conn.call(&create_req).await?;
            Ok(())
        }
    }
}

/// Builds `--producers` producers (connected, before any clock starts).
async fn build_producers(args: &Args, addr: &str) -> anyhow::Result<Vec<Producer>> {
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        let producer = Producer::builder()
            .bootstrap(addr)
            .acks(args.acks.acks())
            .linger(Duration::from_millis(args.linger))
            .batch_bytes(args.batch_bytes)
            .compression(args.compression.codec())
            .buffer_memory(64usize << 20)
            .build()
            .await?;
        producers.push(producer);
    }
    Ok(producers)
}

/// What the producer tasks of a run send and measure.
#[derive(Clone)]
struct SendPlan {
    topic: Arc<str>,
    partitions: u32,
    message_size: usize,
    /// `--messages` split over the producers.
    per_producer: u64,
    /// `--rate` split over the producers (0 = no cap).
    per_producer_rate: u64,
    /// Start of the run: values are stamped, and warmup counted, from here.
    base: Instant,
    warmup: Duration,
    deadline: Instant,
    /// e2e: the first 8 bytes of each value are its send time (ns since
    /// `base`). Otherwise every record shares one payload (no allocation).
    stamp: bool,
    /// produce: send-to-acknowledgement latency of every
    /// `SAMPLE_EVERY`th record after the warmup.
    ack_latency: Option<Arc<Mutex<Histogram<u64>>>>,
    progress: Option<Progress>,
}

impl SendPlan {
    fn new(args: &Args, base: Instant, stamp: bool) -> Self {
        let producers = args.producers.max(1) as u64;
        Self {
            topic: args.topic.as_str().into(),
            partitions: args.partitions.max(1),
            message_size: args.message_size,
            per_producer: args.messages.div_ceil(producers),
            per_producer_rate: args.rate.div_ceil(producers),
            base,
            warmup: Duration::from_secs(args.warmup),
            deadline: base + Duration::from_secs(args.duration),
            stamp,
            ack_latency: None,
            progress: None,
        }
    }
}

/// One producer's send loop; returns how many records it sent and when
/// the last of them was acknowledged (per `--acks`).
async fn send_loop(producer: Producer, plan: SendPlan) -> anyhow::Result<(u64, Instant)> {
    let payload = Bytes::from(vec![b'x'; plan.message_size]);
    let mut sent = 0u64;
    let started = Instant::now();
    while sent < plan.per_producer && (sent % 1024 != 0 || Instant::now() < plan.deadline) {
        if plan.per_producer_rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / plan.per_producer_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let value = if plan.stamp {
            let mut value = vec![b'x'; plan.message_size.max(8)];
            value[..8].copy_from_slice(&(plan.base.elapsed().as_nanos() as u64).to_be_bytes());
            Bytes::from(value)
        } else {
            payload.clone()
        };
        let record = Record {
            partition: Some((sent % u64::from(plan.partitions)) as u32),
            ..Record::new(Arc::clone(&plan.topic), value)
        };
        let delivery = producer.send(record).await?;
        match &plan.ack_latency {
            Some(histogram) if sent % SAMPLE_EVERY == 0 && plan.base.elapsed() >= plan.warmup => {
                let (at, histogram) = (Instant::now(), Arc::clone(histogram));
                tokio::spawn(async move {
                    if delivery.await.is_ok() {
                        let _ = histogram.lock().map(|mut h| h.record(at.elapsed().as_micros() as u64));
                    }
                });
            }
            _ => drop(delivery),
        }
        sent += 1;
        if let Some(progress) = &plan.progress {
            progress.add(1);
        }
    }
    producer.flush().await?;
    let done = Instant::now();
    producer.close().await?;
    Ok((sent, done))
}

/// Runs every producer's send loop at once; returns the records sent and
/// when the last one was acknowledged (closing the producers is not timed).
async fn run_producers(producers: Vec<Producer>, plan: &SendPlan) -> anyhow::Result<(u64, Instant)> {
    let tasks: Vec<_> =
        producers.into_iter().map(|producer| tokio::spawn(send_loop(producer, plan.clone()))).collect();
    let (mut sent, mut done) = (0, plan.base);
    for task in tasks {
        let (n, at) = task.await??;
        (sent, done) = (sent + n, done.max(at));
    }
    Ok((sent, done))
}

/// One run's result as the JSON object `--json` prints (every parameter,
/// throughput, latency percentiles, plus `extra` fields); writes `--plot`.
fn report(
    args: &Args,
    scenario: &str,
    messages: u64,
    secs: f64,
    throughput: &[(f64, f64)],
    latency: &Histogram<u64>,
    extra: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    if let Some(path) = &args.plot {
        plot(path, scenario, throughput, latency)?;
    }
    let bytes = messages * args.message_size as u64;
    let q = |quantile| latency.value_at_quantile(quantile);
    let mut result = serde_json::json!({
        "scenario": scenario,
        "parameters": {
            "message_size": args.message_size, "partitions": args.partitions, "producers": args.producers,
            "consumers": args.consumers, "acks": format!("{:?}", args.acks).to_lowercase(),
            "fsync": args.fsync_label(), "rate": args.rate, "linger_ms": args.linger,
            "batch_bytes": args.batch_bytes, "warmup_s": args.warmup, "fetch_bytes": args.fetch_bytes,
            "compression": format!("{:?}", args.compression).to_lowercase(),
        },
        "messages": messages, "bytes": bytes, "seconds": secs,
        "msgs_per_sec": messages as f64 / secs, "mb_per_sec": bytes as f64 / secs / 1e6,
        "latency_us": {
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99.9": q(0.999), "max": latency.max(),
        },
    });
    if let (Some(result), serde_json::Value::Object(extra)) = (result.as_object_mut(), extra) {
        result.extend(extra);
    }
    Ok(result)
}

/// `--producers` producers send `--messages` records between them; latency
/// is from send to acknowledgement.
async fn produce(args: &Args, addr: &str, create: bool) -> anyhow::Result<serde_json::Value> {
    prepare_topic(args, addr, create).await?;
    let producers = build_producers(args, addr).await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let progress = Progress::start(args.messages, "produce");
    let started = Instant::now();
    let plan = SendPlan {
        ack_latency: Some(Arc::clone(&histogram)),
        progress: Some(progress.clone()),
        ..SendPlan::new(args, started, false)
    };
    let (sent, done) = run_producers(producers, &plan).await?;
    let secs = done.duration_since(started).as_secs_f64();
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("histogram poisoned"))?.clone();
    report(args, "produce", sent, secs, &progress.finish(), &h, serde_json::json!({}))
}

/// A group member subscribed to the topic, with `--fetch-bytes`.
fn consumer_builder(args: &Args, addr: &str, group: &str) -> sluice_consumer::ConsumerBuilder {
    let builder =
        sluice_consumer::Consumer::builder().bootstrap(addr).group(group).subscribe([args.topic.clone()]);
    match args.fetch_bytes {
        Some(bytes) => builder.fetch_max_bytes(bytes),
        None => builder,
    }
}

/// Waits until the group's assignment is stable: every partition owned
/// once, and every member that can have one owns one.
async fn settle(consumers: &[sluice_consumer::Consumer], partitions: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owned: usize = consumers.iter().map(|c| c.assignment().len()).sum();
        let busy = consumers.iter().filter(|c| !c.assignment().is_empty()).count();
        if owned == partitions as usize && busy == consumers.len().min(partitions as usize) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the group did not settle: {owned} of {partitions} partitions owned");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads `messages` records of the topic with `--consumers` group members.
async fn consume(args: &Args, addr: &str, messages: u64) -> anyhow::Result<serde_json::Value> {
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Like Kafka's consumer perf test, the rebalance is not the reading: the
    // members join at the end of the backlog (nothing to prefetch) and the
    // clock starts once every partition has its owner, when each member
    // seeks its partitions back to the start.
    let joining = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..args.consumers.max(1) {
        let consumer = consumer_builder(args, addr, "sluice-bench")
            .auto_offset_reset(sluice_consumer::OffsetReset::Latest)
            .enable_auto_commit(false)
            .build()
            .await?;
        consumers.push(consumer);
    }
    settle(&consumers, args.partitions).await?;
    let settle_ms = joining.elapsed().as_millis() as u64;
    // The start of each partition (past what retention deleted, on a
    // running broker's topic).
    let meta = Connection::connect(addr, "bench")
        .await?
        .call(&MetadataRequest { topics: vec![args.topic.clone()] })
        .await?;
    let log_start = |partition: u32| {
        meta.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition == partition)
            .map_or(0, |p| p.log_start_offset)
    };
    let started = Instant::now();
    for consumer in &consumers {
        for (topic, partition) in consumer.assignment() {
            consumer.seek(&topic, partition, log_start(partition));
        }
    }
    let deadline = started + Duration::from_secs(args.duration.max(1) * 3);
    let progress = Progress::start(messages, "consume");
    let mut tasks = Vec::new();
    for consumer in consumers {
        let read = Arc::clone(&read);
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut last = started;
            while read.load(std::sync::atomic::Ordering::Relaxed) < messages && Instant::now() < deadline {
                let at = Instant::now();
                let n = consumer.poll(Duration::from_millis(200)).await?.len() as u64;
                if n > 0 {
                    last = Instant::now();
                    let _ = local.record(last.duration_since(at).as_micros() as u64);
                }
                read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                progress.add(n);
            }
            consumer.close().await?;
            Ok::<_, anyhow::Error>((local, last))
        }));
    }
    // Timed to the last record received: members idling in `poll` once the
    // backlog is read, and leaving the group, are not part of the reading.
    let mut h = Histogram::<u64>::new(3)?;
    let mut end = started;
    for t in tasks {
        let (local, last) = t.await??;
        h.add(&local)?;
        end = end.max(last);
    }
    let secs = end.duration_since(started).as_secs_f64().max(1e-9);
    let samples = progress.finish();
    let n = read.load(std::sync::atomic::Ordering::Relaxed);
    if n < messages {
        bail!("read only {n} of {messages} messages before the deadline");
    }
    let extra =
        serde_json::json!({ "group_settle_ms": settle_ms, "latency": "poll call that returned records" });
    report(args, "consume", n, secs, &samples, &h, extra)
}

/// Producers and a consumer group at the same time. Each value starts with
/// its send time (ns since the run began); consumers record receipt minus
/// send time.
async fn e2e(args: &Args, addr: &str, create: bool) -> anyhow::Result<serde_json::Value> {
    prepare_topic(args, addr, create).await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // What consumers wait for: the requested count, lowered to what was
    // really produced once the producers stop (the duration may cut them).
    let target = Arc::new(std::sync::atomic::AtomicU64::new(args.messages));
    let last_receipt = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut consumers = Vec::new();
    for _ in 0..args.consumers.max(1) {
        consumers.push(
            consumer_builder(args, addr, "sluice-bench-e2e")
                .auto_offset_reset(sluice_consumer::OffsetReset::Earliest)
                .fetch_max_wait(Duration::from_millis(100))
                .build()
                .await?,
        );
    }
    // Producers start once every member has its partitions: the run
    // measures the group reading, not the group forming.
    settle(&consumers, args.partitions).await?;
    let base = Instant::now();
    let warmup = Duration::from_secs(args.warmup);
    let deadline = base + Duration::from_secs(args.duration);
    let progress = Progress::start(args.messages, "e2e");
    let mut tasks = Vec::new();
    for consumer in consumers {
        let progress = progress.clone();
        let (histogram, received, target, last_receipt) =
            (Arc::clone(&histogram), Arc::clone(&received), Arc::clone(&target), Arc::clone(&last_receipt));
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?;
            while received.load(std::sync::atomic::Ordering::Relaxed)
                < target.load(std::sync::atomic::Ordering::Relaxed)
                && Instant::now() < deadline + Duration::from_secs(10)
            {
                let records = consumer.poll(Duration::from_millis(100)).await?;
                let now = base.elapsed().as_nanos() as u64;
                for r in &records {
                    let sent = r
                        .value
                        .as_ref()
                        .and_then(|v| v.get(..8))
                        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                    if Duration::from_nanos(sent) >= warmup {
                        let _ = local.record(now.saturating_sub(sent) / 1000);
                    }
                }
                if !records.is_empty() {
                    last_receipt.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                }
                received.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                progress.add(records.len() as u64);
            }
            consumer.close().await?;
            let _ = histogram.lock().map(|mut h| h.add(&local));
            Ok::<_, anyhow::Error>(())
        }));
    }
    let producers = build_producers(args, addr).await?;
    let (produced, _) = run_producers(producers, &SendPlan::new(args, base, true)).await?;
    target.store(produced, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let secs =
        Duration::from_nanos(last_receipt.load(std::sync::atomic::Ordering::Relaxed)).as_secs_f64().max(1e-9);
    let n = received.load(std::sync::atomic::Ordering::Relaxed);
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("histogram poisoned"))?.clone();
    report(args, "e2e", n, secs, &progress.finish(), &h, serde_json::json!({ "produced": produced }))
}
