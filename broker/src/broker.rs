//! The broker's shared state: configuration, topics, background tasks and
//! the shutdown signal. Handlers get an `Arc<Broker>`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clustering::ClusterHandle;
use crate::config::BrokerConfig;
use crate::errors::BrokerError;
use crate::groups::Coordinator;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::storage::{durable, LogConfig, StorageError};
use crate::topics::{LoadReport, Topic, Topics};

/// The data directory's format version: 2 = batches are Kafka's
/// RecordBatch v2 (docs/format.md). Version 1 (Sluice's first batch format)
/// is retired: such a directory is refused at start, with no upgrade.
pub const FORMAT_VERSION: u32 = 2;

/// `<data_dir>/meta.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    broker_id: u32,
    format_version: u32,
}

/// Shared broker state.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: BrokerConfig,
    /// Topics and partitions.
    pub topics: Topics,
    /// Consumer groups and committed offsets.
    pub groups: Coordinator,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled to stop: connections stop reading, long polls return.
    pub shutdown: CancellationToken,
    /// Background tasks (flushers, retention).
    tasks: TaskTracker,
    /// Start time.
    pub started: Instant,
    /// The data directory's exclusive lock, released by `close`.
    lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Cluster mode: the controller handle, set once at start; unset on a
    /// single-node broker.
    cluster: std::sync::OnceLock<Arc<ClusterHandle>>,
    /// The client listener's bound address, once bound.
    client_addr: std::sync::OnceLock<String>,
}

pub use crate::storage::now_ms;

/// Takes `<data_dir>/.lock` exclusively: two brokers on one data directory
/// would corrupt it.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, BrokerError> {
    let path = data_dir.join(".lock");
    let io = |op| {
        move |source| BrokerError::Storage(StorageError::Io { op, path: data_dir.join(".lock"), source })
    };
    durable::create_dir_durably(data_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| BrokerError::DataDirLocked { path: data_dir.to_owned() })?;
    Ok(file)
}

fn write_meta(path: &Path) -> Result<(), BrokerError> {
    let json = serde_json::to_vec_pretty(&Meta { broker_id: 0, format_version: FORMAT_VERSION })
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    Ok(durable::write_atomically(path, &json)?)
}

fn check_meta(data_dir: &Path) -> Result<(), BrokerError> {
    let path = data_dir.join("meta.json");
    let io = |op| {
        move |source| BrokerError::Storage(StorageError::Io { op, path: data_dir.join("meta.json"), source })
    };
    match std::fs::read_to_string(&path) {
        // An empty file is what an earlier version's unsynced write left
        // after a power loss: nothing was in it yet, so write it anew.
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(path = %path.display(), "meta.json is empty (an unsynced write before a power loss); rewriting it");
            write_meta(&path)
        }
        Ok(_) => check_format(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_meta(&path),
        Err(e) => Err(io("read")(e)),
    }
}

/// Checks, reading only, that `data_dir` holds [`FORMAT_VERSION`] (for
/// offline tools: `sluice verify`). A directory without a `meta.json`, or
/// with an empty one, passes: the broker writes it on its next start.
///
/// # Errors
/// `FormatMismatch` (saying what to do for the retired format 1),
/// `BadSettingsFile`, or the read's I/O error.
pub fn check_format(data_dir: &Path) -> Result<(), BrokerError> {
    let path = data_dir.join("meta.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(BrokerError::Storage(StorageError::Io { op: "read", path, source })),
    };
    if text.trim().is_empty() {
        return Ok(());
    }
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|source| BrokerError::BadSettingsFile { path: path.clone(), source })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(BrokerError::FormatMismatch {
            path,
            found: meta.format_version,
            expected: FORMAT_VERSION,
        });
    }
    Ok(())
}

