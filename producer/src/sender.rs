//! The sender task: closes lingering batches, sends ready ones in each
//! partition's order to that partition's leader (at most `max_in_flight`
//! in all and `max_in_flight_per_partition` per partition), completes records'
//! futures from the responses, and retries retriable failures in sequence
//! order once the partition has nothing else in flight, after a backoff
//! that doubles per failed send of the batch (with jitter, up to
//! `retry_backoff_max`). A batch too large for the broker is never
//! retried: resending it cannot succeed.
//!
//! Leaders: each batch is looked up in the router's cache as it is sent
//! (one map lookup per batch). A batch whose partition has no known
//! leader, whose leader cannot be reached, or that the broker refuses as
//! not the leader fails retriably: the metadata task is woken to refetch
//! routes, and the batch is resent after its backoff (same producer id and
//! sequence, so a new leader that replicated the producer state
//! deduplicates it), in sequence order like any retry.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sluice_protocol::api::{Acks, ProduceRequest, ProduceResponse};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::client::{retry_backoff, ClientError, Connection};
use sluice_protocol::ErrorCode;
use tokio::sync::mpsc;

use crate::accumulator::{BatchResult, PartitionKey, ReadyBatch};
use crate::error::ProducerError;
use crate::record::UNKNOWN_OFFSET;
use crate::Inner;

/// A sent batch, the broker it went to, and its answer.
type Done = (ReadyBatch, u64, Result<ProduceResponse, ClientError>);

/// Batches of one partition waiting to be resent: after their backoff,
/// or as soon as the metadata names a leader other than the broker they
/// failed on (as KIP-951 has Kafka's clients do: a failover costs the
/// election, not the election plus a backoff that grew meanwhile).
#[derive(Debug)]
struct Retry {
    at: Instant,
    batches: Vec<ReadyBatch>,
    /// The broker the last attempt went to, if it got that far.
    failed_on: Option<u64>,
}

impl Retry {
    /// Whether the metadata names a leader other than the one that failed.
    fn leader_moved(&self, inner: &Inner, key: &PartitionKey) -> bool {
        inner.router.cache().leader(&key.0, key.1).is_some_and(|l| Some(l) != self.failed_on)
    }
}

#[derive(Debug, Default)]
struct Sender {
    in_flight: HashMap<PartitionKey, usize>,
    total: usize,
    retry: HashMap<PartitionKey, Retry>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Runs until the producer is closed and everything is finished.
pub(crate) async fn run(inner: Arc<Inner>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut s = Sender::default();
    let per_partition = inner.config.max_in_flight_per_partition;
    loop {
        let closed = inner.closed.load(Ordering::Acquire);
        let next_linger = inner.acc().close_expired(inner.config.linger, closed);
        let now = Instant::now();
        // (partition, resent because its leader moved)
        let due: Vec<(PartitionKey, bool)> = s
            .retry
            .iter()
            .filter(|(k, _)| s.in_flight_of(k) == 0)
            .filter_map(|(k, r)| {
                let moved = r.leader_moved(&inner, k);
                (moved || r.at <= now).then(|| (k.clone(), moved))
            })
            .collect();
        let mut to_send = Vec::new();
        for (key, moved) in due {
            if let Some(mut r) = s.retry.remove(&key) {
                if moved {
                    r.batches.iter_mut().for_each(|b| b.backoff_from = b.attempts);
                }
                r.batches.sort_by_key(|b| b.sequence);
                to_send.extend(r.batches);
            }
        }
        let room = inner.config.max_in_flight.saturating_sub(s.total + to_send.len());
        let ready = inner.acc().take_ready(room, |k| {
            if s.retry.contains_key(k) {
                0
            } else {
                per_partition.saturating_sub(s.in_flight_of(k))
            }
        });
        to_send.extend(ready);
        if !to_send.is_empty() {
            s.send_all(&inner, to_send, &done_tx).await;
        }
        if closed && s.total == 0 && s.retry.is_empty() && inner.acc().is_empty() {
            return;
        }
        let next_retry = s.retry.values().map(|r| r.at).min();
        let deadline = [next_linger, next_retry].into_iter().flatten().min();
        tokio::select! {
            _ = inner.wake.notified() => {}
            Some(done) = done_rx.recv() => {
                s.handle(&inner, done);
                while let Ok(more) = done_rx.try_recv() {
                    s.handle(&inner, more);
                }
            }
            _ = sleep_until(deadline) => {}
        }
    }
}

impl Sender {
    fn in_flight_of(&self, key: &PartitionKey) -> usize {
        self.in_flight.get(key).copied().unwrap_or(0)
    }

