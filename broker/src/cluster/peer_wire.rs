//! The peer protocol on `--peer-listen`: length-prefixed frames
//! (`sluice_protocol`'s [`FrameCodec`], its maximum checked before any
//! allocation), each a JSON message.
//!
//! A connection starts with the dialer's [`Hello`] (magic, version, cluster
//! id, its node id, the node id it expects to reach) and the listener's
//! [`HelloReply`]; a foreign magic, another cluster id, an unknown dialer
//! or the wrong target is refused and the connection closed. Then the
//! dialer sends requests, one at a time, each answered by one response. On
//! the [`Channel::Controller`] channel they are JSON [`PeerRequest`]s:
//! openraft's RPCs, and controller commands a follower forwards to the
//! leader. On the [`Channel::Replication`] channel they are binary
//! replication frames (`crate::replication::wire`), served by the broker's
//! replica manager.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_protocol::FrameCodec;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::state::{ApplyResult, Command};
use super::types::{SnapshotMeta, TypeConfig, Vote};

/// The first bytes of meaning on a peer connection.
pub const PEER_MAGIC: &str = "sluice-peer";
/// The peer protocol version this build speaks.
pub const PEER_VERSION: u16 = 1;
/// Largest peer frame (a controller snapshot must fit).
pub const MAX_PEER_FRAME: usize = sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES;

/// A framed peer connection.
pub type PeerConn = Framed<TcpStream, FrameCodec>;

/// The dialer's handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PEER_MAGIC`].
    pub magic: String,
    /// The dialer's protocol version.
    pub version: u16,
    /// The cluster the dialer belongs to.
    pub cluster_id: String,
    /// The dialer's node id.
    pub from: u64,
    /// The node id the dialer means to reach.
    pub to: u64,
    /// What the connection carries after the handshake (controller RPCs
    /// when absent, as from a dialer that predates the field).
    #[serde(default)]
    pub channel: Channel,
}

/// What a peer connection carries after its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Channel {
    /// Controller traffic: openraft RPCs and forwarded proposals, as JSON
    /// [`PeerRequest`]s.
    #[default]
    Controller,
    /// Partition replication: binary frames (`crate::replication::wire`)
    /// so record batches travel as they are stored.
    Replication,
}

/// The listener's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Requests may follow.
    Accepted,
    /// Refused, with the reason; the listener closes the connection.
    Refused(String),
}

/// A Raft RPC from one controller node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A vote (or pre-vote) request.
    Vote(VoteRequest<TypeConfig>),
    /// A whole snapshot for a lagging follower.
    FullSnapshot {
        /// The leader's vote.
        vote: Vote,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The snapshot bytes.
        data: Vec<u8>,
    },
    /// Hand leadership over.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A controller command forwarded by a node that is not the leader.
    Propose(Command),
    /// `sluice cluster add-node`, forwarded to the leader: add this node
    /// as a non-voting member at this peer address.
    AddLearner {
        /// The new node's id.
        id: u64,
        /// Its peer address.
        addr: String,
    },
}

/// The answer to a [`PeerRequest`]; `Err` carries the remote failure's text.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To [`PeerRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, String>),
    /// To [`PeerRequest::Vote`].
    Vote(Result<VoteResponse<TypeConfig>, String>),
    /// To [`PeerRequest::FullSnapshot`].
    Snapshot(Result<SnapshotResponse<TypeConfig>, String>),
    /// To [`PeerRequest::TransferLeader`].
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
    /// To [`PeerRequest::Propose`].
    Propose(Result<ApplyResult, WriteError>),
    /// To [`PeerRequest::AddLearner`].
    AddLearner(Result<(), WriteError>),
}

/// Why a proposed command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// The node asked is not the controller leader.
    #[error("not the controller leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    /// The Raft node failed or is stopping.
    #[error("controller raft: {0}")]
    Raft(String),
    /// The request is not acceptable (a node id that is a voter, ...).
    #[error("{0}")]
    Refused(String),
}

/// Why a peer exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Connecting, reading or writing failed, or the frame was too large.
    #[error("peer connection: {0}")]
    Frame(#[from] sluice_protocol::FrameError),
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// Nothing arrived in time.
    #[error("peer timed out after {0:?}")]
    Timeout(Duration),
    /// A frame that is not the expected JSON message.
    #[error("malformed peer message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The handshake was refused.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
}

/// Wraps a TCP stream in the peer framing.
pub fn framed(stream: TcpStream) -> PeerConn {
    Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME))
}

/// Sends one message as a frame.
///
/// # Errors
/// Encoding or socket errors.
pub async fn send<T: Serialize>(conn: &mut PeerConn, msg: &T) -> Result<(), PeerError> {
    let bytes = serde_json::to_vec(msg)?;
    conn.send(Bytes::from(bytes)).await?;
    Ok(())
}

/// Receives one message, waiting at most `limit`.
///
/// # Errors
/// Timeout, a closed connection, a framing error (e.g. a declared length
/// over the maximum) or a frame that is not a `T`.
pub async fn recv<T: DeserializeOwned>(conn: &mut PeerConn, limit: Duration) -> Result<T, PeerError> {
    let frame = tokio::time::timeout(limit, conn.next()).await.map_err(|_| PeerError::Timeout(limit))?;
    let frame = frame.ok_or(PeerError::Closed)??;
    Ok(serde_json::from_slice(&frame)?)
}

/// Connects to `addr` and performs the dialer's handshake.
///
/// # Errors
/// Connect failures, timeouts, or a refused handshake.
pub async fn dial(addr: &str, hello: &Hello, limit: Duration) -> Result<PeerConn, PeerError> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout(limit))?
        .map_err(PeerError::Connect)?;
    stream.set_nodelay(true).map_err(PeerError::Connect)?;
    let mut conn = framed(stream);
    send(&mut conn, hello).await?;
    match recv::<HelloReply>(&mut conn, limit).await? {
        HelloReply::Accepted => Ok(conn),
        HelloReply::Refused(why) => Err(PeerError::Refused(why)),
    }
}
