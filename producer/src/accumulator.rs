//! Per-partition batching. `send` appends a record straight into its
//! partition's open [`BatchBuilder`] under one short lock; a batch closes
//! when it reaches `batch_bytes` or its `linger` runs out (or on `flush`),
//! gets its idempotence sequence, and waits in the partition's ready queue
//! for the sender. Each batch has one completion shared by its records, so
//! there is no per-record channel or allocation beyond the encoding.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{increment_sequence, BatchBuilder, Compression, HeaderRef, NO_PRODUCER_ID};
use tokio::sync::watch;

use crate::error::ProducerError;
use crate::fxhash::FxHashMap;

/// A batch's outcome: base offset and log-append time (-1 for create time).
pub(crate) type BatchResult = Result<(u64, i64), ProducerError>;

/// Shared by a batch's records; set once.
pub(crate) type Completion = watch::Receiver<Option<BatchResult>>;

/// A partition of a topic.
pub(crate) type PartitionKey = (Arc<str>, u32);

/// A batch being filled.
#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    completion: watch::Sender<Option<BatchResult>>,
    reserved: usize,
}

/// A closed batch, ready to send (and to resend on retriable failure).
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    /// Where it goes.
    pub key: PartitionKey,
    /// The encoded batch, sequence included.
    pub bytes: Bytes,
    /// Its first record's sequence number.
    pub sequence: i32,
    /// The partition's producer epoch it was stamped with.
    pub epoch: i16,
    /// When its first record was appended (for `delivery_timeout`).
    pub created: Instant,
    /// Sends so far.
    pub attempts: u32,
    /// Completes the records' delivery futures.
    pub completion: watch::Sender<Option<BatchResult>>,
    /// Buffer memory to release when done.
    pub reserved: usize,
}

impl ReadyBatch {
    /// Completes every record of the batch.
    pub fn complete(&self, result: BatchResult) {
        self.completion.send_replace(Some(result));
    }
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    /// Producer epoch of this partition: bumped after a permanent failure so
    /// the broker accepts a fresh sequence.
    epoch: i16,
    /// Wraps from `i32::MAX` to 0, as in Kafka.
    next_sequence: i32,
}

impl PartitionQueue {
    /// Closes the open batch: stamps its sequence, moves it to the ready queue.
    fn close(&mut self, producer_id: i64, key: &PartitionKey) {
        let Some(open) = self.open.take() else { return };
        let count = open.builder.record_count();
        let sequence = self.next_sequence;
        self.next_sequence = increment_sequence(sequence, count.min(i32::MAX as u32) as i32);
        let bytes = if producer_id == NO_PRODUCER_ID {
            open.builder.build()
        } else {
            open.builder.producer(producer_id, self.epoch, sequence).build()
        };
        self.ready.push_back(ReadyBatch {
            key: key.clone(),
            bytes,
            sequence,
            epoch: self.epoch,
            created: open.created,
            attempts: 0,
            completion: open.completion,
            reserved: open.reserved,
        });
    }
}

/// Every partition's batches.
#[derive(Debug)]
pub(crate) struct Accumulator {
    queues: FxHashMap<PartitionKey, PartitionQueue>,
    /// The sticky partition of each topic for records without a key, and
    /// the topic's partition count.
    sticky: FxHashMap<Arc<str>, (u32, u32)>,
    batch_bytes: usize,
    compression: Compression,
    producer_id: i64,
    /// Completions of batches created and not yet known to be finished
    /// (what `flush` waits for).
    unfinished: Vec<Completion>,
}

/// What an append did, for waking the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Into an open batch that is still filling.
    Filling,
    /// It opened a new batch (the linger clock starts).
    Opened,
    /// It closed a batch (ready to send).
    Closed,
}

/// A record to append, borrowed from the caller.
#[derive(Debug)]
pub(crate) struct NewRecord<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [HeaderRef<'a>],
    /// Encoded size, reserved from buffer memory by the caller.
    pub size: usize,
    /// The largest batch its topic and the broker accept (at least
    /// `size` plus a batch header): its batch closes before outgrowing it.
    pub batch_limit: usize,
}

impl Accumulator {
    pub fn new(batch_bytes: usize, compression: Compression, producer_id: i64) -> Self {
        Self {
            queues: FxHashMap::default(),
            sticky: FxHashMap::default(),
            batch_bytes,
            compression,
            producer_id,
            unfinished: Vec::new(),
        }
    }

