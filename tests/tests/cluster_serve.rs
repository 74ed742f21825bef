//! `sluice serve` in cluster mode, end to end: three `sluice serve`
//! processes on 127.0.0.1 with `--node-id/--peer-listen/--peers` form a
//! cluster; topics are created through the controller and appear on every
//! node with the same leaders, epochs and ISR; produce to a non-leader is
//! refused with NotLeaderOrFollower; a `kill -9`ed leader's partitions get
//! a new leader at a higher epoch. Every wait polls until a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kafka_wire;

use std::time::{Duration, Instant};

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiKey, DescribeConfigsRequest, DescribeConfigsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest as KafkaMetadataRequest, MetadataResponse as KafkaMetadataResponse, ProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_wire::KafkaConn;
use serde_json::Value;
use sluice_protocol::api::{Acks, MetadataRequest};
use sluice_protocol::client::ClientError;
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, fetch_once, produce, run_cli, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// Longest any one condition is waited for.
const DEADLINE: Duration = Duration::from_secs(40);

/// Starts node `id` (1-based) with its flags under `dir`.
fn start_node(dir: &std::path::Path, flags: &[Vec<String>], id: usize) -> ProcessBroker {
    let flags: Vec<&str> = flags[id - 1].iter().map(String::as_str).collect();
    let b = ProcessBroker::spawn(SLUICE, &dir.join(format!("n{id}")), &flags);
    assert!(b.log_text().contains("peer listening"), "{}", b.log_text());
    b
}

fn addr(b: &ProcessBroker) -> String {
    b.addr.to_string()
}

