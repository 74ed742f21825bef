//! The Sluice producer: batches records per partition, pipelines produce
//! requests on one connection, retries idempotently and applies
//! backpressure when its buffer is full.
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
mod delivery;
mod error;
mod fxhash;
mod partitioner;
mod record;
mod sender;

pub use delivery::{BatchDelivery, DeliveryFuture};
pub use error::ProducerError;
pub use partitioner::{murmur2, partition_for_key, Partitioner};
pub use record::{Record, RecordMetadata, UNKNOWN_OFFSET};
pub use sluice_protocol::api::Acks;
pub use sluice_protocol::batch::Compression;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use accumulator::{Accumulator, Appended, NewRecord};
use fxhash::FxHashMap;
use sluice_protocol::api::MetadataRequest;
use sluice_protocol::batch::{BatchBuilder, HeaderRef, HEADER_LEN, NO_PRODUCER_ID};
use sluice_protocol::client::Connection;
use sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use sluice_protocol::ErrorCode;
use tokio::sync::{Notify, Semaphore};

/// Producer settings; see [`ProducerBuilder`] for each one's default.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Broker address.
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
    pub buffer_memory: usize,
    /// Producer id and sequence numbers so retries never duplicate.
    pub idempotent: bool,
    /// How partitions are chosen.
    pub partitioner: Partitioner,
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
            buffer_memory: 64 << 20,
            idempotent: true,
            partitioner: Partitioner::Murmur2,
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
    /// Broker address (default `127.0.0.1:9500`).
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
    /// Buffered bytes at most before `send` waits (default 64 MiB).
    buffer_memory: usize,
    /// Idempotent retries (default on).
    idempotent: bool,
    /// Partitioner (default murmur2 of the key, sticky for null keys).
    partitioner: Partitioner,
}

impl ProducerBuilder {
    /// Connects to the broker and starts the sender.
    pub async fn build(self) -> Result<Producer, ProducerError> {
        let mut config = self.config;
        config.max_in_flight_per_partition = config.max_in_flight_per_partition.clamp(1, 5);
        config.max_in_flight = config.max_in_flight.max(1);
        config.batch_bytes = config.batch_bytes.max(1024);
        config.buffer_memory = config.buffer_memory.max(config.batch_bytes);
        config.retry_backoff_max = config.retry_backoff_max.max(config.retry_backoff);
        let producer_id = if config.idempotent { random_producer_id() } else { NO_PRODUCER_ID };
        let conn = Connection::connect(&config.bootstrap, &config.client_id)
            .await?
            .with_timeout(config.request_timeout)
            .with_max_request_bytes(config.max_request_bytes);
        let inner = Arc::new(Inner {
            max_request_bytes: AtomicUsize::new(config.max_request_bytes),
            acc: Mutex::new(Accumulator::new(config.batch_bytes, config.compression, producer_id)),
            buffer: Semaphore::new(config.buffer_memory),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            metadata: RwLock::new(FxHashMap::default()),
            conn: tokio::sync::Mutex::new(Some(conn)),
            config,
        });
        let sender = tokio::spawn(sender::run(Arc::clone(&inner)));
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

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
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
    /// Topic → what `send` needs to know of it.
    metadata: RwLock<FxHashMap<String, TopicInfo>>,
    /// The broker connection; replaced when it fails.
    pub conn: tokio::sync::Mutex<Option<Connection>>,
}

/// What the producer knows of a topic.
#[derive(Debug, Clone)]
struct TopicInfo {
    /// The interned name.
    name: Arc<str>,
    /// Partition count.
    partitions: u32,
    /// Largest batch the topic accepts (its `max_message_bytes`).
    max_message_bytes: usize,
}

/// Bytes of a produce request besides its batch and names (request
/// header, acks, timeout, partition, length prefixes), rounded up.
const REQUEST_OVERHEAD: usize = 64;

impl Inner {
    pub fn acc(&self) -> MutexGuard<'_, Accumulator> {
        self.acc.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live connection, reconnecting when it failed.
    pub async fn connection(&self) -> Result<Connection, ProducerError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Connection::connect(&self.config.bootstrap, &self.config.client_id)
            .await?
            .with_timeout(self.config.request_timeout)
            .with_max_request_bytes(self.max_request_bytes());
        *conn = Some(c.clone());
        Ok(c)
    }

