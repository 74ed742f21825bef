//! Idempotent-producer state of one partition: per producer id, its epoch
//! and the last few batches' sequence ranges, so a retried batch is answered
//! with its original offset instead of being written twice, and a gap is
//! refused. A producer not heard from for `producer_expiry_ms` is
//! forgotten (its next batch starts fresh, like an unknown producer's).
//!
//! The number of producers remembered is bounded too
//! (`max_producers_per_partition`): a client inventing producer ids must not
//! grow the broker's memory without bound. Past the limit the least recently
//! active producers are forgotten, as if they had expired (Kafka bounds its
//! producer-state cache by expiry the same way). Refusing new producers
//! instead would let one careless client lock every new, well-behaved
//! producer out of the partition until the inventor's ids expired (a day by
//! default); forgetting the idlest costs only them their duplicate
//! detection: a producer forgotten this way whose next batch is a retry of
//! one already written gets it written again (at-least-once for that batch),
//! and a live producer is only forgotten after `max_producers_per_partition`
//! other producers were heard from since its last batch. Each eviction is
//! logged. To amortize the scan, eviction goes down to 90% of the limit.
//!
//! When a segment is sealed the log writes a snapshot of this state as of
//! the new segment's base offset (`<base>.producers`); opening the log loads
//! the newest usable snapshot and replays only the batch headers after it,
//! so start-up does not read the whole log. Layout, all big-endian:
//!
//! ```text
//! magic "SPS2" | base_offset u64 | producers u32
//!   per producer: producer_id i64 | epoch i16 | last_seen_ms i64 | batches u8
//!     per batch: first_sequence i32 | last_sequence i32 | base_offset u64
//! crc32 u32 (over everything before it)
//! ```
//!
//! ("SPS1", the first batch format's snapshots, held unsigned ids and
//! sequences; such a snapshot is not read: a data directory of that format is
//! refused at start anyway.) Producer ids, epochs and sequences follow Kafka:
//! `i64`/`i16`/`i32`, sequences wrapping from `i32::MAX` to 0.

use std::collections::{HashMap, VecDeque};

