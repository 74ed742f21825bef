//! `send_batch` and `send_messages`: many records enqueued with per-call
//! rather than per-record costs (`send_messages` names its one topic once
//! and borrows its messages, so not even a record is built or dropped per
//! message). The records are checked first (a record that could
//! never be written fails the call before anything is buffered), then
//! appended in order under one accumulator lock per chunk of buffer
//! memory (the chunk's memory reserved at once, so backpressure is kept:
//! a call larger than `buffer_memory` waits chunk by chunk), with one
//! clock read and one completion per batch the records land in. Runs of
//! records with one topic and partition (explicit, or the sticky one while
//! its batch fills) and no headers are appended with the partition's queue
//! found once per run (`Accumulator::append_run`); the batches are byte
//! for byte those that appending one by one would build.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_protocol::batch::BatchBuilder;

use crate::accumulator::{Accumulator, Appended, NewRecord};
use crate::delivery::BatchDelivery;
use crate::record::{Fields, Outgoing};
use crate::{header_refs, Checked, Inner, Message, Producer, ProducerError, Record, TopicInfo};

/// A record of a call, checked: its topic's index in the call's topics and
/// its `BatchBuilder::fixed_len` (below `u32::MAX`: the check caps a
/// record's size there). Eight bytes, built from registers.
#[derive(Debug, Clone, Copy)]
struct Sized {
    topic: u32,
    fixed: u32,
}

impl Sized {
    /// Buffer memory the record takes.
    #[inline]
    fn size(self) -> usize {
        Checked::size_of(self.fixed as usize)
    }
}

impl Producer {
    /// Enqueues many records in order (as `send` would, one after the
    /// other), waiting while `buffer_memory` is full. The returned
    /// [`BatchDelivery`] resolves to every record's result in order, or
    /// iterates into one [`DeliveryFuture`](crate::DeliveryFuture) per record.
    ///
    /// # Errors
    /// `Closed` after `close`; `UnknownTopic`, `UnknownPartition` or
    /// `RecordTooLarge` for the first record that could never be written
    /// (nothing of the call is buffered then).
    pub async fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<BatchDelivery, ProducerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ProducerError::Closed);
        }
        let records: Vec<Record> = records.into_iter().collect();
        let mut topics: Vec<CallTopic> = Vec::new();
        let (mut checked, mut bytes) = (Vec::with_capacity(records.len()), 0);
        for record in &records {
            let topic = match topics
                .iter()
                .rposition(|t| Arc::ptr_eq(&t.info.name, &record.topic) || *t.info.name == *record.topic)
            {
                Some(i) => i,
                None => {
                    let info = self.inner.topic(&record.topic).await?;
                    topics.push(self.inner.call_topic(info));
                    topics.len() - 1
                }
            };
            let c = self.inner.check_of(record, &topics[topic], topic)?;
            bytes += c.size();
            checked.push(c);
        }
        self.append_checked(&records, topics, checked, bytes).await
    }

    /// Enqueues messages for one topic in order, as
    /// [`send_batch`](Self::send_batch) would the same records: the
    /// throughput call when every record goes to one topic (as Iggy's
    /// `send_messages`). The topic is looked up once per call, not once per
    /// record, and the messages are borrowed (their bytes copied into
    /// batches), so nothing is built or dropped per record.
    ///
    /// # Errors
    /// As [`send_batch`](Self::send_batch).
    pub async fn send_messages(
        &self,
        topic: &str,
        messages: &[Message],
    ) -> Result<BatchDelivery, ProducerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ProducerError::Closed);
        }
        let info = self.inner.topic(&Arc::from(topic)).await?;
        let topics = vec![self.inner.call_topic(info)];
        let (mut checked, mut bytes) = (Vec::with_capacity(messages.len()), 0);
        for message in messages {
            let c = self.inner.check_of(message, &topics[0], 0)?;
            bytes += c.size();
            checked.push(c);
        }
        self.append_checked(messages, topics, checked, bytes).await
    }

    /// Appends checked records (`send_batch`, `send_messages`) whose sizes
    /// add up to `bytes`: at once, or, when they take over half the buffer
    /// memory, chunk by chunk of it.
    async fn append_checked<R: Outgoing>(
        &self,
        records: &[R],
        topics: Vec<CallTopic>,
        checked: Vec<Sized>,
        bytes: usize,
    ) -> Result<BatchDelivery, ProducerError> {
        let mut out = Appending {
            topics,
            checked,
            current: Segments::default(),
            delivery: BatchDelivery::with_capacity(records.len()),
        };
        let chunk_max = (self.inner.config.buffer_memory / 2).max(1);
        let mut start = 0;
        while start < records.len() {
            let (end, bytes) = if bytes <= chunk_max {
                (records.len(), bytes)
            } else {
                chunk(&out.checked, start, chunk_max)
            };
            self.inner.reserve(bytes).await?;
            if out.append(&self.inner, &records[start..end], start)? {
                self.inner.wake.notify_one();
            }
            start = end;
        }
        Ok(out.delivery)
    }
}

