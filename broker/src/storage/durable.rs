//! Every durable file operation of the broker, in one place.
//!
//! A file's bytes are durable once the file is fsynced; its *name* is
//! durable once the directory holding it is fsynced (a create, rename or
//! unlink is a change of the directory). After a power loss, anything else
//! may be gone: a renamed file may be back under its old name, a new file
//! may not exist, a written file may be empty. So:
//!
//! - [`write_atomically`]: temp file, write, fsync, rename over the target,
//!   fsync the directory. Readers see the old contents or the new, never a
//!   torn or empty file, before and after a power loss.
//! - [`rename_durably`]: rename, then fsync the directories of both names.
//! - [`create_dir_durably`]: create a directory (and missing parents), then
//!   fsync each parent whose entries changed.
//! - [`remove_durably`]: unlink a file or a whole tree, then fsync its
//!   parent.
//! - [`sync_dir`]: fsync a directory (after creating files in it by other
//!   means, e.g. a new segment).
//!
//! Every file the broker depends on (`meta.json`, `topic.json`, checkpoints,
//! snapshots, the offsets-log switch, quarantine renames) goes through these.
//! They block: call them from blocking threads.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::files::TMP_SUFFIX;
use super::{io_error, StorageError};

/// Fsyncs the directory `dir`, making the names in it durable.
///
/// # Errors
/// `Io` when the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync directory", dir))
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The temporary name `path` is written under before it is renamed into
/// place: `<name>.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Replaces `path` with `contents` atomically and durably: written to a
/// temporary file beside it, fsynced, renamed over it, and the directory
/// fsynced. After a crash or power loss at any moment `path` holds either
/// its old contents (or does not exist, if it did not) or the new ones.
///
/// # Errors
/// `Io` (or `NoSpace`) when any step fails; `path` then still holds its old
/// contents, and a leftover temporary file may remain (harmless: the next
/// write replaces it).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    };
    write().map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename", &tmp))?;
    sync_dir(parent_of(path))
}

/// Renames `from` to `to` and makes the rename durable (both directories
/// fsynced; once when they are the same).
///
/// # Errors
/// `Io` when the rename or a directory sync fails.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).map_err(io_error("rename", from))?;
    let (a, b) = (parent_of(from), parent_of(to));
    sync_dir(b)?;
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// Creates `dir` and any missing parents, then fsyncs every directory whose
/// entries changed, so the whole chain survives a power loss. An existing
/// directory is fine (its parent is synced anyway: it may have been created
/// by a run that crashed before syncing it).
///
/// # Errors
/// `Io` when a directory cannot be created or synced.
pub fn create_dir_durably(dir: &Path) -> Result<(), StorageError> {
    // The deepest ancestor that already exists: everything below it is new.
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    // Sync the new directories (their entries) and the parent of each.
    for d in missing.iter().rev() {
        sync_dir(d)?;
    }
    sync_dir(parent_of(missing.last().map_or(dir, PathBuf::as_path)))
}

/// Removes the file or directory tree at `path` (nothing to do if it is
/// gone) and fsyncs its parent, so it stays removed after a power loss.
///
/// # Errors
/// `Io` when the removal or the directory sync fails.
pub fn remove_durably(path: &Path) -> Result<(), StorageError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(io_error("remove", path))?;
    sync_dir(parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomically_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
        // A stale temp file from a crashed write is simply overwritten.
        fs::write(temp_path(&path), b"garbage garbage").unwrap();
        write_atomically(&path, b"3").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"3");
    }

    #[test]
    fn dirs_create_rename_remove() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_durably(&deep).unwrap();
        create_dir_durably(&deep).unwrap(); // exists: fine
        assert!(deep.is_dir());
        write_atomically(&deep.join("f"), b"x").unwrap();
        let moved = dir.path().join("a/moved");
        rename_durably(&deep, &moved).unwrap();
        assert_eq!(fs::read(moved.join("f")).unwrap(), b"x");
        remove_durably(&dir.path().join("a")).unwrap();
        remove_durably(&dir.path().join("a")).unwrap(); // gone: fine
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_atomically(&dir.path().join("no/such/dir/f"), b"x").unwrap_err();
        assert!(e.to_string().contains("no/such/dir/f"), "{e}");
    }
}
