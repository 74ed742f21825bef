//! The controller's replicated state machine, free of I/O and of Raft.
//!
//! [`ControllerState`] holds the cluster's metadata: brokers (addresses,
//! lease, fenced or not), topics (id, config, partitions) and, per
//! partition, its replicas, leader, leader epoch and in-sync replica set
//! (ISR). [`ControllerState::apply`] is the only way to change it: one
//! [`Command`] (a Raft log entry) at a time, deterministically, so every
//! controller node that applies the same log holds the same state. Time
//! never comes from a clock here: commands carry it (a lease's end, the
//! `now` of an expiry tick), stamped by the proposer.
//!
//! Invariants after every command (checked by the property tests):
//! - a partition's ISR is a non-empty subset of its replicas;
//! - a partition's leader, when it has one, is in its ISR and not fenced;
//! - the leader epoch only grows, and grows whenever the leader changes
//!   (going offline included), so one epoch never has two leaders;
//! - a new leader comes from the ISR only (no unclean election); a
//!   partition without a live ISR member is offline (leader -1) and keeps
//!   its last ISR, so it comes back only with a replica that has all of
//!   its acknowledged data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker's (and controller node's) id.
pub type BrokerId = u64;

/// The leader id Kafka's wire uses for "no leader" (an offline partition).
pub const NO_LEADER: i64 = -1;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Its id (also its controller node id).
    pub id: BrokerId,
    /// Native-protocol client address (`--listen`).
    pub client_addr: String,
    /// Kafka listener address, when it runs one.
    pub kafka_addr: Option<String>,
    /// Peer address (`--peer-listen`): controller and replication traffic.
    pub peer_addr: String,
    /// Milliseconds since the Unix epoch when its lease ends unless renewed.
    pub lease_until_ms: u64,
    /// Whether its lease lapsed: a fenced broker leads nothing until it
    /// heartbeats again.
    pub fenced: bool,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The brokers holding a copy, in preference order.
    pub replicas: Vec<BrokerId>,
    /// The broker accepting writes; `None` when offline.
    pub leader: Option<BrokerId>,
    /// Bumped on every leader change; writes carry it for fencing.
    pub leader_epoch: u32,
    /// The replicas that have everything the leader acknowledged.
    pub isr: Vec<BrokerId>,
}

impl PartitionState {
    /// The leader as Kafka's wire carries it: its id, or -1 when offline.
    pub fn leader_id(&self) -> i64 {
        self.leader.map_or(NO_LEADER, |l| i64::try_from(l).unwrap_or(NO_LEADER))
    }
}

/// A topic as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Unique for the cluster's life: a re-created topic gets a new one.
    pub id: u64,
    /// Topic settings (retention, segment size, ...) as key/value text.
    pub config: BTreeMap<String, String>,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionState>,
}

/// A change to the controller state: one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker joins (or rejoins, with new addresses) and is live until
    /// `lease_until_ms`.
    RegisterBroker {
        /// Its id, addresses and lease.
        id: BrokerId,
        /// See [`BrokerInfo::client_addr`].
        client_addr: String,
        /// See [`BrokerInfo::kafka_addr`].
        kafka_addr: Option<String>,
        /// See [`BrokerInfo::peer_addr`].
        peer_addr: String,
        /// End of the lease.
        lease_until_ms: u64,
    },
    /// A registered broker renews its lease.
    BrokerHeartbeat {
        /// The broker.
        id: BrokerId,
        /// New end of the lease (never moves the lease back).
        lease_until_ms: u64,
    },
    /// Creates a topic, placing `replication_factor` replicas of each
    /// partition on distinct live brokers.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Number of partitions (at least 1).
        partitions: u32,
        /// Copies per partition (1..=live brokers).
        replication_factor: u16,
        /// Topic settings.
        config: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Grows a topic to `count` partitions; the new ones are placed like a
    /// created topic's, with the replication factor of partition 0.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new partition count (more than now).
        count: u32,
    },
    /// Replaces a topic's settings.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// The new settings, whole.
        config: BTreeMap<String, String>,
    },
    /// The partition's leader shrinks or expands its ISR.
    AlterIsr {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The broker asking: must be the current leader...
        leader: BrokerId,
        /// ...at the current epoch.
        leader_epoch: u32,
        /// The new ISR: must hold the leader, replicas only, and add only
        /// live brokers.
        isr: Vec<BrokerId>,
    },
    /// A tick: brokers whose lease ended by `now_ms` are fenced and lose
    /// leadership and ISR membership.
    ExpireLeases {
        /// The proposer's clock.
        now_ms: u64,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RegisterBroker { id, .. } => write!(f, "register broker {id}"),
            Self::BrokerHeartbeat { id, .. } => write!(f, "heartbeat of broker {id}"),
            Self::CreateTopic { name, partitions, replication_factor, .. } => {
                write!(f, "create topic {name} ({partitions} partitions, RF {replication_factor})")
            }
            Self::DeleteTopic { name } => write!(f, "delete topic {name}"),
            Self::AddPartitions { name, count } => write!(f, "grow topic {name} to {count} partitions"),
            Self::AlterTopicConfig { name, .. } => write!(f, "alter the config of topic {name}"),
            Self::AlterIsr { topic, partition, isr, .. } => {
                write!(f, "alter ISR of {topic}/{partition} to {isr:?}")
            }
            Self::ExpireLeases { now_ms } => write!(f, "expire leases at {now_ms}"),
        }
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; nothing to report.
    Done,
    /// The topic was created with this id.
    TopicCreated {
        /// The new topic's id.
        id: u64,
    },
    /// These brokers were fenced by the expiry tick.
    Fenced {
        /// Newly fenced brokers.
        brokers: Vec<BrokerId>,
    },
}

