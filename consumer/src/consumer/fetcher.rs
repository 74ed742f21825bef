//! The fetcher task: one round of fetch requests at a time for every
//! assigned partition that is not backing off (one request per leader,
//! concurrently), decoded records sent to `poll` through the bounded
//! prefetch channel.
//!
//! Leaders come from the router's metadata cache, refetched when older
//! than `metadata_max_age`, when a partition has no known leader, and
//! after a leader answered `NOT_LEADER_OR_FOLLOWER` / `FENCED_LEADER_EPOCH`
//! or could not be reached. Such a partition backs off like any failing
//! one, but a moved leader is never reported to the application: the
//! partition follows its leader.
//!
//! A partition whose fetch fails (an error code from the broker, or a
//! batch that fails its CRC here) keeps its next offset and is left out of
//! fetches for a backoff that doubles per consecutive failure (with
//! jitter, up to `fetch_backoff_max`); other partitions keep flowing. The
//! application learns of it through `poll`: at once for a code that
//! retrying cannot fix (`CORRUPT_BATCH`, ...), after
//! [`REPORT_RETRIABLE_AFTER`] failures in a row for a retriable one. A
//! `seek` (to skip past a corrupt batch) or a successful fetch clears the
//! partition's failures.
//!
//! The bookkeeping (targets, backoff, failure counts) is in
//! [`State`](super::state::State); whether a failure is reported is
//! [`reported`]. The task runs until the consumer's shutdown token is
//! cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use sluice_protocol::api::{FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse};
use sluice_protocol::batch::split_batches;
use sluice_protocol::client::{retry_backoff, ClientError};
use sluice_protocol::routing::is_routing_code;
use sluice_protocol::{ErrorCode, TopicPartition};
use tokio::sync::mpsc;

use super::state::{Chunk, Target};
use super::{ConsumerRecord, Inner, OffsetReset};
use crate::error::ConsumerError;

/// Consecutive failures of a retriable code before `poll` reports them.
pub const REPORT_RETRIABLE_AFTER: u32 = 5;

/// Longest sleep when there is nothing to fetch (an assignment change
/// wakes the fetcher sooner).
const IDLE_WAIT: Duration = Duration::from_millis(100);

