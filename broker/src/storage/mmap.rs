//! The one module with `unsafe`: a file mapped once, read-only, over a
//! fixed range of address space, appended to with `pwrite` by one writer and
//! read through the map by many threads.
//!
//! Appends go through `pwrite`, not through the map: a store into a fresh
//! page of a shared file mapping first faults the page in (ext4 zero-fills
//! it as a read), and writeback then has to write-protect every dirty PTE,
//! a TLB shootdown across cores. Profiling showed those two costs at more
//! than half of the broker's CPU time; `pwrite` into the page cache has
//! neither. The read-only map still gives zero-copy `Bytes` to readers.
//!
//! Soundness rests on a *published end* (`published`, an atomic):
//! - readers can only borrow bytes below it ([`MappedFile::slice`],
//!   [`MappedFile::bytes`]), and the bytes they get are never written again;
//! - writes ([`MappedFile::write`]) are refused below it, so they never
//!   touch bytes a reader may hold;
//! - moving it backwards ([`MappedFile::truncate_published`]) takes
//!   `&mut self`, which an `Arc<MappedFile>` only yields when no reader holds
//!   a `Bytes` of the map (`Arc::get_mut`).
//!
//! Disk is reserved with `fallocate` ahead of the write position, in steps
//! that double from [`MIN_RESERVE_STEP`] to a configured maximum, so a full
//! disk fails a write with `ENOSPC` rather than a SIGBUS on first touch, and
//! the file is never shrunk below the published end (a reader's `Bytes` may
//! still reference any byte below it).
//!
//! Only one thread may call the writing methods at a time (the partition's
//! writer); reading methods may be called from any thread.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

pub use super::disk::DiskSpace;

/// The first fallocate step.
pub const MIN_RESERVE_STEP: usize = 64 * 1024;

/// A file mapped over `capacity` bytes of address space.
#[derive(Debug)]
pub struct MappedFile {
    /// The open file, for fallocate, set_len, pwrite and sync. Released
    /// once a sealed segment is flushed ([`MappedFile::release_fd`]): the
    /// map needs no descriptor, and a partition then holds open files only
    /// for its active segment. Reopened by path if needed again.
    file: Mutex<Option<Arc<File>>>,
    /// Its path, for errors.
    path: PathBuf,
    /// The mapping, `capacity` bytes long.
    map: MmapRaw,
    /// Bytes of address space mapped.
    capacity: usize,
    /// Bytes below this are complete and immutable.
    published: AtomicUsize,
    /// Bytes of file reserved on disk (the file length).
    reserved: AtomicUsize,
    /// Next fallocate step.
    step: AtomicUsize,
    /// Largest fallocate step.
    max_step: usize,
    /// Reservation policy.
    space: DiskSpace,
    /// Cleared when the file system has no `fallocate`: the file then grows
    /// with `ftruncate` (appends use `pwrite`, so a full disk is still an
    /// error, not a SIGBUS).
    fallocate: AtomicBool,
}

/// Set once the first "no fallocate" warning was logged.
static WARNED_NO_FALLOCATE: AtomicBool = AtomicBool::new(false);

