//! The `--peer-listen` server: accepts peer connections, checks the
//! handshake and hands each Raft RPC to the local openraft node, or, for a
//! connection that opens the replication channel, the whole connection to
//! the broker's [`ReplicationService`] (its replica manager), once one is
//! installed in the server's [`ReplicationSlot`].
//!
//! Hostile traffic is contained per connection: a foreign protocol, a
//! lying length (over the frame maximum, refused before any allocation),
//! garbage JSON, a handshake from another cluster or an unknown node, or a
//! peer that stalls, gets a log line and a closed connection. Nothing a
//! connection sends can panic the server or block the Raft node: each
//! connection is its own task, every read has a deadline.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::Raft;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::peer_wire::{
    self, Channel, Hello, HelloReply, PeerConn, PeerError, PeerRequest, PeerResponse, WriteError, PEER_MAGIC,
    PEER_VERSION,
};
use super::sm_store::StateMachineStore;
use super::state::{ApplyResult, Command};
use super::types::TypeConfig;

/// Default time a new connection has to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an accepted connection may stay silent (openraft heartbeats are
/// far more frequent) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The local Raft node.
pub type ControllerRaft = Raft<TypeConfig, StateMachineStore>;

/// Serves connections that open the replication channel (implemented by
/// the broker's replica manager; the cluster module does not know it).
pub trait ReplicationService: Send + Sync + std::fmt::Debug {
    /// Serves `conn` (handshake done, `from` is the dialer's node id) until
    /// it closes or fails.
    fn serve<'a>(
        &'a self,
        conn: &'a mut PeerConn,
        from: u64,
    ) -> Pin<Box<dyn Future<Output = Result<(), PeerError>> + Send + 'a>>;
}

/// Where the replication service is installed once the broker has one; a
/// replication connection before that is refused.
#[derive(Debug, Clone, Default)]
pub struct ReplicationSlot(Arc<RwLock<Option<Arc<dyn ReplicationService>>>>);

impl ReplicationSlot {
    /// Installs (or replaces) the service.
    pub fn set(&self, service: Arc<dyn ReplicationService>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(service);
    }

    /// The service, if installed.
    pub fn get(&self) -> Option<Arc<dyn ReplicationService>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Who this server is and whom it accepts.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The cluster id every peer must present.
    pub cluster_id: String,
    /// This node's id (a dialer must name it as its target).
    pub node_id: u64,
    /// Node ids allowed to connect: the voters in `--peers`; nodes added
    /// since (`sluice cluster add-node`) are allowed by the controller's
    /// membership.
    pub known: BTreeSet<u64>,
    /// Time a new connection has to send its handshake.
    pub handshake_timeout: Duration,
}

impl PeerIdentity {
    /// `None` when `hello` is acceptable, else the reason to refuse it.
    pub fn check(&self, hello: &Hello) -> Option<String> {
        if hello.magic != PEER_MAGIC {
            return Some("not a sluice peer".into());
        }
        if hello.version != PEER_VERSION {
            return Some(format!(
                "peer protocol version {} (this node speaks {PEER_VERSION})",
                hello.version
            ));
        }
        if hello.cluster_id != self.cluster_id {
            return Some(format!("cluster id {:?} is not this cluster", hello.cluster_id));
        }
        if hello.to != self.node_id {
            return Some(format!("this is node {}, not node {}", self.node_id, hello.to));
        }
        None
    }
}

