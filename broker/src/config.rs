//! Broker configuration: a TOML file (every key optional), then `SLUICE_*`
//! environment variables and CLI flags on top (applied by the CLI). The
//! embedded defaults run a broker with no file at all: data in
//! `./sluice-data`, clients on `127.0.0.1:9500`, Kafka clients on
//! `127.0.0.1:9092`. `sluice.example.toml` in
//! the repository documents every key.

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
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9500".into(),
            kafka_listen: "127.0.0.1:9092".into(),
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
        self.topic_defaults.validate().map_err(|e| ConfigError::Invalid(format!("topic_defaults: {e}")))
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
        assert!(BrokerConfig::from_toml("nope = 1").is_err());
        assert!(BrokerConfig::from_toml("max_connections = 0").is_err());
        assert!(BrokerConfig::from_toml("max_request_timeout_ms = 0").is_err());
        assert_eq!(
            BrokerConfig::from_toml("max_request_timeout_ms = 250").unwrap().max_request_timeout_ms,
            250
        );
        assert!(BrokerConfig::from_toml("[topic_defaults]\nfsync = \"sometimes\"").is_err());
    }
}
