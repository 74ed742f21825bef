//! Checks a request body's lengths and counts before the `kafka-protocol`
//! decoders see it. Those decoders reserve an array's capacity from its
//! count before reading its elements, so a lying count (2^31 elements in a
//! 100-byte frame) would allocate gigabytes before failing. This walk
//! follows each served request's schema and refuses any array whose count
//! exceeds the bytes left (every element takes at least one byte), any
//! string or byte field longer than what is left, and any truncated field,
//! allocating nothing. The schemas list the fields of the versions served
//! (`dispatch::SERVED`; the group apis at every version, whatever
//! `KafkaGroups::APIS` serves); flexible versions use unsigned-varint lengths
//! (plus one) and end every struct with tagged fields, which are skipped by
//! their sizes.

use bytes::Buf;
use kafka_protocol::messages::ApiKey;

use super::wire::{malformed, Header};
use super::KafkaError;

/// A field's type.
#[derive(Debug, Clone, Copy)]
enum F {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// A (nullable) string.
    Str,
    /// A (nullable) byte array.
    Bytes,
    /// A (nullable) array of structs.
    Arr(&'static [Field]),
    /// A (nullable) array of `i32`.
    ArrI32,
    /// A (nullable) array of strings.
    ArrStr,
}

/// A field and the versions that have it (inclusive).
#[derive(Debug, Clone, Copy)]
struct Field(F, i16, i16);

const ALL: i16 = i16::MAX;
const fn f(t: F) -> Field {
    Field(t, 0, ALL)
}
const fn since(t: F, v: i16) -> Field {
    Field(t, v, ALL)
}
const fn until(t: F, v: i16) -> Field {
    Field(t, 0, v)
}

use F::{Arr, ArrI32, ArrStr, Bytes, Str, Uuid, I16, I32, I64, I8};

const PRODUCE: &[Field] =
    &[since(Str, 3), f(I16), f(I32), f(Arr(&[until(Str, 12), since(Uuid, 13), f(Arr(&[f(I32), f(Bytes)]))]))];
const FETCH_PARTITION: &[Field] = &[f(I32), since(I32, 9), f(I64), since(I32, 12), since(I64, 5), f(I32)];
const FETCH: &[Field] = &[
    until(I32, 14),
    f(I32),
    f(I32),
    f(I32),
    f(I8),
    since(I32, 7),
    since(I32, 7),
    f(Arr(&[until(Str, 12), since(Uuid, 13), f(Arr(FETCH_PARTITION))])),
    since(Arr(&[Field(Str, 7, 12), since(Uuid, 13), f(ArrI32)]), 7),
    since(Str, 11),
];
const LIST_OFFSETS: &[Field] =
    &[f(I32), since(I8, 2), f(Arr(&[f(Str), f(Arr(&[f(I32), since(I32, 4), f(I64)]))])), since(I32, 10)];
const METADATA: &[Field] =
    &[f(Arr(&[since(Uuid, 10), f(Str)])), since(I8, 4), Field(I8, 8, 10), since(I8, 8)];
const CREATE_TOPICS: &[Field] = &[
    f(Arr(&[f(Str), f(I32), f(I16), f(Arr(&[f(I32), f(ArrI32)])), f(Arr(&[f(Str), f(Str)]))])),
    f(I32),
    since(I8, 1),
];
const DELETE_TOPICS: &[Field] = &[since(Arr(&[f(Str), f(Uuid)]), 6), until(ArrStr, 5), f(I32)];
const CREATE_PARTITIONS: &[Field] = &[f(Arr(&[f(Str), f(I32), f(Arr(&[f(ArrI32)]))])), f(I32), f(I8)];
const DESCRIBE_CONFIGS: &[Field] = &[f(Arr(&[f(I8), f(Str), f(ArrStr)])), since(I8, 1), since(I8, 3)];
const ALTER_CONFIGS: &[Field] = &[f(Arr(&[f(I8), f(Str), f(Arr(&[f(Str), f(I8), f(Str)]))])), f(I8)];
const DESCRIBE_CLUSTER: &[Field] = &[f(I8), since(I8, 1), since(I8, 2)];
const INIT_PRODUCER_ID: &[Field] =
    &[f(Str), f(I32), since(I64, 3), since(I16, 3), since(I8, 6), since(I8, 6)];

// The group apis (served by `groups`), at every version `kafka-protocol`
// decodes, so whatever range `KafkaGroups::APIS` serves is covered.
const FIND_COORDINATOR: &[Field] = &[until(Str, 3), since(I8, 1), since(ArrStr, 4)];
const JOIN_GROUP: &[Field] = &[
    f(Str),
    f(I32),
    since(I32, 1),
    f(Str),
    since(Str, 5),
    f(Str),
    f(Arr(&[f(Str), f(Bytes)])),
    since(Str, 8),
];
const SYNC_GROUP: &[Field] =
    &[f(Str), f(I32), f(Str), since(Str, 3), since(Str, 5), since(Str, 5), f(Arr(&[f(Str), f(Bytes)]))];
const HEARTBEAT: &[Field] = &[f(Str), f(I32), f(Str), since(Str, 3)];
const LEAVE_GROUP: &[Field] = &[f(Str), until(Str, 2), since(Arr(&[f(Str), f(Str), since(Str, 5)]), 3)];
const OFFSET_COMMIT: &[Field] = &[
    f(Str),
    f(I32),
    f(Str),
    since(Str, 7),
    until(I64, 4),
    f(Arr(&[f(Str), f(Arr(&[f(I32), f(I64), since(I32, 6), f(Str)]))])),
];
const OFFSET_FETCH_TOPICS: &[Field] = &[f(Str), f(ArrI32)];
const OFFSET_FETCH: &[Field] = &[
    until(Str, 7),
    until(Arr(OFFSET_FETCH_TOPICS), 7),
    since(Arr(&[f(Str), since(Str, 9), since(I32, 9), f(Arr(OFFSET_FETCH_TOPICS))]), 8),
    since(I8, 7),
];
const LIST_GROUPS: &[Field] = &[since(ArrStr, 4), since(ArrStr, 5)];
const DESCRIBE_GROUPS: &[Field] = &[f(ArrStr), since(I8, 3)];
const DELETE_GROUPS: &[Field] = &[f(ArrStr)];
const CONSUMER_GROUP_HEARTBEAT: &[Field] = &[
    f(Str),
    f(Str),
    f(I32),
    f(Str),
    f(Str),
    f(I32),
    f(ArrStr),
    since(Str, 1),
    f(Str),
    f(Arr(&[f(Uuid), f(ArrI32)])),
];
const CONSUMER_GROUP_DESCRIBE: &[Field] = &[f(ArrStr), f(I8)];

/// The schema of `api`'s request and the first flexible version, for the
/// apis this module knows.
fn schema(api: ApiKey) -> Option<(&'static [Field], i16)> {
    Some(match api {
        ApiKey::Produce => (PRODUCE, 9),
        ApiKey::Fetch => (FETCH, 12),
        ApiKey::ListOffsets => (LIST_OFFSETS, 6),
        ApiKey::Metadata => (METADATA, 9),
        ApiKey::CreateTopics => (CREATE_TOPICS, 5),
        ApiKey::DeleteTopics => (DELETE_TOPICS, 4),
        ApiKey::CreatePartitions => (CREATE_PARTITIONS, 2),
        ApiKey::DescribeConfigs => (DESCRIBE_CONFIGS, 4),
        ApiKey::IncrementalAlterConfigs => (ALTER_CONFIGS, 1),
        ApiKey::DescribeCluster => (DESCRIBE_CLUSTER, 0),
        ApiKey::InitProducerId => (INIT_PRODUCER_ID, 2),
        ApiKey::FindCoordinator => (FIND_COORDINATOR, 3),
        ApiKey::JoinGroup => (JOIN_GROUP, 6),
        ApiKey::SyncGroup => (SYNC_GROUP, 4),
        ApiKey::Heartbeat => (HEARTBEAT, 4),
        ApiKey::LeaveGroup => (LEAVE_GROUP, 4),
        ApiKey::OffsetCommit => (OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (OFFSET_FETCH, 6),
        ApiKey::ListGroups => (LIST_GROUPS, 3),
        ApiKey::DescribeGroups => (DESCRIBE_GROUPS, 5),
        ApiKey::DeleteGroups => (DELETE_GROUPS, 2),
        ApiKey::ConsumerGroupHeartbeat => (CONSUMER_GROUP_HEARTBEAT, 0),
        ApiKey::ConsumerGroupDescribe => (CONSUMER_GROUP_DESCRIBE, 0),
        _ => return None,
    })
}

/// Whether requests of `api` are checked here.
#[cfg(test)]
pub fn covers(api: ApiKey) -> bool {
    schema(api).is_some()
}

/// Checks `body` of a request with this header; an api without a schema
/// here passes unchecked (every api `dispatch` routes has one: a test
/// holds them to it).
///
/// # Errors
/// `Malformed` naming what does not fit.
pub fn check(header: &Header, body: &[u8]) -> Result<(), KafkaError> {
    let Some((fields, flexible_from)) = schema(header.api) else {
        return Ok(());
    };
    let mut walk = Walk { buf: body, version: header.version, flexible: header.version >= flexible_from };
    walk.fields(fields).map_err(|e| malformed(header, e))
}

struct Walk<'a> {
    buf: &'a [u8],
    version: i16,
    flexible: bool,
}

type Result<T, E = &'static str> = std::result::Result<T, E>;

impl Walk<'_> {
    fn skip(&mut self, n: usize) -> Result<()> {
        if n > self.buf.len() {
            return Err("a field runs past the end of the request");
        }
        self.buf.advance(n);
        Ok(())
    }

