//! The Kafka listener's errors, and the one place that maps the broker's
//! errors to Kafka's error codes.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use sluice_protocol::ErrorCode;

use crate::errors::BrokerError;

/// Why a Kafka request could not be answered: the connection closes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The frame is shorter than a request header.
    #[error("request of {len} bytes is shorter than a request header")]
    ShortHeader {
        /// The frame's length.
        len: usize,
    },
    /// The api key is not one of Kafka's.
    #[error("unknown api key {key}")]
    UnknownApi {
        /// The key.
        key: i16,
    },
    /// The api is not served at this version (or not at all).
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion {
        /// The api.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not decode at its version.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The api.
        api: ApiKey,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
    /// A response could not be encoded (a value out of the wire's range).
    #[error("cannot encode the {api:?} v{version} response: {reason}")]
    Encode {
        /// The api.
        api: ApiKey,
        /// The version.
        version: i16,
        /// What the encoder said.
        reason: String,
    },
}

/// Kafka's error code for a broker error.
pub fn code(e: &BrokerError) -> i16 {
    code_of(e.code())
}

/// Kafka's error code for a Sluice error code.
pub fn code_of(code: ErrorCode) -> i16 {
    let kafka = match code {
        ErrorCode::None => return 0,
        ErrorCode::CorruptBatch => ResponseError::CorruptMessage,
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ErrorCode::BatchTooLarge => ResponseError::MessageTooLarge,
        ErrorCode::InvalidTopicName => ResponseError::InvalidTopicException,
        ErrorCode::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
        ErrorCode::UnsupportedVersion => ResponseError::UnsupportedVersion,
        ErrorCode::InvalidRequest => ResponseError::InvalidRequest,
        ErrorCode::NotEnoughSpace | ErrorCode::StorageError => ResponseError::KafkaStorageError,
        ErrorCode::RequestTimedOut => ResponseError::RequestTimedOut,
        ErrorCode::DuplicateSequence => ResponseError::DuplicateSequenceNumber,
        ErrorCode::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        ErrorCode::InvalidConfig => ResponseError::InvalidConfig,
        ErrorCode::InvalidPartitions => ResponseError::InvalidPartitions,
        ErrorCode::BrokerNotAvailable => ResponseError::NotLeaderOrFollower,
        ErrorCode::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        ErrorCode::InvalidTimestamp => ResponseError::InvalidTimestamp,
        ErrorCode::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        ErrorCode::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        ErrorCode::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        ErrorCode::InvalidReplicationFactor => ResponseError::InvalidReplicationFactor,
        ErrorCode::ControllerNotAvailable => ResponseError::NotController,
        ErrorCode::NotCoordinator => ResponseError::NotCoordinator,
        _ => ResponseError::UnknownServerError,
    };
    kafka.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kafkas() {
        assert_eq!(code_of(ErrorCode::None), 0);
        assert_eq!(code_of(ErrorCode::UnknownTopic), 3);
        assert_eq!(code_of(ErrorCode::OffsetOutOfRange), 1);
        assert_eq!(code_of(ErrorCode::OutOfOrderSequence), 45);
        assert_eq!(code_of(ErrorCode::InvalidProducerEpoch), 47);
        assert_eq!(code_of(ErrorCode::Unknown), -1);
        let e = BrokerError::UnknownPartition { topic: "t".into(), partition: 9, count: 1 };
        assert_eq!(code(&e), 3);
    }
}
