//! The Sluice producer: batches records per partition, pipelines produce
//! requests to each partition's leader, retries idempotently and applies
//! backpressure when its buffer is full.
//!
//! Brokers: `bootstrap` names one address or several (`a:9500,b:9500`);
//! the first reachable one answers metadata, which says every broker and
//! each partition's leader. Batches go to their partition's leader (one
//! connection per broker, opened when first needed); a batch refused with
//! `NOT_LEADER_OR_FOLLOWER` or `FENCED_LEADER_EPOCH`, or whose leader
//! cannot be reached, refreshes metadata and is resent (same sequence
//! numbers, so the new leader deduplicates) to the new leader, in order,
//! within `delivery_timeout`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_producer::ProducerError> {
//! use sluice_producer::{Producer, Record};
//! let producer = Producer::builder().bootstrap("127.0.0.1:9500").build().await?;
//! // `send` enqueues (waiting only when `buffer_memory` is full) and returns
//! // a future that resolves when the broker acknowledged the record.
//! let delivery = producer.send(Record::new("orders", "hello").key("customer-1")).await?;
//! let meta = delivery.await?;
//! println!("written at {}/{}", meta.partition, meta.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! For throughput, [`Producer::send_messages`] enqueues many records for
//! one topic in one call (borrowing them, so they may be sent again) and
//! [`Producer::send_batch`] many records of any topics; each returns one
//! [`BatchDelivery`] for the call, not a future per record.
//!
//! Guarantees: records of one partition are written in the order `send`
//! was called; with idempotence (the default) retries never duplicate or
//! reorder them; a record's future fails with a typed [`ProducerError`] only
//! for the records of the batch that failed (and, after a permanent failure,
//! the batches of that partition queued behind it, whose order could not be
//! kept otherwise).
//!
//! Size limits: a record whose batch could never be written fails in
//! `send` with [`ProducerError::RecordTooLarge`], before it is buffered:
//! over `buffer_memory`, over `max_request_bytes` (the broker's
//! `max_frame_bytes`, like Kafka's `max.request.size`), over its topic's
//! `max_message_bytes` (learned from metadata), or over a smaller frame
//! limit a broker named when it refused an oversized request. Batches are
//! closed before they outgrow those limits. A batch the broker refuses as
//! too large fails at once (never retried) with `RecordTooLarge` or
//! `Broker { code: BatchTooLarge }`.

mod accumulator;
mod batch_send;
mod completion;
mod delivery;
mod error;
mod fxhash;
mod metadata;
mod partitioner;
mod pool;
mod record;
mod sender;
mod sticky;

pub use delivery::{BatchDelivery, DeliveryFuture};
pub use error::ProducerError;
pub use partitioner::{murmur2, partition_for_key, Partitioner};
pub use record::{Message, Record, RecordMetadata, UNKNOWN_OFFSET};
pub use sluice_protocol::api::Acks;
pub use sluice_protocol::batch::Compression;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use accumulator::{Accumulator, Appended, NewRecord, Placed};
pub(crate) use metadata::TopicInfo;
use record::{Fields, Outgoing};
use sluice_protocol::batch::{BatchBuilder, HeaderRef, HEADER_LEN, NO_PRODUCER_ID};
use sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use sluice_protocol::routing::{parse_bootstrap, Router, RouterConfig};
use tokio::sync::{Notify, Semaphore};

