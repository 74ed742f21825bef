//! A clustered broker's handle on its controller (DESIGN.md §10,
//! docs/cluster.md): the controller node, this node's cluster settings,
//! and the controller state as last made true locally by the reconcile
//! loop ([`crate::reconcile`]).
//!
//! Invariants:
//! - [`ClusterHandle::state`] is the state the reconcile loop finished
//!   applying: every topic in it exists locally (where this node holds a
//!   replica) with its partitions' roles set, so an admin call that waited
//!   for it ([`ClusterHandle::propose`]) can answer and the client's next
//!   request sees the change on this broker.
//! - Every admin change of a clustered broker goes through
//!   [`ClusterHandle::propose`]: nothing creates or deletes a topic
//!   locally except the reconcile loop.
//!
//! This module depends on the controller and the error types only (and the
//! offsets topic's name), not on the broker, so the broker can hold a
//! handle.

pub mod admin;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::node::{ClusterError, ControllerNode};
use crate::cluster::state::{BrokerId, Command, CommandError, ControllerState, Outcome};
use crate::config::ClusterSettings;
use crate::errors::BrokerError;
use crate::replication::ReplicaManager;

/// How long an admin call waits for the controller (an election included)
/// and then for the reconcile loop to apply its command here.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between tries while the controller has no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A clustered broker's controller and its reconciled state.
#[derive(Debug)]
pub struct ClusterHandle {
    /// The controller node this broker embeds; taken at shutdown.
    node: std::sync::RwLock<Option<Arc<ControllerNode>>>,
    /// This node's cluster settings (`--node-id`, `--peers`, ...).
    pub settings: ClusterSettings,
    /// Partition replication: roles, follower fetchers, the leaders' ISR.
    pub replicas: Arc<ReplicaManager>,
    /// The controller state the reconcile loop last applied here.
    reconciled: watch::Sender<Arc<ControllerState>>,
    /// The lease end this broker's first accepted registration carried
    /// (0 until then): see [`ClusterHandle::caught_up`].
    first_lease: AtomicU64,
}

impl ClusterHandle {
    /// A handle whose reconciled state is empty until the loop runs.
    pub fn new(
        node: Arc<ControllerNode>,
        settings: ClusterSettings,
        replicas: Arc<ReplicaManager>,
    ) -> Arc<Self> {
        let (reconciled, _) = watch::channel(Arc::new(ControllerState::default()));
        Arc::new(Self {
            node: std::sync::RwLock::new(Some(node)),
            settings,
            replicas,
            reconciled,
            first_lease: AtomicU64::new(0),
        })
    }

    /// The controller node.
    ///
    /// # Errors
    /// `ControllerNotAvailable` once it was shut down.
    pub fn node(&self) -> Result<Arc<ControllerNode>, BrokerError> {
        let node = self.node.read().map_err(|_| BrokerError::Internal("controller lock poisoned".into()))?;
        node.clone().ok_or_else(|| BrokerError::ControllerNotAvailable("the controller was shut down".into()))
    }

    /// Stops the controller node once nothing else holds it (the liveness
    /// and reconcile loops stopped first; an admin call in flight is
    /// waited for up to [`ADMIN_TIMEOUT`]).
    pub async fn shutdown(&self) {
        self.replicas.shutdown();
        let taken = self.node.write().ok().and_then(|mut n| n.take());
        let Some(mut node) = taken else { return };
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            match Arc::try_unwrap(node) {
                Ok(owned) => {
                    if let Err(e) = owned.shutdown().await {
                        tracing::warn!(error = %e, "controller shutdown");
                    }
                    return;
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    node = shared;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => {
                    tracing::warn!("controller still in use at shutdown; it stops with the process");
                    return;
                }
            }
        }
    }

