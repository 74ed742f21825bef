//! The allocator of Kafka producer ids (InitProducerId hands them out,
//! `init_producer_id`). An id is never handed out twice, across
//! restarts and crashes included: ids are taken from blocks, and the end of
//! the current block is written durably before any id of it is used:
//!
//! ```text
//! <data_dir>/kafka-producer-ids    decimal text: the first id not yet reserved
//! ```
//!
//! A restart starts a new block there, skipping what was left of the old
//! one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::errors::BrokerError;
use crate::storage::{durable, StorageError};

/// The allocator's file in the data directory.
pub const FILE: &str = "kafka-producer-ids";
/// Ids reserved per durable write.
const BLOCK: i64 = 1000;

/// Hands out producer ids.
#[derive(Debug)]
pub struct ProducerIds {
    /// The allocator's file.
    path: PathBuf,
    /// The next id and the end of the reserved block.
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Opens the allocator of `data_dir` (nothing is reserved until the
    /// first id is asked for).
    ///
    /// # Errors
    /// `Storage` when the file exists but cannot be read or parsed.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        let path = data_dir.join(FILE);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|e| {
                BrokerError::Internal(format!(
                    "{}: not a producer id ({e}); it holds the next free id",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(StorageError::Io { op: "read", path: path.clone(), source }.into()),
        };
        Ok(Self { path, state: Mutex::new((next, next)) })
    }

    /// A new producer id, never handed out before. Blocking when a new
    /// block must be reserved (one durable write per [`BLOCK`] ids).
    ///
    /// # Errors
    /// `Storage` when the reservation cannot be written.
    pub fn allocate(&self) -> Result<i64, BrokerError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, end) = *state;
        if next >= end {
            let end = next + BLOCK;
            durable::write_atomically(&self.path, end.to_string().as_bytes())?;
            *state = (next, end);
        }
        state.0 = next + 1;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        let next = ids.allocate().unwrap();
        assert_eq!(next, BLOCK, "a restart skips the rest of the block");
        for _ in 0..BLOCK {
            ids.allocate().unwrap();
        }
        let reopened = ProducerIds::open(dir.path()).unwrap().allocate().unwrap();
        assert_eq!(reopened, 3 * BLOCK);
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert!(ProducerIds::open(dir.path()).is_err());
    }
}
