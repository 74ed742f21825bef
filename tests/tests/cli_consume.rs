//! `sluice consume` end to end: group members that run at once print
//! each record once across a rebalance, a member killed with `kill -9`
//! loses nothing (another prints its uncommitted tail again), members
//! commit while they run and on SIGTERM (then leave),
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

/// Produces `n` lines `prefix{i}` to partition `p` of `t`.
fn produce_to(broker: &ProcessBroker, p: u32, prefix: &str, n: usize) {
    let input: String = (0..n).map(|i| format!("{prefix}{i}\n")).collect();
    ok(&sluice(broker, &["produce", "t", "--partition", &p.to_string()], input.as_bytes()));
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

/// One printed line of `--print-offsets`: (partition, offset, value).
type Line = (u32, u64, String);

fn parse(line: &str) -> Line {
    let mut parts = line.splitn(3, ' ');
    let p = parts.next().unwrap().parse().unwrap();
    let o = parts.next().unwrap().parse().unwrap();
    (p, o, parts.next().unwrap().to_owned())
}

/// A member printing `partition offset value` lines, read on a thread.
struct Member {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    got: Vec<Line>,
}

impl Member {
    fn start(broker: &ProcessBroker, extra: &[&str]) -> Self {
        Self::start_in(broker, "g", extra)
    }

    /// A member of `group`.
    fn start_in(broker: &ProcessBroker, group: &str, extra: &[&str]) -> Self {
        let mut args = vec!["consume", "t", "--group", group, "--offset", "beginning", "--print-offsets"];
        args.extend_from_slice(extra);
        let mut child = start(broker, &args);
        let lines = lines_of(&mut child);
        Self { child, lines, got: Vec::new() }
    }

    /// Takes the lines printed so far.
    fn drain(&mut self) -> usize {
        self.got.extend(self.lines.try_iter().map(|l| parse(&l)));
        self.got.len()
    }

    /// SIGTERM: commits, leaves, exits 0; returns every line it printed.
    fn stop(mut self) -> Vec<Line> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "a clean stop, got {status:?}: {err}");
        self.got.extend(self.lines.iter().map(|l| parse(&l)));
        self.got
    }
}

/// Counts how often each record was printed by `members`.
fn counts<'a>(
    members: impl IntoIterator<Item = &'a Vec<Line>>,
) -> std::collections::BTreeMap<&'a Line, usize> {
    let mut n = std::collections::BTreeMap::new();
    for line in members.into_iter().flatten() {
        *n.entry(line).or_insert(0) += 1;
    }
    n
}

