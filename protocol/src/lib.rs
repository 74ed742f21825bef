//! The Sluice wire protocol, sans I/O: length-prefixed framing (a
//! `tokio_util` codec), the record-batch format shared by the wire and the
//! disk, request and response types, and the stable error codes.
//!
//! Nothing here opens a socket or a file. The broker, the producer, the
//! consumer and the CLI all speak through these types; docs/format.md draws
//! every byte.

pub mod batch;
pub mod error_code;
pub mod frame;
pub mod topic_partition;
pub mod wire;

pub use error_code::ErrorCode;
pub use frame::{FrameCodec, FrameError};
pub use topic_partition::{TopicPartition, TopicPartitions};
pub use wire::{Reader, WireError, Writer};
pub mod api;
#[cfg(feature = "client")]
pub mod client;
