//! Decoding requests and encoding responses with the `kafka-protocol`
//! crate's message types (its errors are `anyhow`: they become
//! [`MalformedRequest`]), and the mapping of the broker's errors to
//! Kafka's error codes.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use sluice_protocol::ErrorCode;

use super::MalformedRequest;
use crate::errors::BrokerError;
use crate::groups::GroupError;

/// The api and version a request came at.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    pub(super) api: ApiKey,
    pub(super) version: i16,
}

impl At {
    pub(super) fn malformed(self, reason: impl Into<String>) -> MalformedRequest {
        MalformedRequest { api: self.api, version: self.version, reason: reason.into() }
    }

    /// Decodes the whole of `body` as a `T` at this version.
    pub(super) fn decode<T: Decodable>(self, mut body: Bytes) -> Result<T, MalformedRequest> {
        let request = T::decode(&mut body, self.version).map_err(|e| self.malformed(e.to_string()))?;
        if body.has_remaining() {
            return Err(self.malformed(format!("{} bytes after the request", body.remaining())));
        }
        Ok(request)
    }

    /// Encodes `response` at this version.
    pub(super) fn encode<T: Encodable>(self, response: &T) -> Result<BytesMut, MalformedRequest> {
        let mut out = BytesMut::new();
        response
            .encode(&mut out, self.version)
            .map_err(|e| self.malformed(format!("encoding the response: {e}")))?;
        Ok(out)
    }
}

/// A Kafka string.
pub(super) fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's error code for a broker error.
pub(super) fn broker_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Group(GroupError::InconsistentProtocol { .. }) => {
            ResponseError::InconsistentGroupProtocol.code()
        }
        other => sluice_code(other.code()),
    }
}

/// Kafka's error code for a Sluice error code.
pub(super) fn sluice_code(code: ErrorCode) -> i16 {
    let kafka = match code {
        ErrorCode::None => return 0,
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ErrorCode::InvalidGroupId => ResponseError::InvalidGroupId,
        ErrorCode::UnknownGroup => ResponseError::GroupIdNotFound,
        ErrorCode::UnknownMemberId => ResponseError::UnknownMemberId,
        ErrorCode::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        ErrorCode::GroupNotEmpty => ResponseError::NonEmptyGroup,
        ErrorCode::TooManyGroups | ErrorCode::BrokerNotAvailable => ResponseError::CoordinatorNotAvailable,
        ErrorCode::InvalidRequest => ResponseError::InvalidRequest,
        ErrorCode::RequestTimedOut => ResponseError::RequestTimedOut,
        ErrorCode::NotEnoughSpace | ErrorCode::StorageError => ResponseError::KafkaStorageError,
        // The coordinator lost (or never had) the offsets partition's
        // leadership: the client finds the coordinator again (as Kafka maps
        // its offsets-log append errors).
        ErrorCode::NotCoordinator | ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch => {
            ResponseError::NotCoordinator
        }
        ErrorCode::NotEnoughReplicas => ResponseError::CoordinatorNotAvailable,
        _ => ResponseError::UnknownServerError,
    };
    kafka.code()
}
