//! The producer's error type.

use std::time::Duration;

use sluice_protocol::client::ClientError;
use sluice_protocol::ErrorCode;

/// Why a record was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The topic does not exist.
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
    /// A record (or the batch holding it) is larger than `buffer_memory`,
    /// `max_request_bytes`, its topic's `max_message_bytes` or the broker's
    /// frame limit allow. Never retried.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The record's encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The broker refused the batch (not retriable, or retries exhausted).
    #[error("broker refused the batch: {code:?}: {message}")]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The batch was not acknowledged within `delivery_timeout`.
    #[error("not acknowledged within the delivery timeout of {0:?}")]
    DeliveryTimeout(Duration),
    /// The broker could not be reached (and retries were exhausted).
    #[error("connection failed: {0}")]
    Connection(#[from] ClientError),
    /// The producer was closed.
    #[error("the producer is closed")]
    Closed,
}

impl ProducerError {
    /// The broker's error code, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ProducerError::Broker { code, .. } => Some(*code),
            ProducerError::Connection(e) => e.code(),
            _ => None,
        }
    }
}
