//! `sluice produce TOPIC`: one record per stdin line, sent with the
//! producer client. Prints `partition offset` per record in input order
//! with `--print-offsets`, a summary on stderr, and fails (exit 1) unless
//! every record was acknowledged.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use clap::Args;
use sluice_producer::{Acks, Compression, DeliveryFuture, Producer, Record};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::common::{CliError, CLIENT_ID};

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

/// `sluice produce` arguments.
#[derive(Debug, Args)]
pub struct ProduceArgs {
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

impl ProduceArgs {
    fn acks(&self) -> Acks {
        match self.acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }

    fn compression(&self) -> Compression {
        match self.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Futures kept before the oldest is awaited (bounds memory on long input).
const WINDOW: usize = 100_000;

/// Reads stdin and produces it.
///
/// # Errors
/// The producer failing to start, stdin or stdout failing, or a record
/// not acknowledged (after every other record was tried).
pub async fn run(broker: &str, opts: ProduceArgs) -> Result<(), CliError> {
    let producer = Producer::builder()
        .bootstrap(broker)
        .client_id(CLIENT_ID)
        .acks(opts.acks())
        .compression(opts.compression())
        .build()
        .await?;
    let started = Instant::now();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut records, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut settle = |d: Result<sluice_producer::RecordMetadata, sluice_producer::ProducerError>,
                      out: &mut dyn Write| match d {
        Ok(meta) => {
            if opts.print_offsets {
                let _ = writeln!(out, "{} {}", meta.partition, meta.offset);
            }
        }
        Err(e) => {
            failed += 1;
            first_error.get_or_insert_with(|| e.to_string());
        }
    };
    while let Some(line) = lines.next_line().await? {
        let (key, value) = match opts.key_separator.as_deref().and_then(|sep| line.split_once(sep)) {
            Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
            None => (None, line),
        };
        bytes += value.len() as u64 + key.as_ref().map_or(0, |k| k.len() as u64);
        let mut record = Record::new(opts.topic.as_str(), value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = opts.partition {
            record = record.partition(p);
        }
        pending.push_back(producer.send(record).await?);
        records += 1;
        if pending.len() >= WINDOW {
            if let Some(oldest) = pending.pop_front() {
                settle(oldest.await, &mut out);
            }
        }
    }
    producer.flush().await?;
    for d in pending {
        settle(d.await, &mut out);
    }
    out.flush()?;
    drop(out);
    producer.close().await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{records} records, {bytes} bytes in {secs:.3} s ({:.0} records/s){}",
        records as f64 / secs.max(1e-9),
        if failed > 0 { format!(", {failed} failed") } else { String::new() }
    );
    match first_error {
        Some(e) => Err(CliError::Usage(format!("{failed} of {records} records were not acknowledged: {e}"))),
        None => Ok(()),
    }
}
