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
