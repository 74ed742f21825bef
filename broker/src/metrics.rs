//! Prometheus metrics (prometheus-client). Hot-path counters are created
//! once per partition and cached there ([`PartitionCounters`]), so a
//! produce or fetch adds to an atomic and touches no map or lock. Gauges of
//! offsets, sizes and consumer-group lag are read from the broker's state
//! when `/metrics` is scraped, so they cost nothing between scrapes.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::storage::LogStats;

/// The labels of the Kafka listener's apis (`kafka::metrics` maps each api
/// to one), and `kafka_Other` for the rest; registered up front like the
/// native apis', so recording allocates nothing.
pub const KAFKA_APIS: &[&str] = &[
    "kafka_Produce",
    "kafka_Fetch",
    "kafka_ListOffsets",
    "kafka_Metadata",
    "kafka_ApiVersions",
    "kafka_CreateTopics",
    "kafka_DeleteTopics",
    "kafka_CreatePartitions",
    "kafka_DescribeConfigs",
    "kafka_IncrementalAlterConfigs",
    "kafka_DescribeCluster",
    "kafka_InitProducerId",
    "kafka_FindCoordinator",
    "kafka_JoinGroup",
    "kafka_SyncGroup",
    "kafka_Heartbeat",
    "kafka_LeaveGroup",
    "kafka_OffsetCommit",
    "kafka_OffsetFetch",
    "kafka_ListGroups",
    "kafka_DescribeGroups",
    "kafka_DeleteGroups",
    "kafka_ConsumerGroupHeartbeat",
    "kafka_ConsumerGroupDescribe",
    "kafka_AlterConfigs",
    "kafka_Other",
];

/// Labels of a partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

/// Labels of a follower of a partition this broker leads.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The follower's node id.
    pub follower: u64,
}

/// Labels of a request kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Api name.
    pub api: String,
}

/// Labels of an error.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Api name.
    pub api: String,
    /// Error code name.
    pub code: String,
}

/// Labels of a group's partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

/// Labels of a group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Group.
    pub group: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The broker's state at a scrape, for the state gauges.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Time since the broker started.
    pub uptime: Duration,
    /// Every partition served.
    pub partitions: Vec<PartitionSnapshot>,
    /// Every consumer group.
    pub groups: Vec<GroupSnapshot>,
    /// Cluster mode: each follower of each partition this broker leads,
    /// and how many offsets it is behind the log end.
    pub followers: Vec<(FollowerLabels, u64)>,
}

/// One partition at a scrape.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Its log's offsets and sizes.
    pub stats: LogStats,
}

/// One consumer group at a scrape.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    /// Group.
    pub group: String,
    /// Active members.
    pub members: u32,
    /// Its committed offsets and lag, per partition.
    pub offsets: Vec<GroupOffsetSnapshot>,
}

/// A group's position on one partition at a scrape.
#[derive(Debug, Clone)]
pub struct GroupOffsetSnapshot {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Log end offset minus committed offset.
    pub lag: u64,
    /// The committed offset, if the group committed one.
    pub committed: Option<u64>,
}

/// Every metric the broker exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages_in: Family<PartitionLabels, Counter>,
    bytes_in: Family<PartitionLabels, Counter>,
    messages_out: Family<PartitionLabels, Counter>,
    bytes_out: Family<PartitionLabels, Counter>,
    /// Requests handled, by api.
    pub requests: Family<ApiLabels, Counter>,
    /// Cached (count, latency) handles per api name, so recording a
    /// request allocates nothing.
    per_api: std::collections::HashMap<&'static str, (Counter, Histogram)>,
    /// Error responses, by api and code.
    pub errors: Family<ErrorLabels, Counter>,
    /// Time from decoding a request to its response being ready, by api.
    pub request_seconds: Family<ApiLabels, Histogram>,
    /// Duration of partition flushes.
    pub flush_seconds: Histogram,
    /// Appends covered by one flush (group-commit efficiency).
    pub appends_per_flush: Histogram,
    /// Partition syncs that failed (each stops its partition until the log is reopened).
    pub sync_failures: Counter,
    /// Partitions stopped after a failed sync, not yet reopened.
    pub failed_partitions: Gauge,
    /// Open client connections.
    pub connections: Gauge,
    /// Connections refused at max_connections.
    pub connections_refused: Counter,
    /// Start-up recovery time.
    pub recovery_seconds: FloatGauge,
    /// Cluster mode: partitions whose ISR is smaller than their replicas.
    pub under_replicated_partitions: Gauge,
    /// Cluster mode: partitions with no leader.
    pub offline_partitions: Gauge,
    /// Cluster mode: the controller leader's node id (-1: none known).
    pub controller_leader: Gauge,
    /// Cluster mode: leader changes (epoch bumps) this broker has seen.
    pub leader_elections: Counter,
    /// Cluster mode: ISR shrinks the controller accepted from this broker.
    pub isr_shrinks: Counter,
    /// Cluster mode: ISR expansions the controller accepted from this broker.
    pub isr_expands: Counter,
    replica_lag: Family<FollowerLabels, Gauge>,
    uptime_seconds: FloatGauge,
    log_start_offset: Family<PartitionLabels, Gauge>,
    log_end_offset: Family<PartitionLabels, Gauge>,
    high_watermark: Family<PartitionLabels, Gauge>,
    partition_bytes: Family<PartitionLabels, Gauge>,
    segments: Family<PartitionLabels, Gauge>,
    group_lag: Family<GroupPartitionLabels, Gauge>,
    group_committed: Family<GroupPartitionLabels, Gauge>,
    group_members: Family<GroupLabels, Gauge>,
}

