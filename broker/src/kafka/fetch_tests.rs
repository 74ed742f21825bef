//! Fetch end to end inside the broker: the records in the encoded response
//! are the very bytes of the segment map (the same memory, not a copy), so
//! a response goes from the map to the socket by the connection's vectored
//! write.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::batch::BatchBuilder;
use tokio_util::sync::CancellationToken;

use super::groups::{Endpoint, KafkaGroups};
use super::producer_ids::ProducerIds;
use super::state::Kafka;
use super::wire::Header;
use crate::broker::{now_ms, Broker};
use crate::config::BrokerConfig;
use crate::metrics::Metrics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_records_are_the_segment_maps_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig { data_dir: dir.path().to_owned(), ..BrokerConfig::default() };
    let (broker, _) = Broker::open(config, CancellationToken::new(), Arc::new(Metrics::new())).await.unwrap();
    broker.create_topic("zc", 1, &[("fsync".into(), "never".into())]).unwrap();
    let partition = Arc::clone(&broker.topics.get("zc").unwrap().partitions[0]);
    for n in 0..3 {
        let mut b = BatchBuilder::new();
        b.append(now_ms(), None, Some(format!("record {n}").as_bytes()), &[]);
        partition.append(b.build(), 1 << 20, now_ms()).unwrap();
    }
    let endpoint = Endpoint { node_id: 0, host: "127.0.0.1".into(), port: 9092 };
    let kafka = Arc::new(Kafka {
        groups: KafkaGroups::new(Arc::clone(&broker), endpoint),
        producer_ids: ProducerIds::open(dir.path()).unwrap(),
        broker: Arc::clone(&broker),
    });
    let mut p = FetchPartition::default();
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("zc"));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_bytes = 1 << 20;
    req.topics = vec![t];
    let mut body = BytesMut::new();
    req.encode(&mut body, 12).unwrap();
    let header = Header { api: ApiKey::Fetch, version: 12, correlation_id: 1 };
    let chunks = super::fetch::handle(kafka, header, body.freeze()).await.unwrap().unwrap();
    let stored: Bytes = partition.log().read(0, 1 << 20).unwrap();
    let served = chunks.iter().find(|c| c.len() == stored.len()).expect("the records are one chunk");
    assert_eq!(served.as_ptr(), stored.as_ptr(), "the chunk is the segment map's memory, not a copy");
    let mut whole = BytesMut::new();
    for c in &chunks {
        whole.put_slice(c);
    }
    assert!(whole.len() > stored.len());
    broker.close().await.unwrap();
}
