//! The topic registry: topics and their partitions, persisted under
//! `<data_dir>/topics/<name>/` (`topic.json` plus one directory per
//! partition). Creation and deletion are atomic on disk: a topic is built
//! under a temporary name and renamed into place; a deleted topic is renamed
//! away before its files are removed. Temporary names contain `~`, which
//! topic names cannot, and are cleaned up on start.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::errors::BrokerError;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::storage::{DiskSpace, Log, LogConfig, RecoveryReport, StorageError};

/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 249;

/// Checks the topic naming rules: 1-249 characters of `[A-Za-z0-9._-]`,
/// not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let err = |reason| Err(BrokerError::InvalidTopicName { name: name.chars().take(300).collect(), reason });
    if name.is_empty() || name.len() > MAX_TOPIC_NAME {
        return err("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return err("must not be `.` or `..`");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return err("may only contain A-Z, a-z, 0-9, `.`, `_` and `-`");
    }
    Ok(())
}

/// `topic.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicFile {
    name: String,
    partitions: u32,
    config: LogConfig,
}

/// One topic.
#[derive(Debug)]
pub struct Topic {
    /// Name.
    pub name: Arc<str>,
    /// Directory.
    dir: PathBuf,
    /// Partitions in index order.
    pub partitions: Vec<Arc<Partition>>,
    /// Set when deleted: in-flight requests answer `UnknownTopic`.
    deleted: AtomicBool,
    /// Stops the partitions' flushers.
    cancel: CancellationToken,
}

impl Topic {
    /// Whether the topic was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The topic's settings (the same for every partition).
    pub fn config(&self) -> LogConfig {
        self.partitions.first().map(|p| p.config()).unwrap_or_default()
    }
}

/// What loading the topics found.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Topics opened.
    pub topics: usize,
    /// Partitions opened.
    pub partitions: usize,
    /// Partitions that needed recovery (no clean-shutdown marker).
    pub recovered: usize,
    /// Bytes cut from torn tails, over all partitions.
    pub truncated_bytes: usize,
    /// Time taken.
    pub duration: std::time::Duration,
}

/// All topics.
#[derive(Debug)]
pub struct Topics {
    /// `<data_dir>/topics`.
    dir: PathBuf,
    /// By name.
    map: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes create/delete/alter.
    admin: std::sync::Mutex<()>,
    /// Parent of every topic's cancellation token.
    cancel: CancellationToken,
    /// Metrics handed to partitions.
    metrics: Arc<Metrics>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> BrokerError + 'a {
    move |source| BrokerError::Storage(StorageError::Io { op, path: path.to_owned(), source })
}

