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

use clap::{Args, CommandFactory, Parser, Subcommand};

mod bench;
mod cluster;
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

/// The broker every client command talks to when none is named.
const DEFAULT_BROKER: &str = "127.0.0.1:9500";

/// Sluice: a durable message-queue broker.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about,
    after_help = "Examples:\n  sluice serve --data-dir ./sluice-data\n  sluice topic create orders --partitions 3\n  \
                  echo hello | sluice produce orders\n  sluice consume orders --from-beginning --max-messages 1\n\n\
                  docs/cli.md has every command, and kcat/rpk equivalents."
)]
pub struct Cli {
    /// Broker address for client commands (also accepted after the command).
    #[arg(long, env = "SLUICE_BROKER")]
    broker: Option<String>,
    /// Print read commands' output as JSON (also accepted after the command).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The flags of every command that talks to a broker.
#[derive(Debug, Args)]
struct ClientOpts {
    /// Broker address, or a comma-separated list of a cluster's brokers
    /// (the first reachable one is asked; clients then follow partition
    /// leaders) [env: SLUICE_BROKER] [default: 127.0.0.1:9500].
    #[arg(long = "broker", global = true, value_name = "BROKER[,BROKER...]")]
    broker: Option<String>,
    /// While the broker cannot be reached, retry for this long (ms), saying
    /// so on stderr (default: fail at once).
    #[arg(long, global = true, value_name = "MS")]
    wait_ms: Option<u64>,
}

/// The flags of commands that print tables or JSON.
#[derive(Debug, Args)]
struct OutputOpts {
    /// Print JSON instead of a table.
    #[arg(long = "json", global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    #[command(
        after_help = "Examples:\n  sluice serve\n  sluice serve --data-dir /var/lib/sluice --listen 0.0.0.0:9500 --fsync always\n  \
                            sluice serve --config sluice.toml --auto-create-topics true\n  \
                            sluice serve --node-id 1 --peer-listen 127.0.0.1:9600 \\\n    \
                            --peers 1=127.0.0.1:9600,2=127.0.0.1:9610,3=127.0.0.1:9620\n\n\
                            docs/cluster.md shows a three-node cluster."
    )]
    Serve(serve::ServeArgs),
    /// Manage topics.
    Topic {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        output: OutputOpts,
        #[command(subcommand)]
        cmd: topic::TopicCommand,
    },
    /// Send records to a topic: stdin split by a delimiter (newline by
    /// default), one file per record, or JSON lines.
    #[command(after_help = "Examples:\n  echo hello | sluice produce orders\n  \
                            seq 1000 | sluice produce orders --partition 0\n\n\
                            docs/cli-consume-produce.md has every option.")]
    Produce {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        output: OutputOpts,
        #[command(flatten)]
        args: produce::ProduceArgs,
    },
    /// Print records of one or more topics: values, a format, or JSON lines.
    #[command(after_help = "Examples:\n  sluice consume orders --from-beginning --max-messages 10\n  \
                            sluice consume orders --group billing\n\n\
                            docs/cli-consume-produce.md has every option.")]
    Consume {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        output: OutputOpts,
        #[command(flatten)]
        args: consume::ConsumeArgs,
    },
    /// Inspect and manage consumer groups.
    Group {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        output: OutputOpts,
        #[command(subcommand)]
        cmd: group::GroupCommand,
    },
    /// One screen about the broker: version, uptime, topics, size, groups and lag.
    #[command(after_help = "Examples:\n  sluice status\n  sluice status --json --broker 10.0.0.5:9500")]
    Status {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        output: OutputOpts,
    },
    /// The cluster: controller leader, nodes, under-replicated and offline partitions.
    Cluster {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        output: OutputOpts,
        #[command(subcommand)]
        cmd: cluster::ClusterCommand,
    },
    /// Check a data directory offline: list every corrupt batch (exit 1 if any).
    #[command(
        after_help = "Examples:\n  sluice verify --data-dir ./sluice-data\n  sluice verify --data-dir ./sluice-data --json"
    )]
    Verify {
        /// The data directory.
        #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
        data_dir: PathBuf,
        /// Check a directory a running broker holds (the result may be stale).
        #[arg(long)]
        allow_running: bool,
        #[command(flatten)]
        output: OutputOpts,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  sluice completions bash > ~/.local/share/bash-completion/completions/sluice\n  \
                            sluice completions zsh > ~/.zfunc/_sluice\n  \
                            sluice completions fish > ~/.config/fish/completions/sluice.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
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
    match run(cli).map_err(CliError::explained) {
        Ok(()) => ExitCode::SUCCESS,
        // stdout closed by its reader (`| head -1`): a clean end.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let top = cli.broker.as_deref().unwrap_or(DEFAULT_BROKER);
    let addr = |c: &ClientOpts| {
        common::init_client_logging();
        common::set_connect_wait(std::time::Duration::from_millis(c.wait_ms.unwrap_or(0)));
        c.broker.clone().unwrap_or_else(|| top.to_owned())
    };
    let json = |o: &OutputOpts| o.json || cli.json;
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic { ref client, ref output, cmd } => {
            let (a, j) = (addr(client), json(output));
            runtime()?.block_on(topic::run(&a, j, cmd))
        }
        Command::Produce { ref client, ref output, args } => {
            let (a, j) = (addr(client), json(output));
            runtime()?.block_on(async move {
                common::handshake(&a).await?;
                produce::run(&a, j, args).await
            })
        }
        Command::Consume { ref client, ref output, args } => {
            let (a, j) = (addr(client), json(output));
            runtime()?.block_on(async move {
                common::handshake(&a).await?;
                consume::run(&a, j, args).await
            })
        }
        Command::Group { ref client, ref output, cmd } => {
            let (a, j) = (addr(client), json(output));
            runtime()?.block_on(group::run(&a, j, cmd))
        }
        Command::Status { ref client, ref output } => {
            runtime()?.block_on(status::run(&addr(client), json(output)))
        }
        Command::Cluster { ref client, ref output, cmd } => {
            let (a, j) = (addr(client), json(output));
            runtime()?.block_on(cluster::run(&a, j, cmd))
        }
        Command::Verify { ref data_dir, allow_running, ref output } => {
            verify::run(data_dir, json(output), allow_running)
        }
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
        Command::Bench { mut args } => {
            if cli.json {
                args.push("--json".into());
            }
            Err(bench::exec(&args))
        }
    }
}

/// Prints the completion script for `shell` on stdout.
fn completions(shell: clap_complete::Shell) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut script);
    common::say!("{}", String::from_utf8_lossy(&script).trim_end());
}

#[cfg(test)]
mod tests {
    /// Each command module with its source: they may import `common` and
    /// the library, never another command (no import cycles in this tree).
    const COMMANDS: [(&str, &str); 9] = [
        ("bench", include_str!("bench.rs")),
        ("cluster", include_str!("cluster.rs")),
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
