//! What the producer knows of topics and where their partitions are led
//! from: partition counts and `max_message_bytes` (kept in the
//! accumulator, read under its lock on the `send` path) and routes (the
//! [`Router`](sluice_protocol::routing::Router)'s cache, read per batch by
//! the sender).
//!
//! One background task refetches the metadata of every topic in use, in
//! one request: every `metadata_max_age`, and when the sender reports a
//! routing error (a moved leader, a lost broker), then at most every
//! `retry_backoff` while routes stay stale. It ends when the producer is
//! closed or dropped.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sluice_protocol::api::MetadataResponse;
use sluice_protocol::client::ClientError;
use sluice_protocol::routing::is_routing_error;
use sluice_protocol::ErrorCode;

use crate::{Inner, ProducerError};

/// What the producer knows of a topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    /// The interned name.
    pub name: Arc<str>,
    /// Partition count.
    pub partitions: u32,
    /// Largest batch the topic accepts (its `max_message_bytes`).
    pub max_message_bytes: usize,
}

/// Refetches the metadata of the topics in use (see the module doc) until
/// the producer is closed or dropped.
pub(crate) async fn refresh_metadata(inner: Weak<Inner>) {
    let Some(every) = inner.upgrade().map(|i| i.config.metadata_max_age.max(Duration::from_millis(10)))
    else {
        return;
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Instant> = None;
    loop {
        let gap = {
            let Some(inner) = inner.upgrade() else { return };
            // Still stale after a refresh (a leader not elected yet): again
            // after the backoff, without waiting for another report.
            let stale = last.is_some() && inner.router.cache().needs_refresh(Instant::now(), every);
            let backoff = inner.config.retry_backoff;
            let wake = async {
                if stale {
                    tokio::time::sleep(backoff).await;
                } else {
                    inner.refresh.notified().await;
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                () = wake => {}
            }
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            backoff
        };
        if let Some(wait) = last.map(|at| gap.saturating_sub(at.elapsed())) {
            tokio::time::sleep(wait).await; // refreshes at most every retry_backoff
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        last = Some(Instant::now());
        let known = inner.acc().known_topics();
        if known.is_empty() {
            continue;
        }
        match inner.router.metadata(known.iter().map(|t| t.to_string()).collect()).await {
            Ok(resp) => {
                inner.learn_topics(&resp, &known);
                // Batches waiting on a retry go at once to a leader that moved.
                inner.wake.notify_one();
            }
            Err(e) => tracing::debug!(error = %e, "metadata refresh failed"),
        }
    }
}

impl Inner {
    /// Forgets a topic's partition count (refetched on next use).
    pub fn invalidate(&self, topic: &str) {
        self.acc().forget_topic(topic);
    }

    /// A request to broker `broker` (when known) failed with `e`: when the
    /// error says routes may have changed, they are refetched soon.
    pub fn routing_failure(&self, broker: Option<u64>, e: &ClientError) {
        if is_routing_error(e) {
            self.router.report(broker, e);
            self.refresh.notify_one();
        }
    }

    /// What is known of `topic`, fetching its metadata when nothing is.
    pub(crate) async fn topic(&self, topic: &Arc<str>) -> Result<TopicInfo, ProducerError> {
        if let Some(found) = self.cached_topic(topic) {
            return Ok(found);
        }
        self.fetch_topic(topic).await
    }

    /// Fetches the metadata of `topic` and remembers it (its routes too).
    /// The application's `Arc` of the name is kept, so its next records
    /// find the topic by pointer.
    async fn fetch_topic(&self, topic: &Arc<str>) -> Result<TopicInfo, ProducerError> {
        let meta = self.router.metadata(vec![topic.to_string()]).await?;
        let t = meta.topics.first().filter(|t| t.error_code == ErrorCode::None && !t.partitions.is_empty());
        let t = t.ok_or_else(|| ProducerError::UnknownTopic(topic.to_string()))?;
        let found = topic_info(Arc::clone(topic), t);
        self.acc().learn_topic(found.clone());
        Ok(found)
    }

    /// Learns the partition counts and limits of the `known` topics in
    /// `resp` (keeping their interned names).
    fn learn_topics(&self, resp: &MetadataResponse, known: &[Arc<str>]) {
        let mut acc = self.acc();
        for t in resp.topics.iter().filter(|t| t.error_code == ErrorCode::None && !t.partitions.is_empty()) {
            if let Some(name) = known.iter().find(|k| ***k == *t.name) {
                acc.learn_topic(topic_info(Arc::clone(name), t));
            }
        }
    }
}

fn topic_info(name: Arc<str>, t: &sluice_protocol::api::TopicMetadata) -> TopicInfo {
    let max_message_bytes = t
        .configs
        .iter()
        .find(|c| c.key == "max_message_bytes")
        .and_then(|c| c.value.parse().ok())
        .unwrap_or(usize::MAX);
    TopicInfo { name, partitions: t.partitions.len() as u32, max_message_bytes }
}
