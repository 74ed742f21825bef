//! The `sluice` command line as a new user meets it: auto-created topics,
//! errors that name their cause (unknown topic or partition, a peer that
//! is not a Sluice broker), a closed stdout, examples in every `--help`,
//! completions. Each test drives the real binary against a broker process
//! on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{run_cli, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// Runs `sluice --broker ADDR args...` with `stdin`, killed (and the test
/// failed) if it runs past a deadline.
fn sluice_at(addr: &str, args: &[&str], stdin: &str) -> Output {
    run_cli(SLUICE, addr, args, stdin.as_bytes())
}

fn sluice(broker: &ProcessBroker, args: &[&str], stdin: &str) -> Output {
    sluice_at(&broker.addr.to_string(), args, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A broker started with a config file holding `toml`.
fn broker_with(dir: &tempfile::TempDir, toml: &str) -> ProcessBroker {
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    ProcessBroker::spawn(SLUICE, &dir.path().join("data"), &["--config", config.to_str().unwrap()])
}

#[test]
fn auto_create_makes_produce_work_end_to_end_with_default_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(&dir, "auto_create_topics = true\ndefault_partitions = 3\n");
    ok(&sluice(&broker, &["produce", "newtopic"], "hello\n"));
    let out = ok(&sluice(&broker, &["consume", "newtopic", "--from-beginning", "--max-messages", "1"], ""));
    assert_eq!(out.trim(), "hello");
    let described = ok(&sluice(&broker, &["topic", "describe", "newtopic"], ""));
    let rows = described.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).count();
    assert_eq!(rows, 3, "default_partitions: {described}");

    let created = ok(&sluice(&broker, &["topic", "create", "plain"], ""));
    assert!(created.contains("with 3 partition(s)"), "topic create uses default_partitions: {created}");
}

#[test]
fn without_auto_create_the_error_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let out = sluice(&broker, &["produce", "nosuch"], "x\n");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("topic \"nosuch\" does not exist"), "{err}");
    assert!(err.contains("sluice topic create nosuch"), "{err}");
    assert!(err.contains("--auto-create-topics true"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn unknown_topic_and_partition_fail_at_once_also_under_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "2"], ""));

    let out = sluice(&broker, &["consume", "nosuch", "--group", "g"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("topic \"nosuch\" does not exist"), "{}", text(&out.stderr));

    let out = sluice(&broker, &["consume", "t", "--partition", "7", "--max-messages", "1"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("has no partition 7 (it has 2"), "{}", text(&out.stderr));

    let out = sluice(&broker, &["topic", "describe", "nosuch"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
}

#[test]
fn the_admin_port_is_not_a_sluice_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let admin = broker.admin.expect("admin address").to_string();
    for args in [&["topic", "list"][..], &["produce", "t"], &["consume", "t"], &["status"]] {
        let out = sluice_at(&admin, args, "x\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        let want =
            format!("{admin} is not a Sluice broker (it answered like an HTTP server; the admin port?)");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn a_listener_writing_garbage_is_not_a_sluice_broker() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Serves a bounded number of connections: each gets garbage, then EOF.
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(&[0xff; 32]);
        }
    });
    let out = sluice_at(&addr, &["topic", "list"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{addr} is not a Sluice broker")), "{err}");
}

#[test]
fn nothing_listening_says_what_to_start() {
    let out = sluice_at("127.0.0.1:1", &["topic", "list"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
    assert!(err.contains("sluice serve"), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "64"], ""));
    let lines: String = (0..2000).map(|i| format!("record {i}\n")).collect();
    ok(&sluice(&broker, &["produce", "t"], &lines));
    let addr = broker.addr.to_string();
    for pipeline in [
        format!("{SLUICE} --broker {addr} topic describe t | head -1"),
        format!("{SLUICE} --broker {addr} topic describe t --json | head -0"),
        format!("{SLUICE} --broker {addr} consume t --from-beginning --max-messages 2000 | head -1"),
        format!("{SLUICE} --broker {addr} consume t --from-beginning -e --json | head -1"),
        format!("{SLUICE} --broker {addr} consume t --from-beginning -e --format '%s\\n' | head -1"),
    ] {
        let out =
            Command::new("bash").args(["-c", &format!("set -o pipefail; {pipeline}")]).output().unwrap();
        let err = text(&out.stderr);
        assert!(out.status.success(), "{pipeline}: {:?} {err}", out.status);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{pipeline}: {err}");
    }
}

#[test]
fn alter_prints_old_and_new_values() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--retention-ms", "1000"], ""));
    let out = ok(&sluice(&broker, &["topic", "alter", "t", "--retention-ms", "5000"], ""));
    assert!(out.contains("retention_ms: 1000 -> 5000"), "{out}");
}

#[test]
fn every_help_ends_with_examples_and_lists_only_its_flags() {
    let help = |args: &[&str]| {
        let out = Command::new(SLUICE).args(args).arg("--help").output().unwrap();
        ok(&out)
    };
    for cmd in [
        &["serve"][..],
        &["produce"],
        &["consume"],
        &["status"],
        &["verify"],
        &["completions"],
        &["topic", "create"],
        &["topic", "list"],
        &["topic", "describe"],
        &["topic", "delete"],
        &["topic", "alter"],
        &["topic", "add-partitions"],
        &["group", "list"],
        &["group", "describe"],
        &["group", "delete"],
        &["group", "reset-offsets"],
    ] {
        let h = help(cmd);
        assert!(h.contains("Examples:\n  "), "{cmd:?} --help has no examples:\n{h}");
    }
    for server in [&["serve"][..], &["verify"]] {
        assert!(!help(server).contains("--broker"), "{server:?} lists --broker");
    }
    for client in [&["topic", "list"][..], &["produce"], &["consume"], &["status"]] {
        let h = help(client);
        assert!(h.contains("--broker"), "{client:?} lacks --broker");
        assert!(!h.contains("--data-dir") && !h.contains("--fsync <"), "{client:?} lists server settings");
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&Command::new(SLUICE).args(["completions", shell]).output().unwrap());
        assert!(out.contains("sluice") && out.contains("topic"), "{shell}: {out}");
    }
}

#[test]
fn broker_flag_works_before_and_after_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let addr = broker.addr.to_string();
    let out = Command::new(SLUICE).args(["topic", "list", "--broker", &addr]).output().unwrap();
    ok(&out);
    let out = Command::new(SLUICE).args(["topic", "--broker", &addr, "list", "--json"]).output().unwrap();
    assert_eq!(ok(&out).trim(), "[]");
}

