//! Unit and property tests of the controller state machine.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn register(id: BrokerId, lease_until_ms: u64) -> Command {
    Command::RegisterBroker {
        id,
        client_addr: format!("127.0.0.1:{}", 9000 + id),
        kafka_addr: None,
        peer_addr: format!("127.0.0.1:{}", 9100 + id),
        lease_until_ms,
    }
}

fn create(name: &str, partitions: u32, rf: u16) -> Command {
    Command::CreateTopic { name: name.into(), partitions, replication_factor: rf, config: BTreeMap::new() }
}

fn three_brokers() -> ControllerState {
    let mut s = ControllerState::default();
    for id in 1..=3 {
        s.apply(&register(id, 1_000)).unwrap();
    }
    s
}

#[test]
fn create_topic_places_distinct_replicas_and_spreads_leaders() {
    let mut s = three_brokers();
    assert_eq!(s.apply(&create("t", 6, 3)), Ok(Outcome::TopicCreated { id: 0 }));
    let t = &s.topics["t"];
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        let mut r = p.replicas.clone();
        r.sort_unstable();
        r.dedup();
        assert_eq!(r.len(), 3, "{p:?}");
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, Some(p.replicas[0]));
        assert_eq!(p.leader_epoch, 0);
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(leaders.len(), 3, "every broker leads some partition: {leaders:?}");
    assert_eq!(s.apply(&create("u", 1, 1)), Ok(Outcome::TopicCreated { id: 1 }));
}

#[test]
fn create_topic_refusals_leave_state_unchanged() {
    let mut s = three_brokers();
    s.apply(&create("t", 1, 1)).unwrap();
    let before = s.clone();
    assert_eq!(s.apply(&create("t", 1, 1)), Err(CommandError::TopicExists("t".into())));
    assert_eq!(s.apply(&create("x", 0, 1)), Err(CommandError::InvalidPartitions));
    assert_eq!(
        s.apply(&create("x", 1, 4)),
        Err(CommandError::InvalidReplicationFactor { requested: 4, live: 3 })
    );
    assert_eq!(
        s.apply(&create("x", 1, 0)),
        Err(CommandError::InvalidReplicationFactor { requested: 0, live: 3 })
    );
    assert_eq!(s, before);
}

#[test]
fn placement_skips_fenced_brokers() {
    let mut s = three_brokers();
    s.apply(&Command::BrokerHeartbeat { id: 1, lease_until_ms: 5_000 }).unwrap();
    s.apply(&Command::BrokerHeartbeat { id: 2, lease_until_ms: 5_000 }).unwrap();
    assert_eq!(s.apply(&Command::ExpireLeases { now_ms: 2_000 }), Ok(Outcome::Fenced { brokers: vec![3] }));
    assert_eq!(s.live_brokers(), vec![1, 2]);
    assert!(s.apply(&create("t", 4, 3)).is_err());
    s.apply(&create("t", 4, 2)).unwrap();
    assert!(s.topics["t"].partitions.iter().all(|p| !p.replicas.contains(&3)));
}

#[test]
fn expired_leader_fails_over_to_isr_with_new_epoch() {
    let mut s = three_brokers();
    s.apply(&create("t", 1, 3)).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    let old = p.leader.unwrap();
    for b in p.replicas.iter().filter(|&&b| b != old) {
        s.apply(&Command::BrokerHeartbeat { id: *b, lease_until_ms: 10_000 }).unwrap();
    }
    s.apply(&Command::ExpireLeases { now_ms: 1_000 }).unwrap();
    let q = s.partition("t", 0).unwrap();
    assert_ne!(q.leader, Some(old));
    assert_eq!(q.leader, Some(p.replicas[1]), "next replica in preference order");
    assert_eq!(q.leader_epoch, 1);
    assert!(!q.isr.contains(&old));
    assert_eq!(s.under_replicated_partitions(), vec![("t".to_owned(), 0)]);
    // The old leader's ISR change is fenced by epoch.
    let stale =
        Command::AlterIsr { topic: "t".into(), partition: 0, leader: old, leader_epoch: 0, isr: vec![old] };
    assert!(matches!(s.apply(&stale), Err(CommandError::FencedLeader { .. })));
}

