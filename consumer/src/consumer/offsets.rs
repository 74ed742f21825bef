//! Offsets against the broker: where a newly assigned partition starts
//! (its committed offset with a group, else the `auto_offset_reset`
//! policy), commits, and the auto-commit task.
//!
//! What to commit is decided by
//! [`State::to_commit`](super::state::State::to_commit) (processed offsets
//! for auto-commit and revocation, delivered ones for `commit()` and
//! `close()`); this module sends it and records what the broker accepted.
//! Without a group nothing is committed. The auto-commit task runs until
//! the consumer's shutdown token is cancelled.
//!
//! Committed offsets and commits go to the group's broker; `ListOffsets`
//! goes to each partition's leader (metadata refetched first when routes
//! are stale or unknown).

use std::collections::HashMap;
use std::sync::Arc;

use sluice_protocol::api::{
    CommitOffset, ListOffsetsPartition, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetSpec, PartitionResult, NO_OFFSET,
};
use sluice_protocol::client::retry_backoff;
use sluice_protocol::TopicPartition;

use super::{names, AssignmentEvent, Inner, OffsetReset, Progress};
use crate::error::ConsumerError;

/// Metadata refreshes waiting for partitions' leaders before ListOffsets.
const LEADER_WAIT_ATTEMPTS: u32 = 5;

impl Inner {
    /// Starts reading `tps`: at their committed offsets (with a group),
    /// else at their `start_offsets`, else where the reset policy says.
    pub(super) async fn start_partitions(&self, tps: Vec<TopicPartition>) -> Result<(), ConsumerError> {
        if tps.is_empty() {
            return Ok(());
        }
        let committed = self.committed_offsets(&tps).await?;
        let starts = &self.config.start_offsets;
        let missing: Vec<&TopicPartition> =
            tps.iter().filter(|tp| !committed.contains_key(*tp) && !starts.contains_key(*tp)).collect();
        let reset = self.reset_offsets(&missing).await?;
        {
            let mut state = self.state();
            for tp in &tps {
                let committed = committed.get(tp).copied();
                let uncommitted = starts.get(tp).or(reset.get(tp)).copied();
                state.assign(tp.clone(), start_offset(committed, uncommitted), committed);
            }
        }
        let _ = self.events.send(AssignmentEvent::Assigned(names(&tps)));
        self.wake_fetcher.notify_one();
        Ok(())
    }

    /// The group's committed offsets of `tps` (none without a group).
    async fn committed_offsets(
        &self,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, u64>, ConsumerError> {
        let Some(group) = &self.config.group else { return Ok(HashMap::new()) };
        let request = OffsetFetchRequest { group: group.clone(), partitions: tps.to_vec() };
        Ok(self
            .group_call(&request)
            .await?
            .offsets
            .into_iter()
            .filter(|o| o.offset != NO_OFFSET)
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect())
    }

    /// Where the reset policy starts each of `tps` (those their leaders
    /// could answer for), asking each partition's leader.
    async fn reset_offsets(
        &self,
        tps: &[&TopicPartition],
    ) -> Result<HashMap<TopicPartition, u64>, ConsumerError> {
        if tps.is_empty() {
            return Ok(HashMap::new());
        }
        let spec = match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        };
        let lookups: Vec<ListOffsetsPartition> = tps
            .iter()
            .map(|tp| ListOffsetsPartition { topic: tp.topic.clone(), partition: tp.partition, spec })
            .collect();
        self.await_leaders(tps).await?;
        let (routed, _) = self.router.by_leader(lookups, |l| (&l.topic, l.partition));
        let mut found = HashMap::new();
        for (leader, partitions) in routed {
            let request = ListOffsetsRequest { partitions };
            let result = match self.router.broker(leader).await {
                Ok(conn) => conn.call(&request).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                self.router.report(Some(leader), e);
            }
            found.extend(
                result?
                    .partitions
                    .into_iter()
                    .filter(|p| p.error_code.is_ok())
                    .map(|p| (TopicPartition::new(p.topic, p.partition), p.offset)),
            );
        }
        Ok(found)
    }

    /// Refetches metadata until every one of `tps` has a known leader, a
    /// few times with backoff (a leader being elected); those still
    /// without one are left to the caller.
    async fn await_leaders(&self, tps: &[&TopicPartition]) -> Result<(), ConsumerError> {
        for attempt in 1..=LEADER_WAIT_ATTEMPTS {
            let unknown = {
                let cache = self.router.cache();
                tps.iter().any(|tp| cache.leader(&tp.topic, tp.partition).is_none())
            };
            if !unknown {
                return Ok(());
            }
            if attempt > 1 {
                let (base, max) = (self.config.fetch_backoff, self.config.fetch_backoff_max);
                tokio::time::sleep(retry_backoff(base, max, attempt - 1)).await;
            }
            self.router.cache().mark_stale(); // a partition new to this client, or moving
            self.refresh_routes().await?;
        }
        Ok(())
    }