/// Why a command was refused (the state is then unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// No broker with this id registered.
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    /// A topic of that name exists.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// No topic of that name.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// No such partition.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: u32,
    },
    /// Zero partitions asked for.
    #[error("a topic needs at least one partition")]
    InvalidPartitions,
    /// A partition count that does not grow the topic.
    #[error("topic {topic} has {current} partitions; {requested} does not add any")]
    PartitionsNotGrown {
        /// Topic name.
        topic: String,
        /// Its partitions now.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// More copies than live brokers (or zero).
    #[error("replication factor {requested} with {live} live brokers")]
    InvalidReplicationFactor {
        /// Copies asked for.
        requested: u16,
        /// Live brokers.
        live: usize,
    },
    /// The asker is not the partition's leader at that epoch.
    #[error("broker {broker} at epoch {epoch} is not the leader (leader {leader}, epoch {current})")]
    FencedLeader {
        /// The asker.
        broker: BrokerId,
        /// Its epoch.
        epoch: u32,
        /// The current leader (-1: none).
        leader: i64,
        /// The current epoch.
        current: u32,
    },
    /// The proposed ISR breaks a rule.
    #[error("invalid ISR: {0}")]
    InvalidIsr(String),
}

/// The result of applying one command: the Raft response.
pub type ApplyResult = Result<Outcome, CommandError>;

/// The whole controller state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicState>,
    /// The id the next created topic gets.
    pub next_topic_id: u64,
}

impl ControllerState {
    /// Applies one command. A refused command leaves the state unchanged.
    ///
    /// # Errors
    /// The [`CommandError`] saying why the command was refused.
    pub fn apply(&mut self, cmd: &Command) -> ApplyResult {
        match cmd {
            Command::RegisterBroker { id, client_addr, kafka_addr, peer_addr, lease_until_ms } => {
                let info = BrokerInfo {
                    id: *id,
                    client_addr: client_addr.clone(),
                    kafka_addr: kafka_addr.clone(),
                    peer_addr: peer_addr.clone(),
                    lease_until_ms: *lease_until_ms,
                    fenced: false,
                };
                if self.brokers.insert(*id, info).is_some() {
                    self.new_incarnation(*id);
                }
                self.revive(*id);
                Ok(Outcome::Done)
            }
            Command::BrokerHeartbeat { id, lease_until_ms } => {
                let b = self.brokers.get_mut(id).ok_or(CommandError::UnknownBroker(*id))?;
                b.lease_until_ms = b.lease_until_ms.max(*lease_until_ms);
                b.fenced = false;
                self.revive(*id);
                Ok(Outcome::Done)
            }
            Command::CreateTopic { name, partitions, replication_factor, config } => {
                self.create_topic(name, *partitions, *replication_factor, config)
            }
            Command::DeleteTopic { name } => {
                self.topics.remove(name).ok_or_else(|| CommandError::UnknownTopic(name.clone()))?;
                Ok(Outcome::Done)
            }
            Command::AddPartitions { name, count } => self.add_partitions(name, *count),
            Command::AlterTopicConfig { name, config } => {
                let t = self.topics.get_mut(name).ok_or_else(|| CommandError::UnknownTopic(name.clone()))?;
                t.config = config.clone();
                Ok(Outcome::Done)
            }
            Command::AlterIsr { topic, partition, leader, leader_epoch, isr } => {
                self.alter_isr(topic, *partition, *leader, *leader_epoch, isr)
            }
            Command::ExpireLeases { now_ms } => Ok(self.expire_leases(*now_ms)),
        }
    }

