//! State machine storage: entries applied in memory, snapshots durable and
//! restored on open, a leader's snapshot installed.

use std::collections::BTreeMap;

use futures_util::stream;
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderId;

use super::*;
use crate::cluster::state::Command;
use crate::cluster::types::Entry;

fn entry(index: u64, cmd: Command) -> Entry {
    Entry::new_normal(LogId::new(LeaderId::new(1, 1), index), cmd)
}

fn register(id: u64) -> Command {
    Command::RegisterBroker {
        id,
        client_addr: "127.0.0.1:1".into(),
        kafka_addr: None,
        peer_addr: "127.0.0.1:2".into(),
        lease_until_ms: 10,
    }
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let items: Vec<Result<_, io::Error>> = entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(stream::iter(items)).await.unwrap();
}

#[tokio::test]
async fn snapshots_survive_reopen_and_install_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 2,
        replication_factor: 1,
        config: BTreeMap::new(),
    };
    apply(&mut sm, vec![entry(1, register(7)), entry(2, create)]).await;
    let state = sm.state().unwrap();
    assert!(state.topics.contains_key("t"));
    assert_eq!(sm.applied_state().await.unwrap().0.map(|l| l.index()), Some(2));

    // Without a snapshot, a reopen starts empty (openraft replays the log).
    assert_eq!(StateMachineStore::open(dir.path()).unwrap().state().unwrap(), ControllerState::default());
    let snap = sm.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index()), Some(2));
    let reopened = StateMachineStore::open(dir.path()).unwrap();
    assert_eq!(reopened.state().unwrap(), state);
    assert_eq!(reopened.last_applied().unwrap().map(|l| l.index()), Some(2));

    // Another node installs it: same state, and durable there too.
    let other = tempfile::tempdir().unwrap();
    let mut sm2 = StateMachineStore::open(other.path()).unwrap();
    sm2.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(sm2.state().unwrap(), state);
    assert_eq!(StateMachineStore::open(other.path()).unwrap().state().unwrap(), state);
    assert!(sm2.get_current_snapshot().await.unwrap().is_some());

    // A snapshot that is not a controller state is refused, state kept.
    let bad = std::io::Cursor::new(b"garbage".to_vec());
    let meta = sm2.get_current_snapshot().await.unwrap().unwrap().meta;
    assert!(sm2.install_snapshot(&meta, bad).await.is_err());
    assert_eq!(sm2.state().unwrap(), state);
}