/// Producer settings; see [`ProducerBuilder`] for each one's default.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Broker address, or several separated by commas (tried in order
    /// for metadata; the cluster's other brokers are learnt from it).
    pub bootstrap: String,
    /// Name sent in request headers.
    pub client_id: String,
    /// How long a batch may wait for more records before it is sent.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes.
    pub batch_bytes: usize,
    /// Produce requests in flight on the connection.
    pub max_in_flight: usize,
    /// Produce requests in flight per partition (at most 5: the broker
    /// remembers 5 batches per producer for deduplication).
    pub max_in_flight_per_partition: usize,
    /// When the broker acknowledges.
    pub acks: Acks,
    /// Batch compression.
    pub compression: Compression,
    /// Sends of one batch at most (the first included).
    pub retries: u32,
    /// Wait before the first resend of a failed batch; doubled per
    /// further failure up to `retry_backoff_max`, with ±20% jitter.
    pub retry_backoff: Duration,
    /// Longest wait between resends.
    pub retry_backoff_max: Duration,
    /// Largest produce request (frame payload) to send: the broker's
    /// `max_frame_bytes`. Larger records fail in `send`.
    pub max_request_bytes: usize,
    /// How long one request may wait for its response.
    pub request_timeout: Duration,
    /// How long a record may take from `send` to acknowledgement, retries included.
    pub delivery_timeout: Duration,
    /// Bytes of records buffered and in flight at most; `send` waits past it.
    /// Default 16 MiB: a producer that outruns the broker keeps this much
    /// queued, and a smaller queue stays in the CPU's caches between
    /// encoding and the socket write (docs/client-cost.md, sixth round).
    pub buffer_memory: usize,
    /// Producer id and sequence numbers so retries never duplicate.
    pub idempotent: bool,
    /// How partitions are chosen.
    pub partitioner: Partitioner,
    /// How often the metadata of the topics in use is fetched again, so a
    /// running producer sees partitions added to them (Kafka's
    /// `metadata.max.age.ms`). Errors that metadata can explain (unknown
    /// topic or partition, batch too large) refetch it at once as well.
    /// Default 60 s (Kafka's is 5 min): added partitions are used within a
    /// minute, for one small metadata request per topic in use per minute,
    /// made by a background task off the `send` path.
    pub metadata_max_age: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9500".into(),
            client_id: "sluice-producer".into(),
            linger: Duration::from_millis(5),
            batch_bytes: 512 * 1024,
            max_in_flight: 32,
            max_in_flight_per_partition: 5,
            acks: Acks::Durable,
            compression: Compression::None,
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            max_request_bytes: DEFAULT_MAX_FRAME_BYTES,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            buffer_memory: 16 << 20,
            idempotent: true,
            partitioner: Partitioner::Murmur2,
            metadata_max_age: Duration::from_secs(60),
        }
    }
}

/// Builds a [`Producer`].
#[derive(Debug, Clone, Default)]
pub struct ProducerBuilder {
    config: ProducerConfig,
}

macro_rules! setters {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty ),* $(,)?) => {
        impl ProducerBuilder {
            $( $(#[$doc])* pub fn $name(mut self, value: impl Into<$ty>) -> Self {
                self.config.$name = value.into();
                self
            } )*
        }
    };
}

setters! {
    /// Broker address, or a comma-separated list (default `127.0.0.1:9500`).
    bootstrap: String,
    /// Client id in request headers (default `sluice-producer`).
    client_id: String,
    /// Batching delay (default 5 ms).
    linger: Duration,
    /// Batch size that triggers a send (default 512 KiB).
    batch_bytes: usize,
    /// Requests in flight on the connection (default 32).
    max_in_flight: usize,
    /// When the broker acknowledges (default `Durable`).
    acks: Acks,
    /// Compression (default none).
    compression: Compression,
    /// Sends of one batch at most (default unlimited, bounded by `delivery_timeout`).
    retries: u32,
    /// First backoff between sends of a batch, doubled per failure (default 100 ms).
    retry_backoff: Duration,
    /// Longest backoff between sends of a batch (default 1 s).
    retry_backoff_max: Duration,
    /// Largest produce request, the broker's `max_frame_bytes` (default 16 MiB).
    max_request_bytes: usize,
    /// Response timeout of one request (default 30 s).
    request_timeout: Duration,
    /// Send-to-acknowledgement limit, retries included (default 120 s).
    delivery_timeout: Duration,
    /// Buffered bytes at most before `send` waits (default 16 MiB).
    buffer_memory: usize,
    /// Idempotent retries (default on).
    idempotent: bool,
    /// Partitioner (default murmur2 of the key, sticky for null keys).
    partitioner: Partitioner,
    /// Metadata refresh interval of the topics in use (default 60 s).
    metadata_max_age: Duration,
}

