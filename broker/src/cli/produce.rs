//! `sluice produce TOPIC`: records from stdin split at `--delimiter`
//! (newline by default, any byte string), one per `--file`, or one JSON
//! object per line (`--json`, what `consume --json` prints), sent with the
//! producer client. Bytes throughout: no UTF-8 requirement. Prints
//! `partition offset` per record in input order with `--print-offsets`
//! (`error MESSAGE` for one that failed; every record sent before an input
//! error is settled and printed first), a summary on stderr, and fails
//! (exit 1) unless every record was acknowledged.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use sluice_producer::{Acks, Compression, DeliveryFuture, Producer, ProducerError, Record, RecordMetadata};

use super::common::{CliError, CLIENT_ID};
use super::format::unescape;
use super::input::{Input, Source, Splitter};

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
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4 (frame format).
    Lz4,
    /// zstd.
    Zstd,
}

/// `sluice produce` arguments.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Records end at this byte string (escapes \n \t \0 \xHH ...).
    #[arg(long, short = 'D', value_name = "DELIM", default_value = "\\n")]
    delimiter: String,
    /// Split each record at the first DELIM into key and value (escapes as --delimiter).
    #[arg(long, short = 'K', alias = "key-separator", value_name = "DELIM")]
    key_delimiter: Option<String>,
    /// Send each file as one record (its whole content the value), instead of stdin.
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with = "key_delimiter")]
    file: Vec<PathBuf>,
    /// Add this header to every record (repeatable).
    #[arg(long, short = 'H', value_name = "KEY=VALUE")]
    header: Vec<String>,
    /// Record timestamp (ms since the epoch; default: now).
    #[arg(long, value_name = "MS")]
    timestamp: Option<i64>,
    /// Write every record to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// When the broker acknowledges.
    #[arg(long, value_enum, default_value = "durable")]
    acks: AcksArg,
    /// Batch compression.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Print `partition offset` for each record, in input order.
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
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Futures kept before the oldest is awaited (bounds memory on long input).
const WINDOW: usize = 100_000;

/// `-H key=value` arguments as headers.
fn headers(args: &ProduceArgs) -> Result<Vec<(String, Bytes)>, CliError> {
    args.header
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("header `{h}`: use -H key=value")))?;
            Ok((k.to_owned(), Bytes::from(unescape(v)?)))
        })
        .collect()
}

/// Where records come from: files, JSON lines or delimited stdin.
fn source(args: &ProduceArgs, json: bool) -> Result<Source<tokio::io::Stdin>, CliError> {
    if !args.file.is_empty() {
        return Ok(Source::Files(args.file.clone().into_iter()));
    }
    if json {
        return Ok(Source::Json(Splitter::new(tokio::io::stdin(), b"\n".to_vec())));
    }
    let delimiter = unescape(&args.delimiter)?;
    if delimiter.is_empty() {
        return Err(CliError::Usage("--delimiter cannot be empty".into()));
    }
    let key_delimiter = args.key_delimiter.as_deref().map(unescape).transpose()?;
    Ok(Source::Delimited { split: Splitter::new(tokio::io::stdin(), delimiter), key_delimiter })
}

/// `input` as a record for `args.topic`; the flags fill what the input
/// left open.
fn record(args: &ProduceArgs, headers: &[(String, Bytes)], input: Input) -> Record {
    let mut record = Record::new(args.topic.as_str(), Bytes::new());
    record.value = input.bytes.value;
    record.key = input.bytes.key;
    record.partition = input.partition.or(args.partition);
    record.timestamp = input.timestamp.or(args.timestamp);
    record.headers = input
        .bytes
        .headers
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .chain(headers.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
        .collect();
    record
}

/// Counts and prints acknowledgements in input order.
struct Tally<W: Write> {
    out: W,
    print_offsets: bool,
    records: u64,
    bytes: u64,
    failed: u64,
    first_error: Option<String>,
}

impl<W: Write> Tally<W> {
    fn settle(&mut self, d: Result<RecordMetadata, ProducerError>) -> std::io::Result<()> {
        match d {
            Ok(meta) if self.print_offsets => writeln!(self.out, "{} {}", meta.partition, meta.offset),
            Ok(_) => Ok(()),
            Err(e) => {
                self.failed += 1;
                if self.print_offsets {
                    writeln!(self.out, "error {e}")?;
                }
                self.first_error.get_or_insert_with(|| e.to_string());
                Ok(())
            }
        }
    }
}

/// Reads the input and sends it; an input error stops the reading (the
/// records sent before it are still settled by the caller).
async fn send_all<W: Write>(
    producer: &Producer,
    args: &ProduceArgs,
    mut source: Source<tokio::io::Stdin>,
    pending: &mut VecDeque<DeliveryFuture>,
    tally: &mut Tally<W>,
) -> Result<(), CliError> {
    let headers = headers(args)?;
    while let Some(input) = source.next(tally.records + 1).await? {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        tally.bytes += len(&input.bytes.key) + len(&input.bytes.value);
        pending.push_back(producer.send(record(args, &headers, input)).await?);
        tally.records += 1;
        if pending.len() >= WINDOW {
            if let Some(oldest) = pending.pop_front() {
                tally.settle(oldest.await)?;
            }
        }
    }
    Ok(())
}

/// Reads stdin (or the files) and produces it.
///
/// # Errors
/// The producer failing to start, bad input (naming the record), stdin
/// or stdout failing, or a record not acknowledged (after every other
/// record was tried).
pub async fn run(broker: &str, json: bool, args: ProduceArgs) -> Result<(), CliError> {
    let source = source(&args, json)?;
    let producer = Producer::builder()
        .bootstrap(broker)
        .client_id(CLIENT_ID)
        .acks(args.acks())
        .compression(args.compression())
        .build()
        .await?;
    let started = Instant::now();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut tally =
        Tally { out, print_offsets: args.print_offsets, records: 0, bytes: 0, failed: 0, first_error: None };
    let sent = send_all(&producer, &args, source, &mut pending, &mut tally).await;
    let flushed = producer.flush().await;
    for d in pending {
        tally.settle(d.await)?;
    }
    tally.out.flush()?;
    drop(tally.out);
    producer.close().await?;
    let secs = started.elapsed().as_secs_f64();
    let (records, failed) = (tally.records, tally.failed);
    let outcome = sent.and(flushed.map_err(CliError::from));
    // When nothing was sent, the error is the whole story.
    if records > 0 || failed > 0 || outcome.is_ok() {
        eprintln!(
            "{records} records, {} bytes in {secs:.3} s ({:.0} records/s){}",
            tally.bytes,
            records as f64 / secs.max(1e-9),
            if failed > 0 { format!(", {failed} failed") } else { String::new() }
        );
    }
    outcome?;
    match tally.first_error {
        Some(e) => Err(CliError::Usage(format!("{failed} of {records} records were not acknowledged: {e}"))),
        None => Ok(()),
    }
}
