//! The consumer's settings and `build`, which connects and starts the
//! tasks on the consumer's [`TaskTracker`], each stopped by its shutdown
//! token.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::routing::{parse_bootstrap, Router, RouterConfig};
use sluice_protocol::TopicPartition;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Consumer, Inner, OffsetReset, State};
use crate::error::ConsumerError;

/// Builds a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    pub(super) bootstrap: String,
    pub(super) client_id: String,
    pub(super) group: Option<String>,
    pub(super) topics: Vec<String>,
    pub(super) assignment: Vec<TopicPartition>,
    pub(super) offset_reset: OffsetReset,
    pub(super) start_offsets: HashMap<TopicPartition, u64>,
    pub(super) auto_commit: bool,
    pub(super) auto_commit_interval: Duration,
    pub(super) session_timeout: Duration,
    pub(super) fetch_max_wait: Duration,
    pub(super) fetch_max_bytes: u32,
    pub(super) prefetch: usize,
    pub(super) fetch_backoff: Duration,
    pub(super) fetch_backoff_max: Duration,
    pub(super) metadata_max_age: Duration,
}

impl Default for ConsumerBuilder {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9500".into(),
            client_id: "sluice-consumer".into(),
            group: None,
            topics: Vec::new(),
            assignment: Vec::new(),
            offset_reset: OffsetReset::Earliest,
            start_offsets: HashMap::new(),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            fetch_max_wait: Duration::from_millis(500),
            // Measured (docs/benchmarks.md): 2 MiB reads 100 B records 25%
            // faster than 8 MiB and 1 KiB records as fast, with a quarter of
            // the poll latency: each response is a fresh allocation the
            // records point into, and smaller ones are reused by the
            // allocator instead of being faulted in page by page.
            fetch_max_bytes: 2 << 20,
            prefetch: 4,
            fetch_backoff: Duration::from_millis(100),
            fetch_backoff_max: Duration::from_secs(1),
            metadata_max_age: Duration::from_secs(60),
        }
    }
}

impl ConsumerBuilder {
    /// Broker address, or several separated by commas, tried in order
    /// for metadata (default `127.0.0.1:9500`). Partitions are fetched
    /// from their leaders, which metadata names.
    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.bootstrap = addr.into();
        self
    }
    /// Several bootstrap addresses, tried in order (as `bootstrap` with
    /// them joined by commas).
    pub fn bootstrap_servers<S: AsRef<str>>(mut self, addrs: impl IntoIterator<Item = S>) -> Self {
        let addrs: Vec<String> = addrs.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.bootstrap = addrs.join(",");
        self
    }
    /// Partition leaders are refetched at least this often (default 60 s),
    /// and at once when a leader moved or could not be reached.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }
    /// Client id (default `sluice-consumer`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }
    /// The consumer group (needed to subscribe and to commit).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Topics to consume as a group member (the broker assigns partitions).
    pub fn subscribe<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }
    /// Partitions to read without group membership (a [`TopicPartition`]
    /// or a `(topic, partition)` pair each).
    pub fn assign<T: Into<TopicPartition>>(mut self, partitions: impl IntoIterator<Item = T>) -> Self {
        self.assignment = partitions.into_iter().map(Into::into).collect();
        self
    }
    /// Start of partitions without a committed offset (default earliest).
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }
    /// Where these partitions start when the group has no committed
    /// offset for them (instead of `auto_offset_reset`); a committed
    /// offset still wins. Each a [`TopicPartition`] or a `(topic,
    /// partition)` pair, with its offset.
    pub fn start_offsets<T: Into<TopicPartition>>(
        mut self,
        offsets: impl IntoIterator<Item = (T, u64)>,
    ) -> Self {
        self.start_offsets = offsets.into_iter().map(|(tp, o)| (tp.into(), o)).collect();
        self
    }
    /// Commit processed records automatically (default on, with a group).
    pub fn enable_auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }
    /// Auto-commit period (default 5 s).
    pub fn auto_commit_interval(mut self, every: Duration) -> Self {
        self.auto_commit_interval = every;
        self
    }
    /// Removed from the group after this long without a heartbeat (default 10 s).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }
    /// Longest a fetch waits for data (default 500 ms).
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }
    /// Bytes per fetch at most, shared by the assigned partitions (each
    /// gets at least 64 KiB, and at least one whole batch); default 2 MiB.
    pub fn fetch_max_bytes(mut self, bytes: u32) -> Self {
        self.fetch_max_bytes = bytes;
        self
    }
    /// First wait before refetching a partition whose fetch failed,
    /// doubled per consecutive failure with jitter (default 100 ms).
    pub fn fetch_backoff(mut self, wait: Duration) -> Self {
        self.fetch_backoff = wait;
        self
    }
    /// Longest wait before refetching a failing partition (default 1 s).
    pub fn fetch_backoff_max(mut self, wait: Duration) -> Self {
        self.fetch_backoff_max = wait;
        self
    }
    /// Fetch results buffered ahead of the application (default 4).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Connects, joins the group (when subscribing) and starts fetching.
    ///
    /// # Errors
    ///
    /// [`ConsumerError::Config`] for settings that cannot work (subscribing
    /// without a group, nothing to consume); [`ConsumerError::Client`] when
    /// the broker cannot be reached or cannot say where assigned partitions
    /// start.
    pub async fn build(self) -> Result<Consumer, ConsumerError> {
        if !self.topics.is_empty() && self.group.is_none() {
            return Err(ConsumerError::Config(
                "subscribe needs a group; use assign to read without one".into(),
            ));
        }
        if self.topics.is_empty() && self.assignment.is_empty() {
            return Err(ConsumerError::Config(
                "nothing to consume: subscribe to topics or assign partitions".into(),
            ));
        }
        let router = Router::new(RouterConfig {
            bootstrap: parse_bootstrap(&self.bootstrap),
            client_id: self.client_id.clone(),
            request_timeout: sluice_protocol::client::DEFAULT_REQUEST_TIMEOUT,
            max_request_bytes: usize::MAX,
            min_refresh: self.fetch_backoff,
        });
        router.connect_bootstrap().await?;
        let (tx, rx) = mpsc::channel(self.prefetch);
        let (events, _) = broadcast::channel(64);
        let mut config = self;
        config.fetch_backoff_max = config.fetch_backoff_max.max(config.fetch_backoff);
        let inner = Arc::new(Inner {
            config,
            router,
            state: Mutex::new(State::default()),
            chunks: tokio::sync::Mutex::new(rx),
            wake_fetcher: Notify::new(),
            wake_heartbeat: Notify::new(),
            revoking: Notify::new(),
            shutdown: CancellationToken::new(),
            events,
        });
        let tasks = TaskTracker::new();
        if inner.config.topics.is_empty() {
            inner.start_partitions(inner.config.assignment.clone()).await?;
        } else {
            spawn(&tasks, &inner.shutdown, Arc::clone(&inner).run_heartbeats());
        }
        spawn(&tasks, &inner.shutdown, Arc::clone(&inner).run_fetcher(tx));
        if inner.config.group.is_some() && inner.config.auto_commit {
            spawn(&tasks, &inner.shutdown, Arc::clone(&inner).run_auto_commit());
        }
        Ok(Consumer { inner, tasks })
    }
}

/// Runs `task` on `tasks` until it ends or `shutdown` is cancelled.
fn spawn(tasks: &TaskTracker, shutdown: &CancellationToken, task: impl Future<Output = ()> + Send + 'static) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move { shutdown.run_until_cancelled(task).await });
}
