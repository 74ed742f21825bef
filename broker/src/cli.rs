//! The `sluice` command line: `serve` runs the broker; `topic ...` talks to
//! a running one. Read commands print human tables, or JSON with `--json`.
//! On failure: a one-line `error: ...` naming the cause and exit code 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use sluice_protocol::api::{
    AlterTopicRequest, ConfigEntry, CreateTopicRequest, DeleteTopicRequest, MetadataRequest, TopicMetadata,
};
use sluice_protocol::client::{ClientError, Connection};
use sluice_protocol::ErrorCode;

use crate::config::{BrokerConfig, ConfigError};
use crate::errors::BrokerError;
use crate::server::Server;
use crate::storage::FsyncPolicy;

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
    Serve(ServeArgs),
    /// Manage topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send stdin to a topic, one record per line.
    Produce(ProduceArgs),
    /// Print a topic's records, one value per line.
    Consume(crate::cli_consume::ConsumeArgs),
    /// Inspect and manage consumer groups.
    #[command(subcommand)]
    Group(crate::cli_group::GroupCommand),
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
        args: Vec<std::ffi::OsString>,
    },
}

/// When the broker acknowledges.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AcksArg {
    /// No acknowledgement.
    None,
    /// After the append.
    Leader,
    /// After the flush (default).
    Durable,
}

/// Batch compression.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompressionArg {
    /// None (default).
    None,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Write every record to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// When the broker acknowledges.
    #[arg(long, value_enum, default_value = "durable")]
    acks: AcksArg,
    /// Batch compression.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Print `partition offset` for each acknowledged record, in input order.
    #[arg(long)]
    print_offsets: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file (see sluice.example.toml); flags override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on for clients.
    #[arg(long, env = "SLUICE_LISTEN")]
    listen: Option<String>,
    /// Default durability of new topics: always | interval:MS | never.
    #[arg(long, env = "SLUICE_FSYNC")]
    fsync: Option<FsyncPolicy>,
    /// Maximum client connections.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Create topics on first use.
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Admin HTTP address (/metrics, /health, /ready); "" turns it off.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Longest a request waits for its answer (ms), whatever the client asks.
    #[arg(long, env = "SLUICE_MAX_REQUEST_TIMEOUT_MS")]
    max_request_timeout_ms: Option<u32>,
    /// Log format: text, or json for log shippers.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Topic settings settable from the command line.
#[derive(Debug, Args, Default)]
struct TopicSettings {
    /// Delete data older than this (ms; 0 = forever).
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Keep at most this many bytes per partition (0 = no limit).
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Segment size in bytes.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Roll segments this old (ms).
    #[arg(long)]
    segment_ms: Option<u64>,
    /// Durability: always | interval:MS | never.
    #[arg(long)]
    fsync: Option<FsyncPolicy>,
    /// Largest batch accepted (bytes).
    #[arg(long)]
    max_message_bytes: Option<u32>,
    /// Any other topic config, as KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    other: Vec<String>,
}

impl ProduceArgs {
    fn into_options(self) -> crate::cli_produce::Options {
        crate::cli_produce::Options {
            topic: self.topic,
            key_separator: self.key_separator,
            partition: self.partition,
            acks: match self.acks {
                AcksArg::None => sluice_producer::Acks::None,
                AcksArg::Leader => sluice_producer::Acks::Leader,
                AcksArg::Durable => sluice_producer::Acks::Durable,
            },
            compression: match self.compression {
                CompressionArg::None => sluice_producer::Compression::None,
                CompressionArg::Lz4 => sluice_producer::Compression::Lz4,
                CompressionArg::Zstd => sluice_producer::Compression::Zstd,
            },
            print_offsets: self.print_offsets,
        }
    }
}