#[test]
fn a_leader_that_registers_again_hands_over_with_a_new_epoch() {
    let mut s = three_brokers();
    s.apply(&create("t", 3, 3)).unwrap();
    let before = s.topics["t"].partitions.clone();
    let restarted = before[0].leader.unwrap();
    // It restarted within its lease: the same id registers again.
    s.apply(&register(restarted, 2_000)).unwrap();
    for (old, new) in before.iter().zip(&s.topics["t"].partitions) {
        if old.leader == Some(restarted) {
            assert_eq!(new.leader_epoch, old.leader_epoch + 1, "{new:?}");
            let leader = new.leader.unwrap();
            assert_ne!(leader, restarted, "another live ISR member leads: {new:?}");
            assert!(old.isr.contains(&leader));
        } else {
            assert_eq!((new.leader, new.leader_epoch), (old.leader, old.leader_epoch), "{new:?}");
        }
        // It left every ISR until its leaders see it caught up.
        assert!(!new.isr.contains(&restarted), "{new:?}");
        assert_eq!(new.isr.len(), old.isr.len() - 1, "{new:?}");
    }
    // Alone in the ISR, it keeps leading, at a new epoch.
    let mut s = ControllerState::default();
    s.apply(&register(1, 1_000)).unwrap();
    s.apply(&create("solo", 1, 1)).unwrap();
    s.apply(&register(1, 2_000)).unwrap();
    let p = &s.topics["solo"].partitions[0];
    assert_eq!((p.leader, p.leader_epoch), (Some(1), 1));
}

#[test]
fn no_unclean_election_partition_goes_offline_and_comes_back_with_isr() {
    let mut s = three_brokers();
    s.apply(&create("t", 1, 3)).unwrap();
    let leader = s.partition("t", 0).unwrap().leader.unwrap();
    let followers: Vec<_> = s.partition("t", 0).unwrap().replicas[1..].to_vec();
    // The leader drops both followers from its ISR (they lag).
    let shrink =
        Command::AlterIsr { topic: "t".into(), partition: 0, leader, leader_epoch: 0, isr: vec![leader] };
    s.apply(&shrink).unwrap();
    for f in &followers {
        s.apply(&Command::BrokerHeartbeat { id: *f, lease_until_ms: 10_000 }).unwrap();
    }
    s.apply(&Command::ExpireLeases { now_ms: 2_000 }).unwrap();
    let p = s.partition("t", 0).unwrap();
    assert_eq!(p.leader, None, "out-of-sync followers never lead");
    assert_eq!(p.leader_id(), NO_LEADER);
    assert_eq!(p.leader_epoch, 1);
    assert_eq!(p.isr, vec![leader], "the last ISR is kept");
    assert_eq!(s.offline_partitions(), vec![("t".to_owned(), 0)]);
    // The old leader heartbeats again: it leads, at a new epoch.
    s.apply(&Command::BrokerHeartbeat { id: leader, lease_until_ms: 10_000 }).unwrap();
    let p = s.partition("t", 0).unwrap();
    assert_eq!((p.leader, p.leader_epoch), (Some(leader), 2));
    assert!(s.offline_partitions().is_empty());
}

