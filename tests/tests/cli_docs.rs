//! docs/cli.md's examples and the README's quickstart stay true: every
//! fenced `sh` block is run, in order, by bash against a broker this test
//! starts, with `sluice` (and `cargo run --release --`) resolved to the
//! test binary. A block whose first line is `# not run in tests` is
//! skipped; any failing command fails the test with its output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use sluice_tests::ProcessBroker;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// Marks a block the test does not run.
const SKIP: &str = "# not run in tests";

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
    for block in blocks {
        let script = format!(
            "set -euo pipefail\nsluice() {{ \"$SLUICE_BIN\" \"$@\"; }}\n{}",
            block.replace("cargo run --release -- ", "sluice ")
        );
        let out = Command::new("bash")
            .args(["-c", &script])
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
