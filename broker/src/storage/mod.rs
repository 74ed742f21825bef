//! The storage engine: one append-only [`Log`] per partition, made of
//! memory-mapped [`segment`]s with sparse indexes, with group-committed
//! durability and crash recovery.
//!
//! This module is synchronous and tokio-free. A `Log` is shared between
//! threads (`Arc<Log>`): appends serialize on its writer lock, reads take it
//! only to locate bytes and then read without it, and flushes run outside it
//! (the broker calls [`Log::sync_to`] and [`Log::flush`] from blocking
//! threads). Logs of different partitions share nothing.

mod config;
mod disk;
pub mod durable;
pub mod files;
mod index;
mod log;
mod mmap;
mod producers;
mod segment;
pub mod verify;

pub use config::{config_key, ConfigKey, FsyncPolicy, LogConfig, TimestampType, CONFIG_KEYS};
pub use disk::{DiskSpace, Faults};
pub use log::{AppendInfo, Log, LogStats, RecoveryReport, RetentionReport, NO_EPOCH};
pub use producers::SequenceError;

/// Milliseconds since the Unix epoch (the broker's clock for timestamps,
/// retention and producer expiry).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

use std::io;
use std::path::{Path, PathBuf};

use sluice_protocol::batch::BatchError;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Disk space could not be reserved; nothing was written.
    #[error("no space left to {op} {path}")]
    NoSpace {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A stored batch failed its checks: it is not served.
    #[error("corrupt batch at byte {position} of segment {segment}: {source}")]
    CorruptBatch {
        /// Base offset of the segment.
        segment: u64,
        /// Byte position in the segment.
        position: usize,
        /// What was wrong.
        #[source]
        source: BatchError,
    },
    /// A batch offered for append is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[source] BatchError),
    /// The offset is outside the log.
    #[error("offset {offset} is outside the log's range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First offset stored.
        log_start_offset: u64,
        /// Offset after the last record.
        log_end_offset: u64,
    },
    /// A batch is larger than the topic allows.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The batch's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A `create` topic's batch carries a timestamp outside the window
    /// `[now - message_timestamp_before_max_ms, now + message_timestamp_after_max_ms]`.
    #[error("timestamp {timestamp} is outside the accepted window around the broker's clock {now_ms} (message_timestamp_before_max_ms = {before_max_ms}, message_timestamp_after_max_ms = {after_max_ms}; 0 = no limit)")]
    InvalidTimestamp {
        /// The offending timestamp (ms).
        timestamp: i64,
        /// The broker's clock (ms).
        now_ms: i64,
        /// How far behind the clock a timestamp may be (0 = no limit).
        before_max_ms: u64,
        /// How far ahead of the clock a timestamp may be (0 = no limit).
        after_max_ms: u64,
    },
    /// An idempotent producer's batch is out of sequence or fenced.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// A segment cannot be cut while readers hold bytes of it.
    #[error("segment {segment} is being read; cannot truncate it")]
    ReadersActive {
        /// Base offset of the segment.
        segment: u64,
    },
    /// A replica's batch does not continue this log: its base offset is not
    /// the log end, or its leader epoch is below the log's last epoch.
    #[error("replica batch at offset {base_offset} epoch {epoch} does not follow the log (end {log_end_offset}, last epoch {last_epoch})")]
    ReplicaMismatch {
        /// The batch's base offset.
        base_offset: u64,
        /// The batch's leader epoch.
        epoch: i32,
        /// This log's end.
        log_end_offset: u64,
        /// This log's last epoch (-1: empty).
        last_epoch: i32,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// A sync of this log failed earlier. The OS may have dropped the
    /// unsynced pages and will not report it again (Linux reports a
    /// writeback error once per file description), so the log trusts
    /// nothing past its last durable offset: it refuses appends and syncs
    /// until it is reopened, which recovers it from that offset.
    #[error("log {dir} stopped after a failed sync; durable up to offset {durable_offset}; it accepts writes again once reopened")]
    Failed {
        /// The partition directory.
        dir: PathBuf,
        /// Offsets below this were synced before the failure.
        durable_offset: u64,
    },
}

/// Maps an `io::Error` of `op` on `path`, telling a full disk apart.
pub(crate) fn io_error<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> StorageError + 'a {
    move |source| {
        if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
            StorageError::NoSpace { op, path: path.to_owned() }
        } else {
            StorageError::Io { op, path: path.to_owned(), source }
        }
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
