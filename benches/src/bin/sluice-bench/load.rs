//! The load a scenario puts on the broker: the topic, producers and their
//! send loops, consumer group members and waiting for the group to settle.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use sluice_producer::{Message, Producer, Record};
use sluice_protocol::api::{CreateTopicRequest, MetadataRequest};
use sluice_protocol::client::Connection;
use sluice_protocol::ErrorCode;

use crate::args::Args;
use crate::progress::Progress;

/// One of every this many messages has its latency measured.
pub const SAMPLE_EVERY: u64 = 997;

/// Creates the benchmark topic with `--partitions` partitions, or checks
/// that the one on a running broker has that many (the producers address
/// partitions by number, and the group's settling counts them).
pub async fn prepare_topic(args: &Args, addr: &str, create: bool) -> anyhow::Result<()> {
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
pub async fn build_producers(args: &Args, addr: &str) -> anyhow::Result<Vec<Producer>> {
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        let producer = Producer::builder()
            .bootstrap(addr)
            .acks(args.acks.acks())
            .linger(Duration::from_millis(args.linger))
            .batch_bytes(args.batch_bytes)
            .compression(args.compression.codec())
            .buffer_memory(args.buffer_memory)
            .build()
            .await?;
        producers.push(producer);
    }
    Ok(producers)
}

/// What the producer tasks of a run send and measure.
#[derive(Clone)]
pub struct SendPlan {
    pub topic: Arc<str>,
    pub partitions: u32,
    pub message_size: usize,
    /// `--messages` split over the producers.
    pub per_producer: u64,
    /// `--rate` split over the producers (0 = no cap).
    pub per_producer_rate: u64,
    /// Start of the run: values are stamped, and warmup counted, from here.
    pub base: Instant,
    pub warmup: Duration,
    pub deadline: Instant,
    /// e2e: the first 8 bytes of each value are its send time (ns since
    /// `base`). Otherwise every record shares one payload (no allocation).
    pub stamp: bool,
    /// produce: send-to-acknowledgement latency of every
    /// `SAMPLE_EVERY`th record after the warmup.
    pub ack_latency: Option<Arc<Mutex<Histogram<u64>>>>,
    pub progress: Option<Progress>,
    /// Records per batch call (0: `send` per record).
    pub send_batch: u64,
    /// `send_messages` (else `send_batch`) for `send_batch` > 0.
    pub send_messages: bool,
    /// Records name no partition (`--sticky`).
    pub sticky: bool,
}

impl SendPlan {
    pub fn new(args: &Args, base: Instant, stamp: bool) -> Self {
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
            send_batch: args.send_batch,
            send_messages: args.batch_call == crate::args::BatchCallArg::Messages,
            sticky: args.sticky,
        }
    }

    /// The partition a record names: the round robin's next, or none.
    #[inline]
    fn partition(&self, next: u32) -> Option<u32> {
        (!self.sticky).then_some(next)
    }
}

/// One producer's send loop; returns how many records it sent and when
/// the last of them was acknowledged (per `--acks`).
pub async fn send_loop(producer: Producer, plan: SendPlan) -> anyhow::Result<(u64, Instant)> {
    if plan.send_batch > 0 {
        return send_batch_loop(producer, plan).await;
    }
    let payload = shared_payload(plan.message_size);
    // This task's own topic name: records clone it, and a name shared by
    // every producer task would make its reference count one cache line
    // that all cores fight over (8 in-process producers on 16 cores ran at
    // a third of 8 processes' rate with it).
    let topic: Arc<str> = Arc::from(&*plan.topic);
    let (mut sent, mut partition) = (0u64, 0u32);
    let started = Instant::now();
    while sent < plan.per_producer && (sent % 1024 != 0 || Instant::now() < plan.deadline) {
        if plan.per_producer_rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / plan.per_producer_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let record = Record {
            partition: plan.partition(partition),
            ..Record::new(Arc::clone(&topic), value(&plan, payload))
        };
        partition = next_partition(partition, plan.partitions);
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
        // In steps of 1024: a counter shared by every producer task, bumped
        // per record, is another contended cache line.
        if let Some(progress) = plan.progress.as_ref().filter(|_| sent % 1024 == 0) {
            progress.add(1024);
        }
    }
    if let Some(progress) = &plan.progress {
        progress.add(sent % 1024);
    }
    producer.flush().await?;
    let done = Instant::now();
    producer.close().await?;
    Ok((sent, done))
}

/// The payload every record of a producer task shares: static, so that a
/// record's value is made in place (`Bytes::from_static`, no call, no
/// reference count) and dropped for free: the application's cost of
/// making values is not what is measured. One small leak per task, for
/// the life of the benchmark process.
fn shared_payload(size: usize) -> &'static [u8] {
    Box::leak(vec![b'x'; size].into_boxed_slice())
}

