//! `sluice topic create | list | describe | delete | alter | add-partitions`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_protocol::api::{
    AddPartitionsRequest, AlterTopicRequest, ConfigEntry, CreateTopicRequest, DeleteTopicRequest,
    MetadataRequest, TopicMetadata,
};
use sluice_protocol::client::Connection;
use sluice_protocol::ErrorCode;

use super::common::{connect, print_json, print_table, say, CliError};
use crate::storage::FsyncPolicy;

/// Topic settings settable from the command line.
#[derive(Debug, Args, Default)]
pub struct TopicSettings {
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

/// Topic commands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(
        after_help = "Examples:\n  sluice topic create orders\n  sluice topic create orders --partitions 6 --retention-ms 86400000\n  sluice topic create audit --fsync always --config message_timestamp=log_append\n  sluice topic create orders --partitions 3 --replication-factor 3 --config min_insync_replicas=2"
    )]
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (default: the broker's `default_partitions`).
        #[arg(long)]
        partitions: Option<u32>,
        /// Copies of each partition (cluster mode; default: the broker's
        /// `default_replication_factor`; 1 on a single node).
        #[arg(long)]
        replication_factor: Option<u16>,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// List topics.
    #[command(after_help = "Examples:\n  sluice topic list\n  sluice topic list --json")]
    List,
    /// Show a topic's partitions (offsets, sizes, leader, leader epoch,
    /// replicas, in-sync replicas) and config.
    #[command(
        after_help = "Examples:\n  sluice topic describe orders\n  sluice topic describe orders --json"
    )]
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    #[command(after_help = "Examples:\n  sluice topic delete orders")]
    Delete {
        /// Topic name.
        name: String,
    },
    /// Grow a topic to COUNT partitions (partitions only grow; keys move).
    #[command(
        long_about = "Grow a topic to --count partitions, the new total. Partitions only grow.\n\n\
                      Keys move: a keyed record goes to hash(key) % partitions, so after growing most keys \
                      land in another partition than their earlier records, and per-key order holds only \
                      within each side of the change.",
        after_help = "Examples:\n  sluice topic add-partitions orders --count 6"
    )]
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new partition count (more than the topic has).
        #[arg(long)]
        count: u32,
    },
    /// Change a topic's live settings (prints each old -> new value).
    #[command(
        after_help = "Examples:\n  sluice topic alter orders --retention-ms 3600000\n  sluice topic alter orders --fsync interval:100 --config segment_bytes=67108864"
    )]
    Alter {
        /// Topic name.
        name: String,
        #[command(flatten)]
        settings: TopicSettings,
    },
}

/// A row of `topic list --json`.
#[derive(Serialize)]
struct TopicSummary<'a> {
    name: &'a str,
    partitions: usize,
    log_end_offset: u64,
    size_bytes: u64,
}

/// A partition in `topic describe --json`.
#[derive(Serialize)]
struct PartitionView {
    partition: u32,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
    size_bytes: u64,
    segment_count: u32,
    /// The leader's node id; -1 when offline.
    leader: i64,
    leader_epoch: u32,
    replicas: Vec<u64>,
    isr: Vec<u64>,
}

/// `topic describe --json`.
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
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            })
            .collect(),
    }
}

/// Runs a topic command.
///
/// # Errors
/// The broker's refusal (an unknown topic, a bad name or setting), or a
/// connection failure.
pub async fn run(addr: &str, json: bool, cmd: TopicCommand) -> Result<(), CliError> {
    let conn = connect(addr).await?;
    match cmd {
        TopicCommand::Create { name, partitions, replication_factor, settings } => {
            let partitions = match partitions {
                Some(n) => n,
                None => default_partitions(&conn).await?,
            };
            let mut configs = settings.entries()?;
            if let Some(rf) = replication_factor {
                configs.push(ConfigEntry::new("replication_factor", rf.to_string()));
            }
            create(&conn, name, partitions, configs).await
        }
        TopicCommand::Delete { name } => delete(&conn, name).await,
        TopicCommand::Alter { name, settings } => alter(&conn, name, &settings).await,
        TopicCommand::AddPartitions { name, count } => {
            let grown = conn.call(&AddPartitionsRequest { name: name.clone(), count }).await?;
            say!(
                "topic {name}: partitions {} -> {} (keyed records now map to other partitions)",
                grown.old_count,
                grown.new_count
            );
            Ok(())
        }
        TopicCommand::List => list(&conn, json).await,
        TopicCommand::Describe { name } => describe(&conn, name, json).await,
    }
}