/// The chunk of `checked` from `start` on that fits `chunk_max` bytes (at
/// least one record): its end and its bytes.
fn chunk(checked: &[Sized], start: usize, chunk_max: usize) -> (usize, usize) {
    let (mut end, mut bytes) = (start + 1, checked[start].size());
    while end < checked.len() && bytes + checked[end].size() <= chunk_max {
        bytes += checked[end].size();
        end += 1;
    }
    (end, bytes)
}

/// A topic of a batch call, with its limits worked out once per call.
#[derive(Debug)]
struct CallTopic {
    info: TopicInfo,
    /// The largest batch for it.
    batch_limit: usize,
    /// The largest record size (`Checked::size`) every limit lets through.
    max_size: usize,
}

impl Inner {
    /// `info` with its limits, for the checks of a batch call.
    fn call_topic(&self, info: TopicInfo) -> CallTopic {
        let batch_limit = self.batch_limit(&info);
        CallTopic { max_size: self.max_record_size(batch_limit), batch_limit, info }
    }

    /// Checks a record of a batch call whose topic is the call's
    /// `topics[topic]`, as [`check`](Inner::check) would: one compare for
    /// every size limit, one for the partition.
    #[inline]
    fn check_of(&self, record: &impl Outgoing, t: &CallTopic, topic: usize) -> Result<Sized, ProducerError> {
        let fields = record.fields();
        let fixed = BatchBuilder::fixed_len(fields.key, fields.value, &header_refs(fields.headers));
        let size = Checked::size_of(fixed);
        if size > t.max_size || fields.partition.is_some_and(|p| p >= t.info.partitions) {
            return Err(self.check_failed(fields.partition, &t.info, size, t.batch_limit));
        }
        Ok(Sized { topic: topic as u32, fixed: fixed as u32 })
    }
}

/// A batch call's state while its records are appended.
#[derive(Debug)]
struct Appending {
    /// The topics the records name.
    topics: Vec<CallTopic>,
    /// Per record, from the checks.
    checked: Vec<Sized>,
    /// The delivery segment of each of the call's partitions' current batch.
    current: Segments,
    /// What the call returns.
    delivery: BatchDelivery,
}

/// (topic, partition) → the delivery segment of its current batch: a
/// call's records name a few partitions at most, so a list.
#[derive(Debug, Default)]
struct Segments(Vec<(u32, u32, u32)>);

impl Segments {
    fn get(&self, topic: u32, partition: u32) -> Option<u32> {
        self.0.iter().find(|&&(t, p, _)| t == topic && p == partition).map(|&(_, _, s)| s)
    }

    fn set(&mut self, topic: u32, partition: u32, segment: u32) {
        match self.0.iter_mut().find(|(t, p, _)| *t == topic && *p == partition) {
            Some(entry) => entry.2 = segment,
            None => self.0.push((topic, partition, segment)),
        }
    }
}

