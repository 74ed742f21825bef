//! The broker restarts without manual repair from data directories that
//! earlier versions could leave behind after a power loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_protocol::api::Acks;
use sluice_tests::{batch, create_topic, produce, read_partition, test_config, TestBroker};

/// Earlier versions wrote `meta.json` with a plain write, never synced: a
/// power loss soon after the first start left it empty, and `sluice serve`
/// then refused to start (`meta.json: EOF while parsing a value`).
#[tokio::test]
async fn an_empty_meta_json_does_not_stop_the_broker() {
    let (config, dir) = test_config();
    let mut broker = TestBroker::start_with(config.clone(), None).await;
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    produce(&c, "t", 0, Acks::Durable, batch(3, 10, 1)).await.unwrap();
    drop(c);
    broker.stop().await;
    std::fs::write(config.data_dir.join("meta.json"), b"").unwrap();

    let broker = TestBroker::start_with(config.clone(), Some(dir)).await;
    let c = broker.connect().await;
    let records: u32 = read_partition(&c, "t", 0, 0).await.iter().map(|b| b.header().record_count).sum();
    assert_eq!(records, 3, "the data is served");
    let meta = std::fs::read_to_string(config.data_dir.join("meta.json")).unwrap();
    assert!(meta.contains("format_version"), "meta.json rewritten: {meta}");
}
