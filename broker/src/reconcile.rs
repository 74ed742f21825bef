//! The reconcile loop of a clustered broker: whenever the controller's
//! applied state changes, make this broker's topics and partition roles
//! match it, then publish that state ([`ClusterHandle::publish`]) so admin
//! calls waiting for their command can answer.
//!
//! The decisions are pure ([`plan`]); this module carries them out. Every
//! role change goes through [`apply_role`], and only when the role
//! differs, so a partition's replication is restarted only by a real
//! change. A step that fails (a disk error creating a topic) is logged and
//! retried on the next pass; the state is then not published.
//!
//! The controller node offers no change notification, so the loop watches
//! its applied index (a cheap read) every [`POLL`].
//!
//! Group coordination follows the offsets topic ([`offsets`]): the loop
//! creates it at bootstrap, and after each role change of its partition
//! makes this broker load the committed offsets (leader) or drop its
//! groups (any other role).

pub mod offsets;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::cluster::state::{BrokerId, ControllerState};
use crate::clustering::ClusterHandle;
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::replication::Role;
use plan::{Action, LocalTopic};

/// Settings a live topic cannot change (fixed when it is created).
pub const FIXED_KEYS: [&str; 2] = ["segment_preallocate_bytes", "index_interval_bytes"];

/// How often the loop looks at the controller's applied index.
pub const POLL: Duration = Duration::from_millis(20);

/// Pause before retrying a pass that failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sets a partition's role: the one place a role changes. The replica
/// manager starts or stops the follower's fetcher and tells the partition
/// its node id, so a leader's high watermark follows its ISR.
pub fn apply_role(cluster: &ClusterHandle, partition: &Arc<Partition>, role: Role) {
    cluster.replicas.set_role(partition, role);
}

/// Runs the loop until `stop` is cancelled.
pub fn spawn(broker: Arc<Broker>, cluster: Arc<ClusterHandle>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: Option<u64> = None;
        let mut last: Option<Arc<ControllerState>> = None;
        let mut creating_offsets = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            let leader = cluster.leader().and_then(|l| i64::try_from(l).ok()).unwrap_or(-1);
            broker.metrics.controller_leader.set(leader);
            let Ok(node) = cluster.node() else { return };
            let Ok(index) = node.applied_index() else { continue };
            if seen == Some(index) {
                continue;
            }
            let Ok(state) = node.state() else { continue };
            drop(node);
            if !cluster.caught_up(&state) {
                continue; // replaying an older state after a restart
            }
            let state = Arc::new(state);
            let (b, c, s) = (Arc::clone(&broker), Arc::clone(&cluster), Arc::clone(&state));
            let done = tokio::task::spawn_blocking(move || reconcile_once(&b, &c, &s)).await;
            match done {
                Ok(Ok(())) => {
                    count_elections(&broker, last.as_deref(), &state);
                    cluster.publish(Arc::clone(&state));
                    offsets::ensure_topic(&cluster, &state, &mut creating_offsets);
                    last = Some(state);
                    seen = Some(index);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "reconcile failed; retrying"),
                Err(e) => tracing::error!(error = %e, "reconcile task failed"),
            }
            if seen != Some(index) {
                // Failed: retry after a pause, not on every poll.
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    })
}

/// Makes local topics and roles match `state`. Blocking (creates and
/// deletes files).
///
/// # Errors
/// The first topic change that failed (the others are still tried).
pub fn reconcile_once(
    broker: &Broker,
    cluster: &ClusterHandle,
    state: &ControllerState,
) -> Result<(), BrokerError> {
    let me = cluster.node_id();
    let local: BTreeMap<String, LocalTopic> = broker
        .topics
        .list()
        .iter()
        .map(|t| {
            let have = LocalTopic { id: t.id(), partitions: t.partitions.len() as u32, config: t.config() };
            (t.name.to_string(), have)
        })
        .collect();
    let defaults = &broker.config.topic_defaults;
    let mut first_error = None;
    for action in plan::plan_topics(state, me, &cluster.settings.cluster_id, defaults, &local) {
        if let Action::Delete { name } = &action {
            // Its fetchers stop before its files go.
            for index in 0..local.get(name).map_or(0, |t| t.partitions) {
                cluster.replicas.forget(name, index);
            }
        }
        if let Err(e) = carry_out(broker, &action) {
            tracing::warn!(?action, error = %e, "reconcile: topic change failed");
            first_error.get_or_insert(e);
        }
    }
    set_roles(broker, cluster, state);
    broker.metrics.offline_partitions.set(state.offline_partitions().len() as i64);
    broker.metrics.under_replicated_partitions.set(state.under_replicated_partitions().len() as i64);
    first_error.map_or(Ok(()), Err)
}

fn carry_out(broker: &Broker, action: &Action) -> Result<(), BrokerError> {
    match action {
        Action::Delete { name } => broker.delete_topic(name),
        Action::Create { name, id, partitions, config } => {
            broker.create_topic_with(name, *partitions, config.clone(), *id).map(|_| ())
        }
        Action::Grow { name, count } => broker.add_partitions(name, *count).map(|_| ()),
        Action::Alter { name, config } => {
            let Some(topic) = broker.topics.get(name) else { return Ok(()) };
            let now = topic.config().entries();
            let mut changed = Vec::new();
            for (k, v) in config.entries() {
                if now.iter().any(|(nk, nv)| *nk == k && *nv == v) {
                    continue;
                }
                if FIXED_KEYS.contains(&k) {
                    tracing::warn!(topic = %name, key = k, "reconcile: a setting fixed at creation differs; kept");
                    continue;
                }
                changed.push((k.to_owned(), v));
            }
            if changed.is_empty() {
                return Ok(());
            }
            broker.topics.alter(name, &changed).map(|_| ())
        }
    }
}

fn set_roles(broker: &Broker, cluster: &ClusterHandle, state: &ControllerState) {
    let me = cluster.node_id();
    for (name, topic) in &state.topics {
        let Some(local) = broker.topics.get(name) else { continue };
        if local.id() != plan::local_topic_id(&cluster.settings.cluster_id, topic.id) {
            continue;
        }
        for (p, local_p) in topic.partitions.iter().zip(&local.partitions) {
            let min_isr = plan::min_insync_replicas(topic, p.replicas.len());
            let role = plan::role_for(p, min_isr, me, |id| leader_addr(cluster, state, id));
            if local_p.role() != role {
                tracing::info!(topic = %name, partition = local_p.index, ?role, "partition role");
                apply_role(cluster, local_p, role.clone());
            }
            offsets::follow_role(broker, local_p, &role);
        }
    }
}

/// Where to fetch from broker `id`: its `--peers` entry (a voter, perhaps
/// through a proxy the operator put there), else the peer address it
/// registered (a node added with `sluice cluster add-node`).
fn leader_addr(cluster: &ClusterHandle, state: &ControllerState, id: BrokerId) -> Option<String> {
    let listed = cluster.settings.peers.get(&id).cloned();
    listed.or_else(|| state.brokers.get(&id).map(|b| b.peer_addr.clone()))
}

/// Counts the partitions whose leader epoch grew since `before`.
fn count_elections(broker: &Broker, before: Option<&ControllerState>, after: &ControllerState) {
    let Some(before) = before else { return };
    for (name, t) in &after.topics {
        let Some(old) = before.topics.get(name).filter(|o| o.id == t.id) else { continue };
        for (p, o) in t.partitions.iter().zip(&old.partitions) {
            if p.leader_epoch > o.leader_epoch {
                broker.metrics.leader_elections.inc();
            }
        }
    }
}
