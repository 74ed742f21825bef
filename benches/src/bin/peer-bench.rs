//! `peer-bench`: the same workloads as `sluice-bench produce|consume`
//! against NATS JetStream and Redis Streams, for benches/compare/run.sh.
//! One producer keeps `--in-flight` acknowledgements outstanding (Sluice's
//! producer pipelines batches the same way); latency is publish to
//! acknowledgement. Only loopback addresses are accepted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum System {
    Nats,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Produce,
    Consume,
    /// Producers and one consumer at once; latency from send to receipt.
    E2e,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(value_enum)]
    system: System,
    #[arg(value_enum)]
    scenario: Scenario,
    /// Server address (loopback only).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Acknowledgements outstanding at once, per producer.
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
    /// Producers, each on its own connection (produce and e2e).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumers sharing the stream as one group (consume and e2e).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn report(args: &Args, n: u64, secs: f64, h: &Histogram<u64>) -> serde_json::Value {
    let bytes = n * args.message_size as u64;
    serde_json::json!({
        "system": format!("{:?}", args.system).to_lowercase(), "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "message_size": args.message_size, "messages": n, "seconds": secs,
        "msgs_per_sec": n as f64 / secs, "mb_per_sec": bytes as f64 / secs / 1e6,
        "latency_us": { "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "p99.9": h.value_at_quantile(0.999), "max": h.max() },
    })
}

/// Payload of `size` bytes starting with the send time (ns since `base`).
fn stamped(size: usize, base: Instant) -> Bytes {
    let mut v = vec![b'x'; size.max(8)];
    v[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
    Bytes::from(v)
}

fn latency_of(payload: &[u8], base: Instant) -> u64 {
    let sent = payload.get(..8).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
    (base.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000
}

/// Runs `--producers` producers of `messages / producers` each; merges
/// their acknowledgement-latency histograms.
async fn run_producers<F, Fut>(args: &Args, make: F) -> anyhow::Result<Histogram<u64>>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Histogram<u64>>> + Send + 'static,
{
    let per = args.messages.div_ceil(args.producers.max(1) as u64);
    let tasks: Vec<_> = (0..args.producers.max(1)).map(|_| tokio::spawn(make(per))).collect();
    let mut h = Histogram::<u64>::new(3)?;
    for t in tasks {
        h.add(&t.await??)?;
    }
    Ok(h)
}

/// One NATS producer: `n` messages, `in_flight` acks outstanding.
async fn nats_producer(
    addr: String,
    n: u64,
    size: usize,
    in_flight: usize,
    base: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let js = async_nats::jetstream::new(async_nats::connect(&addr).await?);
    let mut h = Histogram::<u64>::new(3)?;
    let mut pending = VecDeque::with_capacity(in_flight);
    for _ in 0..n {
        let ack = js.publish("bench", stamped(size, base)).await?;
        pending.push_back((Instant::now(), ack));
        if pending.len() >= in_flight {
            if let Some((at, ack)) = pending.pop_front() {
                ack.await?;
                h.record(at.elapsed().as_micros() as u64)?;
            }
        }
    }
    for (at, ack) in pending {
        ack.await?;
        h.record(at.elapsed().as_micros() as u64)?;
    }
    Ok(h)
}

type ReaderTask = tokio::task::JoinHandle<anyhow::Result<(Histogram<u64>, Instant)>>;

/// Waits for reader tasks: messages read, merged latencies, last receipt.
async fn join_readers(
    tasks: Vec<ReaderTask>,
    count: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<(u64, Histogram<u64>, Instant)> {
    let mut h = Histogram::<u64>::new(3)?;
    let mut end: Option<Instant> = None;
    for t in tasks {
        let (part, last) = t.await??;
        h.add(&part)?;
        end = Some(end.map_or(last, |e| e.max(last)));
    }
    Ok((count.load(std::sync::atomic::Ordering::Relaxed), h, end.unwrap_or_else(Instant::now)))
}

/// `consumers` tasks share one durable pull consumer (a group) until
/// `total` messages were read; latencies recorded when `base` is given.
async fn nats_readers(
    js: &async_nats::jetstream::Context,
    consumers: usize,
    total: u64,
    base: Option<Instant>,
) -> anyhow::Result<(u64, Histogram<u64>, Instant)> {
    use async_nats::jetstream::consumer;
    let stream = js.get_stream("bench").await?;
    let _ = stream.delete_consumer("group").await;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("group".into()),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers.max(1) {
        let (stream, count) = (stream.clone(), std::sync::Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            let c: consumer::PullConsumer =
                stream.get_consumer("group").await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut messages = c.messages().await?;
            let mut h = Histogram::<u64>::new(3)?;
            let mut last = Instant::now();
            while count.load(std::sync::atomic::Ordering::Relaxed) < total {
                match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
                    Ok(Some(m)) => {
                        let m = m?;
                        if let Some(base) = base {
                            h.record(latency_of(&m.payload, base))?;
                        }
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        last = Instant::now();
                    }
                    _ => break,
                }
            }
            Ok::<_, anyhow::Error>((h, last))
        }));
    }
    join_readers(tasks, &count).await
}

