//! `sluice cluster status`: the cluster as the named broker's controller
//! node sees it (controller leader, every node live or not, under-replicated
//! and offline partitions), or the same as JSON. A single-node broker
//! reports itself as the one node.

use clap::Subcommand;
use serde::Serialize;
use sluice_protocol::api::{AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, StatusPartition};

use super::common::{connect, print_json, print_table, say, CliError};

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Controller leader, nodes (live or not), under-replicated and offline partitions.
    #[command(
        after_help = "Examples:\n  sluice cluster status\n  sluice cluster status --json --broker 127.0.0.1:9510"
    )]
    Status,
    /// Admit a new broker as a non-voting member: start it first with its own
    /// --node-id and --peer-listen and the voters' --peers; it then takes
    /// replicas of topics created or grown from now on.
    #[command(
        name = "add-node",
        after_help = "Example:\n  sluice cluster add-node 4 127.0.0.1:9630 --broker 127.0.0.1:9100"
    )]
    AddNode {
        /// The new node's --node-id.
        node_id: u64,
        /// Its --peer-listen address, as the other nodes reach it.
        peer_addr: String,
    },
}

/// `cluster status --json` (fields in alphabetical order).
#[derive(Serialize)]
struct StatusView<'a> {
    clustered: bool,
    /// -1 when no leader is known.
    controller_leader: i64,
    controller_term: u64,
    node_id: u64,
    nodes: Vec<NodeView<'a>>,
    offline: Vec<PartitionView<'a>>,
    partitions: u32,
    topics: u32,
    under_replicated: Vec<PartitionView<'a>>,
}

#[derive(Serialize)]
struct NodeView<'a> {
    client_addr: &'a str,
    id: u64,
    kafka_addr: &'a str,
    live: bool,
    peer_addr: &'a str,
    /// Votes in the controller quorum (listed in `--peers`).
    voter: bool,
}

#[derive(Serialize)]
struct PartitionView<'a> {
    partition: u32,
    topic: &'a str,
}

fn parts(p: &[StatusPartition]) -> Vec<PartitionView<'_>> {
    p.iter().map(|p| PartitionView { partition: p.partition, topic: &p.topic }).collect()
}

fn view(s: &ClusterStatusResponse) -> StatusView<'_> {
    StatusView {
        clustered: s.clustered,
        controller_leader: s.controller_leader,
        controller_term: s.controller_term,
        node_id: s.node_id,
        nodes: s
            .nodes
            .iter()
            .map(|n| NodeView {
                client_addr: &n.client_addr,
                id: n.id,
                kafka_addr: &n.kafka_addr,
                live: n.live,
                peer_addr: &n.peer_addr,
                voter: n.voter,
            })
            .collect(),
        offline: parts(&s.offline),
        partitions: s.partitions,
        topics: s.topics,
        under_replicated: parts(&s.under_replicated),
    }
}

fn names(p: &[PartitionView<'_>]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>().join(" ")
}

/// Runs a cluster command.
///
/// # Errors
/// A connection failure or the broker's refusal.
pub async fn run(addr: &str, json: bool, cmd: ClusterCommand) -> Result<(), CliError> {
    let conn = connect(addr).await?;
    if let ClusterCommand::AddNode { node_id, peer_addr } = cmd {
        conn.call(&AddNodeRequest { node_id, peer_addr: peer_addr.clone() }).await?;
        say!("added node {node_id} ({peer_addr}) as a non-voting member; it registers once it has caught up (see `sluice cluster status`)");
        return Ok(());
    }
    let status = conn.call(&ClusterStatusRequest).await?;
    let v = view(&status);
    if json {
        return print_json(&v);
    }
    let leader = if v.controller_leader < 0 { "none".to_owned() } else { v.controller_leader.to_string() };
    let mode = if v.clustered { "cluster" } else { "single node" };
    say!("{mode}: asked node {}, controller leader {leader} (term {})", v.node_id, v.controller_term);
    let rows: Vec<Vec<String>> = v
        .nodes
        .iter()
        .map(|n| {
            let live = if n.live { "live" } else { "fenced" };
            let kafka = if n.kafka_addr.is_empty() { "-" } else { n.kafka_addr };
            let peer = if n.peer_addr.is_empty() { "-" } else { n.peer_addr };
            let role = match (i64::try_from(n.id).ok() == Some(v.controller_leader), n.voter) {
                (true, _) => "controller",
                (false, true) => "voter",
                (false, false) => "observer",
            };
            vec![
                n.id.to_string(),
                live.to_owned(),
                n.client_addr.to_owned(),
                kafka.to_owned(),
                peer.to_owned(),
                role.to_owned(),
            ]
        })
        .collect();
    print_table(&["NODE", "STATE", "CLIENT", "KAFKA", "PEER", "ROLE"], &rows);
    say!("topics {}, partitions {}", v.topics, v.partitions);
    say!("under-replicated: {}", names(&v.under_replicated));
    say!("offline: {}", names(&v.offline));
    Ok(())
}
