//! Requests and responses. Every request frame is a [`RequestHeader`] then
//! the body; every response frame is a [`ResponseHeader`] then, when the
//! header's error code is `None`, the response body, or otherwise an
//! [`ErrorBody`] with a human-readable message.
//!
//! ```text
//! request:  api_key u16 | api_version u16 | correlation_id u32 | client_id string | body
//! response: correlation_id u32 | error_code u16 | body (or ErrorBody when error_code != 0)
//! ```
//!
//! Each message type implements [`Message`] (encode into a [`Writer`],
//! decode from a [`Reader`]); each request type also implements [`Request`],
//! naming its api key and response type. The broker decodes any request with
//! [`RequestBody::decode`].

mod add_node;
mod add_partitions;
mod alter_topic;
mod api_versions;
mod cluster_status;
mod create_topic;
mod delete_group;
mod delete_topic;
mod describe_group;
mod fetch;
mod group_heartbeat;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod produce;
mod reset_offsets;
mod status;
#[cfg(test)]
mod tests;

pub use add_node::{AddNodeRequest, AddNodeResponse};
pub use add_partitions::{AddPartitionsRequest, AddPartitionsResponse};
pub use alter_topic::{AlterTopicRequest, AlterTopicResponse};
pub use api_versions::{ApiVersionRange, ApiVersionsRequest, ApiVersionsResponse};
pub use cluster_status::{ClusterNode, ClusterStatusRequest, ClusterStatusResponse, StatusPartition};
pub use create_topic::{ConfigEntry, CreateTopicRequest, CreateTopicResponse};
pub use delete_group::{DeleteGroupRequest, DeleteGroupResponse};
pub use delete_topic::{DeleteTopicRequest, DeleteTopicResponse};
pub use describe_group::{DescribeGroupRequest, DescribeGroupResponse, MemberDescription, PartitionLag};
pub use fetch::{FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse};
pub use group_heartbeat::{GroupHeartbeatRequest, GroupHeartbeatResponse, LEAVE_EPOCH};
pub use list_groups::{GroupListing, ListGroupsRequest, ListGroupsResponse};
pub use list_offsets::{
    ListOffsetsPartition, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetSpec,
};
pub use metadata::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata, MAX_NAMED_TOPICS,
    NO_LEADER, OFFSETS_TOPIC,
};
pub use offset_commit::{CommitOffset, OffsetCommitRequest, OffsetCommitResponse, PartitionResult};
pub use offset_fetch::{FetchedOffset, OffsetFetchRequest, OffsetFetchResponse, NO_OFFSET};
pub use produce::{Acks, ProduceRequest, ProduceResponse};
pub use reset_offsets::{OffsetChange, ResetOffsetsRequest, ResetOffsetsResponse, ResetSpec};
pub use status::{FailedTopic, GroupStatus, StatusRequest, StatusResponse};
// The partition names the group apis carry (kept here so `api::TopicPartition`
// still names them).
pub use crate::topic_partition::{TopicPartition, TopicPartitions};

use bytes::Bytes;

use crate::{ErrorCode, Reader, WireError, Writer};

/// A message body: encodes to and decodes from the wire.
pub trait Message: Sized {
    /// Name used in errors.
    const NAME: &'static str;
    /// Appends the body to `w`.
    fn encode(&self, w: &mut Writer);
    /// Reads the body from `r` (which may hold more after it).
    fn decode(r: &mut Reader) -> Result<Self, WireError>;

    /// Decodes a whole body, refusing trailing bytes.
    fn decode_all(body: Bytes) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let message = Self::decode(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(message)
    }

    /// The body as one buffer.
    fn to_bytes(&self) -> Bytes {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A request type: its api key, version and response type.
pub trait Request: Message {
    /// The api key.
    const API_KEY: ApiKey;
    /// The version this crate speaks.
    const VERSION: u16 = 0;
    /// The response body type.
    type Response: Message;
}

macro_rules! api_keys {
    ($( $name:ident = $value:literal => $req:ident ),* $(,)?) => {
        /// The api of a request.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum ApiKey { $( #[doc = concat!("See [`", stringify!($req), "`].")] $name = $value, )* }

        impl ApiKey {
            /// Every api, in key order.
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$name),*];

            /// The api's name.
            pub fn name(self) -> &'static str {
                match self { $( ApiKey::$name => stringify!($name), )* }
            }

            /// The api for a wire value, if known.
            pub fn from_u16(v: u16) -> Option<Self> {
                match v { $( $value => Some(ApiKey::$name), )* _ => None }
            }
        }

