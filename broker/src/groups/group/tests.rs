//! The coordinator's state machine without a broker: a [`Rig`] holds one
//! [`Group`], the partition counts and a hand-moved clock, and plays
//! well-behaved members (each reports as owned what it was last given, so a
//! revoked partition is released on the member's next heartbeat).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sluice_protocol::api::{GroupHeartbeatRequest, GroupHeartbeatResponse, TopicPartitions, LEAVE_EPOCH};

use super::*;

const SESSION_MS: u32 = 10_000;

struct Rig {
    group: Group,
    counts: BTreeMap<String, u32>,
    now: Instant,
    joined: u32,
    /// Member id → (subscription, last assignment received).
    members: BTreeMap<String, (Vec<String>, BTreeSet<Tp>)>,
}

fn tp(topic: &str, partition: u32) -> Tp {
    Tp::new(topic, partition)
}

fn owned_list(owned: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    group_tps(owned)
}

fn tps(response: &GroupHeartbeatResponse) -> BTreeSet<Tp> {
    response.assignment.iter().flat_map(|t| t.partitions.iter().map(|p| tp(&t.topic, *p))).collect()
}

impl Rig {
    fn new(counts: &[(&str, u32)]) -> Self {
        Self {
            group: Group::default(),
            counts: counts.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            now: Instant::now(),
            joined: 0,
            members: BTreeMap::new(),
        }
    }

    fn request(
        &self,
        member_id: &str,
        epoch: u32,
        topics: &[String],
        owned: &BTreeSet<Tp>,
    ) -> GroupHeartbeatRequest {
        GroupHeartbeatRequest {
            group: "g".into(),
            member_id: member_id.into(),
            member_epoch: epoch,
            client_host: "host".into(),
            session_timeout_ms: SESSION_MS,
            topics: topics.to_vec(),
            owned: owned_list(owned),
        }
    }

    fn send(&mut self, req: &GroupHeartbeatRequest) -> Result<GroupHeartbeatResponse, GroupError> {
        let joined = &mut self.joined;
        let new_id = || {
            *joined += 1;
            format!("c-{joined}")
        };
        self.group.heartbeat(req, "c", &self.counts, new_id, self.now)
    }

    /// A new member subscribed to `topics`; returns its id.
    fn join(&mut self, topics: &[&str]) -> String {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let req = self.request("", 0, &topics, &BTreeSet::new());
        let response = self.send(&req).expect("join");
        self.members.insert(response.member_id.clone(), (topics, tps(&response)));
        response.member_id
    }

    /// Member `id` heartbeats, reporting what it was last given; records
    /// what it is given now.
    fn beat(&mut self, id: &str) -> Result<GroupHeartbeatResponse, GroupError> {
        let (topics, owned) = self.members.get(id).cloned().expect("a member the rig knows");
        self.beat_owning(id, &topics, &owned)
    }

    fn beat_owning(
        &mut self,
        id: &str,
        topics: &[String],
        owned: &BTreeSet<Tp>,
    ) -> Result<GroupHeartbeatResponse, GroupError> {
        let req = self.request(id, 1, topics, owned);
        let response = self.send(&req)?;
        if let Some(m) = self.members.get_mut(id) {
            m.1 = tps(&response);
        }
        Ok(response)
    }

    /// Every member heartbeats until the group is stable.
    fn settle(&mut self) {
        for _ in 0..10 {
            let ids: Vec<String> = self.members.keys().cloned().collect();
            for id in ids {
                self.beat(&id).expect("heartbeat");
            }
            if !self.group.reconciling() {
                return;
            }
        }
        panic!("the group did not settle: {:?}", self.group.target);
    }

    fn leave(&mut self, id: &str) -> GroupHeartbeatResponse {
        let req = self.request(id, LEAVE_EPOCH, &[], &BTreeSet::new());
        self.members.remove(id);
        self.send(&req).expect("leave")
    }

    /// What each member was last given.
    fn assignment(&self) -> BTreeMap<Tp, String> {
        self.members
            .iter()
            .flat_map(|(id, (_, given))| given.iter().map(move |tp| (tp.clone(), id.clone())))
            .collect()
    }

