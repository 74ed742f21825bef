//! The topics directory on disk, named and written in one place.
//!
//! ```text
//! <data_dir>/topics/
//!     <name>/                    a topic (1-249 characters, no `~`)
//!         topic.json             {name, id, partitions, config}
//!         <partition>/           0, 1, ...: one log each
//!     ~creating-<id>/            a topic being built (id: 32 hex digits)
//!     ~deleted-<id>/             a topic being removed
//! ```
//!
//! Staging names are short and fixed-length whatever the topic's name (a
//! 249-character name plus a suffix would pass the 255-byte file-name
//! limit), and contain `~`, which topic names cannot: every entry with a
//! `~` is a leftover of an interrupted create or delete, removed on start.
//! `topic.json` is always replaced with `durable::write_atomically`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::errors::BrokerError;
use crate::storage::{durable, LogConfig};

/// The topic's settings file.
pub const TOPIC_FILE: &str = "topic.json";

/// `topic.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicFile {
    /// The topic's name (also its directory's name).
    pub name: String,
    /// The topic's id: a new one for every topic created, even under a
    /// reused name (KIP-516). Missing in files written before ids existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Partition count.
    pub partitions: u32,
    /// Settings.
    pub config: LogConfig,
}

/// What a staging directory is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// `~creating-<id>`.
    Creating,
    /// `~deleted-<id>`.
    Deleted,
}

/// The staging directory for topic `id` under `topics`.
pub fn staging_dir(topics: &Path, kind: Staging, id: Uuid) -> PathBuf {
    let prefix = match kind {
        Staging::Creating => "~creating-",
        Staging::Deleted => "~deleted-",
    };
    topics.join(format!("{prefix}{}", id.simple()))
}

/// Whether a `topics/` entry is a staging leftover rather than a topic.
pub fn is_staging(entry_name: &str) -> bool {
    entry_name.contains('~')
}

/// Writes `<dir>/topic.json` atomically and durably.
///
/// # Errors
/// `Storage` when the write fails (the old file is then intact).
pub fn write_topic_file(dir: &Path, file: &TopicFile) -> Result<(), BrokerError> {
    let json = serde_json::to_vec_pretty(file).map_err(|e| BrokerError::Internal(e.to_string()))?;
    Ok(durable::write_atomically(&dir.join(TOPIC_FILE), &json)?)
}

/// Reads `<dir>/topic.json`.
///
/// # Errors
/// `Storage` when it cannot be read, `BadSettingsFile` when it does not parse.
pub fn read_topic_file(dir: &Path) -> Result<TopicFile, BrokerError> {
    let path = dir.join(TOPIC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| {
        BrokerError::Storage(crate::storage::StorageError::Io { op: "read", path: path.clone(), source })
    })?;
    serde_json::from_str(&text).map_err(|source| BrokerError::BadSettingsFile { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_short_and_marked() {
        let id = Uuid::new_v4();
        for kind in [Staging::Creating, Staging::Deleted] {
            let dir = staging_dir(Path::new("t"), kind, id);
            let name = dir.file_name().unwrap().to_str().unwrap();
            assert!(is_staging(name) && name.len() <= 42, "{name}");
        }
        assert!(!is_staging(&"x".repeat(249)));
    }

    #[test]
    fn files_without_an_id_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TOPIC_FILE),
            serde_json::to_vec(
                &serde_json::json!({"name": "t", "partitions": 2, "config": LogConfig::default()}),
            )
            .unwrap(),
        )
        .unwrap();
        let file = read_topic_file(dir.path()).unwrap();
        assert_eq!((file.name.as_str(), file.id, file.partitions), ("t", None, 2));
    }
}
