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
//! Delivery is at-least-once: a committed offset only moves when the
//! application's records were processed. Auto-commit commits, on its
//! interval, only records that were handed out by `poll` *and* followed by
//! another `poll` call (so they were processed). `commit()` commits
//! everything handed out so far. `close()` commits what was handed out
//! (auto mode) and leaves the group so its partitions move at once.
//!
//! Revoked partitions are released to the group only inside `poll` (as in
//! Kafka), never between polls behind the application's back: once the
//! group revokes a partition no more of its records are handed out, and
//! the next `poll` commits what was processed of it (auto mode) and only
//! then releases it. With manual commits, [`Consumer::poll_event`]
//! announces the revocation first ([`Polled::Revoked`], like Kafka's
//! `onPartitionsRevoked`): commit what you processed, and the next poll
//! releases the partitions. An application that processes, then commits,
//! so never loses a record (a crash replays what was processed after the
//! last commit) and never has a processed, committed record read again by
//! the next owner. A member that does not poll within its session timeout
//! of a revocation loses the partition without a commit (the group moved
//! it), and its uncommitted records are read again by the next owner.

mod consumer;
mod error;

pub use consumer::{AssignmentEvent, Consumer, ConsumerBuilder, ConsumerRecord, OffsetReset, Polled};
pub use error::ConsumerError;
/// The partition name `assign` and `commit_offsets` take (as do
/// `(topic, partition)` pairs).
pub use sluice_protocol::TopicPartition;