use sluice_protocol::batch::{increment_sequence, BatchHeader};

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
        producer_id: i64,
        /// The next sequence the broker expected.
        expected: i32,
        /// The batch's first sequence.
        received: i32,
    },
    /// The producer's epoch is older than one already seen.
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest epoch seen.
        current: i16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSequence {
    first: i32,
    last: i32,
    base_offset: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Broker time (ms since the epoch) of its last batch, for expiry.
    last_seen_ms: i64,
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
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Records since the last expiry sweep.
    since_sweep: u32,
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"SPS2";
/// Records between expiry sweeps (a sweep visits every producer).
const SWEEP_EVERY: u32 = 4096;

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
        let last = h.last_sequence();
        if let Some(b) = entry.batches.iter().find(|b| b.first == h.base_sequence && b.last == last) {
            return Ok(Sequence::Duplicate(b.base_offset));
        }
        let expected = entry.batches.back().map_or(0, |b| increment_sequence(b.last, 1));
        if h.base_sequence == expected {
            Ok(Sequence::New)
        } else {
            Err(SequenceError::OutOfOrder { producer_id: h.producer_id, expected, received: h.base_sequence })
        }
    }

    /// Records an idempotent batch written at `base_offset` at broker time
    /// `now_ms`; now and then forgets producers idle for `expiry_ms`; keeps
    /// at most `max_producers`: past it the least recently active are
    /// forgotten (module docs say why). The same limit applies when the log
    /// is replayed at start-up.
    pub fn record(
        &mut self,
        h: &BatchHeader,
        base_offset: u64,
        now_ms: i64,
        expiry_ms: u64,
        max_producers: usize,
    ) {
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
            last: h.last_sequence(),
            base_offset,
        });
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.expire(now_ms, expiry_ms);
        }
        self.evict_idlest(h.producer_id, max_producers.max(1));
    }

    /// Past `max` producers, forgets the least recently active (never
    /// `keep`, the one just recorded) down to 90% of `max`.
    fn evict_idlest(&mut self, keep: i64, max: usize) {
        if self.producers.len() <= max {
            return;
        }
        let excess = self.producers.len() - (max - max / 10);
        let mut idlest: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(id, _)| **id != keep)
            .map(|(id, e)| (e.last_seen_ms, *id))
            .collect();
        idlest.select_nth_unstable(excess - 1);
        for (_, id) in &idlest[..excess] {
            self.producers.remove(id);
        }
        tracing::warn!(
            forgotten = excess,
            max_producers_per_partition = max,
            "too many idempotent producers on one partition: the least recently active were forgotten"
        );
    }

    /// Forgets producers whose last batch is more than `expiry_ms` old.
    pub fn expire(&mut self, now_ms: i64, expiry_ms: u64) {
        self.since_sweep = 0;
        let cutoff = now_ms.saturating_sub(i64::try_from(expiry_ms).unwrap_or(i64::MAX));
        self.producers.retain(|_, e| e.last_seen_ms >= cutoff);
    }

    /// Producers remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// The snapshot file's contents: this state as of `base_offset`.
    pub fn encode(&self, base_offset: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.producers.len() * 40);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&base_offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, e) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_seen_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first.to_be_bytes());
                out.extend_from_slice(&b.last.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot: its base offset and state; `None` when the bytes
    /// are not a whole, intact snapshot.
    pub fn decode(bytes: &[u8]) -> Option<(u64, Self)> {
        let (body, crc) = bytes.split_last_chunk::<4>()?;
        if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
            return None;
        }
        let mut r = body.strip_prefix(SNAPSHOT_MAGIC)?;
        let base_offset = u64::from_be_bytes(take(&mut r)?);
        let count = u32::from_be_bytes(take(&mut r)?);
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(take(&mut r)?);
            let epoch = i16::from_be_bytes(take(&mut r)?);
            let last_seen_ms = i64::from_be_bytes(take(&mut r)?);
            let [n] = take::<1>(&mut r)?;
            if usize::from(n) > REMEMBERED_BATCHES {
                return None;
            }
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                batches.push_back(BatchSequence {
                    first: i32::from_be_bytes(take(&mut r)?),
                    last: i32::from_be_bytes(take(&mut r)?),
                    base_offset: u64::from_be_bytes(take(&mut r)?),
                });
            }
            producers.insert(id, ProducerEntry { epoch, last_seen_ms, batches });
        }
        r.is_empty().then_some((base_offset, Self { producers, since_sweep: 0 }))
    }
}