impl ProducerBuilder {
    /// Several bootstrap addresses, tried in order (as `bootstrap` with
    /// them joined by commas).
    pub fn bootstrap_servers<S: AsRef<str>>(mut self, addrs: impl IntoIterator<Item = S>) -> Self {
        let addrs: Vec<String> = addrs.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.config.bootstrap = addrs.join(",");
        self
    }

    /// Connects to the first reachable bootstrap broker and starts the sender.
    pub async fn build(self) -> Result<Producer, ProducerError> {
        let mut config = self.config;
        config.max_in_flight_per_partition = config.max_in_flight_per_partition.clamp(1, 5);
        config.max_in_flight = config.max_in_flight.max(1);
        config.batch_bytes = config.batch_bytes.max(1024);
        config.buffer_memory = config.buffer_memory.max(config.batch_bytes);
        config.retry_backoff_max = config.retry_backoff_max.max(config.retry_backoff);
        let producer_id = if config.idempotent { random_producer_id() } else { NO_PRODUCER_ID };
        let router = Router::new(RouterConfig {
            bootstrap: parse_bootstrap(&config.bootstrap),
            client_id: config.client_id.clone(),
            request_timeout: config.request_timeout,
            max_request_bytes: config.max_request_bytes,
            min_refresh: config.retry_backoff,
        });
        router.connect_bootstrap().await?;
        let inner = Arc::new(Inner {
            max_request_bytes: AtomicUsize::new(config.max_request_bytes),
            acc: Mutex::new(Accumulator::new(config.batch_bytes, config.compression, producer_id)),
            buffer: Semaphore::new(config.buffer_memory),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            router,
            refresh: Notify::new(),
            config,
        });
        let sender = tokio::spawn(sender::run(Arc::clone(&inner)));
        tokio::spawn(metadata::refresh_metadata(Arc::downgrade(&inner)));
        Ok(Producer { inner, sender: Mutex::new(Some(sender)) })
    }
}

fn random_producer_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    (h.finish() >> 1) as i64 // non-negative: never NO_PRODUCER_ID (-1)
}

/// State shared by the producer handle and its sender task.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: ProducerConfig,
    pub acc: Mutex<Accumulator>,
    /// Bytes of buffer memory left.
    pub buffer: Semaphore,
    /// Wakes the sender (a batch opened or closed, flush, close).
    pub wake: Notify,
    pub closed: AtomicBool,
    /// The largest request the broker takes: `max_request_bytes`, lowered
    /// when a broker refuses a smaller frame.
    max_request_bytes: AtomicUsize,
    /// Partition leaders and a connection per broker.
    pub router: Router,
    /// Wakes the metadata task: routes may have changed.
    pub refresh: Notify,
}

/// A record's sizes and limits, from [`Inner::check`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    /// `BatchBuilder::fixed_len` of the record.
    pub fixed: usize,
    /// The largest batch it may go into.
    pub batch_limit: usize,
}

impl Checked {
    /// The buffer memory (an upper bound of the encoded size) of a record whose `BatchBuilder::fixed_len` is
    /// `fixed`: that, both deltas (10 bytes at most each) and the length
    /// prefix (5).
    #[inline]
    pub fn size_of(fixed: usize) -> usize {
        fixed + 25
    }
}

/// Buffer memory taken from the semaphore at once (at most a sixteenth of
/// `buffer_memory`), so most records reserve theirs without touching it.
const CREDIT_CHUNK: usize = 64 * 1024;

/// What [`Inner::try_append`] did.
#[derive(Debug)]
enum Append {
    /// Appended.
    Done(Placed),
    /// The topic's metadata is needed first.
    NeedTopic,
    /// Buffer credit for this many bytes is needed first.
    NeedCredit(usize),
}

/// Bytes of a produce request besides its batch and names (request
/// header, acks, timeout, partition, length prefixes), rounded up.
const REQUEST_OVERHEAD: usize = 64;

