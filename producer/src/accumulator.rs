//! Per-partition batching. `send` appends a record straight into its
//! partition's open [`BatchBuilder`] under one short lock; a batch closes
//! when it reaches `batch_bytes` or its `linger` runs out (or on `flush`),
//! gets its idempotence sequence, and waits in the partition's ready queue
//! for the sender. Each batch has one completion shared by its records, so
//! there is no per-record channel or allocation beyond the encoding.
//!
//! Per-record work is kept to the append itself: the partition last
//! appended to is remembered (no map probe while it repeats, the common
//! case with sticky partitioning), a record without a timestamp takes its
//! batch's (the clock is read once per batch, so a create time is at most
//! the batch's age, about `linger`, earlier than the send), and buffer
//! memory is taken from a per-producer credit refilled in chunks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_protocol::batch::{increment_sequence, BatchBuilder, Compression, HeaderRef, NO_PRODUCER_ID};

use crate::completion::{Completer, Completion};
use crate::fxhash::FxHashMap;
use crate::pool::BufferPool;
use crate::record::Fields;
use crate::sticky::StickyPartitions;
use crate::{Checked, TopicInfo};

pub(crate) use crate::completion::BatchResult;

/// A partition of a topic.
pub(crate) type PartitionKey = (Arc<str>, u32);

/// The wall clock in ms since the epoch.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A batch being filled.
#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    /// The wall clock when it opened: the timestamp of its records that
    /// have none of their own.
    created_ms: i64,
    completion: Completer,
    reserved: usize,
}

impl OpenBatch {
    /// An empty batch reporting to `completion`, its buffer from `pool`
    /// and sized for `batch_bytes` (at most 1 MiB up front).
    #[inline(always)]
    fn new(
        completion: Completer,
        pool: &mut BufferPool,
        batch_bytes: usize,
        compression: Compression,
    ) -> Self {
        let buf = pool.take(buffer_capacity(batch_bytes));
        Self {
            builder: BatchBuilder::with_buffer(buf).compression(compression),
            created: Instant::now(),
            created_ms: now_ms(),
            completion,
            reserved: 0,
        }
    }
}

/// The buffer a batch of at most `batch_bytes` is given up front.
#[inline]
pub(crate) fn buffer_capacity(batch_bytes: usize) -> usize {
    batch_bytes.min(1 << 20)
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
    /// `attempts` when its partition's leader last moved: the retry
    /// backoff grows with the failures since, so a new leader starts again
    /// from the shortest backoff.
    pub backoff_from: u32,
    /// Completes the records' delivery futures.
    pub completion: Completer,
    /// Buffer memory to release when done.
    pub reserved: usize,
}

impl ReadyBatch {
    /// Completes every record of the batch.
    pub fn complete(&self, result: BatchResult) {
        self.completion.complete(result);
    }
}

#[derive(Debug)]
struct PartitionQueue {
    key: PartitionKey,
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    /// Producer epoch of this partition: bumped after a permanent failure so
    /// the broker accepts a fresh sequence.
    epoch: i16,
    /// Wraps from `i32::MAX` to 0, as in Kafka.
    next_sequence: i32,
}

impl PartitionQueue {
    fn new(key: PartitionKey) -> Self {
        Self { key, open: None, ready: VecDeque::new(), epoch: 0, next_sequence: 0 }
    }

    /// Closes the open batch: stamps its sequence, moves it to the ready queue.
    fn close(&mut self, producer_id: i64) {
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
            key: self.key.clone(),
            bytes,
            sequence,
            epoch: self.epoch,
            created: open.created,
            attempts: 0,
            backoff_from: 0,
            completion: open.completion,
            reserved: open.reserved,
        });
    }
}

/// A new batch for `key`, its completion noted in `unfinished`. Out of
/// line: once per batch, not per record.
#[cold]
#[inline(never)]
fn open_batch(
    key: &PartitionKey,
    unfinished: &mut Vec<Completion>,
    pool: &mut BufferPool,
    batch_bytes: usize,
    compression: Compression,
) -> OpenBatch {
    let completion = Completer::new(Arc::clone(&key.0), key.1);
    unfinished.push(Arc::clone(completion.completion()));
    OpenBatch::new(completion, pool, batch_bytes, compression)
}

