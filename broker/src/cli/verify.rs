//! `sluice verify`: checks a data directory offline (every partition log
//! and the committed offsets) and lists each problem: corrupt batches,
//! torn tails, index warnings, quarantined files. Exit 1 if any batch is
//! corrupt.
//!
//! A running broker holds `<data_dir>/.lock` (flock, exclusive) and is
//! still writing: its tails would look torn. `verify` takes the lock
//! shared for its whole run (a broker starting meanwhile is refused) and
//! refuses a locked directory unless `--allow-running`, when it says its
//! result may be stale.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::common::{print_json, say, CliError};
use crate::groups::store::generations;
use crate::storage::verify::verify_dir;

/// `verify --json` (fields in alphabetical order, as printed).
#[derive(Serialize)]
struct VerifyView {
    corrupt_batches: usize,
    good_batches: u64,
    partitions: usize,
    problems: Vec<ProblemView>,
}

/// One problem found in one partition log.
#[derive(Serialize)]
struct ProblemView {
    file: String,
    kind: &'static str,
    offset: Option<u64>,
    partition: String,
    position: u64,
    reason: String,
}

/// Every partition directory under `data_dir`, named `topic/partition`,
/// sorted, then the committed offsets' log if there is one.
fn logs(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, CliError> {
    let topics = data_dir.join("topics");
    if !topics.is_dir() {
        return Err(CliError::Usage(format!("{} is not a sluice data directory", data_dir.display())));
    }
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for topic in std::fs::read_dir(&topics)?.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        for part in std::fs::read_dir(topic.path())?.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            let name =
                format!("{}/{}", topic.file_name().to_string_lossy(), part.file_name().to_string_lossy());
            dirs.push((name, part.path()));
        }
    }
    dirs.sort();
    let offsets = generations::current_dir(&data_dir.join("groups"));
    if offsets.is_dir() {
        dirs.push(("(committed offsets)".into(), offsets));
    }
    Ok(dirs)
}

/// Verifies every log under `data_dir`.
fn check(data_dir: &Path) -> Result<VerifyView, CliError> {
    let dirs = logs(data_dir)?;
    let mut v =
        VerifyView { corrupt_batches: 0, good_batches: 0, partitions: dirs.len(), problems: Vec::new() };
    for (name, dir) in &dirs {
        let r = verify_dir(dir)?;
        v.good_batches += r.good_batches;
        v.corrupt_batches += r.corrupt.len();
        let kinds = [
            ("corrupt", &r.corrupt),
            ("torn tail", &r.torn),
            ("index", &r.index_warnings),
            ("quarantined", &r.quarantined),
        ];
        for (kind, list) in kinds {
            v.problems.extend(list.iter().map(|p| ProblemView {
                file: p.file.display().to_string(),
                kind,
                offset: p.offset,
                partition: name.clone(),
                position: p.position,
                reason: p.reason.clone(),
            }));
        }
    }
    Ok(v)
}

/// Verifies `data_dir` and prints what it found.
///
/// # Errors
/// A directory that is not a data directory, one of another format
/// version (the broker's `FormatMismatch`), one that cannot be read, or
/// corrupt batches ([`CliError::Usage`] naming how many).
pub fn run(data_dir: &Path, json: bool, allow_running: bool) -> Result<(), CliError> {
    let _lock = match lock(data_dir) {
        Ok(lock) => lock,
        Err(()) if allow_running => {
            eprintln!(
                "warning: {} is in use by a running broker: what it is writing may look torn or corrupt (stale result)",
                data_dir.display()
            );
            None
        }
        Err(()) => {
            return Err(CliError::Usage(format!(
                "{} is in use by a running broker (it holds {}); stop the broker first, \
                 or pass --allow-running for a result that may be stale",
                data_dir.display(),
                data_dir.join(".lock").display()
            )))
        }
    };
    // Batches of another format would all look corrupt: say what it is.
    crate::broker::check_format(data_dir)?;
    let v = check(data_dir)?;
    if json {
        print_json(&v)?;
    } else {
        for p in &v.problems {
            say!(
                "{} {}: {} at byte {}{}: {}",
                p.kind,
                p.partition,
                p.file,
                p.position,
                p.offset.map_or(String::new(), |o| format!(" (offset {o})")),
                p.reason,
            );
        }
        say!(
            "{} partition logs, {} good batches, {} corrupt",
            v.partitions,
            v.good_batches,
            v.corrupt_batches
        );
    }
    if v.corrupt_batches > 0 {
        return Err(CliError::Usage(format!("{} corrupt batch(es) found", v.corrupt_batches)));
    }
    Ok(())
}

/// Takes `<data_dir>/.lock` shared for as long as the returned file lives;
/// `Err` when a broker holds it, `Ok(None)` when there is no lock file.
fn lock(data_dir: &Path) -> Result<Option<std::fs::File>, ()> {
    let Ok(file) = std::fs::File::open(data_dir.join(".lock")) else {
        return Ok(None);
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(Some(file)),
        Err(_) => Err(()),
    }
}
