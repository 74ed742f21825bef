//! The topic registry: topics and their partitions, persisted under
//! `<data_dir>/topics/<name>/` ([`layout`]: `topic.json` plus one directory
//! per partition). Creation is all-or-nothing: a topic is built under a
//! short staging name, renamed into place, and its partitions opened; any
//! failure removes it durably, leaving the name free. Deletion renames the
//! topic away (the one step that can fail leaves it intact) before closing
//! and removing it. Every topic has an id (`topic.json`), new for each
//! topic created, so a re-created topic is told apart from the deleted one
//! of the same name (its committed offsets do not carry over). Topics that
//! failed to load are kept apart ([`Topics::failed`]) and may be deleted.

mod grow;
mod layout;
mod load;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::errors::BrokerError;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::storage::{durable, DiskSpace, Log, LogConfig, RecoveryReport, StorageError};
use layout::TopicFile;

/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 249;

/// Checks the topic naming rules: 1-249 characters of `[A-Za-z0-9._-]`,
/// not `.` or `..`.
///
/// # Errors
/// `InvalidTopicName`, saying which rule the name breaks.
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

/// One topic.
#[derive(Debug)]
pub struct Topic {
    /// Id: new for every topic created, even under a reused name.
    id: Uuid,
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
    /// The topic's id (KIP-516): tells a re-created topic from the deleted
    /// one of the same name.
    pub fn id(&self) -> Uuid {
        self.id
    }

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
    /// Topics not loaded (damaged, or too many partitions for the
    /// open-files limit): name and why. The broker serves the others.
    pub failed: Vec<(String, String)>,
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
    /// Topics whose directory exists but which are not served, by
    /// directory name, with why (load failures; a create whose clean-up
    /// failed). They can be deleted; their names cannot be created.
    failed: RwLock<BTreeMap<String, String>>,
    /// Serializes create/delete/alter.
    admin: std::sync::Mutex<()>,
    /// Parent of every topic's cancellation token.
    cancel: CancellationToken,
    /// Metrics handed to partitions.
    metrics: Arc<Metrics>,
    /// A clustered broker's: every partition starts fenced (see
    /// [`Partition::fence`]) until the controller's role reaches it.
    clustered: AtomicBool,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> BrokerError + 'a {
    move |source| BrokerError::Storage(StorageError::Io { op, path: path.to_owned(), source })
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
    let id = file.id.ok_or_else(|| BrokerError::Internal(format!("topic `{name}` has no id")))?;
    let topic_cancel = cancel.child_token();
    let (partitions, reports) =
        open_partitions(path, &name, file.partitions, &file.config, &topic_cancel, metrics)?;
    let topic = Topic {
        id,
        name,
        dir: path.to_owned(),
        partitions,
        deleted: AtomicBool::new(false),
        cancel: topic_cancel,
    };
    Ok((Arc::new(topic), reports))
}

fn poisoned(what: &str) -> BrokerError {
    BrokerError::Internal(format!("{what} poisoned"))
}

impl Topics {
    /// Opens every topic under `<data_dir>/topics`, recovering partitions
    /// that were not closed cleanly. A topic that cannot be opened is
    /// skipped and reported (`LoadReport::failed`, [`Self::failed`]).
    /// Blocking.
    ///
    /// # Errors
    /// `Storage` when the topics directory cannot be created or listed.
    pub fn load(
        data_dir: &Path,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, LoadReport), BrokerError> {
        let started = Instant::now();
        let dir = data_dir.join("topics");
        let (found, mut failed) = load::scan(&dir)?;
        let opened = load::open_all(&found, &mut failed, &cancel, &metrics);
        let mut map = HashMap::new();
        let mut report = LoadReport::default();
        for (topic, reports) in opened {
            report.topics += 1;
            report.partitions += reports.len();
            report.recovered += reports.iter().filter(|r| !r.clean).count();
            report.truncated_bytes += reports.iter().map(|r| r.truncated_bytes).sum::<usize>();
            map.insert(topic.name.to_string(), topic);
        }
        report.failed = failed.iter().map(|(n, why)| (n.clone(), why.clone())).collect();
        report.duration = started.elapsed();
        let topics = Self {
            dir,
            map: RwLock::new(map),
            failed: RwLock::new(failed),
            admin: std::sync::Mutex::new(()),
            cancel,
            metrics,
            clustered: AtomicBool::new(false),
        };
        Ok((topics, report))
    }

