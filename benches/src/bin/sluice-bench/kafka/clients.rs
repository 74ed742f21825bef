//! librdkafka clients for the Kafka scenarios: their configuration (mapped
//! from the native client's knobs), the topic (created with a Kafka
//! CreateTopics), producers and their send loops, and consumers assigned
//! every partition.
//!
//! Producers send from one thread each through a `BaseProducer`, serving
//! delivery reports with a zero-wait `poll` every 1024 records and while
//! the queue is full (sleeping between tries, see [`QUEUE_FULL_WAIT`]), and
//! stamping records with a wall clock read every 1024 records. Consumers
//! read one record per `BaseConsumer::poll`, on a thread each. Consumers use
//! `assign()` (no group: a Kafka group's rebalance is not what these runs
//! measure), member `i` of `n` taking the partitions `p` with
//! `p % n == i`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::args::{AcksArg, Args, CompressionArg};
use crate::load::{SendPlan, SAMPLE_EVERY};

/// How long setup calls (metadata, topic creation, flush) may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The native consumer's default fetch size (`sluice_consumer`'s builder),
/// used when `--fetch-bytes` is not given so both clients fetch alike.
const NATIVE_FETCH_BYTES: u32 = 2 << 20;

/// What every client shares: the bootstrap address and Nagle off (the
/// native clients set `TCP_NODELAY` too).
fn common(addr: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr)
        .set("client.id", "sluice-bench")
        .set("socket.nagle.disable", "true");
    config
}

/// A producer configured like the native one: `--acks` (none = 0,
/// leader = 1, durable = all), `--linger`, `--batch-bytes`, `--compression`,
/// a queue as large as the native client's buffer (`--buffer-memory`), no
/// idempotence.
pub fn producer_config(args: &Args, addr: &str) -> ClientConfig {
    let acks = match args.acks {
        AcksArg::None => "0",
        AcksArg::Leader => "1",
        AcksArg::Durable => "all",
    };
    let codec = match args.compression {
        CompressionArg::None => "none",
        CompressionArg::Gzip => "gzip",
        CompressionArg::Snappy => "snappy",
        CompressionArg::Lz4 => "lz4",
        CompressionArg::Zstd => "zstd",
    };
    let batch = args.batch_bytes.clamp(1, i32::MAX as usize / 2);
    let mut config = common(addr);
    config
        .set("acks", acks)
        .set("linger.ms", args.linger.to_string())
        .set("batch.size", batch.to_string())
        .set("batch.num.messages", "1000000")
        // A request holds a batch per partition; the broker takes frames
        // up to 16 MiB and batches up to 8 MiB.
        .set("message.max.bytes", (batch + (64 << 10)).clamp(1_000_000, 16 << 20).to_string())
        .set("queue.buffering.max.messages", "10000000")
        .set("queue.buffering.max.kbytes", (args.buffer_memory >> 10).max(1).to_string())
        .set("compression.codec", codec)
        .set("enable.idempotence", "false");
    config
}

/// A consumer fetching `--fetch-bytes` (default: the native consumer's
/// 2 MiB) per request and per partition, waiting at most `max_wait_ms`
/// (the native consumer's 500 ms; 100 ms in e2e, as there), and
/// prefetching up to four fetches (the native consumer's `prefetch`).
///
/// librdkafka's own prefetch defaults (100 000 records, then a
/// `fetch.queue.backoff.ms` of one second before fetching again) starve
/// it at 100 B records: it read 0.2-0.3M records/s, idle most of the time
/// (docs/benchmarks.md). Here the byte limit governs, and a full queue is
/// checked again after 10 ms.
pub fn consumer_config(args: &Args, addr: &str, max_wait_ms: u64) -> ClientConfig {
    let fetch_bytes = args.fetch_bytes.unwrap_or(NATIVE_FETCH_BYTES);
    let fetch = fetch_bytes.to_string();
    let prefetch_kib = (u64::from(fetch_bytes) * 4 / 1024).clamp(1, 2_097_151);
    let mut config = common(addr);
    config
        .set("group.id", "sluice-bench-kafka")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", &fetch)
        .set("max.partition.fetch.bytes", &fetch)
        .set("fetch.wait.max.ms", max_wait_ms.to_string())
        .set("queued.min.messages", "10000000")
        .set("queued.max.messages.kbytes", prefetch_kib.to_string())
        .set("fetch.queue.backoff.ms", "10");
    config
}

