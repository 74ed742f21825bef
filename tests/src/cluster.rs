//! A cluster of `sluice serve` subprocesses on loopback for the fault
//! tests (issue #18): node ids `1..=n`, each with its own temporary data
//! directory (optionally on its own power-loss mount, [`crate::powerfs`]),
//! fixed client and peer ports chosen at start (so a restarted node comes
//! back where its peers and clients expect it), and optionally a
//! [`Proxy`] on every directed pair: node `i`'s `--peers j=` entry is then
//! proxy `(i, j)`, which forwards to node `j`'s peer listener, so a test
//! can cut, drop or delay traffic from `i` to `j` alone; and optionally a
//! proxy in front of each node's client listener, which the node
//! advertises, so clients can be cut off from one node.
//!
//! Faults: [`kill9`](Cluster::kill9), [`stop`](Cluster::stop) /
//! [`cont`](Cluster::cont) (SIGSTOP / SIGCONT), [`restart`](Cluster::restart),
//! [`power_loss`](Cluster::power_loss) and
//! [`power_loss_all`](Cluster::power_loss_all), and the proxies.
//!
//! Invariants: every process is killed (after a SIGCONT) on drop, before
//! the mounts are unmounted and the directories removed; only 127.0.0.1
//! addresses are used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_protocol::api::{MetadataRequest, MetadataResponse};
use sluice_protocol::client::Connection;

use crate::ports::reserve_port;
pub use crate::ports::three_node_flags;
use crate::powerfs::PowerFs;
use crate::proxy::Proxy;
pub use crate::wait::{wait_until, wait_until_async};
use crate::{run_cli, ProcessBroker};

/// How to build a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// A fault proxy on every directed pair of nodes.
    pub proxies: bool,
    /// A fault proxy in front of every node's client listener, which the
    /// node advertises (`--advertise`): clients bootstrap through it and
    /// learn it from Metadata, so a test can cut clients off one node.
    pub client_proxies: bool,
    /// Each data directory on its own power-loss file system.
    pub power_loss: bool,
    /// Turn the Kafka listener on (a fixed port per node).
    pub kafka: bool,
    /// TOML for every node's `--config` file (none when empty).
    pub config: String,
    /// More `sluice serve` arguments for every node.
    pub extra: Vec<String>,
    /// Start each node as an independent single broker (no `--node-id`,
    /// `--peer-listen`, `--peers`): proves the harness before the cluster
    /// exists, and gives RF=1 baselines.
    pub standalone: bool,
    /// The nodes' `RUST_LOG` (empty: `info`).
    pub rust_log: String,
}

/// Why a cluster (or one node) could not start.
#[derive(Debug)]
pub enum ClusterError {
    /// A node exited or said nothing before listening.
    NodeFailed {
        /// Its id.
        node: u32,
        /// Its exit status and log.
        log: String,
    },
    /// The nodes run but do not all see each other as live brokers (what
    /// each one saw last).
    NotFormed(String),
    /// The power-loss file system cannot be mounted here (the reason).
    NoPowerLoss(String),
    /// Mounting, unmounting or remounting failed.
    Io(std::io::Error),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeFailed { node, log } => write!(f, "node {node} did not start: {log}"),
            Self::NotFormed(seen) => write!(f, "the cluster did not form: {seen}"),
            Self::NoPowerLoss(why) => write!(f, "no power-loss file system: {why}"),
            Self::Io(e) => write!(f, "power-loss file system: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// One node: where it lives and listens, and its process while it runs.
#[derive(Debug)]
struct Slot {
    id: u32,
    client: SocketAddr,
    kafka: Option<SocketAddr>,
    peer: SocketAddr,
    data: PathBuf,
    config: Option<PathBuf>,
    process: Option<ProcessBroker>,
    /// Its log lines from earlier runs (before restarts).
    old_logs: String,
    paused: bool,
    fs: Option<PowerFs>,
}

/// A running cluster; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    bin: String,
    slots: Vec<Slot>,
    proxies: BTreeMap<(u32, u32), Proxy>,
    client_proxies: BTreeMap<u32, Proxy>,
    root: Option<tempfile::TempDir>,
}

/// Lines of each node's log in [`Cluster::logs`].
pub const LOG_TAIL: usize = 200;

impl Cluster {
    /// Starts `n` nodes of `bin` (the `sluice` program) together and waits
    /// until each accepts clients.
    ///
    /// # Errors
    /// A node that exits or stays silent (its log in the error), or no
    /// power-loss file system where `options.power_loss` asks for one.
    pub fn start(bin: &str, n: u32, options: &ClusterOptions) -> Result<Self, ClusterError> {
        let mut cluster = Self::prepare(bin, n, options)?;
        cluster.start_all(options)?;
        Ok(cluster)
    }