impl Inner {
    pub fn acc(&self) -> MutexGuard<'_, Accumulator> {
        self.acc.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The largest produce request to send.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes.load(Ordering::Acquire)
    }

    /// A broker refused a request over `max` bytes: larger records now
    /// fail in `send`.
    pub fn learn_max_request_bytes(&self, max: usize) {
        let before = self.max_request_bytes.fetch_min(max, Ordering::AcqRel);
        self.router.set_max_request_bytes(max.min(before));
        if max < before {
            tracing::warn!(max, before, "the broker's frame limit is below max_request_bytes; lowered");
        }
    }

    /// The largest batch for `topic`.
    fn batch_limit(&self, topic: &TopicInfo) -> usize {
        let request = self
            .max_request_bytes()
            .saturating_sub(REQUEST_OVERHEAD + topic.name.len() + self.config.client_id.len());
        request.min(topic.max_message_bytes)
    }

    /// Checks a record against every size limit and its partition against
    /// the topic; returns its sizes and its batch limit. Inlined, with the
    /// error built out of line: the per-record path of `send` is a few
    /// compares (batch calls check with the limits worked out per call).
    #[inline]
    fn check(
        &self,
        record: &Fields<'_>,
        info: &TopicInfo,
        headers: &[HeaderRef<'_>],
    ) -> Result<Checked, ProducerError> {
        let batch_limit = self.batch_limit(info);
        let fixed = BatchBuilder::fixed_len(record.key, record.value, headers);
        let size = Checked::size_of(fixed);
        if size > self.max_record_size(batch_limit) || record.partition.is_some_and(|p| p >= info.partitions)
        {
            return Err(self.check_failed(record.partition, info, size, batch_limit));
        }
        Ok(Checked { fixed, batch_limit })
    }

    /// The largest record (its `Checked::size_of`) that fits, alone in its
    /// batch, every limit on the way: the buffer memory, `u32` sizes, and
    /// a batch of at most `batch_limit` bytes with its header.
    #[inline]
    fn max_record_size(&self, batch_limit: usize) -> usize {
        self.config.buffer_memory.min(u32::MAX as usize).min(batch_limit.saturating_sub(HEADER_LEN))
    }

    /// The key of a record without a partition that picks its partition
    /// (murmur2); `None` when the sticky partitioner places it.
    #[inline]
    fn partition_key<'a>(&self, record: &Fields<'a>) -> Option<&'a [u8]> {
        record.key.filter(|_| record.partition.is_none() && self.config.partitioner == Partitioner::Murmur2)
    }

    /// The error of a record that failed [`check`](Self::check).
    #[cold]
    #[inline(never)]
    fn check_failed(
        &self,
        partition: Option<u32>,
        info: &TopicInfo,
        size: usize,
        batch_limit: usize,
    ) -> ProducerError {
        let max = self.config.buffer_memory.min(u32::MAX as usize);
        if size > max {
            return ProducerError::RecordTooLarge { size, max };
        }
        if size + HEADER_LEN > batch_limit {
            return ProducerError::RecordTooLarge { size: size + HEADER_LEN, max: batch_limit };
        }
        ProducerError::UnknownPartition {
            topic: info.name.to_string(),
            partition: partition.unwrap_or_default(),
            count: info.partitions,
        }
    }

    /// The partition of a checked record (under the accumulator's lock: the
    /// sticky partition moves as batches close).
    #[inline]
    fn partition_of(
        &self,
        acc: &mut Accumulator,
        topic: &Arc<str>,
        record: &Fields<'_>,
        partitions: u32,
    ) -> u32 {
        match (record.partition, self.partition_key(record)) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => acc.sticky_partition(topic, partitions),
        }
    }

    /// What is known of `topic` without a request.
    fn cached_topic(&self, topic: &Arc<str>) -> Option<TopicInfo> {
        self.acc().topic(topic).cloned()
    }

    /// Buffer memory for `size` bytes of records into the accumulator's
    /// credit: a whole chunk when the semaphore has it, else `size`
    /// (waiting while the buffer is full).
    async fn refill_credit(&self, size: usize) -> Result<(), ProducerError> {
        let chunk = CREDIT_CHUNK.min(self.config.buffer_memory / 16).max(size);
        let took = match u32::try_from(chunk).ok().and_then(|c| self.buffer.try_acquire_many(c).ok()) {
            Some(permit) => {
                permit.forget();
                chunk
            }
            None => {
                self.reserve(size).await?;
                size
            }
        };
        self.acc().add_credit(took);
        Ok(())
    }

    /// Appends `record` under one accumulator lock if its topic is known
    /// and buffer credit is left; otherwise says what is missing.
    fn try_append(&self, record: &Record, headers: &[HeaderRef<'_>]) -> Result<Append, ProducerError> {
        let mut acc = self.acc();
        let Some(info) = acc.topic(&record.topic) else { return Ok(Append::NeedTopic) };
        let fields = record.fields();
        let checked = self.check(&fields, info, headers)?;
        let partitions = info.partitions;
        let new = NewRecord::new(&fields, headers, checked.fixed, checked.batch_limit);
        if !acc.take_credit(new.size) {
            return Ok(Append::NeedCredit(new.size));
        }
        let partition = self.partition_of(&mut acc, &record.topic, &fields, partitions);
        Ok(Append::Done(acc.append(&record.topic, partition, &new, true)))
    }

    /// Reserves `size` bytes of buffer memory, waiting while it is full.
    async fn reserve(&self, size: usize) -> Result<(), ProducerError> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        match self.buffer.try_acquire_many(size) {
            Ok(permit) => permit.forget(),
            Err(_) => self.buffer.acquire_many(size).await.map_err(|_| ProducerError::Closed)?.forget(),
        }
        Ok(())
    }
}