impl Broker {
    /// Opens the data directory (recovering what needs it) and starts the
    /// background tasks.
    ///
    /// # Errors
    /// `InvalidConfig`; `DataDirLocked` when another broker uses the data
    /// directory; `FormatMismatch` or `BadSettingsFile` for a `meta.json`
    /// this broker cannot read; `Storage` when the directory, the offsets
    /// log or a topic listing cannot be opened.
    pub async fn open(
        config: BrokerConfig,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, LoadReport), BrokerError> {
        config.validate().map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let loader_metrics = Arc::clone(&metrics);
        let data_dir = config.data_dir.clone();
        // A clustered broker's committed offsets live in a replicated
        // internal topic (groups::offsets_topic), not in a local log.
        let clustered = config.node_id.is_some();
        let cancel = shutdown.child_token();
        let (lock, topics, groups, report) = tokio::task::spawn_blocking(move || {
            crate::fds::raise_limit();
            let lock = lock_data_dir(&data_dir)?;
            check_meta(&data_dir)?;
            // The offsets log first: topics take what descriptors are left.
            let groups = if clustered { Coordinator::clustered() } else { Coordinator::open(&data_dir)? };
            let (topics, report) = Topics::load(&data_dir, cancel, loader_metrics)?;
            groups.clamp_to_log_ends(&topics)?;
            groups.adopt_topic_ids(&topics)?;
            Ok::<_, BrokerError>((lock, topics, groups, report))
        })
        .await
        .map_err(|e| BrokerError::Internal(e.to_string()))??;
        if config.node_id.is_some() {
            // Nothing is served on its own before the controller says who leads.
            topics.set_clustered();
        }
        let broker = Arc::new(Self {
            config,
            topics,
            groups,
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
            started: Instant::now(),
            lock: std::sync::Mutex::new(Some(lock)),
            cluster: std::sync::OnceLock::new(),
            client_addr: std::sync::OnceLock::new(),
        });
        for topic in broker.topics.list() {
            broker.start_flushers(&topic);
        }
        broker.tasks.spawn(Arc::clone(&broker).run_retention());
        broker.tasks.spawn(Arc::clone(&broker).run_group_sweeper());
        Ok((broker, report))
    }

    /// The controller handle of a clustered broker; `None` on a single node.
    pub fn cluster(&self) -> Option<&Arc<ClusterHandle>> {
        self.cluster.get()
    }

    /// The address clients reach this broker at: `advertise` when set,
    /// else the client listener's bound address (the configured one until
    /// it is bound).
    pub fn client_addr(&self) -> String {
        if !self.config.advertise.is_empty() {
            return self.config.advertise.clone();
        }
        self.client_addr.get().cloned().unwrap_or_else(|| self.config.listen.clone())
    }