impl TopicSettings {
    fn entries(&self) -> Result<Vec<ConfigEntry>, CliError> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(ConfigEntry::new(k, v));
            }
        };
        put("retention_ms", self.retention_ms.map(|v| v.to_string()));
        put("retention_bytes", self.retention_bytes.map(|v| v.to_string()));
        put("segment_bytes", self.segment_bytes.map(|v| v.to_string()));
        put("segment_ms", self.segment_ms.map(|v| v.to_string()));
        put("fsync", self.fsync.map(|v| v.to_string()));
        put("max_message_bytes", self.max_message_bytes.map(|v| v.to_string()));
        for kv in &self.other {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--config expects KEY=VALUE, got `{kv}`")))?;
            out.push(ConfigEntry::new(k, v));
        }
        Ok(out)
    }
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, offsets, sizes and config.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Change a topic's live settings.
    Alter {
        /// Topic name.
        name: String,
        #[command(flatten)]
        settings: TopicSettings,
    },
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker failed to start or stop.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A request to the broker failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Producing failed.
    #[error("{0}")]
    Producer(#[from] sluice_producer::ProducerError),
    /// Consuming failed.
    #[error("{0}")]
    Consumer(#[from] sluice_consumer::ConsumerError),
    /// Output could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // `sluice bench ...` hands every argument to `sluice-bench` untouched
    // (its `--broker` means "start no broker of my own", unlike ours).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "bench") {
        let e = bench(&argv[2..]);
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

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Topic(cmd) => runtime()?.block_on(topic(&cli.broker, cli.json, cmd)),
        Command::Produce(args) => {
            runtime()?.block_on(crate::cli_produce::run(&cli.broker, args.into_options()))
        }
        Command::Consume(args) => runtime()?.block_on(crate::cli_consume::run(&cli.broker, args)),
        Command::Group(cmd) => runtime()?.block_on(crate::cli_group::run(&cli.broker, cli.json, cmd)),
        Command::Status => runtime()?.block_on(status(&cli.broker, cli.json)),
        Command::Verify { data_dir } => verify(&data_dir, cli.json),
        Command::Bench { mut args } => {
            if cli.json {
                args.push("--json".into());
            }
            Err(bench(&args))
        }
    }
}

