//! Idempotent-producer state of one partition: per producer id, its epoch
//! and the last few batches' sequence ranges, so a retried batch is answered
//! with its original offset instead of being written twice, and a gap is
//! refused. Rebuilt from batch headers when the log is opened.

use std::collections::{HashMap, VecDeque};

use sluice_protocol::batch::BatchHeader;

/// Batches remembered per producer (retries of older ones are refused).
pub const REMEMBERED_BATCHES: usize = 5;

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// Sequence numbers skipped ahead or went back past what is remembered.
    #[error("producer {producer_id}: expected sequence {expected}, got {received}")]
    OutOfOrder {
        /// The producer.
        producer_id: u64,
        /// The next sequence the broker expected.
        expected: u32,
        /// The batch's first sequence.
        received: u32,
    },
    /// The producer's epoch is older than one already seen.
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        /// The producer.
        producer_id: u64,
        /// The batch's epoch.
        epoch: u16,
        /// The newest epoch seen.
        current: u16,
    },
}

#[derive(Debug, Clone, Copy)]
struct BatchSequence {
    first: u32,
    last: u32,
    base_offset: u64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: u16,
    batches: VecDeque<BatchSequence>,
}

/// The verdict for an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// Not seen before: append it.
    New,
    /// Already written at this base offset: answer without appending.
    Duplicate(u64),
}

/// Producer states of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<u64, ProducerEntry>,
}

fn last_sequence(h: &BatchHeader) -> u32 {
    h.base_sequence.wrapping_add(h.last_offset_delta)
}

impl ProducerStates {
    /// Checks an idempotent batch against what was seen.
    pub fn check(&self, h: &BatchHeader) -> Result<Sequence, SequenceError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(Sequence::New);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return Ok(Sequence::New); // a new epoch starts fresh
        }
        let last = last_sequence(h);
        if let Some(b) = entry.batches.iter().find(|b| b.first == h.base_sequence && b.last == last) {
            return Ok(Sequence::Duplicate(b.base_offset));
        }
        let expected = entry.batches.back().map_or(0, |b| b.last.wrapping_add(1));
        if h.base_sequence == expected {
            Ok(Sequence::New)
        } else {
            Err(SequenceError::OutOfOrder { producer_id: h.producer_id, expected, received: h.base_sequence })
        }
    }

    /// Records an appended idempotent batch written at `base_offset`.
    pub fn record(&mut self, h: &BatchHeader, base_offset: u64) {
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSequence {
            first: h.base_sequence,
            last: last_sequence(h),
            base_offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::BatchBuilder;

    fn header(pid: u64, epoch: u16, seq: u32, count: u32) -> BatchHeader {
        let mut b = BatchBuilder::new().producer(pid, epoch, seq);
        for _ in 0..count {
            b.append(0, None, Some(b"v"), &[]);
        }
        BatchHeader::parse(&b.build()).unwrap()
    }

    #[test]
    fn sequences() {
        let mut s = ProducerStates::default();
        let a = header(1, 0, 0, 3);
        assert_eq!(s.check(&a), Ok(Sequence::New));
        s.record(&a, 100);
        assert_eq!(s.check(&a), Ok(Sequence::Duplicate(100)), "retry of the same batch");
        let b = header(1, 0, 3, 2);
        assert_eq!(s.check(&b), Ok(Sequence::New));
        s.record(&b, 103);
        assert_eq!(s.check(&a), Ok(Sequence::Duplicate(100)), "older remembered batch");
        assert!(matches!(s.check(&header(1, 0, 9, 1)), Err(SequenceError::OutOfOrder { expected: 5, .. })));
        assert_eq!(s.check(&header(1, 1, 0, 1)), Ok(Sequence::New), "new epoch");
        s.record(&header(1, 1, 0, 1), 105);
        assert!(matches!(s.check(&a), Err(SequenceError::InvalidEpoch { current: 1, .. })));
        assert_eq!(s.check(&header(2, 0, 77, 1)), Ok(Sequence::New), "unknown producer");
    }

    #[test]
    fn remembers_a_bounded_window() {
        let mut s = ProducerStates::default();
        let batches: Vec<_> = (0..10).map(|i| header(1, 0, i, 1)).collect();
        for (i, h) in batches.iter().enumerate() {
            s.record(h, i as u64);
        }
        assert_eq!(s.check(&batches[9]), Ok(Sequence::Duplicate(9)));
        assert!(s.check(&batches[0]).is_err(), "too old to be recognised: refused, not rewritten");
    }
}
