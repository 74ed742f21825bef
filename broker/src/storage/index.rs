//! Sparse, memory-mapped, preallocated indexes of one segment. Neither has
//! a checksum: after a crash they are checked against the log on load and
//! rebuilt from it when inconsistent.
//!
//! ```text
//! .index      entries of (relative_offset u32 | position u32), both strictly increasing
//! .timeindex  entries of (timestamp i64 | relative_offset u32), both strictly increasing
//! ```
//!
//! An offset-index entry says "the batch whose base offset is
//! `base_offset + relative_offset` starts at byte `position`". A time-index
//! entry says "batches up to the one at `relative_offset` have timestamps of
//! at most `timestamp`". Entries are added every `index_interval_bytes` of
//! log. Only the partition's writer touches an index (under the log lock).

use std::io;
use std::path::Path;

use super::mmap::{DiskSpace, MappedFile, SyncHandle};

/// Bytes of an offset-index entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of a time-index entry.
pub const TIME_ENTRY_LEN: usize = 12;

/// An index file of fixed-size entries, each a pair of increasing keys.
#[derive(Debug)]
struct EntryFile<const N: usize> {
    /// The mapped file; the published end covers the valid entries.
    file: MappedFile,
}

impl<const N: usize> EntryFile<N> {
    fn open(path: &Path, max_entries: usize, max_step: usize, space: DiskSpace) -> io::Result<Self> {
        Ok(Self { file: MappedFile::open(path, max_entries.max(1) * N, max_step, space)? })
    }

    fn len(&self) -> usize {
        self.file.published() / N
    }

    fn entry(&self, i: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(self.file.slice(i * N, (i + 1) * N));
        out
    }

    fn append(&mut self, entry: [u8; N]) -> io::Result<()> {
        let end = self.file.published();
        self.file.write(end, &entry)?;
        self.file.publish(end + N);
        Ok(())
    }

    /// Publishes the leading entries that `valid(previous, entry)` accepts;
    /// returns whether the whole file was valid.
    fn load(&mut self, mut valid: impl FnMut(Option<&[u8; N]>, &[u8; N]) -> bool) -> bool {
        let reserved = self.file.reserved();
        let raw = self.file.slice_unpublished(0, reserved);
        let mut count = 0;
        let mut previous: Option<[u8; N]> = None;
        for chunk in raw.chunks_exact(N) {
            let mut entry = [0u8; N];
            entry.copy_from_slice(chunk);
            if !valid(previous.as_ref(), &entry) {
                break;
            }
            previous = Some(entry);
            count += 1;
        }
        self.file.publish(count * N);
        count * N == reserved
    }

    fn clear(&mut self) -> io::Result<()> {
        self.file.truncate_published(0);
        self.file.set_len(0)
    }

    /// Cuts the file to its entries (on seal and close).
    fn trim(&self) -> io::Result<()> {
        self.file.set_len(self.file.published())
    }

    fn sync_handle(&self) -> io::Result<SyncHandle> {
        self.file.sync_handle()
    }

    fn release_fd(&self) {
        self.file.release_fd();
    }

    /// Index of the last entry whose key (from `key`) is `<= target`.
    fn floor(&self, target: u64, key: impl Fn(&[u8; N]) -> u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(&self.entry(mid)) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
}

fn u32_at(b: &[u8], pos: usize) -> u32 {
    u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]])
}

/// Relative offset → byte position.
#[derive(Debug)]
pub struct OffsetIndex(EntryFile<OFFSET_ENTRY_LEN>);

impl OffsetIndex {
    /// Opens (or creates) an index able to hold `max_entries`.
    pub fn open(path: &Path, max_entries: usize, max_step: usize, space: DiskSpace) -> io::Result<Self> {
        EntryFile::open(path, max_entries, max_step, space).map(Self)
    }

