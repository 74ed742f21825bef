//! A clustered broker acknowledges nothing on its own before the
//! controller's role reaches a partition: its partitions start fenced
//! (`Offline` at epoch 0), whether loaded from disk at a restart, created
//! by the reconcile loop, or added to a topic. Before this, they started
//! as a single node's (`Single`): a node restarted after a power loss
//! acknowledged durable writes alone, at epoch 0, in the moments before
//! its reconcile loop ran, and truncation to the elected leader's log
//! removed them later (acknowledged records lost).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sluice_protocol::batch::BatchBuilder;
use tokio_util::sync::CancellationToken;

use super::Role;
use crate::broker::{now_ms, Broker};
use crate::config::BrokerConfig;
use crate::errors::BrokerError;
use crate::metrics::Metrics;
use crate::partition::Partition;

async fn open(dir: &std::path::Path, node_id: Option<u64>) -> Arc<Broker> {
    let mut config = BrokerConfig { data_dir: dir.to_owned(), node_id, ..BrokerConfig::default() };
    if let Some(id) = node_id {
        config.peer_listen = "127.0.0.1:0".into();
        config.peers.insert(id.to_string(), "127.0.0.1:0".into());
        config.cluster_id = "fence-test".into();
    }
    Broker::open(config, CancellationToken::new(), Arc::new(Metrics::new())).await.unwrap().0
}

fn record() -> bytes::Bytes {
    let mut b = BatchBuilder::new();
    b.append(now_ms(), None, Some(b"acknowledged alone?"), &[]);
    b.build()
}

/// Refuses writes (durable or not) and reads, appends nothing.
fn assert_fenced(p: &Partition) {
    assert_eq!(p.role(), Role::Offline { epoch: 0 }, "{}/{}", p.topic, p.index);
    assert!(matches!(p.check_writable(true), Err(BrokerError::NotLeader { .. })));
    assert!(matches!(p.check_writable(false), Err(BrokerError::NotLeader { .. })));
    assert!(matches!(p.check_readable(), Err(BrokerError::NotLeader { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_broker_fences_every_partition_until_its_role_arrives() {
    let dir = tempfile::tempdir().unwrap();
    // A first life that wrote to the partition (as a single node here; a
    // cluster node's log looks the same on disk).
    let first = open(dir.path(), None).await;
    first.create_topic("t", 2, &[]).unwrap();
    let p = Arc::clone(&first.topics.get("t").unwrap().partitions[0]);
    let appended = p.append(record(), 1 << 20, now_ms()).unwrap();
    p.wait_durable(&appended, std::time::Duration::from_secs(10)).await.unwrap();
    drop(p);
    first.close().await.unwrap();
    drop(first);

    // Restarted as node 1 of a cluster: nothing is writable yet.
    let broker = open(dir.path(), Some(1)).await;
    let t = broker.topics.get("t").unwrap();
    t.partitions.iter().for_each(|p| assert_fenced(p));
    // Topics the reconcile loop creates, and partitions it adds, too.
    let created =
        broker.create_topic_with("u", 1, broker.config.topic_defaults.clone(), uuid::Uuid::new_v4());
    assert_fenced(&created.unwrap().partitions[0]);
    broker.add_partitions("t", 3).unwrap();
    assert_fenced(&broker.topics.get("t").unwrap().partitions[2]);

    // The controller's role lifts the fence.
    let p = Arc::clone(&t.partitions[0]);
    p.set_role(Role::Leader { epoch: 1, replicas: vec![1], isr: vec![1], min_insync_replicas: 1 });
    p.check_writable(true).unwrap();
    // A role once set is never replaced by the fence.
    p.fence();
    assert!(matches!(p.role(), Role::Leader { epoch: 1, .. }));
    broker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_broker_is_not_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), None).await;
    broker.create_topic("t", 1, &[]).unwrap();
    let p = Arc::clone(&broker.topics.get("t").unwrap().partitions[0]);
    assert_eq!(p.role(), Role::Single);
    p.check_writable(true).unwrap();
    broker.close().await.unwrap();
}
