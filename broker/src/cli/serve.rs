//! `sluice serve`: runs the broker with a TOML config file and flags
//! overriding it, logs with `tracing`, and shuts down gracefully on
//! SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Args;

use super::common::{runtime, CliError};
use crate::config::{parse_peers, BrokerConfig};
use crate::server::Server;
use crate::storage::FsyncPolicy;

/// `sluice serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see sluice.example.toml); flags override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on for clients.
    #[arg(long, env = "SLUICE_LISTEN")]
    listen: Option<String>,
    /// Address to listen on for Kafka clients; "" turns it off.
    #[arg(long, env = "SLUICE_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Address clients are told to reach this broker at (behind a proxy,
    /// NAT or port map, or listening on 0.0.0.0); default: the bound --listen.
    #[arg(long, env = "SLUICE_ADVERTISE")]
    advertise: Option<String>,
    /// The same for Kafka clients; default: the address they connected to.
    #[arg(long, env = "SLUICE_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
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
    /// Cluster mode: this broker's node id (also its controller node id).
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<u64>,
    /// Cluster mode: address of the peer listener (controller and
    /// replication traffic).
    #[arg(long, env = "SLUICE_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// Cluster mode: every voter, this node included: 1=HOST:PORT,2=HOST:PORT,...
    #[arg(long, env = "SLUICE_PEERS")]
    peers: Option<String>,
    /// Cluster mode: peers must present the same cluster id.
    #[arg(long, env = "SLUICE_CLUSTER_ID")]
    cluster_id: Option<String>,
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

/// Runs the broker until SIGINT or SIGTERM.
///
/// # Errors
/// A bad config file or flag, or the broker failing to start or stop.
pub fn run(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format);
    let config = config(args)?;
    check_listeners(&config)?;
    runtime()?.block_on(async move {
        let fsync = config.topic_defaults.fsync;
        let data_dir = config.data_dir.clone();
        let (server, report) = Server::start(config)
            .await
            .map_err(|e| CliError::Usage(format!("the broker failed to start: {e}")))?;
        // Before "sluice listening": whoever waits for that line knows both.
        if let Some(addr) = server.kafka_addr() {
            tracing::info!(addr = %addr, "kafka listening");
        }
        if let Some(addr) = server.peer_addr() {
            tracing::info!(addr = %addr, "peer listening");
        }
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

/// Tries every listener address before starting, so that all the taken
/// ones are named at once (the server stops at the first).
fn check_listeners(config: &BrokerConfig) -> Result<(), CliError> {
    let listeners = [
        ("client listener (--listen)", &config.listen),
        ("admin listener (--admin-listen)", &config.admin_listen),
        ("Kafka listener (--kafka-listen)", &config.kafka_listen),
        ("peer listener (--peer-listen)", &config.peer_listen),
    ];
    let failed: Vec<String> = listeners
        .iter()
        .filter(|(_, addr)| !addr.is_empty())
        .filter_map(|(what, addr)| {
            std::net::TcpListener::bind(addr.as_str()).err().map(|e| format!("{what} {addr}: {e}"))
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError::Usage(format!("the broker failed to start: cannot listen on {}", failed.join("; "))))
}

/// The config file (or the defaults) with the flags laid over it.
fn config(args: ServeArgs) -> Result<BrokerConfig, CliError> {
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
    if let Some(v) = args.kafka_listen {
        config.kafka_listen = v;
    }
    if let Some(v) = args.advertise {
        config.advertise = v;
    }
    if let Some(v) = args.kafka_advertise {
        config.kafka_advertise = v;
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
    if let Some(v) = args.node_id {
        config.node_id = Some(v);
    }
    if let Some(v) = args.peer_listen {
        config.peer_listen = v;
    }
    if let Some(v) = args.peers {
        config.peers = parse_peers(&v)?;
    }
    if let Some(v) = args.cluster_id {
        config.cluster_id = v;
    }
    config.validate()?;
    Ok(config)
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