/// Accepts peer connections on `listener` until the task is aborted;
/// aborting it also closes every connection it accepted (they live in its
/// `JoinSet`), so peers reconnect to whatever serves the port next.
pub fn spawn(
    listener: TcpListener,
    raft: Option<ControllerRaft>,
    identity: PeerIdentity,
    replication: ReplicationSlot,
) -> JoinHandle<()> {
    let identity = Arc::new(identity);
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (raft, identity, replication) =
                        (raft.clone(), Arc::clone(&identity), replication.clone());
                    conns.spawn(async move {
                        let mut conn = peer_wire::framed(stream);
                        if let Err(e) = serve(&mut conn, raft.as_ref(), &identity, &replication).await {
                            log_closed(peer, &e);
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "peer listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

fn log_closed(peer: SocketAddr, e: &PeerError) {
    match e {
        PeerError::Closed => tracing::debug!(%peer, "peer connection closed"),
        PeerError::Timeout(d) if *d == IDLE_TIMEOUT => {
            tracing::debug!(%peer, "idle peer connection closed");
        }
        _ => tracing::warn!(%peer, error = %e, "peer connection refused or dropped"),
    }
}

/// One connection: handshake, then requests until it closes or fails.
async fn serve(
    conn: &mut PeerConn,
    raft: Option<&ControllerRaft>,
    identity: &PeerIdentity,
    replication: &ReplicationSlot,
) -> Result<(), PeerError> {
    let hello: Hello = peer_wire::recv(conn, identity.handshake_timeout).await?;
    let service = replication.get();
    let member = identity.known.contains(&hello.from) || raft.is_some_and(|r| is_member(r, hello.from));
    let unknown = (!member).then(|| format!("node {} is not a member of this cluster", hello.from));
    let refusal = identity.check(&hello).or(unknown).or_else(|| match hello.channel {
        Channel::Controller if raft.is_none() => Some("no controller on this port".into()),
        Channel::Replication if service.is_none() => Some("replication is not running yet".into()),
        _ => None,
    });
    if let Some(why) = refusal {
        // Best effort: the dialer learns why before the close.
        let _ = peer_wire::send(conn, &HelloReply::Refused(why.clone())).await;
        return Err(PeerError::Refused(why));
    }
    peer_wire::send(conn, &HelloReply::Accepted).await?;
    let (Channel::Controller, Some(raft)) = (hello.channel, raft) else {
        return match service {
            Some(service) => service.serve(conn, hello.from).await,
            None => Err(PeerError::Closed),
        };
    };
    loop {
        let req: PeerRequest = peer_wire::recv(conn, IDLE_TIMEOUT).await?;
        let resp = handle(raft, req).await;
        peer_wire::send(conn, &resp).await?;
    }
}

async fn handle(raft: &ControllerRaft, req: PeerRequest) -> PeerResponse {
    match req {
        PeerRequest::AppendEntries(rpc) => {
            PeerResponse::AppendEntries(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
        }
        PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await.map_err(|e| e.to_string())),
        PeerRequest::FullSnapshot { vote, meta, data } => {
            let snapshot = openraft::type_config::alias::SnapshotOf::<TypeConfig, _> {
                meta,
                snapshot: std::io::Cursor::new(data),
            };
            PeerResponse::Snapshot(
                raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string()),
            )
        }
        PeerRequest::TransferLeader(rpc) => {
            PeerResponse::TransferLeader(raft.handle_transfer_leader(rpc).await.map_err(|e| e.to_string()))
        }
        PeerRequest::Propose(cmd) => PeerResponse::Propose(write_local(raft, cmd).await),
        PeerRequest::AddLearner { id, addr } => {
            PeerResponse::AddLearner(add_learner_local(raft, id, addr).await)
        }
    }
}

/// Whether `id` is a member of the controller group (a voter, or a node
/// added with `sluice cluster add-node`) as `raft` last saw its membership.
pub fn is_member(raft: &ControllerRaft, id: u64) -> bool {
    raft.metrics().borrow_watched().membership_config.membership().get_node(&id).is_some()
}

/// Whether `id` votes in the controller quorum, as `raft` last saw its
/// membership.
pub fn is_voter(raft: &ControllerRaft, id: u64) -> bool {
    raft.metrics().borrow_watched().membership_config.membership().voter_ids().any(|v| v == id)
}

/// Adds node `id` at `addr` as a non-voting member (a Raft learner)
/// through the local node, which must be the controller leader; a voter's
/// id is refused (re-adding it would demote nothing but could change its
/// address). Returns once the membership change is committed, without
/// waiting for the new node to catch up.
///
/// # Errors
/// `Refused`, `NotLeader` with the leader this node knows of, or `Raft`.
pub async fn add_learner_local(raft: &ControllerRaft, id: u64, addr: String) -> Result<(), WriteError> {
    if is_voter(raft, id) {
        return Err(WriteError::Refused(format!("node {id} is a voter already")));
    }
    if addr.trim().is_empty() {
        return Err(WriteError::Refused("the peer address is empty".into()));
    }
    match raft.add_learner(id, openraft::BasicNode::new(addr), false).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(WriteError::NotLeader(f.leader_id))
        }
        Err(e) => Err(WriteError::Raft(e.to_string())),
    }
}

/// Replicates and applies `cmd` through the local node, which must be the
/// controller leader.
///
/// # Errors
/// `NotLeader` with the leader this node knows of, or `Raft`.
pub async fn write_local(raft: &ControllerRaft, cmd: Command) -> Result<ApplyResult, WriteError> {
    match raft.client_write(cmd).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(WriteError::NotLeader(f.leader_id))
        }
        Err(e) => Err(WriteError::Raft(e.to_string())),
    }
}