fn write_topic_file(dir: &Path, file: &TopicFile) -> Result<(), BrokerError> {
    let path = dir.join("topic.json");
    let tmp = dir.join("topic.json~tmp");
    let json = serde_json::to_vec_pretty(file).map_err(|e| BrokerError::Internal(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(io("write", &path))
}

fn open_partitions(
    dir: &Path,
    name: &Arc<str>,
    count: u32,
    config: &LogConfig,
    cancel: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Result<(Vec<Arc<Partition>>, Vec<RecoveryReport>), BrokerError> {
    let mut partitions = Vec::with_capacity(count as usize);
    let mut reports = Vec::with_capacity(count as usize);
    for index in 0..count {
        let (log, report) = Log::open(&dir.join(index.to_string()), config.clone(), DiskSpace::Real)?;
        partitions.push(Arc::new(Partition::new(
            Arc::clone(name),
            index,
            log,
            cancel.child_token(),
            Arc::clone(metrics),
        )));
        reports.push(report);
    }
    Ok((partitions, reports))
}

/// A topic opened from disk, with its partitions' recovery reports.
type OpenedTopic = (Arc<Topic>, Vec<RecoveryReport>);

fn open_topic(
    path: &Path,
    file: &TopicFile,
    cancel: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Result<OpenedTopic, BrokerError> {
    let name: Arc<str> = file.name.as_str().into();
    let topic_cancel = cancel.child_token();
    let (partitions, reports) =
        open_partitions(path, &name, file.partitions, &file.config, &topic_cancel, metrics)?;
    let topic = Topic {
        name,
        dir: path.to_owned(),
        partitions,
        deleted: AtomicBool::new(false),
        cancel: topic_cancel,
    };
    Ok((Arc::new(topic), reports))
}

impl Topics {
    /// Opens every topic under `<data_dir>/topics`, recovering partitions
    /// that were not closed cleanly. Blocking.
    pub fn load(
        data_dir: &Path,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, LoadReport), BrokerError> {
        let started = Instant::now();
        let dir = data_dir.join("topics");
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains('~') {
                fs::remove_dir_all(entry.path()).map_err(io("remove", &entry.path()))?;
                continue;
            }
            let meta = entry.path().join("topic.json");
            let text = fs::read_to_string(&meta).map_err(io("read", &meta))?;
            let file: TopicFile = serde_json::from_str(&text)
                .map_err(|e| BrokerError::Internal(format!("{}: {e}", meta.display())))?;
            found.push((entry.path(), file));
        }
        // Open topics on a few threads: start-up time with thousands of
        // partitions is mostly file opens and maps.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let chunk = found.len().div_ceil(threads).max(1);
        let opened: Vec<Result<OpenedTopic, BrokerError>> = std::thread::scope(|s| {
            let handles: Vec<_> = found
                .chunks(chunk)
                .map(|group| {
                    let cancel = &cancel;
                    let metrics = &metrics;
                    s.spawn(move || {
                        group
                            .iter()
                            .map(|(path, file)| open_topic(path, file, cancel, metrics))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err(BrokerError::Internal("topic loader panicked".into()))])
                })
                .collect()
        });
        let mut map = HashMap::new();
        let mut report = LoadReport::default();
        for result in opened {
            let (topic, reports) = result?;
            report.topics += 1;
            report.partitions += reports.len();
            report.recovered += reports.iter().filter(|r| !r.clean).count();
            report.truncated_bytes += reports.iter().map(|r| r.truncated_bytes).sum::<usize>();
            map.insert(topic.name.to_string(), topic);
        }
        report.duration = started.elapsed();
        Ok((Self { dir, map: RwLock::new(map), admin: std::sync::Mutex::new(()), cancel, metrics }, report))
    }

    /// The topic named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.map.read().ok()?.get(name).cloned()
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.map.read().map(|m| m.values().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a topic. Blocking (creates files).
    pub fn create(&self, name: &str, partitions: u32, config: LogConfig) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        let _admin = self.admin.lock().map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
        if self.get(name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(name.to_owned()));
        }
        let staging = self.dir.join(format!("{name}~creating"));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).map_err(io("create", &staging))?;
        write_topic_file(&staging, &TopicFile { name: name.to_owned(), partitions, config: config.clone() })?;
        for index in 0..partitions {
            let p = staging.join(index.to_string());
            fs::create_dir(&p).map_err(io("create", &p))?;
        }
        let dir = self.dir.join(name);
        fs::rename(&staging, &dir).map_err(io("rename", &staging))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("sync", &self.dir))?;
        let name_arc: Arc<str> = name.into();
        let cancel = self.cancel.child_token();
        let (parts, _) = open_partitions(&dir, &name_arc, partitions, &config, &cancel, &self.metrics)?;
        let topic = Arc::new(Topic {
            name: name_arc,
            dir,
            partitions: parts,
            deleted: AtomicBool::new(false),
            cancel,
        });
        self.map
            .write()
            .map_err(|_| BrokerError::Internal("topic map poisoned".into()))?
            .insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Deletes a topic and its files. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
        let topic = self
            .map
            .write()
            .map_err(|_| BrokerError::Internal("topic map poisoned".into()))?
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        topic.deleted.store(true, Ordering::Release);
        topic.cancel.cancel();
        self.metrics.remove_topic(name, topic.partitions.len() as u32);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let gone = self.dir.join(format!("{name}~deleted-{nanos}"));
        fs::rename(&topic.dir, &gone).map_err(io("rename", &topic.dir))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("sync", &self.dir))?;
        for p in &topic.partitions {
            let _ = p.log().close();
        }
        fs::remove_dir_all(&gone).map_err(io("remove", &gone))
    }

    /// Changes a topic's settings (persisted, applied live). Blocking.
    pub fn alter(&self, name: &str, entries: &[(String, String)]) -> Result<LogConfig, BrokerError> {
        let _admin = self.admin.lock().map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
        let topic = self.get(name).ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        let mut config = topic.config();
        for (k, v) in entries {
            if k == "segment_preallocate_bytes" || k == "index_interval_bytes" {
                return Err(BrokerError::InvalidConfig(format!("`{k}` cannot change on a live topic")));
            }
            config.set(k, v).map_err(BrokerError::InvalidConfig)?;
        }
        let partitions = topic.partitions.len() as u32;
        write_topic_file(
            &topic.dir,
            &TopicFile { name: name.to_owned(), partitions, config: config.clone() },
        )?;
        for p in &topic.partitions {
            p.set_config(config.clone());
        }
        Ok(config)
    }

    /// Flushes and closes every partition (clean-shutdown markers), on a
    /// few threads so the syncs overlap. Blocking.
    pub fn close_all(&self) -> Result<(), BrokerError> {
        let partitions: Vec<Arc<Partition>> =
            self.list().iter().flat_map(|t| t.partitions.iter().cloned()).collect();
        let threads = 16.min(partitions.len().max(1));
        let chunk = partitions.len().div_ceil(threads).max(1);
        let errors: Vec<StorageError> = std::thread::scope(|s| {
            let handles: Vec<_> = partitions
                .chunks(chunk)
                .map(|group| s.spawn(move || group.iter().filter_map(close_partition).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        errors.into_iter().next().map_or(Ok(()), |e| Err(e.into()))
    }
}

fn close_partition(p: &Arc<Partition>) -> Option<StorageError> {
    let result = p.log().close();
    if let Err(e) = &result {
        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "close failed");
    }
    result.err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v2", "A_b-c", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", "a~b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_alter_reload_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (topics, _) = Topics::load(dir.path(), CancellationToken::new(), Arc::default()).unwrap();
        topics.create("t", 3, LogConfig::default()).unwrap();
        assert!(matches!(
            topics.create("t", 1, LogConfig::default()),
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        let altered = topics.alter("t", &[("retention_ms".into(), "5".into())]).unwrap();
        assert_eq!(altered.retention_ms, 5);
        assert!(topics.alter("t", &[("bogus".into(), "1".into())]).is_err());
        topics.close_all().unwrap();
        drop(topics);
        fs::create_dir_all(dir.path().join("topics/x~creating")).unwrap();
        let (topics, report) = Topics::load(dir.path(), CancellationToken::new(), Arc::default()).unwrap();
        assert_eq!((report.topics, report.partitions, report.recovered), (1, 3, 0));
        assert_eq!(topics.get("t").unwrap().config().retention_ms, 5);
        assert!(!dir.path().join("topics/x~creating").exists());
        topics.delete("t").unwrap();
        assert!(topics.get("t").is_none());
        assert_eq!(fs::read_dir(dir.path().join("topics")).unwrap().count(), 0);
        assert!(matches!(topics.delete("t"), Err(BrokerError::UnknownTopic(_))));
    }
}