    /// Starts every node together, then waits until each accepts clients.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_all(&mut self, options: &ClusterOptions) -> Result<(), ClusterError> {
        for id in self.ids() {
            self.launch(id, options);
        }
        for id in self.ids() {
            self.wait_node(id)?;
        }
        Ok(())
    }

    /// Directories, mounts, ports and proxies of `n` nodes; no process
    /// started ([`start_all`](Self::start_all) does).
    ///
    /// # Errors
    /// No power-loss file system where `options.power_loss` asks for one.
    pub fn prepare(bin: &str, n: u32, options: &ClusterOptions) -> Result<Self, ClusterError> {
        let root = tempfile::tempdir().unwrap();
        // Held together, so the ports differ from each other and from the proxies'.
        let held: Vec<[TcpListener; 3]> =
            (0..n).map(|_| [reserve_port(), reserve_port(), reserve_port()]).collect();
        let mut slots = Vec::new();
        for (i, ports) in held.iter().enumerate() {
            let id = i as u32 + 1;
            let dir = root.path().join(format!("node{id}"));
            std::fs::create_dir(&dir).unwrap();
            let (data, fs) = if options.power_loss {
                let mnt = dir.join("mnt");
                std::fs::create_dir(&mnt).unwrap();
                let fs = PowerFs::mount(&mnt).map_err(|e| ClusterError::NoPowerLoss(e.to_string()))?;
                (mnt.join("data"), Some(fs))
            } else {
                (dir.join("data"), None)
            };
            let config = (!options.config.is_empty()).then(|| {
                let path = dir.join("sluice.toml");
                std::fs::write(&path, &options.config).unwrap();
                path
            });
            let addr = |l: &TcpListener| l.local_addr().unwrap();
            slots.push(Slot {
                id,
                client: addr(&ports[0]),
                peer: addr(&ports[1]),
                kafka: options.kafka.then(|| addr(&ports[2])),
                data,
                config,
                process: None,
                old_logs: String::new(),
                paused: false,
                fs,
            });
        }
        drop(held);
        let mut proxies = BTreeMap::new();
        if options.proxies {
            for from in &slots {
                for to in slots.iter().filter(|s| s.id != from.id) {
                    proxies.insert((from.id, to.id), Proxy::start(to.peer));
                }
            }
        }
        let client_proxies = if options.client_proxies {
            slots.iter().map(|s| (s.id, Proxy::start(s.client))).collect()
        } else {
            BTreeMap::new()
        };
        Ok(Self { bin: bin.to_owned(), slots, proxies, client_proxies, root: Some(root) })
    }

    /// Node ids, `1..=n`.
    pub fn ids(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.slots.len() as u32
    }

    fn slot(&self, id: u32) -> &Slot {
        &self.slots[id as usize - 1]
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        &mut self.slots[id as usize - 1]
    }

