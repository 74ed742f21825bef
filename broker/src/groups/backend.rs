//! Where the coordinator writes committed offsets, and whether it
//! coordinates at all.
//!
//! - A single node ([`Backend::Local`]) writes the local offsets log
//!   ([`OffsetStore`]) and always coordinates, as before clustering.
//! - A clustered broker ([`Backend::Cluster`]) writes the records to
//!   partition 0 of the replicated internal topic
//!   ([`offsets_topic::OFFSETS_TOPIC`]) through the normal partition append
//!   path, and acknowledges a commit once [`Partition::wait_durable`] says
//!   so (for a replicated leader: the ISR has it). It coordinates only
//!   while it leads that partition: the reconcile loop calls
//!   [`Coordinator::lead_offsets`] when this broker becomes its leader
//!   (which reads the partition's log, up to its end, into the groups
//!   before any group request is answered) and
//!   [`Coordinator::resign_offsets`] when it stops (which drops every
//!   group). Otherwise every group request gets `NotCoordinator`.
//!
//! Invariant: in cluster mode the groups map is non-empty only while
//! [`Lead::Leading`]; an append goes to the partition this broker leads.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;

use super::assign::Tp;
use super::group::Group;
use super::offsets_topic;
use super::store::{self, Committed, OffsetKey, OffsetStore};
use super::{Coordinator, GroupError, Slot};
use crate::errors::BrokerError;
use crate::partition::{Appended, Partition};
use crate::storage::now_ms;

/// How long a commit waits for the offsets partition to make it durable
/// (on every in-sync replica, for a replicated leader).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest batch the coordinator builds (a commit of many partitions).
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Whether a clustered broker coordinates groups now.
#[derive(Debug, Clone, Default)]
pub enum Lead {
    /// Another broker (or none) leads the offsets partition.
    #[default]
    Not,
    /// This broker became its leader and is reading its log.
    Loading,
    /// This broker leads it: commits are appended to it.
    Leading(Arc<Partition>),
}

/// Where committed offsets go.
#[derive(Debug)]
pub enum Backend {
    /// A single node's local offsets log.
    Local(OffsetStore),
    /// A clustered broker: the internal topic's partition, while leading.
    Cluster(RwLock<Lead>),
}

/// An append not yet known durable.
#[derive(Debug)]
pub enum Pending {
    /// Sync the local log up to this offset.
    Local(u64),
    /// Wait for the partition to make this append durable.
    Replicated(Arc<Partition>, Appended),
}

impl Pending {
    /// The log position after the append: later appends have larger ones
    /// (a group keeps an offset only if no later commit overtook it).
    pub fn position(&self) -> u64 {
        match self {
            Pending::Local(to) => *to,
            Pending::Replicated(_, a) => a.info.last_offset + 1,
        }
    }
}

/// A partition error meaning this broker no longer leads the offsets
/// partition, as the group error clients act on (find the coordinator).
fn coordinator_lost(e: BrokerError) -> BrokerError {
    match e {
        BrokerError::NotLeader { .. } | BrokerError::FencedLeaderEpoch { .. } => {
            GroupError::NotCoordinator { why: e.to_string() }.into()
        }
        other => other,
    }
}

/// Runs `future` to completion from blocking code (a blocking thread, or a
/// worker of a multi-threaded runtime, which hands its tasks off first).
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, BrokerError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| BrokerError::Internal("a replicated commit needs the broker's runtime".into()))?;
    Ok(crate::partition::blocking_in_place(|| handle.block_on(future)))
}