    /// Makes this a clustered broker's registry (at open, before serving):
    /// every partition, loaded or created later, is fenced until the
    /// reconcile loop gives it the controller's role (see [`Partition::fence`]).
    pub fn set_clustered(&self) {
        self.clustered.store(true, Ordering::Release);
        for topic in self.list() {
            topic.partitions.iter().for_each(|p| p.fence());
        }
    }

    /// Fences `partitions` on a clustered broker (see [`set_clustered`](Self::set_clustered)).
    fn fence_if_clustered(&self, partitions: &[Arc<Partition>]) {
        if self.clustered.load(Ordering::Acquire) {
            partitions.iter().for_each(|p| p.fence());
        }
    }

    /// Topics on disk that are not served (they failed to load), with why.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.failed
            .read()
            .map(|f| f.iter().map(|(n, w)| (n.clone(), w.clone())).collect())
            .unwrap_or_default()
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

    /// Creates a topic, all or nothing: on any failure (the open-files
    /// limit included) nothing is left on disk and the name stays free.
    /// Blocking (creates files).
    ///
    /// # Errors
    /// `InvalidTopicName`, `TopicAlreadyExists` (also for a topic on disk
    /// that failed to load: delete it first), `OpenFileLimit`, `Storage`.
    pub fn create(&self, name: &str, partitions: u32, config: LogConfig) -> Result<Arc<Topic>, BrokerError> {
        self.create_with_id(name, partitions, config, Uuid::new_v4())
    }

    /// As [`create`](Self::create), with the topic's id given (a clustered
    /// broker's reconcile loop derives it from the controller's topic id,
    /// so every replica's topic has the same one).
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_with_id(
        &self,
        name: &str,
        partitions: u32,
        config: LogConfig,
        id: Uuid,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        let _admin = self.admin.lock().map_err(|_| poisoned("admin lock"))?;
        let dir = self.dir.join(name);
        if self.get(name).is_some() || dir.exists() {
            return Err(BrokerError::TopicAlreadyExists(name.to_owned()));
        }
        let (needed, available) = (crate::fds::needed(partitions), crate::fds::available());
        if needed > available {
            return Err(BrokerError::OpenFileLimit { topic: name.to_owned(), partitions, needed, available });
        }
        let file = TopicFile { name: name.to_owned(), id: Some(id), partitions, config };
        let staging = layout::staging_dir(&self.dir, layout::Staging::Creating, id);
        let built = Self::build(&staging, &file).and_then(|()| Ok(durable::rename_durably(&staging, &dir)?));
        // On failure its partitions are closed (dropped) before the undo.
        let topic = match built.and_then(|()| open_topic(&dir, &file, &self.cancel, &self.metrics)) {
            Ok((topic, _)) => topic,
            Err(e) => {
                self.undo_create(name, id, &staging);
                return Err(e);
            }
        };
        self.fence_if_clustered(&topic.partitions);
        self.map.write().map_err(|_| poisoned("topic map"))?.insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Writes a new topic's directory under `staging`: settings, partition
    /// directories, every name synced.
    fn build(staging: &Path, file: &TopicFile) -> Result<(), BrokerError> {
        durable::create_dir_durably(staging)?;
        layout::write_topic_file(staging, file)?;
        for index in 0..file.partitions {
            let p = staging.join(index.to_string());
            fs::create_dir(&p).map_err(io("create", &p))?;
        }
        Ok(durable::sync_dir(staging)?)
    }

    /// Takes away whatever a failed create of `name` left: the topic's
    /// directory (renamed away first, so a crash cannot bring it back
    /// half-removed) and the staging directory.
    fn undo_create(&self, name: &str, id: Uuid, staging: &Path) {
        let dir = self.dir.join(name);
        if dir.exists() {
            let gone = layout::staging_dir(&self.dir, layout::Staging::Deleted, id);
            if durable::rename_durably(&dir, &gone).is_ok() || !dir.exists() {
                self.discard(name, &gone);
            } else {
                self.discard(name, &dir);
            }
        }
        self.discard(name, staging);
    }

    /// Removes what a failed create left at `path`; if even that fails, the
    /// topic is recorded as failed (deletable) and removed on the next start
    /// when `path` is a staging name.
    fn discard(&self, name: &str, path: &Path) {
        if let Err(e) = durable::remove_durably(path) {
            tracing::error!(topic = name, path = %path.display(), error = %e, "could not remove a failed topic creation");
            if path == self.dir.join(name) {
                if let Ok(mut failed) = self.failed.write() {
                    failed.insert(name.to_owned(), format!("creation failed and was not cleaned up: {e}"));
                }
            }
        }
    }

    /// Deletes a topic and its files (also a topic that failed to load).
    /// Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`; `Storage` when the topic could not be renamed away
    /// (it is then intact and still served).
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().map_err(|_| poisoned("admin lock"))?;
        let Some(topic) = self.get(name) else {
            return self.delete_failed(name);
        };
        let gone = layout::staging_dir(&self.dir, layout::Staging::Deleted, topic.id);
        if let Err(e) = durable::rename_durably(&topic.dir, &gone) {
            if topic.dir.exists() {
                return Err(e.into());
            }
            tracing::warn!(topic = name, error = %e, "topic renamed away, but the rename may not be durable yet");
        }
        self.map.write().map_err(|_| poisoned("topic map"))?.remove(name);
        topic.deleted.store(true, Ordering::Release);
        topic.cancel.cancel();
        self.metrics.remove_topic(name, topic.partitions.len() as u32);
        for p in &topic.partitions {
            let _ = p.log().close();
        }
        Ok(durable::remove_durably(&gone)?)
    }

