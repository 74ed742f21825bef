//! The replica manager: applies partition roles (starting and stopping
//! follower fetchers), holds the broker's lease, serves the replication
//! channel (`leader`), and runs the leaders' ISR check.
//!
//! Invariants: at most one fetcher per partition, for the role it was
//! started for (a role change stops it before another starts); at most one
//! ISR proposal in flight per partition; an ISR change takes effect only
//! after the controller accepted it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{fetcher, IsrChanger, NodeId, ReplicationConfig, Role};
use crate::partition::Partition;

/// Finds a local partition by topic and index.
pub type LookupFn = Arc<dyn Fn(&str, u32) -> Option<Arc<Partition>> + Send + Sync>;

type Key = (String, u32);

/// A running fetcher.
#[derive(Debug)]
struct Fetcher {
    role: Role,
    /// The partition it fetches for (a recreated topic is another one).
    partition: Weak<Partition>,
    cancel: CancellationToken,
}

/// Partition replication for one broker. See the module docs.
pub struct ReplicaManager {
    pub(super) cfg: ReplicationConfig,
    isr: Arc<dyn IsrChanger>,
    pub(super) lookup: LookupFn,
    /// The lease end (unix ms) every leader partition checks; `u64::MAX`
    /// until the first [`set_lease_until`](Self::set_lease_until).
    lease: Arc<AtomicU64>,
    fetchers: Mutex<HashMap<Key, Fetcher>>,
    /// Partitions this broker leads.
    led: Mutex<HashMap<Key, Weak<Partition>>>,
    /// ISR proposals in flight.
    proposing: Mutex<HashSet<Key>>,
    /// Stops the fetchers and the ISR check.
    pub(super) cancel: CancellationToken,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReplicaManager {
    /// A manager; starts its ISR check task (call inside a Tokio runtime).
    pub fn new(cfg: ReplicationConfig, isr: Arc<dyn IsrChanger>, lookup: LookupFn) -> Arc<Self> {
        let me = Arc::new(Self {
            cfg,
            isr,
            lookup,
            lease: Arc::new(AtomicU64::new(u64::MAX)),
            fetchers: Mutex::new(HashMap::new()),
            led: Mutex::new(HashMap::new()),
            proposing: Mutex::new(HashSet::new()),
            cancel: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&me);
        let (interval, cancel) = (me.cfg.isr_check_interval, me.cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let Some(me) = weak.upgrade() else { return };
                me.check_isr();
            }
        });
        me
    }

    /// This broker's node id.
    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// Applies `role` to `partition`: sets it, and starts, keeps or stops
    /// the follower's fetcher (a follower truncates by OffsetForLeaderEpoch
    /// before its first fetch). Becoming leader keeps the log.
    pub fn set_role(self: &Arc<Self>, partition: &Arc<Partition>, role: Role) {
        partition.attach_replication(self.cfg.node_id, Arc::clone(&self.lease));
        let key: Key = (partition.topic.to_string(), partition.index);
        let mut fetchers = lock(&self.fetchers);
        let keep = fetchers
            .get(&key)
            .is_some_and(|f| f.role == role && std::ptr::eq(f.partition.as_ptr(), Arc::as_ptr(partition)));
        if !keep {
            if let Some(old) = fetchers.remove(&key) {
                old.cancel.cancel();
            }
        }
        partition.set_role(role.clone());
        match &role {
            Role::Leader { .. } => {
                lock(&self.led).insert(key.clone(), Arc::downgrade(partition));
            }
            _ => {
                lock(&self.led).remove(&key);
            }
        }
        if let (Role::Follower { .. }, false) = (&role, keep) {
            let cancel = self.cancel.child_token();
            tokio::spawn(fetcher::run(Arc::clone(self), Arc::clone(partition), role.clone(), cancel.clone()));
            fetchers.insert(key, Fetcher { role, partition: Arc::downgrade(partition), cancel });
        }
    }

    /// Forgets a partition (its topic was deleted): stops its fetcher.
    pub fn forget(&self, topic: &str, partition: u32) {
        let key: Key = (topic.to_owned(), partition);
        if let Some(f) = lock(&self.fetchers).remove(&key) {
            f.cancel.cancel();
        }
        lock(&self.led).remove(&key);
    }

    /// Records this broker's lease end (the liveness loop's successful
    /// heartbeat): a leader whose lease lapsed refuses writes.
    pub fn set_lease_until(&self, unix_ms: u64) {
        self.lease.store(unix_ms, Ordering::Release);
    }