    /// `--peers` for node `id`: itself at its own peer address, the others
    /// through their proxies when there are any.
    fn peers_arg(&self, id: u32) -> String {
        self.slots
            .iter()
            .map(|s| {
                let addr = self.proxies.get(&(id, s.id)).map_or(s.peer, Proxy::addr);
                format!("{}={addr}", s.id)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `sluice serve` arguments of node `id`.
    pub fn serve_args(&self, id: u32, options: &ClusterOptions) -> Vec<String> {
        let s = self.slot(id);
        let mut args = vec![
            "--listen".to_owned(),
            s.client.to_string(),
            "--kafka-listen".into(),
            s.kafka.map(|a| a.to_string()).unwrap_or_default(),
        ];
        if let Some(proxy) = self.client_proxies.get(&id) {
            args.extend(["--advertise".into(), proxy.addr().to_string()]);
        }
        if !options.standalone {
            args.extend(["--node-id".into(), id.to_string(), "--peer-listen".into(), s.peer.to_string()]);
            args.extend(["--peers".into(), self.peers_arg(id)]);
        }
        if let Some(config) = &s.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        args.extend(options.extra.iter().cloned());
        args
    }

    /// Starts node `id`'s process without waiting.
    fn launch(&mut self, id: u32, options: &ClusterOptions) {
        let args = self.serve_args(id, options);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // SLUICE_CLUSTER_RUST_LOG overrides the default filter (debugging).
        let from_env = std::env::var("SLUICE_CLUSTER_RUST_LOG").unwrap_or_default();
        let filter = match (options.rust_log.as_str(), from_env.as_str()) {
            ("", "") => "info",
            ("", env) => env,
            (set, _) => set,
        };
        let process = ProcessBroker::launch_with_log(&self.bin, &self.slot(id).data, &args, filter);
        let slot = self.slot_mut(id);
        slot.process = Some(process);
        slot.paused = false;
    }

    /// Waits until node `id` accepts clients.
    fn wait_node(&mut self, id: u32) -> Result<(), ClusterError> {
        let slot = self.slot_mut(id);
        let process = slot.process.as_mut().expect("node not started");
        process.try_wait_listening().map_err(|log| ClusterError::NodeFailed { node: id, log })
    }

    /// Where node `id` serves native clients.
    pub fn client_addr(&self, id: u32) -> SocketAddr {
        self.slot(id).client
    }

    /// Where node `id` serves Kafka clients, when on.
    pub fn kafka_addr(&self, id: u32) -> Option<SocketAddr> {
        self.slot(id).kafka
    }

    /// Node `id`'s peer listener.
    pub fn peer_addr(&self, id: u32) -> SocketAddr {
        self.slot(id).peer
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u32) -> &Path {
        &self.slot(id).data
    }

    /// Every node's client address, comma-separated (for `--broker` and
    /// the clients' bootstrap): its client proxy's when there is one.
    pub fn bootstrap(&self) -> String {
        let advertised = |s: &Slot| self.client_proxies.get(&s.id).map_or(s.client, Proxy::addr);
        self.slots.iter().map(|s| advertised(s).to_string()).collect::<Vec<_>>().join(",")
    }

    /// The proxy in front of node `id`'s client listener.
    ///
    /// # Panics
    /// Without [`ClusterOptions::client_proxies`].
    pub fn client_proxy(&self, id: u32) -> &Proxy {
        self.client_proxies.get(&id).expect("cluster started without client proxies")
    }

    /// The proxy carrying node `from`'s traffic to node `to`.
    ///
    /// # Panics
    /// Without [`ClusterOptions::proxies`].
    pub fn proxy(&self, from: u32, to: u32) -> &Proxy {
        self.proxies.get(&(from, to)).expect("cluster started without proxies")
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_between(&self, a: u32, b: u32) {
        self.proxy(a, b).cut();
        self.proxy(b, a).cut();
    }

    /// Cuts node `id` off from every other node.
    pub fn isolate(&self, id: u32) {
        for other in self.ids().filter(|o| *o != id) {
            self.cut_between(id, other);
        }
    }

    /// Heals every proxy.
    pub fn heal_all(&self) {
        self.proxies.values().chain(self.client_proxies.values()).for_each(Proxy::heal);
    }

    /// Whether node `id`'s process is running (paused counts).
    pub fn is_running(&mut self, id: u32) -> bool {
        self.slot_mut(id).process.as_mut().is_some_and(|p| !p.has_exited())
    }

    /// Ids of the nodes running and not paused.
    pub fn live(&mut self) -> Vec<u32> {
        let ids: Vec<u32> = self.ids().filter(|id| !self.slot(*id).paused).collect();
        ids.into_iter().filter(|id| self.is_running(*id)).collect()
    }

    /// `kill -9` of node `id` (no-op when it is not running).
    pub fn kill9(&mut self, id: u32) {
        let slot = self.slot_mut(id);
        if let Some(mut p) = slot.process.take() {
            p.kill9();
            slot.old_logs.push_str(&p.log_text());
            slot.old_logs.push('\n');
        }
        slot.paused = false;
    }

    /// SIGSTOP to node `id`.
    pub fn stop(&mut self, id: u32) {
        let slot = self.slot_mut(id);
        if let Some(p) = &slot.process {
            p.signal("STOP");
            slot.paused = true;
        }
    }

    /// SIGCONT to node `id`.
    pub fn cont(&mut self, id: u32) {
        let slot = self.slot_mut(id);
        if let Some(p) = &slot.process {
            p.signal("CONT");
            slot.paused = false;
        }
    }

    /// Kills node `id` if it runs, then starts it again on the same data
    /// directory and ports, waiting until it accepts clients.
    ///
    /// # Errors
    /// The node failing to start (its log in the error).
    pub fn restart(&mut self, id: u32, options: &ClusterOptions) -> Result<(), ClusterError> {
        self.kill9(id);
        self.launch(id, options);
        self.wait_node(id)
    }

    /// Power loss of node `id`: killed, what it had not synced dropped,
    /// started again.
    ///
    /// # Errors
    /// No power-loss mount, remounting or the restart failing.
    pub fn power_loss(&mut self, id: u32, options: &ClusterOptions) -> Result<(), ClusterError> {
        self.drop_unsynced(&[id])?;
        self.launch(id, options);
        self.wait_node(id)
    }

    /// Power loss of every node at once, then all started together.
    ///
    /// # Errors
    /// As [`power_loss`](Self::power_loss).
    pub fn power_loss_all(&mut self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let ids: Vec<u32> = self.ids().collect();
        self.drop_unsynced(&ids)?;
        for id in self.ids() {
            self.launch(id, options);
        }
        for id in self.ids() {
            self.wait_node(id)?;
        }
        Ok(())
    }

    /// Cuts the power of `ids` (all first, then kills them), drops what they
    /// had not synced and remounts.
    fn drop_unsynced(&mut self, ids: &[u32]) -> Result<(), ClusterError> {
        for id in ids {
            let fs = self.slot(*id).fs.as_ref().ok_or_else(|| {
                ClusterError::NoPowerLoss("cluster started without ClusterOptions::power_loss".into())
            })?;
            fs.cut_now();
        }
        for id in ids {
            self.kill9(*id);
        }
        for id in ids {
            let fs = self.slot_mut(*id).fs.as_mut().expect("checked above");
            fs.power_loss_and_remount().map_err(ClusterError::Io)?;
        }
        Ok(())
    }

    /// Node `id`'s log, earlier runs included.
    pub fn log(&self, id: u32) -> String {
        let s = self.slot(id);
        let now = s.process.as_ref().map(ProcessBroker::log_text).unwrap_or_default();
        format!("{}{now}", s.old_logs)
    }

    /// The last [`LOG_TAIL`] lines of every node's log, headed by its id
    /// (for failure messages).
    pub fn logs(&self) -> String {
        self.ids()
            .map(|id| {
                let log = self.log(id);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
                format!("===== node {id} (last {LOG_TAIL} lines)\n{tail}\n")
            })
            .collect()
    }

    /// Runs `sluice --broker BOOTSTRAP args...` (stdin empty).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run_cli(&self.bin, &self.bootstrap(), args, b"")
    }

    /// Runs `sluice --broker ADDR args...` against node `id` alone.
    pub fn cli_on(&self, id: u32, args: &[&str]) -> std::process::Output {
        run_cli(&self.bin, &self.client_addr(id).to_string(), args, b"")
    }

    /// Metadata from the first live node that answers.
    pub async fn metadata(&mut self, topics: &[&str]) -> Option<MetadataResponse> {
        let req = MetadataRequest { topics: topics.iter().map(|t| (*t).to_owned()).collect() };
        for id in self.live() {
            let Ok(conn) = Connection::connect(&self.client_addr(id).to_string(), "cluster-test").await
            else {
                continue;
            };
            if let Ok(meta) = conn.call(&req).await {
                return Some(meta);
            }
        }
        None
    }

    /// Waits (at most `timeout`) until every live node's Metadata lists
    /// exactly the live nodes as brokers: all registered with the
    /// controller, none fenced. A cluster accepts topics only then.
    ///
    /// # Errors
    /// The brokers each node listed last.
    pub async fn wait_formed(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            let mut seen = Vec::new();
            for id in &live {
                let addr = self.client_addr(*id).to_string();
                let listed = match Connection::connect(&addr, "cluster-test").await {
                    Ok(conn) => conn.call(&MetadataRequest { topics: vec![] }).await.ok(),
                    Err(_) => None,
                };
                let mut ids: Vec<u32> =
                    listed.iter().flat_map(|m| &m.brokers).filter_map(|b| u32::try_from(b.id).ok()).collect();
                ids.sort_unstable();
                seen.push((*id, ids));
            }
            if seen.iter().all(|(_, ids)| *ids == live) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> =
                    seen.iter().map(|(id, ids)| format!("node {id} lists {ids:?}")).collect();
                return Err(ClusterError::NotFormed(format!(
                    "live {live:?}; {}\n{}",
                    seen.join("; "),
                    self.logs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader of `topic`/`partition` per the metadata of a live node.
    pub async fn leader(&mut self, topic: &str, partition: u32) -> Option<u32> {
        let meta = self.metadata(&[topic]).await?;
        let p = meta.topics.first()?.partitions.iter().find(|p| p.partition == partition)?;
        u32::try_from(p.leader).ok().filter(|l| *l > 0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            if self.slot(id).paused {
                self.cont(id);
            }
            self.kill9(id);
        }
        self.proxies.clear();
        self.client_proxies.clear();
        for s in &mut self.slots {
            drop(s.fs.take());
        }
        drop(self.root.take());
    }
}
