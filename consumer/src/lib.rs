//! The Sluice consumer: consumer groups with broker-side assignment,
//! prefetching fetches, and commits that only move when the application
//! has processed records (at-least-once).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_consumer::ConsumerError> {
//! use std::time::Duration;
//! use sluice_consumer::Consumer;
//! let consumer = Consumer::builder().bootstrap("127.0.0.1:9500").group("billing").subscribe(["orders"]).build().await?;
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     for r in &records {
//!         println!("{}/{} {:?}", r.partition, r.offset, r.value);
//!     }
//!     // Auto-commit (the default) commits these once the next poll starts.
//!     # break;
//! }
//! consumer.close().await?;
//! # Ok(()) }
//! ```
//!
//! Auto-commit commits, on its interval, only records that were handed out
//! by `poll` *and* followed by another `poll` call (so they were
//! processed). `commit()` commits everything handed out so far. On a
//! revocation the consumer commits what was processed (auto mode) before
//! releasing the partition; `close()` commits what was handed out (auto
//! mode) and leaves the group so its partitions move at once.

mod consumer;
mod error;

pub use consumer::{AssignmentEvent, Consumer, ConsumerBuilder, ConsumerRecord, OffsetReset, Polled};
pub use error::ConsumerError;
/// The partition name `assign` and `commit_offsets` take (as do
/// `(topic, partition)` pairs).
pub use sluice_protocol::TopicPartition;
