//! The controller's Raft log and vote, durable under `<data_dir>/controller/`.
//!
//! Files:
//! - `raft.log`: entries appended as records `[len u32 BE][crc32 u32 BE]
//!   [JSON entry]`, fsynced (`sync_data`) before an append is reported
//!   flushed to openraft; truncated (then fsynced) on a conflicting tail;
//!   rewritten atomically without the purged head on a purge.
//! - `vote.json`: the vote, written through the durable-file module
//!   (temp, fsync, rename, directory fsync) before `save_vote` returns.
//! - `purged.json`: the last purged log id (written before the log is
//!   compacted, so a crash between the two only leaves extra entries that
//!   are skipped on open).
//!
//! Opening reads the log up to its first torn or corrupt record (a crash
//! mid-append), truncates it there and fsyncs. After a failed write or
//! fsync the store refuses everything (an fsync error is never retried and
//! trusted); openraft then stops the node, and a restart recovers from what
//! is durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use super::types::{blocking, io_err, lock, Entry, LogId, TypeConfig, Vote};
use crate::storage::durable;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
/// Bytes before a record's payload: length and CRC.
const HEADER: usize = 8;
/// Largest entry accepted when reading the log back.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// The durable Raft log store (cheap to clone: shared state).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug)]
struct LogInner {
    dir: PathBuf,
    file: File,
    /// Entries by index, with the byte position of their record.
    entries: BTreeMap<u64, (Entry, u64)>,
    /// Length of the valid log file.
    end: u64,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    /// Set by a failed write: everything is refused after it.
    failed: bool,
}

/// Encodes one entry as a log record.
fn encode_record(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let json = serde_json::to_vec(entry).map_err(io_err)?;
    let len = u32::try_from(json.len()).map_err(io_err)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(())
}

/// Decodes the records of `buf`: the entries with their positions, and
/// the length of the valid prefix (a torn or corrupt tail is cut there).
///
/// # Errors
/// A record whose checksum holds but whose entry does not decode: that is
/// not a torn write (a format this build cannot read), and nothing is cut.
fn decode_records(buf: &[u8]) -> io::Result<(Vec<(Entry, u64)>, u64)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while buf.len() - pos >= HEADER {
        let len = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_be_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        let start = pos + HEADER;
        if len > MAX_RECORD || buf.len() - start < len {
            break;
        }
        let body = &buf[start..start + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let entry = serde_json::from_slice::<Entry>(body).map_err(|e| {
            io_err(format!("controller log record at byte {pos} is intact but unreadable: {e}"))
        })?;
        out.push((entry, pos as u64));
        pos = start + len;
    }
    Ok((out, pos as u64))
}

/// Cuts `file` (at `path`) back to `valid` bytes and fsyncs it. Cut bytes
/// that are not all zero (more than preallocation or a torn append) are
/// first kept beside the log as `raft.log.cut-<offset>-<n>`: recovery never
/// deletes data it could not read.
fn cut_tail(path: &Path, file: &File, buf: &[u8], valid: u64) -> io::Result<()> {
    let tail = &buf[usize::try_from(valid).map_err(io_err)?..];
    tracing::warn!(path = %path.display(), valid, cut = tail.len(), "controller log: cutting a torn or corrupt tail");
    if tail.iter().any(|&b| b != 0) {
        let keep = (0u32..)
            .map(|n| {
                let mut name = path.as_os_str().to_owned();
                name.push(format!(".cut-{valid}-{n}"));
                PathBuf::from(name)
            })
            .find(|p| !p.exists())
            .ok_or_else(|| io_err("no free name for the cut log tail"))?;
        durable::write_atomically(&keep, tail).map_err(io_err)?;
    }
    file.set_len(valid)?;
    file.sync_all()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io_err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io_err)?;
    durable::write_atomically(path, &bytes).map_err(io_err)
}

