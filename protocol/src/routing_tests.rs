//! Unit tests of the metadata cache.

use super::*;
use crate::api::{BrokerMetadata, PartitionMetadata, TopicMetadata};

fn partition(partition: u32, leader: i64, leader_epoch: u32) -> PartitionMetadata {
    PartitionMetadata {
        partition,
        error_code: ErrorCode::None,
        log_start_offset: 0,
        log_end_offset: 0,
        high_watermark: 0,
        size_bytes: 0,
        segment_count: 1,
        leader,
        leader_epoch,
        replicas: vec![],
        isr: vec![],
    }
}

fn response(node_id: u64, brokers: &[(u64, &str)], leaders: &[(i64, u32)]) -> MetadataResponse {
    MetadataResponse {
        node_id,
        brokers: brokers.iter().map(|(id, a)| BrokerMetadata { id: *id, addr: (*a).to_owned() }).collect(),
        topics: vec![TopicMetadata {
            error_code: ErrorCode::None,
            name: "t".into(),
            configs: vec![],
            partitions: leaders.iter().enumerate().map(|(i, (l, e))| partition(i as u32, *l, *e)).collect(),
        }],
    }
}

#[test]
fn a_single_node_that_lists_no_broker_is_the_answering_address() {
    let mut cache = MetadataCache::default();
    cache.update(&response(0, &[], &[(0, 0), (0, 0)]), "127.0.0.1:9500", Instant::now());
    assert_eq!(cache.leader("t", 1), Some(0));
    assert_eq!(cache.addr(0), Some("127.0.0.1:9500"));
    assert_eq!(cache.group_coordinator(), Some(0));
    assert_eq!(cache.leader("t", 2), None, "no such partition");
    assert_eq!(cache.leader("u", 0), None, "no such topic");
}

#[test]
fn listed_brokers_and_leaders_are_learnt_and_offline_has_no_leader() {
    let mut cache = MetadataCache::default();
    let brokers = [(3, "h:3"), (1, "h:1"), (2, "h:2")];
    cache.update(&response(2, &brokers, &[(3, 4), (-1, 2)]), "elsewhere:9", Instant::now());
    assert_eq!(cache.route("t", 0), Some(Route { leader: Some(3), epoch: 4 }));
    assert_eq!(cache.route("t", 1), Some(Route { leader: None, epoch: 2 }));
    assert_eq!(cache.addr(2), Some("h:2"), "a listed broker keeps its listed address");
    assert_eq!(cache.brokers().len(), 3);
    assert_eq!(cache.group_coordinator(), Some(1), "lowest node id");
}

#[test]
fn an_older_epoch_never_replaces_a_newer_route() {
    let mut cache = MetadataCache::default();
    let brokers = [(1, "h:1"), (2, "h:2")];
    cache.update(&response(1, &brokers, &[(2, 5)]), "h:1", Instant::now());
    cache.update(&response(1, &brokers, &[(1, 4)]), "h:1", Instant::now());
    assert_eq!(cache.route("t", 0), Some(Route { leader: Some(2), epoch: 5 }), "lagging answer ignored");
    cache.update(&response(1, &brokers, &[(1, 6)]), "h:1", Instant::now());
    assert_eq!(cache.leader("t", 0), Some(1));
}

#[test]
fn an_unknown_topic_is_forgotten() {
    let mut cache = MetadataCache::default();
    cache.update(&response(0, &[], &[(0, 0)]), "a:1", Instant::now());
    let mut gone = response(0, &[], &[]);
    gone.topics[0].error_code = ErrorCode::UnknownTopic;
    cache.update(&gone, "a:1", Instant::now());
    assert_eq!(cache.route("t", 0), None);
}

#[test]
fn refresh_is_due_when_old_or_stale_and_unreachable_brokers_are_skipped_until_then() {
    let mut cache = MetadataCache::default();
    let now = Instant::now();
    let age = Duration::from_secs(60);
    assert!(cache.needs_refresh(now, age), "never fetched");
    cache.update(&response(1, &[(1, "h:1"), (2, "h:2")], &[(1, 0)]), "h:1", now);
    assert!(!cache.needs_refresh(now, age));
    assert!(cache.needs_refresh(now + age, age), "too old");
    cache.mark_unreachable(1);
    assert!(cache.needs_refresh(now, age), "stale at once");
    assert_eq!(cache.group_coordinator(), Some(2), "re-resolved past the lost broker");
    cache.update(&response(2, &[(1, "h:1"), (2, "h:2")], &[(2, 1)]), "h:2", now);
    assert_eq!(cache.group_coordinator(), Some(1), "a refresh tries the lowest id again");
    cache.mark_stale();
    assert!(cache.needs_refresh(now, age));
}

#[test]
fn routing_errors_are_the_moved_partition_codes_and_lost_connections() {
    let server = |code| ClientError::Server { code, message: String::new() };
    assert!(is_routing_error(&server(ErrorCode::NotLeaderOrFollower)));
    assert!(is_routing_error(&server(ErrorCode::FencedLeaderEpoch)));
    assert!(is_routing_error(&ClientError::ConnectionLost("x".into())));
    assert!(!is_routing_error(&server(ErrorCode::CorruptBatch)));
    assert_eq!(parse_bootstrap(" a:1, b:2,,c:3 "), ["a:1", "b:2", "c:3"]);
}
