//! Fault tests of the cluster (issue #18), brokers as `sluice serve`
//! subprocesses on loopback ([`sluice_tests::cluster`]), faults from
//! [`sluice_tests::proxy`] and signals, judged by [`sluice_tests::checker`]:
//!
//! - the acceptance scenario: `sluice produce --acks durable
//!   --print-offsets` streaming into an RF=3 topic while its leader is
//!   killed with `kill -9`; nothing acknowledged is lost, the producer
//!   carries on by itself, the restarted node catches up;
//! - a bounded fault loop (`SLUICE_CLUSTER_FAULTS`, default 6: each kind
//!   once per 6; `SLUICE_CLUSTER_FAULT_KINDS` picks kinds): leader
//!   `kill -9`, SIGSTOP longer than the lease, a cut between two nodes, a
//!   one-way drop, a delay, the clients cut off from a leader (through a
//!   proxy in front of each node's client port, which the node
//!   advertises), each healed, with the workload running throughout
//!   ([`sluice_tests::faults`]);
//! - power loss of one node, then of every node at once
//!   (`SLUICE_CLUSTER_POWER_LOSSES` rounds, default 1).
//!
//! The other tests prove each piece of the harness on its own (single
//! brokers, the cluster flags with a proxy per pair).
//!
//! Debugging: `SLUICE_CLUSTER_RUST_LOG` sets the nodes' log filter and
//! `SLUICE_CLUSTER_LOG_DIR` receives every node's whole log when a test
//! judges its history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sluice_protocol::api::MetadataRequest;
use sluice_protocol::client::Connection;
use sluice_tests::checker::{check, History, Report};
use sluice_tests::cluster::{Cluster, ClusterError, ClusterOptions};
use sluice_tests::cluster_workload::{read_disk_copy, read_replicas, ClusterWorkload, WorkloadConfig};
use sluice_tests::faults::{inject, summarize, FaultKind, Target};
use sluice_tests::produce_stream::ProduceStream;
use sluice_tests::proxy::Proxy;

/// The broker binary: `SLUICE_E2E_BIN` when set (a long run from a copy
/// of the binaries, which a rebuild meanwhile cannot replace), else the
/// one cargo built.
fn sluice() -> String {
    std::env::var("SLUICE_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice-e2e").to_owned())
}
const TOPIC: &str = "faults";
/// The controller's liveness lease (DESIGN.md §10): a pause must outlast it.
const LEASE: Duration = Duration::from_secs(3);
/// Longest a cluster may take to form (every node registered and live).
const FORM: Duration = Duration::from_secs(60);

fn faults() -> usize {
    std::env::var("SLUICE_CLUSTER_FAULTS").ok().and_then(|s| s.parse().ok()).unwrap_or(6)
}

