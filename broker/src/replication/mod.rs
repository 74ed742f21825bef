//! Replication of partition data between brokers (DESIGN.md §10,
//! docs/cluster.md "Replication"), Kafka-style (KIP-101/279 semantics):
//! each partition of a clustered broker has a [`Role`] that the broker's
//! reconcile loop sets, through [`ReplicaManager::set_role`], from the
//! controller's state.
//!
//! - Leader: stamps its epoch into each batch it appends; serves
//!   followers' fetches on the replication channel of the peer port
//!   (`leader`) with the batches as stored; tracks each follower's durable
//!   offset; its high watermark is the minimum durable offset over the ISR
//!   (itself included) and never decreases; durable acknowledgements wait
//!   for it. It shrinks the ISR (a follower not caught up for
//!   `replica_lag_time_max`) and expands it (a follower whose durable
//!   offset reached the high watermark) by proposing `AlterIsr` to the
//!   controller through an [`IsrChanger`], and uses only the ISR the
//!   controller accepted. A fetch with an older epoch is refused
//!   (`FencedLeaderEpoch`); one with a newer epoch makes this leader stale:
//!   it refuses writes and acknowledgements until its role is updated. A
//!   leader whose own lease lapsed refuses writes.
//! - Follower: a fetcher task per partition (`fetcher`) asks the leader
//!   for the end of its own last epoch (OffsetForLeaderEpoch) and cuts its
//!   log back to where they agree, then fetches from its log end, appends
//!   verbatim, lets the partition's flusher group-commit, and reports its
//!   durable offset in the next fetch as soon as the flush lands.
//! - Single: a single-node broker, as before replication existed.
//!
//! The partition-side rules (high watermark, write checks, verbatim
//! appends, live truncation) live in `crate::partition::replica`; this
//! module holds the manager, the wire frames ([`wire`]) and the tasks.

mod controller;
mod fetcher;
mod leader;
mod manager;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

pub use crate::partition::replica::{FollowerProgress, NodeId, Role};
pub use controller::WeakController;
pub use manager::{LookupFn, ReplicaManager};

/// The replica manager's settings.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// This broker's node id.
    pub node_id: NodeId,
    /// The cluster id presented on replication connections.
    pub cluster_id: String,
    /// A follower not caught up to the leader's log end for this long
    /// leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// Most bytes a follower asks for per fetch.
    pub fetch_max_bytes: u32,
    /// Longest a leader holds a fetch that finds no data.
    pub fetch_max_wait: Duration,
    /// How often a leader checks its followers for ISR changes.
    pub isr_check_interval: Duration,
    /// First reconnect delay of a follower's fetcher (doubling to 1 s).
    pub reconnect_backoff: Duration,
    /// Counts ISR shrinks the controller accepted (the broker's metric).
    pub isr_shrinks: Counter,
    /// Counts ISR expansions the controller accepted (the broker's metric).
    pub isr_expands: Counter,
}

impl ReplicationConfig {
    /// The defaults: lag 10 s, 1 MiB fetches, 500 ms fetch wait, ISR checked
    /// every 250 ms, reconnect after 50 ms.
    pub fn new(node_id: NodeId, cluster_id: &str) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.to_owned(),
            replica_lag_time_max: Duration::from_secs(10),
            fetch_max_bytes: 1 << 20,
            fetch_max_wait: Duration::from_millis(500),
            isr_check_interval: Duration::from_millis(250),
            reconnect_backoff: Duration::from_millis(50),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
        }
    }
}

/// Why an ISR change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrError {
    /// The controller refused it: this broker no longer leads at that
    /// epoch (`FencedLeader`) or the ISR is invalid.
    #[error("ISR change refused: {0}")]
    Refused(String),
    /// The controller could not be reached; retried later.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, for the object-safe [`IsrChanger`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Proposes ISR changes to the controller (`Command::AlterIsr`);
/// implemented by `ControllerNode`, and by tests.
pub trait IsrChanger: Send + Sync {
    /// Asks the controller to set the ISR of `topic`/`partition` to `isr`,
    /// as its leader `leader` at `leader_epoch`. `Ok` once committed.
    fn alter_isr(
        &self,
        topic: &str,
        partition: u32,
        leader: NodeId,
        leader_epoch: u32,
        isr: Vec<NodeId>,
    ) -> BoxFuture<'_, Result<(), IsrError>>;
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_controller;
#[cfg(test)]
mod tests_fence;
#[cfg(test)]
mod tests_isr;