    /// Deletes the files of a topic that failed to load.
    fn delete_failed(&self, name: &str) -> Result<(), BrokerError> {
        let mut failed = self.failed.write().map_err(|_| poisoned("failed topics"))?;
        let dir = self.dir.join(name);
        if validate_topic_name(name).is_err() || !failed.contains_key(name) || !dir.exists() {
            failed.remove(name);
            return Err(BrokerError::UnknownTopic(name.to_owned()));
        }
        let gone = layout::staging_dir(&self.dir, layout::Staging::Deleted, Uuid::new_v4());
        durable::rename_durably(&dir, &gone)?;
        failed.remove(name);
        Ok(durable::remove_durably(&gone)?)
    }

    /// Changes a topic's settings (persisted, applied live). Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`, `InvalidConfig`, or `Storage` when `topic.json`
    /// cannot be written.
    pub fn alter(&self, name: &str, entries: &[(String, String)]) -> Result<LogConfig, BrokerError> {
        let _admin = self.admin.lock().map_err(|_| poisoned("admin lock"))?;
        let topic = self.get(name).ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        let mut config = topic.config();
        for (k, v) in entries {
            if k == "segment_preallocate_bytes" || k == "index_interval_bytes" {
                return Err(BrokerError::InvalidConfig(format!("`{k}` cannot change on a live topic")));
            }
            config.set(k, v).map_err(BrokerError::InvalidConfig)?;
        }
        let partitions = topic.partitions.len() as u32;
        layout::write_topic_file(
            &topic.dir,
            &TopicFile { name: name.to_owned(), id: Some(topic.id), partitions, config: config.clone() },
        )?;
        for p in &topic.partitions {
            p.set_config(config.clone());
        }
        Ok(config)
    }