    /// The ids of the brokers that are registered and not fenced, ascending.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect()
    }

    /// Whether `id` is registered and not fenced.
    pub fn is_live(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// A partition's state.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Partitions with no leader: `(topic, partition)`.
    pub fn offline_partitions(&self) -> Vec<(String, u32)> {
        self.partitions_where(|p| p.leader.is_none())
    }

    /// Partitions whose ISR is smaller than their replica set.
    pub fn under_replicated_partitions(&self) -> Vec<(String, u32)> {
        self.partitions_where(|p| p.isr.len() < p.replicas.len())
    }

    fn partitions_where(&self, pred: impl Fn(&PartitionState) -> bool) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if pred(p) {
                    out.push((name.clone(), u32::try_from(i).unwrap_or(u32::MAX)));
                }
            }
        }
        out
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        rf: u16,
        config: &BTreeMap<String, String>,
    ) -> ApplyResult {
        if self.topics.contains_key(name) {
            return Err(CommandError::TopicExists(name.to_owned()));
        }
        if partitions == 0 {
            return Err(CommandError::InvalidPartitions);
        }
        let live = self.live_brokers();
        if rf == 0 || usize::from(rf) > live.len() {
            return Err(CommandError::InvalidReplicationFactor { requested: rf, live: live.len() });
        }
        let id = self.next_topic_id;
        self.next_topic_id += 1;
        let placed = place_replicas(&live, id, partitions, usize::from(rf));
        let parts = placed
            .into_iter()
            .map(|replicas| PartitionState {
                leader: replicas.first().copied(),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            })
            .collect();
        let topic = TopicState { id, config: config.clone(), partitions: parts };
        self.topics.insert(name.to_owned(), topic);
        Ok(Outcome::TopicCreated { id })
    }

    fn add_partitions(&mut self, name: &str, count: u32) -> ApplyResult {
        let live = self.live_brokers();
        let t = self.topics.get_mut(name).ok_or_else(|| CommandError::UnknownTopic(name.to_owned()))?;
        let current = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
        if count <= current {
            return Err(CommandError::PartitionsNotGrown {
                topic: name.to_owned(),
                current,
                requested: count,
            });
        }
        let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
        if rf > live.len() {
            let requested = u16::try_from(rf).unwrap_or(u16::MAX);
            return Err(CommandError::InvalidReplicationFactor { requested, live: live.len() });
        }
        let placed = place_replicas(&live, t.id, count, rf);
        for replicas in placed.into_iter().skip(current as usize) {
            let p = PartitionState {
                leader: replicas.first().copied(),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            };
            t.partitions.push(p);
        }
        Ok(Outcome::Done)
    }

    fn alter_isr(
        &mut self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
        epoch: u32,
        isr: &[BrokerId],
    ) -> ApplyResult {
        let live: BTreeSet<BrokerId> = self.live_brokers().into_iter().collect();
        let t = self.topics.get_mut(topic).ok_or_else(|| CommandError::UnknownTopic(topic.to_owned()))?;
        let p = t
            .partitions
            .get_mut(partition as usize)
            .ok_or_else(|| CommandError::UnknownPartition { topic: topic.to_owned(), partition })?;
        if p.leader != Some(leader) || p.leader_epoch != epoch {
            let current = p.leader_epoch;
            return Err(CommandError::FencedLeader { broker: leader, epoch, leader: p.leader_id(), current });
        }
        let new: BTreeSet<BrokerId> = isr.iter().copied().collect();
        if new.len() != isr.len() {
            return Err(CommandError::InvalidIsr("duplicate broker".into()));
        }
        if !new.contains(&leader) {
            return Err(CommandError::InvalidIsr("the leader must stay in its ISR".into()));
        }
        if let Some(b) = new.iter().find(|b| !p.replicas.contains(b)) {
            return Err(CommandError::InvalidIsr(format!("broker {b} is not a replica")));
        }
        if let Some(b) = new.iter().find(|b| !p.isr.contains(b) && !live.contains(b)) {
            return Err(CommandError::InvalidIsr(format!("broker {b} is not live")));
        }
        // Kept in replica order, so the preferred replica leads on a tie.
        p.isr = p.replicas.iter().copied().filter(|r| new.contains(r)).collect();
        Ok(Outcome::Done)
    }

    fn expire_leases(&mut self, now_ms: u64) -> Outcome {
        let mut fenced = Vec::new();
        for b in self.brokers.values_mut() {
            if !b.fenced && b.lease_until_ms <= now_ms {
                b.fenced = true;
                fenced.push(b.id);
            }
        }
        if !fenced.is_empty() {
            let live: BTreeSet<BrokerId> = self.live_brokers().into_iter().collect();
            for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
                reelect(p, &live);
            }
        }
        Outcome::Fenced { brokers: fenced }
    }

    /// A registered broker registers again: it restarted, perhaps within
    /// its lease, and its log may have lost an unsynced tail that its
    /// followers had fetched. Whatever it led gets a new epoch, under
    /// another live ISR member when there is one (it has everything
    /// acknowledged and more), else under itself: followers then truncate
    /// by epoch to the new leader's log instead of keeping bytes the same
    /// epoch now writes differently.
    ///
    /// It also leaves every ISR whose live leader is another broker, as a
    /// new incarnation leaves them in KRaft: its leaders would otherwise
    /// hold their high watermarks at the durable offset its old
    /// incarnation last reported until it had truncated and caught up, or
    /// for `replica_lag_time_max_ms` (writes with `acks=durable` stalled for
    /// up to 10 s after a quick restart). Its leaders add it back once it
    /// has caught up, as for any lagging follower.
    fn new_incarnation(&mut self, id: BrokerId) {
        let live: BTreeSet<BrokerId> = self.live_brokers().into_iter().collect();
        for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
            if p.leader == Some(id) {
                let other = p.isr.iter().copied().find(|b| *b != id && live.contains(b));
                p.leader = Some(other.unwrap_or(id));
                p.leader_epoch += 1;
            }
            if p.leader.is_some_and(|l| l != id && live.contains(&l)) {
                p.isr.retain(|b| *b != id);
            }
        }
    }

    /// A broker came back: offline partitions whose ISR holds it get a
    /// leader again.
    fn revive(&mut self, id: BrokerId) {
        let live: BTreeSet<BrokerId> = self.live_brokers().into_iter().collect();
        for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
            if p.leader.is_none() && p.isr.contains(&id) {
                reelect(p, &live);
            }
        }
    }
}

