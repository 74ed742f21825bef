//! `send_batch`: many records enqueued with per-call rather than
//! per-record costs. The records are checked first (a record that could
//! never be written fails the call before anything is buffered), then
//! appended in order under one accumulator lock per chunk of buffer
//! memory (the chunk's memory reserved at once, so backpressure is kept:
//! a call larger than `buffer_memory` waits chunk by chunk), with one
//! clock read and one completion per batch the records land in. Runs of
//! records with one topic and explicit partition (and no headers) are
//! appended with the partition's queue found once per run
//! (`Accumulator::append_run`); the batches are byte for byte those that
//! appending one by one would build.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::accumulator::{Accumulator, Appended, NewRecord};
use crate::delivery::BatchDelivery;
use crate::{header_refs, Checked, Inner, Producer, ProducerError, Record, TopicInfo};

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
        // The call's topics, each with its batch limit.
        let mut topics: Vec<(TopicInfo, usize)> = Vec::new();
        let mut checked: Vec<Sized> = Vec::with_capacity(records.len());
        for record in &records {
            let topic = match topics
                .iter()
                .rposition(|(t, _)| Arc::ptr_eq(&t.name, &record.topic) || *t.name == *record.topic)
            {
                Some(i) => i,
                None => {
                    let info = self.inner.topic(&record.topic).await?;
                    let limit = self.inner.batch_limit(&info);
                    topics.push((info, limit));
                    topics.len() - 1
                }
            };
            let (info, limit) = &topics[topic];
            let fixed = self.inner.check_sized(record, info, *limit, &header_refs(record))?;
            checked.push(Sized { topic: topic as u32, fixed: fixed as u32 });
        }
        let mut out = Appending {
            topics,
            checked,
            current: Vec::new(),
            delivery: BatchDelivery::with_capacity(records.len()),
        };
        let chunk_max = (self.inner.config.buffer_memory / 2).max(1);
        let mut start = 0;
        while start < records.len() {
            let mut end = start + 1;
            let mut bytes = out.checked[start].size();
            while end < records.len() && bytes + out.checked[end].size() <= chunk_max {
                bytes += out.checked[end].size();
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
    /// The topics the records name, each with its batch limit.
    topics: Vec<(TopicInfo, usize)>,
    /// Per record, from the checks.
    checked: Vec<Sized>,
    /// (topic, partition) → the delivery segment of its current batch.
    current: Vec<(u32, u32, u32)>,
    /// What the call returns.
    delivery: BatchDelivery,
}

impl Appending {
    /// Appends `records` (the call's records from `first` on) under one
    /// accumulator lock; returns whether the sender should wake. Records
    /// with an explicit partition and no headers go in runs of one topic
    /// and partition (the queue found once per run); others one by one.
    fn append(&mut self, inner: &Inner, records: &[Record], first: usize) -> Result<bool, ProducerError> {
        let mut acc = inner.acc();
        let mut wake = false;
        let mut i = 0;
        while i < records.len() {
            let topic = self.checked[first + i].topic;
            let runs = |r: &Record| r.headers.is_empty() && r.partition == records[i].partition;
            if records[i].partition.is_none() || !records[i].headers.is_empty() {
                wake |= self.append_one(inner, &mut acc, &records[i], first + i)?;
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < records.len() && runs(&records[end]) && self.checked[first + end].topic == topic {
                end += 1;
            }
            wake |= self.append_run(&mut acc, &records[i..end], first + i);
            i = end;
        }
        Ok(wake)
    }

    /// Appends a run of records without headers to one topic and explicit
    /// partition (the call's records from `first` on).
    fn append_run(&mut self, acc: &mut Accumulator, records: &[Record], first: usize) -> bool {
        let Appending { topics, checked, current, delivery } = self;
        let topic = checked[first].topic;
        let (info, batch_limit) = &topics[topic as usize];
        let partition = records[0].partition.unwrap_or(0);
        let new = records.iter().zip(&checked[first..]).map(|(record, c)| NewRecord {
            timestamp: record.timestamp,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &[],
            fixed: c.fixed as usize,
            size: c.size(),
            batch_limit: *batch_limit,
        });
        let mut segment = None;
        let wake = acc.append_run(&info.name, partition, new, |completion, new_batch, index, timestamp| {
            let s = match segment {
                Some(s) if !new_batch => s,
                _ => delivery.open_segment(Arc::clone(completion)),
            };
            segment = Some(s);
            delivery.push(s, index, timestamp);
        });
        if let Some(s) = segment {
            match current.iter().position(|&(t, p, _)| t == topic && p == partition) {
                Some(i) => current[i].2 = s,
                None => current.push((topic, partition, s)),
            }
        }
        wake
    }

    /// Appends one record (the call's record `at`).
    fn append_one(
        &mut self,
        inner: &Inner,
        acc: &mut Accumulator,
        record: &Record,
        at: usize,
    ) -> Result<bool, ProducerError> {
        let c = self.checked[at];
        let topic = c.topic;
        let (info, batch_limit) = &self.topics[topic as usize];
        let headers = header_refs(record);
        let new = NewRecord {
            timestamp: record.timestamp,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            fixed: c.fixed as usize,
            size: c.size(),
            batch_limit: *batch_limit,
        };
        let partition = inner.partition_of(acc, record, info.partitions);
        let at = self.current.iter().position(|&(t, p, _)| t == topic && p == partition);
        let placed = acc.append(&info.name, partition, &new, at.is_none());
        let segment = match (placed.completion, at) {
            (Some(completion), at) => {
                let s = self.delivery.open_segment(completion);
                match at {
                    Some(i) => self.current[i].2 = s,
                    None => self.current.push((topic, partition, s)),
                }
                s
            }
            (None, Some(i)) => self.current[i].2,
            (None, None) => return Err(ProducerError::Closed),
        };
        self.delivery.push(segment, placed.index, placed.timestamp);
        Ok(placed.appended != Appended::Filling)
    }
}
