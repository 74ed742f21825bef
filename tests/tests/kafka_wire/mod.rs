//! A raw Kafka wire client for the Kafka listener's tests: requests
//! encoded with the `kafka-protocol` crate, sent over one TCP connection,
//! responses read back by correlation id order.
#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One Kafka connection.
pub struct KafkaConn {
    pub stream: TcpStream,
    next_id: i32,
}

/// A request frame (length prefix included) for `req` at `version`.
pub fn frame<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, req: &T) -> Bytes {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("sluice-test"));
    let mut body = BytesMut::new();
    header.encode(&mut body, api.request_header_version(version)).unwrap();
    req.encode(&mut body, version).unwrap();
    let mut framed = BytesMut::with_capacity(body.len() + 4);
    framed.put_i32(body.len() as i32);
    framed.extend_from_slice(&body);
    framed.freeze()
}

impl KafkaConn {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, next_id: 1 }
    }

    /// Sends a request without waiting; returns its correlation id.
    pub async fn send<T: Encodable>(&mut self, api: ApiKey, version: i16, req: &T) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&frame(api, version, id, req)).await.unwrap();
        id
    }

    /// Reads the next response: its correlation id and body (after the
    /// response header of `api` at `version`). `None` when the broker
    /// closed the connection.
    pub async fn read_raw(&mut self, api: ApiKey, version: i16) -> Option<(i32, Bytes)> {
        let len = self.stream.read_i32().await.ok()?;
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        let mut buf = Bytes::from(buf);
        let id = buf.get_i32();
        if api.response_header_version(version) >= 1 {
            assert_eq!(buf.get_u8(), 0, "no tagged fields in the response header");
        }
        Some((id, buf))
    }

    /// Reads the next response, decoded.
    pub async fn read<R: Decodable>(&mut self, api: ApiKey, version: i16) -> (i32, R) {
        let (id, mut body) = self.read_raw(api, version).await.expect("the broker closed the connection");
        let r = R::decode(&mut body, version).unwrap();
        assert!(body.is_empty(), "{api:?} v{version}: {} bytes left over", body.len());
        (id, r)
    }

    /// Sends a request and reads its response.
    pub async fn call<T: Encodable, R: Decodable>(&mut self, api: ApiKey, version: i16, req: &T) -> R {
        let id = self.send(api, version, req).await;
        let (got, r) = self.read(api, version).await;
        assert_eq!(got, id, "responses come in request order");
        r
    }
}

/// A topic name as the Kafka messages carry it.
pub fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// A Produce of `records` to partition 0 of `topic` with `acks`.
pub fn produce(topic: &str, acks: i16, records: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 10_000;
    r.topic_data = vec![t];
    r
}

/// A Fetch of partition 0 of `topic` from `offset`, up to 1 MiB, waiting
/// at most `max_wait_ms` for a first byte.
pub fn fetch(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = 1;
    r.max_bytes = 1 << 20;
    r.topics = vec![t];
    r
}