    /// Stops every fetcher and the ISR check.
    pub fn shutdown(&self) {
        self.cancel.cancel();
        lock(&self.fetchers).clear();
    }

    /// ISR shrinks the controller accepted from this broker.
    pub fn isr_shrinks(&self) -> u64 {
        self.cfg.isr_shrinks.get()
    }

    /// ISR expansions the controller accepted from this broker.
    pub fn isr_expands(&self) -> u64 {
        self.cfg.isr_expands.get()
    }

    /// Replication lag per follower of a partition this broker leads: how
    /// many offsets each is behind the log end (by its last fetch).
    pub fn follower_lag(&self, partition: &Partition) -> Vec<(NodeId, u64)> {
        let end = partition.log().log_end_offset();
        let mut lag: Vec<(NodeId, u64)> = partition
            .follower_progress()
            .into_iter()
            .map(|(id, f)| (id, end.saturating_sub(f.fetch_offset)))
            .collect();
        lag.sort_unstable();
        lag
    }

    /// One pass of the leaders' ISR check: proposes a shrink (followers not
    /// caught up for `replica_lag_time_max`) or else an expansion
    /// (replicas outside the ISR, caught up within that time, whose
    /// durable offset reached the high watermark) for each led partition
    /// with no proposal in flight.
    fn check_isr(self: &Arc<Self>) {
        let led: Vec<(Key, Arc<Partition>)> = {
            let mut led = lock(&self.led);
            led.retain(|_, p| p.strong_count() > 0);
            led.iter().filter_map(|(k, p)| Some((k.clone(), p.upgrade()?))).collect()
        };
        for (key, p) in led {
            let Role::Leader { epoch, replicas, isr, .. } = p.role() else { continue };
            let Some(new_isr) = self.isr_change(&p, &replicas, &isr) else { continue };
            if !lock(&self.proposing).insert(key.clone()) {
                continue;
            }
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.propose_isr(&p, epoch, &isr, new_isr).await;
                lock(&me.proposing).remove(&key);
            });
        }
    }

    fn isr_change(&self, p: &Partition, replicas: &[NodeId], isr: &[NodeId]) -> Option<Vec<NodeId>> {
        let (now, me, lag_max) = (Instant::now(), self.cfg.node_id, self.cfg.replica_lag_time_max);
        let progress = p.follower_progress();
        let lagging = |r: &NodeId| {
            *r != me && progress.get(r).is_none_or(|f| now.duration_since(f.last_caught_up) > lag_max)
        };
        if isr.iter().any(lagging) {
            return Some(isr.iter().copied().filter(|r| !lagging(r)).collect());
        }
        let hw = p.high_watermark();
        let end = p.log().log_end_offset();
        let rejoining: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|r| !isr.contains(r))
            .filter(|r| {
                progress.get(r).is_some_and(|f| {
                    let recent = now.duration_since(f.last_caught_up) <= lag_max;
                    f.fetched && recent && f.durable >= hw && f.fetch_offset >= hw.min(end)
                })
            })
            .collect();
        if rejoining.is_empty() {
            return None;
        }
        Some(replicas.iter().copied().filter(|r| isr.contains(r) || rejoining.contains(r)).collect())
    }

    async fn propose_isr(&self, p: &Arc<Partition>, epoch: u32, old: &[NodeId], new_isr: Vec<NodeId>) {
        let shrink = new_isr.len() < old.len();
        tracing::info!(topic = %p.topic, partition = p.index, epoch, from = ?old, to = ?new_isr, "proposing an ISR change");
        match self.isr.alter_isr(&p.topic, p.index, self.cfg.node_id, epoch, new_isr.clone()).await {
            Ok(()) => {
                let counter = if shrink { &self.cfg.isr_shrinks } else { &self.cfg.isr_expands };
                counter.inc();
                // Accepted by the controller: take effect now, unless the
                // role moved on meanwhile (the reconcile loop sends the
                // same ISR later anyway).
                if let Role::Leader { epoch: e, replicas, isr, min_insync_replicas } = p.role() {
                    if e == epoch && isr == old {
                        p.set_role(Role::Leader { epoch, replicas, isr: new_isr, min_insync_replicas });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(topic = %p.topic, partition = p.index, epoch, error = %e, "ISR change not made");
            }
        }
    }
}
