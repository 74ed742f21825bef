//! Broker configuration: a TOML file (every key optional), then `SLUICE_*`
//! environment variables and CLI flags on top (applied by the CLI). The
//! embedded defaults run a broker with no file at all: data in
//! `./sluice-data`, clients on `127.0.0.1:9500`, Kafka clients on
//! `127.0.0.1:9092`. `sluice.example.toml` in
//! the repository documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::LogConfig;

/// Broker settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address clients connect to.
    pub listen: String,
    /// Address Kafka clients connect to (the Kafka wire protocol, see
    /// docs/kafka.md); empty turns the Kafka listener off.
    pub kafka_listen: String,
    /// The address clients are told to reach this broker at (Metadata,
    /// the cluster's broker list); empty: the bound `listen` address. Set
    /// it when clients come through a proxy, NAT or container port map,
    /// or when listening on 0.0.0.0 (Kafka's `advertised.listeners`).
    pub advertise: String,
    /// The same for the Kafka listener; empty: the address a Kafka client
    /// connected to (single node) or the bound `kafka_listen` (cluster).
    pub kafka_advertise: String,
    /// Address of the admin HTTP listener (/metrics, /health, /ready);
    /// empty turns it off.
    pub admin_listen: String,
    /// Record request counts, latencies and errors.
    pub metrics: bool,
    /// Where topics, offsets and metadata live.
    pub data_dir: PathBuf,
    /// Connections accepted at once; more are refused and logged.
    pub max_connections: usize,
    /// Requests one connection may have in flight (pipelining bound).
    pub max_in_flight_per_connection: usize,
    /// A connection with no request in flight and nothing received for
    /// this long is closed.
    pub connection_idle_ms: u64,
    /// A request frame whose first byte arrived must be complete within
    /// this long (ms), or the connection is closed (slowloris).
    pub request_read_timeout_ms: u64,
    /// Responses queued for one connection's socket (produced, not yet
    /// written) above this many bytes stop the broker reading that
    /// connection's requests until the client reads (backpressure).
    pub max_queued_response_bytes: usize,
    /// Largest request frame.
    pub max_frame_bytes: usize,
    /// Create a topic on first produce or fetch (off by default).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and the CLI's default.
    pub default_partitions: u32,
    /// Largest partition count of one topic.
    pub max_partitions: u32,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// Longest a fetch may long-poll, whatever it asks.
    pub max_fetch_wait_ms: u32,
    /// Consumer groups the coordinator keeps at once (with members or
    /// committed offsets); a new group past it is refused.
    pub max_groups: usize,
    /// A Kafka classic group that was empty waits this long (ms) for more
    /// members before its first rebalance completes, extended by as much
    /// for each member joining meanwhile up to the rebalance timeout
    /// (Kafka's `group.initial.rebalance.delay.ms`, 3000 there).
    pub group_initial_rebalance_delay_ms: u64,
    /// Longest a request may wait for its answer (a durable produce's
    /// `timeout_ms`), whatever the client asks.
    pub max_request_timeout_ms: u32,
    /// Settings every new topic starts from.
    pub topic_defaults: LogConfig,
    /// Cluster mode: this broker's node id (`--node-id`); unset runs a
    /// single-node broker with no controller.
    pub node_id: Option<u64>,
    /// Cluster mode: the peer listener (controller and replication
    /// traffic, `--peer-listen`).
    pub peer_listen: String,
    /// Cluster mode: every voter, this node included, node id (as text,
    /// TOML keys are strings) to peer address (`--peers`).
    pub peers: BTreeMap<String, String>,
    /// Cluster mode: peers must present the same id (`--cluster-id`).
    pub cluster_id: String,
    /// Copies of each partition of a new topic when the request names
    /// none: unset is 1 on a single node, min(3, voters) in a cluster.
    pub default_replication_factor: Option<u16>,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
}

/// The cluster settings of a broker started with `node_id`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's id.
    pub node_id: u64,
    /// Where this node's peer listener binds.
    pub peer_listen: String,
    /// Every voter: node id to peer address (this node's is `peer_listen`).
    pub peers: BTreeMap<u64, String>,
    /// The cluster's id.
    pub cluster_id: String,
    /// The replication factor of a topic created without one.
    pub default_replication_factor: u16,
}

/// The default cluster id.
pub const DEFAULT_CLUSTER_ID: &str = "sluice";

