//! Durable committed offsets: an internal log (the storage engine's own
//! [`Log`], `fsync = always`, CRC-checked and recovered like any partition)
//! under `<data_dir>/groups/offsets/`. Each record's key names (group,
//! topic, partition); its value is the offset and metadata, or null for a
//! deletion. The latest record per key wins. On start-up the log is read
//! into memory and, when it holds many superseded records, rewritten with
//! only the live ones (compaction) so it never grows without bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_protocol::batch::{split_batches, BatchBuilder};

use crate::broker::now_ms;
use crate::storage::{DiskSpace, FsyncPolicy, Log, LogConfig, StorageError};

/// (group, topic, partition).
pub type OffsetKey = (String, String, u32);

/// A committed offset and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to consume.
    pub offset: u64,
    /// Free-form text from the committer.
    pub metadata: String,
}

/// The offsets log.
#[derive(Debug)]
pub struct OffsetStore {
    log: Arc<Log>,
}

fn encode_key(k: &OffsetKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(k.0.len() + k.1.len() + 8);
    out.extend_from_slice(&(k.0.len() as u16).to_be_bytes());
    out.extend_from_slice(k.0.as_bytes());
    out.extend_from_slice(&(k.1.len() as u16).to_be_bytes());
    out.extend_from_slice(k.1.as_bytes());
    out.extend_from_slice(&k.2.to_be_bytes());
    out
}

