//! Three controller nodes in one process on 127.0.0.1: election,
//! replication, failover, restart from the durable log, and hostile peer
//! traffic. Every wait polls until a deadline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::liveness::{self, BrokerAddrs, LivenessConfig};
use super::node::{ClusterError, ControllerConfig, ControllerNode};
use super::peer_wire::{self, Hello, PeerError, PEER_MAGIC, PEER_VERSION};
use super::state::{Command, ControllerState, Outcome};

const CLUSTER: &str = "test-cluster";
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds; panics naming `what` after
/// [`DEADLINE`]. Returns the time it took.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    peers: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Arc<ControllerNode>>,
    /// Liveness loops, for the tests that run them.
    loops: BTreeMap<u64, JoinHandle<()>>,
}

impl Cluster {
    async fn start() -> Self {
        let mut listeners = BTreeMap::new();
        for id in 1..=3u64 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let peers: BTreeMap<u64, String> =
            listeners.iter().map(|(id, l)| (*id, l.local_addr().unwrap().to_string())).collect();
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut c = Self { dirs, peers, nodes: BTreeMap::new(), loops: BTreeMap::new() };
        for (id, l) in listeners {
            let node = ControllerNode::start(c.config(id), l).await.unwrap();
            c.nodes.insert(id, Arc::new(node));
        }
        c
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.dirs[usize::try_from(id - 1).unwrap()].path().to_owned()
    }

    /// Snapshots every few entries, keeping no log behind them, so a node
    /// that was down catches up through a snapshot; a short handshake
    /// timeout, so stalled connections are dropped quickly.
    fn config(&self, id: u64) -> ControllerConfig {
        let mut cfg = ControllerConfig::new(id, CLUSTER, self.dir(id), self.peers.clone());
        cfg.snapshot_after_logs = 3;
        cfg.logs_kept_after_snapshot = 0;
        cfg.handshake_timeout = Duration::from_millis(300);
        cfg
    }

    /// The leader every running node agrees on, if they do.
    fn agreed_leader(&self) -> Option<u64> {
        let first = self.nodes.values().next()?.leader()?;
        let all = self.nodes.values().all(|n| n.leader() == Some(first));
        (all && self.nodes.contains_key(&first)).then_some(first)
    }

    async fn wait_leader(&self) -> u64 {
        wait_until("an agreed controller leader", || self.agreed_leader().is_some()).await;
        self.agreed_leader().unwrap()
    }

    async fn wait_converged(&self, what: &str, pred: impl Fn(&ControllerState) -> bool) -> ControllerState {
        wait_until(what, || {
            let states: Vec<_> = self.nodes.values().map(|n| n.state().unwrap()).collect();
            states.iter().all(|s| pred(s) && s == &states[0])
        })
        .await;
        self.nodes.values().next().unwrap().state().unwrap()
    }

    async fn restart(&mut self, id: u64) {
        let addr: std::net::SocketAddr = self.peers[&id].parse().unwrap();
        let mut listener = None;
        wait_until("the peer port to be free again", || {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            listener = socket.bind(addr).and_then(|()| socket.listen(64)).ok();
            listener.is_some()
        })
        .await;
        let node = ControllerNode::start(self.config(id), listener.unwrap()).await.unwrap();
        self.nodes.insert(id, Arc::new(node));
    }

    async fn stop(&mut self, id: u64) {
        if let Some(l) = self.loops.remove(&id) {
            l.abort();
            let _ = l.await;
        }
        let node = Arc::try_unwrap(self.nodes.remove(&id).unwrap()).unwrap();
        node.shutdown().await.unwrap();
    }

