//! The leader side of the replication channel: answers followers' fetches
//! with batches as stored (zero-copy `Bytes` of the log), its high
//! watermark and log start offset, and their OffsetForLeaderEpoch
//! questions. Each fetch records the follower's progress, which moves the
//! high watermark.
//!
//! Fencing: a fetch at an older epoch than this leader's is refused with
//! `FencedLeaderEpoch`; one at a newer epoch means this leader is stale
//! (`Partition::mark_stale`) and is refused with `NotLeaderOrFollower`.
//! A malformed frame closes the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sluice_protocol::ErrorCode;

use super::wire::{
    EpochEndOffset, OffsetForLeaderEpoch, ReplicaFetch, ReplicaFetchResponse, ReplicaRequest, ReplicaResponse,
};
use super::{ReplicaManager, Role};
use crate::cluster::peer_server::{ReplicationService, IDLE_TIMEOUT};
use crate::cluster::peer_wire::{PeerConn, PeerError};
use crate::partition::Partition;
use crate::storage::StorageError;

/// Longest a fetch is held waiting for data, whatever the follower asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(10);

impl ReplicationService for ReplicaManager {
    fn serve<'a>(
        &'a self,
        conn: &'a mut PeerConn,
        from: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PeerError>> + Send + 'a>> {
        Box::pin(async move {
            loop {
                let frame = tokio::time::timeout(IDLE_TIMEOUT, conn.next())
                    .await
                    .map_err(|_| PeerError::Timeout(IDLE_TIMEOUT))?
                    .ok_or(PeerError::Closed)??;
                let req = ReplicaRequest::decode(frame).map_err(|e| {
                    PeerError::Refused(format!("malformed replication frame from node {from}: {e}"))
                })?;
                let resp = match req {
                    ReplicaRequest::Fetch(f) if f.replica_id == from => {
                        ReplicaResponse::Fetch(self.answer_fetch(f).await)
                    }
                    ReplicaRequest::Fetch(f) => {
                        return Err(PeerError::Refused(format!(
                            "node {from} fetched as node {}",
                            f.replica_id
                        )));
                    }
                    ReplicaRequest::OffsetForLeaderEpoch(o) => {
                        ReplicaResponse::OffsetForLeaderEpoch(self.answer_epoch(&o))
                    }
                };
                // Vectored, so the batches go from the log to the socket
                // without a copy (Framed's buffer stays empty: every answer
                // on this channel is written this way).
                sluice_protocol::io::write_frame(conn.get_mut(), &resp.chunks())
                    .await
                    .map_err(|e| PeerError::Frame(e.into()))?;
            }
        })
    }
}

fn refused(error: ErrorCode) -> ReplicaFetchResponse {
    ReplicaFetchResponse { error, high_watermark: 0, log_start_offset: 0, batches: Bytes::new() }
}

impl ReplicaManager {
    /// The leader partition a request names, or the error to answer.
    fn led_partition(
        &self,
        topic: &str,
        partition: u32,
        epoch: Option<u32>,
    ) -> Result<Arc<Partition>, ErrorCode> {
        let p = (self.lookup)(topic, partition).ok_or(ErrorCode::UnknownPartition)?;
        let Role::Leader { epoch: mine, .. } = p.role() else {
            return Err(ErrorCode::NotLeaderOrFollower);
        };
        match epoch {
            Some(e) if e < mine => Err(ErrorCode::FencedLeaderEpoch),
            Some(e) if e > mine => {
                p.mark_stale();
                Err(ErrorCode::NotLeaderOrFollower)
            }
            _ => Ok(p),
        }
    }

    async fn answer_fetch(&self, f: ReplicaFetch) -> ReplicaFetchResponse {
        let p = match self.led_partition(&f.topic, f.partition, Some(f.leader_epoch)) {
            Ok(p) => p,
            Err(code) => return refused(code),
        };
        let Role::Leader { replicas, .. } = p.role() else { return refused(ErrorCode::NotLeaderOrFollower) };
        if !replicas.contains(&f.replica_id) || f.replica_id == self.cfg.node_id {
            return refused(ErrorCode::NotLeaderOrFollower);
        }
        p.record_follower_fetch(f.replica_id, f.fetch_offset, f.durable_offset);
        if p.log().log_end_offset() <= f.fetch_offset {
            self.wait_for_data(&p, f.fetch_offset, f.max_wait_ms).await;
        }
        let log = p.log();
        let batches = match log.read_for_replica(f.fetch_offset, f.max_bytes.max(1) as usize) {
            Ok(b) => b,
            Err(StorageError::OffsetOutOfRange { log_start_offset, .. }) => {
                return ReplicaFetchResponse { log_start_offset, ..refused(ErrorCode::OffsetOutOfRange) };
            }
            Err(e) => {
                tracing::warn!(topic = %f.topic, partition = f.partition, error = %e, "replica fetch failed");
                return refused(ErrorCode::StorageError);
            }
        };
        p.record_follower_answer(f.replica_id, log.log_end_offset());
        ReplicaFetchResponse {
            error: ErrorCode::None,
            high_watermark: p.high_watermark(),
            log_start_offset: log.log_start_offset(),
            batches,
        }
    }

    /// Waits until the log grows past `offset`, the role changes, or the
    /// follower's wait (capped) ends.
    async fn wait_for_data(&self, p: &Partition, offset: u64, max_wait_ms: u32) {
        let wait = Duration::from_millis(u64::from(max_wait_ms)).min(MAX_FETCH_WAIT);
        let mut ends = p.watch_log_end();
        let mut roles = p.watch_role();
        let _ = tokio::time::timeout(wait, async {
            loop {
                if *ends.borrow_and_update() > offset || p.log().log_end_offset() > offset {
                    return;
                }
                tokio::select! {
                    r = ends.changed() => if r.is_err() { return },
                    r = roles.changed() => { let _ = r; return },
                    () = self.cancel.cancelled() => return,
                    () = p.cancel.cancelled() => return,
                }
            }
        })
        .await;
    }

    fn answer_epoch(&self, o: &OffsetForLeaderEpoch) -> EpochEndOffset {
        match self.led_partition(&o.topic, o.partition, None) {
            Ok(p) => {
                let (epoch, end_offset) = p.log().end_offset_for_epoch(o.epoch);
                EpochEndOffset { error: ErrorCode::None, epoch: epoch.unwrap_or(-1), end_offset }
            }
            Err(error) => EpochEndOffset { error, epoch: -1, end_offset: 0 },
        }
    }
}
