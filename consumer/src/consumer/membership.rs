//! Group membership: the heartbeat task of a subscribed consumer, and
//! leaving the group on `close`.
//!
//! Each heartbeat reports the partitions this member still owns and gets
//! back its target assignment. Partitions that left the target are marked
//! revoking: no longer fetched nor handed out, but still owned until the
//! application's next `poll` releases them (after it committed what it
//! processed, or the auto-commit did) and wakes this task to tell the
//! group. This task releases a revoked partition itself only when the
//! application holds nothing of it (every record handed out is committed,
//! or none was), or when it was kept revoking past the session timeout
//! (the group reassigned it already; no commit).
//! Partitions new to the target are started ([`super::offsets`]). A
//! broker that no longer knows the member (`UNKNOWN_MEMBER_ID`, e.g. after
//! a session expiry) makes it rejoin with nothing owned.
//!
//! The decisions (what to revoke and add, what fencing loses) are
//! [`State::follow`](super::state::State::follow) and
//! [`State::fenced`](super::state::State::fenced); this module does the I/O
//! around them. The task runs until the consumer's shutdown token is
//! cancelled.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::api::{GroupHeartbeatRequest, GroupHeartbeatResponse, LEAVE_EPOCH};
use sluice_protocol::client::ClientError;
use sluice_protocol::{ErrorCode, TopicPartition, TopicPartitions};

use super::{names, AssignmentEvent, Inner, Progress};
use crate::error::ConsumerError;

/// The heartbeat interval until the broker names one.
const FIRST_INTERVAL: Duration = Duration::from_millis(500);

/// The shortest heartbeat interval taken from the broker.
const MIN_INTERVAL_MS: u32 = 10;

impl Inner {
    /// Heartbeats until shutdown, following the group's assignment.
    pub(super) async fn run_heartbeats(self: Arc<Self>) {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into());
        let mut interval = FIRST_INTERVAL;
        loop {
            let request = self.heartbeat_request(&host);
            let result = self.group_call(&request).await;
            let again_now = match result {
                Ok(resp) => {
                    interval =
                        Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(MIN_INTERVAL_MS)));
                    self.follow(resp).await
                }
                Err(ConsumerError::Client(ClientError::Server {
                    code: ErrorCode::UnknownMemberId, ..
                })) => {
                    self.fenced();
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed; retrying");
                    false
                }
            };
            if !again_now {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = self.wake_heartbeat.notified() => {}
                }
            }
        }
    }

    /// This member's heartbeat, reporting what it owns now.
    fn heartbeat_request(&self, host: &str) -> GroupHeartbeatRequest {
        let state = self.state();
        GroupHeartbeatRequest {
            group: self.config.group.clone().unwrap_or_default(),
            member_id: state.member_id.clone(),
            member_epoch: state.member_epoch,
            client_host: host.to_owned(),
            session_timeout_ms: self.config.session_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            topics: self.config.topics.clone(),
            owned: state.owned(),
        }
    }

    /// Moves to the assignment in `resp`: marks what left it as revoking
    /// (the application's next `poll` releases it), drops revocations kept
    /// past the session timeout, then starts the added partitions. True
    /// when partitions were dropped (heartbeat again now to tell the group).
    async fn follow(&self, resp: GroupHeartbeatResponse) -> bool {
        let target: BTreeSet<TopicPartition> =
            resp.assignment.iter().flat_map(TopicPartitions::split).collect();
        let now = Instant::now();
        let (revoked, idle, added, lost) = {
            let mut state = self.state();
            let (revoked, added) = state.follow(resp.member_id, resp.member_epoch, &target);
            let idle = state.mark_revoking(&revoked, now);
            (revoked, idle, added, state.expire_revocations(now, self.config.session_timeout))
        };
        if revoked.len() > idle.len() {
            self.revoking.notify_one();
        }
        let released = self.release_idle(&idle).await;
        if !lost.is_empty() {
            tracing::warn!(partitions = ?lost, "revoked partitions not released by a poll within the session timeout; lost");
            let _ = self.events.send(AssignmentEvent::Revoked(names(&lost)));
        }
        if let Err(e) = self.start_partitions(added).await {
            tracing::warn!(error = %e, "could not start assigned partitions");
        }
        released || !lost.is_empty()
    }

    /// Releases revoked partitions the application holds nothing of (in
    /// auto-commit mode after committing where they start, when the group
    /// has no offset for them). True when some were released.
    async fn release_idle(&self, idle: &[TopicPartition]) -> bool {
        if idle.is_empty() {
            return false;
        }
        if self.config.auto_commit {
            if let Err(e) = self.commit(Progress::Delivered, Some(idle)).await {
                tracing::warn!(error = %e, "commit before revocation failed");
            }
        }
        self.state().revoke(idle);
        let _ = self.events.send(AssignmentEvent::Revoked(names(idle)));
        true
    }

    /// The group no longer knows this member: every partition is lost
    /// (without a commit: the group may have moved them already).
    fn fenced(&self) {
        let lost = self.state().fenced();
        if !lost.is_empty() {
            let _ = self.events.send(AssignmentEvent::Revoked(names(&lost)));
        }
    }

    /// Leaves the group (a subscribed member that joined), so its
    /// partitions move at once; failures are ignored (the session expires).
    pub(super) async fn leave(&self) {
        let Some(group) = self.config.group.clone().filter(|_| !self.config.topics.is_empty()) else {
            return;
        };
        let member_id = self.state().member_id.clone();
        if member_id.is_empty() {
            return;
        }
        let request = GroupHeartbeatRequest {
            group,
            member_id,
            member_epoch: LEAVE_EPOCH,
            client_host: String::new(),
            session_timeout_ms: 0,
            topics: Vec::new(),
            owned: Vec::new(),
        };
        let _ = self.group_call(&request).await;
    }
}
