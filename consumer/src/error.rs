//! The consumer's error type.

use sluice_protocol::client::ClientError;
use sluice_protocol::ErrorCode;

/// Why a consumer operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The broker could not be reached or answered with an error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A fetched batch failed its CRC or structure checks.
    #[error("corrupt batch in {topic}/{partition} at offset {offset}: {reason}")]
    CorruptBatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Fetch offset.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// Fetching a partition failed with this code from the broker: at
    /// once for a code retrying cannot fix (e.g. `CorruptBatch`: the stored
    /// batch at `offset` is damaged), after several failures in a row for a
    /// retriable one. The partition is refetched with backoff; `seek` past
    /// `offset` to skip a corrupt batch.
    #[error("fetching {topic}/{partition} at offset {offset} failed ({failures} in a row): {code}")]
    Fetch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The offset fetched (the partition's next offset).
        offset: u64,
        /// The broker's error code.
        code: ErrorCode,
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Some offsets were not committed.
    #[error("commit refused for {count} partition(s): {code:?}")]
    Commit {
        /// How many partitions failed.
        count: usize,
        /// The first failure's code.
        code: ErrorCode,
    },
    /// A configuration or usage error.
    #[error("{0}")]
    Config(String),
    /// The consumer was closed.
    #[error("the consumer is closed")]
    Closed,
}

impl ConsumerError {
    /// The topic, partition and (logical) offset a fetch failure is about.
    /// (Named `position` before the offset/position vocabulary was settled;
    /// kept, as callers and tests use it.)
    pub fn position(&self) -> Option<(&str, u32, u64)> {
        match self {
            ConsumerError::Fetch { topic, partition, offset, .. }
            | ConsumerError::CorruptBatch { topic, partition, offset, .. } => {
                Some((topic.as_str(), *partition, *offset))
            }
            _ => None,
        }
    }
}