    /// The sticky partition of `topic` among `partitions`.
    pub fn sticky_partition(&mut self, topic: &Arc<str>, partitions: u32) -> u32 {
        let (p, count) = self.sticky.entry(Arc::clone(topic)).or_insert((0, partitions));
        *count = partitions.max(1);
        if *p >= *count {
            *p = 0;
        }
        *p
    }

    /// Moves a topic's sticky partition on when the batch it was filling
    /// closes (full, lingered or flushed), as Kafka's sticky partitioner does.
    fn batch_closed(&mut self, key: &PartitionKey) {
        if let Some((p, count)) = self.sticky.get_mut(&key.0) {
            if *p == key.1 {
                *p = (*p + 1) % *count;
            }
        }
    }

    /// Appends a record; returns its batch's completion (when `subscribe`
    /// asks for it, or when the record opened a batch: a caller appending
    /// many records needs one completion per batch, not per record), its
    /// index in the batch, and what happened. One map lookup per call.
    pub fn append(
        &mut self,
        key: &PartitionKey,
        record: &NewRecord<'_>,
        subscribe: bool,
    ) -> (Option<Completion>, u32, Appended) {
        let batch_bytes = self.batch_bytes.min(record.batch_limit);
        let (compression, producer_id) = (self.compression, self.producer_id);
        if !self.queues.contains_key(key) {
            self.queues.insert(key.clone(), PartitionQueue::default());
        }
        let Some(queue) = self.queues.get_mut(key) else { return (None, 0, Appended::Filling) };
        let mut outcome = Appended::Filling;
        if queue.open.as_ref().is_some_and(|o| o.builder.size_in_bytes() + record.size > batch_bytes) {
            queue.close(producer_id, key);
            outcome = Appended::Closed;
        }
        let open = queue.open.get_or_insert_with(|| {
            if outcome == Appended::Filling {
                outcome = Appended::Opened;
            }
            let (completion, rx) = watch::channel(None);
            self.unfinished.push(rx);
            OpenBatch {
                builder: BatchBuilder::with_capacity(batch_bytes.min(1 << 20)).compression(compression),
                created: Instant::now(),
                completion,
                reserved: 0,
            }
        });
        let index = open.builder.record_count();
        open.builder.append(record.timestamp, record.key, record.value, record.headers);
        open.reserved += record.size;
        let completion = (subscribe || index == 0).then(|| open.completion.subscribe());
        if open.builder.size_in_bytes() >= batch_bytes {
            queue.close(producer_id, key);
            outcome = Appended::Closed;
        }
        if outcome == Appended::Closed {
            self.batch_closed(key);
        }
        (completion, index, outcome)
    }

    /// Closes the open batch of `key`: stamps its sequence, moves it to the
    /// ready queue.
    fn close(&mut self, key: &PartitionKey) {
        self.batch_closed(key);
        let producer_id = self.producer_id;
        if let Some(queue) = self.queues.get_mut(key) {
            queue.close(producer_id, key);
        }
    }