    /// The largest produce request to send.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes.load(Ordering::Acquire)
    }

    /// A broker refused a request over `max` bytes: larger records now
    /// fail in `send`.
    pub fn learn_max_request_bytes(&self, max: usize) {
        let before = self.max_request_bytes.fetch_min(max, Ordering::AcqRel);
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
    /// the topic; returns its reserved size and its batch limit.
    fn check(
        &self,
        record: &Record,
        info: &TopicInfo,
        headers: &[HeaderRef<'_>],
    ) -> Result<(usize, usize), ProducerError> {
        let size =
            BatchBuilder::record_size(0, 0, record.key.as_deref(), record.value.as_deref(), headers) + 16;
        let max = self.config.buffer_memory.min(u32::MAX as usize);
        if size > max {
            return Err(ProducerError::RecordTooLarge { size, max });
        }
        // Alone in its batch, the record must fit every limit on the way.
        let batch_limit = self.batch_limit(info);
        if size + HEADER_LEN > batch_limit {
            return Err(ProducerError::RecordTooLarge { size: size + HEADER_LEN, max: batch_limit });
        }
        if let Some(p) = record.partition.filter(|p| *p >= info.partitions) {
            return Err(ProducerError::UnknownPartition {
                topic: record.topic.to_string(),
                partition: p,
                count: info.partitions,
            });
        }
        Ok((size, batch_limit))
    }

    /// The partition of a checked record (under the accumulator's lock: the
    /// sticky partition moves as batches close).
    fn partition_of(&self, acc: &mut Accumulator, record: &Record, info: &TopicInfo) -> u32 {
        match (record.partition, &record.key, self.config.partitioner) {
            (Some(p), _, _) => p,
            (None, Some(key), Partitioner::Murmur2) => partition_for_key(key, info.partitions),
            _ => acc.sticky_partition(&info.name, info.partitions),
        }
    }

    /// What is known of `topic` without a request (the per-record path).
    fn cached_topic(&self, topic: &str) -> Option<TopicInfo> {
        self.metadata.read().ok().and_then(|m| m.get(topic).cloned())
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

    /// Forgets a topic's partition count (refetched on next use).
    pub fn invalidate(&self, topic: &str) {
        if let Ok(mut m) = self.metadata.write() {
            m.remove(topic);
        }
    }

    /// What is known of `topic`, fetching its metadata when nothing is.
    async fn topic(&self, topic: &str) -> Result<TopicInfo, ProducerError> {
        if let Some(found) = self.cached_topic(topic) {
            return Ok(found);
        }
        let conn = self.connection().await?;
        let meta = conn.call(&MetadataRequest { topics: vec![topic.to_owned()] }).await?;
        let t = meta
            .topics
            .into_iter()
            .next()
            .filter(|t| t.error_code == ErrorCode::None && !t.partitions.is_empty());
        let t = t.ok_or_else(|| ProducerError::UnknownTopic(topic.to_owned()))?;
        let max_message_bytes = t
            .configs
            .iter()
            .find(|c| c.key == "max_message_bytes")
            .and_then(|c| c.value.parse().ok())
            .unwrap_or(usize::MAX);
        let found =
            TopicInfo { name: Arc::from(topic), partitions: t.partitions.len() as u32, max_message_bytes };
        if let Ok(mut m) = self.metadata.write() {
            m.insert(topic.to_owned(), found.clone());
        }
        Ok(found)
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
        let info = match self.inner.cached_topic(&record.topic) {
            Some(info) => info,
            None => self.inner.topic(&record.topic).await?,
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let headers = header_refs(&record);
        let (size, batch_limit) = self.inner.check(&record, &info, &headers)?;
        self.inner.reserve(size).await?;
        let new = NewRecord {
            timestamp,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            size,
            batch_limit,
        };
        let (completion, index, partition, appended) = {
            let mut acc = self.inner.acc();
            let partition = self.inner.partition_of(&mut acc, &record, &info);
            let (completion, index, appended) = acc.append(&(Arc::clone(&info.name), partition), &new, true);
            (completion, index, partition, appended)
        };
        if appended != Appended::Filling {
            self.inner.wake.notify_one();
        }
        let completion = completion.ok_or(ProducerError::Closed)?;
        Ok(DeliveryFuture::new(completion, info.name, partition, index, timestamp))
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
        for mut c in pending {
            c.wait_for(Option::is_some).await.map_err(|_| ProducerError::Closed)?;
        }
        Ok(())
    }

    /// Flushes, then stops the sender. Later `send` calls fail with `Closed`.
    pub async fn close(&self) -> Result<(), ProducerError> {
        let flushed = self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
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
    }
}

/// The headers of a record as the batch builder takes them (no allocation
/// for a record without headers).
fn header_refs(record: &Record) -> Vec<HeaderRef<'_>> {
    record.headers.iter().map(|(k, v)| HeaderRef { key: k.as_bytes(), value: v.as_deref() }).collect()
}
