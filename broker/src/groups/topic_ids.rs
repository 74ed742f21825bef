//! Committed offsets belong to one topic *incarnation*: each carries the
//! id of the topic it was committed to ([`Committed::topic_id`]), and an
//! offset whose id is not the current topic's (the topic was deleted, and
//! maybe re-created under the same name) is dropped, durably. This runs
//! after a topic is created or deleted, and at start-up for every topic, so
//! a crash between a topic's deletion and the clean-up of its offsets only
//! delays the clean-up: a re-created topic never resumes at the deleted
//! one's offsets.
//!
//! At start-up an offset without an id (committed before topics had ids)
//! is given its topic's id; offsets of a topic that failed to load are kept
//! (its files are still there); offsets of a topic that no longer exists
//! are dropped.

use super::assign::Tp;
use super::store::{Committed, OffsetKey};
use super::Coordinator;
use crate::errors::BrokerError;
use crate::topics::Topics;

/// What to do with one committed offset.
enum Verdict {
    Keep,
    Adopt(uuid::Uuid),
    Drop,
}

fn verdict(topics: &Topics, topic: &str, committed: &Committed, at_start: bool) -> Verdict {
    match (topics.get(topic).map(|t| t.id()), committed.topic_id) {
        (Some(id), Some(mine)) if id == mine => Verdict::Keep,
        (Some(id), None) if at_start => Verdict::Adopt(id),
        (None, _) if topics.failed().iter().any(|(name, _)| name == topic) => Verdict::Keep,
        _ => Verdict::Drop,
    }
}

impl Coordinator {
    /// Drops the committed offsets of `topic` that belong to an earlier
    /// topic of that name (or to a deleted one). Blocking (fsync).
    ///
    /// # Errors
    /// `Storage` when the offsets log cannot be written.
    pub fn drop_stale_offsets(&self, topics: &Topics, topic: &str) -> Result<(), BrokerError> {
        self.settle_topic_ids(topics, Some(topic), false)
    }

    /// At start-up: gives id-less offsets their topic's id and drops those
    /// of deleted topics. Blocking (fsync).
    ///
    /// # Errors
    /// `Storage` when the offsets log cannot be written.
    pub fn adopt_topic_ids(&self, topics: &Topics) -> Result<(), BrokerError> {
        self.settle_topic_ids(topics, None, true)
    }

    fn settle_topic_ids(
        &self,
        topics: &Topics,
        only: Option<&str>,
        at_start: bool,
    ) -> Result<(), BrokerError> {
        // Judge under each group's lock, write and sync outside every lock,
        // then apply only where the entry is still the one judged (a commit
        // meanwhile wins, as it does in the log, where it comes later).
        let mut changes: Vec<(OffsetKey, Committed, Option<Committed>)> = Vec::new();
        for (name, slot) in self.slots() {
            let group = slot.lock();
            for (Tp { topic, partition }, (committed, _)) in &group.offsets {
                if only.is_some_and(|t| t != topic) {
                    continue;
                }
                let key = (name.clone(), topic.clone(), *partition);
                match verdict(topics, topic, committed, at_start) {
                    Verdict::Keep => {}
                    Verdict::Adopt(id) => {
                        let adopted = Committed { topic_id: Some(id), ..committed.clone() };
                        changes.push((key, committed.clone(), Some(adopted)));
                    }
                    Verdict::Drop => {
                        tracing::info!(group = %name, %topic, partition, offset = committed.offset, "dropping the committed offset of a deleted topic");
                        changes.push((key, committed.clone(), None));
                    }
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let entries: Vec<(OffsetKey, Option<Committed>)> =
            changes.iter().map(|(key, _, change)| (key.clone(), change.clone())).collect();
        let pending = self.backend.append(&entries)?;
        self.backend.sync(pending)?;
        for ((name, topic, partition), judged, change) in changes {
            let Some(slot) = self.slot(&name) else { continue };
            let mut group = slot.lock();
            let tp = Tp::new(topic, partition);
            if group.offsets.get(&tp).is_none_or(|(current, _)| *current != judged) {
                continue;
            }
            match change {
                Some(c) => {
                    if let Some(entry) = group.offsets.get_mut(&tp) {
                        entry.0 = c;
                    }
                }
                None => {
                    group.offsets.remove(&tp);
                }
            }
        }
        Ok(())
    }
}
