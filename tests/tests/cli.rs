//! The `sluice` command line, end to end against a real broker process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use sluice_tests::{read_partition, run_cli, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

fn sluice(broker: &ProcessBroker, args: &[&str], stdin: &str) -> Output {
    run_cli(SLUICE, &broker.addr.to_string(), args, stdin.as_bytes())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_commands_and_produce() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);

    let out =
        sluice(&broker, &["topic", "create", "orders", "--partitions", "3", "--retention-ms", "60000"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sluice(&broker, &["topic", "create", "bad name"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("InvalidTopicName") && err.lines().count() == 1,
        "{err}"
    );

    let out = sluice(
        &broker,
        &["produce", "orders", "--key-separator", ":", "--print-offsets"],
        "a:one\nb:two\na:three\nplain\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<(u32, u64)> = text(&out.stdout)
        .lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), 4, "one line per record, in input order");
    assert_eq!(lines[0].0, lines[2].0, "same key, same partition");
    assert_eq!(lines[2].1, lines[0].1 + 1, "and consecutive offsets");
    assert!(text(&out.stderr).contains("4 records"), "summary on stderr: {}", text(&out.stderr));
    let conn = broker.connect().await;
    let stored = read_partition(&conn, "orders", lines[0].0, 0).await;
    let values: Vec<_> = stored
        .iter()
        .flat_map(|b| b.records().unwrap().to_owned_records().unwrap())
        .map(|r| r.value.unwrap())
        .collect();
    assert!(values.contains(&bytes::Bytes::from("one")) && values.contains(&bytes::Bytes::from("three")));

    let out = sluice(
        &broker,
        &["produce", "orders", "--partition", "2", "--acks", "leader", "--compression", "lz4"],
        "x\ny\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sluice(&broker, &["produce", "missing"], "x\n");
    assert_eq!(out.status.code(), Some(1), "non-zero exit when records are not acknowledged");
    assert!(text(&out.stderr).contains("unknown topic"), "{}", text(&out.stderr));

    let out = sluice(&broker, &["--json", "topic", "describe", "orders"], "");
    assert!(out.status.success());
    let json = text(&out.stdout);
    assert!(json.contains("\"retention_ms\": \"60000\"") && json.contains("\"high_watermark\""), "{json}");
    let out = sluice(&broker, &["topic", "list", "--json"], "");
    assert!(text(&out.stdout).contains("\"name\": \"orders\""));
    let out = sluice(&broker, &["topic", "alter", "orders", "--fsync", "interval:100"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sluice(&broker, &["topic", "delete", "orders"], "");
    assert!(out.status.success());
    let out = sluice(&broker, &["topic", "describe", "orders"], "");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unreachable_broker_is_a_one_line_error() {
    let out = Command::new(SLUICE).args(["--broker", "127.0.0.1:1", "topic", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: cannot connect to 127.0.0.1:1") && err.lines().count() == 1, "{err}");
}

#[test]
fn bench_forwards_every_argument_to_sluice_bench() {
    use std::os::unix::fs::PermissionsExt;
    // A copy of the CLI beside a stand-in `sluice-bench` that prints its
    // arguments: `sluice bench` must find it there and pass them untouched.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cli = dir.path().join("sluice");
    std::fs::hard_link(SLUICE, &cli).or_else(|_| std::fs::copy(SLUICE, &cli).map(drop)).unwrap();
    let stand_in = dir.path().join("sluice-bench");
    std::fs::write(&stand_in, "#!/bin/sh\nprintf '%s|' \"$@\"\nexit 3\n").unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = ["bench", "e2e", "--broker", "127.0.0.1:9", "--json", "--help"];
    let out = Command::new(&cli).args(args).output().unwrap();
    assert_eq!(text(&out.stdout), "e2e|--broker|127.0.0.1:9|--json|--help|");
    assert_eq!(out.status.code(), Some(3), "the tool's exit code is ours");

    std::fs::remove_file(&stand_in).unwrap();
    let out = Command::new(&cli).args(["bench", "produce"]).env("PATH", dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cargo build --release -p sluice-benches") && err.lines().count() == 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_group_commands() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    assert!(sluice(&broker, &["topic", "create", "t", "--partitions", "2"], "").status.success());
    let input: String = (0..10).map(|i| format!("k{i}:v{i}\n")).collect();
    assert!(sluice(&broker, &["produce", "t", "--key-separator", ":"], &input).status.success());

    // Without a group: every partition, nothing committed.
    let out = sluice(&broker, &["consume", "t", "--from-beginning", "--timeout-ms", "1000"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut values: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    values.sort();
    assert_eq!(
        values,
        (0..10)
            .map(|i| format!("v{i}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );

    // With a group: stops after --max-messages and commits exactly what it printed.
    let out = sluice(
        &broker,
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "4",
            "--print-offsets",
            "--print-key",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(first.len(), 4);
    assert!(first.iter().all(|l| l.split(' ').count() == 4), "partition offset key value: {first:?}");
    let out = sluice(&broker, &["--json", "group", "describe", "g"], "");
    let json = text(&out.stdout);
    assert!(json.contains("\"total_lag\": 6"), "lag = log end - committed: {json}");
    // The rest, then nothing: the group resumes where it committed.
    let out =
        sluice(&broker, &["consume", "t", "--group", "g", "--from-beginning", "--timeout-ms", "1500"], "");
    assert_eq!(text(&out.stdout).lines().count(), 6, "{}", text(&out.stderr));
    let out = sluice(&broker, &["group", "list"], "");
    assert!(text(&out.stdout).contains("g "), "{}", text(&out.stdout));

    let out =
        sluice(&broker, &["group", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--dry-run"], "");
    assert!(out.status.success() && text(&out.stdout).contains("dry run"));
    let out = sluice(&broker, &["group", "reset-offsets", "g", "--topic", "t", "--shift-by", "-2"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sluice(&broker, &["consume", "t", "--group", "g", "--timeout-ms", "1500"], "");
    assert_eq!(text(&out.stdout).lines().count(), 4, "shifted back by 2 on each partition");
    let out = sluice(
        &broker,
        &["group", "reset-offsets", "g", "--topic", "t", "--to-datetime", "2000-01-01T00:00:00Z"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out =
        sluice(&broker, &["group", "reset-offsets", "g", "--topic", "t", "--to-datetime", "yesterday"], "");
    assert_eq!(out.status.code(), Some(1));
    let out = sluice(&broker, &["group", "delete", "g"], "");
    assert!(out.status.success());
    let out = sluice(&broker, &["group", "describe", "g"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown group"));
}
