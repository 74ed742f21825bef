//! Leader routing for the producer and the consumer: a [`MetadataCache`]
//! (topic → partitions → leader and epoch; broker id → address) and a
//! [`Router`] that keeps it fresh and one lazily opened [`Connection`] per
//! broker.
//!
//! - **Bootstrap**: metadata is asked of a broker already connected, else
//!   of the bootstrap addresses in order (the first reachable one
//!   answers), else of the other brokers metadata named.
//! - **The answering broker**: a broker whose metadata does not list
//!   itself (a single node) is taken as node `node_id` at the address it
//!   was reached at, and the connection that asked is kept as its
//!   connection (so a single node costs one connection, as before).
//! - **Epochs**: a partition's route never goes back to an older leader
//!   epoch than the cache holds (a lagging broker's answer).
//! - **Staleness**: the cache is refreshed when older than the caller's
//!   `metadata_max_age`, or at once after [`Router::report`] was told of a
//!   routing error (`NOT_LEADER_OR_FOLLOWER`, `FENCED_LEADER_EPOCH`,
//!   unknown topic or partition) or of a broker that could not be reached;
//!   refreshes are at least `min_refresh` apart.
//! - **Group coordinator**: the leader of partition 0 of the cluster's
//!   offsets topic ([`OFFSETS_TOPIC`], asked for by name); where metadata
//!   has no such topic (a single node), the lowest node id not found
//!   unreachable. A `NotCoordinator` answer or a lost connection makes
//!   the next group request look it up again.
//!
//! Looking a route up takes two short mutex holds and no allocation, so a
//! caller may do it per batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::api::{MetadataRequest, MetadataResponse, OFFSETS_TOPIC};
use crate::client::{ClientError, Connection};
use crate::ErrorCode;

/// Where one partition is led from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The leader's node id; `None` while the partition is offline.
    pub leader: Option<u64>,
    /// The leader epoch the route was learnt at.
    pub epoch: u32,
}

/// What a client knows of the cluster: brokers and partition leaders.
#[derive(Debug, Default, Clone)]
pub struct MetadataCache {
    brokers: HashMap<u64, String>,
    topics: HashMap<String, Vec<Route>>,
    fetched: Option<Instant>,
    stale: bool,
    unreachable: HashSet<u64>,
}

impl MetadataCache {
    /// Learns a metadata response that the broker at `answered_at` gave
    /// (see the module doc for a broker that does not list itself).
    pub fn update(&mut self, resp: &MetadataResponse, answered_at: &str, now: Instant) {
        if !resp.brokers.is_empty() {
            self.brokers = resp.brokers.iter().map(|b| (b.id, b.addr.clone())).collect();
        }
        self.brokers.entry(resp.node_id).or_insert_with(|| answered_at.to_owned());
        for t in &resp.topics {
            if t.error_code == ErrorCode::UnknownTopic {
                self.topics.remove(&t.name);
                continue;
            }
            if t.error_code != ErrorCode::None {
                continue;
            }
            let old = self.topics.remove(&t.name).unwrap_or_default();
            let mut routes = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let index = p.partition as usize;
                if routes.len() <= index {
                    routes.resize(index + 1, Route { leader: None, epoch: 0 });
                }
                let new = Route { leader: u64::try_from(p.leader).ok(), epoch: p.leader_epoch };
                routes[index] = match old.get(index) {
                    Some(kept) if kept.epoch > new.epoch => *kept,
                    _ => new,
                };
            }
            self.topics.insert(t.name.clone(), routes);
        }
        self.fetched = Some(now);
        self.stale = false;
        self.unreachable.clear();
    }

    /// The route of a partition, if known.
    pub fn route(&self, topic: &str, partition: u32) -> Option<Route> {
        self.topics.get(topic)?.get(partition as usize).copied()
    }

    /// The leader of a partition, if known and online.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<u64> {
        self.route(topic, partition)?.leader
    }

    /// A broker's address.
    pub fn addr(&self, id: u64) -> Option<&str> {
        self.brokers.get(&id).map(String::as_str)
    }

    /// Every known broker, by id.
    pub fn brokers(&self) -> Vec<(u64, String)> {
        let mut all: Vec<_> = self.brokers.iter().map(|(id, a)| (*id, a.clone())).collect();
        all.sort_unstable();
        all
    }

    /// Where group requests go: the leader of the offsets topic's
    /// partition 0 (`None` while it has none), or, where there is no such
    /// topic (a single node), the lowest node id not found unreachable
    /// since the last refresh.
    pub fn group_coordinator(&self) -> Option<u64> {
        match self.topics.get(OFFSETS_TOPIC) {
            Some(routes) => routes.first().and_then(|r| r.leader),
            None => self.brokers.keys().copied().filter(|id| !self.unreachable.contains(id)).min(),
        }
    }

    /// Whether the cache should be refetched: never fetched, older than
    /// `max_age`, or marked stale.
    pub fn needs_refresh(&self, now: Instant, max_age: Duration) -> bool {
        self.stale || self.fetched.is_none_or(|at| now.saturating_duration_since(at) >= max_age)
    }

    /// Routes may be wrong: refetch at the next chance.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Broker `id` could not be reached: skipped as group coordinator
    /// until the next refresh, which is due at once.
    pub fn mark_unreachable(&mut self, id: u64) {
        self.unreachable.insert(id);
        self.stale = true;
    }
}