fn seed() -> u64 {
    std::env::var("SLUICE_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(18)
}

/// Runs `sluice ARGS` against the whole cluster, panicking with its output
/// (and the nodes' logs) when it fails.
fn cli_ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.cli(args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Client addresses of the nodes running and not paused.
fn live_nodes(c: &mut Cluster) -> Vec<(u32, String)> {
    c.live().into_iter().map(|id| (id, c.client_addr(id).to_string())).collect()
}

/// The sum of the high watermarks of `topic`'s partitions.
async fn high_watermarks(c: &mut Cluster, topic: &str) -> u64 {
    let Some(meta) = c.metadata(&[topic]).await else { return 0 };
    meta.topics.iter().flat_map(|t| &t.partitions).map(|p| p.high_watermark).sum()
}

/// Waits (at most 60 s) until [`TOPIC`]'s high watermarks add up to `n`.
async fn wait_for_records(c: &mut Cluster, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if high_watermarks(c, TOPIC).await >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Checks `history`, prints the report, and panics with the nodes' logs
/// on a violation.
fn judge(c: &Cluster, history: &History, label: &str) -> Report {
    let report = check(history);
    eprintln!("{label}: {report}");
    if let Ok(dir) = std::env::var("SLUICE_CLUSTER_LOG_DIR") {
        // Every node's whole log, for debugging a failure.
        for id in 1..=3 {
            let _ = std::fs::write(format!("{dir}/node{id}.log"), c.log(id));
        }
    }
    assert!(report.ok(), "{label}: {report}\n{}", c.logs());
    report
}

// ---------------------------------------------------------------------
// The harness itself: the cluster flags, single brokers, the proxy.
// ---------------------------------------------------------------------

/// Three nodes with the cluster flags and a proxy on every directed pair:
/// each node's `--peers` names itself directly and the others through its
/// own proxies. Every node answers and lists the others, and a restarted
/// node keeps its client address and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_proxies_form_and_a_restarted_node_rejoins() {
    let options = ClusterOptions { proxies: true, ..ClusterOptions::default() };
    let mut c = Cluster::prepare(&sluice(), 3, &options).unwrap();
    let args = c.serve_args(1, &options).join(" ");
    let peers = format!("1={},2={},3={}", c.peer_addr(1), c.proxy(1, 2).addr(), c.proxy(1, 3).addr());
    assert!(args.contains(&format!("--peers {peers}")), "{args}");
    assert!(args.contains(&format!("--node-id 1 --peer-listen {}", c.peer_addr(1))), "{args}");
    assert_eq!(c.proxy(1, 2).upstream(), c.peer_addr(2));
    assert_eq!(c.bootstrap().split(',').count(), 3);
    c.start_all(&options).unwrap_or_else(|e| panic!("{e}"));
    c.wait_formed(FORM).await.unwrap_or_else(|e| panic!("{e}"));
    let before = c.client_addr(2);
    c.restart(2, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.client_addr(2), before);
    assert_eq!(c.live(), vec![1, 2, 3]);
    c.wait_formed(FORM).await.unwrap_or_else(|e| panic!("{e}"));
}

/// The workload, the readers and the checker across `kill -9`, restart,
/// SIGSTOP and SIGCONT of a single broker: everything acknowledged is
/// back, and each fault has a measured window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_faults_on_a_single_broker() {
    let options = ClusterOptions { standalone: true, ..ClusterOptions::default() };
    let mut c = Cluster::start(&sluice(), 1, &options).unwrap_or_else(|e| panic!("{e}"));
    cli_ok(&c, &["topic", "create", TOPIC, "--partitions", "3"]);
    let w = ClusterWorkload::start(&WorkloadConfig::new(c.bootstrap(), TOPIC, 3));
    assert!(w.wait_for_acks(50, Duration::from_secs(30)).await, "no progress\n{}", c.logs());
    w.fault("kill -9 node 1");
    c.kill9(1);
    assert!(!c.is_running(1));
    c.restart(1, &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(w.wait_for_acks(50, Duration::from_secs(60)).await, "no progress after restart\n{}", c.logs());
    w.fault("SIGSTOP node 1");
    c.stop(1);
    assert!(c.live().is_empty() && c.is_running(1));
    c.cont(1);
    assert!(w.wait_for_acks(50, Duration::from_secs(60)).await, "no progress after SIGCONT\n{}", c.logs());
    let mut history = w.stop().await;
    let (reads, refused) = read_replicas(&live_nodes(&mut c), TOPIC, 3).await;
    assert!(refused.is_empty(), "{refused:?}");
    history.reads.extend(reads);
    let report = judge(&c, &history, "single broker");
    assert!(report.ok(), "{report}");
    assert!(report.acknowledged >= 150 && report.replica_reads == 3 && report.consumed > 0, "{report}");
    assert!(report.windows.iter().all(|w| w.unavailable.is_some()), "{report}");
}

/// `sluice produce --print-offsets` as a stream across a broker restart:
/// the CLI carries on by itself and every line is acknowledged where the
/// broker stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stream_across_a_restart_of_a_single_broker() {
    let options = ClusterOptions { standalone: true, ..ClusterOptions::default() };
    let mut c = Cluster::start(&sluice(), 1, &options).unwrap_or_else(|e| panic!("{e}"));
    cli_ok(&c, &["topic", "create", TOPIC, "--partitions", "2"]);
    let mut stream = ProduceStream::start(&sluice(), &c.bootstrap(), TOPIC, &[]);
    assert!(stream.send("before", 100));
    assert!(wait_for_records(&mut c, 100).await, "the stream's first records never arrived\n{}", c.logs());
    c.kill9(1);
    assert!(stream.send("during", 100), "the CLI stopped reading when the broker died");
    c.restart(1, &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(stream.send("after", 100));
    let outcome = stream.finish(Duration::from_secs(120));
    assert!(outcome.status.is_some_and(|s| s.success()), "{}\n{}", outcome.stderr, c.logs());
    assert_eq!(outcome.failures(), Vec::<String>::new());
    let mut history = History { acks: outcome.acks(Instant::now()), ..History::default() };
    history.reads.extend(read_replicas(&live_nodes(&mut c), TOPIC, 2).await.0);
    let report = judge(&c, &history, "produce stream");
    assert_eq!((report.acknowledged, report.replica_reads), (300, 2), "{report}");
}

/// A power loss of a single broker on the power-loss file system: what it
/// acknowledged before the cut is back after the restart. Skips (saying
/// why) where FUSE cannot be mounted, fails under CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_of_a_single_broker_keeps_what_it_acknowledged() {
    let options = ClusterOptions { standalone: true, power_loss: true, ..ClusterOptions::default() };
    let Some(mut c) = start_or_skip(1, &options, "power loss of a single broker") else { return };
    cli_ok(&c, &["topic", "create", TOPIC, "--partitions", "2"]);
    // No consumer: a single broker may serve what it has not synced yet.
    let config = WorkloadConfig { group: None, ..WorkloadConfig::new(c.bootstrap(), TOPIC, 2) };
    let w = ClusterWorkload::start(&config);
    assert!(w.wait_for_acks(50, Duration::from_secs(30)).await, "no progress\n{}", c.logs());
    let cut_at = Instant::now();
    w.fault("power loss of node 1");
    c.power_loss(1, &options).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let back_at = Instant::now();
    assert!(w.wait_for_acks(50, Duration::from_secs(60)).await, "no progress after it\n{}", c.logs());
    // The whole-cluster path (every node cut, killed, remounted, started together).
    let cut_all_at = Instant::now();
    w.fault("power loss of every node");
    c.power_loss_all(&options).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let back_all_at = Instant::now();
    assert!(w.wait_for_acks(50, Duration::from_secs(60)).await, "no progress after it\n{}", c.logs());
    let mut history = w.stop().await;
    forget_acks_during(&mut history, cut_at, back_at);
    forget_acks_during(&mut history, cut_all_at, back_all_at);
    history.reads.extend(read_replicas(&live_nodes(&mut c), TOPIC, 2).await.0);
    let report = judge(&c, &history, "power loss, single broker");
    assert!(report.acknowledged >= 150 && report.replica_reads == 2, "{report}");
}

/// The checker can fail end to end: with `fsync=never` and `acks=leader`
/// a power loss takes acknowledged records with it, and the checker must
/// count them as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_records_lost_to_a_power_loss_without_fsync() {
    let options = ClusterOptions {
        standalone: true,
        power_loss: true,
        extra: vec!["--fsync".into(), "never".into()],
        ..ClusterOptions::default()
    };
    let Some(mut c) = start_or_skip(1, &options, "checker against a real loss") else { return };
    cli_ok(&c, &["topic", "create", TOPIC, "--partitions", "1"]);
    let config = WorkloadConfig {
        group: None,
        acks: sluice_producer::Acks::Leader,
        ..WorkloadConfig::new(c.bootstrap(), TOPIC, 1)
    };
    let w = ClusterWorkload::start(&config);
    assert!(w.wait_for_acks(50, Duration::from_secs(30)).await, "no progress\n{}", c.logs());
    let cut_at = Instant::now();
    c.power_loss(1, &options).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let mut history = w.stop().await;
    history.acks.retain(|a| a.at < cut_at);
    history.reads.extend(read_replicas(&live_nodes(&mut c), TOPIC, 1).await.0);
    let report = check(&history);
    eprintln!("fsync=never, acks=leader, power loss: {report}");
    assert!(report.acknowledged >= 50 && report.lost > 0 && !report.data_ok(), "{report}");
}