/// Records go round the partitions in turn.
#[inline]
fn next_partition(partition: u32, partitions: u32) -> u32 {
    if partition + 1 >= partitions {
        0
    } else {
        partition + 1
    }
}

/// The value of the next record: the shared payload, or (e2e) a fresh one
/// stamped with its send time.
#[inline]
fn value(plan: &SendPlan, payload: &'static [u8]) -> Bytes {
    if plan.stamp {
        let mut value = vec![b'x'; plan.message_size.max(8)];
        value[..8].copy_from_slice(&(plan.base.elapsed().as_nanos() as u64).to_be_bytes());
        Bytes::from(value)
    } else {
        Bytes::from_static(payload)
    }
}

/// `send_loop` with `--send-batch N`: `send_batch` (or, with
/// `--batch-call messages`, `send_messages`) calls of N records, the rate
/// cap and latency sampling applied per call.
async fn send_batch_loop(producer: Producer, plan: SendPlan) -> anyhow::Result<(u64, Instant)> {
    let payload = shared_payload(plan.message_size);
    // The topic per task, as in `send_loop`. `send_messages` borrows its
    // messages: one set per task, their partitions (and, e2e, values) set
    // again for each call.
    let topic: Arc<str> = Arc::from(&*plan.topic);
    let set = if plan.send_messages { plan.send_batch as usize } else { 0 };
    let mut messages = vec![Message::new(Bytes::from_static(payload)); set];
    let (mut sent, mut partition, started) = (0u64, 0u32, Instant::now());
    while sent < plan.per_producer && Instant::now() < plan.deadline {
        if plan.per_producer_rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / plan.per_producer_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let n = plan.send_batch.min(plan.per_producer - sent);
        let delivery = if plan.send_messages {
            let messages = &mut messages[..n as usize];
            for m in messages.iter_mut() {
                m.partition = plan.partition(partition);
                partition = next_partition(partition, plan.partitions);
                if plan.stamp {
                    m.value = Some(value(&plan, payload));
                }
            }
            producer.send_messages(&topic, messages).await?
        } else {
            let records = (0..n).map(|_| {
                let record = Record {
                    partition: plan.partition(partition),
                    ..Record::new(Arc::clone(&topic), value(&plan, payload))
                };
                partition = next_partition(partition, plan.partitions);
                record
            });
            producer.send_batch(records).await?
        };
        // Whether a multiple of SAMPLE_EVERY is among the call's records.
        let sampled = (sent + n - 1) / SAMPLE_EVERY * SAMPLE_EVERY >= sent;
        match &plan.ack_latency {
            Some(histogram) if sampled && plan.base.elapsed() >= plan.warmup => {
                let (at, histogram) = (Instant::now(), Arc::clone(histogram));
                tokio::spawn(async move {
                    if delivery.acknowledged().await.is_ok() {
                        let _ = histogram.lock().map(|mut h| h.record(at.elapsed().as_micros() as u64));
                    }
                });
            }
            _ => drop(delivery),
        }
        sent += n;
        if let Some(progress) = &plan.progress {
            progress.add(n);
        }
    }
    producer.flush().await?;
    let done = Instant::now();
    producer.close().await?;
    Ok((sent, done))
}

/// Runs every producer's send loop at once; returns the records sent and
/// when the last one was acknowledged (closing the producers is not timed).
pub async fn run_producers(producers: Vec<Producer>, plan: &SendPlan) -> anyhow::Result<(u64, Instant)> {
    let tasks: Vec<_> =
        producers.into_iter().map(|producer| tokio::spawn(send_loop(producer, plan.clone()))).collect();
    let (mut sent, mut done) = (0, plan.base);
    for task in tasks {
        let (n, at) = task.await??;
        (sent, done) = (sent + n, done.max(at));
    }
    Ok((sent, done))
}

/// A group member subscribed to the topic, with `--fetch-bytes`.
pub fn consumer_builder(args: &Args, addr: &str, group: &str) -> sluice_consumer::ConsumerBuilder {
    let builder =
        sluice_consumer::Consumer::builder().bootstrap(addr).group(group).subscribe([args.topic.clone()]);
    match args.fetch_bytes {
        Some(bytes) => builder.fetch_max_bytes(bytes),
        None => builder,
    }
}

/// Waits until the group's assignment is stable: every partition owned
/// once, and every member that can have one owns one.
pub async fn settle(consumers: &[sluice_consumer::Consumer], partitions: u32) -> anyhow::Result<()> {
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
