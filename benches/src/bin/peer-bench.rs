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
    /// Acknowledgements outstanding at once.
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
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

async fn nats(args: &Args) -> anyhow::Result<serde_json::Value> {
    use async_nats::jetstream::{self, consumer, stream};
    let client = async_nats::connect(&args.addr).await.context("connecting to NATS")?;
    let js = jetstream::new(client);
    let mut h = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    if args.scenario == Scenario::Produce {
        let _ = js.delete_stream("bench").await;
        js.create_stream(stream::Config {
            name: "bench".into(),
            subjects: vec!["bench".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        let payload = Bytes::from(vec![b'x'; args.message_size]);
        let mut pending = VecDeque::with_capacity(args.in_flight);
        for _ in 0..args.messages {
            let ack = js.publish("bench", payload.clone()).await?;
            pending.push_back((Instant::now(), ack));
            if pending.len() >= args.in_flight {
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
        return Ok(report(args, args.messages, started.elapsed().as_secs_f64(), &h));
    }
    let stream = js.get_stream("bench").await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut n = 0;
    while n < args.messages {
        match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(m)) => {
                m?;
                n += 1;
            }
            _ => break,
        }
    }
    Ok(report(args, n, started.elapsed().as_secs_f64(), &h))
}

async fn redis_bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    use redis::AsyncCommands;
    let client = redis::Client::open(format!("redis://{}/", args.addr))?;
    let mut con = client.get_multiplexed_async_connection().await.context("connecting to Redis")?;
    let mut h = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    if args.scenario == Scenario::Produce {
        let _: () = con.del("bench").await?;
        let payload = vec![b'x'; args.message_size];
        let mut sent = 0;
        while sent < args.messages {
            let n = (args.messages - sent).min(args.in_flight as u64);
            let mut pipe = redis::pipe();
            for _ in 0..n {
                pipe.cmd("XADD").arg("bench").arg("*").arg("v").arg(&payload[..]).ignore();
            }
            let at = Instant::now();
            let _: () = pipe.query_async(&mut con).await?;
            h.record(at.elapsed().as_micros() as u64)?;
            sent += n;
        }
        return Ok(report(args, sent, started.elapsed().as_secs_f64(), &h));
    }
    let mut last = "0".to_string();
    let mut n = 0;
    let options = redis::streams::StreamReadOptions::default().count(10_000);
    while n < args.messages {
        let reply: redis::streams::StreamReadReply =
            con.xread_options(&["bench"], &[&last], &options).await?;
        let Some(key) = reply.keys.into_iter().next() else { break };
        if key.ids.is_empty() {
            break;
        }
        n += key.ids.len() as u64;
        if let Some(id) = key.ids.last() {
            last = id.id.clone();
        }
    }
    Ok(report(args, n, started.elapsed().as_secs_f64(), &h))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.starts_with("127.") && !args.addr.starts_with("localhost") {
        bail!("peer benchmarks only talk to loopback addresses, not {}", args.addr);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
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
