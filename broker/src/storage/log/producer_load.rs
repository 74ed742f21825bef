//! Loading idempotent-producer state when a log opens: the newest intact
//! snapshot at or below the log end, then the batch headers after it.

use std::fs;
use std::path::Path;

use super::{files, io_error, sync_dir, LogConfig, ProducerStates, State, StorageError};

/// Deletes the snapshots past `end` (durably, before anything is appended
/// at those offsets again).
pub(super) fn remove_snapshots(dir: &Path, snapshots: &mut Vec<u64>, end: u64) -> Result<(), StorageError> {
    let stale: Vec<u64> = snapshots.iter().copied().filter(|b| *b > end).collect();
    if stale.is_empty() {
        return Ok(());
    }
    for base in &stale {
        let path = files::snapshot_path(dir, *base);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &path)(e)),
        }
    }
    snapshots.retain(|b| *b <= end);
    sync_dir(dir)
}

pub(super) struct ProducerLoad {
    pub(super) producers: ProducerStates,
    pub(super) snapshot: Option<u64>,
    pub(super) replayed: usize,
    /// Snapshots that could not be read (deleted by the caller).
    pub(super) unreadable: Vec<u64>,
}

/// Producer state of the log: the newest intact snapshot at or below the
/// log end, plus the batches from its offset on (reading the headers of the
/// segments that hold them); every header of the log when no snapshot is
/// usable. Producers idle for `expiry_ms` are dropped.
fn read_producer_state(dir: &Path, state: &State, config: &LogConfig) -> ProducerLoad {
    let (expiry_ms, max_producers) = (config.producer_expiry_ms, config.max_producers_per_partition as usize);
    let now_ms = crate::storage::now_ms();
    let end = state.active.next_offset();
    let mut unreadable = Vec::new();
    let snapshot = state.snapshots.iter().rev().filter(|b| **b <= end).find_map(|&base| {
        let path = files::snapshot_path(dir, base);
        match fs::read(&path).ok().and_then(|bytes| ProducerStates::decode(&bytes)) {
            Some((at, producers)) if at == base => Some((base, producers)),
            _ => {
                tracing::warn!(path = %path.display(), "producer-state snapshot unreadable; using an older one");
                unreadable.push(base);
                None
            }
        }
    });
    let (from, mut producers) = match snapshot {
        Some((base, producers)) => (Some(base), producers),
        None => (None, ProducerStates::default()),
    };
    let start = from.unwrap_or(0);
    let mut replayed = 0;
    for seg in state.segments().filter(|s| s.next_offset() > start) {
        seg.for_each_header(|h| {
            replayed += 1;
            if h.is_idempotent() && h.base_offset >= start {
                // Replayed producers count as seen now: expiry never comes
                // sooner than it would have without the restart.
                producers.record(h, h.base_offset, now_ms, expiry_ms, max_producers);
            }
        });
    }
    producers.expire(now_ms, expiry_ms);
    ProducerLoad { producers, snapshot: from, replayed, unreadable }
}

impl State {
    /// Loads the producer state (see [`read_producer_state`]) and deletes
    /// the snapshots that could not be read, so a fresh one replaces them.
    pub(super) fn load_producers(&mut self, dir: &Path, config: &LogConfig) -> ProducerLoad {
        let mut load = read_producer_state(dir, self, config);
        self.producers = std::mem::take(&mut load.producers);
        for base in &load.unreadable {
            let _ = fs::remove_file(files::snapshot_path(dir, *base));
        }
        self.snapshots.retain(|b| !load.unreadable.contains(b));
        load
    }
}
