//! Fault injection against real broker processes: crashes at random
//! moments, simulated power loss, and on-disk corruption. Seeds are fixed;
//! `SLUICE_CRASH_SEEDS=N` runs more by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice_broker::groups::store::{decode_key, decode_value};
use sluice_protocol::api::{CommitOffset, OffsetCommitRequest, OffsetFetchRequest};
use sluice_protocol::batch::{split_batches, BatchHeader, RecordBatch, HEADER_LEN};
use sluice_protocol::ErrorCode;
use sluice_tests::workload::{self, Acked, Workload, WorkloadOptions, GROUP};
use sluice_tests::{create_topic, fetch_once, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");
const PARTITIONS: u32 = 3;

fn seeds(default: u64) -> u64 {
    std::env::var("SLUICE_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn config_file(dir: &Path, fsync: &str) -> PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!("retention_check_interval_ms = 100\n[topic_defaults]\nfsync = \"{fsync}\"\nsegment_bytes = 16384\nretention_bytes = 131072\nretention_ms = 0\n"),
    )
    .unwrap();
    path
}

/// The shared workload (producers and a committing group) until the broker
/// is killed at a seeded random moment.
async fn run_until_killed(broker: &mut ProcessBroker, seed: u64) -> Acked {
    let mut workload = Workload::start(broker.addr, WorkloadOptions::new(seed, PARTITIONS));
    tokio::time::sleep(Duration::from_millis(workload.rng.gen_range(300..1200))).await;
    broker.kill9();
    // Nothing can be acknowledged once the broker is dead; stop the clients.
    workload.stop().await
}

/// Checks every invariant after a restart; returns (records checked, commits checked).
async fn check_invariants(broker: &ProcessBroker, acked: &Acked, label: &str) -> (usize, usize) {
    let checked = workload::check_invariants(broker, acked, PARTITIONS, label).await;
    (checked.records, checked.commits)
}