    async fn send_all(
        &mut self,
        inner: &Arc<Inner>,
        batches: Vec<ReadyBatch>,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        let acks = inner.config.acks;
        let timeout_ms = inner.config.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32;
        for mut batch in batches {
            batch.attempts += 1;
            let (leader, conn) = match leader_of(inner, &batch).await {
                Ok(found) => found,
                Err((leader, e)) => {
                    self.failed(inner, batch, leader, e);
                    continue;
                }
            };
            let req = ProduceRequest {
                acks,
                timeout_ms,
                topic: batch.key.0.to_string(),
                partition: batch.key.1,
                batch: batch.bytes.clone(),
            };
            if acks == Acks::None {
                match conn.send(&req).await {
                    Ok(()) => finish(inner, batch, Ok((UNKNOWN_OFFSET, -1))),
                    Err(e) => self.failed(inner, batch, Some(leader), e),
                }
                continue;
            }
            match conn.start(&req).await {
                Ok(response) => {
                    *self.in_flight.entry(batch.key.clone()).or_default() += 1;
                    self.total += 1;
                    let done = done.clone();
                    tokio::spawn(async move {
                        let result = response.await;
                        let _ = done.send((batch, leader, result));
                    });
                }
                Err(e) => self.failed(inner, batch, Some(leader), e),
            }
        }
    }

    fn handle(&mut self, inner: &Arc<Inner>, (batch, leader, result): Done) {
        if let Some(n) = self.in_flight.get_mut(&batch.key) {
            *n = n.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
        match result {
            Ok(resp) => finish(inner, batch, Ok((resp.base_offset, resp.log_append_time))),
            Err(e) => self.failed(inner, batch, Some(leader), e),
        }
    }

    /// A send of `batch` (to `broker`, when it got that far) failed.
    fn failed(&mut self, inner: &Arc<Inner>, batch: ReadyBatch, broker: Option<u64>, e: ClientError) {
        let key = batch.key.clone();
        let code = e.code();
        inner.routing_failure(broker, &e);
        // Refetched metadata brings the topic's current max_message_bytes.
        if matches!(
            code,
            Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition | ErrorCode::BatchTooLarge)
        ) {
            inner.invalidate(&key.0);
        }
        if let ClientError::RequestTooLarge { max, .. } = e {
            inner.learn_max_request_bytes(max);
        }
        let stale_epoch = batch.epoch != inner.acc().epoch(&key);
        // An out-of-order answer behind a batch that is being retried is a
        // consequence of that failure, not a failure of its own.
        let behind_a_retry = code == Some(ErrorCode::OutOfOrderSequence)
            && (self.retry.contains_key(&key) || self.in_flight_of(&key) > 0);
        let retriable = !stale_epoch && (e.is_retriable() || behind_a_retry);
        let expired = batch.created.elapsed() >= inner.config.delivery_timeout;
        if retriable && !expired && batch.attempts < inner.config.retries {
            tracing::debug!(topic = %key.0, partition = key.1, sequence = batch.sequence, error = %e, "retrying batch");
            let c = &inner.config;
            let failures = batch.attempts - batch.backoff_from;
            let at = Instant::now() + retry_backoff(c.retry_backoff, c.retry_backoff_max, failures);
            let retry =
                self.retry.entry(key).or_insert_with(|| Retry { at, batches: Vec::new(), failed_on: broker });
            retry.failed_on = broker;
            retry.batches.push(batch);
            return;
        }
        let error = if expired {
            ProducerError::DeliveryTimeout(inner.config.delivery_timeout)
        } else {
            match e {
                ClientError::Server { code, message } => ProducerError::Broker { code, message },
                ClientError::RequestTooLarge { size, max } => ProducerError::RecordTooLarge { size, max },
                other => ProducerError::Connection(other),
            }
        };
        tracing::warn!(topic = %key.0, partition = key.1, error = %error, "batch failed");
        finish(inner, batch, Err(error.clone()));
        if stale_epoch {
            return; // its partition was already reset
        }
        // Order cannot be kept past a lost batch: what waits behind it in
        // this partition fails too, and the partition starts a new epoch.
        let mut behind = inner.acc().reset_partition(&key);
        behind.extend(self.retry.remove(&key).map(|r| r.batches).unwrap_or_default());
        for b in behind {
            finish(inner, b, Err(error.clone()));
        }
    }
}

/// The leader of `batch`'s partition and a connection to it; the error
/// (retriable) when none is known or it cannot be reached.
async fn leader_of(
    inner: &Inner,
    batch: &ReadyBatch,
) -> Result<(u64, Connection), (Option<u64>, ClientError)> {
    let (topic, partition) = (&batch.key.0, batch.key.1);
    match inner.router.leader(topic, partition).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err((
            None,
            ClientError::Server {
                code: ErrorCode::NotLeaderOrFollower,
                message: format!("no leader known for {topic}/{partition}"),
            },
        )),
        Err(e) => Err((inner.router.cache().leader(topic, partition), e)),
    }
}

/// Completes a batch's records, releases its buffer memory, and keeps its
/// buffer for a new batch when nothing else holds it any more.
fn finish(inner: &Inner, batch: ReadyBatch, result: BatchResult) {
    batch.complete(result);
    inner.buffer.add_permits(batch.reserved);
    if let Some(buf) = BatchBuilder::reclaim(batch.bytes) {
        inner.acc().recycle(buf);
    }
}