/// Drops non-live brokers from `p`'s ISR (never emptying it) and, if its
/// leader is gone, elects the first live ISR member in replica order,
/// bumping the epoch; with none, the partition goes offline.
fn reelect(p: &mut PartitionState, live: &BTreeSet<BrokerId>) {
    let live_isr: Vec<BrokerId> = p.isr.iter().copied().filter(|b| live.contains(b)).collect();
    if !live_isr.is_empty() {
        p.isr = live_isr;
    }
    if p.leader.is_some_and(|l| p.isr.contains(&l) && live.contains(&l)) {
        return;
    }
    let next = p.isr.iter().copied().find(|b| live.contains(b));
    if next != p.leader {
        p.leader = next;
        p.leader_epoch += 1;
    }
}

/// Replica lists for `partitions` partitions: `rf` distinct brokers each,
/// round-robin over `live` (ascending ids) from a start that depends on
/// the topic id, so leaders spread over brokers and over topics.
pub fn place_replicas(live: &[BrokerId], topic_id: u64, partitions: u32, rf: usize) -> Vec<Vec<BrokerId>> {
    let n = live.len();
    if n == 0 {
        return Vec::new();
    }
    let start = usize::try_from(topic_id % n as u64).unwrap_or(0);
    (0..partitions as usize).map(|p| (0..rf.min(n)).map(|k| live[(start + p + k) % n]).collect()).collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
