//! The broker's error type and the one place that maps internal errors to
//! wire error codes.

use sluice_protocol::batch::BatchError;
use sluice_protocol::ErrorCode;

use crate::storage::{SequenceError, StorageError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No such topic.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The topic has no such partition.
    #[error("topic `{topic}` has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// Partitions the topic has.
        count: u32,
    },
    /// The name breaks the rules.
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// Which rule.
        reason: &'static str,
    },
    /// The topic exists already.
    #[error("topic `{0}` already exists")]
    TopicAlreadyExists(String),
    /// A config key or value is invalid.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Bad partition count.
    #[error("invalid partition count {count}: must be between 1 and {max}")]
    InvalidPartitions {
        /// Asked for.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The topic's partitions would not fit in the open-files limit.
    #[error("topic `{topic}`: {partitions} partitions need {needed} open files but only {available} are left under the open-files limit (RLIMIT_NOFILE): raise `ulimit -n` or use fewer partitions")]
    OpenFileLimit {
        /// The topic.
        topic: String,
        /// Its partitions.
        partitions: u32,
        /// Descriptors they need.
        needed: usize,
        /// Descriptors left.
        available: usize,
    },
    /// A produced batch failed validation.
    #[error("corrupt batch: {0}")]
    CorruptBatch(#[source] BatchError),
    /// A durable produce was not flushed in time.
    #[error("not durable within {0} ms")]
    Timeout(u32),
    /// A storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The broker is stopping.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// A consumer-group error, with its code and explanation.
    #[error("{1}")]
    Group(ErrorCode, String),
    /// A bug or an unexpected failure; the log has details.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            BrokerError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            BrokerError::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
            BrokerError::TopicAlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            BrokerError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            BrokerError::InvalidPartitions { .. } | BrokerError::OpenFileLimit { .. } => {
                ErrorCode::InvalidPartitions
            }
            BrokerError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            BrokerError::Timeout(_) => ErrorCode::RequestTimedOut,
            BrokerError::ShuttingDown => ErrorCode::BrokerNotAvailable,
            BrokerError::Group(code, _) => *code,
            BrokerError::Internal(_) => ErrorCode::Unknown,
            BrokerError::Storage(e) => match e {
                StorageError::NoSpace { .. } => ErrorCode::NotEnoughSpace,
                StorageError::CorruptBatch { .. } | StorageError::InvalidBatch(_) => ErrorCode::CorruptBatch,
                StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                StorageError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
                StorageError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
                StorageError::Sequence(SequenceError::OutOfOrder { .. }) => ErrorCode::OutOfOrderSequence,
                StorageError::Sequence(SequenceError::InvalidEpoch { .. }) => ErrorCode::InvalidProducerEpoch,
                StorageError::Closed => ErrorCode::BrokerNotAvailable,
                StorageError::Io { .. } | StorageError::Failed { .. } => ErrorCode::StorageError,
                _ => ErrorCode::Unknown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_their_codes() {
        let no_space = StorageError::NoSpace { op: "append", path: "x".into() };
        assert_eq!(BrokerError::from(no_space).code(), ErrorCode::NotEnoughSpace);
        let range = StorageError::OffsetOutOfRange { offset: 9, log_start_offset: 0, log_end_offset: 3 };
        assert_eq!(BrokerError::from(range).code(), ErrorCode::OffsetOutOfRange);
        assert_eq!(BrokerError::CorruptBatch(BatchError::Empty).code(), ErrorCode::CorruptBatch);
    }
}