    /// Records the client listener's bound address (once, at start).
    pub fn set_client_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.client_addr.set(addr.to_string());
    }

    /// The address Kafka clients reach this broker's Kafka listener at, as
    /// registered in a cluster: `kafka_advertise` when set, else `bound`.
    pub fn kafka_advertised(&self, bound: Option<std::net::SocketAddr>) -> Option<String> {
        let bound = bound?;
        if self.config.kafka_advertise.is_empty() {
            Some(bound.to_string())
        } else {
            Some(self.config.kafka_advertise.clone())
        }
    }

    /// Makes this broker clustered (once, at start, before serving).
    pub fn set_cluster(&self, handle: Arc<ClusterHandle>) {
        let _ = self.cluster.set(handle);
    }

    fn start_flushers(&self, topic: &Topic) {
        for p in &topic.partitions {
            self.tasks.spawn(Arc::clone(p).run_flusher());
        }
    }

    /// The partition `index` of `topic` (auto-creating the topic when the
    /// broker allows it).
    ///
    /// # Errors
    /// `UnknownTopic` (when not auto-created), `UnknownPartition`, or what
    /// [`create_topic`](Self::create_topic) refuses.
    pub fn partition(&self, topic: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
        let t = match self.topics.get(topic) {
            Some(t) => t,
            // The controller has it, but no replica is here: ask its leader.
            None if self.cluster().is_some_and(|c| c.state().topics.contains_key(topic)) => {
                return Err(BrokerError::NotLeader { topic: topic.to_owned(), partition: index });
            }
            None if self.config.auto_create_topics && self.cluster().is_some() => {
                // Through the controller: the client retries meanwhile.
                self.auto_create_in_cluster(topic);
                return Err(BrokerError::UnknownTopic(topic.to_owned()));
            }
            None if self.config.auto_create_topics => {
                match self.create_topic(topic, self.config.default_partitions, &[]) {
                    Ok(t) => t,
                    Err(BrokerError::TopicAlreadyExists(_)) => {
                        self.topics.get(topic).ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => return Err(BrokerError::UnknownTopic(topic.to_owned())),
        };
        t.partitions.get(index as usize).cloned().ok_or_else(|| BrokerError::UnknownPartition {
            topic: topic.to_owned(),
            partition: index,
            count: t.partitions.len() as u32,
        })
    }

    /// Maps a storage error of `topic` to the broker's error: a log closed
    /// because its topic was deleted answers `UnknownTopic`.
    pub fn storage_error(&self, topic: &str, e: StorageError) -> BrokerError {
        match e {
            StorageError::Closed if self.topics.get(topic).is_none() => {
                BrokerError::UnknownTopic(topic.to_owned())
            }
            other => other.into(),
        }
    }

    /// Creates a topic with the broker's defaults overridden by `configs`.
    /// Blocking (creates files).
    ///
    /// # Errors
    /// `InvalidPartitions`, `InvalidTopicName`, `InvalidConfig`,
    /// `TopicAlreadyExists`, `OpenFileLimit`, or `Storage` when its files
    /// cannot be created.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<Arc<Topic>, BrokerError> {
        if self.cluster().is_some() {
            return Err(BrokerError::InvalidConfig(
                "a clustered broker creates topics through the controller only".into(),
            ));
        }
        let mut config = self.config.topic_defaults.clone();
        for (k, v) in configs {
            if k == "replication_factor" {
                single_copy(v)?;
                continue;
            }
            config.set(k, v).map_err(BrokerError::InvalidConfig)?;
        }
        self.create_topic_with(name, partitions, config, uuid::Uuid::new_v4())
    }

    /// Creates a topic with these settings and id (the reconcile loop's
    /// call in cluster mode). Blocking.
    ///
    /// # Errors
    /// As [`create_topic`](Self::create_topic).
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        config: LogConfig,
        id: uuid::Uuid,
    ) -> Result<Arc<Topic>, BrokerError> {
        if partitions == 0 || partitions > self.config.max_partitions {
            return Err(BrokerError::InvalidPartitions {
                count: partitions,
                max: self.config.max_partitions,
            });
        }
        let topic = self.topics.create_with_id(name, partitions, config, id)?;
        self.start_flushers(&topic);
        tracing::info!(topic = name, id = %topic.id(), partitions, "topic created");
        // Offsets of an earlier topic of this name are not this one's.
        self.groups.drop_stale_offsets(&self.topics, name)?;
        Ok(topic)
    }

    /// Proposes creating `name` with the defaults to the controller, in
    /// the background (auto-create on a clustered broker).
    fn auto_create_in_cluster(&self, name: &str) {
        let (Some(cluster), Ok(handle)) = (self.cluster(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let cluster = Arc::clone(cluster);
        let cmd = crate::cluster::state::Command::CreateTopic {
            name: name.to_owned(),
            partitions: self.config.default_partitions,
            replication_factor: cluster.settings.default_replication_factor,
            config: std::collections::BTreeMap::new(),
        };
        handle.spawn(async move {
            if let Err(e) = cluster.propose(cmd, |_, _| true).await {
                tracing::debug!(error = %e, "auto-creating a topic through the controller");
            }
        });
    }

    /// Grows topic `name` to `count` partitions (at most `max_partitions`)
    /// and starts the new partitions' flushers; returns the count before.
    /// Blocking (creates files).
    ///
    /// # Errors
    /// `InvalidPartitions` over the limit, else what
    /// [`Topics::add_partitions`](crate::topics::Topics::add_partitions) refuses.
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<u32, BrokerError> {
        if count > self.config.max_partitions {
            return Err(BrokerError::InvalidPartitions { count, max: self.config.max_partitions });
        }
        let (topic, old) = self.topics.add_partitions(name, count)?;
        for p in &topic.partitions[old as usize..] {
            self.tasks.spawn(Arc::clone(p).run_flusher());
        }
        tracing::info!(topic = name, old, new = count, "partitions added");
        Ok(old)
    }

    /// Deletes a topic, then its committed offsets (a crash in between is
    /// settled on the next start, see `groups::topic_ids`). Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`, or `Storage` when its files or its offsets cannot be
    /// removed.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.topics.delete(name)?;
        tracing::info!(topic = name, "topic deleted");
        self.groups.drop_stale_offsets(&self.topics, name)
    }

    /// Runs retention on every partition every `retention_check_interval_ms`.
    async fn run_retention(self: Arc<Self>) {
        let every = Duration::from_millis(self.config.retention_check_interval_ms);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let broker = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || broker.apply_retention()).await;
        }
    }

    /// Removes group members whose session expired, even in groups nobody
    /// else heartbeats in.
    async fn run_group_sweeper(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => self.groups.expire_all(),
            }
        }
    }

    /// One retention pass over every partition. Blocking.
    pub fn apply_retention(&self) {
        let now = now_ms();
        for topic in self.topics.list() {
            for p in &topic.partitions {
                if let Err(e) = p.log().apply_retention(now) {
                    tracing::error!(topic = %topic.name, partition = p.index, error = %e, "retention failed");
                }
            }
        }
    }

    /// Stops background tasks, flushes and closes every partition (writing
    /// clean-shutdown markers). Call after connections have drained.
    ///
    /// # Errors
    /// `Storage` when a partition or the offsets log fails its final flush.
    pub async fn close(self: &Arc<Self>) -> Result<(), BrokerError> {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let broker = Arc::clone(self);
        let closed = tokio::task::spawn_blocking(move || {
            let groups = broker.groups.close();
            broker.topics.close_all().and(groups)
        })
        .await
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
        // Only a closed broker lets another one open the data directory.
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
        closed
    }
}

