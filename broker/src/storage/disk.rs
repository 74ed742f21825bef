//! How the storage engine's files meet the disk: the reservation policy
//! and, for tests, injected faults.
//!
//! Every [`MappedFile`](super::mmap::MappedFile) (segment logs and indexes)
//! consults its [`DiskSpace`] before it reserves space (`fallocate`), syncs
//! (`fdatasync`) or changes its length (`ftruncate`). The real policy lets
//! the file system answer; [`DiskSpace::Budget`] simulates a full disk and
//! [`DiskSpace::Faulty`] fails chosen operations, so tests reach the error
//! paths of a failed sync, a failed seal and a file system without
//! `fallocate` without needing a broken disk.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use rustix::io::Errno;

/// Decides whether a file operation may proceed.
#[derive(Debug, Clone, Default)]
pub enum DiskSpace {
    /// Ask the file system.
    #[default]
    Real,
    /// Refuse reservations past this many bytes in total (shared budget).
    Budget(Arc<AtomicUsize>),
    /// Fail the operations [`Faults`] names (shared, changeable live).
    Faulty(Arc<Faults>),
}

/// Faults to inject (tests). Counters count down: `failing_syncs = 1` fails
/// the next sync only.
#[derive(Debug, Default)]
pub struct Faults {
    /// Syncs (`fdatasync`) that fail with `EIO`.
    pub failing_syncs: AtomicU32,
    /// Length changes (`ftruncate`) that fail with `EIO`.
    pub failing_truncates: AtomicU32,
    /// Reservations (`fallocate`) that fail with `ENOSPC`.
    pub failing_reservations: AtomicU32,
    /// `fallocate` answers `EOPNOTSUPP`, as on FUSE, some NFS and older
    /// file systems.
    pub no_fallocate: AtomicBool,
}

/// Takes one from `counter` if it is positive: whether a fault fires.
fn fire(counter: &AtomicU32) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl DiskSpace {
    /// Before reserving `bytes` more.
    pub(super) fn take(&self, bytes: usize) -> io::Result<()> {
        match self {
            DiskSpace::Real => Ok(()),
            DiskSpace::Budget(left) => left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(bytes))
                .map(drop)
                .map_err(|_| errno(Errno::NOSPC)),
            DiskSpace::Faulty(f) if fire(&f.failing_reservations) => Err(errno(Errno::NOSPC)),
            DiskSpace::Faulty(_) => Ok(()),
        }
    }

    /// Before `fallocate`: `EOPNOTSUPP` when the simulated file system has
    /// none.
    pub(super) fn before_fallocate(&self) -> io::Result<()> {
        match self {
            DiskSpace::Faulty(f) if f.no_fallocate.load(Ordering::SeqCst) => Err(errno(Errno::OPNOTSUPP)),
            _ => Ok(()),
        }
    }

    /// Before a sync.
    pub(super) fn before_sync(&self) -> io::Result<()> {
        match self {
            DiskSpace::Faulty(f) if fire(&f.failing_syncs) => Err(errno(Errno::IO)),
            _ => Ok(()),
        }
    }

    /// Before a length change.
    pub(super) fn before_truncate(&self) -> io::Result<()> {
        match self {
            DiskSpace::Faulty(f) if fire(&f.failing_truncates) => Err(errno(Errno::IO)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_as_often_as_asked() {
        let faults = Arc::new(Faults::default());
        let disk = DiskSpace::Faulty(Arc::clone(&faults));
        disk.before_sync().unwrap();
        faults.failing_syncs.store(2, Ordering::SeqCst);
        assert_eq!(disk.before_sync().unwrap_err().raw_os_error(), Some(Errno::IO.raw_os_error()));
        assert!(disk.before_sync().is_err());
        disk.before_sync().unwrap();
        faults.no_fallocate.store(true, Ordering::SeqCst);
        assert_eq!(
            disk.before_fallocate().unwrap_err().raw_os_error(),
            Some(Errno::OPNOTSUPP.raw_os_error())
        );
        DiskSpace::Real.before_fallocate().unwrap();
    }
}