/// `consumers` members of a Redis consumer group (XREADGROUP ... NOACK).
async fn redis_group_readers(
    client: &redis::Client,
    consumers: usize,
    total: u64,
    base: Option<Instant>,
) -> anyhow::Result<(u64, Histogram<u64>, Instant)> {
    let mut con = client.get_multiplexed_async_connection().await?;
    let _: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bench")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..consumers.max(1) {
        let mut con = client.get_multiplexed_async_connection().await?;
        let count = std::sync::Arc::clone(&count);
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3)?;
            let mut last = Instant::now();
            let mut idle = 0;
            while count.load(std::sync::atomic::Ordering::Relaxed) < total && idle < 10 {
                let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(format!("c{i}"))
                    .arg("COUNT")
                    .arg(10_000)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("NOACK")
                    .arg("STREAMS")
                    .arg("bench")
                    .arg(">")
                    .query_async(&mut con)
                    .await?;
                let Some(key) = reply.keys.into_iter().next().filter(|k| !k.ids.is_empty()) else {
                    idle += 1;
                    continue;
                };
                idle = 0;
                if let Some(base) = base {
                    for id in &key.ids {
                        if let Some(redis::Value::BulkString(v)) = id.map.get("v") {
                            h.record(latency_of(v, base))?;
                        }
                    }
                }
                count.fetch_add(key.ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
                last = Instant::now();
            }
            Ok::<_, anyhow::Error>((h, last))
        }));
    }
    join_readers(tasks, &count).await
}

