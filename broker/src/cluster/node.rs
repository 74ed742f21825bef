//! One controller node: the durable stores, the openraft node, the peer
//! server, and the calls a broker makes on them (propose a command, read
//! the state, who leads).
//!
//! Bootstrapping: every voter is listed in [`ControllerConfig::peers`] and
//! a node whose controller directory is pristine (no log, no vote)
//! initializes the group with exactly that membership; openraft allows
//! several nodes to do so with identical membership, so no node is special
//! and the cluster forms once a majority is up.
//!
//! Adding a node: a node whose id is not in `peers` starts as an observer
//! that initializes nothing and waits; `sluice cluster add-node` makes the
//! controller leader add it as a Raft learner ([`ControllerNode::add_node`]),
//! after which it receives the controller's log, accepts and is accepted
//! by the other members, and registers as a broker. It never votes: the
//! quorum stays the voters in `peers`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{InitializeError, RaftError};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::log_store::LogStore;
use super::network::PeerNetwork;
use super::peer_server::{self, ControllerRaft, PeerIdentity};
use super::peer_wire::{
    self, Hello, PeerError, PeerRequest, PeerResponse, WriteError, PEER_MAGIC, PEER_VERSION,
};
use super::sm_store::StateMachineStore;
use super::state::{ApplyResult, Command, ControllerState};

/// The controller's files live in this directory under the data directory.
pub const CONTROLLER_DIR: &str = "controller";

/// How a controller node is set up.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node's id (its broker id).
    pub node_id: u64,
    /// Every peer must present the same cluster id.
    pub cluster_id: String,
    /// The broker's data directory; the controller uses `controller/` in it.
    pub data_dir: PathBuf,
    /// Every voter (this node included): node id to peer address.
    pub peers: BTreeMap<u64, String>,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range: a follower that hears no leader for a
    /// random time in it starts an election.
    pub election_timeout: (Duration, Duration),
    /// A snapshot is taken after this many applied entries; the log it
    /// covers is then purged (keeping `logs_kept_after_snapshot`).
    pub snapshot_after_logs: u64,
    /// Entries kept in the log after a snapshot covers them (a follower
    /// further behind than the kept log gets the snapshot).
    pub logs_kept_after_snapshot: u64,
    /// Time a new peer connection has to complete its handshake.
    pub handshake_timeout: Duration,
}

impl ControllerConfig {
    /// A config with the defaults: heartbeat 100 ms, election timeout
    /// 500..1000 ms, a snapshot every 5000 entries keeping 1000, handshake
    /// timeout 5 s.
    pub fn new(node_id: u64, cluster_id: &str, data_dir: PathBuf, peers: BTreeMap<u64, String>) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.to_owned(),
            data_dir,
            peers,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            snapshot_after_logs: 5000,
            logs_kept_after_snapshot: 1000,
            handshake_timeout: peer_server::HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why a controller operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The controller's files could not be opened or written.
    #[error("controller storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The timing settings are invalid.
    #[error("controller config: {0}")]
    Config(String),
    /// `peers` is empty: there is no quorum to join.
    #[error("node {0}: the controller's peer list is empty")]
    NotAPeer(u64),
    /// Only the controller leader accepts commands.
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<u64>,
    },
    /// The Raft node failed or stopped.
    #[error("controller raft: {0}")]
    Raft(String),
    /// The request is not acceptable (`add-node` with a voter's id, ...).
    #[error("{0}")]
    Refused(String),
    /// Forwarding to the leader failed on the peer connection.
    #[error("forwarding to the controller leader: {0}")]
    Peer(#[from] PeerError),
}

impl From<WriteError> for ClusterError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotLeader(leader) => Self::NotLeader { leader },
            WriteError::Raft(msg) => Self::Raft(msg),
            WriteError::Refused(msg) => Self::Refused(msg),
        }
    }
}

/// Longest wait for a forwarded proposal (connect, and then the answer).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A running controller node.
#[derive(Debug)]
pub struct ControllerNode {
    node_id: u64,
    raft: ControllerRaft,
    sm: StateMachineStore,
    server: JoinHandle<()>,
    peer_addr: SocketAddr,
    cluster_id: String,
    peers: BTreeMap<u64, String>,
    replication: peer_server::ReplicationSlot,
}