/// Parses `--peers`: `ID=HOST:PORT` pairs separated by commas.
///
/// # Errors
/// A pair without `=`, an id that is not a number, an empty address, or
/// an id given twice, named in the message.
pub fn parse_peers(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| ConfigError::Invalid(format!("--peers: `{pair}`: {why}"));
        let (id, addr) = pair.split_once('=').ok_or_else(|| bad("expected ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| bad("the node id is not a number"))?;
        if addr.trim().is_empty() {
            return Err(bad("the address is empty"));
        }
        if peers.insert(id.to_string(), addr.trim().to_owned()).is_some() {
            return Err(bad("node id given twice"));
        }
    }
    Ok(peers)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9500".into(),
            kafka_listen: "127.0.0.1:9092".into(),
            advertise: String::new(),
            kafka_advertise: String::new(),
            admin_listen: "127.0.0.1:9501".into(),
            metrics: true,
            data_dir: PathBuf::from("./sluice-data"),
            max_connections: 4096,
            max_in_flight_per_connection: 128,
            connection_idle_ms: 10 * 60 * 1000,
            request_read_timeout_ms: 30_000,
            max_queued_response_bytes: 16 << 20,
            max_frame_bytes: sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES,
            auto_create_topics: false,
            default_partitions: 1,
            max_partitions: 10_000,
            retention_check_interval_ms: 5 * 60 * 1000,
            max_fetch_wait_ms: 30_000,
            max_groups: 10_000,
            group_initial_rebalance_delay_ms: 100,
            max_request_timeout_ms: 30_000,
            topic_defaults: LogConfig::default(),
            node_id: None,
            peer_listen: String::new(),
            peers: BTreeMap::new(),
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            default_replication_factor: None,
            replica_lag_time_max_ms: 10_000,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Reads a TOML file; keys not in it keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.max_connections == 0 || self.max_in_flight_per_connection == 0 {
            return bad("max_connections and max_in_flight_per_connection must be positive");
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > (1 << 30) {
            return bad("max_frame_bytes must be between 1 KiB and 1 GiB");
        }
        if self.default_partitions == 0 || self.default_partitions > self.max_partitions {
            return bad("default_partitions must be between 1 and max_partitions");
        }
        if self.retention_check_interval_ms == 0 || self.connection_idle_ms == 0 {
            return bad("retention_check_interval_ms and connection_idle_ms must be positive");
        }
        if self.request_read_timeout_ms == 0 || self.max_queued_response_bytes == 0 || self.max_groups == 0 {
            return bad("request_read_timeout_ms, max_queued_response_bytes and max_groups must be positive");
        }
        if self.max_request_timeout_ms == 0 {
            return bad("max_request_timeout_ms must be positive");
        }
        if self.replica_lag_time_max_ms == 0 {
            return bad("replica_lag_time_max_ms must be positive");
        }
        for (flag, addr) in [
            ("--advertise (advertise)", &self.advertise),
            ("--kafka-advertise (kafka_advertise)", &self.kafka_advertise),
        ] {
            let port = addr.rsplit_once(':').map(|(host, port)| (host.is_empty(), port.parse::<u16>()));
            if !addr.is_empty() && !matches!(port, Some((false, Ok(p))) if p > 0) {
                return Err(ConfigError::Invalid(format!("{flag} `{addr}`: expected HOST:PORT")));
            }
        }
        self.cluster()?;
        self.topic_defaults.validate().map_err(|e| ConfigError::Invalid(format!("topic_defaults: {e}")))
    }

    /// The cluster settings, or `None` for a single-node broker (no
    /// `node_id`, no `peers`, no `peer_listen`).
    ///
    /// # Errors
    /// Cluster settings given in part (`--peers` without `--node-id`, ...),
    /// a peer id that is not a number, no `peers`, or
    /// a default replication factor of 0 or over the voter count; the
    /// message names the flag.
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let Some(node_id) = self.node_id else {
            if !self.peers.is_empty() || !self.peer_listen.is_empty() {
                return bad("--peers and --peer-listen need --node-id (node_id)".into());
            }
            return match self.default_replication_factor {
                Some(rf) if rf != 1 => {
                    bad(format!("default_replication_factor {rf}: a single-node broker keeps one copy"))
                }
                _ => Ok(None),
            };
        };
        if self.peer_listen.is_empty() {
            return bad("--node-id needs --peer-listen (peer_listen)".into());
        }
        let mut peers = BTreeMap::new();
        for (id, addr) in &self.peers {
            let Ok(n) = id.trim().parse::<u64>() else {
                return bad(format!("--peers (peers): node id `{id}` is not a number"));
            };
            peers.insert(n, addr.clone());
        }
        if peers.is_empty() {
            return bad("--node-id needs --peers (peers): the controller's voters".into());
        }
        // A voter's own entry is where its peer listener binds. A node not
        // in --peers joins as a non-voting member once an operator adds it
        // (`sluice cluster add-node`).
        if let Some(own) = peers.get_mut(&node_id) {
            own.clone_from(&self.peer_listen);
        }
        if self.cluster_id.is_empty() {
            return bad("--cluster-id (cluster_id) must not be empty".into());
        }
        let voters = u16::try_from(peers.len()).unwrap_or(u16::MAX);
        let default_replication_factor = self.default_replication_factor.unwrap_or(voters.min(3));
        if default_replication_factor == 0 || default_replication_factor > voters {
            return bad(format!(
                "default_replication_factor {default_replication_factor} with {voters} voters in --peers"
            ));
        }
        Ok(Some(ClusterSettings {
            node_id,
            peer_listen: self.peer_listen.clone(),
            peers,
            cluster_id: self.cluster_id.clone(),
            default_replication_factor,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsyncPolicy;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(BrokerConfig::from_toml("").unwrap(), BrokerConfig::default());
    }

    #[test]
    fn example_file_parses_and_matches_the_defaults() {
        let text = include_str!("../../sluice.example.toml");
        assert_eq!(BrokerConfig::from_toml(text).unwrap(), BrokerConfig::default());
    }

    #[test]
    fn overrides_and_errors() {
        let c =
            BrokerConfig::from_toml("listen = \"127.0.0.1:1\"\n[topic_defaults]\nfsync = \"interval:50\"\n")
                .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.topic_defaults.fsync, FsyncPolicy::Interval(std::time::Duration::from_millis(50)));
        assert_eq!(BrokerConfig::from_toml("kafka_listen = \"\"").unwrap().kafka_listen, "", "off");
        let advertised = BrokerConfig::from_toml("advertise = \"broker-1.example:9500\"").unwrap();
        assert_eq!(advertised.advertise, "broker-1.example:9500");
        for bad in ["advertise = \"nohost\"", "advertise = \":9500\"", "kafka_advertise = \"h:0\""] {
            let e = BrokerConfig::from_toml(bad).unwrap_err().to_string();
            assert!(e.contains("advertise") && e.contains("HOST:PORT"), "{bad}: {e}");
        }
        assert!(BrokerConfig::from_toml("nope = 1").is_err());
        assert!(BrokerConfig::from_toml("max_connections = 0").is_err());
        assert!(BrokerConfig::from_toml("max_request_timeout_ms = 0").is_err());
        assert_eq!(
            BrokerConfig::from_toml("max_request_timeout_ms = 250").unwrap().max_request_timeout_ms,
            250
        );
        assert!(BrokerConfig::from_toml("[topic_defaults]\nfsync = \"sometimes\"").is_err());
    }

    fn invalid(text: &str) -> String {
        match BrokerConfig::from_toml(text) {
            Err(ConfigError::Invalid(m)) => m,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn no_cluster_settings_is_a_single_node() {
        assert_eq!(BrokerConfig::default().cluster().unwrap(), None);
        assert!(invalid("default_replication_factor = 3").contains("single-node"));
        assert!(invalid("peer_listen = \"127.0.0.1:1\"").contains("--node-id"));
    }

    #[test]
    fn cluster_settings_parse_and_name_the_bad_flag() {
        let text = "node_id = 2\npeer_listen = \"127.0.0.1:7002\"\n\
                    [peers]\n1 = \"h1:7001\"\n2 = \"ignored:1\"\n3 = \"h3:7003\"\n";
        let c = BrokerConfig::from_toml(text).unwrap().cluster().unwrap().unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.peers[&1], "h1:7001");
        assert_eq!(c.peers[&2], "127.0.0.1:7002", "its own entry is its peer listener");
        assert_eq!(c.default_replication_factor, 3);
        assert_eq!(c.cluster_id, DEFAULT_CLUSTER_ID);
        assert!(invalid("node_id = 1\n[peers]\n1 = \"a:1\"").contains("--peer-listen"));
        // A node not in --peers is one to add later: the voters stay as listed.
        let added = "node_id = 4\npeer_listen = \"d:4\"\n[peers]\n1 = \"a:1\"\n2 = \"b:2\"\n3 = \"c:3\"";
        let c = BrokerConfig::from_toml(added).unwrap().cluster().unwrap().unwrap();
        assert_eq!((c.node_id, c.peers.len(), c.peers.contains_key(&4)), (4, 3, false));
        assert!(invalid("node_id = 4\npeer_listen = \"a:1\"").contains("--peers"));
        assert!(invalid("node_id = 1\npeer_listen = \"a:1\"\n[peers]\nx = \"a:1\"").contains("`x`"));
        let two = "node_id = 1\npeer_listen = \"a:1\"\ndefault_replication_factor = 3\n\
                   [peers]\n1 = \"a:1\"\n2 = \"b:1\"";
        assert!(invalid(two).contains("2 voters"));
    }

    #[test]
    fn peers_flag_parses_and_names_the_bad_pair() {
        let p = parse_peers("1=127.0.0.1:7001, 2=h:7002,3=h:7003").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p["2"], "h:7002");
        for (text, part) in
            [("1=a:1,2", "`2`"), ("x=a:1", "not a number"), ("1=", "empty"), ("1=a:1,1=b:1", "twice")]
        {
            let e = parse_peers(text).unwrap_err().to_string();
            assert!(e.contains("--peers") && e.contains(part), "{text}: {e}");
        }
    }
}