async fn create(
    conn: &Connection,
    name: String,
    partitions: u32,
    configs: Vec<ConfigEntry>,
) -> Result<(), CliError> {
    conn.call(&CreateTopicRequest { name: name.clone(), partitions, configs }).await?;
    let count = topic_metadata(conn, &name).await?.partitions.len();
    say!("created topic {name} with {count} partition(s)");
    Ok(())
}

async fn delete(conn: &Connection, name: String) -> Result<(), CliError> {
    conn.call(&DeleteTopicRequest { name: name.clone() }).await?;
    say!("deleted topic {name}");
    Ok(())
}

async fn alter(conn: &Connection, name: String, settings: &TopicSettings) -> Result<(), CliError> {
    let configs = settings.entries()?;
    if configs.is_empty() {
        return Err(CliError::Usage("nothing to change: give at least one setting".into()));
    }
    let before = topic_metadata(conn, &name).await?.configs;
    conn.call(&AlterTopicRequest { name: name.clone(), configs }).await?;
    let after = topic_metadata(conn, &name).await?.configs;
    say!("altered topic {name}");
    for entry in &after {
        let old = before.iter().find(|b| b.key == entry.key).map_or("-", |b| b.value.as_str());
        if old != entry.value {
            say!("  {}: {old} -> {}", entry.key, entry.value);
        }
    }
    Ok(())
}

/// The broker's `default_partitions` (1 from a broker that does not say).
async fn default_partitions(conn: &Connection) -> Result<u32, CliError> {
    let status = conn.call(&sluice_protocol::api::StatusRequest).await?;
    Ok(status.default_partitions.max(1))
}

/// The metadata of one topic.
async fn topic_metadata(conn: &Connection, name: &str) -> Result<TopicMetadata, CliError> {
    let meta = conn.call(&MetadataRequest { topics: vec![name.to_owned()] }).await?;
    meta.topics
        .into_iter()
        .next()
        .filter(|t| t.error_code == ErrorCode::None)
        .ok_or_else(|| CliError::UnknownTopic(name.to_owned()))
}

async fn list(conn: &Connection, json: bool) -> Result<(), CliError> {
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
        return print_json(&rows);
    }
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
    Ok(())
}

async fn describe(conn: &Connection, name: String, json: bool) -> Result<(), CliError> {
    let topic = topic_metadata(conn, &name).await?;
    let v = view(&topic);
    if json {
        return print_json(&v);
    }
    say!("topic {}", v.name);
    let config: Vec<String> = v.config.iter().map(|(k, val)| format!("{k}={val}")).collect();
    say!("config {}", config.join(" "));
    let rows: Vec<Vec<String>> = v
        .partitions
        .iter()
        .map(|p| {
            let mut row = [
                u64::from(p.partition),
                p.log_start_offset,
                p.log_end_offset,
                p.high_watermark,
                p.size_bytes,
                u64::from(p.segment_count),
            ]
            .map(|n| n.to_string())
            .to_vec();
            let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let leader = if p.leader < 0 { "none".to_owned() } else { p.leader.to_string() };
            row.extend([leader, p.leader_epoch.to_string(), ids(&p.replicas), ids(&p.isr)]);
            row
        })
        .collect();
    let header = [
        "PARTITION",
        "START",
        "END",
        "HIGH_WATERMARK",
        "BYTES",
        "SEGMENTS",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
    ];
    print_table(&header, &rows);
    Ok(())
}