/// Every partition's batches.
#[derive(Debug)]
pub(crate) struct Accumulator {
    /// Every partition's queue, in the order first used (never removed).
    queues: Vec<PartitionQueue>,
    /// Partition → its index in `queues`.
    index: FxHashMap<PartitionKey, usize>,
    /// The queue appended to last: skips the map probe while it repeats.
    last: Option<usize>,
    /// The sticky partition of each topic for records without a key.
    sticky: StickyPartitions,
    batch_bytes: usize,
    compression: Compression,
    producer_id: i64,
    /// Completions of batches created and not yet known to be finished
    /// (what `flush` waits for).
    unfinished: Vec<Completion>,
    /// Buffer memory taken from the producer's semaphore and not yet given
    /// to a record.
    credit: usize,
    /// Topic → what `send` needs to know of it (kept under this lock: one
    /// lock per record for the lookup and the append).
    topics: FxHashMap<Arc<str>, TopicInfo>,
    /// The topic looked up last: skips the map probe while it repeats.
    last_topic: Option<TopicInfo>,
    /// Buffers of finished batches, for new ones.
    pool: BufferPool,
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
    /// `None`: its batch's timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [HeaderRef<'a>],
    /// `BatchBuilder::fixed_len` of the record.
    pub fixed: usize,
    /// Encoded size, reserved from buffer memory by the caller.
    pub size: usize,
    /// The largest batch its topic and the broker accept (at least
    /// `size` plus a batch header): its batch closes before outgrowing it.
    pub batch_limit: usize,
}

impl<'a> NewRecord<'a> {
    /// A checked record (`fixed` its `BatchBuilder::fixed_len`) with its
    /// headers as the builder takes them: its size is what the checks
    /// reserved for it.
    #[inline]
    pub fn new(record: &Fields<'a>, headers: &'a [HeaderRef<'a>], fixed: usize, batch_limit: usize) -> Self {
        NewRecord {
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers,
            fixed,
            size: Checked::size_of(fixed),
            batch_limit,
        }
    }
}

/// Where an append put a record.
#[derive(Debug)]
pub(crate) struct Placed {
    /// Its batch's completion: when asked for, or when the record opened
    /// the batch (a caller appending many records needs one per batch).
    pub completion: Option<Completion>,
    /// Its index in the batch.
    pub index: u32,
    /// Its timestamp.
    pub timestamp: i64,
    /// What happened to the batch.
    pub appended: Appended,
}

impl Accumulator {
    pub fn new(batch_bytes: usize, compression: Compression, producer_id: i64) -> Self {
        Self {
            queues: Vec::new(),
            index: FxHashMap::default(),
            last: None,
            sticky: StickyPartitions::default(),
            batch_bytes,
            compression,
            producer_id,
            unfinished: Vec::new(),
            credit: 0,
            topics: FxHashMap::default(),
            last_topic: None,
            pool: BufferPool::default(),
        }
    }

    /// Keeps a finished batch's buffer for a new batch.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.give(buf, buffer_capacity(self.batch_bytes));
    }

    /// What is known of `topic`.
    #[inline]
    pub fn topic(&mut self, topic: &Arc<str>) -> Option<&TopicInfo> {
        if !self.last_topic.as_ref().is_some_and(|t| Arc::ptr_eq(&t.name, topic) || *t.name == **topic) {
            self.last_topic = Some(self.topics.get(&**topic)?.clone());
        }
        self.last_topic.as_ref()
    }

    /// Notes what is known of a topic.
    pub fn learn_topic(&mut self, info: TopicInfo) {
        self.last_topic = None;
        self.topics.insert(Arc::clone(&info.name), info);
    }

    /// Forgets a topic (its metadata is fetched again on next use).
    pub fn forget_topic(&mut self, topic: &str) {
        self.last_topic = None;
        self.topics.remove(topic);
    }