impl LogStore {
    /// Opens (creating if needed) the log store in `dir`, recovering the
    /// durable prefix of the log.
    ///
    /// # Errors
    /// I/O errors, or an unreadable vote or purge record.
    pub fn open(dir: &Path) -> io::Result<Self> {
        durable::create_dir_durably(dir).map_err(io_err)?;
        let vote = read_json::<Vote>(&dir.join(VOTE_FILE))?;
        let last_purged = read_json::<LogId>(&dir.join(PURGED_FILE))?;
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        if !existed {
            durable::sync_dir(dir).map_err(io_err)?;
        }
        let buf = fs::read(&path)?;
        let (records, valid) = decode_records(&buf)?;
        if valid < buf.len() as u64 {
            cut_tail(&path, &file, &buf, valid)?;
        }
        let purged_index = last_purged.as_ref().map(LogId::index);
        let entries = records
            .into_iter()
            .filter(|(e, _)| purged_index.is_none_or(|p| e.log_id.index() > p))
            .map(|(e, pos)| (e.log_id.index(), (e, pos)))
            .collect();
        let inner =
            LogInner { dir: dir.to_owned(), file, entries, end: valid, last_purged, vote, failed: false };
        Ok(Self { inner: Arc::new(Mutex::new(inner)) })
    }
}

impl LogInner {
    fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io_err("controller log failed earlier; restart to recover"));
        }
        Ok(())
    }

    /// Runs a write; a failure poisons the store.
    fn write<R>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<R>) -> io::Result<R> {
        self.check()?;
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for e in &entries {
            positions.push(self.end + buf.len() as u64);
            encode_record(e, &mut buf)?;
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.end += buf.len() as u64;
        for (e, pos) in entries.into_iter().zip(positions) {
            self.entries.insert(e.log_id.index(), (e, pos));
        }
        Ok(())
    }

    fn truncate_after(&mut self, last: Option<&LogId>) -> io::Result<()> {
        let from = last.map_or(0, |l| l.index() + 1);
        let Some((_, (_, pos))) = self.entries.range(from..).next() else { return Ok(()) };
        let pos = *pos;
        self.file.set_len(pos)?;
        self.file.sync_all()?;
        self.end = pos;
        self.entries.retain(|&i, _| i < from);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        write_json(&self.dir.join(PURGED_FILE), &log_id)?;
        self.entries.retain(|&i, _| i > log_id.index());
        self.last_purged = Some(log_id);
        // Compact: rewrite the remaining entries atomically.
        let mut buf = Vec::new();
        let mut kept = BTreeMap::new();
        for (i, (e, _)) in std::mem::take(&mut self.entries) {
            let pos = buf.len() as u64;
            encode_record(&e, &mut buf)?;
            kept.insert(i, (e, pos));
        }
        let path = self.dir.join(LOG_FILE);
        durable::write_atomically(&path, &buf).map_err(io_err)?;
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        self.entries = kept;
        self.end = buf.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = lock(&self.inner)?;
        Ok(inner.entries.range(range).map(|(_, (e, _))| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner)?.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = lock(&self.inner)?;
        let last = inner.entries.values().next_back().map(|(e, _)| e.log_id);
        let last_purged_log_id = inner.last_purged;
        Ok(LogState { last_log_id: last.or(last_purged_log_id), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        blocking(&self.inner, move |inner| {
            inner.write(|inner| {
                write_json(&inner.dir.join(VOTE_FILE), &vote)?;
                inner.vote = Some(vote);
                Ok(())
            })
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let res = blocking(&self.inner, move |inner| inner.write(|inner| inner.append(entries))).await;
        match &res {
            Ok(()) => callback.io_completed(Ok(())),
            Err(e) => callback.io_completed(Err(io::Error::new(e.kind(), e.to_string()))),
        }
        res
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        blocking(&self.inner, move |inner| inner.write(|inner| inner.truncate_after(last_log_id.as_ref())))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        blocking(&self.inner, move |inner| inner.write(|inner| inner.purge(log_id))).await
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
