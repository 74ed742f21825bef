//! openraft's network over the peer protocol: one lazily (re)connected
//! peer connection per remote node and purpose; a request that fails
//! drops the connection, and the next one dials again.

use std::future::Future;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};

use super::peer_wire::{
    self, Hello, PeerConn, PeerError, PeerRequest, PeerResponse, PEER_MAGIC, PEER_VERSION,
};
use super::types::{Snapshot, TypeConfig, Vote};

/// Longest wait for a connection and handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes a [`PeerClient`] per remote node for openraft.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    /// The cluster id presented in every handshake.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: u64,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        let hello = Hello {
            magic: PEER_MAGIC.into(),
            version: PEER_VERSION,
            cluster_id: self.cluster_id.clone(),
            from: self.node_id,
            to: target,
            channel: peer_wire::Channel::Controller,
        };
        PeerClient { addr: node.addr.clone(), hello, conn: None }
    }
}

/// A connection to one remote controller node.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    hello: Hello,
    conn: Option<PeerConn>,
}

fn to_rpc_error(e: PeerError) -> RPCError<TypeConfig> {
    match e {
        PeerError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

fn remote(e: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("remote: {e}")))
}

fn unexpected() -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string("peer answered with the wrong response type"))
}

impl PeerClient {
    /// Sends `req` and waits (at most `limit`) for its answer.
    async fn call(
        &mut self,
        req: &PeerRequest,
        limit: Duration,
    ) -> Result<PeerResponse, RPCError<TypeConfig>> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => peer_wire::dial(&self.addr, &self.hello, CONNECT_TIMEOUT.min(limit))
                .await
                .map_err(to_rpc_error)?,
        };
        let mut conn = conn;
        peer_wire::send(&mut conn, req).await.map_err(to_rpc_error)?;
        let resp = peer_wire::recv(&mut conn, limit).await.map_err(to_rpc_error)?;
        // Only a connection that completed an exchange is reused.
        self.conn = Some(conn);
        Ok(resp)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&PeerRequest::AppendEntries(rpc), option.hard_ttl()).await? {
            PeerResponse::AppendEntries(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await? {
            PeerResponse::Vote(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req =
            PeerRequest::FullSnapshot { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        let call = self.call(&req, option.hard_ttl());
        tokio::pin!(cancel);
        let resp = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            resp = call => resp,
        };
        let unexpected_err = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
        };
        match resp.map_err(unexpected_err)? {
            PeerResponse::Snapshot(r) => r.map_err(|e| unexpected_err(remote(e))),
            _ => Err(unexpected_err(unexpected())),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&PeerRequest::TransferLeader(rpc), option.hard_ttl()).await? {
            PeerResponse::TransferLeader(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }
}