    /// No partition is held (given or being revoked) by two members.
    fn assert_exclusive(&self) {
        let mut seen: BTreeMap<&Tp, &str> = BTreeMap::new();
        for (id, m) in &self.group.members {
            for tp in m.given.iter().chain(m.revoking.keys()) {
                if let Some(other) = seen.insert(tp, id) {
                    panic!("{tp:?} held by both {other} and {id}");
                }
            }
        }
    }
}

#[test]
fn a_first_member_joins_and_gets_every_partition() {
    let mut rig = Rig::new(&[("t", 3)]);
    let req = rig.request("", 0, &["t".into()], &BTreeSet::new());
    let response = rig.send(&req).unwrap();
    assert_eq!(response.member_id, "c-1");
    assert_eq!(
        response.member_epoch, 2,
        "the join and the first partition counts each moved the group epoch"
    );
    assert_eq!(tps(&response), [tp("t", 0), tp("t", 1), tp("t", 2)].into());
    assert_eq!(response.heartbeat_interval_ms, 3000, "stable: a third of the session, at most 3 s");
    assert_eq!(rig.group.state(), "Stable");
    let member = &rig.group.members["c-1"];
    assert_eq!((member.client_id.as_str(), member.host.as_str()), ("c", "host"));
}

#[test]
fn session_timeouts_are_clamped() {
    let mut rig = Rig::new(&[("t", 1)]);
    let mut req = rig.request("", 0, &["t".into()], &BTreeSet::new());
    req.session_timeout_ms = 1;
    let response = rig.send(&req).unwrap();
    assert_eq!(rig.group.members[&response.member_id].session_timeout, Duration::from_millis(100));
    assert_eq!(response.heartbeat_interval_ms, 33);
}

#[test]
fn a_partition_is_revoked_from_its_owner_before_it_is_given_to_another() {
    let mut rig = Rig::new(&[("t", 4)]);
    let a = rig.join(&["t"]);
    assert_eq!(rig.members[&a].1.len(), 4);
    let b = rig.join(&["t"]);
    assert!(rig.members[&b].1.is_empty(), "nothing is free yet: `a` holds every partition");
    assert_eq!(rig.group.state(), "Reconciling");
    let short = rig.beat(&b).unwrap();
    assert!(tps(&short).is_empty());
    assert_eq!(
        short.heartbeat_interval_ms, RECONCILING_HEARTBEAT_MS,
        "reconciling members heartbeat quickly"
    );
    // `a` learns of the revocation: two partitions leave its assignment...
    let a_kept = tps(&rig.beat(&a).unwrap());
    assert_eq!(a_kept.len(), 2);
    let revoked: BTreeSet<Tp> = rig.group.members[&a].revoking.keys().cloned().collect();
    assert_eq!(revoked.len(), 2);
    assert!(revoked.is_disjoint(&a_kept));
    // ...but `b` gets them only once `a` reports them released.
    assert!(tps(&rig.beat(&b).unwrap()).is_empty(), "not before `a` releases them");
    rig.assert_exclusive();
    rig.beat(&a).unwrap();
    assert!(rig.group.members[&a].revoking.is_empty(), "released: no longer reported as owned");
    let b_given = tps(&rig.beat(&b).unwrap());
    assert_eq!(b_given, revoked);
    rig.assert_exclusive();
    assert_eq!(rig.group.state(), "Stable");
}

#[test]
fn a_revocation_not_released_is_taken_after_the_session_timeout() {
    let mut rig = Rig::new(&[("t", 2)]);
    let a = rig.join(&["t"]);
    let b = rig.join(&["t"]);
    let all: BTreeSet<Tp> = [tp("t", 0), tp("t", 1)].into();
    let topics = vec!["t".to_owned()];
    // `a` keeps reporting both partitions as owned: it never releases.
    rig.beat_owning(&a, &topics, &all).unwrap();
    rig.now += Duration::from_millis(u64::from(SESSION_MS) - 1);
    rig.beat_owning(&a, &topics, &all).unwrap();
    assert!(tps(&rig.beat(&b).unwrap()).is_empty(), "still within the deadline");
    rig.now += Duration::from_millis(2);
    rig.beat_owning(&a, &topics, &all).unwrap();
    assert_eq!(tps(&rig.beat(&b).unwrap()).len(), 1, "the deadline passed: given anyway");
    rig.assert_exclusive();
}

