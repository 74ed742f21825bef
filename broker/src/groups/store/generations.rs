//! Where the offsets log lives, and the one atomic step that switches it to
//! a compacted copy.
//!
//! ```text
//! <data_dir>/groups/
//!     offsets.current     the live generation's directory name (`offsets-7`),
//!                         replaced with durable::write_atomically: the switch
//!     offsets-<gen>/      one generation of the offsets log (gen >= 1)
//!     offsets/            generation 0: the log as written before generations
//!                         existed, live while `offsets.current` does not exist
//! ```
//!
//! Compaction builds generation `n + 1` beside the live one and closes it
//! (every byte and name synced), then replaces `offsets.current`; only then
//! is generation `n` removed. A crash before the pointer's rename leaves the
//! old generation live (the half-built one is removed on start); a crash
//! after it leaves the new one live (the old one is removed on start). No
//! state on the way has zero or two live logs.
//!
//! Earlier versions compacted by renaming `offsets` to `offsets~old` and
//! `offsets~compacting` to `offsets`; a crash between the two left no
//! `offsets`. [`live_dir`] undoes that half-done switch (the `~old` log is
//! complete) before anything else.
//!
//! Blocking; called only while the offsets store is opened (one thread).

use std::fs;
use std::path::{Path, PathBuf};

use crate::storage::durable::{remove_durably, rename_durably, write_atomically};
use crate::storage::{io_error, StorageError};

/// The pointer file's name.
const POINTER: &str = "offsets.current";
/// Generation 0's directory (and every generation's prefix).
const LEGACY: &str = "offsets";
/// The old two-rename compaction's names.
const OLD_COMPACTING: &str = "offsets~compacting";
const OLD_OLD: &str = "offsets~old";

/// The directory name of generation `generation`.
pub fn dir_name(generation: u64) -> String {
    if generation == 0 {
        LEGACY.to_owned()
    } else {
        format!("{LEGACY}-{generation}")
    }
}

/// The generation a directory name holds, if it names one.
pub fn parse_dir_name(name: &str) -> Option<u64> {
    if name == LEGACY {
        return Some(0);
    }
    let digits = name.strip_prefix("offsets-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|g| *g > 0)
}

/// The live generation: its number and directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Its number (0: the legacy `offsets` directory).
    pub number: u64,
    /// `<groups>/<dir_name(number)>`.
    pub dir: PathBuf,
}

impl Generation {
    fn new(groups: &Path, number: u64) -> Self {
        Self { number, dir: groups.join(dir_name(number)) }
    }
}

/// Finishes or undoes a half-done compaction of an earlier version.
fn repair_two_rename_compaction(groups: &Path) -> Result<(), StorageError> {
    let (live, old) = (groups.join(LEGACY), groups.join(OLD_OLD));
    if !live.exists() && old.exists() {
        tracing::warn!(dir = %old.display(), "an interrupted offsets-log compaction left no live log; restoring the previous one");
        rename_durably(&old, &live)?;
    }
    remove_durably(&old)?;
    remove_durably(&groups.join(OLD_COMPACTING))
}

/// Reads `offsets.current`: `None` when it does not exist.
fn read_pointer(groups: &Path) -> Result<Option<u64>, StorageError> {
    let path = groups.join(POINTER);
    match fs::read_to_string(&path) {
        Ok(text) => parse_dir_name(text.trim()).map(Some).ok_or_else(|| StorageError::Io {
            op: "parse",
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("`{}` names no offsets-log generation", text.trim()),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

/// Settles `<groups>` on one live generation and returns it: repairs an
/// old-style half compaction, follows `offsets.current`, and removes every
/// other generation (half-built or superseded). Creates `<groups>` when
/// missing. Blocking.
///
/// # Errors
/// `Io` when the directory cannot be read or a leftover removed, or when
/// `offsets.current` names no generation.
pub fn live_dir(groups: &Path) -> Result<Generation, StorageError> {
    crate::storage::durable::create_dir_durably(groups)?;
    let pointer = read_pointer(groups)?;
    if pointer.is_none() {
        repair_two_rename_compaction(groups)?;
    }
    let live = Generation::new(groups, pointer.unwrap_or(0));
    for entry in fs::read_dir(groups).map_err(io_error("list", groups))? {
        let entry = entry.map_err(io_error("list", groups))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if parse_dir_name(&name).is_some_and(|g| g != live.number) {
            tracing::info!(dir = %entry.path().display(), live = %live.dir.display(), "removing an offsets-log generation that is not live");
            remove_durably(&entry.path())?;
        }
    }
    Ok(live)
}

/// The live generation's directory as it is on disk, changing nothing (for
/// offline tools such as `sluice verify`): the one `offsets.current` names,
/// or the legacy `offsets`.
pub fn current_dir(groups: &Path) -> PathBuf {
    let name = read_pointer(groups).ok().flatten().map_or_else(|| LEGACY.to_owned(), dir_name);
    groups.join(name)
}

/// The generation compaction builds after `live`.
pub fn next(groups: &Path, live: &Generation) -> Generation {
    Generation::new(groups, live.number + 1)
}

/// Makes `to` the live generation in one atomic, durable step. `to` must be
/// complete and closed. Blocking.
///
/// # Errors
/// `Io` when the pointer cannot be written; the old generation stays live.
pub fn switch(groups: &Path, to: &Generation) -> Result<(), StorageError> {
    write_atomically(&groups.join(POINTER), format!("{}\n", dir_name(to.number)).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for g in [0, 1, 7, u64::MAX] {
            assert_eq!(parse_dir_name(&dir_name(g)), Some(g));
        }
        for bad in ["offsets-", "offsets-0", "offsets-x", "offsets~old", "offsets.current", "offsets-1.tmp"] {
            assert_eq!(parse_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn old_half_compaction_is_undone_or_finished() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dir.path();
        // Crash between the two renames: only `~old` (complete) and
        // `~compacting` remain.
        fs::create_dir_all(groups.join(OLD_OLD)).unwrap();
        fs::write(groups.join(OLD_OLD).join("marker"), b"old").unwrap();
        fs::create_dir_all(groups.join(OLD_COMPACTING)).unwrap();
        let live = live_dir(groups).unwrap();
        assert_eq!(live, Generation::new(groups, 0));
        assert_eq!(fs::read(live.dir.join("marker")).unwrap(), b"old");
        assert!(!groups.join(OLD_OLD).exists() && !groups.join(OLD_COMPACTING).exists());
        // Crash after both renames: `offsets` is the compacted log.
        fs::create_dir_all(groups.join(OLD_OLD)).unwrap();
        assert_eq!(live_dir(groups).unwrap().number, 0);
        assert_eq!(fs::read(live.dir.join("marker")).unwrap(), b"old");
        assert!(!groups.join(OLD_OLD).exists());
    }

    #[test]
    fn pointer_decides_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dir.path();
        for g in [0, 1, 2] {
            fs::create_dir_all(groups.join(dir_name(g))).unwrap();
        }
        switch(groups, &Generation::new(groups, 1)).unwrap();
        assert_eq!(live_dir(groups).unwrap().number, 1);
        assert!(!groups.join(dir_name(0)).exists() && !groups.join(dir_name(2)).exists());
        fs::write(groups.join(POINTER), b"bogus").unwrap();
        assert!(live_dir(groups).is_err());
    }
}