/// A single-node broker keeps one copy of each partition.
fn single_copy(value: &str) -> Result<(), BrokerError> {
    match value.trim().parse::<i64>() {
        Ok(1 | -1) => Ok(()),
        _ => Err(BrokerError::InvalidReplicationFactor {
            asked: value.trim().parse().unwrap_or(0),
            why: "a single-node broker keeps one copy (start a cluster for more)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_1_data_directory_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.json"), r#"{"broker_id": 0, "format_version": 1}"#).unwrap();
        let err = check_meta(dir.path()).unwrap_err();
        assert_eq!(
            check_format(dir.path()).unwrap_err().to_string(),
            err.to_string(),
            "verify says the same"
        );
        assert!(matches!(err, BrokerError::FormatMismatch { found: 1, expected: 2, .. }), "{err:?}");
        let message = err.to_string();
        for part in
            [&dir.path().display().to_string(), "format 1", "retired", "Kafka RecordBatch v2", "move it away"]
        {
            assert!(message.contains(part), "`{part}` missing from: {message}");
        }
    }

    #[test]
    fn a_new_data_directory_gets_format_2() {
        let dir = tempfile::tempdir().unwrap();
        check_meta(dir.path()).unwrap();
        let meta: Meta =
            serde_json::from_slice(&std::fs::read(dir.path().join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta.format_version, 2);
        check_meta(dir.path()).unwrap();
    }
}
