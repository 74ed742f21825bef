//! Durable committed offsets: an internal log (the storage engine's own
//! [`Log`], `fsync = always`, CRC-checked and recovered like any partition)
//! under `<data_dir>/groups/offsets-<generation>/` ([`generations`]). Each
//! record's key names (group, topic, partition); its value is the offset and
//! metadata, or null for a deletion; a `topic-id` header names the topic
//! incarnation the offset belongs to (absent in records written before topics
//! had ids). The latest record per key wins. On start-up the log is read into
//! memory and, when it holds many superseded records, rewritten with only the
//! live ones (compaction) as a new generation, switched to in one atomic step,
//! so it never grows without bound and no crash loses it.

pub mod generations;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sluice_protocol::batch::{split_batches, BatchBuilder, HeaderRef};
use uuid::Uuid;

use crate::storage::now_ms;
use crate::storage::{DiskSpace, FsyncPolicy, Log, LogConfig, StorageError};
use generations::Generation;

/// The record header carrying a committed offset's topic id.
const TOPIC_ID_HEADER: &[u8] = b"topic-id";

/// (group, topic, partition).
pub type OffsetKey = (String, String, u32);

/// A committed offset and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to consume.
    pub offset: u64,
    /// Free-form text from the committer.
    pub metadata: String,
    /// The id of the topic incarnation committed to (`None`: written before
    /// topics had ids). An offset whose id is not the topic's current id
    /// belongs to a deleted topic of the same name.
    pub topic_id: Option<Uuid>,
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
    Some(Committed { offset, metadata: String::from_utf8_lossy(&b[8..]).into_owned(), topic_id: None })
}

/// The topic id a record's headers carry.
fn decode_topic_id<'a>(mut headers: impl Iterator<Item = HeaderRef<'a>>) -> Option<Uuid> {
    headers.find(|h| h.key == TOPIC_ID_HEADER).and_then(|h| Uuid::from_slice(h.value?).ok())
}

fn config() -> LogConfig {
    LogConfig { fsync: FsyncPolicy::Always, segment_bytes: 64 << 20, retention_ms: 0, ..LogConfig::default() }
}

/// Everything in a log: latest value per key, and the number of records.
fn read_all(log: &Log) -> Result<(HashMap<OffsetKey, Committed>, usize), StorageError> {
    read_all_with(log, Log::read)
}

/// Everything in a log read with `read` (from an offset, at most so many
/// bytes: [`Log::read`], or a read up to the log end): latest value per
/// key, and the number of records.
pub(super) fn read_all_with(
    log: &Log,
    read: impl Fn(&Log, u64, usize) -> Result<bytes::Bytes, StorageError>,
) -> Result<(HashMap<OffsetKey, Committed>, usize), StorageError> {
    let mut map = HashMap::new();
    let mut records = 0;
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let bytes = match read(log, next, 1 << 20) {
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
                    Some(v) => {
                        map.insert(key, Committed { topic_id: decode_topic_id(r.headers.clone()), ..v })
                    }
                    None => map.remove(&key),
                };
            }
        }
    }
    Ok((map, records))
}

/// Where [`OffsetStore::compact`] stops, to simulate a crash there (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The new generation is half written.
    Building,
    /// The new generation is complete and closed; the pointer is not moved.
    Built,
    /// The pointer names the new generation; the old one still exists.
    Switched,
}

impl OffsetStore {
    /// Opens (recovering, and compacting when worthwhile) the offsets log,
    /// first settling any compaction a crash interrupted. Blocking.
    ///
    /// # Errors
    /// When the log cannot be opened, recovered or compacted.
    pub fn open(data_dir: &Path) -> Result<(Self, HashMap<OffsetKey, Committed>), StorageError> {
        Self::open_with(data_dir, |_| false)
    }

    /// [`Self::open`], stopping a compaction where `crash` says so (its
    /// store is then the old generation, as a restart would find it).
    fn open_with(
        data_dir: &Path,
        crash: impl Fn(Step) -> bool,
    ) -> Result<(Self, HashMap<OffsetKey, Committed>), StorageError> {
        let groups = data_dir.join("groups");
        let live = generations::live_dir(&groups)?;
        let (log, _) = Log::open(&live.dir, config(), DiskSpace::Real)?;
        let (map, records) = read_all(&log)?;
        if records > 1000 && records > 2 * map.len() {
            log.close()?;
            drop(log);
            let dir = match Self::compact(&groups, &live, &map, crash)? {
                Some(fresh) => fresh.dir,
                None => live.dir,
            };
            let (log, _) = Log::open(&dir, config(), DiskSpace::Real)?;
            return Ok((Self { log: Arc::new(log) }, map));
        }
        Ok((Self { log: Arc::new(log) }, map))
    }

    /// Writes the live entries as the next generation, switches to it (one
    /// atomic pointer replacement) and removes the old one. Returns the new
    /// generation, or `None` when `crash` stopped it before the switch.
    fn compact(
        groups: &Path,
        live: &Generation,
        entries: &HashMap<OffsetKey, Committed>,
        crash: impl Fn(Step) -> bool,
    ) -> Result<Option<Generation>, StorageError> {
        let fresh = generations::next(groups, live);
        crate::storage::durable::remove_durably(&fresh.dir)?;
        {
            let (log, _) = Log::open(&fresh.dir, config(), DiskSpace::Real)?;
            let entries: Vec<_> = entries.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            for (i, chunk) in entries.chunks(1000).enumerate() {
                log.append(&batch(chunk), now_ms())?;
                if i == 0 && crash(Step::Building) {
                    return Ok(None);
                }
            }
            log.close()?;
        }
        if crash(Step::Built) {
            return Ok(None);
        }
        generations::switch(groups, &fresh)?;
        if crash(Step::Switched) {
            return Ok(Some(fresh));
        }
        crate::storage::durable::remove_durably(&live.dir)?;
        tracing::info!(entries = entries.len(), dir = %fresh.dir.display(), "compacted the committed-offsets log");
        Ok(Some(fresh))
    }