fn raft_config(cfg: &ControllerConfig) -> Result<Arc<openraft::Config>, ClusterError> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = openraft::Config {
        cluster_name: cfg.cluster_id.clone(),
        heartbeat_interval: ms(cfg.heartbeat),
        election_timeout_min: ms(cfg.election_timeout.0),
        election_timeout_max: ms(cfg.election_timeout.1),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_after_logs),
        max_in_snapshot_log_to_keep: cfg.logs_kept_after_snapshot,
        purge_batch_size: 1,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| ClusterError::Config(e.to_string()))?))
}

impl ControllerNode {
    /// Opens the controller's durable state, starts the Raft node and
    /// serves peer traffic on `listener`.
    ///
    /// # Errors
    /// Storage failures, a bad config, or a Raft node that fails to start.
    pub async fn start(cfg: ControllerConfig, listener: TcpListener) -> Result<Self, ClusterError> {
        if cfg.peers.is_empty() {
            return Err(ClusterError::NotAPeer(cfg.node_id));
        }
        let voter = cfg.peers.contains_key(&cfg.node_id);
        let config = raft_config(&cfg)?;
        let dir = cfg.data_dir.join(CONTROLLER_DIR);
        let open_dir = dir.clone();
        let (mut log, sm) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            Ok((LogStore::open(&open_dir)?, StateMachineStore::open(&open_dir)?))
        })
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))??;
        let pristine = log.get_log_state().await?.last_log_id.is_none() && log.read_vote().await?.is_none();
        let network = PeerNetwork { cluster_id: cfg.cluster_id.clone(), node_id: cfg.node_id };
        let raft = openraft::Raft::new(cfg.node_id, config, network, log, sm.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let peer_addr = listener.local_addr()?;
        let identity = PeerIdentity {
            cluster_id: cfg.cluster_id.clone(),
            node_id: cfg.node_id,
            known: cfg.peers.keys().copied().collect::<BTreeSet<_>>(),
            handshake_timeout: cfg.handshake_timeout,
        };
        let replication = peer_server::ReplicationSlot::default();
        let server = peer_server::spawn(listener, Some(raft.clone()), identity, replication.clone());
        let node = Self {
            node_id: cfg.node_id,
            raft,
            sm,
            server,
            peer_addr,
            cluster_id: cfg.cluster_id.clone(),
            peers: cfg.peers.clone(),
            replication,
        };
        if pristine && voter {
            if let Err(e) = node.initialize(&cfg.peers).await {
                let _ = node.shutdown().await;
                return Err(e);
            }
        }
        if pristine && !voter {
            tracing::info!(
                node = cfg.node_id,
                %peer_addr,
                "not a voter in --peers: waiting to be added (`sluice cluster add-node {} {peer_addr}`)",
                cfg.node_id
            );
        }
        tracing::info!(node = cfg.node_id, %peer_addr, dir = %dir.display(), pristine, voter, "controller node started");
        Ok(node)
    }

    async fn initialize(&self, peers: &BTreeMap<u64, String>) -> Result<(), ClusterError> {
        let members: BTreeMap<u64, BasicNode> =
            peers.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// Hands peer connections that open the replication channel to
    /// `service` (the broker's replica manager) from now on.
    pub fn set_replication(&self, service: Arc<dyn peer_server::ReplicationService>) {
        self.replication.set(service);
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The address the peer server listens on.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The controller leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this node is the controller leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The current term as this node knows it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The last log index this node holds (0: none).
    pub fn last_log_index(&self) -> u64 {
        self.raft.metrics().borrow_watched().last_log_index.unwrap_or(0)
    }

    /// The index up to which this node's log was purged (covered by its
    /// snapshot), if it was.
    pub fn purged_index(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().purged.map(|l| l.index())
    }

    /// The controller state as applied on this node (a follower's may lag).
    ///
    /// # Errors
    /// Only a poisoned store lock.
    pub fn state(&self) -> Result<ControllerState, ClusterError> {
        Ok(self.sm.state()?)
    }

    /// The index of the last entry applied on this node (0: none).
    ///
    /// # Errors
    /// Only a poisoned store lock.
    pub fn applied_index(&self) -> Result<u64, ClusterError> {
        Ok(self.sm.last_applied()?.map_or(0, |l| l.index()))
    }

    /// Replicates `cmd` through the controller quorum and applies it; the
    /// answer is the command's outcome (a refused command is an `Ok(Err)`).
    ///
    /// # Errors
    /// `NotLeader` (with the leader to ask instead) on a follower, `Raft`
    /// when the node is shutting down or failed.
    pub async fn propose(&self, cmd: Command) -> Result<ApplyResult, ClusterError> {
        peer_server::write_local(&self.raft, cmd).await.map_err(ClusterError::from)
    }

    /// Like [`propose`](Self::propose), but on a follower the command is
    /// forwarded over the peer port to the leader this node knows of. Not
    /// retried: with no known leader (an election in progress) or a leader
    /// that moved meanwhile, the caller gets `NotLeader` and retries.
    ///
    /// # Errors
    /// `NotLeader`, `Raft`, or `Peer` when the leader cannot be reached.
    pub async fn propose_anywhere(&self, cmd: Command) -> Result<ApplyResult, ClusterError> {
        let leader = match self.leader() {
            Some(l) if l != self.node_id => l,
            _ => return self.propose(cmd).await,
        };
        let addr = self.member_addr(leader).ok_or(ClusterError::NotLeader { leader: Some(leader) })?;
        let mut conn = self.dial(leader, &addr).await?;
        peer_wire::send(&mut conn, &PeerRequest::Propose(cmd)).await?;
        match peer_wire::recv(&mut conn, FORWARD_TIMEOUT).await? {
            PeerResponse::Propose(r) => r.map_err(ClusterError::from),
            other => Err(ClusterError::Raft(format!("leader answered a proposal with {other:?}"))),
        }
    }

    /// Adds node `id`, reachable at `peer_addr`, as a non-voting member
    /// (through the controller leader, forwarded from a follower). Returns
    /// once the membership change is committed; the node then catches up
    /// and registers by itself.
    ///
    /// # Errors
    /// `Refused` (a voter's id, an empty address), `NotLeader` with no
    /// known leader, `Raft`, or `Peer` when the leader cannot be reached.
    pub async fn add_node(&self, id: u64, peer_addr: &str) -> Result<(), ClusterError> {
        let leader = match self.leader() {
            Some(l) if l != self.node_id => l,
            _ => {
                return peer_server::add_learner_local(&self.raft, id, peer_addr.to_owned())
                    .await
                    .map_err(ClusterError::from)
            }
        };
        let addr = self.member_addr(leader).ok_or(ClusterError::NotLeader { leader: Some(leader) })?;
        let mut conn = self.dial(leader, &addr).await?;
        peer_wire::send(&mut conn, &PeerRequest::AddLearner { id, addr: peer_addr.to_owned() }).await?;
        match peer_wire::recv(&mut conn, FORWARD_TIMEOUT).await? {
            PeerResponse::AddLearner(r) => r.map_err(ClusterError::from),
            other => Err(ClusterError::Raft(format!("leader answered add-node with {other:?}"))),
        }
    }

    /// Whether `id` votes in the controller quorum (as this node last saw
    /// the membership).
    pub fn is_voter(&self, id: u64) -> bool {
        peer_server::is_voter(&self.raft, id)
    }

    /// The peer address of member `id`: from the controller's membership
    /// (which knows added nodes too), else from `--peers`.
    fn member_addr(&self, id: u64) -> Option<String> {
        let watch = self.raft.metrics();
        let metrics = watch.borrow_watched();
        let known = metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone());
        known.or_else(|| self.peers.get(&id).cloned())
    }

    /// A controller-channel connection to member `to` at `addr`.
    async fn dial(&self, to: u64, addr: &str) -> Result<peer_wire::PeerConn, ClusterError> {
        let hello = Hello {
            magic: PEER_MAGIC.into(),
            version: PEER_VERSION,
            cluster_id: self.cluster_id.clone(),
            from: self.node_id,
            to,
            channel: peer_wire::Channel::Controller,
        };
        Ok(peer_wire::dial(addr, &hello, FORWARD_TIMEOUT).await?)
    }

    /// Stops the Raft node and the peer server.
    ///
    /// # Errors
    /// The Raft core's task failed.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        self.server.abort();
        // Wait for the abort, so the listener is closed when this returns.
        let _ = self.server.await;
        self.raft.shutdown().await.map_err(|e| ClusterError::Raft(e.to_string()))
    }
}