    /// Flushes and closes every partition (clean-shutdown markers), on a
    /// few threads so the syncs overlap. Blocking.
    ///
    /// # Errors
    /// The first partition's failure to flush (every partition is still
    /// closed).
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
        fs::create_dir_all(dir.path().join("topics/~creating-0123")).unwrap();
        let (topics, report) = Topics::load(dir.path(), CancellationToken::new(), Arc::default()).unwrap();
        assert_eq!((report.topics, report.partitions, report.recovered), (1, 3, 0));
        assert_eq!(topics.get("t").unwrap().config().retention_ms, 5);
        assert!(!dir.path().join("topics/~creating-0123").exists());
        topics.delete("t").unwrap();
        assert!(topics.get("t").is_none());
        assert_eq!(fs::read_dir(dir.path().join("topics")).unwrap().count(), 0);
        assert!(matches!(topics.delete("t"), Err(BrokerError::UnknownTopic(_))));
    }

    fn load(dir: &Path) -> (Topics, LoadReport) {
        Topics::load(dir, CancellationToken::new(), Arc::default()).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir.join("topics"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    /// Regression (issue #13 item 12): the longest valid name can be
    /// created, deleted and re-created, and stays deleted or created across
    /// restarts (staging names no longer append to the topic's name).
    #[test]
    fn longest_name_creates_deletes_and_recreates_durably() {
        let dir = tempfile::tempdir().unwrap();
        let name = "n".repeat(MAX_TOPIC_NAME);
        let (topics, _) = load(dir.path());
        let first = topics.create(&name, 2, LogConfig::default()).unwrap().id();
        topics.delete(&name).unwrap();
        drop(topics);
        let (topics, report) = load(dir.path());
        assert_eq!((report.topics, report.failed.len()), (0, 0));
        assert!(entries(dir.path()).is_empty());
        let second = topics.create(&name, 2, LogConfig::default()).unwrap().id();
        assert_ne!(first, second);
        topics.close_all().unwrap();
        drop(topics);
        let (topics, report) = load(dir.path());
        assert_eq!((report.topics, report.partitions), (1, 2));
        assert_eq!(topics.get(&name).unwrap().id(), second);
        topics.delete(&name).unwrap();
        assert!(entries(dir.path()).is_empty());
    }

    /// Regression (issue #13 item 10): a create whose partitions fail to
    /// open leaves nothing behind, and the name can be created again.
    #[test]
    fn a_failed_create_leaves_nothing_and_frees_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let (topics, _) = load(dir.path());
        // Address space no machine has: the segment map fails.
        let unmappable = LogConfig { segment_bytes: 1 << 62, ..LogConfig::default() };
        assert!(topics.create("big", 4, unmappable).is_err());
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
        assert!(topics.get("big").is_none());
        topics.create("big", 4, LogConfig::default()).unwrap();
        // Twice what is free now: other tests in this process open and close
        // files meanwhile, so "just over" could be under the limit by the
        // time `create` looks (and would then create that many partitions).
        let twice = crate::fds::available().saturating_mul(2) / crate::fds::FILES_PER_PARTITION + 1;
        if let Ok(too_many) = u32::try_from(twice) {
            assert!(matches!(
                topics.create("huge", too_many, LogConfig::default()),
                Err(BrokerError::OpenFileLimit { .. })
            ));
        }
        assert_eq!(entries(dir.path()), ["big"]);
    }

    /// Regression (issue #13 item 10): a damaged topic is skipped and
    /// reported; the others load; the damaged one can be deleted, and its
    /// name created again.
    #[test]
    fn a_damaged_topic_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (topics, _) = load(dir.path());
        topics.create("good", 1, LogConfig::default()).unwrap();
        topics.create("bad", 1, LogConfig::default()).unwrap();
        topics.close_all().unwrap();
        drop(topics);
        fs::write(dir.path().join("topics/bad/topic.json"), b"{ torn").unwrap();
        let (topics, report) = load(dir.path());
        assert_eq!(report.topics, 1);
        assert_eq!(report.failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["bad"]);
        assert_eq!(topics.failed().len(), 1);
        assert!(topics.get("good").is_some());
        assert!(matches!(
            topics.create("bad", 1, LogConfig::default()),
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        topics.delete("bad").unwrap();
        assert!(topics.failed().is_empty());
        topics.create("bad", 1, LogConfig::default()).unwrap();
    }

    /// Topics written before ids get one, durably, that stays the same.
    #[test]
    fn topics_without_ids_get_one_once() {
        let dir = tempfile::tempdir().unwrap();
        let (topics, _) = load(dir.path());
        topics.create("old", 1, LogConfig::default()).unwrap();
        topics.close_all().unwrap();
        drop(topics);
        let path = dir.path().join("topics/old");
        let mut file = layout::read_topic_file(&path).unwrap();
        file.id = None;
        layout::write_topic_file(&path, &file).unwrap();
        let (topics, _) = load(dir.path());
        let id = topics.get("old").unwrap().id();
        assert_eq!(layout::read_topic_file(&path).unwrap().id, Some(id));
        topics.close_all().unwrap();
        drop(topics);
        assert_eq!(load(dir.path()).0.get("old").unwrap().id(), id);
    }
}