    /// The liveness loop's call after every accepted registration or
    /// heartbeat with the lease end it carried: renews the leaders' lease
    /// and remembers the first one.
    pub fn renewed(&self, lease_until_ms: u64) {
        self.replicas.set_lease_until(lease_until_ms);
        let _ = self.first_lease.compare_exchange(0, lease_until_ms, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether `state` (this node's applied controller state) is at least
    /// as new as this broker's registration since it started: the
    /// registration was committed after everything the controller had
    /// committed before it, so a state that shows it shows all of that.
    /// A restarting broker's state machine replays its log from an older
    /// point; acting on such a state would delete topics created since,
    /// or lead at an epoch long superseded. The reconcile loop waits for
    /// this.
    pub fn caught_up(&self, state: &ControllerState) -> bool {
        let first = self.first_lease.load(Ordering::Acquire);
        first > 0 && state.brokers.get(&self.node_id()).is_some_and(|b| b.lease_until_ms >= first)
    }

    /// The controller leader this node knows of.
    pub fn leader(&self) -> Option<BrokerId> {
        self.node().ok().and_then(|n| n.leader())
    }

    /// This broker's node id.
    pub fn node_id(&self) -> BrokerId {
        self.settings.node_id
    }

    /// The controller state as applied locally by the reconcile loop.
    pub fn state(&self) -> Arc<ControllerState> {
        Arc::clone(&self.reconciled.borrow())
    }

    /// The reconcile loop's call once local state matches `state`.
    pub fn publish(&self, state: Arc<ControllerState>) {
        self.reconciled.send_replace(state);
    }

    /// The group coordinator: the leader of partition 0 of the internal
    /// offsets topic (`__sluice_offsets`) in the reconciled state; `None`
    /// while that topic does not exist yet or its partition is offline.
    pub fn coordinator(&self) -> Option<BrokerId> {
        let state = self.state();
        let topic = state.topics.get(crate::groups::offsets_topic::OFFSETS_TOPIC)?;
        topic.partitions.first()?.leader
    }

    /// Proposes `cmd` to the controller (forwarded to its leader, retried
    /// through an election until [`ADMIN_TIMEOUT`]), then waits until the
    /// reconcile loop has applied a state for which `done` holds, so the
    /// change is visible on this broker when the call returns.
    ///
    /// # Errors
    /// The command's refusal as the matching broker error;
    /// `ControllerNotAvailable` when no controller leader answers in time
    /// or the change does not reach this broker in time.
    pub async fn propose(
        &self,
        cmd: Command,
        done: impl Fn(&ControllerState, &Outcome) -> bool,
    ) -> Result<Outcome, BrokerError> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        let what = cmd.to_string();
        let outcome = loop {
            match self.node()?.propose_anywhere(cmd.clone()).await {
                Ok(Ok(outcome)) => break outcome,
                Ok(Err(refused)) => return Err(refusal(refused)),
                Err(e @ (ClusterError::NotLeader { .. } | ClusterError::Peer(_))) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BrokerError::ControllerNotAvailable(format!("{what}: {e}")));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(BrokerError::ControllerNotAvailable(format!("{what}: {e}"))),
            }
        };
        let mut rx = self.reconciled.subscribe();
        let applied = tokio::time::timeout_at(deadline, rx.wait_for(|s| done(s, &outcome))).await;
        match applied {
            Ok(Ok(_)) => Ok(outcome),
            _ => Err(BrokerError::ControllerNotAvailable(format!(
                "{what}: applied by the controller but not yet on this broker"
            ))),
        }
    }
}

impl ClusterHandle {
    /// Adds node `id` at `peer_addr` to the cluster as a non-voting member
    /// (`sluice cluster add-node`), through the controller leader, retried
    /// through an election until [`ADMIN_TIMEOUT`].
    ///
    /// # Errors
    /// `InvalidRequest` for a voter's id or an empty address;
    /// `ControllerNotAvailable` when no controller leader answers in time.
    pub async fn add_node(&self, id: BrokerId, peer_addr: &str) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            match self.node()?.add_node(id, peer_addr).await {
                Ok(()) => return Ok(()),
                Err(ClusterError::Refused(why)) => return Err(BrokerError::InvalidRequest(why)),
                Err(e @ (ClusterError::NotLeader { .. } | ClusterError::Peer(_))) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BrokerError::ControllerNotAvailable(format!("add node {id}: {e}")));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(BrokerError::ControllerNotAvailable(format!("add node {id}: {e}"))),
            }
        }
    }

    /// Whether node `id` votes in the controller quorum.
    pub fn is_voter(&self, id: BrokerId) -> bool {
        self.node().is_ok_and(|n| n.is_voter(id))
    }
}

/// The broker error for a command the controller refused.
pub fn refusal(e: CommandError) -> BrokerError {
    match e {
        CommandError::TopicExists(name) => BrokerError::TopicAlreadyExists(name),
        CommandError::UnknownTopic(name) => BrokerError::UnknownTopic(name),
        CommandError::InvalidReplicationFactor { requested, live } => BrokerError::InvalidReplicationFactor {
            asked: u32::from(requested),
            why: format!("{live} live brokers"),
        },
        CommandError::InvalidPartitions => BrokerError::InvalidConfig(e.to_string()),
        CommandError::PartitionsNotGrown { .. } => BrokerError::InvalidConfig(e.to_string()),
        other => BrokerError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_the_client_errors() {
        use sluice_protocol::ErrorCode;
        let rf = refusal(CommandError::InvalidReplicationFactor { requested: 4, live: 3 });
        assert_eq!(rf.code(), ErrorCode::InvalidReplicationFactor, "{rf}");
        assert!(rf.to_string().contains("3 live brokers"), "{rf}");
        let exists = refusal(CommandError::TopicExists("t".into()));
        assert_eq!(exists.code(), ErrorCode::TopicAlreadyExists);
        let unknown = refusal(CommandError::UnknownTopic("t".into()));
        assert_eq!(unknown.code(), ErrorCode::UnknownTopic);
    }
}