#[test]
fn assignment_is_sticky_when_members_join_and_leave() {
    let mut rig = Rig::new(&[("t", 6)]);
    let ids: Vec<String> = (0..3).map(|_| rig.join(&["t"])).collect();
    rig.settle();
    let before = rig.assignment();
    assert_eq!(before.len(), 6);
    assert!(ids.iter().all(|id| rig.members[id].1.len() == 2));

    let d = rig.join(&["t"]);
    rig.settle();
    let joined = rig.assignment();
    let moved: Vec<&Tp> =
        before.iter().filter(|(tp, m)| joined.get(*tp) != Some(*m)).map(|(tp, _)| tp).collect();
    assert_eq!(moved.len(), 1, "the new member takes one partition; nothing else moves");
    assert_eq!(joined[moved[0]], d);

    let leaver = ids[0].clone();
    let epoch = rig.group.epoch;
    let response = rig.leave(&leaver);
    assert_eq!(response.member_epoch, LEAVE_EPOCH);
    assert!(!rig.group.members.contains_key(&leaver));
    assert_eq!(rig.group.epoch, epoch + 1, "a leave moves the group epoch");
    rig.settle();
    let left = rig.assignment();
    assert_eq!(left.len(), 6, "the leaver's partitions are reassigned");
    let kept = joined.iter().filter(|(_, m)| **m != leaver).all(|(tp, m)| left.get(tp) == Some(m));
    assert!(kept, "only the leaver's partitions move: {joined:?} -> {left:?}");
    rig.assert_exclusive();
}

#[test]
fn an_expired_member_is_removed_and_its_partitions_reassigned() {
    let mut rig = Rig::new(&[("t", 4)]);
    let a = rig.join(&["t"]);
    let b = rig.join(&["t"]);
    rig.settle();
    assert_eq!(rig.members[&a].1.len(), 2);
    // Only `a` heartbeats, for longer than a session.
    for _ in 0..4 {
        rig.now += Duration::from_millis(u64::from(SESSION_MS) / 3);
        rig.beat(&a).unwrap();
    }
    assert!(!rig.group.members.contains_key(&b), "`b` missed its session");
    assert_eq!(rig.members[&a].1.len(), 4, "its partitions went to `a`");
    let err = rig.beat(&b).unwrap_err();
    assert_eq!(err, GroupError::UnknownMember { group: "g".into(), member: b.clone() });
    assert_eq!(err.to_string(), format!("group `g` has no member `{b}`: rejoin"));
}

#[test]
fn expiry_alone_empties_the_group() {
    let mut rig = Rig::new(&[("t", 1)]);
    rig.join(&["t"]);
    rig.now += Duration::from_millis(u64::from(SESSION_MS) + 1);
    rig.group.expire(rig.now);
    assert!(rig.group.members.is_empty());
    assert_eq!(rig.group.state(), "Empty");
    assert!(rig.group.is_unused(), "no members and no offsets");
}

#[test]
fn a_heartbeat_with_a_stale_epoch_gets_the_current_assignment() {
    let mut rig = Rig::new(&[("t", 2)]);
    let a = rig.join(&["t"]);
    let b = rig.join(&["t"]);
    rig.settle();
    let current = rig.group.members[&a].epoch;
    let req = rig.request(&a, 0, &["t".into()], &rig.members[&a].1);
    let response = rig.send(&req).unwrap();
    assert_eq!(response.member_epoch, current, "answered with the member's current epoch");
    assert_eq!(tps(&response), rig.members[&a].1);
    assert_ne!(tps(&response), rig.members[&b].1);
}