    /// Commits the `progress` offsets of `only` (or every partition) that
    /// moved since the last commit.
    pub(super) async fn commit(
        &self,
        progress: Progress,
        only: Option<&[TopicPartition]>,
    ) -> Result<(), ConsumerError> {
        let offsets = self.state().to_commit(progress, only);
        self.commit_exact(offsets).await
    }

    /// Commits exactly these offsets, and records the ones the broker took.
    pub(super) async fn commit_exact(
        &self,
        offsets: Vec<(TopicPartition, u64)>,
    ) -> Result<(), ConsumerError> {
        let Some(group) = self.config.group.clone() else { return Ok(()) };
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = {
            let state = self.state();
            (state.member_id.clone(), state.member_epoch)
        };
        let request = OffsetCommitRequest {
            group,
            member_id,
            member_epoch,
            offsets: offsets
                .iter()
                .map(|(tp, offset)| CommitOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        let resp = self.group_call(&request).await?;
        let (accepted, outcome) = commit_outcome(&offsets, &resp.results);
        let mut state = self.state();
        for (tp, offset) in accepted {
            state.committed_at(tp, offset);
        }
        outcome
    }

    /// Commits what was processed, every `auto_commit_interval`, until shutdown.
    pub(super) async fn run_auto_commit(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.auto_commit_interval).await;
            if let Err(e) = self.commit(Progress::Processed, None).await {
                tracing::debug!(error = %e, "auto-commit failed");
            }
        }
    }
}

/// Where a partition starts: its committed offset, else its start offset
/// or where the reset policy points, else 0 (the broker could not say).
fn start_offset(committed: Option<u64>, reset: Option<u64>) -> u64 {
    committed.or(reset).unwrap_or(0)
}

/// Which of `offsets` the broker took (its `results` are in request order),
/// and the commit's outcome: [`ConsumerError::Commit`] naming the first
/// refusal's code and how many were refused.
fn commit_outcome<'a>(
    offsets: &'a [(TopicPartition, u64)],
    results: &[PartitionResult],
) -> (Vec<(&'a TopicPartition, u64)>, Result<(), ConsumerError>) {
    let accepted = offsets
        .iter()
        .zip(results)
        .filter(|(_, r)| r.error_code.is_ok())
        .map(|((tp, offset), _)| (tp, *offset))
        .collect();
    let mut refused = results.iter().filter(|r| !r.error_code.is_ok());
    let outcome = match refused.next() {
        Some(first) => Err(ConsumerError::Commit { count: 1 + refused.count(), code: first.error_code }),
        None => Ok(()),
    };
    (accepted, outcome)
}

#[cfg(test)]
mod tests {
    use sluice_protocol::ErrorCode;

    use super::*;

    fn result(p: u32, error_code: ErrorCode) -> PartitionResult {
        PartitionResult { topic: "t".into(), partition: p, error_code }
    }

    #[test]
    fn a_partition_starts_at_its_commit_else_the_reset_point() {
        assert_eq!(start_offset(Some(12), Some(40)), 12);
        assert_eq!(start_offset(None, Some(40)), 40);
        assert_eq!(start_offset(None, None), 0, "the broker could not answer for it");
    }

    #[test]
    fn an_accepted_commit_records_every_offset() {
        let offsets = [(TopicPartition::new("t", 0), 5), (TopicPartition::new("t", 1), 9)];
        let (accepted, outcome) =
            commit_outcome(&offsets, &[result(0, ErrorCode::None), result(1, ErrorCode::None)]);
        assert!(outcome.is_ok());
        assert_eq!(accepted, [(&offsets[0].0, 5), (&offsets[1].0, 9)]);
    }

    #[test]
    fn a_refused_commit_records_the_rest_and_names_the_first_code() {
        let offsets = [
            (TopicPartition::new("t", 0), 5),
            (TopicPartition::new("t", 1), 9),
            (TopicPartition::new("t", 2), 1),
        ];
        let results = [
            result(0, ErrorCode::StaleMemberEpoch),
            result(1, ErrorCode::None),
            result(2, ErrorCode::UnknownMemberId),
        ];
        let (accepted, outcome) = commit_outcome(&offsets, &results);
        assert_eq!(accepted, [(&offsets[1].0, 9)]);
        match outcome {
            Err(ConsumerError::Commit { count, code }) => {
                assert_eq!((count, code), (2, ErrorCode::StaleMemberEpoch))
            }
            other => panic!("expected a commit error, got {other:?}"),
        }
    }
}
