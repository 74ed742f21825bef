//! The Kafka group APIs. The listener decodes a request's header and hands
//! the body of every api in [`KafkaGroups::APIS`] to [`KafkaGroups::handle`],
//! which decodes it at the request's version, answers it and encodes the
//! response body (the listener writes the response header).
//!
//! Kafka groups live on Sluice's one coordinator (DESIGN §11): committed
//! offsets are the native coordinator's ([`crate::groups`]), whatever
//! protocol committed them; KIP-848 members (ConsumerGroupHeartbeat) are
//! native members; classic groups (JoinGroup/SyncGroup, client-side
//! assignment) keep their membership in [`classic`], and report their
//! member count to the native coordinator so one group speaks one protocol
//! at a time. Every handler is one file; `handle` is a dispatch of one-line
//! calls. Waits (the rebalance barrier) are asynchronous; disk work (commits
//! and deletes fsync) runs on blocking threads.
//!
//! On a clustered broker only the coordinator (the leader of the internal
//! offsets partition, as FindCoordinator says) answers group requests;
//! every other broker answers NOT_COORDINATOR, and a client finds the
//! coordinator again.

pub mod classic;
mod codec;
mod consumer;
mod coordinator;
mod describe;
mod join;
mod membership;
mod offsets;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::broker::Broker;
use classic::{ClassicError, ClassicGroups};

/// Where Kafka clients reach this broker (FindCoordinator answers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The broker's node id.
    pub node_id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port of the Kafka listener.
    pub port: i32,
}

/// A request body that could not be decoded at its version, or an api this
/// module does not implement: the listener closes the connection.
#[derive(Debug, thiserror::Error)]
#[error("malformed {api:?} v{version} request: {reason}")]
pub struct MalformedRequest {
    /// The request's api.
    pub api: ApiKey,
    /// The request's version.
    pub version: i16,
    /// What was wrong.
    pub reason: String,
}

/// The group APIs' state, shared by every Kafka connection.
#[derive(Debug)]
pub struct KafkaGroups {
    /// The broker whose coordinator and offsets these APIs use.
    broker: Arc<Broker>,
    /// This broker as FindCoordinator reports it.
    endpoint: Endpoint,
    /// Classic groups' membership (their offsets are the broker's).
    classic: Arc<ClassicGroups>,
    /// KIP-848 members' last subscription and owned partitions.
    kip848: consumer::Memory,
}

/// How often empty classic groups are forgotten and idle ones moved along.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

impl KafkaGroups {
    /// The apis [`handle`](Self::handle) answers, with the lowest and
    /// highest version of each, for ApiVersions.
    pub const APIS: &'static [(ApiKey, i16, i16)] = &[
        (ApiKey::OffsetCommit, 2, 9),
        (ApiKey::OffsetFetch, 1, 9),
        (ApiKey::FindCoordinator, 0, 4),
        (ApiKey::JoinGroup, 0, 9),
        (ApiKey::Heartbeat, 0, 4),
        (ApiKey::LeaveGroup, 0, 5),
        (ApiKey::SyncGroup, 0, 5),
        (ApiKey::DescribeGroups, 0, 5),
        (ApiKey::ListGroups, 0, 5),
        (ApiKey::DeleteGroups, 0, 2),
        (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    ];

    /// Group APIs over `broker`, reached at `endpoint`. Inside a tokio
    /// runtime it starts a sweeper (until the broker shuts down) that
    /// expires idle classic members and forgets empty groups.
    pub fn new(broker: Arc<Broker>, endpoint: Endpoint) -> Self {
        let claims = Arc::clone(&broker);
        let claim: classic::Claim = Arc::new(move |group: &str, members: usize| {
            claims.groups.set_classic_members(group, members, claims.config.max_groups).map_err(|e| match e {
                crate::errors::BrokerError::Group(crate::groups::GroupError::TooManyGroups { .. }) => {
                    ClassicError::CoordinatorNotAvailable
                }
                _ => ClassicError::InconsistentProtocol,
            })
        });
        let classic = Arc::new(ClassicGroups::new(
            Duration::from_millis(broker.config.group_initial_rebalance_delay_ms),
            broker.config.max_groups,
            claim,
            broker.shutdown.child_token(),
        ));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::clone(&classic), broker.shutdown.child_token()));
        }
        Self { broker, endpoint, classic, kip848: Default::default() }
    }

    /// Decodes `body` as an `api` request at `version`, handles it (a
    /// JoinGroup may wait for the rebalance) and returns the encoded
    /// response body at `version`, without the response header.
    ///
    /// # Errors
    /// [`MalformedRequest`] when the body does not decode or `api` is not in
    /// [`APIS`](Self::APIS) at `version`.
    pub async fn handle(&self, api: ApiKey, version: i16, body: Bytes) -> Result<BytesMut, MalformedRequest> {
        let supported = Self::APIS.iter().any(|(a, min, max)| *a == api && (*min..=*max).contains(&version));
        if !supported {
            return Err(MalformedRequest { api, version, reason: "api or version not supported".into() });
        }
        let at = codec::At { api, version };
        match api {
            ApiKey::FindCoordinator => coordinator::find(self, at, body),
            ApiKey::JoinGroup => join::join(self, at, body).await,
            ApiKey::SyncGroup => join::sync(self, at, body).await,
            ApiKey::Heartbeat => membership::heartbeat(self, at, body),
            ApiKey::LeaveGroup => membership::leave(self, at, body),
            ApiKey::OffsetCommit => offsets::commit(self, at, body).await,
            ApiKey::OffsetFetch => offsets::fetch(self, at, body),
            ApiKey::ListGroups => describe::list(self, at, body),
            ApiKey::DescribeGroups => describe::describe(self, at, body),
            ApiKey::DeleteGroups => describe::delete(self, at, body).await,
            ApiKey::ConsumerGroupHeartbeat => consumer::heartbeat(self, at, body).await,
            _ => Err(at.malformed("not a group api")),
        }
    }
}

impl KafkaGroups {
    /// NOT_COORDINATOR's code when this broker does not coordinate groups
    /// now (a clustered broker that does not lead `__sluice_offsets`).
    fn not_coordinator(&self) -> Option<i16> {
        let refused = self.broker.groups.check_coordinator().err()?;
        Some(codec::broker_code(&refused))
    }
}

/// Sweeps the classic groups until `stop`.
async fn sweep(classic: Arc<ClassicGroups>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => classic.sweep(),
        }
    }
}