/// Replaces this process with `sluice-bench` (beside this executable, as
/// cargo builds them, or on `PATH`); returns only if that fails.
fn bench(args: &[std::ffi::OsString]) -> CliError {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("sluice-bench")));
    let program = beside.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("sluice-bench"));
    let err = std::process::Command::new(&program).args(args).exec();
    CliError::Usage(format!(
        "cannot run {}: {err} (build it with `cargo build --release -p sluice-benches`)",
        program.display()
    ))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let LogFormat::Json = format {
        let _ =
            tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
        return;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format);
    let mut config = match &args.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.fsync {
        config.topic_defaults.fsync = v;
    }
    if let Some(v) = args.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = args.auto_create_topics {
        config.auto_create_topics = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.max_request_timeout_ms {
        config.max_request_timeout_ms = v;
    }
    config.validate()?;
    runtime()?.block_on(async move {
        let fsync = config.topic_defaults.fsync;
        let data_dir = config.data_dir.clone();
        let (server, report) = Server::start(config).await?;
        tracing::info!(
            addr = %server.local_addr(),
            data_dir = %data_dir.display(),
            fsync = %fsync,
            topics = report.topics,
            partitions = report.partitions,
            recovered_partitions = report.recovered,
            truncated_bytes = report.truncated_bytes,
            recovery_ms = report.duration.as_millis() as u64,
            failed_topics = report.failed.len(),
            "sluice listening"
        );
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        server.shutdown();
        server.wait().await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn verify(data_dir: &std::path::Path, json: bool) -> Result<(), CliError> {
    use crate::storage::verify::verify_dir;
    let topics = data_dir.join("topics");
    if !topics.is_dir() {
        return Err(CliError::Usage(format!("{} is not a sluice data directory", data_dir.display())));
    }
    let mut dirs: Vec<(String, std::path::PathBuf)> = Vec::new();
    for topic in std::fs::read_dir(&topics)?.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        for part in std::fs::read_dir(topic.path())?.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            let name =
                format!("{}/{}", topic.file_name().to_string_lossy(), part.file_name().to_string_lossy());
            dirs.push((name, part.path()));
        }
    }
    dirs.sort();
    let offsets = crate::groups::store::generations::current_dir(&data_dir.join("groups"));
    if offsets.is_dir() {
        dirs.push(("(committed offsets)".into(), offsets));
    }
    let (mut corrupt, mut batches, mut rows) = (0usize, 0u64, Vec::new());
    for (name, dir) in &dirs {
        let r = verify_dir(dir)?;
        batches += r.good_batches;
        corrupt += r.corrupt.len();
        let kinds = [
            ("corrupt", &r.corrupt),
            ("torn tail", &r.torn),
            ("index", &r.index_warnings),
            ("quarantined", &r.quarantined),
        ];
        for (kind, list) in kinds {
            for p in list {
                rows.push(serde_json::json!({
                    "partition": name, "kind": kind, "file": p.file.display().to_string(), "position": p.position,
                    "offset": p.offset, "reason": p.reason,
                }));
            }
        }
    }
    if json {
        print_json(
            &serde_json::json!({"partitions": dirs.len(), "good_batches": batches, "corrupt_batches": corrupt, "problems": rows}),
        )?;
    } else {
        for r in &rows {
            println!(
                "{} {}: {} at byte {}{}: {}",
                r["kind"].as_str().unwrap_or(""),
                r["partition"].as_str().unwrap_or(""),
                r["file"].as_str().unwrap_or(""),
                r["position"],
                r["offset"].as_u64().map_or(String::new(), |o| format!(" (offset {o})")),
                r["reason"].as_str().unwrap_or(""),
            );
        }
        println!("{} partition logs, {batches} good batches, {corrupt} corrupt", dirs.len());
    }
    if corrupt > 0 {
        return Err(CliError::Usage(format!("{corrupt} corrupt batch(es) found")));
    }
    Ok(())
}

async fn status(addr: &str, json: bool) -> Result<(), CliError> {
    let s = connect(addr).await?.call(&sluice_protocol::api::StatusRequest).await?;
    let total_lag: u64 = s.groups.iter().map(|g| g.lag).sum();
    if json {
        let v = serde_json::json!({
            "version": s.version, "uptime_ms": s.uptime_ms, "data_dir": s.data_dir, "fsync": s.fsync,
            "topics": s.topics, "partitions": s.partitions, "total_bytes": s.total_bytes, "connections": s.connections,
            "groups": s.groups.iter().map(|g| serde_json::json!({"group": g.group, "members": g.members, "lag": g.lag})).collect::<Vec<_>>(),
            "total_lag": total_lag,
            "failed_topics": s.failed_topics.iter().map(|f| serde_json::json!({"topic": f.topic, "error": f.error})).collect::<Vec<_>>(),
        });
        return print_json(&v);
    }
    let uptime = s.uptime_ms / 1000;
    println!(
        "sluice {} at {addr}, up {}h{:02}m{:02}s",
        s.version,
        uptime / 3600,
        uptime / 60 % 60,
        uptime % 60
    );
    println!("data dir     {} (fsync {} by default)", s.data_dir, s.fsync);
    println!("topics       {} with {} partitions, {} bytes on disk", s.topics, s.partitions, s.total_bytes);
    println!("connections  {}", s.connections);
    println!("groups       {} (total lag {total_lag})", s.groups.len());
    let rows: Vec<Vec<String>> =
        s.groups.iter().map(|g| vec![g.group.clone(), g.members.to_string(), g.lag.to_string()]).collect();
    if !rows.is_empty() {
        print_table(&["GROUP", "MEMBERS", "LAG"], &rows);
    }
    if !s.failed_topics.is_empty() {
        println!("FAILED TOPICS (on disk, not served; `sluice topic delete` removes one)");
        for f in &s.failed_topics {
            println!("  {}: {}", f.topic, f.error);
        }
    }
    Ok(())
}

pub(crate) async fn connect(addr: &str) -> Result<Connection, CliError> {
    Ok(Connection::connect(addr, "sluice-cli").await?.with_timeout(Duration::from_secs(30)))
}

#[derive(Serialize)]
struct TopicSummary<'a> {
    name: &'a str,
    partitions: usize,
    log_end_offset: u64,
    size_bytes: u64,
}

