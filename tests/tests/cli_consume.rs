//! `sluice consume` end to end: group members that run at once print
//! each record once, commit while they run and on SIGTERM (then leave),
//! offsets as users say them (`-N`, `@TIMESTAMP`), and clear errors for
//! a partition or offset that does not exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cli_support::{ok, sluice, start, text};
use sluice_tests::ProcessBroker;

/// Produces `n` lines `prefix{i}` to `topic`.
fn produce_lines(broker: &ProcessBroker, topic: &str, prefix: &str, n: usize) {
    let input: String = (0..n).map(|i| format!("{prefix}{i}\n")).collect();
    ok(&sluice(broker, &["produce", topic], input.as_bytes()));
}

/// `group describe --json` output.
fn describe(broker: &ProcessBroker, group: &str) -> String {
    text(&sluice(broker, &["--json", "group", "describe", group], b"").stdout)
}

/// Polls `check` until it holds, for at most 30 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `child`'s stdout lines on a thread, into the returned channel.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Members of `group` that own a partition now.
fn owners(broker: &ProcessBroker, group: &str) -> BTreeSet<String> {
    let out = text(&sluice(broker, &["group", "describe", group], b"").stdout);
    out.lines()
        .filter(|l| l.starts_with("t "))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .filter(|m| m != "-")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_group_consumers_print_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "4"], b""));
    produce_lines(&broker, "t", "m", 50_000);

    // The first member takes every partition and blocks on a full pipe
    // (nobody reads it yet) while the second joins and the group moves
    // some of the partitions to it: a revocation with records in hand.
    let args = ["consume", "t", "--group", "g", "--offset", "beginning", "--commit-interval-ms", "500"];
    let mut a = start(&broker, &args);
    eventually("the first member to own partitions", || owners(&broker, "g").len() == 1);
    let mut b = start(&broker, &args);
    let b_rx = lines_of(&mut b);
    eventually("both members to own partitions", || owners(&broker, "g").len() == 2);
    let a_rx = lines_of(&mut a);
    eventually("every record to be committed", || describe(&broker, "g").contains("\"total_lag\": 0"));
    for member in [&a, &b] {
        Command::new("kill").args(["-TERM", &member.id().to_string()]).status().unwrap();
    }
    let (a_status, b_status) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(a_status.success() && b_status.success(), "{a_status:?} {b_status:?}");
    let a_lines: Vec<String> = a_rx.iter().collect();
    let b_lines: Vec<String> = b_rx.iter().collect();
    let unique: BTreeSet<&String> = a_lines.iter().chain(&b_lines).collect();
    assert!(!b_lines.is_empty(), "the second member printed its share");
    assert_eq!(unique.len(), 50_000, "every record printed");
    assert_eq!(
        a_lines.len() + b_lines.len(),
        50_000,
        "and none twice ({} + {})",
        a_lines.len(),
        b_lines.len()
    );
    assert!(describe(&broker, "g").contains("\"total_lag\": 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_member_commits_and_sigterm_commits_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "2"], b""));
    produce_lines(&broker, "t", "a", 1000);

    // Lag falls while a member runs (commits every 200 ms).
    let mut running = start(
        &broker,
        &["consume", "t", "--group", "lag", "--offset", "beginning", "--commit-interval-ms", "200"],
    );
    eventually("lag to reach 0 while the member runs", || {
        describe(&broker, "lag").contains("\"total_lag\": 0")
    });
    assert!(running.try_wait().unwrap().is_none(), "still running");
    Command::new("kill").args(["-INT", &running.id().to_string()]).status().unwrap();
    assert!(running.wait().unwrap().success(), "SIGINT (Ctrl-C) is a clean stop");

    // Only SIGTERM commits here (the interval is an hour).
    let mut member = start(
        &broker,
        &["consume", "t", "--group", "g", "--offset", "beginning", "--commit-interval-ms", "3600000"],
    );
    let stdout = member.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut printed = BTreeSet::new();
    while printed.len() < 1000 {
        printed.insert(rx.recv_timeout(Duration::from_secs(30)).expect("the member prints every record"));
    }
    Command::new("kill").args(["-TERM", &member.id().to_string()]).status().unwrap();
    let status = member.wait().unwrap();
    assert!(status.success(), "exit status 0 after SIGTERM, got {status:?}");
    let described = describe(&broker, "g");
    assert!(described.contains("\"total_lag\": 0"), "what was printed is committed: {described}");
    assert!(described.contains("\"members\": []"), "and the member left: {described}");

    // The next member starts after the printed records.
    produce_lines(&broker, "t", "b", 5);
    let out = sluice(&broker, &["consume", "t", "--group", "g", "--timeout-ms", "1500"], b"");
    ok(&out);
    let next: BTreeSet<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(next, (0..5).map(|i| format!("b{i}")).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_as_users_say_them_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "2"], b""));
    ok(&sluice(&broker, &["topic", "create", "u", "--partitions", "1"], b""));
    let old = ["produce", "t", "--partition", "0", "--timestamp", "1700000000000"];
    ok(&sluice(&broker, &old, b"o0\no1\no2\n"));
    let new = ["produce", "t", "--partition", "0", "--timestamp", "1700000100000"];
    ok(&sluice(&broker, &new, b"n0\nn1\n"));
    ok(&sluice(&broker, &["produce", "t", "--partition", "1"], b"p1\n"));
    ok(&sluice(&broker, &["produce", "u"], b"u0\n"));

    let values = |args: &[&str]| {
        let out = sluice(&broker, args, b"");
        ok(&out);
        let mut v: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(
        values(&["consume", "t", "--offset", "-2", "-e"]),
        ["n0", "n1", "p1"],
        "last 2 of each partition"
    );
    assert_eq!(
        values(&["consume", "t", "--partition", "0", "--offset", "@1700000050000", "-e"]),
        ["n0", "n1"]
    );
    assert_eq!(
        values(&["consume", "t", "--partition", "0", "--offset", "@2023-11-14T22:14:00Z", "-e"]),
        ["n0", "n1"]
    );
    assert_eq!(values(&["consume", "t", "--partition", "0", "--offset", "3", "-e"]), ["n0", "n1"]);
    assert_eq!(values(&["consume", "t", "u", "--from-beginning", "-e"]).len(), 7, "several topics");
    assert_eq!(
        values(&["consume", "t", "--offset", "end", "-e"]),
        Vec::<String>::new(),
        "-e at the end stops"
    );

    for (args, code, says) in [
        (&["consume", "t", "--partition", "7"][..], 1, "no partition 7"),
        (&["consume", "t", "--partition", "0", "--offset", "99999"][..], 1, "past the end"),
        (&["consume", "nosuch", "--group", "g"][..], 1, "topic \"nosuch\" does not exist"),
        (&["consume", "t", "--offset", "soon"][..], 2, "-N (the last N)"),
    ] {
        let out = sluice(&broker, args, b"");
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
}
