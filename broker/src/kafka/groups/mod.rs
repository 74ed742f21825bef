//! The Kafka group APIs. The listener decodes a request's header and hands
//! the body of every api in [`KafkaGroups::APIS`] to [`KafkaGroups::handle`],
//! which decodes it at the request's version, answers it and encodes the
//! response body (the listener writes the response header).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::broker::Broker;

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
}

impl KafkaGroups {
    /// The apis [`handle`](Self::handle) answers, with the lowest and
    /// highest version of each, for ApiVersions.
    pub const APIS: &'static [(ApiKey, i16, i16)] = &[];

    /// Group APIs over `broker`, reached at `endpoint`.
    pub fn new(broker: Arc<Broker>, endpoint: Endpoint) -> Self {
        Self { broker, endpoint }
    }

    /// Decodes `body` as an `api` request at `version`, handles it (a
    /// JoinGroup may wait for the rebalance) and returns the encoded
    /// response body at `version`, without the response header.
    ///
    /// # Errors
    /// [`MalformedRequest`] when the body does not decode or `api` is not in
    /// [`APIS`](Self::APIS).
    pub async fn handle(
        &self,
        api: ApiKey,
        version: i16,
        body: Bytes,
    ) -> Result<BytesMut, MalformedRequest> {
        let _ = (&self.broker, &self.endpoint, body);
        Err(MalformedRequest { api, version, reason: "not implemented".into() })
    }
}
