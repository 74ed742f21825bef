//! The stable wire error codes. Values never change meaning once released;
//! new codes are appended. Internal errors are mapped to these in exactly one
//! place per side (the broker's `errors` module, the clients' connection).

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $retriable:literal, $text:literal; )*) => {
        /// A wire error code (`u16`). `None` (0) means success.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl ErrorCode {
            /// Every known code, in value order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code for a wire value; unknown values (from a newer peer)
            /// become [`ErrorCode::Unknown`].
            pub fn from_u16(value: u16) -> Self {
                match value {
                    $( $value => ErrorCode::$name, )*
                    _ => ErrorCode::Unknown,
                }
            }

            /// Whether retrying the same request later may succeed.
            pub fn is_retriable(self) -> bool {
                match self { $( ErrorCode::$name => $retriable, )* }
            }

            /// The code's name.
            pub fn name(self) -> &'static str {
                match self { $( ErrorCode::$name => stringify!($name), )* }
            }

            /// The one-line meaning, as documented in docs/format.md.
            pub fn description(self) -> &'static str {
                match self { $( ErrorCode::$name => $text, )* }
            }
        }
    };
}

error_codes! {
    /// Success.
    None = 0, false, "success";
    /// An unexpected server error; the broker log has details.
    Unknown = 1, false, "unexpected server error (see the broker log)";
    /// A record batch failed its CRC or structural checks.
    CorruptBatch = 2, false, "a record batch failed its CRC or structural validation";
    /// The topic does not exist (or was deleted).
    UnknownTopic = 3, true, "the topic does not exist";
    /// The partition does not exist in the topic.
    UnknownPartition = 4, false, "the partition does not exist in this topic";
    /// The requested offset is outside `[log_start_offset, high_watermark]`.
    OffsetOutOfRange = 5, false, "the offset is outside the partition's valid range";
    /// A batch or message exceeds the topic's or broker's size limit.
    BatchTooLarge = 6, false, "a batch or message exceeds the configured size limit";
    /// A topic name breaks the naming rules.
    InvalidTopicName = 7, false, "topic names are 1-249 characters of [A-Za-z0-9._-], not '.' or '..'";
    /// A topic with that name already exists.
    TopicAlreadyExists = 8, false, "a topic with this name already exists";
    /// The api key or version is not supported by this broker.
    UnsupportedVersion = 9, false, "the api key or api version is not supported";
    /// The request is malformed.
    InvalidRequest = 10, false, "the request is malformed or its fields are inconsistent";
    /// The broker's disk is full.
    NotEnoughSpace = 11, true, "the broker could not reserve disk space for the write";
    /// The request did not complete in time.
    RequestTimedOut = 12, true, "the request did not complete within its timeout";
    /// The batch was already written; the response carries its original offset.
    DuplicateSequence = 13, false, "the batch is a duplicate of one already written";
    /// A producer sequence number skipped ahead: earlier batches are missing.
    OutOfOrderSequence = 14, false, "the producer sequence number is not the next one expected";
    /// A topic config key or value is invalid.
    InvalidConfig = 15, false, "a topic config key or value is invalid";
    /// The partition count is invalid (zero or above the limit).
    InvalidPartitions = 16, false, "the partition count is invalid";
    /// The broker failed to read or write its storage.
    StorageError = 17, true, "the broker failed to read or write storage";
    /// The broker is shutting down or not yet ready.
    BrokerNotAvailable = 18, true, "the broker is shutting down or not ready";
    /// A producer epoch is older than the one the broker has seen.
    InvalidProducerEpoch = 19, false, "the producer epoch is older than the latest one seen";
    /// The group has no such member (it left or its session expired): rejoin.
    UnknownMemberId = 20, false, "the group has no member with this id: rejoin";
    /// The member does not own the partition (any more), or its epoch is old.
    StaleMemberEpoch = 21, false, "the member does not own this partition at this epoch";
    /// The operation needs a group without active members.
    GroupNotEmpty = 22, false, "the group has active members";
    /// No such group.
    UnknownGroup = 23, false, "the group does not exist";
    /// A group name is empty or too long.
    InvalidGroupId = 24, false, "group names are 1-249 bytes";
    /// A record timestamp is outside the topic's accepted window around the broker's clock.
    InvalidTimestamp = 25, false, "a record timestamp is outside the topic's accepted window around the broker's clock";
    /// The broker keeps as many groups as `max_groups` allows.
    TooManyGroups = 26, false, "the broker has reached max_groups: delete unused groups or raise the limit";
    /// This broker is not the partition's leader (it follows, or holds no
    /// copy): refresh metadata and send to the leader.
    NotLeaderOrFollower = 27, true, "this broker is not the leader of the partition: refresh metadata";
    /// The request carried a leader epoch older (or newer) than the
    /// partition's current one.
    FencedLeaderEpoch = 28, true, "the leader epoch in the request is not the partition's current one";
    /// Fewer replicas are in sync than the topic's `min_insync_replicas`.
    NotEnoughReplicas = 29, true, "fewer in-sync replicas than min_insync_replicas";
    /// A replication factor of 0 or above the number of live brokers.
    InvalidReplicationFactor = 30, false, "the replication factor is 0 or more than the live brokers";
    /// The cluster controller has no leader or did not answer in time.
    ControllerNotAvailable = 31, true, "the cluster controller is not available: retry";
    /// This broker does not coordinate groups now (another broker leads the
    /// `__sluice_offsets` partition, or this one is still loading it): find
    /// the coordinator again and retry there.
    NotCoordinator = 32, true, "this broker is not the group coordinator: find the coordinator and retry";
}

impl ErrorCode {
    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether this is success.
    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({}): {}", self, self.as_u16(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_dense() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u16() as usize, i, "codes must stay dense");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), *code);
        }
        assert_eq!(ErrorCode::from_u16(60_000), ErrorCode::Unknown);
    }
}
