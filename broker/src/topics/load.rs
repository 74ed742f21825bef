//! Opening `<data_dir>/topics` at start-up.
//!
//! One damaged topic must not keep the broker from serving the others: a
//! topic whose `topic.json` cannot be read, whose partitions do not fit in
//! the open-files limit, or whose partitions fail to open is logged, skipped
//! and reported ([`super::Topics::failed`], `sluice status`, `/ready`);
//! its files are left as they are. Only failing to list the directory
//! itself stops the start. Staging leftovers (`~…`) are removed durably.
//!
//! Blocking; runs once, before the broker serves.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::layout::{self, TopicFile};
use super::{open_topic, OpenedTopic};
use crate::errors::BrokerError;
use crate::fds;
use crate::metrics::Metrics;
use crate::storage::{durable, io_error};

/// A topic directory with its settings, to be opened.
#[derive(Debug)]
pub struct Found {
    /// `<topics>/<name>`.
    pub path: PathBuf,
    /// Its `topic.json` (with an id).
    pub file: TopicFile,
}

/// Topics that could not be loaded: directory name → why.
pub type Failed = BTreeMap<String, String>;

/// Reads one topic directory's settings, giving the topic an id (written
/// durably) when it has none.
fn read_found(path: &Path, dir_name: &str) -> Result<Found, BrokerError> {
    let mut file = layout::read_topic_file(path)?;
    if file.name != dir_name {
        return Err(BrokerError::TopicDirMismatch {
            path: path.join(layout::TOPIC_FILE),
            named: file.name,
            dir: dir_name.to_owned(),
        });
    }
    if file.id.is_none() {
        file.id = Some(Uuid::new_v4());
        layout::write_topic_file(path, &file)?;
        tracing::info!(topic = %file.name, id = ?file.id, "gave a topic written before topic ids an id");
    }
    Ok(Found { path: path.to_owned(), file })
}

/// Lists `<topics>`: removes staging leftovers, reads every topic's
/// settings; those that fail are returned apart.
///
/// # Errors
/// `Storage` when the directory cannot be created or listed.
pub fn scan(dir: &Path) -> Result<(Vec<Found>, Failed), BrokerError> {
    durable::create_dir_durably(dir)?;
    let (mut found, mut failed) = (Vec::new(), Failed::new());
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if layout::is_staging(&name) {
            if let Err(e) = durable::remove_durably(&entry.path()) {
                tracing::error!(path = %entry.path().display(), error = %e, "could not remove an interrupted create or delete");
            }
            continue;
        }
        match read_found(&entry.path(), &name) {
            Ok(f) => found.push(f),
            Err(e) => {
                tracing::error!(topic = %name, error = %e, "topic not loaded: its settings are unreadable");
                failed.insert(name, e.to_string());
            }
        }
    }
    found.sort_by(|a, b| a.file.name.cmp(&b.file.name));
    Ok((found, failed))
}

/// Opens one topic if its partitions fit in `budget`.
fn open_within(
    found: &Found,
    budget: &fds::Budget,
    cancel: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Result<OpenedTopic, BrokerError> {
    let needed = fds::needed(found.file.partitions);
    budget.take(needed).map_err(|available| BrokerError::OpenFileLimit {
        topic: found.file.name.clone(),
        partitions: found.file.partitions,
        needed,
        available,
    })?;
    let opened = open_topic(&found.path, &found.file, cancel, metrics);
    if opened.is_err() {
        budget.give_back(needed);
    }
    opened
}

/// Opens the topics on a few threads (start-up time with thousands of
/// partitions is mostly file opens and maps); returns those that opened and
/// adds those that did not to `failed`.
pub fn open_all(
    found: &[Found],
    failed: &mut Failed,
    cancel: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Vec<OpenedTopic> {
    let budget = fds::Budget::from_limit();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let chunk = found.len().div_ceil(threads).max(1);
    let results: Vec<(&Found, Result<OpenedTopic, BrokerError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = found
            .chunks(chunk)
            .map(|group| {
                let budget = &budget;
                s.spawn(move || {
                    group.iter().map(|f| (f, open_within(f, budget, cancel, metrics))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(found.chunks(chunk))
            .flat_map(|(h, group)| {
                h.join().unwrap_or_else(|_| {
                    group
                        .iter()
                        .map(|f| (f, Err(BrokerError::Internal("topic loader panicked".into()))))
                        .collect()
                })
            })
            .collect()
    });
    let mut opened = Vec::with_capacity(results.len());
    for (f, result) in results {
        match result {
            Ok(topic) => opened.push(topic),
            Err(e) => {
                tracing::error!(topic = %f.file.name, error = %e, "topic not loaded; serving the others");
                failed.insert(f.file.name.clone(), e.to_string());
            }
        }
    }
    opened
}
