//! docs/cli.md's and docs/cli-consume-produce.md's examples and the
//! README's quickstart stay true: every fenced `sh` block is run, in
//! order, by bash against a broker this test starts, in a fresh working
//! directory, with `sluice` (and `cargo run --release --`) resolved to the
//! test binary. A block whose first line is `# not run in tests` is
//! skipped; a command whose line ends with `(follows)` (it follows new
//! records until stopped) runs for [`FOLLOW_FOR`], then gets SIGTERM and
//! must exit 0 (a clean stop); any failing command fails the test with
//! its output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use sluice_tests::ProcessBroker;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// Marks a block the test does not run.
const SKIP: &str = "# not run in tests";

/// Ends the line of a command that runs until stopped.
const FOLLOWS: &str = "(follows)";

/// How long a following command runs before its SIGTERM.
const FOLLOW_FOR: &str = "1";

/// Bash run before each block: `sluice` calls the test binary; `follow`
/// runs it in the background, stops it with SIGTERM after [`FOLLOW_FOR`]
/// seconds and fails unless it exited 0 (the binary itself is the
/// background job, so the signal reaches it).
fn prelude() -> String {
    format!(
        "set -euo pipefail\n\
         sluice() {{ \"$SLUICE_BIN\" \"$@\"; }}\n\
         follow() {{ shift; \"$SLUICE_BIN\" \"$@\" & local pid=$!; sleep {FOLLOW_FOR}; \
         kill -TERM \"$pid\"; wait \"$pid\"; }}\n"
    )
}

/// `block` as run: `cargo run --release --` is `sluice`, and each line
/// marked [`FOLLOWS`] runs under `follow`.
fn runnable(block: &str) -> String {
    block
        .replace("cargo run --release -- ", "sluice ")
        .lines()
        .map(|line| match line.trim_end().ends_with(FOLLOWS) {
            true => format!("follow {line}\n"),
            false => format!("{line}\n"),
        })
        .collect()
}

/// The fenced `sh` blocks of `markdown`, each as its text.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks.into_iter().filter(|b| !b.starts_with(SKIP)).collect()
}

/// Runs each block with bash (`set -euo pipefail`), `sluice` a function
/// calling the test binary, `SLUICE_BROKER` pointing at `broker`.
fn run_blocks(broker: &ProcessBroker, source: &str, blocks: &[String]) {
    assert!(!blocks.is_empty(), "{source} has no runnable sh block");
    let cwd = tempfile::tempdir().unwrap();
    for block in blocks {
        let script = format!("{}{}", prelude(), runnable(block));
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(cwd.path())
            .env("SLUICE_BIN", SLUICE)
            .env("SLUICE_BROKER", broker.addr.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{source}: this block failed ({:?}):\n{block}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn read(rel: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(rel)).unwrap()
}

#[test]
fn cli_md_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--auto-create-topics", "true"]);
    run_blocks(&broker, "docs/cli.md", &sh_blocks(&read("docs/cli.md")));
}

#[test]
fn cli_consume_produce_md_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &["--auto-create-topics", "true"]);
    let doc = "docs/cli-consume-produce.md";
    let blocks = sh_blocks(&read(doc));
    assert!(blocks.iter().any(|b| b.contains(FOLLOWS)), "{doc} has following examples, marked");
    run_blocks(&broker, doc, &blocks);
}

#[test]
fn readme_quickstart_runs_top_to_bottom() {
    let readme = read("README.md");
    let start = readme.find("## Quickstart").expect("README has a Quickstart");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(SLUICE, dir.path(), &[]);
    run_blocks(&broker, "README.md (Quickstart)", &sh_blocks(&section[..end]));
}

#[test]
fn the_extractor_skips_marked_blocks() {
    let md = "```sh\n# not run in tests\nsluice serve\n```\n```text\nno\n```\n```sh\nsluice status\n```\n";
    assert_eq!(sh_blocks(md), vec!["sluice status\n".to_owned()]);
}

#[test]
fn following_commands_run_under_follow() {
    assert_eq!(
        runnable("sluice consume t -e\nsluice consume t   # then waits (follows)\n"),
        "sluice consume t -e\nfollow sluice consume t   # then waits (follows)\n"
    );
}
