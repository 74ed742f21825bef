//! `sluice consume TOPIC`: prints values (one per line) with the consumer
//! client. With `--group` it joins the group and, before exiting, commits
//! exactly what it printed (unless `--no-commit`); without one it reads
//! every partition (or `--partition`) and commits nothing. Stops after
//! `--max-messages`, after `--timeout-ms` without new data, or on Ctrl-C.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_consumer::{Consumer, OffsetReset};

use super::common::{connect, CliError, CLIENT_ID};

/// `sluice consume` arguments.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Consume as a member of this group (commits what was printed).
    #[arg(long)]
    group: Option<String>,
    /// Start from the oldest record when nothing is committed (default: only new ones).
    #[arg(long)]
    from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Start at this offset (with --partition).
    #[arg(long, requires = "partition")]
    offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this long without new records (ms).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Print `partition offset` before each record.
    #[arg(long)]
    print_offsets: bool,
    /// Commit nothing, even with --group.
    #[arg(long)]
    no_commit: bool,
}

/// The partitions to assign by hand: `--partition`, else every partition
/// of the topic without `--group`, else none (the group assigns them).
async fn partitions(broker: &str, args: &ConsumeArgs) -> Result<Vec<u32>, CliError> {
    Ok(match args.partition {
        Some(p) => vec![p],
        None if args.group.is_some() => Vec::new(),
        None => {
            let probe = connect(broker).await?;
            let meta = probe
                .call(&sluice_protocol::api::MetadataRequest { topics: vec![args.topic.clone()] })
                .await?;
            let topic = meta.topics.first().filter(|t| t.error_code.is_ok());
            let topic = topic.ok_or_else(|| CliError::Usage(format!("unknown topic `{}`", args.topic)))?;
            (0..topic.partitions.len() as u32).collect()
        }
    })
}

/// Runs the consume command.
///
/// # Errors
/// An unknown topic, the consumer failing (joining, fetching, committing),
/// or stdout failing.
pub async fn run(broker: &str, args: ConsumeArgs) -> Result<(), CliError> {
    super::common::check_topic(broker, &args.topic, args.partition.iter().copied()).await?;
    let reset = if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest };
    let mut builder = Consumer::builder()
        .bootstrap(broker)
        .client_id(CLIENT_ID)
        .auto_offset_reset(reset)
        .enable_auto_commit(false);
    if let Some(g) = &args.group {
        builder = builder.group(g.clone());
    }
    let partitions = partitions(broker, &args).await?;
    builder = if partitions.is_empty() {
        builder.subscribe([args.topic.clone()])
    } else {
        builder.assign(partitions.iter().map(|p| (args.topic.clone(), *p)))
    };
    let consumer = builder.build().await?;
    if let (Some(p), Some(o)) = (args.partition, args.offset) {
        consumer.seek(&args.topic, p, o);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed: BTreeMap<u32, u64> = BTreeMap::new();
    let mut count = 0u64;
    let mut last_data = Instant::now();
    let idle = args.timeout_ms.map(Duration::from_millis);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'outer: loop {
        if args.max_messages.is_some_and(|m| count >= m) || idle.is_some_and(|t| last_data.elapsed() >= t) {
            break;
        }
        let wait = idle.map_or(Duration::from_millis(500), |t| {
            t.saturating_sub(last_data.elapsed()).min(Duration::from_millis(500))
        });
        let records = tokio::select! {
            r = consumer.poll(wait) => r?,
            _ = &mut ctrl_c => break,
        };
        if !records.is_empty() {
            last_data = Instant::now();
        }
        for r in records {
            if args.max_messages.is_some_and(|m| count >= m) {
                break 'outer;
            }
            if args.print_offsets {
                write!(out, "{} {} ", r.partition, r.offset)?;
            }
            if args.print_key {
                out.write_all(r.key.as_deref().unwrap_or(b"null"))?;
                out.write_all(b" ")?;
            }
            out.write_all(r.value.as_deref().unwrap_or(b"null"))?;
            out.write_all(b"\n")?;
            printed.insert(r.partition, r.offset + 1);
            count += 1;
        }
        out.flush()?;
    }
    out.flush()?;
    let commit = args.group.is_some() && !args.no_commit && !printed.is_empty();
    if commit {
        consumer.commit_offsets(printed.iter().map(|(p, o)| ((args.topic.clone(), *p), *o))).await?;
    }
    consumer.close().await?;
    eprintln!("{count} records{}", if commit { ", offsets committed" } else { "" });
    Ok(())
}
