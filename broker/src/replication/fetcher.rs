//! A follower's fetcher: one task per followed partition, for one role
//! (leader and epoch); cancelled when the role changes.
//!
//! Per connection to the leader's peer address (replication channel):
//! first OffsetForLeaderEpoch(own last epoch) and, per KIP-279, truncation
//! to min(the leader's end offset for the epoch it answers, this log's own
//! end offset for that epoch); then fetches from the log end, carrying its
//! node id, the epoch it believes and its durable offset, appends each
//! batch verbatim, lets the partition's flusher group-commit, and sends
//! the next fetch at once, the flush running meanwhile; a fetch sent while
//! a flush is pending waits for data at most 1 ms, so the one after the
//! flush reports it (a durable acknowledgement on the leader costs about
//! one follower flush plus one round trip, and consecutive rounds overlap
//! instead of queueing behind each flush). A fetch
//! below the leader's log start (its retention deleted what this replica
//! would fetch next) empties this log and starts it over there. Any
//! failure drops the connection and dials again with backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sluice_protocol::batch::BatchHeader;
use sluice_protocol::{ErrorCode, WireError};
use tokio_util::sync::CancellationToken;

use super::wire::{EpochEndOffset, OffsetForLeaderEpoch, ReplicaFetch, ReplicaRequest, ReplicaResponse};
use super::{ReplicaManager, Role};
use crate::cluster::peer_wire::{self, Channel, Hello, PeerConn, PeerError, PEER_MAGIC, PEER_VERSION};
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::storage::StorageError;

/// Longest wait to connect and handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack on top of the fetch wait before an answer is overdue.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Longest reconnect backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why a fetch session ended.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("malformed answer: {0}")]
    Wire(#[from] WireError),
    #[error("the leader answered {0:?}")]
    Leader(ErrorCode),
    #[error("the leader answered the wrong kind of response")]
    Unexpected,
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("truncation task failed: {0}")]
    Join(String),
}

