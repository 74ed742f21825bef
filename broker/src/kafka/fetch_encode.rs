//! The Fetch response, encoded by hand around the records so that they are
//! never copied: the fields go to small buffers, each partition's records
//! (`Bytes` views of the segment maps) become chunks of their own, and the
//! connection writes the chunks with one vectored write. Versions 4 to 16:
//!
//! ```text
//! throttle_time_ms i32 | error_code i16 (v7+) | session_id i32 (v7+)
//! responses [ topic string (v4-12) | topic_id uuid (v13+)
//!   partitions [ partition_index i32 | error_code i16 | high_watermark i64
//!     | last_stable_offset i64 | log_start_offset i64 (v5+)
//!     | aborted_transactions [..] (empty) | preferred_read_replica i32 (v11+, -1)
//!     | records bytes (never null: an empty set is empty bytes) | tags (v12+) ]
//!   | tags (v12+) ] | tags (v12+)
//! ```
//!
//! From v12 on (flexible versions) arrays, strings and bytes carry unsigned
//! varint lengths plus one, and every struct ends with its tagged fields
//! (none here).

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::wire::{response_header, Chunks, Header};

/// One partition's answer.
#[derive(Debug, Clone)]
pub struct PartitionData {
    /// The partition.
    pub index: i32,
    /// Kafka error code.
    pub error_code: i16,
    /// Offsets below it are served (also the last stable offset: no
    /// transactions).
    pub high_watermark: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// Whole record batches as stored.
    pub records: Bytes,
}

/// One topic's answer.
#[derive(Debug, Clone)]
pub struct TopicData {
    /// Its name (v4-12).
    pub name: String,
    /// Its id (v13+).
    pub id: Uuid,
    /// Its partitions.
    pub partitions: Vec<PartitionData>,
}

/// Fields go to `buf`; records become chunks of their own.
struct Out {
    chunks: Chunks,
    buf: BytesMut,
    flexible: bool,
}

impl Out {
    fn length(&mut self, n: usize) {
        if self.flexible {
            uvarint(&mut self.buf, n as u64 + 1);
        } else {
            self.buf.put_i32(n as i32);
        }
    }

    fn string(&mut self, s: &str) {
        if self.flexible {
            uvarint(&mut self.buf, s.len() as u64 + 1);
        } else {
            self.buf.put_i16(s.len() as i16);
        }
        self.buf.put_slice(s.as_bytes());
    }

    fn tags(&mut self) {
        if self.flexible {
            self.buf.put_u8(0);
        }
    }

    fn records(&mut self, records: Bytes) {
        self.length(records.len());
        if !records.is_empty() {
            let fields = self.buf.split().freeze();
            self.chunks.push(fields);
            self.chunks.push(records);
        }
    }
}

fn uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Encodes a Fetch response (header included) at the request's version,
/// in 4..=16.
pub fn encode(header: &Header, topics: Vec<TopicData>) -> Chunks {
    let v = header.version;
    let mut out = Out { chunks: Vec::new(), buf: response_header(header, 64), flexible: v >= 12 };
    out.buf.put_i32(0); // throttle_time_ms
    if v >= 7 {
        out.buf.put_i16(0); // error_code
        out.buf.put_i32(0); // session_id: no fetch sessions
    }
    out.length(topics.len());
    for topic in topics {
        if v >= 13 {
            out.buf.put_slice(topic.id.as_bytes());
        } else {
            out.string(&topic.name);
        }
        out.length(topic.partitions.len());
        for p in topic.partitions {
            out.buf.put_i32(p.index);
            out.buf.put_i16(p.error_code);
            out.buf.put_i64(p.high_watermark);
            out.buf.put_i64(p.high_watermark); // last_stable_offset
            if v >= 5 {
                out.buf.put_i64(p.log_start_offset);
            }
            out.length(0); // aborted_transactions
            if v >= 11 {
                out.buf.put_i32(-1); // preferred_read_replica
            }
            out.records(p.records);
            out.tags();
        }
        out.tags();
    }
    out.tags();
    let rest = out.buf.freeze();
    out.chunks.push(rest);
    out.chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    use kafka_protocol::protocol::Decodable;

    fn topics() -> Vec<TopicData> {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let p = |index, records: &'static [u8]| PartitionData {
            index,
            error_code: if records.is_empty() { 1 } else { 0 },
            high_watermark: 42,
            log_start_offset: 7,
            records: Bytes::from_static(records),
        };
        vec![
            TopicData { name: "orders".into(), id, partitions: vec![p(0, b"batch-bytes"), p(3, b"")] },
            TopicData { name: "x".repeat(200), id, partitions: vec![] },
        ]
    }

    #[test]
    fn kafka_protocol_decodes_every_version() {
        for v in 4..=16 {
            let h = Header { api: ApiKey::Fetch, version: v, correlation_id: 9 };
            let chunks = encode(&h, topics());
            let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(&whole[..4], &9i32.to_be_bytes());
            let skip = if v >= 12 { 5 } else { 4 };
            let mut body = Bytes::from(whole).slice(skip..);
            let r = FetchResponse::decode(&mut body, v).unwrap_or_else(|e| panic!("v{v}: {e}"));
            assert!(body.is_empty(), "v{v}: {} bytes left over", body.len());
            assert_eq!(r.responses.len(), 2);
            let t = &r.responses[0];
            if v >= 13 {
                assert_eq!(t.topic_id, topics()[0].id);
            } else {
                assert_eq!(t.topic.as_str(), "orders");
                assert_eq!(r.responses[1].topic.len(), 200);
            }
            let p = &t.partitions[0];
            assert_eq!((p.partition_index, p.high_watermark, p.error_code), (0, 42, 0));
            assert_eq!(p.records.as_deref(), Some(&b"batch-bytes"[..]));
            if v >= 5 {
                assert_eq!(p.log_start_offset, 7);
            }
            if v >= 11 {
                assert_eq!(p.preferred_read_replica.0, -1);
            }
            assert_eq!(t.partitions[1].records.as_deref(), Some(&b""[..]), "v{v}: empty, not null");
        }
    }

    #[test]
    fn records_are_chunks_of_their_own() {
        let h = Header { api: ApiKey::Fetch, version: 12, correlation_id: 1 };
        let records = Bytes::from(vec![7u8; 4096]);
        let topics = vec![TopicData {
            name: "t".into(),
            id: Uuid::nil(),
            partitions: vec![PartitionData {
                index: 0,
                error_code: 0,
                high_watermark: 1,
                log_start_offset: 0,
                records: records.clone(),
            }],
        }];
        let chunks = encode(&h, topics);
        assert!(chunks.iter().any(|c| c.as_ptr() == records.as_ptr() && c.len() == 4096), "not copied");
    }
}
