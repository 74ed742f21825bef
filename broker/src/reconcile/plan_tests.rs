//! Tests of the reconcile decisions.

use std::collections::BTreeMap;

use super::*;
use crate::cluster::state::Command;

fn state_with(topics: &[(&str, u32, u16)], brokers: u64) -> ControllerState {
    let mut s = ControllerState::default();
    for id in 1..=brokers {
        let cmd = Command::RegisterBroker {
            id,
            client_addr: format!("c{id}"),
            kafka_addr: None,
            peer_addr: format!("p{id}"),
            lease_until_ms: 10,
        };
        s.apply(&cmd).unwrap();
    }
    for (name, partitions, rf) in topics {
        let cmd = Command::CreateTopic {
            name: (*name).into(),
            partitions: *partitions,
            replication_factor: *rf,
            config: BTreeMap::new(),
        };
        s.apply(&cmd).unwrap();
    }
    s
}

fn local_of(s: &ControllerState, name: &str) -> LocalTopic {
    let t = &s.topics[name];
    LocalTopic {
        id: local_topic_id("c", t.id),
        partitions: t.partitions.len() as u32,
        config: LogConfig::default(),
    }
}

#[test]
fn ids_are_deterministic_and_recognized() {
    assert_eq!(local_topic_id("c", 7), local_topic_id("c", 7));
    assert_ne!(local_topic_id("c", 7), local_topic_id("c", 8));
    assert_ne!(local_topic_id("c", 7), local_topic_id("d", 7));
    assert!(is_controller_topic("c", local_topic_id("c", 123)));
    assert!(!is_controller_topic("c", Uuid::new_v4()));
    assert!(!is_controller_topic("d", local_topic_id("c", 1)));
}

#[test]
fn missing_topics_are_created_only_where_replicated() {
    let s = state_with(&[("t", 3, 3), ("one", 1, 1)], 3);
    let holder = s.topics["one"].partitions[0].replicas[0];
    for me in 1..=3 {
        let actions = plan_topics(&s, me, "c", &LogConfig::default(), &BTreeMap::new());
        let created: Vec<&str> = actions
            .iter()
            .map(|a| match a {
                Action::Create { name, id, partitions, .. } => {
                    assert_eq!(*id, local_topic_id("c", s.topics[name].id));
                    assert_eq!(*partitions, s.topics[name].partitions.len() as u32);
                    name.as_str()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<&str> = if me == holder { vec!["one", "t"] } else { vec!["t"] };
        assert_eq!(created, want, "node {me}");
    }
}

#[test]
fn matching_topics_need_nothing_and_changes_are_planned() {
    let mut s = state_with(&[("t", 2, 3)], 3);
    let local = BTreeMap::from([("t".to_owned(), local_of(&s, "t"))]);
    assert!(plan_topics(&s, 1, "c", &LogConfig::default(), &local).is_empty());
    s.apply(&Command::AddPartitions { name: "t".into(), count: 4 }).unwrap();
    let config =
        BTreeMap::from([("retention_ms".into(), "1000".into()), ("min_insync_replicas".into(), "3".into())]);
    s.apply(&Command::AlterTopicConfig { name: "t".into(), config }).unwrap();
    let actions = plan_topics(&s, 1, "c", &LogConfig::default(), &local);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0], Action::Grow { name: "t".into(), count: 4 });
    let Action::Alter { config, .. } = &actions[1] else { panic!("{actions:?}") };
    assert_eq!(config.retention_ms, 1000);
}

#[test]
fn deleted_and_recreated_topics_are_deleted_first_foreign_ones_kept() {
    let s0 = state_with(&[("t", 1, 3)], 3);
    let mut local = BTreeMap::from([("t".to_owned(), local_of(&s0, "t"))]);
    local
        .insert("old".into(), LocalTopic { id: Uuid::new_v4(), partitions: 1, config: LogConfig::default() });
    let mut s = s0.clone();
    s.apply(&Command::DeleteTopic { name: "t".into() }).unwrap();
    assert_eq!(
        plan_topics(&s, 1, "c", &LogConfig::default(), &local),
        vec![Action::Delete { name: "t".into() }]
    );
    s.apply(&Command::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        config: BTreeMap::new(),
    })
    .unwrap();
    let actions = plan_topics(&s, 1, "c", &LogConfig::default(), &local);
    assert_eq!(actions[0], Action::Delete { name: "t".into() });
    assert!(matches!(&actions[1], Action::Create { id, .. } if *id == local_topic_id("c", s.topics["t"].id)));
    assert_eq!(actions.len(), 2);
}

#[test]
fn roles_follow_the_partition_state() {
    let peers = BTreeMap::from([(1, "a:1".to_owned()), (2, "b:2".to_owned()), (3, "c:3".to_owned())]);
    let p = PartitionState { replicas: vec![2, 1, 3], leader: Some(2), leader_epoch: 4, isr: vec![2, 1] };
    assert_eq!(
        role_for(&p, 2, 2, |id| peers.get(&id).cloned()),
        Role::Leader { epoch: 4, replicas: vec![2, 1, 3], isr: vec![2, 1], min_insync_replicas: 2 }
    );
    assert_eq!(
        role_for(&p, 2, 1, |id| peers.get(&id).cloned()),
        Role::Follower { epoch: 4, leader: 2, leader_peer_addr: "b:2".into() },
        "the leader's address from this node's own --peers"
    );
    assert_eq!(role_for(&p, 2, 4, |id| peers.get(&id).cloned()), Role::Offline { epoch: 4 }, "not a replica");
    let offline = PartitionState { leader: None, leader_epoch: 5, ..p };
    assert_eq!(role_for(&offline, 2, 1, |id| peers.get(&id).cloned()), Role::Offline { epoch: 5 });
}

#[test]
fn min_insync_replicas_defaults_to_two_at_most() {
    let s = state_with(&[("t", 1, 3), ("u", 1, 1)], 3);
    assert_eq!(min_insync_replicas(&s.topics["t"], 3), 2);
    assert_eq!(min_insync_replicas(&s.topics["u"], 1), 1);
    let mut t = s.topics["t"].clone();
    t.config.insert("min_insync_replicas".into(), "3".into());
    assert_eq!(min_insync_replicas(&t, 3), 3);
}
