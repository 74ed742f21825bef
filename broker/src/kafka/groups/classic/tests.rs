//! The classic state machine through the registry, on tokio's paused
//! clock: sleeps advance time instantly and deterministically, so the
//! barrier, the initial delay, deadlines and session expiry are tested
//! without real waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(5);
const DELAY: Duration = Duration::from_millis(100);

fn registry() -> Arc<ClassicGroups> {
    Arc::new(ClassicGroups::new(DELAY, 10, Arc::new(|_, _| Ok(())), CancellationToken::new()))
}

/// A join of member `id` (empty: a new member); a protocol's metadata
/// does not depend on the id, so a rejoin sends the same metadata.
fn request(id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "h".into(),
        protocol_type: "consumer".into(),
        protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta:{p}")))).collect(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        require_known_id: false,
    }
}

fn spawn_join(groups: &Arc<ClassicGroups>, req: JoinRequest) -> JoinHandle<JoinOutcome> {
    let groups = Arc::clone(groups);
    tokio::spawn(async move { groups.join("g", req).await })
}

fn spawn_sync(groups: &Arc<ClassicGroups>, req: SyncRequest) -> JoinHandle<SyncOutcome> {
    let groups = Arc::clone(groups);
    tokio::spawn(async move { groups.sync("g", req).await })
}

fn sync_req(id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        member_id: id.into(),
        generation,
        assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        ..Default::default()
    }
}

/// Joins a new member alone (through the initial delay); returns its id.
async fn join_one(groups: &Arc<ClassicGroups>) -> JoinResult {
    groups.join("g", request("", &["range"])).await.unwrap()
}

/// Three members join together and settle (leader syncs); returns their
/// join results, leader first.
async fn three_settled(groups: &Arc<ClassicGroups>) -> Vec<JoinResult> {
    let joins: Vec<_> = (0..3).map(|_| spawn_join(groups, request("", &["range"]))).collect();
    let mut results = Vec::new();
    for j in joins {
        results.push(j.await.unwrap().unwrap());
    }
    results.sort_by_key(|r| r.leader != r.member_id);
    let leader = &results[0];
    assert_eq!(leader.members.len(), 3);
    let assignments: Vec<(String, String)> =
        leader.members.iter().map(|m| (m.member_id.clone(), format!("a-{}", m.member_id))).collect();
    let pairs: Vec<(&str, &str)> = assignments.iter().map(|(m, a)| (m.as_str(), a.as_str())).collect();
    groups.sync("g", sync_req(&leader.member_id, leader.generation, &pairs)).await.unwrap();
    results
}

#[tokio::test(start_paused = true)]
async fn a_first_join_v4_needs_a_member_id_then_waits_the_initial_delay() {
    let groups = registry();
    let mut req = request("", &["range"]);
    req.require_known_id = true;
    let err = groups.join("g", req.clone()).await.unwrap_err();
    let ClassicError::MemberIdRequired { member_id } = err else { panic!("{err:?}") };
    assert!(member_id.starts_with("c-"), "{member_id}");
    req.member_id = member_id.clone();
    let started = Instant::now();
    let joined = groups.join("g", req).await.unwrap();
    assert_eq!(started.elapsed(), DELAY, "a group that was empty waits the initial delay");
    assert_eq!((joined.generation, joined.leader.as_str()), (1, member_id.as_str()));
    assert_eq!(joined.protocol, "range");
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.members[0].metadata, Bytes::from("meta:range"));
    let err = groups.join("g", request("made-up", &["range"])).await.unwrap_err();
    assert_eq!(err, ClassicError::UnknownMember, "an id the group never handed out");
}

#[tokio::test(start_paused = true)]
async fn members_joining_together_pass_one_barrier_and_the_first_leads() {
    let groups = registry();
    let results = three_settled(&groups).await;
    let leader = results[0].member_id.clone();
    for r in &results {
        assert_eq!((r.generation, r.leader.as_str()), (1, leader.as_str()));
    }
    assert!(
        results[1].members.is_empty() && results[2].members.is_empty(),
        "only the leader gets the members"
    );
    assert_eq!(groups.describe("g").unwrap().state, "Stable");
}