/// Creates `--topic` with `--partitions` partitions through Kafka's
/// CreateTopics, or checks that an existing one has that many.
pub fn prepare_topic(args: &Args, addr: &str, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = common(addr).create().context("a Kafka admin client")?;
    let partitions = i32::try_from(args.partitions).context("--partitions")?;
    let topic = NewTopic::new(&args.topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    for result in rt.block_on(admin.create_topics([&topic], &options))? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let meta = admin.inner().fetch_metadata(Some(&args.topic), TIMEOUT)?;
                let have = meta.topics().first().map_or(0, |t| t.partitions().len());
                if have != args.partitions as usize {
                    bail!("topic {} has {have} partitions: pass --partitions {have}", args.topic);
                }
            }
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// A producer's delivery reports: failures, and the send-to-acknowledgement
/// latency of sampled records (their opaque is the send time in ns since
/// the plan's base, plus one; 0 = not sampled).
pub struct Deliveries {
    base: Instant,
    latency: Option<Arc<Mutex<Histogram<u64>>>>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: usize) {
        match result {
            Ok(_) if sent_at != 0 => {
                let ns = (self.base.elapsed().as_nanos() as u64).saturating_sub(sent_at as u64 - 1);
                if let Some(h) = &self.latency {
                    let _ = h.lock().map(|mut h| h.record(ns / 1000));
                }
            }
            Ok(_) => {}
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// A producer of the plan's records.
pub type KafkaProducer = BaseProducer<Deliveries>;

/// Builds `--producers` producers, each connected (its metadata fetched)
/// before any clock starts.
pub fn build_producers(args: &Args, addr: &str, plan: &SendPlan) -> anyhow::Result<Vec<KafkaProducer>> {
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        let context = Deliveries {
            base: plan.base,
            latency: plan.ack_latency.clone(),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        };
        let producer: KafkaProducer =
            producer_config(args, addr).create_with_context(context).context("a Kafka producer")?;
        producer.client().fetch_metadata(Some(&args.topic), TIMEOUT)?;
        producers.push(producer);
    }
    Ok(producers)
}

/// The CPU-seconds the calling thread has spent (its `schedstat`; 0 where
/// the kernel has none).
///
/// The sender and reader threads end before the timed section's closing
/// sample, which counts live threads only ([`crate::cpu`]); each reports
/// what it spent, and the scenarios add it to the clients' CPU.
pub fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|line| crate::cpu::parse_schedstat(&line))
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// How long a sender whose queue stays full sleeps before it serves the
/// delivery reports again.
///
/// Not `poll` with a timeout: the `rdkafka` crate's `BaseProducer::poll`
/// keeps serving events until its deadline and hands librdkafka the time
/// left in whole milliseconds, so its last millisecond is a busy loop of
/// zero-wait polls and clock reads (a third of the sending thread's time
/// in a 1 KiB run here, on the cores the broker needs).
const QUEUE_FULL_WAIT: Duration = Duration::from_micros(200);

/// The wall clock in milliseconds since the Unix epoch: the records'
/// timestamp (Kafka's CreateTime).
///
/// The send loop reads it once per 1024 records and passes it with each
/// record: without one, librdkafka reads the wall clock for every record
/// (`gettimeofday`, 8% of the sending thread's time in a profile here),
/// where the native producer stamps a batch's records with the time the
/// batch opened.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One producer's send loop (round robin over the partitions, like the
/// native one); returns the records sent and when the last was
/// acknowledged per `--acks`.
pub fn send_loop(producer: &KafkaProducer, plan: &SendPlan) -> anyhow::Result<(u64, Instant)> {
    let mut value = vec![b'x'; if plan.stamp { plan.message_size.max(8) } else { plan.message_size }];
    let (mut sent, started) = (0u64, Instant::now());
    let mut timestamp_ms = wall_clock_ms();
    while sent < plan.per_producer && (sent % 1024 != 0 || Instant::now() < plan.deadline) {
        if plan.per_producer_rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / plan.per_producer_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if plan.stamp {
            value[..8].copy_from_slice(&(plan.base.elapsed().as_nanos() as u64).to_be_bytes());
        }
        let sampled =
            plan.ack_latency.is_some() && sent % SAMPLE_EVERY == 0 && plan.base.elapsed() >= plan.warmup;
        let opaque = if sampled { plan.base.elapsed().as_nanos() as usize + 1 } else { 0 };
        let partition = (sent % u64::from(plan.partitions)) as i32;
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(&plan.topic, opaque)
            .payload(&value[..])
            .partition(partition)
            .timestamp(timestamp_ms);
        let mut full = false;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if full {
                        if Instant::now() >= plan.deadline + TIMEOUT {
                            bail!("the producer's queue stayed full past the run's deadline");
                        }
                        std::thread::sleep(QUEUE_FULL_WAIT);
                    }
                    producer.poll(Duration::ZERO);
                    full = true;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
        if sent % 1024 == 0 {
            timestamp_ms = wall_clock_ms();
            producer.poll(Duration::ZERO);
            if let Some(progress) = &plan.progress {
                progress.add(1024);
            }
        }
    }
    if let Some(progress) = &plan.progress {
        progress.add(sent % 1024);
    }
    producer.flush(TIMEOUT)?;
    let done = Instant::now();
    let context = producer.context();
    if context.failed.load(Ordering::Relaxed) > 0 {
        let first = context.first_error.lock().ok().and_then(|e| e.clone()).unwrap_or_default();
        bail!("{} records were not delivered: {first}", context.failed.load(Ordering::Relaxed));
    }
    Ok((sent, done))
}

/// What the producers of a run did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub records: u64,
    /// When the last record was acknowledged.
    pub done: Instant,
    /// CPU-seconds of the sending threads (see [`thread_cpu_s`]).
    pub cpu_s: f64,
}

