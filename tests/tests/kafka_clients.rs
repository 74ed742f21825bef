//! Kafka clients nobody here wrote, against a real `sluice serve`
//! subprocess: kcat, kafka-python and confluent-kafka (librdkafka). Each
//! client produces and consumes with keys, headers and every codec, runs an
//! idempotent producer through a broker restart (no duplicates, no gaps),
//! and administers topics; Kafka and native clients read each other's
//! topics. The Python side is in `tests/kafka/*.py`. A client that is not
//! installed is skipped with a line saying so, except under CI (`CI` set),
//! where `.ci/run` installs them and a missing one fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::ProcessBroker;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Whether a client is usable; when not, skips (or under CI, fails).
fn available(name: &str, probe: &mut Command) -> bool {
    let ok = probe.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed, and CI must run it (.ci/run installs it)"
        );
        eprintln!("SKIP: {name} is not installed");
    }
    ok
}

/// The Python clients installed here (kafka-python with its codec
/// packages, confluent-kafka), by their `--client` names.
fn python_clients() -> Vec<&'static str> {
    [
        ("kafka", "kafka-python", "import kafka, lz4, zstandard, snappy"),
        ("confluent", "confluent-kafka", "import confluent_kafka"),
    ]
    .into_iter()
    .filter(|(_, name, import)| available(name, Command::new("python3").args(["-c", import])))
    .map(|(client, _, _)| client)
    .collect()
}

fn kcat() -> bool {
    available("kcat", Command::new("kcat").arg("-V"))
}

/// A broker with auto-created topics and its Kafka address.
fn broker(dir: &tempfile::TempDir, extra: &[&str]) -> (ProcessBroker, String) {
    let mut args = vec!["--auto-create-topics", "true"];
    args.extend_from_slice(extra);
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &args);
    let kafka = broker.kafka.expect("the broker logs its Kafka address").to_string();
    (broker, kafka)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kafka").join(name)
}

/// Runs `python3 tests/kafka/NAME ARGS`, failing with its output unless it
/// succeeds; returns its stdout.
fn python(name: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg(script(name)).args(args).output().unwrap();
    succeeded(&format!("{name} {args:?}"), &out)
}

fn succeeded(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command with `stdin`, failing unless it succeeds; its stdout.
fn run(command: &mut Command, stdin: &str) -> String {
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    succeeded(&format!("{command:?}"), &out)
}

#[test]
fn python_clients_round_trip_keys_headers_and_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, kafka) = broker(&dir, &[]);
    for client in python_clients() {
        for codec in CODECS {
            let topic = format!("rt-{client}-{codec}");
            let out = python(
                "roundtrip.py",
                &["--client", client, "--bootstrap", &kafka, "--topic", &topic, "--codec", codec],
            );
            assert!(out.contains(&format!("OK {client} {codec} 200")), "{out}");
        }
    }
}

#[test]
fn kcat_round_trips_keys_headers_and_every_codec() {
    if !kcat() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_broker, kafka) = broker(&dir, &[]);
    for codec in CODECS {
        let topic = format!("kcat-{codec}");
        let lines: String = (0..50).map(|i| format!("key{i}:value {i} {codec}\n")).collect();
        run(
            Command::new("kcat").args([
                "-P",
                "-b",
                &kafka,
                "-t",
                &topic,
                "-K:",
                "-H",
                "origin=kcat",
                "-z",
                codec,
            ]),
            &lines,
        );
        let read = run(
            Command::new("kcat").args(["-C", "-b", &kafka, "-t", &topic, "-e", "-q", "-f", "%k:%s|%h\n"]),
            "",
        );
        let want: String = (0..50).map(|i| format!("key{i}:value {i} {codec}|origin=kcat\n")).collect();
        assert_eq!(read, want, "{codec}");
    }
}

#[test]
fn admin_clients_create_describe_alter_and_delete_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, kafka) = broker(&dir, &[]);
    for client in python_clients() {
        let out = python(
            "admin.py",
            &["--client", client, "--bootstrap", &kafka, "--topic", &format!("adm-{client}")],
        );
        assert!(out.contains(&format!("OK admin {client}")), "{out}");
    }
    if kcat() {
        let listed = run(Command::new("kcat").args(["-L", "-b", &kafka]), "");
        assert!(listed.contains("1 brokers:") && listed.contains(&format!("at {kafka}")), "{listed}");
    }
}

