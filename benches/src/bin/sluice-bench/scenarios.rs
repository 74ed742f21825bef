//! The three scenarios: `produce`, `consume` (of a backlog) and `e2e`
//! (producers and a group at once). Each returns its [`Report`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use sluice_protocol::api::MetadataRequest;
use sluice_protocol::client::Connection;

use crate::args::{Args, Scenario};
use crate::cpu;
use crate::load::{build_producers, consumer_builder, prepare_topic, run_producers, settle, SendPlan};
use crate::processes::barrier;
use crate::progress::Progress;
use crate::report::{report, Extra, Report};

/// `--producers` producers send `--messages` records between them; latency
/// is from send to acknowledgement.
pub async fn produce(args: &Args, addr: &str, create: bool) -> anyhow::Result<Report> {
    prepare_topic(args, addr, create).await?;
    let producers = build_producers(args, addr).await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    if args.scenario == Scenario::Produce {
        barrier(args).await?;
    }
    let progress = Progress::start(args.messages, "produce");
    let cpu = cpu::sample(args.broker_cpu());
    let started = Instant::now();
    let plan = SendPlan {
        ack_latency: Some(Arc::clone(&histogram)),
        progress: Some(progress.clone()),
        ..SendPlan::new(args, started, false)
    };
    let (sent, done) = run_producers(producers, &plan).await?;
    let cpu = cpu.until(cpu::sample(args.broker_cpu()));
    let secs = done.duration_since(started).as_secs_f64();
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("histogram poisoned"))?.clone();
    report(args, "produce", sent, secs, &progress.finish(), &h, Extra { cpu, ..Extra::default() })
}

/// The start of each partition of the topic (past what retention
/// deleted, on a running broker's topic).
async fn log_starts(args: &Args, addr: &str) -> anyhow::Result<HashMap<u32, u64>> {
    let meta = Connection::connect(addr, "bench")
        .await?
        .call(&MetadataRequest { topics: vec![args.topic.clone()] })
        .await?;
    Ok(meta.topics.iter().flat_map(|t| &t.partitions).map(|p| (p.partition, p.log_start_offset)).collect())
}

/// Reads `messages` records of the topic with `--consumers` group members.
pub async fn consume(args: &Args, addr: &str, messages: u64) -> anyhow::Result<Report> {
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
    let log_start = log_starts(args, addr).await?;
    barrier(args).await?;
    let cpu = cpu::sample(args.broker_cpu());
    let started = Instant::now();
    for consumer in &consumers {
        for (topic, partition) in consumer.assignment() {
            consumer.seek(&topic, partition, log_start.get(&partition).copied().unwrap_or(0));
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
    let cpu = cpu.until(cpu::sample(args.broker_cpu()));
    let secs = end.duration_since(started).as_secs_f64().max(1e-9);
    let samples = progress.finish();
    let n = read.load(std::sync::atomic::Ordering::Relaxed);
    if n < messages {
        bail!("read only {n} of {messages} messages before the deadline");
    }
    let extra = Extra {
        cpu,
        group_settle_ms: Some(settle_ms),
        latency: Some("poll call that returned records"),
        ..Extra::default()
    };
    report(args, "consume", n, secs, &samples, &h, extra)
}

/// Producers and a consumer group at the same time. Each value starts with
/// its send time (ns since the run began); consumers record receipt minus
/// send time.
pub async fn e2e(args: &Args, addr: &str, create: bool) -> anyhow::Result<Report> {
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
    barrier(args).await?;
    let cpu = cpu::sample(args.broker_cpu());
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
    let cpu = cpu.until(cpu::sample(args.broker_cpu()));
    let secs =
        Duration::from_nanos(last_receipt.load(std::sync::atomic::Ordering::Relaxed)).as_secs_f64().max(1e-9);
    let n = received.load(std::sync::atomic::Ordering::Relaxed);
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("histogram poisoned"))?.clone();
    let extra = Extra { cpu, produced: Some(produced), ..Extra::default() };
    report(args, "e2e", n, secs, &progress.finish(), &h, extra)
}
