//! Metrics, health and readiness, scraped over HTTP from real brokers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_protocol::api::{Acks, CommitOffset, OffsetCommitRequest, StatusRequest};
use sluice_tests::{batch, create_topic, http_get, produce, read_partition, ProcessBroker, TestBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_the_right_amounts() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.server().admin_addr().unwrap();
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    let mut bytes_in = 0;
    for i in 0..10 {
        let b = batch(5, 100, i);
        bytes_in += b.len();
        produce(&c, "t", 0, Acks::Durable, b).await.unwrap();
    }
    produce(&c, "t", 7, Acks::Durable, batch(1, 1, 0)).await.unwrap_err();
    assert_eq!(read_partition(&c, "t", 0, 0).await.len(), 10);
    let commit = OffsetCommitRequest {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![CommitOffset { topic: "t".into(), partition: 0, offset: 20, metadata: String::new() }],
    };
    c.call(&commit).await.unwrap();

    let (status, text) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics")).await.unwrap();
    assert_eq!(status, 200);
    let p = r#"{topic="t",partition="0"}"#;
    assert_eq!(sample(&text, &format!("sluice_messages_in_total{p}")), Some(50.0), "{text}");
    assert_eq!(sample(&text, &format!("sluice_bytes_in_total{p}")), Some(bytes_in as f64));
    assert_eq!(sample(&text, &format!("sluice_messages_out_total{p}")), Some(50.0));
    assert_eq!(sample(&text, &format!("sluice_bytes_out_total{p}")), Some(bytes_in as f64));
    assert_eq!(sample(&text, &format!("sluice_log_end_offset{p}")), Some(50.0));
    assert_eq!(sample(&text, r#"sluice_requests_total{api="Produce"}"#), Some(11.0));
    assert_eq!(sample(&text, r#"sluice_errors_total{api="Produce",code="UnknownPartition"}"#), Some(1.0));
    let g = r#"{group="g",topic="t",partition="0"}"#;
    assert_eq!(sample(&text, &format!("sluice_group_committed_offset{g}")), Some(20.0));
    assert_eq!(
        sample(&text, &format!("sluice_group_lag{g}")),
        Some(30.0),
        "lag = log end offset - committed offset"
    );
    assert_eq!(sample(&text, r#"sluice_group_members{group="g"}"#), Some(0.0));
    assert!(sample(&text, "sluice_connections").unwrap() >= 1.0);
    assert!(text.contains("sluice_flush_seconds_bucket") && text.contains("sluice_appends_per_flush_count"));
    assert!(
        text.contains(r#"sluice_request_seconds_bucket{le="#)
            || text.contains("sluice_request_seconds_bucket{api=")
    );

    for (path, want) in [("/health", 200), ("/ready", 200), ("/nope", 404)] {
        let got = tokio::task::spawn_blocking(move || http_get(admin, path).0).await.unwrap();
        assert_eq!(got, want, "{path}");
    }
    let status = c.call(&StatusRequest).await.unwrap();
    assert_eq!((status.topics, status.partitions, status.groups.len(), status.groups[0].lag), (1, 1, 1, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--fsync", "never"]);
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    // 64 MiB that was never flushed: recovery must CRC-check all of it.
    let big = batch(64, 16 * 1024, 1);
    for _ in 0..64 {
        produce(&c, "t", 0, Acks::Leader, big.clone()).await.unwrap();
    }
    broker.kill9();
    let mut restarted = ProcessBroker::spawn_admin_first(SLUICE, dir.path(), &[]);
    let admin = restarted.admin.unwrap();
    let mut saw_recovering = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(admin, "/ready")).await.unwrap();
        if status == 503 {
            assert_eq!(body.trim(), "recovering");
            saw_recovering = true;
        } else {
            assert_eq!(status, 200);
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_recovering, "/ready answered 200 before recovery finished:\n{}", restarted.log_text());
    let (health, _) = tokio::task::spawn_blocking(move || http_get(admin, "/health")).await.unwrap();
    assert_eq!(health, 200);
    restarted.wait_listening();
    let c = restarted.connect().await;
    assert_eq!(read_partition(&c, "t", 0, 0).await.len(), 64, "everything survived kill -9 (page cache)");
}

/// The dashboard in docs/ops parses and uses only metrics the broker exports.
#[tokio::test]
async fn grafana_dashboard_uses_exported_metrics() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ops/grafana-dashboard.json"))
            .unwrap();
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.server().admin_addr().unwrap();
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    produce(&c, "t", 0, Acks::Durable, batch(1, 1, 1)).await.unwrap();
    let commit = OffsetCommitRequest {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![CommitOffset { topic: "t".into(), partition: 0, offset: 0, metadata: String::new() }],
    };
    c.call(&commit).await.unwrap();
    produce(&c, "t", 9, Acks::Durable, batch(1, 1, 1)).await.unwrap_err();
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics")).await.unwrap();
    let names: Vec<&str> = text
        .split('"')
        .filter(|s| s.contains("sluice_"))
        .flat_map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("sluice_"))
        .collect();
    assert!(names.len() > 10);
    for name in names {
        let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(
            metrics.contains(&format!("# TYPE {base} "))
                || metrics.contains(&format!("# TYPE {} ", base.trim_end_matches("_total"))),
            "dashboard uses {name}, not exported"
        );
    }
}