        /// Any request body, as the broker receives it. Exhaustive on
        /// purpose: the broker's router matches every api, so a new one does
        /// not compile until it has a handler.
        #[derive(Debug, Clone, PartialEq)]
        pub enum RequestBody { $( #[doc = concat!("A [`", stringify!($req), "`].")] $name($req), )* }

        impl RequestBody {
            /// Decodes the body of a request with `header`. An unknown api
            /// key or version is [`DecodeError::Unsupported`]; a body that
            /// does not parse is [`DecodeError::Malformed`].
            pub fn decode(header: &RequestHeader, body: Bytes) -> Result<Self, DecodeError> {
                let key = ApiKey::from_u16(header.api_key)
                    .ok_or(DecodeError::Unsupported { api_key: header.api_key, api_version: header.api_version })?;
                match key {
                    $( ApiKey::$name => {
                        if header.api_version != <$req as Request>::VERSION {
                            return Err(DecodeError::Unsupported { api_key: header.api_key, api_version: header.api_version });
                        }
                        Ok(RequestBody::$name(<$req>::decode_all(body)?))
                    } )*
                }
            }

            /// The api key of this body.
            pub fn api_key(&self) -> ApiKey {
                match self { $( RequestBody::$name(_) => ApiKey::$name, )* }
            }
        }

        /// The version range the broker supports for every api.
        pub fn supported_apis() -> Vec<ApiVersionRange> {
            vec![$( ApiVersionRange {
                api_key: $value,
                min_version: <$req as Request>::VERSION,
                max_version: <$req as Request>::VERSION,
            } ),*]
        }
    };
}

api_keys! {
    ApiVersions = 0 => ApiVersionsRequest,
    Metadata = 1 => MetadataRequest,
    CreateTopic = 2 => CreateTopicRequest,
    DeleteTopic = 3 => DeleteTopicRequest,
    AlterTopic = 4 => AlterTopicRequest,
    Produce = 5 => ProduceRequest,
    Fetch = 6 => FetchRequest,
    ListOffsets = 7 => ListOffsetsRequest,
    GroupHeartbeat = 8 => GroupHeartbeatRequest,
    OffsetCommit = 9 => OffsetCommitRequest,
    OffsetFetch = 10 => OffsetFetchRequest,
    ListGroups = 11 => ListGroupsRequest,
    DescribeGroup = 12 => DescribeGroupRequest,
    ResetOffsets = 13 => ResetOffsetsRequest,
    DeleteGroup = 14 => DeleteGroupRequest,
    Status = 15 => StatusRequest,
    AddPartitions = 16 => AddPartitionsRequest,
    ClusterStatus = 17 => ClusterStatusRequest,
    AddNode = 18 => AddNodeRequest,
}

/// Why a request body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The api key or version is not one this side speaks.
    #[error("unsupported api key {api_key} version {api_version}")]
    Unsupported {
        /// The key received.
        api_key: u16,
        /// The version received.
        api_version: u16,
    },
    /// The body is malformed.
    #[error(transparent)]
    Malformed(#[from] WireError),
}

impl DecodeError {
    /// The wire code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Unsupported { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::Malformed(_) => ErrorCode::InvalidRequest,
        }
    }
}

/// The header of every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Which api ([`ApiKey`] as `u16`, kept raw so unknown keys can be answered).
    pub api_key: u16,
    /// The api version.
    pub api_version: u16,
    /// Echoed in the response so pipelined responses can be matched.
    pub correlation_id: u32,
    /// Free-form client name for logs and metrics.
    pub client_id: String,
}

impl RequestHeader {
    /// A header for request type `R`.
    pub fn for_request<R: Request>(correlation_id: u32, client_id: impl Into<String>) -> Self {
        Self {
            api_key: R::API_KEY as u16,
            api_version: R::VERSION,
            correlation_id,
            client_id: client_id.into(),
        }
    }
}

impl Message for RequestHeader {
    const NAME: &'static str = "request header";
    fn encode(&self, w: &mut Writer) {
        w.u16(self.api_key);
        w.u16(self.api_version);
        w.u32(self.correlation_id);
        w.string(&self.client_id);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            api_key: r.u16()?,
            api_version: r.u16()?,
            correlation_id: r.u32()?,
            client_id: r.string()?,
        })
    }
}

/// The header of every response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The request's correlation id.
    pub correlation_id: u32,
    /// `None` on success; otherwise the body is an [`ErrorBody`].
    pub error_code: ErrorCode,
}

impl Message for ResponseHeader {
    const NAME: &'static str = "response header";
    fn encode(&self, w: &mut Writer) {
        w.u32(self.correlation_id);
        w.u16(self.error_code.as_u16());
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { correlation_id: r.u32()?, error_code: ErrorCode::from_u16(r.u16()?) })
    }
}

/// The body of a failed response: what went wrong, for humans.
///
/// ```text
/// message string
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// A one-line explanation naming the cause.
    pub message: String,
}

impl Message for ErrorBody {
    const NAME: &'static str = "error body";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.message);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { message: r.string()? })
    }
}

/// Encodes a whole request frame payload (header then body).
pub fn encode_request<R: Request>(correlation_id: u32, client_id: &str, request: &R) -> Writer {
    let mut w = Writer::new();
    RequestHeader::for_request::<R>(correlation_id, client_id).encode(&mut w);
    request.encode(&mut w);
    w
}

/// Encodes a whole successful response frame payload.
pub fn encode_response<M: Message>(correlation_id: u32, body: &M) -> Writer {
    let mut w = Writer::new();
    ResponseHeader { correlation_id, error_code: ErrorCode::None }.encode(&mut w);
    body.encode(&mut w);
    w
}

/// Encodes a whole failed response frame payload.
pub fn encode_error(correlation_id: u32, error_code: ErrorCode, message: &str) -> Writer {
    let mut w = Writer::new();
    ResponseHeader { correlation_id, error_code }.encode(&mut w);
    ErrorBody { message: message.to_owned() }.encode(&mut w);
    w
}

/// Reads an optional-by-tag enum value from a `u8`.
pub(crate) fn tag<T>(
    r: &mut Reader,
    field: &'static str,
    from: impl FnOnce(u8) -> Option<T>,
) -> Result<T, WireError> {
    let v = r.u8()?;
    from(v).ok_or(WireError::InvalidValue { field, value: u64::from(v) })
}
