//! The TCP server: an accept loop bounded by `max_connections` (shared with
//! the Kafka listener, [`crate::kafka::listener`]), one task per connection, and graceful shutdown (stop accepting, let in-flight requests
//! finish, flush and close every partition).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use crate::accept::accept_connections;
use crate::admin::{self, AdminState};
use crate::broker::Broker;
use crate::cluster::liveness::{self, BrokerAddrs, LivenessConfig};
use crate::cluster::node::{ControllerConfig, ControllerNode};
use crate::cluster::peer_server::ReplicationService;
use crate::clustering::ClusterHandle;
use crate::config::{BrokerConfig, ClusterSettings};
use crate::connection;
use crate::errors::BrokerError;
use crate::kafka;
use crate::metrics::Metrics;
use crate::reconcile;
use crate::replication::{LookupFn, ReplicaManager, ReplicationConfig, WeakController};
use crate::topics::LoadReport;

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Shared state.
    broker: Arc<Broker>,
    /// The bound address (the real port when 0 was asked for).
    addr: SocketAddr,
    /// The accept loop; resolves after a graceful shutdown.
    task: tokio::task::JoinHandle<Result<(), BrokerError>>,
    /// The admin HTTP listener's address, when on.
    admin: Option<SocketAddr>,
    /// The Kafka listener's address, when on.
    kafka: Option<SocketAddr>,
    /// Cluster mode: the peer listener's address.
    peer: Option<SocketAddr>,
}

/// A clustered broker's controller and its loops.
#[derive(Debug)]
struct ClusterRun {
    handle: Arc<ClusterHandle>,
    liveness: tokio::task::JoinHandle<()>,
    reconcile: tokio::task::JoinHandle<()>,
}

impl ClusterRun {
    /// Stops the loops, then the controller node.
    async fn stop(self) {
        self.liveness.abort();
        let _ = self.liveness.await;
        self.reconcile.abort();
        let _ = self.reconcile.await;
        self.handle.shutdown().await;
        tracing::info!("controller stopped");
    }
}

/// The broker's replica manager: finds partitions without creating any
/// (a replica exists only where the reconcile loop made it), and proposes
/// ISR changes through the controller, held weakly (the node holds the
/// manager to serve the replication channel).
fn replica_manager(
    broker: &Arc<Broker>,
    node: &Arc<ControllerNode>,
    settings: &ClusterSettings,
) -> Arc<ReplicaManager> {
    let mut cfg = ReplicationConfig::new(settings.node_id, &settings.cluster_id);
    cfg.replica_lag_time_max = Duration::from_millis(broker.config.replica_lag_time_max_ms);
    cfg.fetch_max_bytes = REPLICA_FETCH_MAX_BYTES;
    cfg.isr_shrinks = broker.metrics.isr_shrinks.clone();
    cfg.isr_expands = broker.metrics.isr_expands.clone();
    let weak = Arc::downgrade(broker);
    let lookup: LookupFn = Arc::new(move |topic: &str, index: u32| {
        let broker = weak.upgrade()?;
        let topic = broker.topics.get(topic).filter(|t| !t.is_deleted())?;
        topic.partitions.get(index as usize).cloned()
    });
    ReplicaManager::new(cfg, Arc::new(WeakController(Arc::downgrade(node))), lookup)
}

/// Most bytes a follower fetches at once (under the 16 MiB peer frame).
const REPLICA_FETCH_MAX_BYTES: u32 = 8 << 20;

/// Binds the peer listener and starts the controller node, the liveness
/// loop (registering this broker's addresses) and the reconcile loop.
async fn start_cluster(
    broker: &Arc<Broker>,
    mut settings: ClusterSettings,
    kafka: Option<SocketAddr>,
) -> Result<(ClusterRun, SocketAddr), BrokerError> {
    let listen = settings.peer_listen.clone();
    let listen_error = |source| BrokerError::Listen { addr: listen.clone(), source };
    let listener = TcpListener::bind(&listen).await.map_err(listen_error)?;
    let peer = listener.local_addr().map_err(listen_error)?;
    if let Some(own) = settings.peers.get_mut(&settings.node_id) {
        // A voter's own entry is where its peer listener bound (port 0 resolved).
        *own = peer.to_string();
    }
    let cfg = ControllerConfig::new(
        settings.node_id,
        &settings.cluster_id,
        broker.config.data_dir.clone(),
        settings.peers.clone(),
    );
    let node = ControllerNode::start(cfg, listener)
        .await
        .map_err(|e| BrokerError::Internal(format!("the cluster controller failed to start: {e}")))?;
    let node = Arc::new(node);
    let replicas = replica_manager(broker, &node, &settings);
    node.set_replication(Arc::clone(&replicas) as Arc<dyn ReplicationService>);
    let handle = ClusterHandle::new(Arc::clone(&node), settings, Arc::clone(&replicas));
    broker.set_cluster(Arc::clone(&handle));
    let addrs = BrokerAddrs {
        client_addr: broker.client_addr(),
        kafka_addr: broker.kafka_advertised(kafka),
        peer_addr: peer.to_string(),
    };
    let renewals = Arc::clone(&handle);
    let liveness =
        liveness::spawn(node, addrs, LivenessConfig::default(), move |until| renewals.renewed(until));
    let reconcile = reconcile::spawn(Arc::clone(broker), Arc::clone(&handle), broker.shutdown.child_token());
    Ok((ClusterRun { handle, liveness, reconcile }, peer))
}