/// Decodes a record key of the offsets log.
pub fn decode_key(b: &[u8]) -> Option<OffsetKey> {
    let glen = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    let group = std::str::from_utf8(b.get(2..2 + glen)?).ok()?.to_owned();
    let rest = b.get(2 + glen..)?;
    let tlen = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let topic = std::str::from_utf8(rest.get(2..2 + tlen)?).ok()?.to_owned();
    let p = rest.get(2 + tlen..2 + tlen + 4)?;
    Some((group, topic, u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
}

fn encode_value(c: &Committed) -> Vec<u8> {
    let mut out = c.offset.to_be_bytes().to_vec();
    out.extend_from_slice(c.metadata.as_bytes());
    out
}

/// Decodes a record value of the offsets log.
pub fn decode_value(b: &[u8]) -> Option<Committed> {
    let offset = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    Some(Committed { offset, metadata: String::from_utf8_lossy(&b[8..]).into_owned() })
}

fn config() -> LogConfig {
    LogConfig { fsync: FsyncPolicy::Always, segment_bytes: 64 << 20, retention_ms: 0, ..LogConfig::default() }
}

/// Everything in a log: latest value per key, and the number of records.
fn read_all(log: &Log) -> Result<(HashMap<OffsetKey, Committed>, usize), StorageError> {
    let mut map = HashMap::new();
    let mut records = 0;
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let bytes = match log.read(next, 1 << 20) {
            Ok(bytes) => bytes,
            Err(StorageError::CorruptBatch { segment, position, source }) => {
                // Bit rot in the offsets log: those commits are lost (older
                // commits or the reset policy apply); the rest is served.
                tracing::error!(segment, position, offset = next, error = %source, "skipping a corrupt committed-offsets batch");
                next += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if bytes.is_empty() {
            break;
        }
        for batch in split_batches(bytes) {
            let batch = batch.map_err(StorageError::InvalidBatch)?;
            next = next.max(batch.header().next_offset());
            for r in batch.records().map_err(StorageError::InvalidBatch)?.iter() {
                let r = r.map_err(StorageError::InvalidBatch)?;
                records += 1;
                let Some(key) = r.key.and_then(decode_key) else { continue };
                match r.value.and_then(decode_value) {
                    Some(v) => map.insert(key, v),
                    None => map.remove(&key),
                };
            }
        }
    }
    Ok((map, records))
}

impl OffsetStore {
    /// Opens (recovering, and compacting when worthwhile) the offsets log.
    /// Blocking.
    pub fn open(data_dir: &Path) -> Result<(Self, HashMap<OffsetKey, Committed>), StorageError> {
        let dir = data_dir.join("groups").join("offsets");
        let (log, _) = Log::open(&dir, config(), DiskSpace::Real)?;
        let (map, records) = read_all(&log)?;
        if records > 1000 && records > 2 * map.len() {
            log.close()?;
            drop(log);
            Self::compact(&dir, &map)?;
            let (log, _) = Log::open(&dir, config(), DiskSpace::Real)?;
            return Ok((Self { log: Arc::new(log) }, map));
        }
        Ok((Self { log: Arc::new(log) }, map))
    }

    /// Rewrites the log with only the live entries: built beside it, then
    /// swapped in by renames (a crash leaves either the old or the new log).
    fn compact(dir: &Path, live: &HashMap<OffsetKey, Committed>) -> Result<(), StorageError> {
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let fresh: PathBuf = parent.join("offsets~compacting");
        let old: PathBuf = parent.join("offsets~old");
        let _ = std::fs::remove_dir_all(&fresh);
        let _ = std::fs::remove_dir_all(&old);
        {
            let (log, _) = Log::open(&fresh, config(), DiskSpace::Real)?;
            let entries: Vec<_> = live.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            for chunk in entries.chunks(1000) {
                log.append(&batch(chunk), now_ms())?;
            }
            log.close()?;
        }
        let io = |op, p: &Path| {
            let p = p.to_owned();
            move |source| StorageError::Io { op, path: p, source }
        };
        std::fs::rename(dir, &old).map_err(io("rename", dir))?;
        std::fs::rename(&fresh, dir).map_err(io("rename", &fresh))?;
        std::fs::remove_dir_all(&old).map_err(io("remove", &old))?;
        tracing::info!(entries = live.len(), "compacted the committed-offsets log");
        Ok(())
    }

    /// Appends entries (`None` deletes); returns the offset to sync to.
    pub fn append(&self, entries: &[(OffsetKey, Option<Committed>)]) -> Result<u64, StorageError> {
        let info = self.log.append(&batch(entries), now_ms())?;
        Ok(info.last_offset + 1)
    }

    /// Makes everything up to `offset` durable (group commit). Blocking.
    pub fn sync_to(&self, offset: u64) -> Result<(), StorageError> {
        self.log.sync_to(offset)
    }

    /// The shared log (for syncing on a blocking thread).
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Flushes and closes the log. Blocking.
    pub fn close(&self) -> Result<(), StorageError> {
        self.log.close()
    }
}

fn batch(entries: &[(OffsetKey, Option<Committed>)]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    let ts = now_ms();
    for (k, v) in entries {
        let value = v.as_ref().map(encode_value);
        b.append(ts, Some(&encode_key(k)), value.as_deref(), &[]);
    }
    b.build().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: &str, p: u32) -> OffsetKey {
        (g.into(), "t".into(), p)
    }

    #[test]
    fn latest_value_wins_and_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, map) = OffsetStore::open(dir.path()).unwrap();
        assert!(map.is_empty());
        for i in 0..3000u64 {
            let end = store
                .append(&[(key("g", (i % 3) as u32), Some(Committed { offset: i, metadata: "m".into() }))])
                .unwrap();
            store.sync_to(end).unwrap();
        }
        store.append(&[(key("gone", 0), Some(Committed { offset: 1, metadata: String::new() }))]).unwrap();
        store.append(&[(key("gone", 0), None)]).unwrap();
        store.close().unwrap();
        drop(store);
        let (store, map) = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map[&key("g", 2)].offset, 2999);
        assert!(!map.contains_key(&key("gone", 0)));
        drop(store); // crash after compaction: still the same
        let (_, again) = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(again, map);
        assert!(!dir.path().join("groups/offsets~old").exists());
    }

    #[test]
    fn keys_round_trip() {
        let k = ("grp".to_string(), "tópic".to_string(), 7);
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        assert_eq!(decode_key(&[0, 9, 1]), None);
    }
}