#[test]
fn add_partitions_grows_durably_and_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "2"], ""));
    let out = ok(&sluice(&broker, &["topic", "add-partitions", "t", "--count", "5"], ""));
    assert!(out.contains("partitions 2 -> 5"), "{out}");
    ok(&sluice(&broker, &["produce", "t", "--partition", "4"], "on the new partition\n"));
    let read = ["consume", "t", "--partition", "4", "--from-beginning", "--max-messages", "1"];
    assert_eq!(ok(&sluice(&broker, &read, "")).trim(), "on the new partition");

    let out = sluice(&broker, &["topic", "add-partitions", "t", "--count", "5"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("partitions only grow"), "{}", text(&out.stderr));
    let help = ok(&Command::new(SLUICE).args(["topic", "add-partitions", "--help"]).output().unwrap());
    assert!(help.contains("Keys move"), "{help}");

    assert!(broker.terminate(), "clean stop");
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let described = ok(&sluice(&broker, &["topic", "describe", "t"], ""));
    let rows = described.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).count();
    assert_eq!(rows, 5, "the new count survives a restart: {described}");
    assert_eq!(ok(&sluice(&broker, &read, "")).trim(), "on the new partition");
}

#[test]
fn verify_refuses_a_running_brokers_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t"], ""));
    let data_dir = dir.path().to_str().unwrap();
    let out = Command::new(SLUICE).args(["verify", "--data-dir", data_dir]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("in use by a running broker") && err.contains("--allow-running"), "{err}");

    let out =
        Command::new(SLUICE).args(["verify", "--data-dir", data_dir, "--allow-running"]).output().unwrap();
    assert!(text(&out.stderr).contains("stale"), "{}", text(&out.stderr));

    assert!(broker.terminate());
    ok(&Command::new(SLUICE).args(["verify", "--data-dir", data_dir]).output().unwrap());
}

#[test]
fn start_up_names_every_listener_that_failed_and_a_locked_data_dir() {
    let (a, b) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let (a, b) = (a.local_addr().unwrap().to_string(), b.local_addr().unwrap().to_string());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = Command::new(SLUICE);
        c.args(["serve", "--data-dir", data_dir]).args(extra);
        c.output().unwrap()
    };
    let out = serve(&["--listen", &a, "--admin-listen", &b]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the broker failed to start"), "{err}");
    assert!(err.contains(&format!("client listener (--listen) {a}")), "{err}");
    assert!(err.contains(&format!("admin listener (--admin-listen) {b}")), "{err}");

    let _broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    let out = serve(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the broker failed to start") && err.contains("in use by another sluice process"),
        "{err}"
    );
}

#[test]
fn wait_ms_retries_a_broker_that_is_down_and_says_so() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut cli = Command::new(SLUICE)
        .args(["topic", "list", "--broker", &port, "--wait-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = cli.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("a retry line on stderr");
    assert!(first.contains(&format!("waiting for the broker at {port}")), "{first}");
    let dir = tempfile::tempdir().unwrap();
    let _broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--listen", &port]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = cli.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sluice still waiting after the broker started");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// A broker that goes away mid-stream: the CLI says it is retrying on
/// stderr instead of going silent.
#[test]
fn retries_are_shown_on_stderr_when_the_broker_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "1"], ""));
    let mut child = Command::new(SLUICE)
        .args(["--broker", &broker.addr.to_string(), "produce", "t", "--print-offsets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    // The first record is stored: the producer is connected.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&sluice(&broker, &["topic", "describe", "t", "--json"], "")).contains("\"log_end_offset\": 1") {
        assert!(Instant::now() < deadline, "the first record was not stored within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill9();
    stdin.write_all(b"second\n").unwrap();
    stdin.flush().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = stderr;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !text(&seen).contains("retrying") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no retry shown on stderr within 20 s: {}", text(&seen));
        if let Ok(chunk) = rx.recv_timeout(left) {
            seen.extend(chunk);
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
}