/// The next `N` bytes of `r`.
fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = r.split_first_chunk::<N>()?;
    *r = rest;
    Some(*head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::BatchBuilder;

    fn header(pid: i64, epoch: i16, seq: i32, count: u32) -> BatchHeader {
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
        s.record(&a, 100, 0, u64::MAX, usize::MAX);
        assert_eq!(s.check(&a), Ok(Sequence::Duplicate(100)), "retry of the same batch");
        let b = header(1, 0, 3, 2);
        assert_eq!(s.check(&b), Ok(Sequence::New));
        s.record(&b, 103, 0, u64::MAX, usize::MAX);
        assert_eq!(s.check(&a), Ok(Sequence::Duplicate(100)), "older remembered batch");
        assert!(matches!(s.check(&header(1, 0, 9, 1)), Err(SequenceError::OutOfOrder { expected: 5, .. })));
        assert_eq!(s.check(&header(1, 1, 0, 1)), Ok(Sequence::New), "new epoch");
        s.record(&header(1, 1, 0, 1), 105, 0, u64::MAX, usize::MAX);
        assert!(matches!(s.check(&a), Err(SequenceError::InvalidEpoch { current: 1, .. })));
        assert_eq!(s.check(&header(2, 0, 77, 1)), Ok(Sequence::New), "unknown producer");
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        let a = header(1, 0, i32::MAX - 1, 2);
        s.record(&a, 10, 0, u64::MAX, usize::MAX);
        assert_eq!(s.check(&header(1, 0, 0, 3)), Ok(Sequence::New), "after i32::MAX comes 0");
        assert!(matches!(
            s.check(&header(1, 0, i32::MAX, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        let b = header(1, 0, i32::MAX, 3); // i32::MAX, 0, 1
        assert_eq!(b.last_sequence(), 1);
    }

    #[test]
    fn remembers_a_bounded_window() {
        let mut s = ProducerStates::default();
        let batches: Vec<_> = (0..10).map(|i| header(1, 0, i, 1)).collect();
        for (i, h) in batches.iter().enumerate() {
            s.record(h, i as u64, 0, u64::MAX, usize::MAX);
        }
        assert_eq!(s.check(&batches[9]), Ok(Sequence::Duplicate(9)));
        assert!(s.check(&batches[0]).is_err(), "too old to be recognised: refused, not rewritten");
    }

    #[test]
    fn idle_producers_are_forgotten() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1), 0, 1_000, 60_000, usize::MAX);
        s.record(&header(2, 0, 0, 1), 1, 50_000, 60_000, usize::MAX);
        s.expire(70_000, 60_000);
        assert_eq!(s.len(), 1, "producer 1 was idle for 69 s");
        assert_eq!(s.check(&header(1, 0, 5, 1)), Ok(Sequence::New), "forgotten: starts fresh");
        assert!(s.check(&header(2, 0, 5, 1)).is_err(), "producer 2 is still known");
        // Sweeps also happen on their own as batches are recorded.
        let mut s = ProducerStates::default();
        for id in 0..i64::from(SWEEP_EVERY) {
            s.record(&header(id, 0, 0, 1), id as u64, 0, 1_000, usize::MAX);
        }
        for seq in 0..SWEEP_EVERY as i32 {
            s.record(&header(i64::MAX, 0, seq, 1), 0, 5_000, 1_000, usize::MAX);
        }
        assert_eq!(s.len(), 1, "the idle ones were swept");
    }

    #[test]
    fn producers_past_the_limit_forget_the_idlest() {
        let mut s = ProducerStates::default();
        for id in 0..100i64 {
            s.record(&header(id, 0, 0, 1), id as u64, id, u64::MAX, 100);
        }
        assert_eq!(s.len(), 100);
        // Producer 0 stays active; 10,000 invented ids follow.
        s.record(&header(0, 0, 1, 1), 100, 1_000, u64::MAX, 100);
        for id in 1_000..11_000i64 {
            s.record(&header(id, 0, 0, 1), id as u64, id, u64::MAX, 100);
            assert!(s.len() <= 100, "bounded at every step");
            if id % 50 == 0 {
                s.record(&header(0, 0, 2 + (id as i32 - 1_000) / 50, 1), id as u64, id, u64::MAX, 100);
            }
        }
        assert!(s.len() >= 90, "evicts down to 90%, not everything");
        let last = header(0, 0, 2 + 10_000 / 50 - 1, 1);
        assert!(matches!(s.check(&last), Ok(Sequence::Duplicate(_))), "an active producer keeps its state");
        assert_eq!(s.check(&header(5, 0, 3, 1)), Ok(Sequence::New), "an idle one was forgotten");
        assert!(s.check(&header(10_999, 0, 5, 1)).is_err(), "the newest is remembered");
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut s = ProducerStates::default();
        for id in 0..20i64 {
            for seq in 0..(id as i32 % 8) {
                s.record(
                    &header(id, (id % 3) as i16, seq * 2, 2),
                    id as u64 * 100 + seq as u64,
                    7,
                    u64::MAX,
                    usize::MAX,
                );
            }
        }
        s.since_sweep = 0;
        let bytes = s.encode(1234);
        let (base, back) = ProducerStates::decode(&bytes).unwrap();
        assert_eq!((base, &back), (1234, &s));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(ProducerStates::decode(&bad).is_none(), "flipped byte {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(ProducerStates::decode(&bytes[..cut]).is_none(), "cut at {cut} accepted");
        }
        assert_eq!(ProducerStates::decode(&ProducerStates::default().encode(0)).unwrap().1.len(), 0);
    }
}
