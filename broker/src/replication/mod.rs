//! Replication of partition data between brokers (DESIGN.md §10,
//! docs/cluster.md): each partition of a clustered broker has a [`Role`]
//! that the broker's reconcile loop sets from the controller's state.
//!
//! Interface the rest of the broker relies on (keep it):
//! - [`Role`]: what a partition is on this broker; [`Role::Single`] is the
//!   single-node broker (no cluster flags), which behaves as before
//!   replication existed.
//! - `Partition::set_role` / `Partition::role`: the reconcile loop sets
//!   it (through the replica manager once it exists, which also starts or
//!   stops the follower's fetcher).
//! - `Partition::check_writable(durable)`: every produce path (native and
//!   Kafka) calls it before appending; `NotLeader` unless this broker
//!   leads, `NotEnoughReplicas` for a durable write when the ISR is smaller
//!   than `min_insync_replicas`.
//! - `Partition::check_readable()`: every consumer fetch path calls it;
//!   `NotLeader` unless this broker leads (followers serve only replicas).
//! - `Partition::wait_durable`: for a leader with followers it waits until
//!   the high watermark (the minimum durable offset over the ISR) covers
//!   the batch.

use std::sync::{PoisonError, RwLock};

use crate::errors::BrokerError;
use crate::partition::Partition;

/// A broker (and controller node) id.
pub type NodeId = u64;

/// What a partition is on this broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Role {
    /// A single-node broker: leader of everything at epoch 0, no replicas.
    #[default]
    Single,
    /// This broker leads the partition at `epoch`.
    Leader {
        /// The leader epoch (stamped into every batch appended).
        epoch: u32,
        /// Every replica, this broker included, in preference order.
        replicas: Vec<NodeId>,
        /// The in-sync replicas, this broker included.
        isr: Vec<NodeId>,
        /// Durable writes need at least this many in the ISR.
        min_insync_replicas: usize,
    },
    /// Another broker leads; this one fetches from it.
    Follower {
        /// The leader epoch this broker believes current.
        epoch: u32,
        /// The leader's node id.
        leader: NodeId,
        /// The leader's peer address (`--peer-listen`), fetched from.
        leader_peer_addr: String,
    },
    /// No live in-sync replica: nobody leads; writes and reads refused.
    Offline {
        /// The epoch the controller moved it offline at.
        epoch: u32,
    },
}

impl Role {
    /// The leader epoch this role carries (0 for a single node).
    pub fn epoch(&self) -> u32 {
        match self {
            Role::Single => 0,
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } | Role::Offline { epoch } => *epoch,
        }
    }
}

/// A partition's role, shared between the reconcile loop and the request
/// paths.
#[derive(Debug, Default)]
pub struct RoleCell(RwLock<Role>);

impl RoleCell {
    /// The role now.
    pub fn get(&self) -> Role {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the role.
    pub fn set(&self, role: Role) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = role;
    }
}

impl Partition {
    /// The partition's role on this broker.
    pub fn role(&self) -> Role {
        self.role.get()
    }

    /// Sets the partition's role (the reconcile loop's call).
    pub fn set_role(&self, role: Role) {
        self.role.set(role);
    }

    /// Refuses a write unless this broker leads the partition, and a
    /// `durable` one when the ISR is under `min_insync_replicas`.
    ///
    /// # Errors
    /// `NotLeader`, `NotEnoughReplicas`.
    pub fn check_writable(&self, durable: bool) -> Result<(), BrokerError> {
        match self.role() {
            Role::Single => Ok(()),
            Role::Leader { isr, min_insync_replicas, .. } => {
                if durable && isr.len() < min_insync_replicas {
                    return Err(BrokerError::NotEnoughReplicas {
                        topic: self.topic.to_string(),
                        partition: self.index,
                        isr: isr.len(),
                        min: min_insync_replicas,
                    });
                }
                Ok(())
            }
            Role::Follower { .. } | Role::Offline { .. } => Err(self.not_leader()),
        }
    }

    /// Refuses a consumer's read unless this broker leads the partition.
    ///
    /// # Errors
    /// `NotLeader`.
    pub fn check_readable(&self) -> Result<(), BrokerError> {
        match self.role() {
            Role::Single | Role::Leader { .. } => Ok(()),
            Role::Follower { .. } | Role::Offline { .. } => Err(self.not_leader()),
        }
    }

    fn not_leader(&self) -> BrokerError {
        BrokerError::NotLeader { topic: self.topic.to_string(), partition: self.index }
    }
}