/// Runs every producer's send loop at once, a thread each.
pub fn run_producers(producers: &[KafkaProducer], plan: &SendPlan) -> anyhow::Result<Sent> {
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for producer in producers {
            let thread = std::thread::Builder::new().name("kafka-producer".into());
            threads.push(thread.spawn_scoped(s, move || {
                let cpu = thread_cpu_s();
                send_loop(producer, plan).map(|sent| (sent, thread_cpu_s() - cpu))
            })?);
        }
        let mut total = Sent { records: 0, done: plan.base, cpu_s: 0.0 };
        for thread in threads {
            let ((n, at), cpu) = thread.join().map_err(|_| anyhow!("a producer thread panicked"))??;
            total = Sent { records: total.records + n, done: total.done.max(at), cpu_s: total.cpu_s + cpu };
        }
        Ok(total)
    })
}

/// Where consumers start: each partition's log start or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Start,
    End,
}

/// Builds `min(--consumers, --partitions)` consumers, connected, and the
/// assignment each will take (every partition once, from `from`, read
/// from the broker's watermarks now).
pub fn build_consumers(
    args: &Args,
    addr: &str,
    max_wait_ms: u64,
    from: StartAt,
) -> anyhow::Result<Vec<(BaseConsumer, TopicPartitionList)>> {
    let n = args.consumers.clamp(1, args.partitions.max(1) as usize);
    let mut consumers = Vec::new();
    for i in 0..n {
        let consumer: BaseConsumer =
            consumer_config(args, addr, max_wait_ms).create().context("a Kafka consumer")?;
        consumer.fetch_metadata(Some(&args.topic), TIMEOUT)?;
        let mut assignment = TopicPartitionList::new();
        for p in (0..args.partitions as i32).filter(|p| *p as usize % n == i) {
            let (low, high) = consumer.fetch_watermarks(&args.topic, p, TIMEOUT)?;
            let offset = if from == StartAt::Start { low } else { high };
            assignment.add_partition_offset(&args.topic, p, Offset::Offset(offset))?;
        }
        consumers.push((consumer, assignment));
    }
    Ok(consumers)
}
