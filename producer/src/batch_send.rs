//! `send_batch`: many records enqueued with per-call rather than
//! per-record costs. The records are checked first (a record that could
//! never be written fails the call before anything is buffered), then
//! appended in order under one accumulator lock per chunk of buffer
//! memory (the chunk's memory reserved at once, so backpressure is kept:
//! a call larger than `buffer_memory` waits chunk by chunk), with one
//! clock read per call and one completion per batch the records land in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::accumulator::{Appended, NewRecord};
use crate::delivery::BatchDelivery;
use crate::{header_refs, now_ms, Inner, Producer, ProducerError, Record, TopicInfo};

/// A checked record: its reserved size, batch limit and topic.
#[derive(Debug, Clone, Copy)]
struct Checked {
    size: usize,
    batch_limit: usize,
    topic: usize,
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
        let mut topics: Vec<TopicInfo> = Vec::new();
        let mut checked = Vec::with_capacity(records.len());
        for record in &records {
            let topic = match topics.iter().rposition(|t| *t.name == *record.topic) {
                Some(i) => i,
                None => {
                    topics.push(self.inner.topic(&record.topic).await?);
                    topics.len() - 1
                }
            };
            let (size, batch_limit) = self.inner.check(record, &topics[topic], &header_refs(record))?;
            checked.push(Checked { size, batch_limit, topic });
        }
        let mut out = Appending {
            now: now_ms(),
            topics,
            checked,
            current: Vec::new(),
            delivery: BatchDelivery::with_capacity(records.len()),
        };
        let chunk_max = (self.inner.config.buffer_memory / 2).max(1);
        let mut start = 0;
        while start < records.len() {
            let mut end = start + 1;
            let mut bytes = out.checked[start].size;
            while end < records.len() && bytes + out.checked[end].size <= chunk_max {
                bytes += out.checked[end].size;
                end += 1;
            }
            self.inner.reserve(bytes).await?;
            if out.append(&self.inner, &records[start..end], start)? {
                self.inner.wake.notify_one();
            }
            start = end;
        }
        Ok(out.delivery)
    }
}

/// A `send_batch` call's state while its records are appended.
#[derive(Debug)]
struct Appending {
    /// The clock, read once per call.
    now: i64,
    /// The topics the records name.
    topics: Vec<TopicInfo>,
    /// Per record, from the checks.
    checked: Vec<Checked>,
    /// (topic, partition) → the delivery segment of its current batch.
    current: Vec<(usize, u32, u32)>,
    /// What the call returns.
    delivery: BatchDelivery,
}

impl Appending {
    /// Appends `records` (the call's records from `first` on) under one
    /// accumulator lock; returns whether the sender should wake.
    fn append(&mut self, inner: &Inner, records: &[Record], first: usize) -> Result<bool, ProducerError> {
        let mut acc = inner.acc();
        let mut wake = false;
        for (record, c) in records.iter().zip(&self.checked[first..]) {
            let info = &self.topics[c.topic];
            let headers = header_refs(record);
            let timestamp = record.timestamp.unwrap_or(self.now);
            let new = NewRecord {
                timestamp,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &headers,
                size: c.size,
                batch_limit: c.batch_limit,
            };
            let partition = inner.partition_of(&mut acc, record, info);
            let at = self.current.iter().position(|&(t, p, _)| t == c.topic && p == partition);
            let key = (Arc::clone(&info.name), partition);
            let (completion, index, appended) = acc.append(&key, &new, at.is_none());
            wake |= appended != Appended::Filling;
            let segment = match (completion, at) {
                (Some(completion), at) => {
                    let s = self.delivery.open_segment(completion, key.0, partition);
                    match at {
                        Some(i) => self.current[i].2 = s,
                        None => self.current.push((c.topic, partition, s)),
                    }
                    s
                }
                (None, Some(i)) => self.current[i].2,
                (None, None) => return Err(ProducerError::Closed),
            };
            self.delivery.push(segment, index, timestamp);
        }
        Ok(wake)
    }
}
