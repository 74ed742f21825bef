//! The Sluice wire protocol, sans I/O: length-prefixed framing (a
//! `tokio_util` codec), the record-batch format shared by the wire and the
//! disk, request and response types, and the stable error codes.
//!
//! The codec opens no socket and no file. Two features add I/O on top of
//! it: `io`, the vectored frame writer over any async byte stream
//! (module `io`, shared by the broker and the client), and `client`, the
//! connection the producer, the consumer and the CLI share (module `client`)
//! and the producer's and consumer's leader routing (module `routing`).
//! The broker, the producer, the consumer and the CLI all speak through
//! these types; docs/format.md draws every byte.

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
#[cfg(feature = "io")]
pub mod io;
#[cfg(feature = "client")]
pub mod routing;