    /// Loads the entries that are consistent with a log of `log_len` bytes;
    /// returns false when any were not (the caller rebuilds).
    pub fn load(&mut self, log_len: usize) -> bool {
        self.0.load(|prev, e| {
            let (rel, pos) = (u32_at(e, 0), u32_at(e, 4) as usize);
            let increasing = prev.is_none_or(|p| rel > u32_at(p, 0) && pos > u32_at(p, 4) as usize);
            increasing && pos < log_len && (prev.is_some() || pos > 0)
        })
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds an entry; both fields must exceed the last entry's.
    pub fn append(&mut self, relative_offset: u32, position: u32) -> io::Result<()> {
        let mut e = [0u8; OFFSET_ENTRY_LEN];
        e[..4].copy_from_slice(&relative_offset.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.0.append(e)
    }

    /// The last entry at or before `relative_offset`: `(relative_offset,
    /// position)`, or `(0, 0)` (the segment's start).
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        self.0
            .floor(u64::from(relative_offset), |e| u64::from(u32_at(e, 0)))
            .map(|i| {
                let e = self.0.entry(i);
                (u32_at(&e, 0), u32_at(&e, 4))
            })
            .unwrap_or((0, 0))
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> io::Result<()> {
        self.0.clear()
    }

    /// Cuts the file to its entries.
    pub fn trim(&self) -> io::Result<()> {
        self.0.trim()
    }

    /// A handle that writes the entries to stable storage later.
    pub fn sync_handle(&self) -> io::Result<SyncHandle> {
        self.0.sync_handle()
    }

    /// Closes the file's descriptor (see [`MappedFile::release_fd`]).
    pub fn release_fd(&self) {
        self.0.release_fd();
    }
}

/// Timestamp → relative offset.
#[derive(Debug)]
pub struct TimeIndex(EntryFile<TIME_ENTRY_LEN>);

impl TimeIndex {
    /// Opens (or creates) an index able to hold `max_entries`.
    pub fn open(path: &Path, max_entries: usize, max_step: usize, space: DiskSpace) -> io::Result<Self> {
        EntryFile::open(path, max_entries, max_step, space).map(Self)
    }

    fn decode(e: &[u8; TIME_ENTRY_LEN]) -> (i64, u32) {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&e[..8]);
        (i64::from_be_bytes(ts), u32_at(e, 8))
    }

    /// Loads the entries consistent with a segment whose relative offsets
    /// end before `next_relative`; returns false when any were not.
    pub fn load(&mut self, next_relative: u64) -> bool {
        self.0.load(|prev, e| {
            let (ts, rel) = Self::decode(e);
            let increasing = prev.is_none_or(|p| {
                let (pts, prel) = Self::decode(p);
                ts > pts && rel > prel
            });
            increasing && u64::from(rel) < next_relative
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The last entry, `(timestamp, relative_offset)`.
    pub fn last(&self) -> Option<(i64, u32)> {
        self.len().checked_sub(1).map(|i| Self::decode(&self.0.entry(i)))
    }

    /// Adds an entry when `timestamp` exceeds the last one's and
    /// `relative_offset` follows it; otherwise does nothing.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) -> io::Result<()> {
        if self.last().is_some_and(|(ts, rel)| timestamp <= ts || relative_offset <= rel) {
            return Ok(());
        }
        let mut e = [0u8; TIME_ENTRY_LEN];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&relative_offset.to_be_bytes());
        self.0.append(e)
    }

    /// The relative offset to start scanning from for the first record with
    /// a timestamp `>= timestamp`: the last entry whose timestamp is below it
    /// (every batch up to it is older), or 0.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        // Keys are timestamps shifted to u64 order; floor of `timestamp - 1`.
        let key = |e: &[u8; TIME_ENTRY_LEN]| (Self::decode(e).0 as u64) ^ (1 << 63);
        let Some(target) = timestamp.checked_sub(1) else { return 0 };
        self.0.floor((target as u64) ^ (1 << 63), key).map_or(0, |i| Self::decode(&self.0.entry(i)).1)
    }

    /// Removes every entry.
    pub fn clear(&mut self) -> io::Result<()> {
        self.0.clear()
    }

    /// Cuts the file to its entries.
    pub fn trim(&self) -> io::Result<()> {
        self.0.trim()
    }

    /// A handle that writes the entries to stable storage later.
    pub fn sync_handle(&self) -> io::Result<SyncHandle> {
        self.0.sync_handle()
    }

    /// Closes the file's descriptor (see [`MappedFile::release_fd`]).
    pub fn release_fd(&self) {
        self.0.release_fd();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_lookup_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut idx = OffsetIndex::open(&path, 100, 1 << 16, DiskSpace::Real).unwrap();
        assert_eq!(idx.lookup(5), (0, 0));
        for i in 1..=10u32 {
            idx.append(i * 10, i * 4096).unwrap();
        }
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 4096));
        assert_eq!(idx.lookup(55), (50, 5 * 4096));
        assert_eq!(idx.lookup(u32::MAX), (100, 10 * 4096));
        idx.trim().unwrap();
        drop(idx);
        let mut again = OffsetIndex::open(&path, 100, 1 << 16, DiskSpace::Real).unwrap();
        assert!(again.load(11 * 4096));
        assert_eq!(again.len(), 10);
        let mut short = OffsetIndex::open(&path, 100, 1 << 16, DiskSpace::Real).unwrap();
        assert!(!short.load(5 * 4096 + 1), "entries past the log are inconsistent");
        assert_eq!(short.len(), 5);
    }

    #[test]
    fn preallocated_zeros_are_not_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut idx = OffsetIndex::open(&path, 100, 1 << 16, DiskSpace::Real).unwrap();
        idx.append(3, 100).unwrap();
        drop(idx); // not trimmed: the file holds zeros after the entry
        let mut again = OffsetIndex::open(&path, 100, 1 << 16, DiskSpace::Real).unwrap();
        assert!(!again.load(1000));
        assert_eq!(again.lookup(7), (3, 100));
    }

    #[test]
    fn time_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TimeIndex::open(&dir.path().join("t"), 100, 1 << 16, DiskSpace::Real).unwrap();
        assert_eq!(idx.lookup(1000), 0);
        idx.maybe_append(100, 0).unwrap();
        idx.maybe_append(90, 5).unwrap(); // older: skipped
        idx.maybe_append(200, 10).unwrap();
        idx.maybe_append(-5, 20).unwrap(); // older: skipped
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.last(), Some((200, 10)));
        assert_eq!(idx.lookup(100), 0);
        assert_eq!(idx.lookup(101), 0);
        assert_eq!(idx.lookup(201), 10);
        assert_eq!(idx.lookup(i64::MIN), 0);
    }
}