#[test]
fn alter_isr_rules() {
    let mut s = three_brokers();
    s.apply(&create("t", 1, 3)).unwrap();
    let p = s.partition("t", 0).unwrap().clone();
    let l = p.leader.unwrap();
    let alter = |isr: Vec<BrokerId>| Command::AlterIsr {
        topic: "t".into(),
        partition: 0,
        leader: l,
        leader_epoch: 0,
        isr,
    };
    let other = p.replicas[1];
    assert!(matches!(s.apply(&alter(vec![other])), Err(CommandError::InvalidIsr(_))));
    assert!(matches!(s.apply(&alter(vec![l, 99])), Err(CommandError::InvalidIsr(_))));
    assert!(matches!(s.apply(&alter(vec![l, l])), Err(CommandError::InvalidIsr(_))));
    s.apply(&alter(vec![l])).unwrap();
    assert_eq!(s.partition("t", 0).unwrap().isr, vec![l]);
    // Expand back, in any order: stored in replica order.
    s.apply(&alter(p.replicas.iter().rev().copied().collect())).unwrap();
    assert_eq!(s.partition("t", 0).unwrap().isr, p.replicas);
    // A fenced broker cannot be added.
    s.apply(&alter(vec![l])).unwrap();
    for b in [l, p.replicas[2]] {
        s.apply(&Command::BrokerHeartbeat { id: b, lease_until_ms: 10_000 }).unwrap();
    }
    s.apply(&Command::ExpireLeases { now_ms: 5_000 }).unwrap();
    assert!(matches!(s.apply(&alter(vec![l, other])), Err(CommandError::InvalidIsr(_))));
    let unknown =
        Command::AlterIsr { topic: "t".into(), partition: 7, leader: l, leader_epoch: 0, isr: vec![l] };
    assert!(matches!(s.apply(&unknown), Err(CommandError::UnknownPartition { .. })));
}

#[test]
fn heartbeat_and_delete_errors() {
    let mut s = three_brokers();
    assert_eq!(
        s.apply(&Command::BrokerHeartbeat { id: 9, lease_until_ms: 1 }),
        Err(CommandError::UnknownBroker(9))
    );
    // A heartbeat never moves a lease back.
    s.apply(&Command::BrokerHeartbeat { id: 1, lease_until_ms: 10 }).unwrap();
    assert_eq!(s.brokers[&1].lease_until_ms, 1_000);
    assert_eq!(
        s.apply(&Command::DeleteTopic { name: "t".into() }),
        Err(CommandError::UnknownTopic("t".into()))
    );
    s.apply(&create("t", 1, 1)).unwrap();
    s.apply(&Command::DeleteTopic { name: "t".into() }).unwrap();
    assert_eq!(s.apply(&create("t", 1, 1)), Ok(Outcome::TopicCreated { id: 1 }), "new id");
}

#[test]
fn add_partitions_places_new_ones_and_refuses_shrinking() {
    let mut s = three_brokers();
    s.apply(&create("t", 2, 2)).unwrap();
    let before = s.clone();
    let grow = |count| Command::AddPartitions { name: "t".into(), count };
    assert_eq!(
        s.apply(&grow(2)),
        Err(CommandError::PartitionsNotGrown { topic: "t".into(), current: 2, requested: 2 })
    );
    assert_eq!(
        s.apply(&Command::AddPartitions { name: "x".into(), count: 3 }),
        Err(CommandError::UnknownTopic("x".into()))
    );
    assert_eq!(s, before);
    s.apply(&grow(5)).unwrap();
    let t = &s.topics["t"];
    assert_eq!(t.partitions.len(), 5);
    assert_eq!(t.partitions[..2], before.topics["t"].partitions[..], "old partitions unchanged");
    for p in &t.partitions[2..] {
        assert_eq!(p.replicas.len(), 2);
        assert_eq!((p.leader, p.leader_epoch, &p.isr), (Some(p.replicas[0]), 0, &p.replicas));
    }
}

#[test]
fn alter_topic_config_replaces_the_settings() {
    let mut s = three_brokers();
    s.apply(&create("t", 1, 1)).unwrap();
    let config = BTreeMap::from([("retention_ms".to_owned(), "5".to_owned())]);
    s.apply(&Command::AlterTopicConfig { name: "t".into(), config: config.clone() }).unwrap();
    assert_eq!(s.topics["t"].config, config);
    assert_eq!(
        s.apply(&Command::AlterTopicConfig { name: "x".into(), config }),
        Err(CommandError::UnknownTopic("x".into()))
    );
}

#[test]
fn commands_round_trip_through_json() {
    let cmds = [
        register(1, 5),
        create("t", 3, 2),
        Command::ExpireLeases { now_ms: 7 },
        Command::AddPartitions { name: "t".into(), count: 4 },
        Command::AlterTopicConfig { name: "t".into(), config: BTreeMap::new() },
    ];
    for c in cmds {
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), c);
        assert!(!c.to_string().is_empty());
    }
}