/// The proxy carries the broker's own protocol: through it a client
/// works, a cut breaks its connection and refuses new ones, a heal lets
/// it back, a delay slows each round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_in_front_of_a_broker_cuts_heals_and_delays() {
    let options = ClusterOptions { standalone: true, kafka: true, ..ClusterOptions::default() };
    let c = Cluster::start(&sluice(), 1, &options).unwrap_or_else(|e| panic!("{e}"));
    std::net::TcpStream::connect(c.kafka_addr(1).unwrap()).expect("the Kafka listener is on its fixed port");
    let proxy = Proxy::start(c.client_addr(1));
    let addr = proxy.addr().to_string();
    let meta = || MetadataRequest { topics: vec![] };
    let conn = Connection::connect(&addr, "proxied").await.unwrap();
    conn.call(&meta()).await.unwrap();
    proxy.cut();
    assert!(conn.call(&meta()).await.is_err(), "a call got through the cut");
    let refused = Connection::connect(&addr, "proxied").await;
    assert!(refused.is_err() || refused.unwrap().call(&meta()).await.is_err());
    proxy.heal();
    let conn = Connection::connect(&addr, "proxied").await.unwrap();
    conn.call(&meta()).await.unwrap();
    proxy.delay(Duration::from_millis(100));
    let started = Instant::now();
    conn.call(&meta()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
}