/// A partition's cached hot-path counters.
#[derive(Debug, Clone, Default)]
pub struct PartitionCounters {
    /// Records appended.
    pub messages_in: Counter,
    /// Bytes of batches appended.
    pub bytes_in: Counter,
    /// Records served by fetches.
    pub messages_out: Counter,
    /// Bytes served by fetches.
    pub bytes_out: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut m = Self {
            messages_in: Family::default(),
            bytes_in: Family::default(),
            messages_out: Family::default(),
            bytes_out: Family::default(),
            requests: Family::default(),
            per_api: std::collections::HashMap::new(),
            errors: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            flush_seconds: latency_histogram(),
            appends_per_flush: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            sync_failures: Counter::default(),
            failed_partitions: Gauge::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            recovery_seconds: FloatGauge::default(),
            under_replicated_partitions: Gauge::default(),
            offline_partitions: Gauge::default(),
            controller_leader: Gauge::default(),
            leader_elections: Counter::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            replica_lag: Family::default(),
            uptime_seconds: FloatGauge::default(),
            log_start_offset: Family::default(),
            log_end_offset: Family::default(),
            high_watermark: Family::default(),
            partition_bytes: Family::default(),
            segments: Family::default(),
            group_lag: Family::default(),
            group_committed: Family::default(),
            group_members: Family::default(),
            registry: Registry::with_prefix("sluice"),
        };
        m.register_traffic();
        m.register_health();
        m.register_state();
        m.per_api = sluice_protocol::api::ApiKey::ALL
            .iter()
            .map(|k| k.name())
            .chain(["Unknown"])
            .chain(KAFKA_APIS.iter().copied())
            .map(|name| {
                let labels = ApiLabels { api: name.to_owned() };
                let count = m.requests.get_or_create(&labels).clone();
                (name, (count, m.request_seconds.get_or_create(&labels).clone()))
            })
            .collect();
        m
    }

    /// Registers what flows through: records, bytes, requests, errors.
    fn register_traffic(&mut self) {
        let r = &mut self.registry;
        r.register("messages_in", "Records appended", self.messages_in.clone());
        r.register("bytes_in", "Bytes of record batches appended", self.bytes_in.clone());
        r.register("messages_out", "Records served to fetches", self.messages_out.clone());
        r.register("bytes_out", "Bytes of record batches served to fetches", self.bytes_out.clone());
        r.register("requests", "Requests handled", self.requests.clone());
        r.register("errors", "Error responses by code", self.errors.clone());
        r.register(
            "request_seconds",
            "Request handling time, decode to response",
            self.request_seconds.clone(),
        );
    }

    /// Registers flushes, sync failures, connections, recovery and uptime.
    fn register_health(&mut self) {
        let r = &mut self.registry;
        r.register("flush_seconds", "Partition flush (fdatasync) time", self.flush_seconds.clone());
        r.register(
            "appends_per_flush",
            "Appends made durable by one flush (group commit)",
            self.appends_per_flush.clone(),
        );
        r.register(
            "sync_failures",
            "Partition syncs that failed (the partition stops acknowledging and reopens its log)",
            self.sync_failures.clone(),
        );
        r.register(
            "failed_partitions",
            "Partitions stopped after a failed sync, not yet reopened",
            self.failed_partitions.clone(),
        );
        r.register("connections", "Open client connections", self.connections.clone());
        r.register(
            "connections_refused",
            "Connections refused at max_connections",
            self.connections_refused.clone(),
        );
        r.register(
            "recovery_seconds",
            "Time to open the data directory at start-up",
            self.recovery_seconds.clone(),
        );
        r.register("uptime_seconds", "Time since the broker started", self.uptime_seconds.clone());
        r.register(
            "under_replicated_partitions",
            "Partitions whose in-sync replica set is smaller than their replica set (cluster mode)",
            self.under_replicated_partitions.clone(),
        );
        r.register(
            "offline_partitions",
            "Partitions with no leader (cluster mode)",
            self.offline_partitions.clone(),
        );
        r.register(
            "controller_leader",
            "Node id of the controller leader, -1 when none is known (cluster mode)",
            self.controller_leader.clone(),
        );
        r.register(
            "leader_elections",
            "Partition leader changes seen by this broker (cluster mode)",
            self.leader_elections.clone(),
        );
        r.register(
            "isr_shrinks",
            "ISR shrinks accepted from this broker as leader (cluster mode)",
            self.isr_shrinks.clone(),
        );
        r.register(
            "isr_expands",
            "ISR expansions accepted from this broker as leader (cluster mode)",
            self.isr_expands.clone(),
        );
        r.register(
            "replica_lag_offsets",
            "Offsets a follower is behind the log end of a partition this broker leads (cluster mode)",
            self.replica_lag.clone(),
        );
    }

    /// Registers the gauges set from a [`Snapshot`] at each scrape.
    fn register_state(&mut self) {
        let r = &mut self.registry;
        r.register("log_start_offset", "First offset stored", self.log_start_offset.clone());
        r.register("log_end_offset", "Offset of the next record", self.log_end_offset.clone());
        r.register("high_watermark", "Offsets below this are served", self.high_watermark.clone());
        r.register("partition_bytes", "Bytes on disk", self.partition_bytes.clone());
        r.register("segments", "Segments of a partition", self.segments.clone());
        r.register(
            "group_lag",
            "Consumer-group lag: log end offset minus committed offset",
            self.group_lag.clone(),
        );
        r.register("group_committed_offset", "Consumer-group committed offset", self.group_committed.clone());
        r.register("group_members", "Active members of a consumer group", self.group_members.clone());
    }

    /// The cached counters of one partition.
    pub fn partition(&self, topic: &str, partition: u32) -> PartitionCounters {
        let labels = PartitionLabels { topic: topic.to_owned(), partition };
        PartitionCounters {
            messages_in: self.messages_in.get_or_create(&labels).clone(),
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            messages_out: self.messages_out.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
        }
    }

    /// Forgets a deleted topic's series.
    pub fn remove_topic(&self, topic: &str, partitions: u32) {
        for partition in 0..partitions {
            let labels = PartitionLabels { topic: topic.to_owned(), partition };
            for f in [&self.messages_in, &self.bytes_in, &self.messages_out, &self.bytes_out] {
                f.remove(&labels);
            }
        }
    }

    /// Records one handled request.
    pub fn request(&self, api: &'static str, elapsed: Duration, error: Option<&'static str>) {
        if let Some((count, latency)) = self.per_api.get(api) {
            count.inc();
            latency.observe(elapsed.as_secs_f64());
        }
        if let Some(code) = error {
            self.errors.get_or_create(&ErrorLabels { api: api.to_owned(), code: code.to_owned() }).inc();
        }
    }

    /// The text exposition, with the state gauges set from `state` (left
    /// as they were without one: the broker is still opening).
    pub fn render(&self, state: Option<&Snapshot>) -> String {
        if let Some(state) = state {
            self.refresh(state);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh(&self, state: &Snapshot) {
        self.uptime_seconds.set(state.uptime.as_secs_f64());
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        for f in [
            &self.log_start_offset,
            &self.log_end_offset,
            &self.high_watermark,
            &self.partition_bytes,
            &self.segments,
        ] {
            f.clear();
        }
        for p in &state.partitions {
            let labels = PartitionLabels { topic: p.topic.clone(), partition: p.partition };
            let s = &p.stats;
            gauge(&self.log_start_offset.get_or_create(&labels), s.log_start_offset);
            gauge(&self.log_end_offset.get_or_create(&labels), s.log_end_offset);
            gauge(&self.high_watermark.get_or_create(&labels), s.high_watermark);
            gauge(&self.partition_bytes.get_or_create(&labels), s.size_bytes);
            gauge(&self.segments.get_or_create(&labels), u64::from(s.segment_count));
        }
        self.replica_lag.clear();
        for (labels, lag) in &state.followers {
            gauge(&self.replica_lag.get_or_create(labels), *lag);
        }
        self.group_lag.clear();
        self.group_committed.clear();
        self.group_members.clear();
        for g in &state.groups {
            gauge(
                &self.group_members.get_or_create(&GroupLabels { group: g.group.clone() }),
                u64::from(g.members),
            );
            for o in &g.offsets {
                let labels = GroupPartitionLabels {
                    group: g.group.clone(),
                    topic: o.topic.clone(),
                    partition: o.partition,
                };
                gauge(&self.group_lag.get_or_create(&labels), o.lag);
                if let Some(committed) = o.committed {
                    gauge(&self.group_committed.get_or_create(&labels), committed);
                }
            }
        }
    }
}