impl MappedFile {
    /// Opens (creating if missing) `path` and maps `capacity` bytes. The
    /// published end starts at 0: the caller validates what is there and
    /// then publishes it.
    pub fn open(path: &Path, capacity: usize, max_step: usize, space: DiskSpace) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        let capacity = capacity.max(len).max(1);
        let map = MmapOptions::new().len(capacity).map_raw_read_only(&file)?;
        Ok(Self {
            file: Mutex::new(Some(Arc::new(file))),
            path: path.to_owned(),
            map,
            capacity,
            published: AtomicUsize::new(0),
            reserved: AtomicUsize::new(len),
            step: AtomicUsize::new(MIN_RESERVE_STEP),
            max_step: max_step.max(MIN_RESERVE_STEP),
            space,
            fallocate: AtomicBool::new(true),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, reopened by path after [`release_fd`](Self::release_fd).
    fn file(&self) -> io::Result<Arc<File>> {
        let mut slot = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = slot.as_ref() {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        *slot = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Closes the descriptor (the map stays valid without it). For files
    /// that are fully synced and no longer written: a sealed, flushed
    /// segment. Whatever still needs it reopens it.
    pub fn release_fd(&self) {
        self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    /// Whether the descriptor is open.
    #[cfg(test)]
    pub fn has_fd(&self) -> bool {
        self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    /// Bytes of address space mapped.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// End of the complete, immutable bytes.
    pub fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Bytes reserved on disk (the file's length).
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    /// Makes sure the file is at least `end` bytes long, growing it in
    /// doubling steps. Writer only.
    pub fn reserve(&self, end: usize) -> io::Result<()> {
        let reserved = self.reserved();
        if end <= reserved {
            return Ok(());
        }
        if end > self.capacity {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "write past the mapped capacity"));
        }
        let step = self.step.load(Ordering::Relaxed);
        let target = end.max(reserved.saturating_add(step)).min(self.capacity);
        self.space.take(target - reserved)?;
        self.grow(reserved, target)?;
        self.reserved.store(target, Ordering::Release);
        self.step.store((step * 2).min(self.max_step), Ordering::Relaxed);
        Ok(())
    }

    /// Extends the file from `reserved` to `target` bytes: `fallocate`, or
    /// `ftruncate` on a file system without it (warned about once).
    fn grow(&self, reserved: usize, target: usize) -> io::Result<()> {
        if self.fallocate.load(Ordering::Relaxed) {
            let allocated = self.space.before_fallocate().and_then(|()| {
                rustix::fs::fallocate(
                    &*self.file()?,
                    rustix::fs::FallocateFlags::empty(),
                    reserved as u64,
                    (target - reserved) as u64,
                )
                .map_err(io::Error::from)
            });
            match allocated {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
                    self.fallocate.store(false, Ordering::Relaxed);
                    if !WARNED_NO_FALLOCATE.swap(true, Ordering::Relaxed) {
                        tracing::warn!(path = %self.path.display(), "the file system has no fallocate: growing files with ftruncate instead (disk space is not reserved ahead; a full disk still fails appends cleanly)");
                    }
                }
                other => return other,
            }
        }
        self.space.before_truncate()?;
        self.file()?.set_len(target as u64)
    }

    /// Copies `data` to `position`, which must be at or past the published
    /// end. Writer only.
    pub fn write(&self, position: usize, data: &[u8]) -> io::Result<()> {
        let end = position
            .checked_add(data.len())
            .filter(|end| *end <= self.capacity)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past the mapped capacity"))?;
        if position < self.published() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "write below the published end"));
        }
        self.reserve(end)?;
        // The kernel writes the page cache the map shows; readers only
        // borrow bytes below the published end, which these are not.
        std::os::unix::fs::FileExt::write_all_at(&*self.file()?, data, position as u64)
    }

    /// Declares everything below `end` complete. Never moves backwards.
    pub fn publish(&self, end: usize) {
        debug_assert!(end <= self.reserved());
        self.published.fetch_max(end.min(self.reserved()), Ordering::Release);
    }

    /// Borrows published bytes `start..end`.
    ///
    /// # Panics
    /// If the range is not inside the published bytes (a caller bug).
    pub fn slice(&self, start: usize, end: usize) -> &[u8] {
        let published = self.published();
        assert!(start <= end && end <= published, "read {start}..{end} past published end {published}");
        // SAFETY: `start..end` is below the published end: inside the file
        // and the mapping, complete, and never written again while `self`
        // is shared (writes are refused below the published end, and it only
        // moves backwards through `&mut self`).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), end - start) }
    }

    /// Borrows bytes `start..end` that are in the file but may not be
    /// published (recovery scans). Takes `&mut self`: nobody else can hold
    /// a reference into the map.
    pub fn slice_unpublished(&mut self, start: usize, end: usize) -> &[u8] {
        let end = end.min(self.reserved());
        let start = start.min(end);
        // SAFETY: the range is inside the file (bounded by `reserved`, the
        // file's length) and the mapping; `&mut self` means no writer or
        // reader can be using the map at the same time.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), end - start) }
    }

    /// Published bytes `start..end` as a `Bytes` that keeps the map alive.
    ///
    /// # Panics
    /// If the range is not inside the published bytes (a caller bug).
    pub fn bytes(self: &Arc<Self>, start: usize, end: usize) -> Bytes {
        let _checked = self.slice(start, end);
        Bytes::from_owner(View { file: Arc::clone(self), start, end })
    }

    /// Makes `start..end` durable: the file's dirty pages and its length
    /// (fdatasync; appends only ever dirty the unflushed tail).
    pub fn flush_range(&self, start: usize, end: usize) -> io::Result<()> {
        if start >= end.min(self.reserved()) {
            return Ok(());
        }
        self.space.before_sync()?;
        self.file()?.sync_data()
    }

    /// A handle that syncs this file later, outside the writer's lock (the
    /// same open file description).
    pub fn sync_handle(&self) -> io::Result<SyncHandle> {
        Ok(SyncHandle { file: self.file()?, path: self.path.clone(), space: self.space.clone() })
    }

    /// Shrinks or grows the file to `len`, never below the published end.
    /// Writer only.
    pub fn set_len(&self, len: usize) -> io::Result<()> {
        let len = len.max(self.published());
        self.space.before_truncate()?;
        self.file()?.set_len(len as u64)?;
        self.reserved.store(len, Ordering::Release);
        Ok(())
    }

    /// Moves the published end back to `end` (truncation, recovery). Needs
    /// exclusive access: no reader may hold bytes of this map.
    pub fn truncate_published(&mut self, end: usize) {
        let published = self.published.get_mut();
        *published = (*published).min(end);
    }
}

/// Syncs one file's data and length (see [`MappedFile::sync_handle`]).
#[derive(Debug)]
pub struct SyncHandle {
    file: Arc<File>,
    path: PathBuf,
    space: DiskSpace,
}

impl SyncHandle {
    /// `fdatasync`.
    pub fn sync(&self) -> io::Result<()> {
        self.space.before_sync()?;
        self.file.sync_data()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The owner behind a `Bytes` handed to readers: keeps the map alive and
/// names the published range it covers.
#[derive(Debug)]
struct View {
    file: Arc<MappedFile>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.file.slice(self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, cap: usize) -> MappedFile {
        MappedFile::open(&dir.join("f"), cap, 1 << 20, DiskSpace::Real).unwrap()
    }

    #[test]
    fn write_publish_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(open(dir.path(), 1 << 20));
        f.write(0, b"hello").unwrap();
        assert_eq!(f.published(), 0);
        f.publish(5);
        let b = f.bytes(1, 5);
        assert_eq!(&b[..], b"ello");
        assert!(f.write(3, b"x").is_err(), "writes below the published end are refused");
        f.write(5, b" world").unwrap();
        f.publish(11);
        assert_eq!(f.slice(0, 11), b"hello world");
        assert_eq!(&b[..], b"ello", "published bytes never change");
    }

    #[test]
    fn reservation_grows_in_doubling_steps() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 8 << 20);
        f.write(0, &[1]).unwrap();
        assert_eq!(f.reserved(), MIN_RESERVE_STEP);
        f.write(MIN_RESERVE_STEP, &[1]).unwrap();
        assert_eq!(f.reserved(), 3 * MIN_RESERVE_STEP);
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len() as usize, 3 * MIN_RESERVE_STEP);
    }

    #[test]
    fn budget_exhaustion_is_enospc_and_recoverable() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(AtomicUsize::new(MIN_RESERVE_STEP));
        let f = MappedFile::open(&dir.path().join("f"), 1 << 20, 1 << 20, DiskSpace::Budget(budget.clone()))
            .unwrap();
        f.write(0, &[7; 100]).unwrap();
        let err = f.write(MIN_RESERVE_STEP, &[1]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::NOSPC.raw_os_error()));
        budget.store(1 << 20, Ordering::SeqCst);
        f.write(MIN_RESERVE_STEP, &[1]).unwrap();
    }

    #[test]
    fn without_fallocate_files_grow_with_ftruncate() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(super::super::disk::Faults::default());
        faults.no_fallocate.store(true, Ordering::SeqCst);
        let space = DiskSpace::Faulty(Arc::clone(&faults));
        let f = MappedFile::open(&dir.path().join("f"), 1 << 20, 1 << 20, space).unwrap();
        f.write(0, b"abc").unwrap();
        f.write(MIN_RESERVE_STEP + 10, b"def").unwrap();
        f.publish(MIN_RESERVE_STEP + 13);
        assert_eq!(f.slice(0, 3), b"abc");
        assert_eq!(f.slice(MIN_RESERVE_STEP + 10, MIN_RESERVE_STEP + 13), b"def");
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len() as usize, f.reserved());
        assert!(!f.fallocate.load(Ordering::SeqCst), "fallocate is not asked again");
    }

    #[test]
    fn a_released_descriptor_is_reopened_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(open(dir.path(), 1 << 16));
        f.write(0, b"abc").unwrap();
        f.publish(3);
        let held = f.bytes(0, 3);
        f.release_fd();
        assert!(!f.has_fd());
        assert_eq!(&held[..], b"abc", "the map needs no descriptor");
        f.flush_range(0, 3).unwrap();
        assert!(f.has_fd());
        f.write(3, b"def").unwrap();
        f.publish(6);
        assert_eq!(f.slice(0, 6), b"abcdef");
    }

    #[test]
    fn truncate_needs_exclusive_access() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Arc::new(open(dir.path(), 1 << 16));
        f.write(0, b"abcdef").unwrap();
        f.publish(6);
        let held = f.bytes(0, 6);
        assert!(Arc::get_mut(&mut f).is_none(), "a reader's Bytes blocks truncation");
        drop(held);
        Arc::get_mut(&mut f).unwrap().truncate_published(2);
        assert_eq!(f.published(), 2);
        f.write(2, b"XY").unwrap();
    }

    #[test]
    fn out_of_range_writes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 1024);
        assert!(f.write(1020, &[0; 8]).is_err());
        assert!(f.write(usize::MAX, &[0; 8]).is_err());
    }
}
