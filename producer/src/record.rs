//! What an application sends and what it gets back.

use std::sync::Arc;

use bytes::Bytes;

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic name (shared: a hot loop clones one `Arc` per record).
    pub topic: Arc<str>,
    /// Explicit partition; otherwise chosen by the partitioner.
    pub partition: Option<u32>,
    /// Key: decides the partition (murmur2) and is stored with the record.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Timestamp in ms since the epoch. When absent, the time its batch
    /// opened (the clock is read once per batch, not per record): at most
    /// about `linger` before the `send`.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Offset reported for records sent with `acks = none` (never acknowledged).
pub const UNKNOWN_OFFSET: u64 = u64::MAX;

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset ([`UNKNOWN_OFFSET`] with `acks = none`).
    pub offset: u64,
    /// The record's timestamp (the broker's append time if the topic uses it).
    pub timestamp: i64,
}
