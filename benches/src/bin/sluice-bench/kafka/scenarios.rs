//! The scenarios with Kafka clients, timed and reported as the native ones
//! are (`crate::scenarios`): `produce` (latency: send to acknowledgement of
//! every 997th record), `consume` of a backlog (latency: the `poll` call
//! that returned every 997th record; librdkafka hands out one record per
//! call where the native consumer hands out a fetch's worth), and `e2e`
//! (latency: the producer's send to the consumer's receipt of every 997th
//! record, stamped in the value). The reading loop reads the clock only for
//! those samples and every 1024 records, not per record (see `read_loop`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use super::clients::{build_consumers, build_producers, prepare_topic, run_producers, thread_cpu_s, StartAt};
use crate::args::{Args, Scenario};
use crate::cpu::{self, CpuSample};
use crate::load::{SendPlan, SAMPLE_EVERY};
use crate::processes::barrier;
use crate::progress::Progress;
use crate::report::{report, Extra, Report};

/// `--producers` producers send `--messages` records between them.
pub fn produce(args: &Args, addr: &str, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    prepare_topic(args, addr, rt)?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    // The base is reset at the start; the producers' delivery contexts
    // take it now, so the plan is built first and re-based below.
    let mut plan =
        SendPlan { ack_latency: Some(Arc::clone(&histogram)), ..SendPlan::new(args, Instant::now(), false) };
    let producers = build_producers(args, addr, &plan)?;
    if args.scenario == Scenario::Produce {
        rt.block_on(barrier(args))?;
    }
    let progress = Progress::start(args.messages, "produce");
    let cpu = cpu::sample(args.broker_cpu());
    let started = Instant::now();
    // Latency opaques are measured from the contexts' base: keep it, and
    // move only the deadline and warmup to this start.
    plan.deadline = started + Duration::from_secs(args.duration);
    plan.warmup = started.duration_since(plan.base) + Duration::from_secs(args.warmup);
    plan.progress = Some(progress.clone());
    let sent = run_producers(&producers, &plan)?;
    let cpu = with_threads(cpu.until(cpu::sample(args.broker_cpu())), sent.cpu_s);
    drop(producers);
    let secs = sent.done.duration_since(started).as_secs_f64();
    let h = histogram.lock().map_err(|_| anyhow!("histogram poisoned"))?.clone();
    report(args, "produce", sent.records, secs, &progress.finish(), &h, Extra { cpu, ..Extra::default() })
}

/// The timed section's CPU with the clients' exited threads added (the
/// closing sample counts live threads only).
fn with_threads(mut cpu: CpuSample, threads_s: f64) -> CpuSample {
    cpu.clients = cpu.clients.map(|c| c + threads_s);
    cpu
}

/// Records a reading thread counts before adding them to the shared count.
const FLUSH_EVERY: u64 = 1024;

/// What the reading threads share.
struct Reading {
    /// Records read (flushed from each thread's count in steps).
    read: AtomicU64,
    /// How many to read: `--messages`, or (e2e) what was produced.
    target: AtomicU64,
    /// Nanoseconds since `base` of the last record received.
    last: AtomicU64,
    base: Instant,
    deadline: Instant,
    /// e2e: record send-to-receipt latency of records sent after this.
    stamped_after: Option<Duration>,
    progress: Progress,
}

/// One consumer's reading loop; returns its latency histogram (poll
/// latency, or e2e latency when `stamped_after` is set).
///
/// librdkafka hands out one record per `poll`, so this loop reads the
/// clock only where it must, as the native loop reads it once per fetch's
/// worth of records: for a sampled record's latency (every
/// [`SAMPLE_EVERY`]th record, or the poll that returned it), when it
/// flushes its count (every [`FLUSH_EVERY`] records, and at the end: the
/// receipt time of the run's last record), and after an empty poll (the
/// deadline). A `poll` with no wait comes first, which spares librdkafka
/// the timeout's clock read; only an empty queue makes it block.
fn read_loop(consumer: &BaseConsumer, shared: &Reading) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    let (mut local, mut seen) = (0u64, 0u64);
    let flush = |local: &mut u64| {
        if *local > 0 {
            shared.last.fetch_max(shared.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            shared.read.fetch_add(*local, Ordering::Relaxed);
            shared.progress.add(*local);
        }
        *local = 0;
    };
    let mut deadline_passed = false;
    while shared.read.load(Ordering::Relaxed) + local < shared.target.load(Ordering::Relaxed)
        && !deadline_passed
    {
        let sampled = seen % SAMPLE_EVERY == 0;
        let at = sampled.then(Instant::now);
        let message = match consumer.poll(Duration::ZERO) {
            Some(message) => message?,
            None => {
                flush(&mut local);
                deadline_passed = Instant::now() >= shared.deadline;
                match consumer.poll(Duration::from_millis(100)) {
                    Some(message) => message?,
                    None => continue,
                }
            }
        };
        seen += 1;
        if sampled {
            let now = shared.base.elapsed();
            match shared.stamped_after {
                Some(after) => {
                    let sent = message
                        .payload()
                        .and_then(|v| v.get(..8))
                        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                    if Duration::from_nanos(sent) >= after {
                        let _ = h.record((now.as_nanos() as u64).saturating_sub(sent) / 1000);
                    }
                }
                None => {
                    let _ = h.record(at.map_or(0, |at| at.elapsed().as_micros() as u64));
                }
            }
        }
        local += 1;
        if local == FLUSH_EVERY {
            flush(&mut local);
            deadline_passed = Instant::now() >= shared.deadline;
        }
    }
    flush(&mut local);
    Ok(h)
}