impl Server {
    /// Opens the data directory, binds the listener and starts serving.
    ///
    /// # Errors
    /// `Listen` when the client or admin address cannot be bound; what
    /// [`Broker::open`] refuses.
    pub async fn start(config: BrokerConfig) -> Result<(Self, LoadReport), BrokerError> {
        let listen = config.listen.clone();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(AdminState {
            ready: AtomicBool::new(false),
            broker: OnceLock::new(),
            metrics: Arc::clone(&metrics),
        });
        let admin = if config.admin_listen.is_empty() {
            None
        } else {
            let addr = admin::start(&config.admin_listen, Arc::clone(&state), shutdown.clone())
                .await
                .map_err(|source| BrokerError::Listen { addr: config.admin_listen.clone(), source })?;
            tracing::info!(%addr, "admin listening (/metrics, /health, /ready)");
            Some(addr)
        };
        let opening = Instant::now();
        let (broker, report) = Broker::open(config, shutdown, Arc::clone(&metrics)).await?;
        metrics.recovery_seconds.set(opening.elapsed().as_secs_f64());
        let _ = state.broker.set(Arc::clone(&broker));
        let listen_error = |source| BrokerError::Listen { addr: listen.clone(), source };
        let listener = TcpListener::bind(&listen).await.map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        broker.set_client_addr(addr);
        let permits = Arc::new(Semaphore::new(broker.config.max_connections));
        let (kafka, kafka_task) = if broker.config.kafka_listen.is_empty() {
            (None, None)
        } else {
            let (addr, task) = kafka::listener::start(Arc::clone(&broker), Arc::clone(&permits)).await?;
            (Some(addr), Some(task))
        };
        let settings = broker.config.cluster().map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let (cluster, peer) = match settings {
            Some(settings) => {
                let (run, peer) = start_cluster(&broker, settings, kafka).await?;
                (Some(run), Some(peer))
            }
            None => (None, None),
        };
        let task = tokio::spawn(accept_loop(Arc::clone(&broker), listener, permits, kafka_task, cluster));
        state.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok((Self { broker, addr, task, admin, kafka, peer }, report))
    }

    /// The admin HTTP listener's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The Kafka listener's address, when it is on.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka
    }

    /// Cluster mode: the peer listener's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Asks the server to stop (what SIGINT/SIGTERM do).
    pub fn shutdown(&self) {
        self.broker.shutdown.cancel();
    }

    /// Waits for the server to stop after [`shutdown`](Self::shutdown):
    /// connections drained, partitions flushed and closed cleanly.
    ///
    /// # Errors
    /// What closing the broker reports ([`Broker::close`]).
    pub async fn wait(self) -> Result<(), BrokerError> {
        self.task.await.map_err(|e| BrokerError::Internal(e.to_string()))?
    }
}

/// Accepts native clients until shutdown; then drains them, waits for the
/// Kafka listener (`kafka`) to drain its own, and closes the broker.
/// `permits` bounds the connections of both listeners together; a
/// clustered broker's controller stops before the partitions close.
async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    permits: Arc<Semaphore>,
    kafka: Option<tokio::task::JoinHandle<()>>,
    cluster: Option<ClusterRun>,
) -> Result<(), BrokerError> {
    let connections = TaskTracker::new();
    accept_connections(&broker, listener, permits, &connections, "native", |socket, peer, permit| {
        connection::serve(socket, peer, Arc::clone(&broker), permit)
    })
    .await;
    tracing::info!(connections = connections.len(), "shutting down: draining connections");
    connections.close();
    connections.wait().await;
    if let Some(kafka) = kafka {
        let _ = kafka.await;
    }
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    broker.close().await?;
    tracing::info!("shutdown complete: partitions flushed and closed cleanly");
    Ok(())
}