/// Whether an error means routes may have changed.
pub fn is_routing_error(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::ConnectionLost(_) | ClientError::Timeout(_) => true,
        ClientError::Server { code, .. } => is_routing_code(*code),
        _ => false,
    }
}

/// Whether a broker's code means the partition moved (or the client's
/// view of the topic is out of date).
pub fn is_routing_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownTopic
            | ErrorCode::UnknownPartition
    )
}

/// Connection settings every broker connection gets.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Addresses tried in order for metadata (one or more).
    pub bootstrap: Vec<String>,
    /// Sent in request headers.
    pub client_id: String,
    /// Call timeout of every connection.
    pub request_timeout: Duration,
    /// Largest request a connection sends.
    pub max_request_bytes: usize,
    /// Shortest time between two metadata refreshes.
    pub min_refresh: Duration,
}

/// Splits `a,b , c` into addresses (empty parts dropped).
pub fn parse_bootstrap(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect()
}

/// The metadata cache and one connection per broker.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    max_request_bytes: AtomicUsize,
    cache: Mutex<MetadataCache>,
    conns: Mutex<HashMap<u64, Connection>>,
    /// A bootstrap connection whose node id is not known yet (from
    /// [`Router::connect_bootstrap`]); the next metadata request uses it.
    spare: Mutex<Option<(String, Connection)>>,
    /// One refresh at a time; holds when the last one started.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    /// The group coordinator moved or failed: look it up again.
    group_stale: AtomicBool,
}

