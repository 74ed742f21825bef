//! Kafka consumer groups with Kafka clients nobody here wrote
//! (kafka-python and confluent-kafka, librdkafka inside), against a real
//! `sluice serve` subprocess: a group of 3 sharing 6 partitions reads every
//! record exactly once, a member leaves (or dies: its session expires) and
//! the others take over, a restarted group resumes at the committed
//! offsets, with each client-side assignor (range, roundrobin, cooperative-sticky) and with KIP-848's
//! consumer protocol; and a Kafka group's committed offsets are the native
//! coordinator's (`sluice group describe` shows them, `sluice group
//! reset-offsets` moves them for Kafka's OffsetFetch). The Python side is in
//! `tests/kafka/groups_*.py`. A client that is not installed is skipped with
//! a line saying so, except under CI (`CI` set), where a missing one fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use sluice_tests::ProcessBroker;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// Whether a Python client imports; when not, skips (or under CI, fails).
fn available(client: &str) -> bool {
    let (name, import) = match client {
        "kafka" => ("kafka-python", "import kafka"),
        _ => ("confluent-kafka", "import confluent_kafka"),
    };
    let probe =
        Command::new("python3").args(["-c", import]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let ok = probe.is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{name} is not installed, and CI must run it");
        eprintln!("SKIP: {name} is not installed");
    }
    ok
}

fn broker(dir: &tempfile::TempDir) -> (ProcessBroker, String) {
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let kafka = broker.kafka.expect("the broker logs its Kafka address").to_string();
    (broker, kafka)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kafka").join(name)
}

fn succeeded(what: &str, out: &Output, broker: &ProcessBroker) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{}\nbroker log (last lines):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.log.lock().unwrap().iter().rev().take(60).rev().cloned().collect::<Vec<_>>().join("\n"),
    );
    stdout
}

/// Runs `python3 tests/kafka/NAME ARGS` against `broker`; its stdout.
fn python(broker: &ProcessBroker, name: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg(script(name)).args(args).output().unwrap();
    succeeded(&format!("{name} {args:?}"), &out, broker)
}

/// Runs the `sluice` CLI against `broker`'s native listener; its stdout.
fn sluice(broker: &ProcessBroker, args: &[&str]) -> String {
    let addr = broker.addr.to_string();
    let out = Command::new(SLUICE).args(["--broker", &addr]).args(args).output().unwrap();
    succeeded(&format!("sluice {args:?}"), &out, broker)
}

/// The share scenario (groups_share.py) for one client, assignor and
/// group protocol, on a broker of its own.
fn share(client: &str, strategy: &str, protocol: &str) {
    if !available(client) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = broker(&dir);
    let topic = format!("share-{client}-{strategy}-{protocol}");
    let group = format!("g-{topic}");
    let args = [
        "--client",
        client,
        "--bootstrap",
        &kafka,
        "--topic",
        &topic,
        "--group",
        &group,
        "--strategy",
        strategy,
        "--protocol",
        protocol,
    ];
    let out = python(&broker, "groups_share.py", &args);
    assert!(out.contains(&format!("OK share {client} {strategy} {protocol}")), "{out}");
    // The committed offsets are the native coordinator's: 1200 records in
    // all, every one committed.
    let described: serde_json::Value =
        serde_json::from_str(&sluice(&broker, &["--json", "group", "describe", &group])).unwrap();
    let offsets = described["offsets"].as_array().unwrap();
    let committed: u64 = offsets.iter().map(|o| o["committed"].as_u64().unwrap()).sum();
    assert_eq!((offsets.len(), committed), (6, 1200), "{described}");
}

#[test]
fn kafka_python_group_with_range() {
    share("kafka", "range", "classic");
}

#[test]
fn kafka_python_group_with_roundrobin() {
    share("kafka", "roundrobin", "classic");
}

#[test]
fn kafka_python_group_with_cooperative_sticky() {
    share("kafka", "cooperative-sticky", "classic");
}

#[test]
fn confluent_group_with_range() {
    share("confluent", "range", "classic");
}

#[test]
fn confluent_group_with_roundrobin() {
    share("confluent", "roundrobin", "classic");
}

#[test]
fn confluent_group_with_cooperative_sticky() {
    share("confluent", "cooperative-sticky", "classic");
}

#[test]
fn confluent_group_with_the_kip848_consumer_protocol() {
    share("confluent", "range", "consumer");
}

/// Offsets committed by a Kafka client are what `sluice group describe`
/// shows, and offsets moved natively are what Kafka's OffsetFetch reads.
#[test]
fn kafka_and_native_groups_share_committed_offsets() {
    for client in ["kafka", "confluent"] {
        if !available(client) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (broker, kafka) = broker(&dir);
        let (topic, group) = (format!("offsets-{client}"), format!("og-{client}"));
        let common = ["--client", client, "--bootstrap", &kafka, "--topic", &topic, "--group", &group];
        let out = python(&broker, "groups_offsets.py", &[&common[..], &["--mode", "commit"]].concat());
        assert!(out.contains("OK commit"), "{out}");
        let described: serde_json::Value =
            serde_json::from_str(&sluice(&broker, &["--json", "group", "describe", &group])).unwrap();
        let committed: Vec<(u64, u64)> = described["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["partition"].as_u64().unwrap(), o["committed"].as_u64().unwrap()))
            .collect();
        assert_eq!(committed, [(0, 7), (1, 11)], "{described}");
        sluice(
            &broker,
            &["group", "reset-offsets", &group, "--topic", &topic, "--partition", "1", "--to-offset", "15"],
        );
        let out = python(&broker, "groups_offsets.py", &[&common[..], &["--mode", "fetch"]].concat());
        assert!(out.contains("COMMITTED 0 7\n") && out.contains("COMMITTED 1 15\n"), "{out}");
    }
}

/// A member killed without leaving is removed after its session timeout
/// and the others take its partitions over (groups_expiry.py).
#[test]
fn a_dead_member_expires_and_the_others_take_over() {
    for client in ["kafka", "confluent"] {
        if !available(client) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (broker, kafka) = broker(&dir);
        let (topic, group) = (format!("expiry-{client}"), format!("eg-{client}"));
        let args = ["--client", client, "--bootstrap", &kafka, "--topic", &topic, "--group", &group];
        let out = python(&broker, "groups_expiry.py", &args);
        assert!(out.contains(&format!("OK expiry {client}")), "{out}");
    }
}