/// Runs `read_loop` on a thread per consumer, with `during` on this thread
/// meanwhile (e2e's producers); returns the merged histogram, the reading
/// threads' CPU-seconds and what `during` returned.
fn read_all<T: Send>(
    consumers: &[(BaseConsumer, TopicPartitionList)],
    shared: &Reading,
    during: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<(Histogram<u64>, f64, T)> {
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for (consumer, _) in consumers {
            let thread = std::thread::Builder::new().name("kafka-consumer".into());
            threads.push(thread.spawn_scoped(s, move || {
                let cpu = thread_cpu_s();
                read_loop(consumer, shared).map(|h| (h, thread_cpu_s() - cpu))
            })?);
        }
        let result = during();
        if result.is_err() {
            shared.target.store(0, Ordering::Relaxed);
        }
        let (mut h, mut cpu_s) = (Histogram::<u64>::new(3)?, 0.0);
        for thread in threads {
            let (local, cpu) = thread.join().map_err(|_| anyhow!("a consumer thread panicked"))??;
            h.add(local)?;
            cpu_s += cpu;
        }
        Ok((h, cpu_s, result?))
    })
}

/// Reads `messages` records of the topic from its start, every partition
/// assigned to one of `min(--consumers, --partitions)` consumers; the
/// clock starts at the assignment.
pub fn consume(
    args: &Args,
    addr: &str,
    messages: u64,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Report> {
    let consumers = build_consumers(args, addr, 500, StartAt::Start)?;
    rt.block_on(barrier(args))?;
    let cpu = cpu::sample(args.broker_cpu());
    let started = Instant::now();
    for (consumer, assignment) in &consumers {
        consumer.assign(assignment)?;
    }
    let shared = Reading {
        read: AtomicU64::new(0),
        target: AtomicU64::new(messages),
        last: AtomicU64::new(0),
        base: started,
        deadline: started + Duration::from_secs(args.duration.max(1) * 3),
        stamped_after: None,
        progress: Progress::start(messages, "consume"),
    };
    let (h, threads_s, ()) = read_all(&consumers, &shared, || Ok(()))?;
    let cpu = with_threads(cpu.until(cpu::sample(args.broker_cpu())), threads_s);
    drop(consumers);
    let n = shared.read.load(Ordering::Relaxed);
    if n < messages {
        bail!("read only {n} of {messages} messages before the deadline");
    }
    let secs = Duration::from_nanos(shared.last.load(Ordering::Relaxed)).as_secs_f64().max(1e-9);
    let extra = Extra {
        cpu,
        group_settle_ms: Some(0),
        latency: Some("poll call that returned a record, every 997th (librdkafka: one record per poll)"),
        ..Extra::default()
    };
    report(args, "consume", n, secs, &shared.progress.finish(), &h, extra)
}

/// Producers and consumers at once: consumers assigned at each partition's
/// end before the producers start; values stamped with their send time.
pub fn e2e(args: &Args, addr: &str, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    prepare_topic(args, addr, rt)?;
    let consumers = build_consumers(args, addr, 100, StartAt::End)?;
    for (consumer, assignment) in &consumers {
        consumer.assign(assignment)?;
    }
    let mut plan = SendPlan::new(args, Instant::now(), true);
    let producers = build_producers(args, addr, &plan)?;
    rt.block_on(barrier(args))?;
    let cpu = cpu::sample(args.broker_cpu());
    let base = Instant::now();
    (plan.base, plan.deadline) = (base, base + Duration::from_secs(args.duration));
    let shared = Reading {
        read: AtomicU64::new(0),
        target: AtomicU64::new(args.messages),
        last: AtomicU64::new(0),
        base,
        deadline: plan.deadline + Duration::from_secs(10),
        stamped_after: Some(plan.warmup),
        progress: Progress::start(args.messages, "e2e"),
    };
    let (h, readers_s, sent) = read_all(&consumers, &shared, || {
        let sent = run_producers(&producers, &plan)?;
        shared.target.store(sent.records, Ordering::Relaxed);
        Ok(sent)
    })?;
    let cpu = with_threads(cpu.until(cpu::sample(args.broker_cpu())), readers_s + sent.cpu_s);
    drop((producers, consumers));
    let secs = Duration::from_nanos(shared.last.load(Ordering::Relaxed)).as_secs_f64().max(1e-9);
    let n = shared.read.load(Ordering::Relaxed);
    let extra = Extra { cpu, produced: Some(sent.records), ..Extra::default() };
    report(args, "e2e", n, secs, &shared.progress.finish(), &h, extra)
}