async fn start(dir: &Path, fsync: &str) -> ProcessBroker {
    let config = config_file(dir, fsync);
    let broker = ProcessBroker::spawn(SLUICE, &dir.join("data"), &["--config", config.to_str().unwrap()]);
    let admin = broker.connect().await;
    let _ = create_topic(&admin, "t", PARTITIONS, &[]).await;
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_keeps_every_invariant() {
    let (mut records, mut commits) = (0, 0);
    for seed in 0..seeds(6) {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = start(dir.path(), "always").await;
        let acked = run_until_killed(&mut broker, seed).await;
        let restarted = ProcessBroker::spawn(
            SLUICE,
            &dir.path().join("data"),
            &["--config", dir.path().join("sluice.toml").to_str().unwrap()],
        );
        let (r, c) = check_invariants(&restarted, &acked, &format!("crash seed {seed}")).await;
        records += r;
        commits += c;
    }
    eprintln!("crash loop: {} seeds, {records} acknowledged records checked, {commits} partitions' commits checked, 0 lost", seeds(6));
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    Zero,
    Garbage,
}

/// Damages every byte of the logs in `dir` after the batch holding `keep_through`
/// (everything when `None`): the bytes no acknowledgement depended on.
fn damage_after(dir: &Path, keep_through: Option<u64>, how: Damage, rng: &mut impl Rng) -> usize {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut damaged = 0;
    for log in logs {
        let mut bytes = std::fs::read(&log).unwrap();
        let mut cut = 0;
        let mut pos = 0;
        while let Ok(h) = BatchHeader::parse(&bytes[pos.min(bytes.len())..]) {
            if h.total_len() < HEADER_LEN || pos + h.total_len() > bytes.len() {
                break;
            }
            pos += h.total_len();
            if keep_through.is_some_and(|k| h.base_offset <= k) {
                cut = pos;
            }
        }
        if cut >= bytes.len() {
            continue;
        }
        damaged += bytes.len() - cut;
        match how {
            Damage::Truncate => bytes.truncate(cut + rng.gen_range(0..=(bytes.len() - cut))),
            Damage::Zero => bytes[cut..].fill(0),
            Damage::Garbage => bytes[cut..].iter_mut().for_each(|b| *b = rng.gen()),
        }
        std::fs::write(&log, bytes).unwrap();
    }
    damaged
}

/// The offsets-log offset of the last record carrying an acknowledged commit.
fn last_acked_commit_offset(dir: &Path, acked: &Acked) -> Option<u64> {
    let wanted: HashSet<(u32, u64)> = acked.commits_of(GROUP).iter().copied().collect();
    let mut found = None;
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let bytes = Bytes::from(std::fs::read(&log).unwrap());
        for batch in split_batches(bytes).map_while(Result::ok) {
            if batch.verify_crc().is_err() || batch.header().record_count == 0 {
                break;
            }
            for r in batch.records().unwrap().iter().map_while(Result::ok) {
                let (Some((g, t, p)), Some(v)) = (r.key.and_then(decode_key), r.value.and_then(decode_value))
                else {
                    continue;
                };
                if g == "g" && t == "t" && wanted.contains(&(p, v.offset)) {
                    found = Some(r.offset);
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_power_loss_loses_nothing_acknowledged() {
    let mut cases = 0;
    for (fsync, base) in [("always", 100u64), ("interval:50", 200)] {
        // Seed 204 found interval mode serving unflushed records (kept as a regression).
        let regressions: &[u64] = if base == 200 { &[204] } else { &[] };
        for seed in (base..base + seeds(4)).chain(regressions.iter().copied()) {
            let dir = tempfile::tempdir().unwrap();
            let mut broker = start(dir.path(), fsync).await;
            let acked = run_until_killed(&mut broker, seed).await;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let how = [Damage::Truncate, Damage::Zero, Damage::Garbage][(seed % 3) as usize];
            let data = dir.path().join("data");
            for p in 0..PARTITIONS {
                // What the broker exposed as durable: acknowledged records,
                // and records served to consumers (below the high watermark,
                // flushed in `always` and `interval` modes).
                let produced = acked.records.range((p, 0)..(p + 1, 0)).next_back().map(|((_, o), _)| *o);
                let consumed = acked
                    .commits_of(GROUP)
                    .iter()
                    .filter(|(cp, _)| *cp == p)
                    .map(|(_, o)| o.saturating_sub(1))
                    .max();
                let keep = produced.max(consumed);
                damage_after(&data.join("topics/t").join(p.to_string()), keep, how, &mut rng);
            }
            let offsets_dir = data.join("groups/offsets");
            let keep = last_acked_commit_offset(&offsets_dir, &acked);
            damage_after(&offsets_dir, keep, how, &mut rng);
            let restarted = ProcessBroker::spawn(
                SLUICE,
                &data,
                &["--config", dir.path().join("sluice.toml").to_str().unwrap()],
            );
            check_invariants(&restarted, &acked, &format!("power loss ({fsync}, {how:?}, seed {seed})"))
                .await;
            cases += 1;
        }
    }
    eprintln!("power loss: {cases} simulations, 0 acknowledged records or commits lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_reported_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = ProcessBroker::spawn(SLUICE, &data, &[]);
    let conn = broker.connect().await;
    create_topic(&conn, "t", 1, &[("segment_bytes", "8192")]).await.unwrap();
    for i in 0..60 {
        sluice_tests::produce(
            &conn,
            "t",
            0,
            sluice_protocol::api::Acks::Durable,
            sluice_tests::batch(3, 100, i),
        )
        .await
        .unwrap();
    }
    for offset in [30, 60, 90] {
        let commit = OffsetCommitRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![CommitOffset { topic: "t".into(), partition: 0, offset, metadata: String::new() }],
        };
        conn.call(&commit).await.unwrap();
    }
    assert!(broker.terminate());
    let partition = data.join("topics/t/0");
    let first = partition.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&first).unwrap();
    let batch_len = BatchHeader::parse(&bytes).unwrap().total_len();
    bytes[2 * batch_len + HEADER_LEN + 30] ^= 0x20; // inside the third batch (offsets 6..=8)
    std::fs::write(&first, bytes).unwrap();
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .collect();
    indexes.sort();
    std::fs::write(&indexes[1], [0xAB; 24]).unwrap();
    let offsets_log = data.join("groups/offsets/00000000000000000000.log");
    let mut ob = std::fs::read(&offsets_log).unwrap();
    ob[HEADER_LEN + 4] ^= 0x01; // the first (superseded) commit
    std::fs::write(&offsets_log, ob).unwrap();

    let out = std::process::Command::new(SLUICE).args(["verify", "--data-dir"]).arg(&data).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("corrupt t/0") && report.contains("(offset 6)"), "{report}");
    assert!(report.contains("corrupt (committed offsets)"), "{report}");
    assert!(report.contains("index t/0"), "{report}");

    let broker = ProcessBroker::spawn(SLUICE, &data, &[]);
    let conn = broker.connect().await;
    for offset in 6..9 {
        assert_eq!(
            fetch_once(&conn, "t", 0, offset, 0).await.unwrap().error_code,
            ErrorCode::CorruptBatch,
            "offset {offset}"
        );
    }
    let head = fetch_once(&conn, "t", 0, 0, 0).await.unwrap();
    assert_eq!(split_batches(head.records).count(), 2, "a read stops before the corrupt batch");
    for offset in (9..180).step_by(7) {
        let p = fetch_once(&conn, "t", 0, offset, 0).await.unwrap();
        let b = RecordBatch::new(split_batches(p.records).next().unwrap().unwrap().into_bytes()).unwrap();
        assert!(
            b.header().base_offset <= offset && offset <= b.header().last_offset(),
            "index rebuilt: {offset}"
        );
    }
    let committed = conn.call(&OffsetFetchRequest { group: "g".into(), partitions: vec![] }).await.unwrap();
    assert_eq!(committed.offsets[0].offset, 90, "later commits survive a corrupt earlier one");
    let log = broker.log_text();
    assert!(log.contains("corrupt batch") && log.contains("position"), "the broker logs where: {log}");
}