fn arb_command() -> impl Strategy<Value = Command> {
    let id = 1u64..=4;
    prop_oneof![
        (id.clone(), 0u64..100).prop_map(|(id, t)| register(id, t)),
        (id.clone(), 0u64..100).prop_map(|(id, t)| Command::BrokerHeartbeat { id, lease_until_ms: t }),
        ("[ab]", 1u32..4, 1u16..4).prop_map(|(n, p, rf)| create(&n, p, rf)),
        "[ab]".prop_map(|name| Command::DeleteTopic { name }),
        ("[ab]", 0u32..6).prop_map(|(name, count)| Command::AddPartitions { name, count }),
        ("[ab]", "[xy]").prop_map(|(name, v)| Command::AlterTopicConfig {
            name,
            config: BTreeMap::from([("retention_ms".to_owned(), v)])
        }),
        ("[ab]", 0u32..3, id.clone(), 0u32..4, proptest::collection::vec(1u64..=4, 0..4)).prop_map(
            |(topic, partition, leader, leader_epoch, isr)| Command::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                isr
            }
        ),
        (0u64..100).prop_map(|now_ms| Command::ExpireLeases { now_ms }),
    ]
}

/// `(topic id, partition) -> epoch -> leader` seen so far.
type History = BTreeMap<(u64, usize), BTreeMap<u32, Option<BrokerId>>>;

fn check_invariants(before: &ControllerState, after: &ControllerState, seen: &mut History) {
    for t in after.topics.values() {
        if let Some(prev) = before.topics.values().find(|b| b.id == t.id) {
            assert!(t.partitions.len() >= prev.partitions.len(), "a topic lost partitions");
        }
        for (i, p) in t.partitions.iter().enumerate() {
            let distinct: std::collections::BTreeSet<_> = p.replicas.iter().collect();
            assert_eq!(distinct.len(), p.replicas.len(), "a replica twice: {p:?}");
            assert!(!p.isr.is_empty(), "empty ISR: {p:?}");
            assert!(p.isr.iter().all(|b| p.replicas.contains(b)), "ISR outside replicas: {p:?}");
            if let Some(l) = p.leader {
                assert!(p.isr.contains(&l), "leader outside ISR: {p:?}");
                assert!(after.is_live(l), "fenced leader: {p:?}");
            }
            let prev = before.topics.values().find(|b| b.id == t.id).and_then(|b| b.partitions.get(i));
            if let Some(prev) = prev {
                assert!(p.leader_epoch >= prev.leader_epoch, "epoch went back");
                if p.leader != prev.leader {
                    assert!(p.leader_epoch > prev.leader_epoch, "leader changed without a new epoch");
                    if let Some(l) = p.leader {
                        assert!(prev.isr.contains(&l), "unclean election: {prev:?} -> {p:?}");
                    }
                }
            }
            let epochs = seen.entry((t.id, i)).or_default();
            let first = *epochs.entry(p.leader_epoch).or_insert(p.leader);
            assert_eq!(first, p.leader, "two leaders for epoch {}", p.leader_epoch);
        }
    }
}

proptest! {
    #[test]
    fn invariants_hold_over_any_command_sequence(cmds in proptest::collection::vec(arb_command(), 1..60)) {
        let mut s = ControllerState::default();
        let mut seen = History::new();
        for c in &cmds {
            let before = s.clone();
            if s.apply(c).is_err() {
                prop_assert_eq!(&s, &before, "a refused command changed the state");
            }
            check_invariants(&before, &s, &mut seen);
        }
    }

    #[test]
    fn replaying_the_same_log_gives_the_same_state(cmds in proptest::collection::vec(arb_command(), 1..40)) {
        let (mut a, mut b) = (ControllerState::default(), ControllerState::default());
        for c in &cmds {
            prop_assert_eq!(a.apply(c), b.apply(c));
        }
        prop_assert_eq!(a, b);
    }
}
