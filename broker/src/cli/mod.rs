//! The `sluice` command line: `serve` runs the broker; the other commands
//! talk to a running one (or, `verify`, read a data directory offline).
//! Read commands print human tables, or JSON with `--json`. On failure: a
//! one-line `error: ...` naming the cause and exit code 1.
//!
//! This module holds the top-level clap definitions and the dispatch; each
//! command family has its own module with its arguments and its `run`.
//! Commands import only [`common`] (the error type, the connection, the
//! output helpers) and the library, never each other.
//!
//! Built with the `cli` feature only (on by default): the broker library
//! does not need the client crates, clap or a log subscriber.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod common;
mod consume;
mod format;
mod group;
mod input;
mod offsets;
mod produce;
mod serve;
mod status;
mod topic;
mod verify;

pub use common::CliError;

use common::runtime;

/// Sluice: a durable message-queue broker.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// Broker address for client commands.
    #[arg(long, global = true, env = "SLUICE_BROKER", default_value = "127.0.0.1:9500")]
    broker: String,
    /// Print read commands' output as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Manage topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send stdin to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Print a topic's records, one value per line.
    Consume(consume::ConsumeArgs),
    /// Inspect and manage consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// One screen about the broker: version, uptime, topics, size, groups and lag.
    Status,
    /// Check a data directory offline: list every corrupt batch (exit 1 if any).
    Verify {
        /// The data directory.
        #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
        data_dir: PathBuf,
    },
    /// Throughput and latency benchmarks: runs `sluice-bench` with these
    /// arguments (`sluice bench --help` for its options).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // `sluice bench ...` hands every argument to `sluice-bench` untouched
    // (its `--broker` means "start no broker of my own", unlike ours).
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "bench") {
        let e = bench::exec(&argv[2..]);
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let (addr, json) = (cli.broker.as_str(), cli.json);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(cmd) => runtime()?.block_on(topic::run(addr, json, cmd)),
        Command::Produce(args) => runtime()?.block_on(produce::run(addr, json, args)),
        Command::Consume(args) => runtime()?.block_on(consume::run(addr, json, args)),
        Command::Group(cmd) => runtime()?.block_on(group::run(addr, json, cmd)),
        Command::Status => runtime()?.block_on(status::run(addr, json)),
        Command::Verify { data_dir } => verify::run(&data_dir, json),
        Command::Bench { mut args } => {
            if json {
                args.push("--json".into());
            }
            Err(bench::exec(&args))
        }
    }
}

#[cfg(test)]
mod tests {
    /// Each command module with its source: they may import `common` and
    /// the library, never another command (no import cycles in this tree).
    const COMMANDS: [(&str, &str); 8] = [
        ("bench", include_str!("bench.rs")),
        ("consume", include_str!("consume.rs")),
        ("group", include_str!("group.rs")),
        ("produce", include_str!("produce.rs")),
        ("serve", include_str!("serve.rs")),
        ("status", include_str!("status.rs")),
        ("topic", include_str!("topic.rs")),
        ("verify", include_str!("verify.rs")),
    ];

    #[test]
    fn commands_import_only_common() {
        for (name, source) in COMMANDS {
            for (other, _) in COMMANDS {
                for path in [format!("super::{other}"), format!("cli::{other}")] {
                    assert!(!source.contains(&path), "{name}.rs uses {path}");
                }
            }
            assert!(!source.contains("super::super"), "{name}.rs reaches above the cli module");
        }
        let common = include_str!("common.rs");
        assert!(!common.contains("super::"), "common.rs depends on no command");
    }
}