/// Runs the fetcher for `role` (a follower role) until `cancel`.
pub(super) async fn run(mgr: Arc<ReplicaManager>, p: Arc<Partition>, role: Role, cancel: CancellationToken) {
    let Role::Follower { epoch, leader, leader_peer_addr } = role else { return };
    let mut backoff = mgr.cfg.reconnect_backoff;
    loop {
        let mut fetched = false;
        let session =
            Session { mgr: &mgr, p: &p, epoch, leader, fetched: &mut fetched, idle_while_flushing: 0 };
        let result = tokio::select! {
            r = session.run(&leader_peer_addr) => r,
            () = cancel.cancelled() => return,
            () = p.cancel.cancelled() => return,
        };
        if let Err(e) = result {
            tracing::debug!(topic = %p.topic, partition = p.index, leader, epoch, error = %e, "replica fetch session ended");
        }
        if fetched {
            backoff = mgr.cfg.reconnect_backoff;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = p.cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Session<'a> {
    mgr: &'a ReplicaManager,
    p: &'a Arc<Partition>,
    epoch: u32,
    leader: u64,
    fetched: &'a mut bool,
    /// Fetches in a row that brought nothing while this broker's own
    /// flush was pending (the next one waits twice as long).
    idle_while_flushing: u32,
}

/// The first wait of a fetch sent while this broker's flush is pending:
/// its answer reports the flush soon after it lands.
const FLUSH_POLL: Duration = Duration::from_millis(1);

async fn call(
    conn: &mut PeerConn,
    req: &ReplicaRequest,
    limit: Duration,
) -> Result<ReplicaResponse, FetchError> {
    conn.send(req.encode()).await.map_err(PeerError::from)?;
    let frame = tokio::time::timeout(limit, conn.next()).await.map_err(|_| PeerError::Timeout(limit))?;
    let frame = frame.ok_or(PeerError::Closed)?.map_err(PeerError::from)?;
    Ok(ReplicaResponse::decode(frame)?)
}

impl Session<'_> {
    async fn run(mut self, addr: &str) -> Result<(), FetchError> {
        let cfg = &self.mgr.cfg;
        let hello = Hello {
            magic: PEER_MAGIC.into(),
            version: PEER_VERSION,
            cluster_id: cfg.cluster_id.clone(),
            from: cfg.node_id,
            to: self.leader,
            channel: Channel::Replication,
        };
        let mut conn = peer_wire::dial(addr, &hello, CONNECT_TIMEOUT).await?;
        self.truncate(&mut conn).await?;
        loop {
            self.fetch_once(&mut conn).await?;
        }
    }

    /// KIP-279: cut this log back to where it agrees with the leader's.
    async fn truncate(&mut self, conn: &mut PeerConn) -> Result<(), FetchError> {
        let log = self.p.log();
        if log.log_end_offset() == log.log_start_offset() {
            return Ok(());
        }
        let req = ReplicaRequest::OffsetForLeaderEpoch(OffsetForLeaderEpoch {
            topic: self.p.topic.to_string(),
            partition: self.p.index,
            epoch: log.last_epoch(),
        });
        let ReplicaResponse::OffsetForLeaderEpoch(EpochEndOffset { error, epoch, end_offset }) =
            call(conn, &req, CONNECT_TIMEOUT + ANSWER_SLACK).await?
        else {
            return Err(FetchError::Unexpected);
        };
        if error != ErrorCode::None {
            return Err(FetchError::Leader(error));
        }
        let (_, own_end) = log.end_offset_for_epoch(epoch);
        let target = end_offset.min(own_end);
        tracing::debug!(topic = %self.p.topic, partition = self.p.index, leader = self.leader, epoch = self.epoch, own_last_epoch = log.last_epoch(), answered_epoch = epoch, leader_end = end_offset, own_end, target, log_end_offset = log.log_end_offset(), durable = log.durable_offset(), "KIP-279 truncation check");
        if target < log.log_end_offset() {
            drop(log);
            let p = Arc::clone(self.p);
            tokio::task::spawn_blocking(move || p.truncate_live(target))
                .await
                .map_err(|e| FetchError::Join(e.to_string()))??;
        }
        Ok(())
    }

    /// One fetch: asks from the log end, reporting what this broker has
    /// made durable, and appends what comes. It does not wait for its own
    /// flush of those batches: the next fetch goes at once, so the
    /// follower's fsync overlaps the next round trip and append, and the
    /// fetch after the flush reports it. While a flush is pending a fetch
    /// waits at most 1 ms for data (doubling while nothing comes), so the
    /// durable offset reaches the leader soon after the flush even when no
    /// more data follows; otherwise it long-polls for `fetch_max_wait`.
    async fn fetch_once(&mut self, conn: &mut PeerConn) -> Result<(), FetchError> {
        let cfg = &self.mgr.cfg;
        let log = self.p.log();
        let offset = log.log_end_offset();
        let durable = log.local_high_watermark();
        let wait = if durable < offset {
            FLUSH_POLL.saturating_mul(1 << self.idle_while_flushing.min(16)).min(cfg.fetch_max_wait)
        } else {
            cfg.fetch_max_wait
        };
        let req = ReplicaRequest::Fetch(ReplicaFetch {
            topic: self.p.topic.to_string(),
            partition: self.p.index,
            replica_id: cfg.node_id,
            leader_epoch: self.epoch,
            fetch_offset: offset,
            durable_offset: durable,
            max_bytes: cfg.fetch_max_bytes,
            max_wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        });
        tracing::debug!(topic = %self.p.topic, partition = self.p.index, epoch = self.epoch, fetch_offset = offset, durable, log_durable = log.durable_offset(), "replica fetch");
        drop(log);
        let ReplicaResponse::Fetch(resp) = call(conn, &req, wait + ANSWER_SLACK).await? else {
            return Err(FetchError::Unexpected);
        };
        if resp.error == ErrorCode::OffsetOutOfRange && resp.log_start_offset > offset {
            // The leader no longer holds what comes next here (its
            // retention deleted it): start over at its log start.
            let (p, start) = (Arc::clone(self.p), resp.log_start_offset);
            tokio::task::spawn_blocking(move || p.reset_live(start))
                .await
                .map_err(|e| FetchError::Join(e.to_string()))??;
            return Ok(());
        }
        if resp.error != ErrorCode::None {
            return Err(FetchError::Leader(resp.error));
        }
        *self.fetched = true;
        let end = append_all(self.p, resp.batches)?.unwrap_or(offset);
        self.p.set_leader_high_watermark(resp.high_watermark);
        self.idle_while_flushing =
            if end == offset && durable < offset { self.idle_while_flushing + 1 } else { 0 };
        Ok(())
    }
}

/// Appends each batch of `batches` verbatim; the new log end, if any.
fn append_all(p: &Partition, mut batches: Bytes) -> Result<Option<u64>, FetchError> {
    let mut end = None;
    while !batches.is_empty() {
        let header = BatchHeader::parse(&batches).map_err(BrokerError::CorruptBatch)?;
        let len = header.total_len();
        if len > batches.len() {
            return Err(BrokerError::CorruptBatch(sluice_protocol::batch::BatchError::TooShort {
                have: batches.len(),
                need: len,
            })
            .into());
        }
        let info = p.append_replica(batches.split_to(len))?;
        end = Some(info.last_offset + 1);
    }
    Ok(end)
}
