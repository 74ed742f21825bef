//! The Kafka listener: a second front door over the same partitions,
//! coordinator and committed offsets (DESIGN §11), speaking Kafka's wire
//! protocol with the `kafka-protocol` crate's message types.
//!
//! [`groups`] holds the group APIs (FindCoordinator, the classic group
//! protocol, KIP-848's ConsumerGroupHeartbeat, offsets, group admin)
//! behind one byte-level entry point, [`groups::KafkaGroups::handle`].

pub mod groups;