impl Appending {
    /// Appends `records` (the call's records from `first` on) under one
    /// accumulator lock; returns whether the sender should wake. Records
    /// without headers go in runs of one topic and partition (the queue
    /// found once per run): their explicit partition, or the sticky one;
    /// others (headers, or a key that picks the partition) one by one.
    fn append<R: Outgoing>(
        &mut self,
        inner: &Inner,
        records: &[R],
        first: usize,
    ) -> Result<bool, ProducerError> {
        let mut acc = inner.acc();
        let mut wake = false;
        let mut i = 0;
        while i < records.len() {
            let head = records[i].fields();
            if !head.headers.is_empty() || inner.partition_key(&head).is_some() {
                wake |= self.append_one(inner, &mut acc, &head, first + i)?;
                i += 1;
                continue;
            }
            let (run_wake, taken) = self.append_run(inner, &mut acc, &records[i..], first + i);
            wake |= run_wake;
            i += taken;
        }
        Ok(wake)
    }

    /// Appends the run that starts at `records[0]` (the call's record
    /// `first`, without headers): it and the records after it of its
    /// topic, without headers, and with its explicit partition, or, when
    /// it has none, with none either (nor a key that picks one), to the
    /// topic's sticky partition until a batch there closes (the sticky
    /// partition moves on then, as it does one by one). Returns whether
    /// the sender should wake and how many records the run took.
    fn append_run<R: Outgoing>(
        &mut self,
        inner: &Inner,
        acc: &mut Accumulator,
        records: &[R],
        first: usize,
    ) -> (bool, usize) {
        let Appending { topics, checked, current, delivery } = self;
        let topic = checked[first].topic;
        let CallTopic { info, batch_limit, .. } = &topics[topic as usize];
        let explicit = records[0].fields().partition;
        let partition = explicit.unwrap_or_else(|| acc.sticky_partition(&info.name, info.partitions));
        let joins = |f: &Fields<'_>, c: &Sized| {
            c.topic == topic
                && f.headers.is_empty()
                && f.partition == explicit
                && inner.partition_key(f).is_none()
        };
        let new = records
            .iter()
            .map(Outgoing::fields)
            .zip(&checked[first..])
            .take_while(|(f, c)| joins(f, c))
            .map(|(record, c)| NewRecord::new(&record, &[], c.fixed as usize, *batch_limit));
        // The run's first record carries its batch's completion, so
        // `segment` is set before it is read.
        let (mut segment, mut taken) = (None, 0);
        let wake = acc.append_run(&info.name, partition, new, |placed| {
            taken += 1;
            let go_on = explicit.is_some() || placed.appended != Appended::Closed;
            segment = placed.completion.map(|c| delivery.open_segment(c)).or(segment);
            delivery.push(segment.unwrap_or_default(), placed.index, placed.timestamp);
            go_on
        });
        if let Some(s) = segment {
            current.set(topic, partition, s);
        }
        (wake, taken)
    }

    /// Appends one record (the call's record `at`).
    fn append_one(
        &mut self,
        inner: &Inner,
        acc: &mut Accumulator,
        record: &Fields<'_>,
        at: usize,
    ) -> Result<bool, ProducerError> {
        let c = self.checked[at];
        let topic = c.topic;
        let CallTopic { info, batch_limit, .. } = &self.topics[topic as usize];
        let headers = header_refs(record.headers);
        let new = NewRecord::new(record, &headers, c.fixed as usize, *batch_limit);
        let partition = inner.partition_of(acc, &info.name, record, info.partitions);
        let current = self.current.get(topic, partition);
        let placed = acc.append(&info.name, partition, &new, current.is_none());
        let segment = match (placed.completion, current) {
            (Some(completion), _) => {
                let s = self.delivery.open_segment(completion);
                self.current.set(topic, partition, s);
                s
            }
            (None, Some(s)) => s,
            (None, None) => return Err(ProducerError::Closed),
        };
        self.delivery.push(segment, placed.index, placed.timestamp);
        Ok(placed.appended != Appended::Filling)
    }
}