    /// Appends entries (`None` deletes); returns the offset to sync to.
    ///
    /// # Errors
    /// When the log refuses the batch (full disk, a failed earlier sync).
    pub fn append(&self, entries: &[(OffsetKey, Option<Committed>)]) -> Result<u64, StorageError> {
        let info = self.log.append(&batch(entries), now_ms())?;
        Ok(info.last_offset + 1)
    }

    /// Makes everything up to `offset` durable (group commit). Blocking.
    ///
    /// # Errors
    /// When the sync fails (the log then refuses writes until reopened).
    pub fn sync_to(&self, offset: u64) -> Result<(), StorageError> {
        self.log.sync_to(offset)
    }

    /// The shared log (for syncing on a blocking thread).
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Flushes and closes the log. Blocking.
    ///
    /// # Errors
    /// When the final flush fails.
    pub fn close(&self) -> Result<(), StorageError> {
        self.log.close()
    }
}

pub(super) fn batch(entries: &[(OffsetKey, Option<Committed>)]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    let ts = now_ms();
    for (k, v) in entries {
        let value = v.as_ref().map(encode_value);
        let id = v.as_ref().and_then(|c| c.topic_id);
        let header = id.as_ref().map(|id| HeaderRef { key: TOPIC_ID_HEADER, value: Some(id.as_bytes()) });
        b.append(ts, Some(&encode_key(k)), value.as_deref(), header.as_slice());
    }
    b.build().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: &str, p: u32) -> OffsetKey {
        (g.into(), "t".into(), p)
    }

    fn committed(offset: u64) -> Committed {
        Committed { offset, metadata: "m".into(), topic_id: None }
    }

    /// Writes 3000 superseded commits (worth compacting) and a deleted key.
    fn fill(data_dir: &Path) -> HashMap<OffsetKey, Committed> {
        let (store, _) = OffsetStore::open(data_dir).unwrap();
        let id = Uuid::new_v4();
        for i in 0..3000u64 {
            let c = Committed { topic_id: (i % 2 == 0).then_some(id), ..committed(i) };
            store.append(&[(key("g", (i % 3) as u32), Some(c))]).unwrap();
        }
        store.append(&[(key("gone", 0), Some(committed(1)))]).unwrap();
        store.append(&[(key("gone", 0), None)]).unwrap();
        store.close().unwrap();
        let (store, map) = OffsetStore::open_with(data_dir, |_| true).unwrap();
        store.close().unwrap();
        map
    }

    #[test]
    fn latest_value_wins_and_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let map = fill(dir.path());
        assert_eq!(map.len(), 3);
        assert_eq!(map[&key("g", 2)].offset, 2999);
        assert!(map[&key("g", 2)].topic_id.is_none());
        assert!(map[&key("g", 1)].topic_id.is_some());
        assert!(!map.contains_key(&key("gone", 0)));
        let (store, again) = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(again, map);
        drop(store); // crash after compaction: still the same
        let (_, again) = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(again, map);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("groups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // the pointer and one generation
    }

    /// Regression (issue #13 item 4): a crash at any step of the switch to a
    /// compacted log loses no committed offset, and the next start settles
    /// on one generation.
    #[test]
    fn a_crash_at_every_compaction_step_keeps_the_offsets() {
        for step in [Step::Building, Step::Built, Step::Switched] {
            let dir = tempfile::tempdir().unwrap();
            let map = fill(dir.path());
            let (store, first) = OffsetStore::open_with(dir.path(), |s| s == step).unwrap();
            assert_eq!(first, map, "{step:?}");
            drop(store); // the crash
            let (store, after) = OffsetStore::open_with(dir.path(), |s| s == step).unwrap();
            assert_eq!(after, map, "{step:?}: first restart");
            drop(store);
            let (store, after) = OffsetStore::open(dir.path()).unwrap();
            assert_eq!(after, map, "{step:?}: restart that finishes the compaction");
            store.close().unwrap();
            let (_, after) = OffsetStore::open(dir.path()).unwrap();
            assert_eq!(after, map, "{step:?}: after");
        }
    }

    /// The on-disk states the old two-rename compaction could leave.
    #[test]
    fn old_layouts_migrate_without_losing_offsets() {
        for state in ["plain", "renamed-away", "both-renamed"] {
            let dir = tempfile::tempdir().unwrap();
            let groups = dir.path().join("groups");
            let (log, _) = Log::open(&groups.join("offsets"), config(), DiskSpace::Real).unwrap();
            log.append(&batch(&[(key("g", 0), Some(committed(42)))]), now_ms()).unwrap();
            log.close().unwrap();
            drop(log);
            match state {
                "renamed-away" => {
                    std::fs::rename(groups.join("offsets"), groups.join("offsets~old")).unwrap();
                    std::fs::create_dir(groups.join("offsets~compacting")).unwrap();
                }
                "both-renamed" => std::fs::create_dir(groups.join("offsets~old")).unwrap(),
                _ => {}
            }
            let (store, map) = OffsetStore::open(dir.path()).unwrap();
            assert_eq!(map[&key("g", 0)].offset, 42, "{state}");
            store.close().unwrap();
            assert!(!groups.join("offsets~old").exists(), "{state}");
        }
    }

    #[test]
    fn keys_round_trip() {
        let k = ("grp".to_string(), "tópic".to_string(), 7);
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        assert_eq!(decode_key(&[0, 9, 1]), None);
    }
}