/// Starts a cluster, or returns `None` (saying why) where the power-loss
/// file system is unavailable; under CI that fails instead.
fn start_or_skip(n: u32, options: &ClusterOptions, test: &str) -> Option<Cluster> {
    match Cluster::start(&sluice(), n, options) {
        Ok(c) => Some(c),
        Err(ClusterError::NoPowerLoss(why)) => {
            assert!(std::env::var_os("CI").is_none(), "{test} cannot run under CI: {why}");
            eprintln!("SKIPPED {test}: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Acknowledgements (and commits) that arrived between a power cut and the
/// restart may be legitimately lost: drop them from what is demanded.
fn forget_acks_during(history: &mut History, from: Instant, to: Instant) {
    history.acks.retain(|a| a.at < from || a.at > to);
    history.commits.retain(|c| c.at < from || c.at > to);
}

// ---------------------------------------------------------------------
// The cluster's fault tests.
// ---------------------------------------------------------------------

/// Cluster settings for the fault tests.
fn cluster_options(proxies: bool, power_loss: bool) -> ClusterOptions {
    ClusterOptions { proxies, client_proxies: proxies, power_loss, ..ClusterOptions::default() }
}

/// Starts 3 nodes and waits until they form a cluster.
async fn start_cluster(options: &ClusterOptions) -> Cluster {
    let mut c = Cluster::start(&sluice(), 3, options).unwrap_or_else(|e| panic!("{e}"));
    c.wait_formed(FORM).await.unwrap_or_else(|e| panic!("{e}"));
    c
}

/// Creates [`TOPIC`] with RF=3 and waits until every partition has a leader.
async fn create_replicated(c: &mut Cluster, partitions: u32) {
    let p = partitions.to_string();
    cli_ok(c, &["topic", "create", TOPIC, "--partitions", &p, "--replication-factor", "3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    for partition in 0..partitions {
        while c.leader(TOPIC, partition).await.is_none() {
            assert!(Instant::now() < deadline, "{TOPIC}/{partition} has no leader\n{}", c.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits (at most 60 s) until every partition's ISR holds all 3 nodes.
async fn wait_fully_replicated(c: &mut Cluster, partitions: u32) {
    if let Err(why) = fully_replicated(c, partitions).await {
        panic!("{why}\n{}", c.logs());
    }
}

/// [`wait_fully_replicated`], returning what the metadata said last instead of panicking.
async fn fully_replicated(c: &mut Cluster, partitions: u32) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let meta = c.metadata(&[TOPIC]).await;
        let full = meta.as_ref().is_some_and(|m| {
            m.topics.iter().flat_map(|t| &t.partitions).filter(|p| p.isr.len() == 3).count()
                == partitions as usize
        });
        if full {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let layout: Vec<String> = meta
                .iter()
                .flat_map(|m| m.topics.iter().flat_map(|t| &t.partitions))
                .map(|p| {
                    format!(
                        "{}: leader {} epoch {} isr {:?} end {} hw {}",
                        p.partition, p.leader, p.leader_epoch, p.isr, p.log_end_offset, p.high_watermark
                    )
                })
                .collect();
            let node = meta.as_ref().map_or(0, |m| m.node_id);
            return Err(format!("ISR never full again (node {node} says: {})", layout.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each follower's copy, read from disk while it is paused, up to the
/// leader's high watermark (its tail past it may still be truncated).
async fn follower_copies(c: &mut Cluster, partitions: u32) -> History {
    let mut history = History::default();
    let meta = c.metadata(&[TOPIC]).await.expect("no metadata");
    for p in meta.topics.iter().flat_map(|t| &t.partitions) {
        for id in c.ids().filter(|id| i64::from(*id) != p.leader).collect::<Vec<_>>() {
            c.stop(id);
            history.reads.push(read_disk_copy(c.data_dir(id), TOPIC, p.partition, Some(p.high_watermark)));
            c.cont(id);
        }
    }
    assert_eq!(history.reads.len(), partitions as usize * 2, "a partition without a leader: {meta:?}");
    history
}

/// Waits (at most 30 s) until partition 0 of [`TOPIC`] has a leader other than `old`.
async fn wait_new_leader(c: &mut Cluster, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = c.leader(TOPIC, 0).await.filter(|l| *l != old) {
            return l;
        }
        assert!(Instant::now() < deadline, "no new leader after node {old} died\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Acceptance (issue #18): 3 brokers, RF=3, `sluice produce --acks durable
/// --print-offsets` streaming; `kill -9` of the leader; the producer
/// carries on by itself; no acknowledged record lost; the killed node,
/// restarted, rejoins the ISR and its copy equals the leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_kill_the_leader_during_cli_produce() {
    let options = cluster_options(false, false);
    let mut c = start_cluster(&options).await;
    create_replicated(&mut c, 1).await;
    let leader = c.leader(TOPIC, 0).await.unwrap();
    let mut stream = ProduceStream::start(&sluice(), &c.bootstrap(), TOPIC, &[]);
    assert!(stream.send("before", 200));
    assert!(wait_for_records(&mut c, 200).await, "no progress\n{}", c.logs());
    let killed_at = Instant::now();
    c.kill9(leader);
    // Sent after the kill: only a new leader can acknowledge these.
    assert!(stream.send("during", 100), "the CLI stopped reading");
    let new_leader = wait_new_leader(&mut c, leader).await;
    let elected = killed_at.elapsed();
    assert!(wait_for_records(&mut c, 300).await, "no progress after the kill\n{}", c.logs());
    eprintln!(
        "failover: node {new_leader} leads after {elected:?}, writable within {:?}",
        killed_at.elapsed()
    );
    assert!(stream.send("after", 400), "the CLI stopped reading");
    assert!(wait_for_records(&mut c, 700).await, "no progress after the failover\n{}", c.logs());
    let outcome = stream.finish(Duration::from_secs(120));
    assert!(outcome.status.is_some_and(|s| s.success()), "{}\n{}", outcome.stderr, c.logs());
    assert_eq!(outcome.failures(), Vec::<String>::new());
    c.restart(leader, &options).unwrap_or_else(|e| panic!("{e}"));
    wait_fully_replicated(&mut c, 1).await;
    let mut history = History { acks: outcome.acks(Instant::now()), ..History::default() };
    history.reads.extend(read_replicas(&live_nodes(&mut c), TOPIC, 1).await.0);
    let copies = follower_copies(&mut c, 1).await;
    let leader_read =
        history.reads.iter().find(|r| !r.records.is_empty()).cloned().expect("leader unreadable");
    for copy in &copies.reads {
        let end = copy.stable_end.unwrap_or(u64::MAX);
        let copied: Vec<_> = copy.records.iter().filter(|(o, _)| *o < end).cloned().collect();
        assert_eq!(copied, leader_read.records, "{} differs from the leader's", copy.source);
    }
    history.extend(copies);
    let report = judge(&c, &history, "acceptance");
    assert_eq!(report.acknowledged, 700, "{report}");
}

/// The bounded fault loop: random faults with the workload running, the
/// cluster healed and fully replicated between them, the checker at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_loop() {
    let options = cluster_options(true, false);
    let mut c = start_cluster(&options).await;
    create_replicated(&mut c, 3).await;
    let w = ClusterWorkload::start(&WorkloadConfig::new(c.bootstrap(), TOPIC, 3));
    assert!(w.wait_for_acks(100, Duration::from_secs(30)).await, "no progress\n{}", c.logs());
    let mut rng = StdRng::seed_from_u64(seed());
    let mut kinds: Vec<FaultKind> = Vec::new();
    let mut block = Vec::new();
    let mut stuck = None;
    let chosen = FaultKind::from_env();
    for round in 0..faults() {
        // Each block is every chosen kind once, in a random order.
        if block.is_empty() {
            block.clone_from(&chosen);
            block.shuffle(&mut rng);
        }
        let kind = block.pop().expect("refilled above");
        kinds.push(kind);
        let at = Instant::now();
        let target = Target { topic: TOPIC, partitions: 3, lease: LEASE };
        let (label, held) = inject(&mut c, kind, &mut rng, &options, &target).await;
        eprintln!(
            "fault {round}: {label}, held {} ms, healed; {} acknowledged so far",
            held.as_millis(),
            w.acked()
        );
        w.fault_at(format!("{round}: {label} for {} ms", held.as_millis()), at);
        if !w.wait_for_acks(20, Duration::from_secs(60)).await {
            stuck = Some(format!("no progress within 60 s after fault {round}: {label}"));
            break;
        }
        if let Err(why) = fully_replicated(&mut c, 3).await {
            stuck = Some(format!("after fault {round}: {label}: {why}"));
            break;
        }
    }
    let mut history = w.stop().await;
    history.reads.extend(read_replicas(&live_nodes(&mut c), TOPIC, 3).await.0);
    if let Some(why) = stuck {
        // What the clients were told so far still has to hold.
        let report = check(&history);
        summarize(&report, &kinds);
        panic!("{why} (seed {})\n{report}\n{}", seed(), c.logs());
    }
    history.extend(follower_copies(&mut c, 3).await);
    let report = judge(&c, &history, "fault loop");
    eprintln!("{} faults, seed {}", kinds.len(), seed());
    summarize(&report, &kinds);
}

fn power_losses() -> usize {
    std::env::var("SLUICE_CLUSTER_POWER_LOSSES").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// Power loss of one node, then of all three at once, `SLUICE_CLUSTER_POWER_LOSSES`
/// rounds (default 1) on the same cluster: what was acknowledged before
/// each cut is on every replica after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_of_one_node_then_all() {
    let options = cluster_options(false, true);
    let Some(mut c) = start_or_skip(3, &options, "cluster power loss") else { return };
    c.wait_formed(FORM).await.unwrap_or_else(|e| panic!("{e}"));
    create_replicated(&mut c, 3).await;
    let config = WorkloadConfig { group: None, ..WorkloadConfig::new(c.bootstrap(), TOPIC, 3) };
    let w = ClusterWorkload::start(&config);
    assert!(w.wait_for_acks(100, Duration::from_secs(30)).await, "no progress\n{}", c.logs());
    let mut rng = StdRng::seed_from_u64(seed());
    let mut excused = Vec::new();
    let mut kinds = Vec::new();
    for round in 0..power_losses() {
        let victim = rng.gen_range(1..=3);
        w.fault(format!("{round}: power loss of node {victim}"));
        kinds.push(false);
        // One node: the other two hold everything acknowledged, nothing is excused.
        c.power_loss(victim, &options).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        assert!(w.wait_for_acks(100, Duration::from_secs(60)).await, "no progress\n{}", c.logs());
        wait_fully_replicated(&mut c, 3).await;
        let cut_at = Instant::now();
        w.fault(format!("{round}: power loss of every node"));
        kinds.push(true);
        c.power_loss_all(&options).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        excused.push((cut_at, Instant::now()));
        c.wait_formed(FORM).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(w.wait_for_acks(100, Duration::from_secs(60)).await, "no progress\n{}", c.logs());
        wait_fully_replicated(&mut c, 3).await;
        eprintln!("power-loss round {round} done; {} acknowledged so far", w.acked());
    }
    let mut history = w.stop().await;
    for (cut_at, back_at) in excused {
        forget_acks_during(&mut history, cut_at, back_at);
    }
    history.reads.extend(read_replicas(&live_nodes(&mut c), TOPIC, 3).await.0);
    history.extend(follower_copies(&mut c, 3).await);
    let report = judge(&c, &history, "cluster power loss");
    for (all, name) in [(false, "power loss of one node"), (true, "power loss of every node")] {
        let windows: Vec<_> =
            report.windows.iter().zip(&kinds).filter(|(_, k)| **k == all).map(|(w, _)| w).collect();
        let worst = windows.iter().filter_map(|w| w.unavailable).max();
        let worst_every = windows.iter().filter_map(|w| w.every_partition).max();
        eprintln!(
            "{name}: {} faults, worst unavailability {worst:?} (every partition: {worst_every:?})",
            windows.len()
        );
    }
}
