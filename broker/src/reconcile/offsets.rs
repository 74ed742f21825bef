//! The reconcile loop's part in group coordination (docs/cluster.md,
//! "Groups"): it creates the internal offsets topic once the cluster can
//! hold it, and makes this broker the group coordinator exactly while it
//! leads that topic's partition 0.
//!
//! - [`ensure_topic`]: after a pass, a broker that sees no
//!   `__sluice_offsets` in the state while the controller has a leader and
//!   at least `default_replication_factor` brokers are live proposes
//!   creating it (one proposal in flight per broker; when several brokers
//!   race, the controller creates it once and refuses the others with
//!   "exists").
//! - [`follow_role`]: on every pass, for the offsets partition: a leader
//!   that does not coordinate from it yet loads it
//!   ([`Coordinator::lead_offsets`](crate::groups::Coordinator::lead_offsets));
//!   any other role drops the groups
//!   ([`Coordinator::resign_offsets`](crate::groups::Coordinator::resign_offsets)).

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::cluster::state::{Command, ControllerState};
use crate::clustering::ClusterHandle;
use crate::groups::offsets_topic::{self, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::partition::Partition;
use crate::replication::Role;

/// Whether the offsets topic should be proposed now: it does not exist,
/// the controller has a leader, and enough brokers are live for its
/// replication factor.
pub fn wants_topic(state: &ControllerState, controller_leader: bool, replication_factor: u16) -> bool {
    !state.topics.contains_key(OFFSETS_TOPIC)
        && controller_leader
        && state.live_brokers().len() >= usize::from(replication_factor.max(1))
}

/// Proposes creating the offsets topic when [`wants_topic`], unless an
/// earlier proposal (`creating`) is still in flight.
pub fn ensure_topic(
    cluster: &Arc<ClusterHandle>,
    state: &ControllerState,
    creating: &mut Option<JoinHandle<()>>,
) {
    let rf = cluster.settings.default_replication_factor;
    if creating.as_ref().is_some_and(|h| !h.is_finished())
        || !wants_topic(state, cluster.leader().is_some(), rf)
    {
        return;
    }
    let cmd = Command::CreateTopic {
        name: OFFSETS_TOPIC.to_owned(),
        partitions: OFFSETS_PARTITIONS,
        replication_factor: rf,
        config: offsets_topic::topic_config(),
    };
    let cluster = Arc::clone(cluster);
    *creating = Some(tokio::spawn(async move {
        match cluster.propose(cmd, |s, _| s.topics.contains_key(OFFSETS_TOPIC)).await {
            Ok(_) => {
                tracing::info!(topic = OFFSETS_TOPIC, replication_factor = rf, "created the offsets topic")
            }
            Err(e) => tracing::debug!(error = %e, "creating the offsets topic (retried on a later pass)"),
        }
    }));
}

/// Makes this broker coordinate groups while `partition` is the offsets
/// partition and this broker leads it (`role`), and not otherwise.
/// Blocking (loading reads the partition's log).
pub fn follow_role(broker: &Broker, partition: &Arc<Partition>, role: &Role) {
    if !offsets_topic::is_internal(&partition.topic) || partition.index != 0 {
        return;
    }
    match role {
        Role::Leader { .. } if !broker.groups.leads_from(partition) => {
            if let Err(e) = broker.groups.lead_offsets(partition) {
                tracing::error!(error = %e, "loading the committed offsets failed; retried on the next pass");
            }
        }
        Role::Leader { .. } => {}
        _ => broker.groups.resign_offsets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{BrokerInfo, TopicState};

    fn state(live: u64, with_topic: bool) -> ControllerState {
        let mut s = ControllerState::default();
        for id in 1..=live {
            let info = BrokerInfo {
                id,
                client_addr: String::new(),
                kafka_addr: None,
                peer_addr: String::new(),
                lease_until_ms: 0,
                fenced: false,
            };
            s.brokers.insert(id, info);
        }
        if with_topic {
            let topic = TopicState { id: 1, config: Default::default(), partitions: vec![] };
            s.topics.insert(OFFSETS_TOPIC.to_owned(), topic);
        }
        s
    }

    #[test]
    fn the_topic_is_wanted_once_the_cluster_can_hold_it() {
        assert!(wants_topic(&state(3, false), true, 3));
        assert!(!wants_topic(&state(2, false), true, 3), "too few live brokers");
        assert!(!wants_topic(&state(3, false), false, 3), "no controller leader");
        assert!(!wants_topic(&state(3, true), true, 3), "exists");
        assert!(wants_topic(&state(1, false), true, 1));
    }
}
