//! `sluice status`: one screen about a running broker (version, uptime,
//! topics, size, connections, groups and their lag, topics it could not
//! load), or the same as JSON.

use serde::Serialize;
use sluice_protocol::api::{StatusRequest, StatusResponse};

use super::common::{connect, print_json, print_table, say, CliError};

/// `status --json` (fields in alphabetical order, as printed).
#[derive(Serialize)]
struct StatusView<'a> {
    connections: u32,
    data_dir: &'a str,
    failed_topics: Vec<FailedTopicView<'a>>,
    fsync: &'a str,
    groups: Vec<GroupLagView<'a>>,
    partitions: u32,
    topics: u32,
    total_bytes: u64,
    total_lag: u64,
    uptime_ms: u64,
    version: &'a str,
}

/// A group's members and lag.
#[derive(Serialize)]
struct GroupLagView<'a> {
    group: &'a str,
    lag: u64,
    members: u32,
}

/// A topic on disk the broker could not load.
#[derive(Serialize)]
struct FailedTopicView<'a> {
    error: &'a str,
    topic: &'a str,
}

fn view(s: &StatusResponse) -> StatusView<'_> {
    StatusView {
        connections: s.connections,
        data_dir: &s.data_dir,
        failed_topics: s
            .failed_topics
            .iter()
            .map(|f| FailedTopicView { error: &f.error, topic: &f.topic })
            .collect(),
        fsync: &s.fsync,
        groups: s
            .groups
            .iter()
            .map(|g| GroupLagView { group: &g.group, lag: g.lag, members: g.members })
            .collect(),
        partitions: s.partitions,
        topics: s.topics,
        total_bytes: s.total_bytes,
        total_lag: s.groups.iter().map(|g| g.lag).sum(),
        uptime_ms: s.uptime_ms,
        version: &s.version,
    }
}

/// Prints the broker's status.
///
/// # Errors
/// A connection failure.
pub async fn run(addr: &str, json: bool) -> Result<(), CliError> {
    let s = connect(addr).await?.call(&StatusRequest).await?;
    let v = view(&s);
    if json {
        return print_json(&v);
    }
    let uptime = s.uptime_ms / 1000;
    say!("sluice {} at {addr}, up {}h{:02}m{:02}s", s.version, uptime / 3600, uptime / 60 % 60, uptime % 60);
    say!("data dir     {} (fsync {} by default)", s.data_dir, s.fsync);
    say!("topics       {} with {} partitions, {} bytes on disk", s.topics, s.partitions, s.total_bytes);
    say!("connections  {}", s.connections);
    say!("groups       {} (total lag {})", s.groups.len(), v.total_lag);
    let rows: Vec<Vec<String>> =
        s.groups.iter().map(|g| vec![g.group.clone(), g.members.to_string(), g.lag.to_string()]).collect();
    if !rows.is_empty() {
        print_table(&["GROUP", "MEMBERS", "LAG"], &rows);
    }
    if !s.failed_topics.is_empty() {
        say!("FAILED TOPICS (on disk, not served; `sluice topic delete` removes one)");
        for f in &s.failed_topics {
            say!("  {}: {}", f.topic, f.error);
        }
    }
    Ok(())
}
