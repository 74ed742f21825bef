//! The replication pieces on a real (one-voter) controller node: its
//! `IsrChanger` commits `AlterIsr` and refuses a stale leader with
//! `FencedLeader`; its peer port refuses the replication channel until a
//! replica manager is installed, then serves it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

use super::test_support::*;
use super::wire::{OffsetForLeaderEpoch, ReplicaRequest, ReplicaResponse};
use super::{IsrChanger, IsrError, WeakController};
use crate::cluster::node::{ControllerConfig, ControllerNode};
use crate::cluster::peer_server::ReplicationService;
use crate::cluster::peer_wire::{self, Channel, Hello, PEER_MAGIC, PEER_VERSION};
use crate::cluster::state::Command;
use crate::storage::FsyncPolicy;

async fn propose(node: &ControllerNode, cmd: Command) {
    node.propose(cmd).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_commits_isr_changes_and_fences_stale_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peers = BTreeMap::from([(1, addr.clone())]);
    let cfg = ControllerConfig::new(1, CLUSTER, dir.path().to_owned(), peers);
    let node = Arc::new(ControllerNode::start(cfg, listener).await.unwrap());
    eventually("the controller elects itself", || node.is_leader()).await;
    let lease_until_ms = now_ms() as u64 + 600_000;
    for id in [1, 2] {
        let peer_addr = format!("127.0.0.1:{id}");
        let (client_addr, kafka_addr) = (peer_addr.clone(), None);
        propose(&node, Command::RegisterBroker { id, client_addr, kafka_addr, peer_addr, lease_until_ms })
            .await;
    }
    let create = Command::CreateTopic {
        name: TOPIC.into(),
        partitions: 1,
        replication_factor: 2,
        config: BTreeMap::new(),
    };
    propose(&node, create).await;
    let p = node.state().unwrap().partition(TOPIC, 0).unwrap().clone();
    let leader = p.leader.unwrap();
    assert_eq!(p.isr.len(), 2);

    // As the broker holds it (weakly: the node holds the replica manager).
    let weak = WeakController(Arc::downgrade(&node));
    let changer: &dyn IsrChanger = &weak;
    changer.alter_isr(TOPIC, 0, leader, p.leader_epoch, vec![leader]).await.unwrap();
    assert_eq!(node.state().unwrap().partition(TOPIC, 0).unwrap().isr, vec![leader]);
    let stale = changer.alter_isr(TOPIC, 0, leader, p.leader_epoch + 1, p.replicas.clone()).await;
    assert!(matches!(&stale, Err(IsrError::Refused(why)) if why.contains("epoch")), "{stale:?}");
    let other = p.replicas.iter().copied().find(|r| *r != leader).unwrap();
    let not_leader = changer.alter_isr(TOPIC, 0, other, p.leader_epoch, p.replicas.clone()).await;
    assert!(matches!(not_leader, Err(IsrError::Refused(_))));
    assert_eq!(node.state().unwrap().partition(TOPIC, 0).unwrap().isr, vec![leader]);

    // The replication channel: refused until a manager is installed.
    let hello = Hello {
        magic: PEER_MAGIC.into(),
        version: PEER_VERSION,
        cluster_id: CLUSTER.into(),
        from: 1,
        to: 1,
        channel: Channel::Replication,
    };
    assert!(peer_wire::dial(&addr, &hello, WAIT).await.is_err());
    let broker = node_with(dir.path(), config(1), FsyncPolicy::Always).await;
    broker.mgr.set_role(&broker.p, leader_role());
    broker.p.append(records(2), 1 << 20, now_ms()).unwrap();
    node.set_replication(Arc::clone(&broker.mgr) as Arc<dyn ReplicationService>);
    let mut conn = peer_wire::dial(&addr, &hello, WAIT).await.unwrap();
    let req = ReplicaRequest::OffsetForLeaderEpoch(OffsetForLeaderEpoch {
        topic: TOPIC.into(),
        partition: 0,
        epoch: 3,
    });
    conn.send(req.encode()).await.unwrap();
    let answer = ReplicaResponse::decode(conn.next().await.unwrap().unwrap()).unwrap();
    let ReplicaResponse::OffsetForLeaderEpoch(answer) = answer else { panic!("{answer:?}") };
    assert_eq!((answer.epoch, answer.end_offset), (3, 2));
    // Controller traffic still flows on the same port.
    assert!(node.is_leader());
    drop(broker);
    Arc::try_unwrap(node).unwrap().shutdown().await.unwrap();
}

fn leader_role() -> super::Role {
    leader(3, &[1], &[1], 1)
}
