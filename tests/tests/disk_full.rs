//! A broker on a 4 MiB tmpfs: produces fail with NOT_ENOUGH_SPACE, nothing
//! acknowledged is lost, reads keep working, and producing works again once
//! retention frees space. Needs root (to mount); says so and skips if not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::api::{Acks, AlterTopicRequest, ConfigEntry};
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, create_topic, fetch_once, produce, read_partition, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .ok()?
        .success();
    ok.then(|| Tmpfs(dir.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_produces_cleanly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs");
    let Some(_mounted) = mount(&fs, "4m") else {
        eprintln!("disk full: SKIPPED (cannot mount a tmpfs here: not root?); storage::tests::a_full_disk_fails_appends_cleanly_and_recovers covers the path with an injected ENOSPC");
        return;
    };
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "retention_check_interval_ms = 100\n[topic_defaults]\nsegment_bytes = 262144\nsegment_preallocate_bytes = 65536\nretention_ms = 0\n").unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, &fs.join("data"), &["--config", config.to_str().unwrap()]);
    let c = broker.connect().await;
    create_topic(&c, "t", 1, &[]).await.unwrap();
    let mut acked: Vec<(u64, Bytes)> = Vec::new();
    let err = loop {
        let b = batch(10, 800, acked.len() as u64);
        match produce(&c, "t", 0, Acks::Durable, b.clone()).await {
            Ok(r) => acked.push((r.base_offset, b)),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the disk never filled");
    };
    assert_eq!(err.code(), Some(ErrorCode::NotEnoughSpace), "{err}");
    // Nothing acknowledged is lost, and reads keep working.
    let stored = read_partition(&c, "t", 0, 0).await;
    assert_eq!(stored.len(), acked.len());
    for (s, (base, b)) in stored.iter().zip(&acked) {
        // Past the stamped base_offset and leader epoch.
        assert_eq!((s.header().base_offset, &s.as_bytes()[16..]), (*base, &b[16..]));
    }
    // Free space with retention; producing works again.
    c.call(&AlterTopicRequest {
        name: "t".into(),
        configs: vec![ConfigEntry::new("retention_bytes", "600000")],
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if fetch_once(&c, "t", 0, 0, 0).await.unwrap().log_start_offset > 0 {
            if let Ok(r) = produce(&c, "t", 0, Acks::Durable, batch(10, 800, 99_999)).await {
                assert_eq!(r.base_offset, acked.len() as u64 * 10, "offsets stay dense");
                break;
            }
        }
        assert!(Instant::now() < deadline, "space was never freed\n{}", broker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(broker.terminate());
    eprintln!(
        "disk full: {} batches acknowledged before ENOSPC, 0 lost, recovered after retention",
        acked.len()
    );
}
