//! The internal topic that holds a cluster's committed offsets,
//! `__sluice_offsets` (docs/cluster.md, "Groups").
//!
//! In cluster mode committed offsets are records of this topic's partition 0
//! (the same records the single-node store writes: key (group, topic,
//! partition), value offset and metadata, a `topic-id` header), so they are
//! replicated like any partition, and the group coordinator is that
//! partition's leader. One partition: every group's offsets in one log, one
//! coordinator for the whole cluster; enough for the group counts Sluice is
//! built for, and more partitions (a group hashed to one) can come later
//! without changing the records.
//!
//! Invariants: clients never create, delete, alter or write this topic
//! ([`refuse_client_change`]), and topic listings leave it out unless it is
//! asked for by name ([`is_internal`]). It is created through the controller
//! at bootstrap (`reconcile::offsets`), never by a client.

use std::collections::BTreeMap;

use crate::errors::BrokerError;

/// The internal topic's name.
pub const OFFSETS_TOPIC: &str = sluice_protocol::api::OFFSETS_TOPIC;

/// Its partitions (every group lives in partition 0).
pub const OFFSETS_PARTITIONS: u32 = 1;

/// Whether `name` is an internal topic (hidden from listings, not
/// changed or written by clients).
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// The internal topic's settings: every commit fsynced, nothing ever
/// deleted by retention (time or size), log-append timestamps (a commit's
/// time is the coordinator's clock).
pub fn topic_config() -> BTreeMap<String, String> {
    [
        ("fsync", "always"),
        ("retention_ms", "0"),
        ("retention_bytes", "0"),
        ("message_timestamp", "log_append"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Refuses a client's create, delete, alter or write of an internal topic.
///
/// # Errors
/// `InvalidTopicName` for an internal topic.
pub fn refuse_client_change(name: &str) -> Result<(), BrokerError> {
    if is_internal(name) {
        return Err(BrokerError::InvalidTopicName {
            name: name.to_owned(),
            reason:
                "is the cluster's internal offsets topic: clients may not create, change, delete or write it",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offsets_topic_is_internal_and_its_config_is_valid() {
        assert!(is_internal(OFFSETS_TOPIC) && !is_internal("orders"));
        assert!(refuse_client_change(OFFSETS_TOPIC).is_err());
        assert!(refuse_client_change("orders").is_ok());
        let mut c = crate::storage::LogConfig::default();
        for (k, v) in topic_config() {
            c.set(&k, &v).unwrap();
        }
        assert_eq!(c.fsync, crate::storage::FsyncPolicy::Always);
        assert_eq!((c.retention_ms, c.retention_bytes), (0, 0));
        crate::topics::validate_topic_name(OFFSETS_TOPIC).unwrap();
    }
}
