//! What `send` and `send_batch` hand back: futures that resolve when the
//! broker acknowledged records. A batch's records share one completion
//! (set once by the sender); each record holds one `Arc` of it and its
//! index in the batch, so reporting a delivery costs no channel, lock or
//! allocation per record.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use crate::completion::{BatchResult, Completion};
use crate::error::ProducerError;
use crate::record::{RecordMetadata, UNKNOWN_OFFSET};

/// Resolves when the broker has acknowledged one record (per `acks`).
#[derive(Debug)]
pub struct DeliveryFuture {
    completion: Completion,
    index: u32,
    timestamp: i64,
}

/// A record's metadata from its batch's result.
fn metadata(
    result: Option<&BatchResult>,
    topic: &Arc<str>,
    partition: u32,
    index: u32,
    timestamp: i64,
) -> Result<RecordMetadata, ProducerError> {
    let (base, append_time) = result.ok_or(ProducerError::Closed)?.clone()?;
    let offset = if base == UNKNOWN_OFFSET { UNKNOWN_OFFSET } else { base + u64::from(index) };
    let timestamp = if append_time >= 0 { append_time } else { timestamp };
    Ok(RecordMetadata { topic: Arc::clone(topic), partition, offset, timestamp })
}

impl DeliveryFuture {
    pub(crate) fn new(completion: Completion, index: u32, timestamp: i64) -> Self {
        Self { completion, index, timestamp }
    }

    /// The partition the record was assigned to.
    pub fn partition(&self) -> u32 {
        self.completion.partition
    }

    async fn wait(self) -> Result<RecordMetadata, ProducerError> {
        let c = &self.completion;
        metadata(Some(c.finished().await), &c.topic, c.partition, self.index, self.timestamp)
    }
}

impl IntoFuture for DeliveryFuture {
    type Output = Result<RecordMetadata, ProducerError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// Where one record of a `send_batch` call went.
#[derive(Debug, Clone, Copy)]
struct Slot {
    segment: u32,
    index: u32,
    timestamp: i64,
}

/// Resolves, once every batch that a `send_batch` call's records went into
/// is finished, to each record's result, in the order they were given.
/// Iterating it instead gives one [`DeliveryFuture`] per record.
#[derive(Debug, Default)]
pub struct BatchDelivery {
    segments: Vec<Completion>,
    slots: Vec<Slot>,
}

impl BatchDelivery {
    pub(crate) fn with_capacity(records: usize) -> Self {
        Self { segments: Vec::new(), slots: Vec::with_capacity(records) }
    }

    /// Starts a new batch segment; returns its number.
    pub(crate) fn open_segment(&mut self, completion: Completion) -> u32 {
        self.segments.push(completion);
        (self.segments.len() - 1) as u32
    }

    /// Notes the next record: at `index` of segment `segment`'s batch.
    #[inline]
    pub(crate) fn push(&mut self, segment: u32, index: u32, timestamp: i64) {
        self.slots.push(Slot { segment, index, timestamp });
    }

    /// Records it covers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it covers no record.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Waits for every batch the records went into: `Ok` when all were
    /// acknowledged, else the first failed batch's error (no per-record
    /// results are built).
    pub async fn acknowledged(self) -> Result<(), ProducerError> {
        for s in &self.segments {
            s.finished().await.clone()?;
        }
        Ok(())
    }

    async fn wait(self) -> Vec<Result<RecordMetadata, ProducerError>> {
        for s in &self.segments {
            s.finished().await;
        }
        self.slots
            .iter()
            .map(|slot| {
                let s = &self.segments[slot.segment as usize];
                metadata(s.result(), &s.topic, s.partition, slot.index, slot.timestamp)
            })
            .collect()
    }
}

impl IntoFuture for BatchDelivery {
    type Output = Vec<Result<RecordMetadata, ProducerError>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

impl IntoIterator for BatchDelivery {
    type Item = DeliveryFuture;
    type IntoIter = std::vec::IntoIter<DeliveryFuture>;

    fn into_iter(self) -> Self::IntoIter {
        let futures: Vec<DeliveryFuture> = self
            .slots
            .iter()
            .map(|slot| {
                DeliveryFuture::new(
                    Arc::clone(&self.segments[slot.segment as usize]),
                    slot.index,
                    slot.timestamp,
                )
            })
            .collect();
        futures.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::Completer;

    fn batch(delivery: &mut BatchDelivery, partition: u32) -> Completer {
        let tx = Completer::new("t".into(), partition);
        let seg = delivery.open_segment(Arc::clone(tx.completion()));
        for index in 0..3 {
            delivery.push(seg, index, 100 + i64::from(index));
        }
        tx
    }

    #[tokio::test]
    async fn records_of_a_batch_read_one_shared_completion_with_their_index() {
        let mut delivery = BatchDelivery::default();
        let first = batch(&mut delivery, 0);
        let second = batch(&mut delivery, 1);
        first.complete(Ok((40, -1)));
        second.complete(Err(ProducerError::Closed));
        let results = delivery.await;
        let offsets: Vec<_> =
            results.iter().map(|r| r.as_ref().ok().map(|m| (m.partition, m.offset))).collect();
        assert_eq!(offsets, [Some((0, 40)), Some((0, 41)), Some((0, 42)), None, None, None]);
        assert_eq!(results[1].as_ref().map(|m| m.timestamp).ok(), Some(101), "create time kept");
    }

    #[tokio::test]
    async fn iterating_gives_per_record_futures_over_the_same_completion() {
        let mut delivery = BatchDelivery::default();
        let tx = batch(&mut delivery, 2);
        assert_eq!(Arc::strong_count(tx.completion()), 2, "one completion for the batch, not one per record");
        let futures: Vec<_> = delivery.into_iter().collect();
        tx.complete(Ok((7, 555)));
        let mut offsets = Vec::new();
        for f in futures {
            let m = f.await.unwrap();
            assert_eq!(m.timestamp, 555, "log-append time wins");
            offsets.push(m.offset);
        }
        assert_eq!(offsets, [7, 8, 9]);
    }

    #[tokio::test]
    async fn a_dropped_sender_fails_the_records_as_closed() {
        let mut delivery = BatchDelivery::default();
        drop(batch(&mut delivery, 0));
        assert!(delivery.await.iter().all(|r| matches!(r, Err(ProducerError::Closed))));
    }
}
