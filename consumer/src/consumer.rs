//! The consumer: what the application calls (`poll`, `commit`, `seek`,
//! `close`) over tasks that do the work in the background, each in its own
//! module:
//!
//! - [`builder`]: settings, and `build`, which connects and starts the tasks;
//! - [`membership`]: the heartbeat task that joins the group and follows
//!   its assignment (revoke, then assign), and leaving on `close`;
//! - [`fetcher`]: the fetch task, prefetching into a bounded channel, with
//!   backoff per failing partition;
//! - [`offsets`]: where an assigned partition starts, commits, and the
//!   auto-commit task;
//! - [`state`]: the bookkeeping those share (membership, offsets per
//!   partition), free of I/O and unit-tested.
//!
//! The tasks run on a [`TaskTracker`] and stop when the consumer's
//! [`CancellationToken`] is cancelled (by `close`, or by dropping the
//! consumer); each task future is dropped at its next await point then.

mod builder;
mod fetcher;
mod membership;
mod offsets;
mod state;

pub use builder::ConsumerBuilder;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::batch::OwnedHeader;
use sluice_protocol::client::{ClientError, Connection};
use sluice_protocol::routing::Router;
use sluice_protocol::TopicPartition;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ConsumerError;
use state::{Chunk, Progress, Revocations, State, Taken};

/// Where to start in a partition with no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still stored.
    #[default]
    Earliest,
    /// Only records written from now on.
    Latest,
}

/// A change of the partitions this consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentEvent {
    /// These partitions were given to this consumer.
    Assigned(Vec<(String, u32)>),
    /// These partitions were released to the group: by `poll` (after the
    /// auto-commit of what was processed, when auto-commit is on), or lost
    /// without a commit (the group forgot this member, or no `poll` came
    /// within the session timeout of the revocation).
    Revoked(Vec<(String, u32)>),
}

/// What [`Consumer::poll_event`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// Records (perhaps none, when the timeout passed).
    Records(Vec<ConsumerRecord>),
    /// The group is taking these partitions (Kafka's
    /// `onPartitionsRevoked`): no more of their records are handed out;
    /// commit what was processed of them now. They are released to the
    /// group at the next `poll` or `poll_event`, after the auto-commit of
    /// what was processed (auto-commit mode).
    Revoked(Vec<(String, u32)>),
}

/// One record, its key and value sharing the fetched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<OwnedHeader>,
}

/// What the application's calls and the tasks share.
#[derive(Debug)]
struct Inner {
    /// The settings, as built.
    config: ConsumerBuilder,
    /// Partition leaders and a connection per broker.
    router: Router,
    /// Membership and partitions; locked only for synchronous steps.
    state: Mutex<State>,
    /// Fetched chunks waiting for `poll` (the prefetch).
    chunks: tokio::sync::Mutex<mpsc::Receiver<Chunk>>,
    /// The assignment changed or a partition was sought: fetch again now.
    wake_fetcher: Notify,
    /// Heartbeat now rather than after the interval.
    wake_heartbeat: Notify,
    /// A partition is being revoked: a waiting `poll` settles it now.
    revoking: Notify,
    /// Cancelled when the consumer closes or is dropped: the tasks stop.
    shutdown: CancellationToken,
    /// Assignment changes for the application.
    events: broadcast::Sender<AssignmentEvent>,
}