    fn start_liveness(&mut self, cfg: LivenessConfig) {
        for (id, node) in &self.nodes {
            let addrs = BrokerAddrs {
                client_addr: format!("127.0.0.1:{}", 19000 + id),
                kafka_addr: None,
                peer_addr: self.peers[id].clone(),
            };
            self.loops.insert(*id, liveness::spawn(Arc::clone(node), addrs, cfg, |_| {}));
        }
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

/// The state a node's controller directory recovers to: its snapshot,
/// then every normal entry of its log past the snapshot, applied in order.
async fn durable_state(data_dir: &std::path::Path) -> ControllerState {
    use openraft::storage::RaftLogReader;
    let dir = data_dir.join(super::node::CONTROLLER_DIR);
    let sm = super::sm_store::StateMachineStore::open(&dir).unwrap();
    let mut state = sm.state().unwrap();
    let from = sm.last_applied().unwrap().map_or(0, |l| l.index() + 1);
    let mut log = super::log_store::LogStore::open(&dir).unwrap();
    for e in log.try_get_log_entries(from..).await.unwrap() {
        if let openraft::EntryPayload::Normal(cmd) = &e.payload {
            let _ = state.apply(cmd);
        }
    }
    state
}

fn register(id: u64) -> Command {
    Command::RegisterBroker {
        id,
        client_addr: format!("127.0.0.1:{}", 19000 + id),
        kafka_addr: None,
        peer_addr: format!("127.0.0.1:{}", 19100 + id),
        lease_until_ms: u64::MAX,
    }
}

fn create(name: &str, partitions: u32, rf: u16) -> Command {
    Command::CreateTopic { name: name.into(), partitions, replication_factor: rf, config: BTreeMap::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_fail_over_and_recover() {
    let mut c = Cluster::start().await;
    let leader = c.wait_leader().await;
    let l = &c.nodes[&leader];
    for id in 1..=3 {
        assert_eq!(l.propose(register(id)).await.unwrap(), Ok(Outcome::Done));
    }
    assert_eq!(l.propose(create("t", 3, 3)).await.unwrap(), Ok(Outcome::TopicCreated { id: 0 }));
    // A refused command is an answer, not a failure.
    assert!(l.propose(create("t", 1, 1)).await.unwrap().is_err());
    let s = c.wait_converged("topic t on every node", |s| s.topics.contains_key("t")).await;
    for p in &s.topics["t"].partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.leader, Some(p.replicas[0]));
    }
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    match c.nodes[&follower].propose(create("x", 1, 1)).await {
        Err(ClusterError::NotLeader { leader: Some(found) }) => assert_eq!(found, leader),
        other => panic!("a follower must refuse with the leader's id: {other:?}"),
    }
    // ...or forward to the leader over the peer port.
    let out = c.nodes[&follower].propose_anywhere(create("x", 1, 1)).await.unwrap();
    assert_eq!(out, Ok(Outcome::TopicCreated { id: 1 }));

    // The leader stops: the other two elect a new one and keep the state.
    let old_term = c.nodes[&follower].term();
    c.stop(leader).await;
    let took = wait_until("a new controller leader", || c.agreed_leader().is_some_and(|n| n != leader)).await;
    let new_leader = c.wait_leader().await;
    assert!(c.nodes[&new_leader].term() > old_term);
    eprintln!("controller failover took {took:?}");
    let out = c.nodes[&new_leader].propose(create("u", 2, 3)).await.unwrap();
    assert_eq!(out, Ok(Outcome::TopicCreated { id: 2 }));
    let s = c.wait_converged("t and u on the survivors", |s| s.topics.contains_key("u")).await;
    assert!(s.topics.contains_key("t"));

    // The stopped node's directory holds what it acknowledged: its
    // snapshot plus its log replay to a state with topic t.
    let durable = durable_state(&c.dir(leader)).await;
    assert!(durable.topics.contains_key("t"), "{durable:?}");
    // Enough new entries that the leader snapshots and purges past the
    // stopped node's log: it must catch up through a snapshot.
    let stopped_last = {
        use openraft::storage::RaftLogStorage;
        let dir = c.dir(leader).join(super::node::CONTROLLER_DIR);
        let mut log = super::log_store::LogStore::open(&dir).unwrap();
        log.get_log_state().await.unwrap().last_log_id.map_or(0, |l| l.index())
    };
    let nl = &c.nodes[&new_leader];
    // Bounded by time, not by a count of entries: snapshots are built in
    // the background, and on a loaded machine (CI) 50 entries went by
    // before one was.
    let started = std::time::Instant::now();
    while nl.purged_index().is_none_or(|p| p <= stopped_last) {
        let last = nl.last_log_index();
        assert!(
            started.elapsed() < DEADLINE,
            "the leader never purged its log (at {last}, stopped node at {stopped_last})"
        );
        let hb = Command::BrokerHeartbeat { id: 1, lease_until_ms: u64::MAX };
        nl.propose(hb).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.restart(leader).await;
    let restarted = &c.nodes[&leader];
    assert!(restarted.applied_index().unwrap() <= c.nodes[&new_leader].applied_index().unwrap());
    let s2 = c.wait_converged("the restarted node to catch up", |s| s.topics.contains_key("u")).await;
    assert_eq!(s2, s);
    // The whole group still takes commands.
    let lead = c.wait_leader().await;
    assert_eq!(c.nodes[&lead].propose(create("v", 1, 2)).await.unwrap(), Ok(Outcome::TopicCreated { id: 3 }));
    c.wait_converged("v everywhere", |s| s.topics.contains_key("v")).await;
    c.shutdown().await;
}

/// Writes `bytes` to the peer port and waits for the server to close the
/// connection (EOF or reset), within the deadline.
async fn expect_closed(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a refusal reply, then the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the peer port kept a hostile connection open: {bytes:?}");
}

fn hello(cluster_id: &str, from: u64, to: u64) -> Hello {
    Hello {
        magic: PEER_MAGIC.into(),
        version: PEER_VERSION,
        cluster_id: cluster_id.into(),
        from,
        to,
        channel: super::peer_wire::Channel::Controller,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_traffic_is_refused_while_the_cluster_works() {
    let c = Cluster::start().await;
    let leader = c.wait_leader().await;
    let target = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    let addr = c.peers[&target].clone();

    // A foreign protocol: "GET " reads as a 1.2 GB length, over the maximum.
    expect_closed(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // A lying length over the maximum, and garbage in a well-formed frame.
    expect_closed(&addr, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    let mut frame = 9u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"not json!");
    expect_closed(&addr, &frame).await;
    // A length that promises more than ever comes, and a silent
    // connection: dropped after the handshake timeout.
    expect_closed(&addr, &[0, 0, 0, 100, b'{', b'"']).await;
    expect_closed(&addr, &[]).await;
    // A valid JSON frame that is not a handshake.
    let mut frame = 2u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{}");
    expect_closed(&addr, &frame).await;

    // Random bytes, bounded in count and size: each connection closed.
    let mut rng = rand::thread_rng();
    for _ in 0..16 {
        let n = rand::Rng::gen_range(&mut rng, 1..64);
        let junk: Vec<u8> = (0..n).map(|_| rand::Rng::r#gen::<u8>(&mut rng)).collect();
        expect_closed(&addr, &junk).await;
    }

    let limit = Duration::from_secs(5);
    for (h, why) in [
        (hello("other-cluster", 1, target), "cluster id"),
        (hello(CLUSTER, 99, target), "not a member"),
        (hello(CLUSTER, leader, target + 10), "not node"),
        (Hello { magic: "kafka".into(), ..hello(CLUSTER, 1, target) }, "not a sluice peer"),
    ] {
        match peer_wire::dial(&addr, &h, limit).await {
            Err(PeerError::Refused(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("handshake {h:?} must be refused: {:?}", other.map(|_| ())),
        }
    }
    // A correct handshake is accepted (and the connection then closed).
    assert!(peer_wire::dial(&addr, &hello(CLUSTER, leader, target), limit).await.is_ok());

    // The cluster kept working through all of it.
    let l = &c.nodes[&c.wait_leader().await];
    l.propose(register(1)).await.unwrap().unwrap();
    l.propose(create("t", 1, 1)).await.unwrap().unwrap();
    c.wait_converged("t on every node", |s| s.topics.contains_key("t")).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_brokers_partitions_move_to_the_isr_when_its_lease_lapses() {
    let mut c = Cluster::start().await;
    c.wait_leader().await;
    let cfg = LivenessConfig { lease: Duration::from_secs(2), interval: Duration::from_millis(100) };
    c.start_liveness(cfg);
    c.wait_converged("all brokers registered", |s| s.live_brokers() == vec![1, 2, 3]).await;
    let lead = c.wait_leader().await;
    let out = c.nodes[&lead].propose_anywhere(create("t", 3, 3)).await.unwrap();
    assert_eq!(out, Ok(Outcome::TopicCreated { id: 0 }));
    let s = c.wait_converged("t everywhere", |s| s.topics.contains_key("t")).await;
    // Stop the controller leader, which also leads one partition (each of
    // the three brokers leads one): the group elects a new leader, which
    // grants every broker a full lease, and then fences the dead one.
    let victim = c.wait_leader().await;
    let (pi, _) =
        s.topics["t"].partitions.iter().enumerate().find(|(_, p)| p.leader == Some(victim)).unwrap();
    let pi = u32::try_from(pi).unwrap();
    let started = Instant::now();
    c.stop(victim).await;
    let s = c
        .wait_converged("the dead broker's partition to fail over", |s| {
            s.partition("t", pi).is_some_and(|p| p.leader.is_some_and(|l| l != victim))
        })
        .await;
    eprintln!(
        "partition leadership moved {:?} after the broker (and controller leader) stopped",
        started.elapsed()
    );
    assert!(s.brokers[&victim].fenced);
    for p in &s.topics["t"].partitions {
        assert_ne!(p.leader, Some(victim), "{p:?}");
        assert!(!p.isr.contains(&victim), "{p:?}");
        assert!(p.leader.is_some(), "two of three replicas live: {p:?}");
    }
    assert_eq!(s.partition("t", pi).unwrap().leader_epoch, 1);
    // The others kept their leases through the election: nobody else is
    // fenced, and their partitions kept leader and epoch.
    assert_eq!(s.live_brokers().len(), 2);
    let moved = s.topics["t"].partitions.iter().filter(|p| p.leader_epoch > 0).count();
    assert_eq!(moved, 1);
    c.shutdown().await;
}
