//! The sticky partitioner's state (Kafka's default for records without a
//! key): per topic, the partition that records without one go to until
//! the batch they fill there closes. Asked once per such record, so the
//! topic asked for last is found by a compare (of the pointer, else of
//! the name), not a hash.

use std::sync::Arc;

use crate::fxhash::FxHashMap;

/// One topic's sticky partition among its partition count.
#[derive(Debug)]
struct Sticky {
    topic: Arc<str>,
    partition: u32,
    count: u32,
}

/// Every topic's sticky partition.
#[derive(Debug, Default)]
pub(crate) struct StickyPartitions {
    topics: Vec<Sticky>,
    /// Topic → its index in `topics`.
    index: FxHashMap<Arc<str>, usize>,
    /// The topic asked for last.
    last: usize,
}

impl StickyPartitions {
    /// The sticky partition of `topic` among `partitions`.
    #[inline]
    pub fn partition(&mut self, topic: &Arc<str>, partitions: u32) -> u32 {
        let i = match self.topics.get(self.last) {
            Some(s) if Arc::ptr_eq(&s.topic, topic) || *s.topic == **topic => self.last,
            _ => self.find(topic),
        };
        let s = &mut self.topics[i];
        s.count = partitions.max(1);
        if s.partition >= s.count {
            s.partition = 0;
        }
        s.partition
    }

    /// The index of `topic`, added at partition 0 when new.
    fn find(&mut self, topic: &Arc<str>) -> usize {
        let i = match self.index.get(&**topic) {
            Some(&i) => i,
            None => {
                let topic = Arc::clone(topic);
                self.topics.push(Sticky { topic: Arc::clone(&topic), partition: 0, count: 1 });
                self.index.insert(topic, self.topics.len() - 1);
                self.topics.len() - 1
            }
        };
        self.last = i;
        i
    }

    /// A batch of `topic`/`partition` closed (full, lingered or flushed):
    /// when it was the sticky one, the next partition is.
    pub fn batch_closed(&mut self, topic: &str, partition: u32) {
        let Some(&i) = self.index.get(topic) else { return };
        let s = &mut self.topics[i];
        if s.partition == partition {
            s.partition = (partition + 1) % s.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_on_when_its_batch_closes_and_wraps_round() {
        let mut sticky = StickyPartitions::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert_eq!(sticky.partition(&a, 2), 0);
        assert_eq!(sticky.partition(&b, 3), 0);
        sticky.batch_closed("a", 1); // not the sticky one
        assert_eq!(sticky.partition(&a, 2), 0);
        sticky.batch_closed("a", 0);
        assert_eq!(sticky.partition(&a, 2), 1);
        sticky.batch_closed("a", 1);
        assert_eq!(sticky.partition(&a, 2), 0, "wrapped round");
        assert_eq!(sticky.partition(&b, 3), 0, "each topic its own");
        sticky.batch_closed("unknown", 0);
    }

    #[test]
    fn an_equal_name_in_another_arc_is_the_same_topic() {
        let mut sticky = StickyPartitions::default();
        let first: Arc<str> = "t".into();
        sticky.partition(&first, 4);
        sticky.batch_closed("t", 0);
        let other: Arc<str> = "t".into();
        assert_eq!(sticky.partition(&other, 4), 1);
        assert_eq!(sticky.partition(&first, 4), 1);
    }

    #[test]
    fn fewer_partitions_than_before_start_over() {
        let mut sticky = StickyPartitions::default();
        let t: Arc<str> = "t".into();
        sticky.partition(&t, 4);
        for p in 0..3 {
            sticky.batch_closed("t", p);
        }
        assert_eq!(sticky.partition(&t, 4), 3);
        assert_eq!(sticky.partition(&t, 2), 0, "partition 3 is gone");
    }
}