impl Router {
    /// A router with an empty cache; nothing is connected yet.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            max_request_bytes: AtomicUsize::new(config.max_request_bytes),
            config,
            cache: Mutex::new(MetadataCache::default()),
            conns: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(None),
            group_stale: AtomicBool::new(false),
        }
    }

    /// The cache (held briefly: never across an await).
    pub fn cache(&self) -> MutexGuard<'_, MetadataCache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Connection>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections opened from now on refuse requests over `max` bytes.
    pub fn set_max_request_bytes(&self, max: usize) {
        self.max_request_bytes.store(max, Ordering::Release);
    }

    async fn connect(&self, addr: &str) -> Result<Connection, ClientError> {
        Ok(Connection::connect(addr, &self.config.client_id)
            .await?
            .with_timeout(self.config.request_timeout)
            .with_max_request_bytes(self.max_request_bytes.load(Ordering::Acquire)))
    }

    /// Connects to the first reachable bootstrap address (so a client
    /// fails at once when none is), keeping the connection for the first
    /// metadata request.
    pub async fn connect_bootstrap(&self) -> Result<(), ClientError> {
        let mut last_error = None;
        for addr in &self.config.bootstrap {
            match self.connect(addr).await {
                Ok(c) => {
                    *self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((addr.clone(), c));
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::ConnectionLost("no bootstrap address".into())))
    }

    /// The live connection to broker `id`, opened if needed. A broker that
    /// cannot be reached is marked so (see [`MetadataCache::mark_unreachable`]).
    pub async fn broker(&self, id: u64) -> Result<Connection, ClientError> {
        if let Some(c) = self.conns().get(&id).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let addr = self.cache().addr(id).map(str::to_owned);
        let addr = addr.ok_or_else(|| ClientError::ConnectionLost(format!("broker {id} is not known")))?;
        match self.connect(&addr).await {
            Ok(c) => {
                let mut conns = self.conns();
                let live = conns.entry(id).or_insert_with(|| c.clone());
                if live.is_closed() {
                    *live = c;
                }
                Ok(live.clone())
            }
            Err(e) => {
                self.cache().mark_unreachable(id);
                Err(e)
            }
        }
    }

    /// The leader of a partition and a connection to it; `Ok(None)` while
    /// no leader is known (refresh, then retry).
    pub async fn leader(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Option<(u64, Connection)>, ClientError> {
        let Some(id) = self.cache().leader(topic, partition) else { return Ok(None) };
        Ok(Some((id, self.broker(id).await?)))
    }

    /// Groups `items` by the leader of the partition `key` names, in leader
    /// id order; the second list holds those without a known leader.
    pub fn by_leader<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> (&str, u32),
    ) -> (Vec<(u64, Vec<T>)>, Vec<T>) {
        let cache = self.cache();
        let mut routed: Vec<(u64, Vec<T>)> = Vec::new();
        let mut unrouted = Vec::new();
        for item in items {
            let (topic, partition) = key(&item);
            match cache.leader(topic, partition) {
                Some(id) => match routed.iter_mut().find(|(l, _)| *l == id) {
                    Some((_, v)) => v.push(item),
                    None => routed.push((id, vec![item])),
                },
                None => unrouted.push(item),
            }
        }
        routed.sort_by_key(|(id, _)| *id);
        (routed, unrouted)
    }

    /// A connection for group requests (see the module doc), resolving
    /// the cluster from metadata of `topics` first if nothing is known.
    pub async fn coordinator(&self, topics: &[String]) -> Result<(u64, Connection), ClientError> {
        let known = self.cache().group_coordinator();
        let id = match known.filter(|_| !self.group_stale.swap(false, Ordering::AcqRel)) {
            Some(id) => id,
            None => {
                let mut topics = topics.to_vec();
                topics.push(OFFSETS_TOPIC.to_owned());
                self.metadata(topics).await?;
                let id = self.cache().group_coordinator();
                id.ok_or_else(|| ClientError::ConnectionLost("no group coordinator yet".into()))?
            }
        };
        Ok((id, self.broker(id).await?))
    }

    /// Tells the router a group request to broker `id` failed with `e`:
    /// `NotCoordinator` or a connection failure makes the next
    /// [`coordinator`](Self::coordinator) call look the coordinator up.
    pub fn report_group(&self, id: u64, e: &ClientError) {
        let moved = matches!(e, ClientError::Server { code: ErrorCode::NotCoordinator, .. });
        if moved || is_routing_error(e) {
            self.group_stale.store(true, Ordering::Release);
        }
        self.report(Some(id), e);
    }

    /// Tells the router that a request to broker `id` (if known) failed
    /// with `e`: routing errors make the cache stale, connection failures
    /// also mark the broker unreachable.
    pub fn report(&self, id: Option<u64>, e: &ClientError) {
        if !is_routing_error(e) {
            return;
        }
        let mut cache = self.cache();
        match (id, e.code()) {
            (Some(id), None) => cache.mark_unreachable(id),
            _ => cache.mark_stale(),
        }
    }

    /// Refetches metadata of `topics` when the cache needs it (older than
    /// `max_age`, or stale) and the last refresh is `min_refresh` old.
    pub async fn refresh_if_needed(&self, topics: &[String], max_age: Duration) -> Result<(), ClientError> {
        if !self.cache().needs_refresh(Instant::now(), max_age) {
            return Ok(());
        }
        let last = *self.refreshing.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.config.min_refresh) {
            return Ok(());
        }
        self.metadata(topics.to_vec()).await.map(drop)
    }

    /// Asks for metadata of `topics` (all when empty) and learns it.
    pub async fn metadata(&self, topics: Vec<String>) -> Result<MetadataResponse, ClientError> {
        let mut started = self.refreshing.lock().await;
        *started = Some(Instant::now());
        let request = MetadataRequest { topics };
        let mut last_error = None;
        let live: Vec<(u64, Connection)> =
            self.conns().iter().filter(|(_, c)| !c.is_closed()).map(|(id, c)| (*id, c.clone())).collect();
        for (id, conn) in live {
            match conn.call(&request).await {
                Ok(resp) => return Ok(self.learn(resp, conn, None)),
                Err(e) if is_routing_error(&e) => {
                    self.cache().mark_unreachable(id);
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((addr, conn)) = spare.filter(|(_, c)| !c.is_closed()) {
            match conn.call(&request).await {
                Ok(resp) => return Ok(self.learn(resp, conn, Some(&addr))),
                Err(e) if is_routing_error(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        let known = self.cache().brokers().into_iter().map(|(_, addr)| addr);
        let mut tried = HashSet::new();
        for addr in self.config.bootstrap.iter().cloned().chain(known) {
            if !tried.insert(addr.clone()) {
                continue;
            }
            let conn = match self.connect(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            match conn.call(&request).await {
                Ok(resp) => return Ok(self.learn(resp, conn, Some(&addr))),
                Err(e) if is_routing_error(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::ConnectionLost("no bootstrap address".into())))
    }

    /// Learns `resp`, which `conn` (reached at `addr`) answered, and keeps
    /// `conn` as the answering node's connection if it has none.
    fn learn(&self, resp: MetadataResponse, conn: Connection, addr: Option<&str>) -> MetadataResponse {
        let at = addr.map_or_else(|| conn.peer_addr().to_string(), str::to_owned);
        self.cache().update(&resp, &at, Instant::now());
        let mut conns = self.conns();
        let slot = conns.entry(resp.node_id).or_insert_with(|| conn.clone());
        if slot.is_closed() {
            *slot = conn;
        }
        resp
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