    /// The topics known.
    pub fn known_topics(&self) -> Vec<Arc<str>> {
        self.topics.keys().cloned().collect()
    }

    /// Takes `size` bytes of buffer credit; false when there is not enough.
    pub fn take_credit(&mut self, size: usize) -> bool {
        match self.credit.checked_sub(size) {
            Some(left) => {
                self.credit = left;
                true
            }
            None => false,
        }
    }

    /// Adds buffer memory reserved from the semaphore to the credit.
    pub fn add_credit(&mut self, bytes: usize) {
        self.credit += bytes;
    }

    /// The sticky partition of `topic` among `partitions`.
    #[inline]
    pub fn sticky_partition(&mut self, topic: &Arc<str>, partitions: u32) -> u32 {
        self.sticky.partition(topic, partitions)
    }

    /// The queue of `topic`/`partition`, created on first use.
    #[inline(always)]
    fn queue_of(&mut self, topic: &Arc<str>, partition: u32) -> usize {
        if let Some(i) = self.last {
            let (t, p) = &self.queues[i].key;
            if *p == partition && (Arc::ptr_eq(t, topic) || **t == **topic) {
                return i;
            }
        }
        let key = (Arc::clone(topic), partition);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.queues.push(PartitionQueue::new(key.clone()));
                self.index.insert(key, self.queues.len() - 1);
                self.queues.len() - 1
            }
        };
        self.last = Some(i);
        i
    }

    /// Appends a record to `topic`/`partition`.
    pub fn append(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        record: &NewRecord<'_>,
        subscribe: bool,
    ) -> Placed {
        let q = self.queue_of(topic, partition);
        self.append_at(q, record, subscribe)
    }

    /// Appends records to `topic`/`partition` in order, as [`append`]
    /// would one by one, finding the queue once (a batch call's run).
    /// `placed` is called per record with where it went, and says whether
    /// to go on; the run's first record, and the first of each batch it
    /// opens, carry their batch's completion. Returns whether a batch
    /// opened or closed (wake the sender).
    ///
    /// [`append`]: Self::append
    pub fn append_run<'r>(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        records: impl Iterator<Item = NewRecord<'r>>,
        mut placed: impl FnMut(Placed) -> bool,
    ) -> bool {
        let q = self.queue_of(topic, partition);
        let (mut wake, mut subscribe) = (false, true);
        for record in records {
            let p = self.append_at(q, &record, subscribe);
            subscribe = false;
            wake |= p.appended != Appended::Filling;
            if !placed(p) {
                break;
            }
        }
        wake
    }

    /// Appends a record to queue `q`: into its open batch, or a new one
    /// when that is full (closing a batch that reached its limit after).
    /// The completion comes with it when `subscribe` or when it opened
    /// the batch.
    #[inline(always)]
    fn append_at(&mut self, q: usize, record: &NewRecord<'_>, subscribe: bool) -> Placed {
        let batch_bytes = self.batch_bytes.min(record.batch_limit);
        let (compression, producer_id) = (self.compression, self.producer_id);
        let queue = &mut self.queues[q];
        let mut appended = Appended::Filling;
        if queue.open.as_ref().is_some_and(|o| o.builder.size_in_bytes() + record.size > batch_bytes) {
            queue.close(producer_id);
            appended = Appended::Closed;
        }
        let open = queue.open.get_or_insert_with(|| {
            if appended == Appended::Filling {
                appended = Appended::Opened;
            }
            open_batch(&queue.key, &mut self.unfinished, &mut self.pool, batch_bytes, compression)
        });
        let index = open.builder.record_count();
        let timestamp = record.timestamp.unwrap_or(open.created_ms);
        open.builder.append_fixed(timestamp, record.key, record.value, record.headers, record.fixed);
        open.reserved += record.size;
        let completion = (subscribe || index == 0).then(|| Arc::clone(open.completion.completion()));
        if open.builder.size_in_bytes() >= batch_bytes {
            queue.close(producer_id);
            appended = Appended::Closed;
        }
        if appended == Appended::Closed {
            self.sticky.batch_closed(&queue.key.0, queue.key.1);
        }
        Placed { completion, index, timestamp, appended }
    }

    /// Closes the open batch of queue `q`: stamps its sequence, moves it to
    /// the ready queue.
    fn close(&mut self, q: usize) {
        let queue = &mut self.queues[q];
        self.sticky.batch_closed(&queue.key.0, queue.key.1);
        queue.close(self.producer_id);
    }

    /// Closes batches older than `linger` (every batch when `all`); returns
    /// when the next open batch's linger runs out.
    pub fn close_expired(&mut self, linger: Duration, all: bool) -> Option<Instant> {
        let now = Instant::now();
        for q in 0..self.queues.len() {
            let expired =
                self.queues[q].open.as_ref().is_some_and(|o| all || now.duration_since(o.created) >= linger);
            if expired {
                self.close(q);
            }
        }
        self.queues.iter().filter_map(|q| q.open.as_ref()).map(|o| o.created + linger).min()
    }

    /// Takes up to `max` ready batches of partitions that `may_send` allows,
    /// in each partition's order.
    pub fn take_ready(
        &mut self,
        max: usize,
        mut may_send: impl FnMut(&PartitionKey) -> usize,
    ) -> Vec<ReadyBatch> {
        let mut out = Vec::new();
        for queue in &mut self.queues {
            if queue.ready.is_empty() {
                continue;
            }
            let allowed = may_send(&queue.key).min(max.saturating_sub(out.len()));
            for _ in 0..allowed {
                match queue.ready.pop_front() {
                    Some(b) => out.push(b),
                    None => break,
                }
            }
        }
        out
    }

    fn queue(&self, key: &PartitionKey) -> Option<&PartitionQueue> {
        self.index.get(key).map(|&i| &self.queues[i])
    }

    /// After a permanent failure in `key`: takes its waiting batches (they
    /// fail too: order cannot be kept past a lost batch) and starts a new
    /// epoch so later batches begin at sequence 0.
    pub fn reset_partition(&mut self, key: &PartitionKey) -> Vec<ReadyBatch> {
        let Some(&i) = self.index.get(key) else { return Vec::new() };
        let queue = &mut self.queues[i];
        // Epochs stay non-negative (Kafka's rule): past i16::MAX, back to 0.
        queue.epoch = if queue.epoch == i16::MAX { 0 } else { queue.epoch + 1 };
        queue.next_sequence = 0;
        queue.ready.drain(..).collect()
    }

    /// The current producer epoch of `key`.
    pub fn epoch(&self, key: &PartitionKey) -> i16 {
        self.queue(key).map_or(0, |q| q.epoch)
    }

    /// Completions of unfinished batches (finished ones are dropped).
    pub fn unfinished(&mut self) -> Vec<Completion> {
        self.unfinished.retain(|c| !c.is_finished());
        self.unfinished.clone()
    }

    /// Whether any batch is open or waiting.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|q| q.open.is_none() && q.ready.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: usize) -> NewRecord<'static> {
        let fixed = BatchBuilder::fixed_len(None, Some(b"v"), &[]);
        NewRecord {
            timestamp: Some(0),
            key: None,
            value: Some(b"v"),
            headers: &[],
            fixed,
            size,
            batch_limit: usize::MAX,
        }
    }

    #[test]
    fn a_run_lands_as_appending_one_by_one_would() {
        static VALUE: [u8; 200] = [b'v'; 200];
        let fixed = BatchBuilder::fixed_len(None, Some(&VALUE), &[]);
        let big = || NewRecord {
            timestamp: Some(5),
            key: None,
            value: Some(&VALUE),
            headers: &[],
            fixed,
            size: crate::Checked::size_of(fixed),
            batch_limit: usize::MAX,
        };
        let key: PartitionKey = ("t".into(), 0);
        let (mut one, mut run) =
            (Accumulator::new(1024, Compression::None, 7), Accumulator::new(1024, Compression::None, 7));
        let expected: Vec<(bool, u32)> = (0..10)
            .map(|_| one.append(&key.0, key.1, &big(), false))
            .map(|p| (p.completion.is_some(), p.index))
            .collect();
        let mut got = Vec::new();
        let wake = run.append_run(&key.0, key.1, (0..10).map(|_| big()), |p| {
            assert_eq!(p.timestamp, 5);
            got.push((p.completion.is_some(), p.index));
            true
        });
        assert!(wake, "batches opened and closed");
        assert_eq!(got, expected);
        one.close_expired(Duration::ZERO, true);
        run.close_expired(Duration::ZERO, true);
        let bytes = |acc: &mut Accumulator| -> Vec<Bytes> {
            acc.take_ready(100, |_| 100).into_iter().map(|b| b.bytes).collect()
        };
        let (a, b) = (bytes(&mut one), bytes(&mut run));
        assert!(a.len() > 2, "several batches: {}", a.len());
        assert_eq!(a, b, "the same batches, byte for byte");
    }

    #[test]
    fn sticky_partition_moves_on_whenever_its_batch_closes() {
        let mut acc = Accumulator::new(1 << 20, Compression::None, NO_PRODUCER_ID);
        let topic: Arc<str> = "t".into();
        let first = acc.sticky_partition(&topic, 3);
        acc.append(&topic, first, &record(10), true);
        assert_eq!(acc.sticky_partition(&topic, 3), first, "still filling");
        acc.close_expired(Duration::ZERO, false); // lingered out
        let second = acc.sticky_partition(&topic, 3);
        assert_ne!(second, first);
        acc.append(&topic, second, &record(10), true);
        acc.close_expired(Duration::ZERO, true); // flushed
        assert_ne!(acc.sticky_partition(&topic, 3), second);
    }

    #[test]
    fn sequences_are_dense_per_partition_and_reset_after_a_failure() {
        let mut acc = Accumulator::new(1 << 20, Compression::None, 7);
        let key: PartitionKey = ("t".into(), 0);
        for _ in 0..3 {
            acc.append(&key.0, key.1, &record(10), true);
            acc.append(&key.0, key.1, &record(10), true);
            acc.close_expired(Duration::ZERO, true);
        }
        let ready = acc.take_ready(10, |_| 10);
        assert_eq!(ready.iter().map(|b| b.sequence).collect::<Vec<_>>(), vec![0, 2, 4]);
        acc.append(&key.0, key.1, &record(10), true);
        acc.close_expired(Duration::ZERO, true);
        let behind = acc.reset_partition(&key);
        assert_eq!(behind.len(), 1, "queued batches fail with the lost one");
        assert_eq!(acc.epoch(&key), 1);
        acc.append(&key.0, key.1, &record(10), true);
        acc.close_expired(Duration::ZERO, true);
        let fresh = acc.take_ready(10, |_| 10);
        assert_eq!((fresh[0].sequence, fresh[0].epoch), (0, 1), "a new epoch starts at sequence 0");
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_0_as_in_kafka() {
        let mut acc = Accumulator::new(1 << 20, Compression::None, 7);
        let key: PartitionKey = ("t".into(), 0);
        acc.append(&key.0, key.1, &record(10), true);
        acc.queues[acc.index[&key]].next_sequence = i32::MAX - 1;
        for _ in 0..2 {
            acc.append(&key.0, key.1, &record(10), true);
            acc.append(&key.0, key.1, &record(10), true);
            acc.append(&key.0, key.1, &record(10), true);
            acc.close_expired(Duration::ZERO, true);
        }
        let ready = acc.take_ready(10, |_| 10);
        assert_eq!(ready.iter().map(|b| b.sequence).collect::<Vec<_>>(), vec![i32::MAX - 1, 2]);
        let h = sluice_protocol::batch::BatchHeader::parse(&ready[0].bytes).unwrap();
        assert_eq!((h.base_sequence, h.last_sequence()), (i32::MAX - 1, 1));
    }
}