/// The records produced to `t`, as `(partition, offset, value)`.
fn all_records(broker: &ProcessBroker) -> BTreeSet<Line> {
    let out = sluice(broker, &["consume", "t", "--offset", "beginning", "-e", "--print-offsets"], b"");
    ok(&out);
    text(&out.stdout).lines().map(parse).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_group_consumers_print_each_record_once_across_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "6"], b""));
    produce_lines(&broker, "t", "a", 20_000);

    // Commits only before revocations and at the end (the interval is an
    // hour): a revocation that did not commit first shows as duplicates.
    let interval = ["--commit-interval-ms", "3600000"];
    let mut a = Member::start(&broker, &interval);
    let mut b = Member::start(&broker, &interval);
    eventually("the first two members to print", || a.drain() + b.drain() >= 10_000);
    // A third member joins while records keep coming: partitions move
    // from the first two to it in the middle of the stream.
    let mut c = Member::start(&broker, &interval);
    for p in 0..6 {
        produce_to(&broker, p, &format!("b{p}-"), 2_000);
    }
    eventually("the third member to own partitions", || owners(&broker, "g").len() == 3);
    for p in 0..6 {
        produce_to(&broker, p, &format!("c{p}-"), 1_000);
    }
    let total = 38_000;
    eventually("every record to be printed", || a.drain() + b.drain() + c.drain() >= total);
    let printed = [a.stop(), b.stop(), c.stop()];
    assert!(printed.iter().all(|p| !p.is_empty()), "each member printed its share");
    let n = counts(&printed);
    let twice: Vec<_> = n.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(twice.is_empty(), "no record printed twice: {twice:?}");
    let union: BTreeSet<Line> = n.keys().map(|l| (*l).clone()).collect();
    assert_eq!(union.len(), total, "every record printed");
    assert_eq!(union, all_records(&broker), "exactly the records produced");
    assert!(describe(&broker, "g").contains("\"total_lag\": 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "4"], b""));
    for p in 0..4 {
        produce_to(&broker, p, &format!("a{p}-"), 5_000);
    }
    let args = ["consume", "t", "--group", "g", "--offset", "beginning", "--print-offsets"];
    let timing = ["--commit-interval-ms", "200", "--session-timeout-ms", "1500"];
    // The victim's output is read up to 1,000 lines, then not until it
    // died: it blocks on the full pipe in the middle of a batch, with the
    // rest of the batch in hand.
    let mut victim = start(&broker, &[&args[..], &timing[..]].concat());
    let (gate, wait_gate) = mpsc::channel::<()>();
    let (tx, victim_rx) = mpsc::channel();
    let stdout = victim.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        for i in 0.. {
            if i == 1_000 {
                let _ = wait_gate.recv();
            }
            line.clear();
            // A line cut short by the kill was not printed.
            if reader.read_line(&mut line).unwrap() == 0 || !line.ends_with('\n') {
                break;
            }
            if tx.send(parse(line.trim_end())).is_err() {
                break;
            }
        }
    });
    let mut victim_lines: Vec<Line> = Vec::new();
    eventually("the victim to print", || {
        victim_lines.extend(victim_rx.try_iter());
        victim_lines.len() >= 1_000
    });
    let mut survivor = Member::start(&broker, &timing);
    eventually("both members to own partitions", || owners(&broker, "g").len() == 2);
    Command::new("kill").args(["-KILL", &victim.id().to_string()]).status().unwrap();
    victim.wait().unwrap();
    // What it printed before it died (the pipe keeps it).
    gate.send(()).unwrap();
    victim_lines.extend(victim_rx.iter());
    // More records, and the victim restarted; its session expired meanwhile.
    for p in 0..4 {
        produce_to(&broker, p, &format!("b{p}-"), 1_000);
    }
    let mut restarted = Member::start(&broker, &timing);
    let total = 24_000;
    eventually("every record to be printed again", || {
        survivor.drain();
        restarted.drain();
        let seen: BTreeSet<&Line> = victim_lines.iter().chain(&survivor.got).chain(&restarted.got).collect();
        seen.len() >= total && describe(&broker, "g").contains("\"total_lag\": 0")
    });
    let rest = [survivor.stop(), restarted.stop()];
    // No loss: every record produced was printed by someone.
    let union: BTreeSet<Line> = rest.iter().flatten().chain(&victim_lines).cloned().collect();
    assert_eq!(union.len(), total);
    assert_eq!(union, all_records(&broker), "every record printed at least once");
    // The survivors never print a record twice among themselves...
    let n = counts(&rest);
    assert!(n.values().all(|c| *c == 1), "a survivor printed a record twice");
    // ...and what they print again of the victim's is, per partition, the
    // tail of what it printed (after its last commit).
    for p in 0..4 {
        let mine: Vec<&Line> = victim_lines.iter().filter(|l| l.0 == p).collect();
        let again = mine.iter().position(|l| n.contains_key(*l)).unwrap_or(mine.len());
        assert!(
            mine[again..].iter().all(|l| n.contains_key(*l)),
            "partition {p}: only the victim's uncommitted tail is printed again"
        );
    }
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

/// Sorted lines of a finished command's stdout.
fn sorted_lines(out: &std::process::Output) -> Vec<String> {
    ok(out);
    let mut v: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_starts_uncommitted_partitions_at_offset_and_follows_added_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "2"], b""));
    produce_to(&broker, 0, "a", 10);
    produce_to(&broker, 1, "b", 10);

    // --offset -N with a group: where partitions without a commit start...
    let once = ["consume", "t", "--group", "g", "--offset", "-3", "--timeout-ms", "1500"];
    assert_eq!(sorted_lines(&sluice(&broker, &once, b"")), ["a7", "a8", "a9", "b7", "b8", "b9"]);
    // ...while committed partitions resume where the group stopped.
    produce_to(&broker, 0, "c", 2);
    assert_eq!(sorted_lines(&sluice(&broker, &once, b"")), ["c0", "c1"]);
    let at = ["consume", "t", "--group", "h", "--offset", "8", "--timeout-ms", "1500"];
    assert_eq!(sorted_lines(&sluice(&broker, &at, b"")), ["a8", "a9", "b8", "b9", "c0", "c1"]);

    // Partitions added while a member runs are assigned to it and read.
    let mut member = Member::start_in(&broker, "fresh", &[]);
    eventually("the member to print what is there", || member.drain() >= 22);
    ok(&sluice(&broker, &["topic", "add-partitions", "t", "--count", "3"], b""));
    produce_to(&broker, 2, "new", 5);
    eventually("the new partition's records to be printed", || {
        member.drain();
        member.got.iter().filter(|l| l.0 == 2).count() == 5
    });
    let got = member.stop();
    assert_eq!(got.len(), 27, "nothing printed twice: {got:?}");
}
