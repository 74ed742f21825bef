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

/// A data directory of the retired format 1 (Sluice's first batch format)
/// is refused at start with what it is and what to do, and left untouched.
#[tokio::test]
async fn a_format_1_data_directory_is_refused() {
    let (config, _dir) = test_config();
    let mut broker = TestBroker::start_with(config.clone(), None).await;
    create_topic(&broker.connect().await, "t", 1, &[]).await.unwrap();
    broker.stop().await;
    let meta_path = config.data_dir.join("meta.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    assert!(meta.contains("\"format_version\": 2"), "{meta}");
    let old = meta.replace("\"format_version\": 2", "\"format_version\": 1");
    std::fs::write(&meta_path, &old).unwrap();

    let Err(err) = sluice_broker::server::Server::start(config.clone()).await else {
        panic!("a format 1 directory must be refused");
    };
    let message = err.to_string();
    for part in [
        "holds format 1",
        "retired",
        "format 2 (Kafka RecordBatch v2)",
        "move it away",
        "no in-place upgrade",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    assert_eq!(std::fs::read_to_string(&meta_path).unwrap(), old, "meta.json left as it was");

    // `sluice verify` says the same instead of calling every batch corrupt.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-e2e"))
        .args(["verify", "--data-dir"])
        .arg(&config.data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("holds format 1"), "{out:?}");
}