    /// Closes batches older than `linger` (every batch when `all`); returns
    /// when the next open batch's linger runs out.
    pub fn close_expired(&mut self, linger: Duration, all: bool) -> Option<Instant> {
        let now = Instant::now();
        let expired: Vec<PartitionKey> = self
            .queues
            .iter()
            .filter(|(_, q)| q.open.as_ref().is_some_and(|o| all || now.duration_since(o.created) >= linger))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.close(key);
        }
        self.queues.values().filter_map(|q| q.open.as_ref()).map(|o| o.created + linger).min()
    }

    /// Takes up to `max` ready batches of partitions that `may_send` allows,
    /// in each partition's order.
    pub fn take_ready(
        &mut self,
        max: usize,
        mut may_send: impl FnMut(&PartitionKey) -> usize,
    ) -> Vec<ReadyBatch> {
        let mut out = Vec::new();
        for (key, queue) in &mut self.queues {
            let allowed = may_send(key).min(max.saturating_sub(out.len()));
            for _ in 0..allowed {
                match queue.ready.pop_front() {
                    Some(b) => out.push(b),
                    None => break,
                }
            }
        }
        out
    }

    /// After a permanent failure in `key`: takes its waiting batches (they
    /// fail too: order cannot be kept past a lost batch) and starts a new
    /// epoch so later batches begin at sequence 0.
    pub fn reset_partition(&mut self, key: &PartitionKey) -> Vec<ReadyBatch> {
        let Some(queue) = self.queues.get_mut(key) else { return Vec::new() };
        // Epochs stay non-negative (Kafka's rule): past i16::MAX, back to 0.
        queue.epoch = if queue.epoch == i16::MAX { 0 } else { queue.epoch + 1 };
        queue.next_sequence = 0;
        queue.ready.drain(..).collect()
    }

    /// The current producer epoch of `key`.
    pub fn epoch(&self, key: &PartitionKey) -> i16 {
        self.queues.get(key).map_or(0, |q| q.epoch)
    }

    /// Completions of unfinished batches (finished ones are dropped).
    pub fn unfinished(&mut self) -> Vec<Completion> {
        self.unfinished.retain(|c| c.borrow().is_none());
        self.unfinished.clone()
    }

    /// Whether any batch is open or waiting.
    pub fn is_empty(&self) -> bool {
        self.queues.values().all(|q| q.open.is_none() && q.ready.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: usize) -> NewRecord<'static> {
        NewRecord { timestamp: 0, key: None, value: Some(b"v"), headers: &[], size, batch_limit: usize::MAX }
    }

    #[test]
    fn sticky_partition_moves_on_whenever_its_batch_closes() {
        let mut acc = Accumulator::new(1 << 20, Compression::None, NO_PRODUCER_ID);
        let topic: Arc<str> = "t".into();
        let first = acc.sticky_partition(&topic, 3);
        acc.append(&(Arc::clone(&topic), first), &record(10), true);
        assert_eq!(acc.sticky_partition(&topic, 3), first, "still filling");
        acc.close_expired(Duration::ZERO, false); // lingered out
        let second = acc.sticky_partition(&topic, 3);
        assert_ne!(second, first);
        acc.append(&(Arc::clone(&topic), second), &record(10), true);
        acc.close_expired(Duration::ZERO, true); // flushed
        assert_ne!(acc.sticky_partition(&topic, 3), second);
    }

    #[test]
    fn sequences_are_dense_per_partition_and_reset_after_a_failure() {
        let mut acc = Accumulator::new(1 << 20, Compression::None, 7);
        let key: PartitionKey = ("t".into(), 0);
        for _ in 0..3 {
            acc.append(&key, &record(10), true);
            acc.append(&key, &record(10), true);
            acc.close_expired(Duration::ZERO, true);
        }
        let ready = acc.take_ready(10, |_| 10);
        assert_eq!(ready.iter().map(|b| b.sequence).collect::<Vec<_>>(), vec![0, 2, 4]);
        acc.append(&key, &record(10), true);
        acc.close_expired(Duration::ZERO, true);
        let behind = acc.reset_partition(&key);
        assert_eq!(behind.len(), 1, "queued batches fail with the lost one");
        assert_eq!(acc.epoch(&key), 1);
        acc.append(&key, &record(10), true);
        acc.close_expired(Duration::ZERO, true);
        let fresh = acc.take_ready(10, |_| 10);
        assert_eq!((fresh[0].sequence, fresh[0].epoch), (0, 1), "a new epoch starts at sequence 0");
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_0_as_in_kafka() {
        let mut acc = Accumulator::new(1 << 20, Compression::None, 7);
        let key: PartitionKey = ("t".into(), 0);
        acc.append(&key, &record(10), true);
        acc.queues.get_mut(&key).unwrap().next_sequence = i32::MAX - 1;
        for _ in 0..2 {
            acc.append(&key, &record(10), true);
            acc.append(&key, &record(10), true);
            acc.append(&key, &record(10), true);
            acc.close_expired(Duration::ZERO, true);
        }
        let ready = acc.take_ready(10, |_| 10);
        assert_eq!(ready.iter().map(|b| b.sequence).collect::<Vec<_>>(), vec![i32::MAX - 1, 2]);
        let h = sluice_protocol::batch::BatchHeader::parse(&ready[0].bytes).unwrap();
        assert_eq!((h.base_sequence, h.last_sequence()), (i32::MAX - 1, 1));
    }
}