#[tokio::test(start_paused = true)]
async fn the_protocol_is_chosen_by_vote_among_those_all_support() {
    let groups = registry();
    let a = spawn_join(&groups, request("", &["range", "roundrobin", "sticky"]));
    let b = spawn_join(&groups, request("", &["roundrobin", "range"]));
    let c = spawn_join(&groups, request("", &["roundrobin", "range"]));
    for j in [a, b, c] {
        assert_eq!(
            j.await.unwrap().unwrap().protocol,
            "roundrobin",
            "two votes to one; sticky is not common"
        );
    }
    let err = groups.join("g", request("", &["cooperative-sticky"])).await.unwrap_err();
    assert_eq!(err, ClassicError::InconsistentProtocol, "no protocol in common with the members");
    let mut other_type = request("", &["range"]);
    other_type.protocol_type = "connect".into();
    assert_eq!(groups.join("g", other_type).await.unwrap_err(), ClassicError::InconsistentProtocol);
    assert_eq!(groups.join("h", request("", &[])).await.unwrap_err(), ClassicError::InconsistentProtocol);
}

#[tokio::test(start_paused = true)]
async fn followers_wait_for_the_leaders_assignments() {
    let groups = registry();
    let joins: Vec<_> = (0..2).map(|_| spawn_join(&groups, request("", &["range"]))).collect();
    let mut results = Vec::new();
    for j in joins {
        results.push(j.await.unwrap().unwrap());
    }
    results.sort_by_key(|r| r.leader != r.member_id);
    let (leader, follower) = (&results[0], &results[1]);
    let waiting = spawn_sync(&groups, sync_req(&follower.member_id, 1, &[]));
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "the follower waits for the leader");
    let assignments = [(leader.member_id.as_str(), "A"), (follower.member_id.as_str(), "B")];
    let own = groups.sync("g", sync_req(&leader.member_id, 1, &assignments)).await.unwrap();
    assert_eq!(own, Bytes::from("A"));
    assert_eq!(waiting.await.unwrap().unwrap(), Bytes::from("B"));
    let again = groups.sync("g", sync_req(&follower.member_id, 1, &[])).await.unwrap();
    assert_eq!(again, Bytes::from("B"), "a stable group answers from what the leader sent");
    let err = groups.sync("g", sync_req(&follower.member_id, 7, &[])).await.unwrap_err();
    assert_eq!(err, ClassicError::IllegalGeneration);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_report_unknown_members_generations_and_rebalances() {
    let groups = registry();
    let results = three_settled(&groups).await;
    let id = &results[1].member_id;
    assert_eq!(groups.heartbeat("g", id, None, 1), Ok(()));
    assert_eq!(groups.heartbeat("g", "ghost", None, 1), Err(ClassicError::UnknownMember));
    assert_eq!(groups.heartbeat("nope", id, None, 1), Err(ClassicError::UnknownMember));
    assert_eq!(groups.heartbeat("g", id, None, 0), Err(ClassicError::IllegalGeneration));
    // A new member joins: the others are told to rejoin.
    let newcomer = spawn_join(&groups, request("", &["range"]));
    tokio::task::yield_now().await;
    assert_eq!(groups.heartbeat("g", id, None, 1), Err(ClassicError::RebalanceInProgress));
    let rejoins: Vec<_> =
        results.iter().map(|r| spawn_join(&groups, request(&r.member_id, &["range"]))).collect();
    let joined = newcomer.await.unwrap().unwrap();
    assert_eq!(joined.generation, 2);
    assert_eq!(joined.leader, results[0].member_id, "the leader stays the leader");
    for r in rejoins {
        assert_eq!(r.await.unwrap().unwrap().generation, 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stops_heartbeating_expires_and_the_group_rebalances() {
    let groups = registry();
    let results = three_settled(&groups).await;
    let (a, b) = (&results[0].member_id, &results[1].member_id);
    // `a` and `b` heartbeat every 3 s; the third member never does.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        groups.heartbeat("g", a, None, 1).unwrap();
        groups.heartbeat("g", b, None, 1).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(groups.heartbeat("g", a, None, 1), Err(ClassicError::RebalanceInProgress), "12 s > session");
    assert_eq!(groups.heartbeat("g", &results[2].member_id, None, 1), Err(ClassicError::UnknownMember));
    let ja = spawn_join(&groups, request(a, &["range"]));
    let jb = spawn_join(&groups, request(b, &["range"]));
    let leader = ja.await.unwrap().unwrap();
    assert_eq!((leader.generation, leader.members.len()), (2, 2));
    jb.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline() {
    let groups = registry();
    let results = three_settled(&groups).await;
    let started = Instant::now();
    let leader = groups.join("g", request(&results[0].member_id, &["range", "roundrobin"])).await.unwrap();
    assert_eq!(started.elapsed(), REBALANCE, "waited for the others until the deadline");
    assert_eq!((leader.generation, leader.members.len()), (2, 1));
    assert_eq!(groups.heartbeat("g", &results[1].member_id, None, 1), Err(ClassicError::UnknownMember));
}

#[tokio::test(start_paused = true)]
async fn a_leaving_member_triggers_a_rebalance_and_the_last_one_empties_the_group() {
    let groups = registry();
    let results = three_settled(&groups).await;
    assert_eq!(groups.leave("g", &results[2].member_id, None), Ok(results[2].member_id.clone()));
    assert_eq!(groups.leave("g", &results[2].member_id, None), Err(ClassicError::UnknownMember));
    assert_eq!(groups.describe("g").unwrap().state, "PreparingRebalance");
    let ja = spawn_join(&groups, request(&results[0].member_id, &["range"]));
    let jb = spawn_join(&groups, request(&results[1].member_id, &["range"]));
    let started = Instant::now();
    assert_eq!(ja.await.unwrap().unwrap().generation, 2);
    assert!(started.elapsed() < DELAY, "no initial delay: the group was not empty");
    jb.await.unwrap().unwrap();
    groups.leave("g", &results[0].member_id, None).unwrap();
    groups.leave("g", &results[1].member_id, None).unwrap();
    let view = groups.describe("g").unwrap();
    assert_eq!((view.state, view.members.len()), ("Empty", 0));
    groups.sweep();
    assert!(groups.describe("g").is_none(), "an empty group is forgotten");
}

#[tokio::test(start_paused = true)]
async fn a_follower_rejoining_a_stable_group_unchanged_gets_the_current_generation() {
    let groups = registry();
    let results = three_settled(&groups).await;
    let again = groups.join("g", request(&results[1].member_id, &["range"])).await.unwrap();
    assert_eq!(again.generation, 1, "no rebalance");
    assert_eq!(groups.describe("g").unwrap().state, "Stable");
    // Changed metadata (a cooperative member's owned partitions) rebalances.
    let mut changed = request(&results[1].member_id, &["range"]);
    changed.protocols[0].1 = Bytes::from("owned: less");
    let j = spawn_join(&groups, changed);
    tokio::task::yield_now().await;
    assert_eq!(groups.describe("g").unwrap().state, "PreparingRebalance");
    let others: Vec<_> =
        [0, 2].iter().map(|i| spawn_join(&groups, request(&results[*i].member_id, &["range"]))).collect();
    assert_eq!(j.await.unwrap().unwrap().generation, 2);
    for o in others {
        o.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn commits_check_member_generation_and_state() {
    let groups = registry();
    assert_eq!(groups.check_commit("g", "", None, -1), Ok(()), "a simple commit to an unknown group");
    let joined = join_one(&groups).await;
    let id = joined.member_id.clone();
    assert_eq!(
        groups.check_commit("g", "", None, -1),
        Err(ClassicError::UnknownMember),
        "the group has members"
    );
    assert_eq!(
        groups.check_commit("g", &id, None, 1),
        Err(ClassicError::RebalanceInProgress),
        "awaiting the sync"
    );
    groups.sync("g", sync_req(&id, 1, &[(&id, "x")])).await.unwrap();
    assert_eq!(groups.check_commit("g", &id, None, 1), Ok(()));
    assert_eq!(groups.check_commit("g", &id, None, 2), Err(ClassicError::IllegalGeneration));
    groups.leave("g", &id, None).unwrap();
    assert_eq!(groups.check_commit("g", "", None, -1), Ok(()), "empty again");
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_join_does_not_count_and_its_member_expires() {
    let groups = registry();
    let results = three_settled(&groups).await;
    // Members 0 and 1 rejoin; member 2's join is abandoned (its
    // connection closed: the request's future is dropped).
    let abandoned = spawn_join(&groups, request(&results[2].member_id, &["range"]));
    tokio::task::yield_now().await;
    abandoned.abort();
    let _ = abandoned.await;
    let started = Instant::now();
    let ja = spawn_join(&groups, request(&results[0].member_id, &["range"]));
    let jb = spawn_join(&groups, request(&results[1].member_id, &["range"]));
    let leader = ja.await.unwrap().unwrap();
    jb.await.unwrap().unwrap();
    assert_eq!((leader.generation, leader.members.len()), (2, 2), "the abandoned member is out");
    assert_eq!(started.elapsed(), REBALANCE, "removed at the rebalance deadline, not awaited forever");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_never_syncs_is_dropped_after_the_rebalance_timeout() {
    let groups = registry();
    let joins: Vec<_> = (0..2).map(|_| spawn_join(&groups, request("", &["range"]))).collect();
    let mut results = Vec::new();
    for j in joins {
        results.push(j.await.unwrap().unwrap());
    }
    let follower = results.iter().find(|r| r.leader != r.member_id).unwrap().clone();
    let err = groups.sync("g", sync_req(&follower.member_id, 1, &[])).await.unwrap_err();
    assert_eq!(err, ClassicError::RebalanceInProgress, "the leader was dropped: rejoin");
    assert_eq!(groups.heartbeat("g", &follower.leader, None, 1), Err(ClassicError::UnknownMember));
    let rejoined = groups.join("g", request(&follower.member_id, &["range"])).await.unwrap();
    assert_eq!((rejoined.generation, rejoined.leader.as_str()), (2, follower.member_id.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_static_member_rejoining_takes_its_place_without_a_rebalance() {
    let groups = registry();
    let mut stat = request("", &["range"]);
    stat.instance_id = Some("i-1".into());
    stat.require_known_id = true;
    let leader = spawn_join(&groups, request("", &["range"]));
    let follower = spawn_join(&groups, stat.clone());
    let (leader, first) = (leader.await.unwrap().unwrap(), follower.await.unwrap().unwrap());
    assert_eq!(first.leader, leader.member_id, "the first to join leads");
    let assignments = [(leader.member_id.as_str(), "A"), (first.member_id.as_str(), "mine")];
    groups.sync("g", sync_req(&leader.member_id, 1, &assignments)).await.unwrap();
    let again = groups.join("g", stat).await.unwrap();
    assert_ne!(again.member_id, first.member_id, "a new id for the restarted instance");
    assert_eq!(again.generation, 1, "no rebalance");
    let mut sync = sync_req(&again.member_id, 1, &[]);
    sync.instance_id = Some("i-1".into());
    assert_eq!(groups.sync("g", sync).await.unwrap(), Bytes::from("mine"), "its assignment was kept");
    assert_eq!(groups.heartbeat("g", &first.member_id, Some("i-1"), 1), Err(ClassicError::FencedInstance));
    assert_eq!(groups.heartbeat("g", &first.member_id, None, 1), Err(ClassicError::UnknownMember));
    assert_eq!(groups.heartbeat("g", &again.member_id, Some("i-1"), 1), Ok(()));
    assert_eq!(groups.leave("g", "", Some("i-1")), Ok(again.member_id.clone()), "a leave by instance id");
}

#[tokio::test(start_paused = true)]
async fn the_native_coordinator_hears_the_member_count_and_may_refuse() {
    let claimed = Arc::new(AtomicUsize::new(99));
    let seen = Arc::clone(&claimed);
    let claim: Claim = Arc::new(move |_, n| {
        seen.store(n, Ordering::SeqCst);
        Ok(())
    });
    let groups = Arc::new(ClassicGroups::new(DELAY, 10, claim, CancellationToken::new()));
    let joined = join_one(&groups).await;
    assert_eq!(claimed.load(Ordering::SeqCst), 1);
    groups.leave("g", &joined.member_id, None).unwrap();
    assert_eq!(claimed.load(Ordering::SeqCst), 0);
    let refusing: Claim =
        Arc::new(|_, n| if n > 0 { Err(ClassicError::InconsistentProtocol) } else { Ok(()) });
    let groups = Arc::new(ClassicGroups::new(DELAY, 10, refusing, CancellationToken::new()));
    assert_eq!(
        groups.join("g", request("", &["range"])).await.unwrap_err(),
        ClassicError::InconsistentProtocol
    );
}

#[tokio::test(start_paused = true)]
async fn bad_session_timeouts_and_full_registries_are_refused() {
    let groups = Arc::new(ClassicGroups::new(DELAY, 1, Arc::new(|_, _| Ok(())), CancellationToken::new()));
    let mut req = request("", &["range"]);
    req.session_timeout = Duration::from_millis(10);
    assert_eq!(groups.join("g", req).await.unwrap_err(), ClassicError::InvalidSessionTimeout);
    join_one(&groups).await;
    let err = groups.join("other", request("", &["range"])).await.unwrap_err();
    assert_eq!(err, ClassicError::CoordinatorNotAvailable, "max_groups = 1");
}

#[tokio::test(start_paused = true)]
async fn waits_end_when_the_broker_stops() {
    let stop = CancellationToken::new();
    let groups = Arc::new(ClassicGroups::new(DELAY, 10, Arc::new(|_, _| Ok(())), stop.clone()));
    let results = {
        let a = spawn_join(&groups, request("", &["range"]));
        let b = spawn_join(&groups, request("", &["range"]));
        [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()]
    };
    let follower = results.iter().find(|r| r.leader != r.member_id).unwrap();
    let waiting = spawn_sync(&groups, sync_req(&follower.member_id, 1, &[]));
    tokio::task::yield_now().await;
    stop.cancel();
    assert_eq!(waiting.await.unwrap().unwrap_err(), ClassicError::CoordinatorNotAvailable);
}
