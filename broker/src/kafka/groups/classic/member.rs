//! One member of a Kafka classic group, the requests the state machine
//! takes, and the answers it gives (now, or later through a channel).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a classic group request was refused; mapped to Kafka's error codes
/// in one place ([`ClassicError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    /// The member id is not one of the group's (it expired, left, or the
    /// group was emptied): the member must rejoin with an empty id.
    #[error("unknown member")]
    UnknownMember,
    /// The request names another generation than the group's.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing: the member must rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// A first join (v4+): the member must join again with this id.
    #[error("member id required: rejoin as `{member_id}`")]
    MemberIdRequired {
        /// The id to rejoin with.
        member_id: String,
    },
    /// The member's protocol type or protocols match none of the group's,
    /// or the group is used by native/KIP-848 members.
    #[error("inconsistent group protocol")]
    InconsistentProtocol,
    /// The session timeout is outside the accepted range.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// The group has as many members as it may.
    #[error("the group is full")]
    GroupFull,
    /// Another member took this static member's `group.instance.id`.
    #[error("fenced instance id")]
    FencedInstance,
    /// The coordinator could not take the request (too many groups).
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// This broker does not coordinate groups now (cluster mode): the
    /// member finds the coordinator again.
    #[error("not the coordinator")]
    NotCoordinator,
}

impl ClassicError {
    /// Kafka's error code.
    pub fn code(&self) -> i16 {
        match self {
            ClassicError::UnknownMember => ResponseError::UnknownMemberId,
            ClassicError::IllegalGeneration => ResponseError::IllegalGeneration,
            ClassicError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            ClassicError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
            ClassicError::InconsistentProtocol => ResponseError::InconsistentGroupProtocol,
            ClassicError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
            ClassicError::GroupFull => ResponseError::GroupMaxSizeReached,
            ClassicError::FencedInstance => ResponseError::FencedInstanceId,
            ClassicError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            ClassicError::NotCoordinator => ResponseError::NotCoordinator,
        }
        .code()
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty on a first join.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client's id (for describe).
    pub client_id: String,
    /// The client's address (for describe).
    pub client_host: String,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// The member's protocols (assignors), preferred first, with its
    /// metadata for each.
    pub protocols: Vec<(String, Bytes)>,
    /// Missing heartbeats this long removes the member.
    pub session_timeout: Duration,
    /// How long a rebalance waits for the member to rejoin.
    pub rebalance_timeout: Duration,
    /// JoinGroup v4+: a first join is answered MEMBER_ID_REQUIRED.
    pub require_known_id: bool,
}

/// A member as the leader learns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// The member's id.
    pub member_id: String,
    /// Its `group.instance.id`.
    pub instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A completed join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol (assignor) chosen by vote.
    pub protocol: String,
    /// The leader's id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member (for the leader only; empty for followers).
    pub members: Vec<JoinedMember>,
}

/// What a JoinGroup gets.
pub type JoinOutcome = Result<JoinResult, ClassicError>;
/// What a SyncGroup gets: the member's assignment.
pub type SyncOutcome = Result<Bytes, ClassicError>;

/// An answer now, or one to wait for (the rebalance barrier).
#[derive(Debug)]
pub enum Reply<T> {
    /// Answered at once.
    Now(T),
    /// Answered when the group moves on.
    Wait(oneshot::Receiver<T>),
}

/// A member's state in its group.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<(String, Bytes)>,
    /// The last request that proved the member alive.
    pub(super) last_seen: Instant,
    /// Join order: the first member leads.
    pub(super) seq: u64,
    /// A JoinGroup waiting for the rebalance to complete.
    pub(super) joining: Option<oneshot::Sender<JoinOutcome>>,
    /// A follower's SyncGroup waiting for the leader's assignments.
    pub(super) syncing: Option<oneshot::Sender<SyncOutcome>>,
    /// What the leader assigned it this generation.
    pub(super) assignment: Bytes,
}

impl Member {
    pub(super) fn new(req: &JoinRequest, seq: u64, now: Instant) -> Self {
        Self {
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            last_seen: now,
            seq,
            joining: None,
            syncing: None,
            assignment: Bytes::new(),
        }
    }

    /// Takes the request's protocols and timeouts; returns whether the
    /// protocols (or their metadata) changed.
    pub(super) fn update(&mut self, req: &JoinRequest, now: Instant) -> bool {
        let changed = self.protocols != req.protocols || self.protocol_type != req.protocol_type;
        self.protocols = req.protocols.clone();
        self.protocol_type = req.protocol_type.clone();
        self.session_timeout = req.session_timeout;
        self.rebalance_timeout = req.rebalance_timeout;
        self.client_id = req.client_id.clone();
        self.client_host = req.client_host.clone();
        self.last_seen = now;
        changed
    }

    /// Its metadata for `protocol`.
    pub(super) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(p, _)| p == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    /// A request of its is waiting: it is alive, whatever its session says.
    pub(super) fn waiting(&self) -> bool {
        self.joining.is_some() || self.syncing.is_some()
    }

    /// Forgets waiting requests nobody waits for any more (the client's
    /// connection closed): such a member has not rejoined, and its session
    /// runs again.
    pub(super) fn drop_abandoned(&mut self) {
        if self.joining.as_ref().is_some_and(oneshot::Sender::is_closed) {
            self.joining = None;
        }
        if self.syncing.as_ref().is_some_and(oneshot::Sender::is_closed) {
            self.syncing = None;
        }
    }

    /// Answers its waiting requests with `err` (it left or was removed).
    pub(super) fn fail_waiters(&mut self, err: &ClassicError) {
        if let Some(tx) = self.joining.take() {
            let _ = tx.send(Err(err.clone()));
        }
        if let Some(tx) = self.syncing.take() {
            let _ = tx.send(Err(err.clone()));
        }
    }
}
