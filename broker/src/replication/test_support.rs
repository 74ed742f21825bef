//! In-process replication fixtures: brokers as one partition on a tempdir
//! each, with their own replica manager, a peer listener on 127.0.0.1:0
//! serving only the replication channel, and a fake ISR changer that
//! records proposals and accepts them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::BatchBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, IsrChanger, IsrError, NodeId, ReplicaManager, ReplicationConfig, Role};
use crate::cluster::peer_server::{self, PeerIdentity, ReplicationSlot};
use crate::partition::Partition;
use crate::storage::{DiskSpace, FsyncPolicy, Log, LogConfig};

pub const CLUSTER: &str = "test-cluster";
pub const TOPIC: &str = "t";
pub const WAIT: Duration = Duration::from_secs(10);

/// Records ISR proposals; accepts them unless `refuse` is set.
#[derive(Debug, Default)]
pub struct FakeIsr {
    pub proposals: Mutex<Vec<(NodeId, u32, Vec<NodeId>)>>,
    pub refuse: std::sync::atomic::AtomicBool,
}

impl IsrChanger for FakeIsr {
    fn alter_isr(
        &self,
        _topic: &str,
        _partition: u32,
        leader: NodeId,
        leader_epoch: u32,
        isr: Vec<NodeId>,
    ) -> BoxFuture<'_, Result<(), IsrError>> {
        self.proposals.lock().unwrap().push((leader, leader_epoch, isr));
        let refuse = self.refuse.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if refuse {
                Err(IsrError::Refused("fenced".into()))
            } else {
                Ok(())
            }
        })
    }
}

/// One broker: a partition, its replica manager and its peer listener.
pub struct Node {
    pub id: NodeId,
    pub p: Arc<Partition>,
    pub mgr: Arc<ReplicaManager>,
    pub isr: Arc<FakeIsr>,
    pub addr: String,
    server: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
        self.mgr.shutdown();
        self.p.cancel.cancel();
    }
}

/// Test settings: short waits, and a lag time (ISR shrink) of a minute,
/// so only the test that means to shrink the ISR sees one.
pub fn config(id: NodeId) -> ReplicationConfig {
    ReplicationConfig {
        replica_lag_time_max: Duration::from_secs(60),
        fetch_max_wait: Duration::from_millis(200),
        isr_check_interval: Duration::from_millis(25),
        reconnect_backoff: Duration::from_millis(10),
        ..ReplicationConfig::new(id, CLUSTER)
    }
}

/// A broker `id` over `dir` with `fsync`, listening on 127.0.0.1:0.
pub async fn node(dir: &Path, id: NodeId, fsync: FsyncPolicy) -> Node {
    node_with(dir, config(id), fsync).await
}

/// [`node`] with its replication settings.
pub async fn node_with(dir: &Path, cfg: ReplicationConfig, fsync: FsyncPolicy) -> Node {
    let id = cfg.node_id;
    let log_config = LogConfig { fsync, ..LogConfig::default() };
    let (log, _) = Log::open(&dir.join(format!("n{id}")), log_config, DiskSpace::Real).unwrap();
    let p = Arc::new(Partition::new(TOPIC.into(), 0, log, CancellationToken::new(), Arc::default()));
    tokio::spawn(Arc::clone(&p).run_flusher());
    let isr = Arc::new(FakeIsr::default());
    let found = Arc::clone(&p);
    let lookup: super::LookupFn =
        Arc::new(move |t: &str, i: u32| (t == TOPIC && i == 0).then(|| Arc::clone(&found)));
    let mgr = ReplicaManager::new(cfg, Arc::clone(&isr) as Arc<dyn IsrChanger>, lookup);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let identity = PeerIdentity {
        cluster_id: CLUSTER.into(),
        node_id: id,
        known: BTreeSet::from([1, 2, 3]),
        handshake_timeout: Duration::from_secs(2),
    };
    let slot = ReplicationSlot::default();
    slot.set(Arc::clone(&mgr) as Arc<dyn peer_server::ReplicationService>);
    let server = peer_server::spawn(listener, None, identity, slot);
    Node { id, p, mgr, isr, addr, server }
}

pub fn leader(epoch: u32, replicas: &[NodeId], isr: &[NodeId], min: usize) -> Role {
    Role::Leader { epoch, replicas: replicas.to_vec(), isr: isr.to_vec(), min_insync_replicas: min }
}

pub fn follower(epoch: u32, of: &Node) -> Role {
    Role::Follower { epoch, leader: of.id, leader_peer_addr: of.addr.clone() }
}

pub fn records(n: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.append(now_ms() + i as i64, None, Some(b"value"), &[]);
    }
    b.build()
}

pub fn idempotent(producer: i64, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new().producer(producer, 0, seq);
    b.append(now_ms(), None, Some(b"once"), &[]);
    b.build()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Polls `done` until it holds, at most [`WAIT`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every byte of the log, start to end (past the high watermark).
pub fn all_bytes(p: &Partition) -> Vec<u8> {
    let log = p.log();
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let b = log.read_for_replica(at, 1 << 20).unwrap();
        let mut rest = b.clone();
        while !rest.is_empty() {
            let h = sluice_protocol::batch::BatchHeader::parse(&rest).unwrap();
            at = h.last_offset() + 1;
            let _ = rest.split_to(h.total_len());
        }
        out.extend_from_slice(&b);
    }
    out
}

/// The ISR in a leader role.
pub fn isr_of(p: &Partition) -> Vec<NodeId> {
    match p.role() {
        Role::Leader { isr, .. } => isr,
        other => panic!("not a leader: {other:?}"),
    }
}