    fn uvarint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let b = *self.buf.first().ok_or("a varint runs past the end of the request")?;
            self.buf.advance(1);
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 5 bytes")
    }

    fn int(&mut self, width: usize) -> Result<i64> {
        let bytes = self.buf.get(..width).ok_or("a field runs past the end of the request")?;
        let v = bytes.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b));
        self.buf.advance(width);
        // Sign-extend.
        let shift = 64 - 8 * width as u32;
        Ok((v << shift) >> shift)
    }

    /// A length or count: `None` for null.
    fn length(&mut self, width: usize) -> Result<Option<usize>> {
        let n = if self.flexible { self.uvarint()? as i64 - 1 } else { self.int(width)? };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err("a negative length"),
            n => Ok(Some(n as usize)),
        }
    }

    /// An array's count, refused when its elements (each at least
    /// `min_element` bytes) cannot fit in what is left.
    fn count(&mut self, min_element: usize) -> Result<usize> {
        let n = self.length(4)?.unwrap_or(0);
        if n.saturating_mul(min_element) > self.buf.len() {
            return Err("an array's count exceeds the bytes left in the request");
        }
        Ok(n)
    }

    fn tagged(&mut self) -> Result<()> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        if count as usize > self.buf.len() {
            return Err("a tagged-field count exceeds the bytes left in the request");
        }
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }

    fn fields(&mut self, fields: &[Field]) -> Result<()> {
        for &Field(t, from, to) in fields {
            if (from..=to).contains(&self.version) {
                self.field(t)?;
            }
        }
        self.tagged()
    }

    fn field(&mut self, t: F) -> Result<()> {
        match t {
            F::I8 => self.skip(1),
            F::I16 => self.skip(2),
            F::I32 => self.skip(4),
            F::I64 => self.skip(8),
            F::Uuid => self.skip(16),
            F::Str => {
                let n = self.length(2)?.unwrap_or(0);
                self.skip(n)
            }
            F::Bytes => {
                let n = self.length(4)?.unwrap_or(0);
                self.skip(n)
            }
            F::ArrI32 => {
                let n = self.count(4)?;
                self.skip(n * 4)
            }
            F::ArrStr => {
                for _ in 0..self.count(1)? {
                    self.field(F::Str)?;
                }
                Ok(())
            }
            F::Arr(fields) => {
                for _ in 0..self.count(1)? {
                    self.fields(fields)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest};
    use kafka_protocol::protocol::Encodable;

    fn header(api: ApiKey, version: i16) -> Header {
        Header { api, version, correlation_id: 0 }
    }

    fn encoded<T: Encodable>(msg: &T, version: i16) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    #[test]
    fn valid_requests_pass() {
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![Default::default(), Default::default()]);
        for v in 1..=12 {
            check(&header(ApiKey::Metadata, v), &encoded(&req, v)).unwrap_or_else(|e| panic!("v{v}: {e}"));
        }
        let mut req = ProduceRequest::default();
        let mut topic = kafka_protocol::messages::produce_request::TopicProduceData::default();
        let mut part = kafka_protocol::messages::produce_request::PartitionProduceData::default();
        part.records = Some(bytes::Bytes::from_static(b"0123456789"));
        topic.partition_data = vec![part];
        req.topic_data = vec![topic];
        for v in 3..=9 {
            check(&header(ApiKey::Produce, v), &encoded(&req, v)).unwrap_or_else(|e| panic!("v{v}: {e}"));
        }
    }

    #[test]
    fn lying_counts_and_lengths_are_refused() {
        // Metadata v1: topics count 2^31 - 1 in a 4-byte body.
        let lying = [0x7F, 0xFF, 0xFF, 0xFF];
        assert!(check(&header(ApiKey::Metadata, 1), &lying).is_err());
        // Metadata v9 (flexible): a varint count of about 2^28.
        assert!(check(&header(ApiKey::Metadata, 9), &[0xFF, 0xFF, 0xFF, 0x7F, 0]).is_err());
        // Produce v3: transactional id -1, acks, timeout, one topic whose
        // name claims 30000 bytes.
        let body = [0xFF, 0xFF, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x75, 0x30, b'a'];
        assert!(check(&header(ApiKey::Produce, 3), &body).is_err());
        assert!(check(&header(ApiKey::Produce, 3), &[]).is_err(), "truncated");
        // A varint that never ends.
        assert!(check(&header(ApiKey::Metadata, 9), &[0xFF; 12]).is_err());
    }
}