/// Runs `sluice ARGS --json` against `at` and parses its output.
fn cli_json(at: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run_cli(SLUICE, at, &all, b"");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Polls `probe` until it returns `Some`, panicking with `what` at the deadline.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(leader, epoch, replicas, isr)` of every partition, per `topic describe`.
fn layout(at: &str, topic: &str) -> Option<Vec<(i64, u64, Value, Value)>> {
    let v = cli_json(at, &["topic", "describe", topic]).ok()?;
    let parts = v["partitions"].as_array()?;
    Some(
        parts
            .iter()
            .map(|p| {
                (
                    p["leader"].as_i64().unwrap(),
                    p["leader_epoch"].as_u64().unwrap(),
                    p["replicas"].clone(),
                    p["isr"].clone(),
                )
            })
            .collect(),
    )
}

#[test]
fn three_nodes_form_a_cluster_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let flags = sluice_tests::cluster::three_node_flags();
    let mut nodes: Vec<Option<ProcessBroker>> =
        (1..=3).map(|id| Some(start_node(dir.path(), &flags, id))).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| addr(n.as_ref().unwrap())).collect();

    // Every node sees three live nodes and a controller leader.
    for at in &addrs {
        poll("three live nodes and a controller leader", || {
            let s = cli_json(at, &["cluster", "status"]).ok()?;
            let live = s["nodes"].as_array()?.iter().filter(|n| n["live"] == true).count();
            (live == 3 && s["controller_leader"].as_i64()? >= 1 && s["clustered"] == true).then_some(())
        });
    }

    let out = run_cli(
        SLUICE,
        &addrs[0],
        &["topic", "create", "t", "--partitions", "3", "--replication-factor", "3"],
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Same leaders, epochs, replicas and ISR on every node.
    let first = poll("the topic on node 1", || layout(&addrs[0], "t"));
    assert_eq!(first.len(), 3);
    for (leader, epoch, replicas, isr) in &first {
        assert!((1..=3).contains(leader), "{first:?}");
        assert_eq!((*epoch, replicas.as_array().unwrap().len(), isr.as_array().unwrap().len()), (0, 3, 3));
    }
    for at in &addrs[1..] {
        poll("the same layout on every node", || (layout(at, "t")? == first).then_some(()));
    }
    let refused = run_cli(SLUICE, &addrs[1], &["topic", "create", "u", "--replication-factor", "4"], b"");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidReplicationFactor"));

    admin_goes_through_the_controller(&addrs);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let leader0 = first[0].0 as usize;
    let follower0 = if leader0 == 1 { 2 } else { 1 };
    rt.block_on(async {
        // Native metadata from any node lists the three brokers.
        let conn = nodes[1].as_ref().unwrap().connect().await;
        let meta = conn.call(&MetadataRequest::default()).await.unwrap();
        assert_eq!(meta.node_id, 2);
        let mut ids: Vec<u64> = meta.brokers.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(meta.brokers.iter().find(|b| b.id == 1).unwrap().addr, addrs[0]);
        assert_eq!(meta.topics[0].partitions[0].leader, leader0 as i64);

        // A follower refuses produce and consumer fetch; the leader takes it.
        let follower = nodes[follower0 - 1].as_ref().unwrap().connect().await;
        match produce(&follower, "t", 0, Acks::Leader, batch(1, 10, 1)).await {
            Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::NotLeaderOrFollower),
            other => panic!("produce to a follower: {other:?}"),
        }
        let fetched = fetch_once(&follower, "t", 0, 0, 0).await.unwrap();
        assert_eq!(fetched.error_code, ErrorCode::NotLeaderOrFollower);
        let leader = nodes[leader0 - 1].as_ref().unwrap().connect().await;
        let r = produce(&leader, "t", 0, Acks::Leader, batch(2, 10, 1)).await.unwrap();
        assert_eq!(r.base_offset, 0);

        kafka_view(&nodes, &first, leader0, follower0).await;
    });
    // The CLI asked through a broker that does not lead partition 0 finds
    // its offsets and records on the leader.
    let args = [
        "consume",
        "t",
        "--partition",
        "0",
        "--from-beginning",
        "--max-messages",
        "2",
        "--timeout-ms",
        "10000",
    ];
    let read = run_cli(SLUICE, &addrs[follower0 - 1], &args, b"");
    assert!(read.status.success(), "{read:?}");
    assert_eq!(String::from_utf8_lossy(&read.stderr).trim(), "2 records", "{read:?}");

    // kill -9 of partition 0's leader: its partitions move to another
    // replica at a higher epoch.
    nodes[leader0 - 1].as_mut().unwrap().kill9();
    nodes[leader0 - 1] = None;
    let survivor = &addrs[follower0 - 1];
    let moved = poll("new leaders for the killed node's partitions", || {
        let now = layout(survivor, "t")?;
        let done = first.iter().zip(&now).all(|(before, after)| {
            before.0 as usize != leader0
                || (after.0 as usize != leader0 && after.0 >= 1 && after.1 > before.1)
        });
        done.then_some(now)
    });
    assert_ne!(moved[0].0 as usize, leader0);
    assert!(moved[0].3.as_array().unwrap().iter().all(|b| b.as_u64() != Some(leader0 as u64)), "{moved:?}");

    // The survivor's metrics say so.
    let admin = nodes[follower0 - 1].as_ref().unwrap().admin.unwrap();
    poll("cluster metrics", || {
        let (status, body) = sluice_tests::http_get(admin, "/metrics");
        let has = |line: &str| body.lines().any(|l| l == line);
        let leader = body.lines().find_map(|l| l.strip_prefix("sluice_controller_leader "))?;
        let elections = body.lines().find_map(|l| l.strip_prefix("sluice_leader_elections_total "))?;
        let ok = status == 200
            // t's 3 partitions and `__sluice_offsets`' one (RF 3 too).
            && has("sluice_under_replicated_partitions 4")
            && has("sluice_offline_partitions 0")
            && leader.parse::<i64>().ok()? >= 1
            && elections.parse::<u64>().ok()? >= 1
            && body.lines().any(|l| l.starts_with("sluice_isr_shrinks_total "))
            // It leads what moved to it, and the other survivor follows.
            && body.lines().any(|l| l.starts_with("sluice_replica_lag_offsets{") && l.contains("follower=\""));
        ok.then_some(())
    });

    // Restarted on its data directory, the node registers again and
    // describes the topic as the others do.
    nodes[leader0 - 1] = Some(start_node(dir.path(), &flags, leader0));
    let back = addr(nodes[leader0 - 1].as_ref().unwrap());
    poll("the restarted node live again", || {
        let s = cli_json(survivor, &["cluster", "status"]).ok()?;
        (s["nodes"].as_array()?.iter().filter(|n| n["live"] == true).count() == 3).then_some(())
    });
    poll("the restarted node's view", || {
        let (a, b) = (layout(&back, "t")?, layout(survivor, "t")?);
        (a == b && a[0].0 != leader0 as i64).then_some(())
    });

    // All shut down cleanly on SIGTERM.
    for n in nodes.iter_mut().flatten() {
        assert!(n.terminate(), "{}", n.log_text());
        assert!(n.log_text().contains("shutdown complete"), "{}", n.log_text());
    }
}

/// Grow, alter and delete from one node; every node sees the change.
fn admin_goes_through_the_controller(addrs: &[String]) {
    let ok = |at: &str, args: &[&str]| {
        let out = run_cli(SLUICE, at, args, b"");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&addrs[2], &["topic", "create", "g", "--partitions", "1", "--replication-factor", "2"]);
    ok(&addrs[1], &["topic", "add-partitions", "g", "--count", "3"]);
    ok(&addrs[0], &["topic", "alter", "g", "--retention-ms", "3600000"]);
    for at in addrs {
        poll("the grown, altered topic everywhere", || {
            let v = cli_json(at, &["topic", "describe", "g"]).ok()?;
            let parts = v["partitions"].as_array()?;
            let placed = parts.iter().all(|p| p["replicas"].as_array().is_some_and(|r| r.len() == 2));
            (parts.len() == 3 && placed && v["config"]["retention_ms"] == "3600000").then_some(())
        });
    }
    ok(&addrs[1], &["topic", "delete", "g"]);
    for at in addrs {
        poll("the topic gone everywhere", || {
            cli_json(at, &["topic", "describe", "g"]).is_err().then_some(())
        });
    }
}

/// Kafka clients see the cluster: every broker's Kafka listener, the
/// controller, the leaders and ISR; a follower refuses produce with
/// NOT_LEADER_OR_FOLLOWER; the group coordinator is the offsets leader.
async fn kafka_view(
    nodes: &[Option<ProcessBroker>],
    layout: &[(i64, u64, Value, Value)],
    leader0: usize,
    follower0: usize,
) {
    let kafka = |i: usize| nodes[i - 1].as_ref().unwrap().kafka.unwrap();
    let mut conn = KafkaConn::connect(kafka(2)).await;
    let mut all = KafkaMetadataRequest::default();
    all.topics = None;
    let meta: KafkaMetadataResponse = conn.call(ApiKey::Metadata, 12, &all).await;
    let mut brokers: Vec<(i32, i32)> = meta.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
    brokers.sort_unstable();
    let want: Vec<(i32, i32)> = (1..=3).map(|i| (i as i32, i32::from(kafka(i).port()))).collect();
    assert_eq!(brokers, want);
    assert!(meta.controller_id.0 >= 1, "{meta:?}");
    let t = &meta.topics[0];
    for (p, (leader, epoch, _, isr)) in t.partitions.iter().zip(layout) {
        assert_eq!(i64::from(p.leader_id.0), *leader);
        assert_eq!(u64::try_from(p.leader_epoch).unwrap(), *epoch);
        assert_eq!(p.isr_nodes.len(), isr.as_array().unwrap().len());
    }
    // Kafka's min.insync.replicas, held by the controller (RF 3: 2).
    let mut describe = DescribeConfigsRequest::default();
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_static_str("t");
    resource.configuration_keys = None;
    describe.resources = vec![resource];
    let d: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &describe).await;
    let min_isr = d.results[0].configs.iter().find(|c| c.name.as_str() == "min.insync.replicas");
    assert_eq!(min_isr.and_then(|c| c.value.as_ref()).map(|v| v.as_str()), Some("2"), "{d:?}");
    let mut follower = KafkaConn::connect(kafka(follower0)).await;
    let req = kafka_wire::produce("t", 1, batch(1, 10, 2));
    let r: ProduceResponse = follower.call(ApiKey::Produce, 9, &req).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    let mut leader = KafkaConn::connect(kafka(leader0)).await;
    let r: ProduceResponse = leader.call(ApiKey::Produce, 9, &req).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // The group coordinator is the leader of `__sluice_offsets`
    // partition 0 (created at bootstrap; tests/tests/cluster_groups.rs).
    let native = nodes[1].as_ref().unwrap().connect().await;
    let deadline = std::time::Instant::now() + DEADLINE;
    let (c, coordinator) = loop {
        let named = MetadataRequest { topics: vec!["__sluice_offsets".into()] };
        let leader = native.call(&named).await.unwrap().topics[0].partitions.first().map_or(-1, |p| p.leader);
        let mut find = FindCoordinatorRequest::default();
        find.key = StrBytes::from_static_str("g");
        let c: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 3, &find).await;
        if c.error_code == 0 && leader >= 1 {
            break (c, leader as usize);
        }
        assert!(std::time::Instant::now() < deadline, "no group coordinator: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((c.node_id.0, c.port), (coordinator as i32, i32::from(kafka(coordinator).port())));
}

#[test]
fn a_single_node_reports_itself_and_keeps_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessBroker::spawn(SLUICE, &dir.path().join("n"), &[]);
    let at = addr(&node);
    let s = cli_json(&at, &["cluster", "status"]).unwrap();
    assert_eq!(s["clustered"], false);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(s["nodes"][0]["client_addr"], at.as_str());
    assert!(!node.log_text().contains("peer listening"));
    let refused = run_cli(SLUICE, &at, &["topic", "create", "t", "--replication-factor", "2"], b"");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidReplicationFactor"));
    let refused = run_cli(SLUICE, &at, &["cluster", "add-node", "2", "127.0.0.1:1"], b"");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("single node"), "{refused:?}");
    let out = run_cli(SLUICE, &at, &["topic", "create", "t", "--replication-factor", "1"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = layout(&at, "t").unwrap();
    assert_eq!(t[0].0, 0, "a single node leads its partitions");
    let meta = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { node.connect().await.call(&MetadataRequest::default()).await.unwrap() });
    assert_eq!((meta.node_id, meta.brokers.len()), (0, 1));
    assert_eq!(meta.brokers[0].addr, at, "itself, at its bound address");
}

/// A fourth broker started with the voters' `--peers` (not in them) waits
/// until `sluice cluster add-node` admits it; then it registers as a
/// non-voting member, takes replicas of a topic created afterwards, serves
/// clients, and after a `kill -9` and restart rejoins every ISR. A voter's
/// id cannot be added again.
#[test]
fn a_node_added_later_joins_without_a_vote_and_takes_new_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let flags = sluice_tests::cluster::three_node_flags();
    let nodes: Vec<ProcessBroker> = (1..=3).map(|id| start_node(dir.path(), &flags, id)).collect();
    let addrs: Vec<String> = nodes.iter().map(addr).collect();
    let live = |at: &str, n: usize| {
        let s = cli_json(at, &["cluster", "status"]).ok()?;
        let nodes = s["nodes"].as_array()?.clone();
        (nodes.iter().filter(|n| n["live"] == true).count() == n).then_some(nodes)
    };
    poll("three live nodes", || live(&addrs[0], 3));

    // Node 4: the voters' --peers, its own peer port.
    let voters = flags[0][5].clone();
    let port = sluice_tests::ports::reserve_port().local_addr().unwrap().port();
    let peer4 = format!("127.0.0.1:{port}");
    let flags4 = ["--node-id", "4", "--peer-listen", &peer4, "--peers", &voters];
    let mut fourth = ProcessBroker::spawn(SLUICE, &dir.path().join("n4"), &flags4);
    assert!(fourth.log_text().contains("waiting to be added"), "{}", fourth.log_text());
    assert_eq!(live(&addrs[0], 3).unwrap().len(), 3, "not a member before it is added");

    let refused = run_cli(SLUICE, &addrs[0], &["cluster", "add-node", "2", "127.0.0.1:1"], b"");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("voter"), "{refused:?}");
    // Asked of any node: a follower forwards it to the controller leader.
    for at in &addrs[1..] {
        let out = run_cli(SLUICE, at, &["cluster", "add-node", "4", &peer4], b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let all = poll("node 4 live on every node's view", || {
        let views: Vec<_> = addrs.iter().chain([&addr(&fourth)]).map(|at| live(at, 4)).collect();
        views.into_iter().collect::<Option<Vec<_>>>()
    });
    for view in all {
        let voter = |id: u64| view.iter().find(|n| n["id"] == id).map(|n| n["voter"] == true);
        assert_eq!(
            (voter(1), voter(2), voter(3), voter(4)),
            (Some(true), Some(true), Some(true), Some(false))
        );
    }

    // A topic created now is placed over all four; node 4 leads some of it.
    let create = ["topic", "create", "wide", "--partitions", "4", "--replication-factor", "3"];
    let out = run_cli(SLUICE, &addrs[0], &create, b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wide = poll("the topic on node 4", || layout(&addr(&fourth), "wide"));
    assert!(wide.iter().any(|p| p.0 == 4), "{wide:?}");
    let on4 = |l: &[(i64, u64, Value, Value)]| {
        l.iter().filter(|p| p.2.as_array().unwrap().contains(&4.into())).count()
    };
    assert_eq!(on4(&wide), 3, "{wide:?}");
    let everyone = format!("{},{}", addrs.join(","), addr(&fourth));
    let input: String = (1..=40).map(|i| format!("{i}\n")).collect();
    let out = run_cli(SLUICE, &everyone, &["produce", "wide", "--acks", "durable"], input.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = ["consume", "wide", "--from-beginning", "--max-messages", "40", "--timeout-ms", "10000"];
    let read = run_cli(SLUICE, &addr(&fourth), &args, b"");
    assert_eq!(String::from_utf8_lossy(&read.stderr).trim(), "40 records", "{read:?}");

    // kill -9 and restart: it comes back on its own (no add-node again)
    // and every ISR is whole again.
    fourth.kill9();
    drop(fourth);
    let fourth = ProcessBroker::spawn(SLUICE, &dir.path().join("n4"), &flags4);
    poll("node 4 back in every ISR", || {
        let l = layout(&addrs[1], "wide")?;
        let whole = l.iter().all(|p| p.3.as_array().is_some_and(|isr| isr.len() == 3));
        (whole && live(&addr(&fourth), 4).is_some()).then_some(())
    });
}

/// `--advertise` and `--kafka-advertise`: Metadata names the advertised
/// addresses (behind a proxy or port map), not the bound ones.
#[test]
fn metadata_names_the_advertised_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--advertise", "sluice-1.example:19500", "--kafka-advertise", "sluice-1.example:19092"];
    let node = ProcessBroker::spawn(SLUICE, &dir.path().join("n"), &flags);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (native, kafka) = rt.block_on(async {
        let native = node.connect().await.call(&MetadataRequest::default()).await.unwrap();
        let mut conn = KafkaConn::connect(node.kafka.unwrap()).await;
        let kafka: KafkaMetadataResponse =
            conn.call(ApiKey::Metadata, 12, &KafkaMetadataRequest::default()).await;
        (native, kafka)
    });
    assert_eq!(native.brokers[0].addr, "sluice-1.example:19500");
    let b = &kafka.brokers[0];
    assert_eq!((b.host.as_str(), b.port), ("sluice-1.example", 19092));
    let refused = std::process::Command::new(SLUICE)
        .args(["serve", "--advertise", "no-port", "--data-dir"])
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HOST:PORT"), "{refused:?}");
}