async fn nats(args: &Args) -> anyhow::Result<serde_json::Value> {
    use async_nats::jetstream::{self, stream};
    let client = async_nats::connect(&args.addr).await.context("connecting to NATS")?;
    let js = jetstream::new(client);
    let mut h = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    if args.scenario != Scenario::Consume {
        let _ = js.delete_stream("bench").await;
        js.create_stream(stream::Config {
            name: "bench".into(),
            subjects: vec!["bench".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        let (addr, size, window) = (args.addr.clone(), args.message_size, args.in_flight);
        if args.scenario == Scenario::Produce {
            h = run_producers(args, move |n| nats_producer(addr.clone(), n, size, window, started)).await?;
            return Ok(report(args, args.messages, started.elapsed().as_secs_f64(), &h));
        }
        // e2e: the consumers read while the producers write.
        let (js2, consumers, total) = (js.clone(), args.consumers, args.messages);
        let reader = tokio::spawn(async move { nats_readers(&js2, consumers, total, Some(started)).await });
        run_producers(args, move |n| nats_producer(addr.clone(), n, size, window, started)).await?;
        let (n, h, end) = reader.await??;
        return Ok(report(args, n, end.duration_since(started).as_secs_f64(), &h));
    }
    let (n, _, end) = nats_readers(&js, args.consumers, args.messages, None).await?;
    Ok(report(args, n, end.duration_since(started).as_secs_f64(), &h))
}

/// One Redis producer: pipelines of `in_flight` XADDs.
async fn redis_producer(
    addr: String,
    n: u64,
    size: usize,
    in_flight: usize,
    base: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut h = Histogram::<u64>::new(3)?;
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(in_flight as u64);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            pipe.cmd("XADD").arg("bench").arg("*").arg("v").arg(&stamped(size, base)[..]).ignore();
        }
        let at = Instant::now();
        let _: () = pipe.query_async(&mut con).await?;
        h.record(at.elapsed().as_micros() as u64)?;
        sent += k;
    }
    Ok(h)
}

/// Reads `total` entries from the start; records latency when `base` is given.
async fn redis_reader(
    mut con: redis::aio::MultiplexedConnection,
    total: u64,
    base: Option<Instant>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    use redis::AsyncCommands;
    let mut h = Histogram::<u64>::new(3)?;
    let mut last = "0".to_string();
    let mut n = 0;
    let options = redis::streams::StreamReadOptions::default().count(10_000).block(1000);
    let mut idle = 0;
    while n < total && idle < 10 {
        let reply: redis::streams::StreamReadReply =
            con.xread_options(&["bench"], &[&last], &options).await?;
        let Some(key) = reply.keys.into_iter().next().filter(|k| !k.ids.is_empty()) else {
            idle += 1;
            continue;
        };
        idle = 0;
        n += key.ids.len() as u64;
        if let Some(base) = base {
            for id in &key.ids {
                if let Some(redis::Value::BulkString(v)) = id.map.get("v") {
                    h.record(latency_of(v, base))?;
                }
            }
        }
        if let Some(id) = key.ids.last() {
            last = id.id.clone();
        }
    }
    Ok((n, h))
}

async fn redis_bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    use redis::AsyncCommands;
    let client = redis::Client::open(format!("redis://{}/", args.addr))?;
    let mut con = client.get_multiplexed_async_connection().await.context("connecting to Redis")?;
    let mut h = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    let (addr, size, window) = (args.addr.clone(), args.message_size, args.in_flight);
    match args.scenario {
        Scenario::Produce => {
            let _: () = con.del("bench").await?;
            h = run_producers(args, move |n| redis_producer(addr.clone(), n, size, window, started)).await?;
            Ok(report(args, args.messages, started.elapsed().as_secs_f64(), &h))
        }
        Scenario::Consume if args.consumers > 1 => {
            let (n, _, end) = redis_group_readers(&client, args.consumers, args.messages, None).await?;
            Ok(report(args, n, end.duration_since(started).as_secs_f64(), &h))
        }
        Scenario::Consume => {
            let (n, _) = redis_reader(con, args.messages, None).await?;
            Ok(report(args, n, started.elapsed().as_secs_f64(), &h))
        }
        Scenario::E2e => {
            let _: () = con.del("bench").await?;
            let reader = if args.consumers > 1 {
                let (client, consumers, total) = (client.clone(), args.consumers, args.messages);
                tokio::spawn(
                    async move { redis_group_readers(&client, consumers, total, Some(started)).await },
                )
            } else {
                let con = client.get_multiplexed_async_connection().await?;
                let total = args.messages;
                tokio::spawn(async move {
                    let (n, h) = redis_reader(con, total, Some(started)).await?;
                    Ok((n, h, Instant::now()))
                })
            };
            run_producers(args, move |n| redis_producer(addr.clone(), n, size, window, started)).await?;
            let (n, h, end) = reader.await??;
            Ok(report(args, n, end.duration_since(started).as_secs_f64(), &h))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.starts_with("127.") && !args.addr.starts_with("localhost") {
        bail!("peer benchmarks only talk to loopback addresses, not {}", args.addr);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        match args.system {
            System::Nats => nats(&args).await,
            System::Redis => redis_bench(&args).await,
        }
    })?;
    if args.json {
        println!("{result}");
    } else {
        println!(
            "{} {}: {:.0} msgs/s, {:.1} MB/s, p50 {} µs, p99 {} µs",
            result["system"],
            result["scenario"],
            result["msgs_per_sec"].as_f64().unwrap_or(0.0),
            result["mb_per_sec"].as_f64().unwrap_or(0.0),
            result["latency_us"]["p50"],
            result["latency_us"]["p99"]
        );
    }
    Ok(())
}