/// A port free now on 127.0.0.1, to restart a broker on the same address.
fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn idempotent_producers_survive_a_broker_restart_without_duplicates_or_gaps() {
    for client in python_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (listen, kafka) = (free_port(), free_port());
        let flags = ["--listen", listen.as_str(), "--kafka-listen", kafka.as_str()];
        let (mut first, _) = broker(&dir, &flags);
        let topic = format!("idem-{client}");
        let mut producer = Command::new("python3")
            .arg(script("idempotent.py"))
            .args(["--client", client, "--bootstrap", &kafka, "--topic", &topic, "--count", "3000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(producer.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = lines.next().expect("the producer ended before any progress").unwrap();
            if line.starts_with("progress") {
                break;
            }
            assert!(Instant::now() < deadline, "no progress");
        }
        first.kill9(); // mid-stream: batches in flight, some acknowledged
        let (_second, _) = broker(&dir, &flags);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = producer.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut producer.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "{client} producer failed: {rest:?}\n{stderr}");
        let out = python(
            "idempotent.py",
            &["--client", client, "--bootstrap", &kafka, "--topic", &topic, "--count", "3000", "--check"],
        );
        assert!(out.contains("OK 3000 exactly once, in order"), "{client}: {out}");
    }
}

#[test]
fn kafka_and_native_clients_read_each_others_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = broker(&dir, &[]);
    let native = broker.addr.to_string();
    let values: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    let want = values.join("\n") + "\n";
    let consume = |topic: &str| {
        run(
            Command::new(SLUICE).args([
                "consume",
                topic,
                "--broker",
                &native,
                "--from-beginning",
                "--max-messages",
                "20",
            ]),
            "",
        )
    };
    for client in python_clients() {
        let topic = format!("from-{client}");
        let codec = if client == "kafka" { "zstd" } else { "lz4" }; // compressed batches read natively
        let mut args = vec!["--client", client, "--bootstrap", &kafka, "--topic", &topic, "--codec", codec];
        args.extend(values.iter().map(String::as_str));
        python("produce.py", &args);
        assert_eq!(consume(&topic), want, "{client} → sluice consume");
    }
    if kcat() {
        run(Command::new("kcat").args(["-P", "-b", &kafka, "-t", "from-kcat"]), &want);
        assert_eq!(consume("from-kcat"), want, "kcat → sluice consume");
    }
    run(Command::new(SLUICE).args(["produce", "from-native", "--broker", &native]), &want);
    for client in python_clients() {
        let read = python(
            "consume.py",
            &["--client", client, "--bootstrap", &kafka, "--topic", "from-native", "--count", "20"],
        );
        assert_eq!(read, want, "sluice produce → {client}");
    }
    if kcat() {
        let read = run(Command::new("kcat").args(["-C", "-b", &kafka, "-t", "from-native", "-e", "-q"]), "");
        assert_eq!(read, want, "sluice produce → kcat");
    }
}

/// The first `sh` block after `heading` in `markdown`.
fn sh_block_after(markdown: &str, heading: &str) -> String {
    let rest = &markdown[markdown.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
    let start = rest.find("```sh\n").unwrap() + "```sh\n".len();
    let len = rest[start..].find("```").unwrap();
    rest[start..start + len].to_owned()
}

#[test]
fn the_readme_and_docs_kcat_commands_work() {
    if !kcat() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = broker(&dir, &[]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/kafka.md")).unwrap();
    for (source, block) in [
        ("README.md", sh_block_after(&readme, "## Kafka clients")),
        ("docs/kafka.md", sh_block_after(&docs, "## Quickstart")),
    ] {
        assert!(block.contains("kcat -C -b 127.0.0.1:9092"), "{source}: {block}");
        let topic = format!("demo-{}", source.len());
        let script = format!(
            "set -euo pipefail\nsluice() {{ \"$SLUICE_BIN\" \"$@\"; }}\n{}",
            block
                .replace("cargo run --release -- ", "sluice ")
                .replace("127.0.0.1:9092", &kafka)
                .replace("demo", &topic)
        );
        let out = run(
            Command::new("bash")
                .args(["-c", &script])
                .env("SLUICE_BIN", SLUICE)
                .env("SLUICE_BROKER", broker.addr.to_string()),
            "",
        );
        assert!(out.lines().any(|l| l.trim_end().ends_with("hi")), "{source}: {out}");
    }
}