#[derive(Serialize)]
struct PartitionView {
    partition: u32,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
    size_bytes: u64,
    segment_count: u32,
}

#[derive(Serialize)]
struct TopicView<'a> {
    name: &'a str,
    config: BTreeMap<&'a str, &'a str>,
    partitions: Vec<PartitionView>,
}

fn view(t: &TopicMetadata) -> TopicView<'_> {
    TopicView {
        name: &t.name,
        config: t.configs.iter().map(|c| (c.key.as_str(), c.value.as_str())).collect(),
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition,
                log_start_offset: p.log_start_offset,
                log_end_offset: p.log_end_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                segment_count: p.segment_count,
            })
            .collect(),
    }
}

pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| CliError::Usage(e.to_string()))?);
    Ok(())
}

/// Prints rows as left-aligned columns.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

async fn topic(addr: &str, json: bool, cmd: TopicCommand) -> Result<(), CliError> {
    let conn = connect(addr).await?;
    match cmd {
        TopicCommand::Create { name, partitions, settings } => {
            conn.call(&CreateTopicRequest { name: name.clone(), partitions, configs: settings.entries()? })
                .await?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::Delete { name } => {
            conn.call(&DeleteTopicRequest { name: name.clone() }).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::Alter { name, settings } => {
            let configs = settings.entries()?;
            if configs.is_empty() {
                return Err(CliError::Usage("nothing to change: give at least one setting".into()));
            }
            conn.call(&AlterTopicRequest { name: name.clone(), configs }).await?;
            println!("altered topic {name}");
        }
        TopicCommand::List => {
            let meta = conn.call(&MetadataRequest::default()).await?;
            let rows: Vec<TopicSummary<'_>> = meta
                .topics
                .iter()
                .map(|t| TopicSummary {
                    name: &t.name,
                    partitions: t.partitions.len(),
                    log_end_offset: t.partitions.iter().map(|p| p.log_end_offset).sum(),
                    size_bytes: t.partitions.iter().map(|p| p.size_bytes).sum(),
                })
                .collect();
            if json {
                print_json(&rows)?;
            } else {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.to_owned(),
                            r.partitions.to_string(),
                            r.log_end_offset.to_string(),
                            r.size_bytes.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["TOPIC", "PARTITIONS", "MESSAGES", "BYTES"], &cells);
            }
        }
        TopicCommand::Describe { name } => {
            let meta = conn.call(&MetadataRequest { topics: vec![name.clone()] }).await?;
            let topic = meta.topics.first().filter(|t| t.error_code == ErrorCode::None).ok_or_else(|| {
                CliError::Client(ClientError::Server {
                    code: ErrorCode::UnknownTopic,
                    message: format!("unknown topic `{name}`"),
                })
            })?;
            let v = view(topic);
            if json {
                print_json(&v)?;
            } else {
                println!("topic {}", v.name);
                let config: Vec<String> = v.config.iter().map(|(k, val)| format!("{k}={val}")).collect();
                println!("config {}", config.join(" "));
                let rows: Vec<Vec<String>> = v
                    .partitions
                    .iter()
                    .map(|p| {
                        [
                            u64::from(p.partition),
                            p.log_start_offset,
                            p.log_end_offset,
                            p.high_watermark,
                            p.size_bytes,
                            u64::from(p.segment_count),
                        ]
                        .map(|n| n.to_string())
                        .to_vec()
                    })
                    .collect();
                print_table(&["PARTITION", "START", "END", "HIGH_WATERMARK", "BYTES", "SEGMENTS"], &rows);
            }
        }
    }
    Ok(())
}