impl Backend {
    fn lead(&self) -> Lead {
        match self {
            Backend::Local(_) => Lead::Not,
            Backend::Cluster(lead) => lead.read().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    fn set(&self, to: Lead) {
        if let Backend::Cluster(lead) = self {
            *lead.write().unwrap_or_else(PoisonError::into_inner) = to;
        }
    }

    /// Refuses unless this broker coordinates groups now.
    ///
    /// # Errors
    /// `NotCoordinator` on a clustered broker that does not lead the
    /// offsets partition or is still loading it.
    pub fn check_active(&self) -> Result<(), GroupError> {
        let why = match (self, self.lead()) {
            (Backend::Local(_), _) | (_, Lead::Leading(_)) => return Ok(()),
            (_, Lead::Loading) => "loading the committed offsets",
            (_, Lead::Not) => "another broker leads __sluice_offsets",
        };
        Err(GroupError::NotCoordinator { why: why.to_owned() })
    }

    /// Appends entries (`None` deletes); [`sync`](Self::sync) makes them
    /// durable.
    ///
    /// # Errors
    /// `NotCoordinator` when not leading (a partition's `NotLeader` or
    /// `FencedLeaderEpoch` included); the log's or the partition's refusal
    /// (full disk, a failed sync, too few in-sync replicas).
    pub fn append(&self, entries: &[(OffsetKey, Option<Committed>)]) -> Result<Pending, BrokerError> {
        match self {
            Backend::Local(store) => Ok(Pending::Local(store.append(entries)?)),
            Backend::Cluster(_) => {
                let Lead::Leading(partition) = self.lead() else {
                    return Err(self.check_active().err().map_or_else(
                        || BrokerError::Internal("offsets partition lost".into()),
                        BrokerError::Group,
                    ));
                };
                partition.check_writable(true).map_err(coordinator_lost)?;
                let batch = Bytes::from(store::batch(entries));
                let appended =
                    partition.append(batch, MAX_BATCH_BYTES, now_ms()).map_err(coordinator_lost)?;
                Ok(Pending::Replicated(partition, appended))
            }
        }
    }

    /// Waits until `pending` is durable. Blocking.
    ///
    /// # Errors
    /// The sync's or the partition's failure, or `Timeout` after
    /// [`COMMIT_TIMEOUT`].
    pub fn sync(&self, pending: Pending) -> Result<(), BrokerError> {
        match (self, pending) {
            (Backend::Local(store), Pending::Local(to)) => Ok(store.sync_to(to)?),
            (_, Pending::Replicated(partition, appended)) => {
                if !appended.awaits_flush() {
                    return Ok(());
                }
                block_on(partition.wait_durable(&appended, COMMIT_TIMEOUT))?.map_err(coordinator_lost)
            }
            (Backend::Cluster(_), Pending::Local(_)) => {
                Err(BrokerError::Internal("a local offsets-log append on a clustered broker".into()))
            }
        }
    }

    /// Flushes and closes the local log (nothing for a clustered broker:
    /// its partition closes with the topics). Blocking.
    ///
    /// # Errors
    /// `Storage` when the final flush fails.
    pub fn close(&self) -> Result<(), BrokerError> {
        match self {
            Backend::Local(store) => Ok(store.close()?),
            Backend::Cluster(_) => Ok(()),
        }
    }
}

/// How a new coordinator reads the offsets partition: up to its log end,
/// not only below its high watermark, as Kafka's coordinator loads its
/// offsets topic. A new leader's high watermark lags what its in-sync
/// replicas acknowledged (it learns it from the next fetches), so a read
/// capped there misses the last acknowledged commits.
///
/// `Log::read` stops at the replicated high watermark, which on a new
/// leader lags what its ISR acknowledged; `Log::read_for_replica` reads
/// to the log end (tests/tests/cluster_groups.rs,
/// `committed_offsets_survive_the_coordinator`, checks it).
fn read_to_end(
    log: &crate::storage::Log,
    offset: u64,
    max_bytes: usize,
) -> Result<Bytes, crate::storage::StorageError> {
    log.read_for_replica(offset, max_bytes)
}

/// Groups rebuilt from committed offsets (latest value per key).
pub(super) fn groups_from(offsets: HashMap<OffsetKey, Committed>) -> HashMap<String, Arc<Slot>> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    for ((group, topic, partition), committed) in offsets {
        groups.entry(group).or_default().offsets.insert(Tp::new(topic, partition), (committed, 0));
    }
    groups.into_iter().map(|(name, g)| (name, Slot::new(g))).collect()
}

impl Coordinator {
    /// A clustered broker's coordinator: no groups, not coordinating until
    /// [`lead_offsets`](Self::lead_offsets).
    pub fn clustered() -> Self {
        Self::with_backend(Backend::Cluster(RwLock::new(Lead::Not)), HashMap::new())
    }

    /// Refuses unless this broker coordinates groups now (always on a
    /// single node).
    ///
    /// # Errors
    /// `Group` (`NotCoordinator`).
    pub fn check_coordinator(&self) -> Result<(), BrokerError> {
        Ok(self.backend.check_active()?)
    }

    /// Whether this broker coordinates groups now.
    pub fn is_coordinator(&self) -> bool {
        self.backend.check_active().is_ok()
    }

    /// Whether this broker coordinates from `partition` already.
    pub fn leads_from(&self, partition: &Arc<Partition>) -> bool {
        matches!(self.backend.lead(), Lead::Leading(p) if Arc::ptr_eq(&p, partition))
    }

    /// This broker became the leader of the offsets partition: reads its
    /// log (up to its end) into the groups, then coordinates from it.
    /// Group requests meanwhile get `NotCoordinator`. Blocking.
    ///
    /// # Errors
    /// `Storage` when the log cannot be read (the broker then does not
    /// coordinate; the next role change tries again).
    pub fn lead_offsets(&self, partition: &Arc<Partition>) -> Result<(), BrokerError> {
        if !offsets_topic::is_internal(&partition.topic) || matches!(self.backend, Backend::Local(_)) {
            return Ok(());
        }
        self.backend.set(Lead::Loading);
        self.drop_all_groups();
        let (offsets, records) = match store::read_all_with(&partition.log(), read_to_end) {
            Ok(read) => read,
            Err(e) => {
                self.backend.set(Lead::Not);
                return Err(e.into());
            }
        };
        tracing::info!(
            groups_offsets = offsets.len(),
            records,
            "coordinating groups: loaded the committed offsets"
        );
        *self.map() = groups_from(offsets);
        self.backend.set(Lead::Leading(Arc::clone(partition)));
        Ok(())
    }

    /// This broker stopped leading the offsets partition: it drops every
    /// group and answers group requests with `NotCoordinator`.
    pub fn resign_offsets(&self) {
        if matches!(self.backend, Backend::Local(_)) || matches!(self.backend.lead(), Lead::Not) {
            return;
        }
        self.backend.set(Lead::Not);
        self.drop_all_groups();
        tracing::info!("no longer the group coordinator");
    }

    /// Forgets every group; a request holding one sees it deleted.
    fn drop_all_groups(&self) {
        let slots: Vec<Arc<Slot>> = self.map().drain().map(|(_, s)| s).collect();
        for slot in slots {
            slot.lock().deleted = true;
        }
    }
}

#[cfg(test)]
mod tests;
