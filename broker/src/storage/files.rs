//! Every file name in a partition directory, formatted and parsed here only.
//!
//! ```text
//! <partition dir>/
//!     00000000000000000000.log          segment, named by its base offset (20 digits)
//!     00000000000000000000.index        sparse offset index
//!     00000000000000000000.timeindex    time index
//!     00000000000000000000.producers    idempotent-producer state as of that offset
//!     00000000000000000000.4096.corrupt bytes of segment 0 from position 4096 that
//!                                       recovery could not read (quarantined, never
//!                                       deleted by the broker)
//!     *.deleted                         a segment file being removed (retention)
//!     recovery-point                    last offset known flushed (checkpoint)
//!     recovery-point.tmp                a checkpoint being written
//!     clean-shutdown                    marker: the log was closed cleanly
//!     failed-sync                       a sync failed: durable only below this offset
//! ```

use std::path::{Path, PathBuf};

/// Suffix of segment data files.
pub const LOG_SUFFIX: &str = ".log";
/// Suffix of offset index files.
pub const INDEX_SUFFIX: &str = ".index";
/// Suffix of time index files.
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Suffix of producer-state snapshots.
pub const PRODUCERS_SUFFIX: &str = ".producers";
/// Suffix of quarantined bytes.
pub const CORRUPT_SUFFIX: &str = ".corrupt";
/// Suffix appended to a file scheduled for deletion.
pub const DELETED_SUFFIX: &str = ".deleted";
/// The recovery-point checkpoint.
pub const RECOVERY_POINT: &str = "recovery-point";
/// Suffix of a checkpoint being written.
pub const TMP_SUFFIX: &str = ".tmp";
/// Marker left by a clean close.
pub const CLEAN_SHUTDOWN: &str = "clean-shutdown";
/// Left by a failed sync: the offset the log is durable up to. Opening the
/// log cuts everything at or after it (the OS may keep pages it failed to
/// write in its cache, where they look valid but are not on disk).
pub const FAILED_SYNC: &str = "failed-sync";

/// The kind of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFile {
    /// `.log`
    Log,
    /// `.index`
    Index,
    /// `.timeindex`
    TimeIndex,
}

impl SegmentFile {
    /// Every kind, data file first.
    pub const ALL: [SegmentFile; 3] = [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex];

    fn suffix(self) -> &'static str {
        match self {
            SegmentFile::Log => LOG_SUFFIX,
            SegmentFile::Index => INDEX_SUFFIX,
            SegmentFile::TimeIndex => TIME_INDEX_SUFFIX,
        }
    }
}

/// `00000000000000001234.log` and friends.
pub fn segment_file_name(base_offset: u64, kind: SegmentFile) -> String {
    format!("{base_offset:020}{}", kind.suffix())
}

/// The path of a segment file in `dir`.
pub fn segment_path(dir: &Path, base_offset: u64, kind: SegmentFile) -> PathBuf {
    dir.join(segment_file_name(base_offset, kind))
}

/// `00000000000000001234.producers`: producer state as of that offset.
pub fn snapshot_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{PRODUCERS_SUFFIX}")
}

/// The producer-state snapshot as of `base_offset` in `dir`.
pub fn snapshot_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(snapshot_file_name(base_offset))
}

/// Where recovery keeps the bytes of segment `base_offset` from byte
/// `position` on that it could not read: `<base:020>.<position>.corrupt`.
pub fn quarantine_path(dir: &Path, base_offset: u64, position: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.{position}{CORRUPT_SUFFIX}"))
}

/// The path a segment file is renamed to before it is removed.
pub fn deleted_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(DELETED_SUFFIX);
    PathBuf::from(name)
}

/// What a file name in a partition directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileName {
    /// A live segment file.
    Segment(u64, SegmentFile),
    /// A producer-state snapshot as of this offset.
    ProducerSnapshot(u64),
    /// A file scheduled for deletion, or a temporary checkpoint.
    Leftover,
    /// Bytes recovery could not read, kept for the operator.
    Quarantined,
    /// The recovery-point checkpoint or the clean-shutdown marker.
    Control,
    /// Not ours.
    Unknown,
}

/// Classifies a file name.
pub fn parse(name: &str) -> FileName {
    if name.ends_with(DELETED_SUFFIX) || name.ends_with(TMP_SUFFIX) {
        return FileName::Leftover;
    }
    if name.ends_with(CORRUPT_SUFFIX) {
        return FileName::Quarantined;
    }
    if name == RECOVERY_POINT || name == CLEAN_SHUTDOWN || name == FAILED_SYNC {
        return FileName::Control;
    }
    let offset_named = |suffix: &str| {
        name.strip_suffix(suffix)
            .filter(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|stem| stem.parse::<u64>().ok())
    };
    for kind in SegmentFile::ALL {
        if let Some(base) = offset_named(kind.suffix()) {
            return FileName::Segment(base, kind);
        }
    }
    match offset_named(PRODUCERS_SUFFIX) {
        Some(base) => FileName::ProducerSnapshot(base),
        None => FileName::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in SegmentFile::ALL {
            for base in [0, 1234, u64::MAX] {
                assert_eq!(parse(&segment_file_name(base, kind)), FileName::Segment(base, kind));
            }
        }
        assert_eq!(segment_file_name(1234, SegmentFile::Log), "00000000000000001234.log");
        let snapshot = snapshot_path(Path::new("p"), 77);
        assert_eq!(snapshot, Path::new("p/00000000000000000077.producers"));
        assert_eq!(parse(&snapshot.file_name().unwrap().to_string_lossy()), FileName::ProducerSnapshot(77));
    }

    #[test]
    fn other_names() {
        assert_eq!(parse("00000000000000001234.log.deleted"), FileName::Leftover);
        assert_eq!(parse("recovery-point.tmp"), FileName::Leftover);
        let q = quarantine_path(Path::new("/d"), 5, 4096);
        assert_eq!(q, Path::new("/d/00000000000000000005.4096.corrupt"));
        assert_eq!(parse(&q.file_name().unwrap().to_string_lossy()), FileName::Quarantined);
        assert_eq!(parse(FAILED_SYNC), FileName::Control);
        assert_eq!(parse(RECOVERY_POINT), FileName::Control);
        assert_eq!(parse("1234.log"), FileName::Unknown);
        assert_eq!(parse("0000000000000000123x.log"), FileName::Unknown);
        assert_eq!(parse("99999999999999999999.log"), FileName::Unknown);
        assert_eq!(
            deleted_path(Path::new("/d/00000000000000000000.log")),
            PathBuf::from("/d/00000000000000000000.log.deleted")
        );
    }
}
