//! Open-file accounting: every partition keeps files open (its active
//! segment's log, offset index and time index, [`FILES_PER_PARTITION`]), so
//! the number of partitions a broker can serve is bounded by
//! `RLIMIT_NOFILE`. At start the soft limit is raised to the hard limit
//! ([`raise_limit`]); before opening a topic the broker checks that its
//! partitions fit in what is left ([`Budget`]), keeping [`RESERVED`] files
//! for connections, the offsets log and the admin listener, so a topic too
//! big for the limit fails cleanly instead of exhausting descriptors
//! half-way (EMFILE in the middle of a create, or of the whole start-up).
//!
//! Callable from any thread; reading `/proc/self/fd` blocks briefly.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Files a partition holds open: its active segment's `.log`, `.index` and
/// `.timeindex`.
pub const FILES_PER_PARTITION: usize = 3;

/// Descriptors kept free for everything but partitions: client connections,
/// the offsets log, listeners, the files of a roll or a checkpoint.
pub const RESERVED: usize = 128;

/// Ceiling when the hard limit is unlimited (Linux's default `nr_open`).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The soft and hard `RLIMIT_NOFILE` before and after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Soft limit found at start (`None`: unlimited).
    pub soft_before: Option<u64>,
    /// Soft limit now.
    pub soft: Option<u64>,
    /// Hard limit.
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both. A
/// failure is logged and leaves the limit as it was.
pub fn raise_limit() -> Limits {
    let before = getrlimit(Resource::Nofile);
    let target = before.maximum.unwrap_or(UNLIMITED_TARGET);
    if before.current.is_some_and(|soft| soft < target) {
        let raised = Rlimit { current: Some(target), maximum: before.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(soft = ?before.current, hard = ?before.maximum, error = %e, "could not raise the open-files limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    let limits = Limits { soft_before: before.current, soft: now.current, hard: now.maximum };
    tracing::info!(
        soft_before = ?limits.soft_before,
        soft = ?limits.soft,
        hard = ?limits.hard,
        partitions = limits.soft.map(|s| (s as usize).saturating_sub(RESERVED) / FILES_PER_PARTITION),
        "open-files limit (RLIMIT_NOFILE); the partition figure is what it can hold open"
    );
    limits
}

/// Descriptors this process has open now (`None` where `/proc` is absent).
pub fn open_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

/// Descriptors that may still be opened for partitions: the soft limit less
/// what is open and [`RESERVED`] (`usize::MAX` when unknown or unlimited).
pub fn available() -> usize {
    match (getrlimit(Resource::Nofile).current, open_count()) {
        (Some(soft), Some(open)) => {
            usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(open).saturating_sub(RESERVED)
        }
        _ => usize::MAX,
    }
}

/// Descriptors `partitions` partitions need.
pub fn needed(partitions: u32) -> usize {
    (partitions as usize).saturating_mul(FILES_PER_PARTITION)
}

/// A shared allowance of descriptors that topics opened in parallel take
/// from (start-up).
#[derive(Debug)]
pub struct Budget(AtomicUsize);

impl Budget {
    /// What is [`available`] now.
    pub fn from_limit() -> Self {
        Self(AtomicUsize::new(available()))
    }

    /// Takes `files` descriptors; `Err` with what is left when they don't fit.
    pub fn take(&self, files: usize) -> Result<(), usize> {
        self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(files)).map(drop)
    }

    /// Gives back descriptors taken for a topic that failed to open.
    pub fn give_back(&self, files: usize) {
        self.0.fetch_add(files, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_keeps_the_hard_limit_and_budget_counts() {
        let limits = raise_limit();
        assert_eq!(limits.hard, getrlimit(Resource::Nofile).maximum);
        assert!(limits.soft >= limits.soft_before.min(limits.hard));
        assert!(open_count().unwrap() > 0);
        let budget = Budget(AtomicUsize::new(10));
        assert_eq!(budget.take(needed(3)), Ok(()));
        assert_eq!(budget.take(needed(1)), Err(1));
        budget.give_back(9);
        assert_eq!(budget.take(10), Ok(()));
    }
}