#[test]
fn a_member_may_commit_only_what_it_holds() {
    let mut rig = Rig::new(&[("t", 2)]);
    let a = rig.join(&["t"]);
    let (_, member) = rig.group.committer("g", &a).unwrap().unwrap();
    assert!(member.check_holds("g", &a, &tp("t", 1)).is_ok());
    let b = rig.join(&["t"]);
    rig.beat(&a).unwrap();
    let revoked = rig.group.members[&a].revoking.keys().next().cloned().unwrap();
    let (_, member) = rig.group.committer("g", &a).unwrap().unwrap();
    assert!(
        member.check_holds("g", &a, &revoked).is_ok(),
        "a revoked partition may be committed until released"
    );
    rig.beat(&a).unwrap();
    rig.beat(&b).unwrap();
    let (_, member) = rig.group.committer("g", &a).unwrap().unwrap();
    let err = member.check_holds("g", &a, &revoked).unwrap_err();
    assert_eq!(
        err,
        GroupError::StaleMemberEpoch {
            group: "g".into(),
            member: a.clone(),
            topic: revoked.topic.clone(),
            partition: revoked.partition
        }
    );
    assert_eq!(err.code(), sluice_protocol::ErrorCode::StaleMemberEpoch);
}

#[test]
fn commits_name_a_member_while_the_group_has_members() {
    let mut rig = Rig::new(&[("t", 1)]);
    assert!(rig.group.committer("g", "").unwrap().is_none(), "an empty group takes commits from anyone");
    assert_eq!(
        rig.group.committer("g", "ghost").unwrap_err(),
        GroupError::UnknownMember { group: "g".into(), member: "ghost".into() }
    );
    rig.join(&["t"]);
    assert_eq!(rig.group.committer("g", "").unwrap_err(), GroupError::MemberRequired { group: "g".into() });
}

#[test]
fn leaving_twice_or_unknown_is_not_an_error() {
    let mut rig = Rig::new(&[("t", 1)]);
    let a = rig.join(&["t"]);
    let epoch = rig.group.epoch;
    rig.leave(&a);
    let again = rig.leave(&a);
    assert_eq!((again.member_id.as_str(), again.member_epoch), (a.as_str(), LEAVE_EPOCH));
    assert_eq!(rig.group.epoch, epoch + 1, "only the first leave moved the epoch");
}

#[test]
fn a_grown_topic_or_a_new_subscription_moves_the_group_epoch() {
    let mut rig = Rig::new(&[("t", 1), ("u", 2)]);
    let a = rig.join(&["t"]);
    let epoch = rig.group.epoch;
    rig.counts.insert("t".into(), 3);
    assert_eq!(tps(&rig.beat(&a).unwrap()).len(), 3, "new partitions are assigned");
    assert_eq!(rig.group.epoch, epoch + 1);
    let topics = vec!["t".to_owned(), "u".to_owned()];
    let owned = rig.members[&a].1.clone();
    let response = rig.beat_owning(&a, &topics, &owned).unwrap();
    assert_eq!(tps(&response).len(), 5);
    assert_eq!(rig.group.epoch, epoch + 3, "the subscription and the counts moved it");
    assert_eq!(response.member_epoch, rig.group.epoch);
}

#[test]
fn unknown_topics_are_not_assigned() {
    let mut rig = Rig::new(&[]);
    let a = rig.join(&["missing"]);
    assert!(rig.members[&a].1.is_empty());
    assert_eq!(rig.group.state(), "Stable");
}

#[test]
fn offsets_synced_earlier_do_not_overwrite_later_ones() {
    let mut group = Group::default();
    let committed = |offset| Committed { offset, metadata: String::new(), topic_id: None };
    group.apply_synced(vec![(tp("t", 0), committed(5))], 10);
    group.apply_synced(vec![(tp("t", 0), committed(3))], 7);
    assert_eq!(group.offsets[&tp("t", 0)].0.offset, 5);
    group.apply_synced(vec![(tp("t", 0), committed(9))], 11);
    assert_eq!(group.offsets[&tp("t", 0)], (committed(9), 11));
}
