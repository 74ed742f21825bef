//! The one name for a partition of a topic, shared by the protocol, the
//! producer and the consumer: [`TopicPartition`] (one partition) and
//! [`TopicPartitions`] (several partitions of one topic, the grouped form
//! the group apis put on the wire).
//!
//! ```text
//! TopicPartition   topic string | partition u32
//! TopicPartitions  topic string | partitions [u32]
//! ```
//!
//! Plain values: no I/O, usable from any thread.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Reader, WireError, Writer};

/// A partition of a topic, by name. Orders by topic, then partition, and
/// displays as `topic/partition`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self { topic: topic.into(), partition }
    }

    /// Puts `topic string | partition u32` on the wire.
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.string(&self.topic);
        w.u32(self.partition);
    }

    /// Reads `topic string | partition u32`.
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { topic: r.string()?, partition: r.u32()? })
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl From<(String, u32)> for TopicPartition {
    fn from((topic, partition): (String, u32)) -> Self {
        Self { topic, partition }
    }
}

impl From<(&str, u32)> for TopicPartition {
    fn from((topic, partition): (&str, u32)) -> Self {
        Self { topic: topic.to_owned(), partition }
    }
}

impl From<TopicPartition> for (String, u32) {
    fn from(tp: TopicPartition) -> Self {
        (tp.topic, tp.partition)
    }
}

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partition indexes.
    pub partitions: Vec<u32>,
}

impl TopicPartitions {
    /// `tps` grouped by topic, topics and partitions in order.
    pub fn group<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<TopicPartitions> {
        let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in tps {
            by.entry(tp.topic.as_str()).or_default().push(tp.partition);
        }
        by.into_iter()
            .map(|(topic, mut partitions)| {
                partitions.sort_unstable();
                TopicPartitions { topic: topic.to_owned(), partitions }
            })
            .collect()
    }

    /// Each partition named on its own.
    pub fn split(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.partitions.iter().map(|p| TopicPartition::new(self.topic.as_str(), *p))
    }

    /// Puts `[topic string | partitions [u32]]` on the wire.
    pub(crate) fn encode_all(w: &mut Writer, all: &[TopicPartitions]) {
        w.vec(all, |w, t| {
            w.string(&t.topic);
            w.vec(&t.partitions, |w, p| w.u32(*p));
        });
    }

    /// Reads `[topic string | partitions [u32]]`.
    pub(crate) fn decode_all(r: &mut Reader) -> Result<Vec<TopicPartitions>, WireError> {
        r.vec("topic partitions", 6, |r| {
            Ok(TopicPartitions { topic: r.string()?, partitions: r.vec("partitions", 4, Reader::u32)? })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_topic_then_partition_and_displays_with_a_slash() {
        let mut v = [TopicPartition::new("b", 0), TopicPartition::new("a", 2), TopicPartition::new("a", 1)];
        v.sort();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a/1", "a/2", "b/0"]);
    }

    #[test]
    fn groups_by_topic_and_splits_back() {
        let tps = [TopicPartition::new("b", 3), TopicPartition::new("a", 2), TopicPartition::new("b", 1)];
        let grouped = TopicPartitions::group(&tps);
        assert_eq!(
            grouped,
            [
                TopicPartitions { topic: "a".into(), partitions: vec![2] },
                TopicPartitions { topic: "b".into(), partitions: vec![1, 3] },
            ]
        );
        let back: Vec<TopicPartition> = grouped.iter().flat_map(TopicPartitions::split).collect();
        assert_eq!(
            back,
            [TopicPartition::new("a", 2), TopicPartition::new("b", 1), TopicPartition::new("b", 3)]
        );
    }

    #[test]
    fn converts_from_and_to_tuples() {
        assert_eq!(TopicPartition::from(("t", 4)), TopicPartition::new("t", 4));
        assert_eq!(TopicPartition::from(("t".to_string(), 4)), TopicPartition::new("t", 4));
        assert_eq!(<(String, u32)>::from(TopicPartition::new("t", 4)), ("t".to_string(), 4));
    }
}
