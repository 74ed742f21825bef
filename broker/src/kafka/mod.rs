//! The Kafka listener: a second front door over the same partitions,
//! coordinator and committed offsets (DESIGN §11), speaking Kafka's wire
//! protocol with the `kafka-protocol` crate's message types.
//!
//! - [`listener`] accepts connections (sharing the native listener's
//!   `max_connections` permits and the broker's shutdown);
//! - `connection` reads frames and writes responses in request order;
//! - `wire` parses request headers and frames responses, `guard` checks a
//!   request's array counts against its length before any decoder
//!   allocates, `dispatch` routes a request to its api's module (one file
//!   per api: `metadata`, `produce`, `fetch`, `list_offsets`, `topics`,
//!   `configs`, `cluster`, `init_producer_id`; a clustered broker's view
//!   of the cluster in `clustered`; shared state in `state`,
//!   producer ids from `producer_ids`), and [`metrics`] counts and times each
//!   api under its own label;
//! - [`groups`] holds the group APIs (FindCoordinator, the classic group
//!   protocol, KIP-848's ConsumerGroupHeartbeat, offsets, group admin)
//!   behind one byte-level entry point, [`groups::KafkaGroups::handle`].
//!
//! Record batches are Kafka's RecordBatch v2 on disk (DESIGN §4): produce
//! appends the client's bytes as they are, fetch serves the segment bytes
//! without copying them.

mod alter_configs;
mod cluster;
mod clustered;
mod configs;
mod connection;
mod dispatch;
mod error;
mod fetch;
mod fetch_encode;
#[cfg(test)]
mod fetch_tests;
#[cfg(test)]
mod fuzz_tests;
pub mod groups;
mod guard;
mod init_producer_id;
mod list_offsets;
pub mod listener;
mod metadata;
pub mod metrics;
mod produce;
mod producer_ids;
mod state;
mod topics;
mod wire;

pub use error::KafkaError;