/// An asynchronous producer. Cheap to share behind an `Arc`; `send` takes `&self`.
#[derive(Debug)]
pub struct Producer {
    inner: Arc<Inner>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Producer {
    /// A builder with documented defaults.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// The settings in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Enqueues a record, waiting while `buffer_memory` is full
    /// (backpressure). The returned future resolves when the broker has
    /// acknowledged the record (per `acks`); dropping it does not cancel
    /// the send (fire and forget).
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture, ProducerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ProducerError::Closed);
        }
        let headers = header_refs(&record.headers);
        loop {
            // The common case: topic known, buffer credit left; one lock.
            let need = match self.inner.try_append(&record, &headers)? {
                Append::Done(placed) => {
                    if placed.appended != Appended::Filling {
                        self.inner.wake.notify_one();
                    }
                    let Some(completion) = placed.completion else { return Err(ProducerError::Closed) };
                    return Ok(DeliveryFuture::new(completion, placed.index, placed.timestamp));
                }
                Append::NeedTopic => {
                    self.inner.topic(&record.topic).await?;
                    continue;
                }
                Append::NeedCredit(size) => size,
            };
            self.inner.refill_credit(need).await?;
        }
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: Record) -> Result<RecordMetadata, ProducerError> {
        self.send(record).await?.await
    }

    /// Sends every buffered batch now and waits until everything sent
    /// before this call is acknowledged or has failed.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        let pending = {
            let mut acc = self.inner.acc();
            acc.close_expired(Duration::ZERO, true);
            acc.unfinished()
        };
        self.inner.wake.notify_one();
        for c in pending {
            if let Err(ProducerError::Closed) = c.finished().await {
                return Err(ProducerError::Closed);
            }
        }
        Ok(())
    }

    /// Flushes, then stops the sender. Later `send` calls fail with `Closed`.
    pub async fn close(&self) -> Result<(), ProducerError> {
        let flushed = self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        self.inner.refresh.notify_one();
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        if let Some(sender) = sender {
            let _ = sender.await;
        }
        flushed
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        self.inner.refresh.notify_one(); // the metadata task ends
    }
}

/// The headers of a record as the batch builder takes them (no allocation
/// for a record without headers).
#[inline]
fn header_refs(headers: &[(String, Option<bytes::Bytes>)]) -> Vec<HeaderRef<'_>> {
    if headers.is_empty() {
        return Vec::new(); // the common case, without the collect machinery
    }
    headers.iter().map(|(k, v)| HeaderRef { key: k.as_bytes(), value: v.as_deref() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_buffer_memory_never_limits_a_record_before_the_request_limit_does() {
        // A record must fit alone in a request; `buffer_memory` below the
        // request limit would refuse records the broker takes (16 MiB each).
        let config = ProducerConfig::default();
        assert!(config.buffer_memory >= config.max_request_bytes, "{config:?}");
    }
}
