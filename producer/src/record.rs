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
}

/// A record of a call addressed to one topic
/// ([`Producer::send_messages`](crate::Producer::send_messages)): a
/// [`Record`] without its topic. The call borrows its messages (their
/// bytes are copied into batches as they are appended), so an application
/// may build them once and send them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Explicit partition; otherwise chosen by the partitioner.
    pub partition: Option<u32>,
    /// Key: decides the partition (murmur2) and is stored with the record.
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Timestamp in ms since the epoch; when absent, its batch's (as for a
    /// [`Record`]).
    pub timestamp: Option<i64>,
}

impl Message {
    /// A message with a value and nothing else.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self { value: Some(value.into()), ..Self::default() }
    }
}

/// What the send paths read of a record, borrowed: its fields but the topic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub partition: Option<u32>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Bytes>)],
    pub timestamp: Option<i64>,
}

/// A [`Record`] or a [`Message`], as the send paths read it.
pub(crate) trait Outgoing {
    fn fields(&self) -> Fields<'_>;
}

/// The setters and the send paths' view that [`Record`] and [`Message`]
/// share: the same fields but the topic.
macro_rules! record_fields {
    ($ty:ident) => {
        impl $ty {
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

        impl Outgoing for $ty {
            #[inline]
            fn fields(&self) -> Fields<'_> {
                Fields {
                    partition: self.partition,
                    key: self.key.as_deref(),
                    value: self.value.as_deref(),
                    headers: &self.headers,
                    timestamp: self.timestamp,
                }
            }
        }
    };
}

record_fields!(Record);
record_fields!(Message);

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