/// Partitions as the public api names them.
fn names(tps: &[TopicPartition]) -> Vec<(String, u32)> {
    tps.iter().cloned().map(Into::into).collect()
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The topics this consumer reads (subscribed or assigned), for metadata.
    fn topics(&self) -> Vec<String> {
        let mut topics = self.config.topics.clone();
        topics.extend(self.config.assignment.iter().map(|tp| tp.topic.clone()));
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    /// Sends a group request (heartbeat, commit, offset fetch) to the
    /// group's coordinator (see `sluice_protocol::routing`). A failure
    /// that may mean it moved makes the next call look it up again.
    async fn group_call<R: sluice_protocol::api::Request>(
        &self,
        request: &R,
    ) -> Result<R::Response, ConsumerError> {
        let (id, conn): (u64, Connection) = self.router.coordinator(&self.topics()).await?;
        let result = conn.call(request).await;
        if let Err(e) = &result {
            self.router.report_group(id, e);
        }
        Ok(result?)
    }

    /// Refetches partition leaders when they are older than
    /// `metadata_max_age` or known to be stale.
    async fn refresh_routes(&self) -> Result<(), ClientError> {
        let age = self.config.metadata_max_age;
        if !self.router.cache().needs_refresh(std::time::Instant::now(), age) {
            return Ok(()); // the common case: no allocation
        }
        self.router.refresh_if_needed(&self.topics(), self.config.metadata_max_age).await
    }

    /// Releases the revoked partitions a poll may release now (committing
    /// what was processed of them first, in auto-commit mode) and returns
    /// those to announce instead, if any.
    async fn settle_revocations(&self, announce: bool) -> Option<Vec<(String, u32)>> {
        let Revocations { release, announce } = {
            let mut state = self.state();
            if !state.revoking() {
                return None;
            }
            state.revocations(announce)
        };
        if !release.is_empty() {
            if self.config.auto_commit {
                if let Err(e) = self.commit(Progress::Processed, Some(&release)).await {
                    tracing::warn!(error = %e, "commit before revocation failed");
                }
            }
            self.state().revoke(&release);
            let _ = self.events.send(AssignmentEvent::Revoked(names(&release)));
            self.wake_heartbeat.notify_one(); // tell the group at once
        }
        (!announce.is_empty()).then(|| names(&announce))
    }

    /// Reads `tp` from `offset` next (only while at `only_epoch`, if given).
    fn seek(&self, tp: &TopicPartition, offset: u64, only_epoch: Option<u64>) {
        self.state().seek(tp, offset, only_epoch);
        self.wake_fetcher.notify_one();
    }
}

/// An asynchronous consumer.
#[derive(Debug)]
pub struct Consumer {
    inner: Arc<Inner>,
    /// The heartbeat, fetch and auto-commit tasks.
    tasks: TaskTracker,
}

impl Consumer {
    /// A builder with documented defaults.
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder::default()
    }

    /// The next records (one or more partitions' worth), waiting at most
    /// `timeout`; empty when none arrived. Records handed out by the
    /// previous call count as processed from now on.
    ///
    /// Partitions the group revokes are released only here (never behind
    /// the application's back between polls): at the start of a call, or
    /// while it waits with nothing handed out yet, after the auto-commit of
    /// what was processed (auto-commit mode). Without auto-commit, commit
    /// before polling again, or use [`Consumer::poll_event`] to hear of a
    /// revocation before it happens.
    ///
    /// # Errors
    ///
    /// [`ConsumerError::Closed`] after `close`. A partition whose fetches
    /// fail is reported here, naming it and the offset (see
    /// [`ConsumerError::position`]) — [`ConsumerError::Fetch`] for the
    /// broker's code (`CORRUPT_BATCH` at once, a retriable code after
    /// repeated failures), [`ConsumerError::CorruptBatch`] for a batch that
    /// failed its CRC here — while other partitions keep flowing and the
    /// failing one is refetched with backoff. To skip a corrupt batch,
    /// `seek` past the offset (`offset + 1`; repeat while the error names
    /// the same batch).
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        match self.poll_inner(timeout, false).await? {
            Polled::Records(records) => Ok(records),
            // Announced only to poll_event: nothing was handed out.
            Polled::Revoked(_) => Ok(Vec::new()),
        }
    }

    /// As [`Consumer::poll`], but a revocation is announced first (like
    /// Kafka's `ConsumerRebalanceListener`): [`Polled::Revoked`] names the
    /// partitions the group takes; the application commits what it
    /// processed of them (`commit()` or `commit_offsets`), and the next
    /// call releases them to the group. So an application that processes,
    /// then commits, never hands a processed record to the next owner
    /// uncommitted, and never loses one it did not process.
    ///
    /// # Errors
    ///
    /// As [`Consumer::poll`].
    pub async fn poll_event(&self, timeout: Duration) -> Result<Polled, ConsumerError> {
        self.poll_inner(timeout, true).await
    }

    async fn poll_inner(&self, timeout: Duration, announce: bool) -> Result<Polled, ConsumerError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ConsumerError::Closed);
        }
        if let Some(e) = self.inner.state().begin_poll() {
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.chunks.lock().await;
        let mut out = Vec::new();
        loop {
            let chunk = if out.is_empty() {
                if let Some(revoked) = self.inner.settle_revocations(announce).await {
                    return Ok(Polled::Revoked(revoked));
                }
                tokio::select! {
                    biased;
                    () = self.inner.revoking.notified() => continue,
                    r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                        Ok(Some(c)) => c,
                        Ok(None) => return Err(ConsumerError::Closed),
                        Err(_) => return Ok(Polled::Records(out)),
                    },
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(_) => return Ok(Polled::Records(out)),
                }
            };
            let mut state = self.inner.state();
            match state.take(chunk, &mut out) {
                Taken::Records | Taken::Stale => {}
                Taken::Failure(error) if out.is_empty() => return Err(error),
                Taken::Failure(error) => {
                    state.defer(error);
                    return Ok(Polled::Records(out));
                }
            }
        }
    }

    /// Commits everything handed out by `poll` so far (the application has
    /// processed it).
    ///
    /// # Errors
    ///
    /// [`ConsumerError::Client`] when the broker cannot be reached,
    /// [`ConsumerError::Commit`] when it refused some offsets.
    pub async fn commit(&self) -> Result<(), ConsumerError> {
        self.inner.commit(Progress::Delivered, None).await
    }

    /// Commits exactly these offsets (the next offset to read, per
    /// partition); other partitions are left alone.
    ///
    /// # Errors
    ///
    /// As [`Consumer::commit`].
    pub async fn commit_offsets<T: Into<TopicPartition>>(
        &self,
        offsets: impl IntoIterator<Item = (T, u64)>,
    ) -> Result<(), ConsumerError> {
        let offsets = offsets.into_iter().map(|(tp, offset)| (tp.into(), offset)).collect();
        self.inner.commit_exact(offsets).await
    }

    /// Reads `partition` from `offset` next (and forgets its fetch failures).
    pub fn seek(&self, topic: &str, partition: u32, offset: u64) {
        self.inner.seek(&TopicPartition::new(topic, partition), offset, None);
    }

    /// The partitions this consumer reads now, in order.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        names(&self.inner.state().assignment())
    }

    /// The committed offset of each assigned partition, as this consumer knows it.
    pub fn committed(&self) -> HashMap<(String, u32), u64> {
        self.inner.state().committed().map(|(tp, offset)| (tp.clone().into(), offset)).collect()
    }

    /// Assignment changes, from now on.
    pub fn assignment_events(&self) -> broadcast::Receiver<AssignmentEvent> {
        self.inner.events.subscribe()
    }

    /// Commits what was handed out (auto-commit mode), leaves the group so
    /// its partitions move at once, and stops the tasks. A second call does
    /// nothing.
    ///
    /// # Errors
    ///
    /// The auto-commit's failure (as [`Consumer::commit`]); the consumer is
    /// closed and has left the group all the same.
    pub async fn close(&self) -> Result<(), ConsumerError> {
        if !self.tasks.close() {
            return Ok(()); // closed already
        }
        self.inner.shutdown.cancel();
        let committed = if self.inner.config.auto_commit {
            self.inner.commit(Progress::Delivered, None).await
        } else {
            Ok(())
        };
        self.inner.leave().await;
        self.tasks.wait().await;
        committed
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Dropped without close(): stop the tasks; the session times out.
        self.inner.shutdown.cancel();
    }
}