impl Inner {
    /// Fetches until shutdown (or until `poll`'s end of the channel is gone).
    pub(super) async fn run_fetcher(self: Arc<Self>, tx: mpsc::Sender<Chunk>) {
        let mut request_failures = 0u32;
        loop {
            let now = Instant::now();
            let (targets, next_retry) = self.state().targets(now);
            let until_retry = next_retry.map(|at| at.saturating_duration_since(now));
            if targets.is_empty() {
                tokio::select! {
                    _ = self.wake_fetcher.notified() => {}
                    _ = tokio::time::sleep(until_retry.unwrap_or(IDLE_WAIT).min(IDLE_WAIT)) => {}
                }
                continue;
            }
            // A long poll ends in time for the next partition's retry.
            let max_wait =
                until_retry.map_or(self.config.fetch_max_wait, |u| u.min(self.config.fetch_max_wait));
            let fetched = tokio::select! {
                r = self.fetch_round(targets, max_wait) => r,
                _ = self.wake_fetcher.notified() => continue, // assignment changed: refetch
            };
            let mut answered = false;
            for (targets, result) in fetched {
                let resp = match result {
                    Ok(resp) => resp,
                    Err(e) => {
                        tracing::debug!(error = %e, "fetch failed; retrying");
                        continue;
                    }
                };
                answered = true;
                for (part, t) in resp.partitions.into_iter().zip(targets) {
                    if let Some(chunk) = self.take_result(t, part) {
                        if tx.send(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if answered {
                request_failures = 0;
            } else {
                request_failures = request_failures.saturating_add(1);
                let c = &self.config;
                tokio::time::sleep(retry_backoff(c.fetch_backoff, c.fetch_backoff_max, request_failures))
                    .await;
            }
        }
    }

    /// Fetches `targets` from their leaders (one request each, at once);
    /// each leader's targets with its answer. Partitions without a known
    /// leader are left out (and metadata made stale).
    async fn fetch_round(
        &self,
        targets: Vec<Target>,
        max_wait: Duration,
    ) -> Vec<(Vec<Target>, Result<FetchResponse, ClientError>)> {
        if let Err(e) = self.refresh_routes().await {
            tracing::debug!(error = %e, "metadata refresh failed");
        }
        let (routed, unrouted) = self.router.by_leader(targets, |t| (&t.tp.topic, t.tp.partition));
        if !unrouted.is_empty() {
            tracing::debug!(partitions = unrouted.len(), "no leader known; refreshing metadata");
            self.router.cache().mark_stale();
        }
        join_all(routed.into_iter().map(|(leader, targets)| async move {
            let req = self.fetch_request(&targets, max_wait);
            let result = match self.router.broker(leader).await {
                Ok(conn) => conn.call(&req).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                self.router.report(Some(leader), e);
            }
            (targets, result)
        }))
        .await
    }

    fn fetch_request(&self, targets: &[Target], max_wait: Duration) -> FetchRequest {
        let per_partition = (self.config.fetch_max_bytes / targets.len() as u32).max(64 * 1024);
        FetchRequest {
            max_wait_ms: max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes: 1,
            max_bytes: self.config.fetch_max_bytes,
            partitions: targets
                .iter()
                .map(|t| FetchPartition {
                    topic: t.tp.topic.clone(),
                    partition: t.tp.partition,
                    offset: t.offset,
                    max_bytes: per_partition,
                })
                .collect(),
        }
    }

    /// One partition's fetch result: records for `poll`, a failure to
    /// report, or nothing to hand over (no records, a reset, a failure
    /// still being retried quietly).
    fn take_result(&self, t: Target, part: FetchPartitionResponse) -> Option<Chunk> {
        match part.error_code {
            ErrorCode::None if part.records.is_empty() => {
                self.state().fetched(&t, None);
                None
            }
            ErrorCode::None => match decode(&t.tp, t.offset, part.records) {
                Ok((records, next)) => {
                    self.state().fetched(&t, Some(next));
                    Some(Chunk::Records { tp: t.tp, epoch: t.epoch, records })
                }
                Err(error) => self.failed(t, ErrorCode::CorruptBatch, error),
            },
            ErrorCode::OffsetOutOfRange => {
                let to = reset_point(self.config.offset_reset, &part);
                tracing::warn!(topic = %t.tp.topic, partition = t.tp.partition, offset = t.offset, to, "offset out of range; resetting");
                self.seek(&t.tp, to, Some(t.epoch));
                None
            }
            code => {
                if is_routing_code(code) {
                    self.router.cache().mark_stale();
                }
                let error = ConsumerError::Fetch {
                    topic: t.tp.topic.clone(),
                    partition: t.tp.partition,
                    offset: t.offset,
                    code,
                    failures: 0, // set by `failed`
                };
                self.failed(t, code, error)
            }
        }
    }

    /// A fetch of `t` failed with `code`: back the partition off, and
    /// return `error` for `poll` when the application should hear of it.
    fn failed(&self, t: Target, code: ErrorCode, mut error: ConsumerError) -> Option<Chunk> {
        let (base, max) = (self.config.fetch_backoff, self.config.fetch_backoff_max);
        let failures = self.state().failed(&t, Instant::now(), |n| retry_backoff(base, max, n))?;
        tracing::warn!(topic = %t.tp.topic, partition = t.tp.partition, offset = t.offset, ?code, failures, error = %error, "fetch failed; backing off");
        if !reported(code, failures) {
            return None;
        }
        if let ConsumerError::Fetch { failures: f, .. } = &mut error {
            *f = failures;
        }
        Some(Chunk::Failed { tp: t.tp, epoch: t.epoch, error })
    }
}

/// Whether the application hears of a partition's `failures`-th failure
/// in a row with `code`: at once when retrying cannot fix it, after
/// [`REPORT_RETRIABLE_AFTER`] in a row when it might; never for a leader
/// that moved (the partition follows it).
fn reported(code: ErrorCode, failures: u32) -> bool {
    let moved = matches!(code, ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch);
    !code.is_retriable() || (failures >= REPORT_RETRIABLE_AFTER && !moved)
}

/// Where a partition fetched out of range starts again.
fn reset_point(reset: OffsetReset, part: &FetchPartitionResponse) -> u64 {
    match reset {
        OffsetReset::Earliest => part.log_start_offset,
        OffsetReset::Latest => part.high_watermark,
    }
}

/// Records at or after `from`, CRC checked and decompressed.
fn decode(tp: &TopicPartition, from: u64, bytes: Bytes) -> Result<(Vec<ConsumerRecord>, u64), ConsumerError> {
    let topic: Arc<str> = Arc::from(tp.topic.as_str());
    let corrupt = |reason: String| ConsumerError::CorruptBatch {
        topic: tp.topic.clone(),
        partition: tp.partition,
        offset: from,
        reason,
    };
    let mut out = Vec::new();
    let mut next = from;
    for batch in split_batches(bytes) {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        batch.verify_crc().map_err(|e| corrupt(e.to_string()))?;
        next = next.max(batch.header().next_offset());
        if batch.header().last_offset() < from {
            continue;
        }
        let records = batch.records().map_err(|e| corrupt(e.to_string()))?;
        out.reserve(records.len() as usize);
        for r in records.iter() {
            let r = r.map_err(|e| corrupt(e.to_string()))?;
            if r.offset < from {
                continue;
            }
            let owned = records.to_owned_record(&r);
            out.push(ConsumerRecord {
                topic: Arc::clone(&topic),
                partition: tp.partition,
                offset: owned.offset,
                timestamp: owned.timestamp,
                key: owned.key,
                value: owned.value,
                headers: owned.headers,
            });
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use sluice_protocol::batch::{set_base_offset, BatchBuilder};

    use super::*;

    /// Batches of `counts` records each, from offset `base` on, back to back.
    fn batches(base: u64, counts: &[u64]) -> Bytes {
        let mut out = BytesMut::new();
        let mut offset = base;
        for &count in counts {
            let mut b = BatchBuilder::new();
            for i in 0..count {
                b.append(0, None, Some(format!("v{}", offset + i).as_bytes()), &[]);
            }
            let mut bytes = BytesMut::from(&b.build()[..]);
            set_base_offset(&mut bytes, offset);
            out.extend_from_slice(&bytes);
            offset += count;
        }
        out.freeze()
    }

    #[test]
    fn codes_that_retrying_cannot_fix_are_reported_at_once() {
        assert!(reported(ErrorCode::CorruptBatch, 1));
        assert!(!reported(ErrorCode::RequestTimedOut, 1));
        assert!(!reported(ErrorCode::RequestTimedOut, REPORT_RETRIABLE_AFTER - 1));
        assert!(reported(ErrorCode::RequestTimedOut, REPORT_RETRIABLE_AFTER));
        assert!(!reported(ErrorCode::NotLeaderOrFollower, 100), "a moved leader is followed, not reported");
    }

    #[test]
    fn out_of_range_resets_to_the_policys_end() {
        let part = FetchPartitionResponse {
            topic: "t".into(),
            partition: 0,
            error_code: ErrorCode::OffsetOutOfRange,
            high_watermark: 90,
            log_start_offset: 10,
            records: Bytes::new(),
        };
        assert_eq!(reset_point(OffsetReset::Earliest, &part), 10);
        assert_eq!(reset_point(OffsetReset::Latest, &part), 90);
    }

    #[test]
    fn decoding_skips_records_before_the_fetch_offset() {
        let tp = TopicPartition::new("t", 3);
        let (records, next) = decode(&tp, 12, batches(10, &[4, 3])).expect("valid batches");
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [12, 13, 14, 15, 16]);
        assert_eq!(next, 17);
        assert!(records.iter().all(|r| &*r.topic == "t" && r.partition == 3));
        assert_eq!(records[0].value.as_deref(), Some(&b"v12"[..]));
    }

    #[test]
    fn a_batch_failing_its_crc_names_the_partition_and_fetch_offset() {
        let tp = TopicPartition::new("t", 0);
        let mut bytes = BytesMut::from(&batches(6, &[3])[..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let error = decode(&tp, 6, bytes.freeze()).expect_err("corrupt");
        assert!(matches!(error, ConsumerError::CorruptBatch { partition: 0, offset: 6, .. }), "{error:?}");
        assert_eq!(error.position(), Some(("t", 0, 6)));
    }
}
