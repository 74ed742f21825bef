//! The fetcher task: one fetch request at a time for every assigned
//! partition that is not backing off, decoded records sent to `poll`
//! through the bounded prefetch channel.
//!
//! A partition whose fetch fails (an error code from the broker, or a
//! batch that fails its CRC here) keeps its position and is left out of
//! fetches for a backoff that doubles per consecutive failure (with
//! jitter, up to `fetch_backoff_max`); other partitions keep flowing. The
//! application learns of it through `poll`: at once for a code that
//! retrying cannot fix (`CORRUPT_BATCH`, ...), after
//! [`REPORT_RETRIABLE_AFTER`] failures in a row for a retriable one. A
//! `seek` (to skip past a corrupt batch) or a successful fetch clears the
//! partition's failures.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::api::{FetchPartition, FetchRequest};
use sluice_protocol::batch::split_batches;
use sluice_protocol::client::retry_backoff;
use sluice_protocol::ErrorCode;
use tokio::sync::mpsc;

use super::{Chunk, ConsumerRecord, Inner, OffsetReset, Tp};
use crate::error::ConsumerError;

/// Consecutive failures of a retriable code before `poll` reports them.
pub const REPORT_RETRIABLE_AFTER: u32 = 5;

/// Longest sleep when there is nothing to fetch (an assignment change
/// wakes the fetcher sooner).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// One partition to fetch: where, and the epoch its result belongs to.
struct Target {
    tp: Tp,
    position: u64,
    epoch: u64,
}

impl Inner {
    /// Partitions to fetch now, and when the next backing-off one is due.
    fn targets(&self, now: Instant) -> (Vec<Target>, Option<Instant>) {
        let state = self.state();
        let mut targets = Vec::new();
        let mut next_retry: Option<Instant> = None;
        for (tp, s) in &state.parts {
            match s.retry_at.filter(|at| *at > now) {
                Some(at) => next_retry = Some(next_retry.map_or(at, |n| n.min(at))),
                None => targets.push(Target { tp: tp.clone(), position: s.position, epoch: s.epoch }),
            }
        }
        (targets, next_retry)
    }

    pub(super) async fn run_fetcher(self: Arc<Self>, tx: mpsc::Sender<Chunk>) {
        let mut request_failures = 0u32;
        while !self.closed.load(Ordering::Acquire) {
            let now = Instant::now();
            let (targets, next_retry) = self.targets(now);
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
            let req = self.fetch_request(&targets, max_wait);
            let resp = match self.conn().await {
                Ok(conn) => tokio::select! {
                    r = conn.call(&req) => r.map_err(ConsumerError::from),
                    _ = self.wake_fetcher.notified() => continue, // assignment changed: refetch
                },
                Err(e) => Err(e),
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    request_failures = request_failures.saturating_add(1);
                    let c = &self.config;
                    let wait = retry_backoff(c.fetch_backoff, c.fetch_backoff_max, request_failures);
                    tracing::debug!(error = %e, ?wait, "fetch failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            request_failures = 0;
            for (part, t) in resp.partitions.into_iter().zip(targets) {
                let chunk = match part.error_code {
                    ErrorCode::None if part.records.is_empty() => {
                        self.fetched(&t, None);
                        continue;
                    }
                    ErrorCode::None => match decode(&t.tp, t.position, part.records) {
                        Ok((records, next)) => {
                            self.fetched(&t, Some(next));
                            Chunk::Records { tp: t.tp, epoch: t.epoch, records }
                        }
                        Err(error) => match self.failed(&t, ErrorCode::CorruptBatch, error) {
                            Some(chunk) => chunk,
                            None => continue,
                        },
                    },
                    ErrorCode::OffsetOutOfRange => {
                        let to = match self.config.offset_reset {
                            OffsetReset::Earliest => part.log_start_offset,
                            OffsetReset::Latest => part.high_watermark,
                        };
                        tracing::warn!(topic = %t.tp.0, partition = t.tp.1, position = t.position, to, "offset out of range; resetting");
                        self.seek_internal(&t.tp, to, Some(t.epoch));
                        continue;
                    }
                    code => {
                        let error = ConsumerError::Fetch {
                            topic: t.tp.0.to_string(),
                            partition: t.tp.1,
                            offset: t.position,
                            code,
                            failures: 0, // set by `failed`
                        };
                        match self.failed(&t, code, error) {
                            Some(chunk) => chunk,
                            None => continue,
                        }
                    }
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
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
                    topic: t.tp.0.to_string(),
                    partition: t.tp.1,
                    offset: t.position,
                    max_bytes: per_partition,
                })
                .collect(),
        }
    }

    /// A fetch of `t` succeeded: clear its failures, move its position to
    /// `next` (when records came).
    fn fetched(&self, t: &Target, next: Option<u64>) {
        let mut s = self.state();
        if let Some(ps) = s.parts.get_mut(&t.tp).filter(|ps| ps.epoch == t.epoch) {
            ps.failures = 0;
            ps.retry_at = None;
            if let Some(next) = next {
                ps.position = ps.position.max(next);
            }
        }
    }

    /// A fetch of `t` failed with `code`: back the partition off, and
    /// return `error` for `poll` when the application should hear of it.
    fn failed(&self, t: &Target, code: ErrorCode, mut error: ConsumerError) -> Option<Chunk> {
        let failures = {
            let mut s = self.state();
            let ps = s.parts.get_mut(&t.tp).filter(|ps| ps.epoch == t.epoch)?;
            ps.failures = ps.failures.saturating_add(1);
            let wait = retry_backoff(self.config.fetch_backoff, self.config.fetch_backoff_max, ps.failures);
            ps.retry_at = Some(Instant::now() + wait);
            ps.failures
        };
        tracing::warn!(topic = %t.tp.0, partition = t.tp.1, offset = t.position, ?code, failures, error = %error, "fetch failed; backing off");
        if code.is_retriable() && failures < REPORT_RETRIABLE_AFTER {
            return None;
        }
        if let ConsumerError::Fetch { failures: f, .. } = &mut error {
            *f = failures;
        }
        Some(Chunk::Failed { tp: t.tp.clone(), epoch: t.epoch, error })
    }
}

/// Records at or after `from`, CRC checked and decompressed.
fn decode(tp: &Tp, from: u64, bytes: Bytes) -> Result<(Vec<ConsumerRecord>, u64), ConsumerError> {
    let corrupt = |reason: String| ConsumerError::CorruptBatch {
        topic: tp.0.to_string(),
        partition: tp.1,
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
                topic: Arc::clone(&tp.0),
                partition: tp.1,
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
