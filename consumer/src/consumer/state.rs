//! The consumer's bookkeeping, without I/O: group membership, and per
//! assigned partition where reading, handing out and committing stand.
//! Every decision the tasks make (what changed in the assignment, what to
//! fetch, what `poll` hands out or reports, what to commit) is a method
//! here, so it is unit-tested without a broker.
//!
//! Offsets per partition (all logical record offsets): `next_offset` is the
//! next offset to fetch; `delivered` follows the last record handed out by
//! `poll`; `processed` catches up with `delivered` when the next `poll`
//! starts (the application is done with what it was given). Auto-commit and
//! revocation commit `processed`; `commit()` and `close()` commit
//! `delivered`.
//!
//! Revocation is in two steps, so that no partition leaves behind the
//! application's back: [`State::follow`] only reports what left the
//! group's target, and [`State::mark_revoking`] stops fetching and handing
//! out those partitions while they stay owned (heartbeats still report
//! them, commits for them are still accepted). They are released only by
//! `poll` ([`State::revocations`]): at its start, once the application had
//! its chance to commit what it processed (announced first, when it polls
//! for events). A partition left revoking longer than the session timeout
//! (the application stopped polling) is dropped without a commit
//! ([`State::expire_revocations`]): the group has moved it already. One
//! of which the application holds nothing (no record handed out that a
//! commit does not cover) is released at once, without waiting for a poll.
//!
//! Each assignment and seek gives the partition a fresh `epoch`; fetch
//! results and failures carry the epoch they were fetched at and are
//! dropped when it moved on. The state lives behind one `std` mutex in the
//! consumer, held only for these synchronous calls.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sluice_protocol::{TopicPartition, TopicPartitions};

use super::ConsumerRecord;
use crate::error::ConsumerError;

/// Which offsets a commit takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Everything handed out by `poll` (`commit()`, `close()`).
    Delivered,
    /// What was handed out before the latest `poll` (auto-commit, revocation).
    Processed,
}

/// One assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionState {
    /// The next offset to fetch.
    next_offset: u64,
    /// One past the last record handed out by `poll`.
    delivered: u64,
    /// `delivered` as of the start of the latest `poll`.
    processed: u64,
    /// The offset last committed, as this consumer knows it.
    committed: Option<u64>,
    /// Bumped on assignment and seek: older fetch results are dropped.
    epoch: u64,
    /// Fetches of this partition that failed in a row (at this epoch).
    failures: u32,
    /// Where its revocation stands.
    revocation: Revocation,
    /// Records were handed out that no commit covers yet (the application
    /// may hold them): a revocation then waits for a `poll`.
    uncommitted: bool,
    /// Not fetched before this after a failure (the backoff).
    retry_at: Option<Instant>,
}

impl PartitionState {
    /// A partition read from `offset` at `epoch`, without failures.
    fn at(offset: u64, committed: Option<u64>, epoch: u64) -> Self {
        Self {
            next_offset: offset,
            delivered: offset,
            processed: offset,
            committed,
            epoch,
            failures: 0,
            retry_at: None,
            revocation: Revocation::None,
            uncommitted: false,
        }
    }
}

/// Where a partition's revocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// Not revoked.
    None,
    /// The group took it (at this time): no longer fetched nor handed out,
    /// released by the next `poll`.
    Pending(Instant),
    /// Reported to the application by `poll_event`: released by the next poll.
    Announced(Instant),
}

impl Revocation {
    /// When the group took the partition, if it did.
    fn since(self) -> Option<Instant> {
        match self {
            Self::None => None,
            Self::Pending(at) | Self::Announced(at) => Some(at),
        }
    }
}

/// What a `poll` does about revoked partitions (see [`State::revocations`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Revocations {
    /// Release these now (after committing them, in auto-commit mode).
    pub release: Vec<TopicPartition>,
    /// Tell the application these are being revoked (it commits), and
    /// release them at its next poll.
    pub announce: Vec<TopicPartition>,
}

/// One partition to fetch: where, and the epoch its result belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// The partition.
    pub tp: TopicPartition,
    /// The offset to fetch from.
    pub offset: u64,
    /// The partition's epoch when the fetch was asked for.
    pub epoch: u64,
}

/// Fetched records of one partition, or its failure to report (both
/// dropped when the partition's epoch moved on: revoked or sought).
#[derive(Debug)]
pub(super) enum Chunk {
    /// Records from `Target::offset` on.
    Records { tp: TopicPartition, epoch: u64, records: Vec<ConsumerRecord> },
    /// A failure for `poll` to report.
    Failed { tp: TopicPartition, epoch: u64, error: ConsumerError },
}

/// What `poll` does with a chunk.
#[derive(Debug)]
pub(super) enum Taken {
    /// Its records (perhaps none) were added to the output.
    Records,
    /// It belonged to an older epoch and was dropped.
    Stale,
    /// The partition failed: report this.
    Failure(ConsumerError),
}

/// Membership and every assigned partition.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The id the group gave this member ("" before joining).
    pub member_id: String,
    /// The member epoch last received.
    pub member_epoch: u32,
    parts: HashMap<TopicPartition, PartitionState>,
    /// The last epoch given to a partition.
    next_epoch: u64,
    /// A failure that arrived while `poll` had records to return: the
    /// next `poll` returns it.
    deferred: Option<ConsumerError>,
}

impl State {
    fn bump_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// The assigned partitions, in order.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        v.sort();
        v
    }

    /// The assigned partitions grouped by topic (a heartbeat's `owned`).
    pub fn owned(&self) -> Vec<TopicPartitions> {
        TopicPartitions::group(self.parts.keys())
    }

    /// The committed offset of each assigned partition that has one.
    pub fn committed(&self) -> impl Iterator<Item = (&TopicPartition, u64)> {
        self.parts.iter().filter_map(|(tp, s)| s.committed.map(|c| (tp, c)))
    }

    /// Takes the member id and epoch from a heartbeat answer; returns the
    /// partitions to revoke (held, not in `target`, not being revoked
    /// already) and to add (in `target`, not held), each in order.
    pub fn follow(
        &mut self,
        member_id: String,
        member_epoch: u32,
        target: &BTreeSet<TopicPartition>,
    ) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
        self.member_id = member_id;
        self.member_epoch = member_epoch;
        let mut revoked: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(tp, ps)| !target.contains(*tp) && ps.revocation == Revocation::None)
            .map(|(tp, _)| tp.clone())
            .collect();
        revoked.sort();
        let added = target.iter().filter(|tp| !self.parts.contains_key(*tp)).cloned().collect();
        (revoked, added)
    }

    /// The group forgot this member: leave it, and lose every partition
    /// (returned, in order).
    pub fn fenced(&mut self) -> Vec<TopicPartition> {
        self.member_id.clear();
        self.member_epoch = 0;
        let mut lost: Vec<TopicPartition> = self.parts.drain().map(|(tp, _)| tp).collect();
        lost.sort();
        lost
    }

    /// Starts reading `tp` at `offset` (a fresh epoch).
    pub fn assign(&mut self, tp: TopicPartition, offset: u64, committed: Option<u64>) {
        let epoch = self.bump_epoch();
        self.parts.insert(tp, PartitionState::at(offset, committed, epoch));
    }

    /// The group took `tps` at `now`: stop fetching and handing them out,
    /// keep them owned until a `poll` releases them. Returns those the
    /// application holds nothing of (every record handed out is committed,
    /// or none was): they may be released at once, no `poll` needed.
    pub fn mark_revoking(&mut self, tps: &[TopicPartition], now: Instant) -> Vec<TopicPartition> {
        let mut idle = Vec::new();
        for tp in tps {
            if let Some(ps) = self.parts.get_mut(tp).filter(|ps| ps.revocation == Revocation::None) {
                ps.revocation = Revocation::Pending(now);
                if !ps.uncommitted {
                    idle.push(tp.clone());
                }
            }
        }
        idle
    }

    /// Whether any partition waits for a `poll` to release it.
    pub fn revoking(&self) -> bool {
        self.parts.values().any(|ps| ps.revocation != Revocation::None)
    }

    /// What a `poll` does about revoked partitions: with `announce` (the
    /// application polls for events), pending ones are announced (to be
    /// released by the next poll, after the application committed) and
    /// announced ones released; without, every revoked one is released.
    /// Partitions are released by the caller ([`State::revoke`]).
    pub fn revocations(&mut self, announce: bool) -> Revocations {
        let mut out = Revocations::default();
        for (tp, ps) in &mut self.parts {
            match ps.revocation {
                Revocation::None => {}
                Revocation::Pending(at) if announce => {
                    ps.revocation = Revocation::Announced(at);
                    out.announce.push(tp.clone());
                }
                Revocation::Pending(_) | Revocation::Announced(_) => out.release.push(tp.clone()),
            }
        }
        out.release.sort();
        out.announce.sort();
        out
    }

    /// Drops partitions revoked more than `timeout` before `now` (the
    /// group reassigned them anyway; committing them would be refused) and
    /// returns them, in order.
    pub fn expire_revocations(&mut self, now: Instant, timeout: Duration) -> Vec<TopicPartition> {
        let mut lost: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, ps)| ps.revocation.since().is_some_and(|at| now.duration_since(at) > timeout))
            .map(|(tp, _)| tp.clone())
            .collect();
        lost.sort();
        self.revoke(&lost);
        lost
    }

    /// Stops reading `tps` (released: no longer owned).
    pub fn revoke(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.parts.remove(tp);
        }
    }

    /// Reads `tp` from `offset` next, forgetting its failures and what is
    /// in flight; with `only_epoch`, only if the partition is still at it.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64, only_epoch: Option<u64>) {
        let epoch = self.bump_epoch();
        if let Some(ps) = self.parts.get_mut(tp).filter(|ps| only_epoch.is_none_or(|e| e == ps.epoch)) {
            // A seek does not undo a revocation, nor forget records handed out.
            *ps = PartitionState {
                revocation: ps.revocation,
                uncommitted: ps.uncommitted,
                ..PartitionState::at(offset, ps.committed, epoch)
            };
        }
    }

    /// A `poll` starts: what was handed out before counts as processed.
    /// Returns the failure a previous `poll` deferred, if any.
    pub fn begin_poll(&mut self) -> Option<ConsumerError> {
        for s in self.parts.values_mut() {
            s.processed = s.delivered;
        }
        self.deferred.take()
    }

    /// Keeps `error` for the next `poll`.
    pub fn defer(&mut self, error: ConsumerError) {
        self.deferred = Some(error);
    }

    /// Takes a chunk into `out`: records not handed out yet are appended
    /// (and count as delivered); a failure is returned for reporting;
    /// either is dropped when its partition moved on or is being revoked
    /// (its next owner reads from the committed offset).
    pub fn take(&mut self, chunk: Chunk, out: &mut Vec<ConsumerRecord>) -> Taken {
        match chunk {
            Chunk::Failed { tp, epoch, error } => match self.parts.get(&tp) {
                Some(ps) if ps.epoch == epoch && ps.revocation == Revocation::None => Taken::Failure(error),
                _ => Taken::Stale,
            },
            Chunk::Records { tp, epoch, mut records } => {
                let current =
                    |ps: &&mut PartitionState| ps.epoch == epoch && ps.revocation == Revocation::None;
                let Some(ps) = self.parts.get_mut(&tp).filter(current) else {
                    return Taken::Stale;
                };
                records.retain(|r| r.offset >= ps.delivered);
                if let Some(last) = records.last() {
                    ps.delivered = last.offset + 1;
                    ps.uncommitted = true;
                }
                out.append(&mut records);
                Taken::Records
            }
        }
    }

    /// The offsets a commit of `progress` sends: of `only` (or every
    /// partition), those that moved since the last commit.
    pub fn to_commit(
        &self,
        progress: Progress,
        only: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, u64)> {
        let mut v: Vec<(TopicPartition, u64)> = self
            .parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .map(|(tp, s)| {
                let offset = match progress {
                    Progress::Delivered => s.delivered,
                    Progress::Processed => s.processed,
                };
                (tp, offset, s.committed)
            })
            .filter(|(_, offset, committed)| *committed != Some(*offset))
            .map(|(tp, offset, _)| (tp.clone(), offset))
            .collect();
        v.sort();
        v
    }

    /// The broker stored `offset` for `tp`.
    pub fn committed_at(&mut self, tp: &TopicPartition, offset: u64) {
        if let Some(s) = self.parts.get_mut(tp) {
            s.committed = Some(offset);
            s.uncommitted &= offset != s.delivered;
        }
    }

    /// Partitions to fetch at `now` (not those being revoked), and when the next backing-off one is due.
    pub fn targets(&self, now: Instant) -> (Vec<Target>, Option<Instant>) {
        let mut targets = Vec::new();
        let mut next_retry: Option<Instant> = None;
        for (tp, s) in self.parts.iter().filter(|(_, s)| s.revocation == Revocation::None) {
            match s.retry_at.filter(|at| *at > now) {
                Some(at) => next_retry = Some(next_retry.map_or(at, |n| n.min(at))),
                None => targets.push(Target { tp: tp.clone(), offset: s.next_offset, epoch: s.epoch }),
            }
        }
        (targets, next_retry)
    }

    /// A fetch of `t` succeeded: clear its failures, and move its next
    /// offset to `next` (when records came).
    pub fn fetched(&mut self, t: &Target, next: Option<u64>) {
        if let Some(ps) = self.parts.get_mut(&t.tp).filter(|ps| ps.epoch == t.epoch) {
            ps.failures = 0;
            ps.retry_at = None;
            if let Some(next) = next {
                ps.next_offset = ps.next_offset.max(next);
            }
        }
    }

    /// A fetch of `t` failed: back the partition off for `backoff(failures)`
    /// from `now`. Returns the failures in a row, or `None` when the
    /// partition moved on (the failure is moot).
    pub fn failed(&mut self, t: &Target, now: Instant, backoff: impl FnOnce(u32) -> Duration) -> Option<u32> {
        let ps = self.parts.get_mut(&t.tp).filter(|ps| ps.epoch == t.epoch)?;
        ps.failures = ps.failures.saturating_add(1);
        ps.retry_at = Some(now + backoff(ps.failures));
        Some(ps.failures)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_protocol::ErrorCode;

    use super::*;

    fn tp(p: u32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn record(p: u32, offset: u64) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: p,
            offset,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    fn records(p: u32, offsets: std::ops::Range<u64>) -> Vec<ConsumerRecord> {
        offsets.map(|o| record(p, o)).collect()
    }

    fn fetch_error(p: u32, offset: u64) -> ConsumerError {
        ConsumerError::Fetch {
            topic: "t".into(),
            partition: p,
            offset,
            code: ErrorCode::CorruptBatch,
            failures: 1,
        }
    }

    /// The one target of `tp` at `now`.
    fn target(s: &State, tp: &TopicPartition, now: Instant) -> Target {
        let (targets, _) = s.targets(now);
        targets.into_iter().find(|t| &t.tp == tp).expect("a target")
    }

    /// Delivers `offsets` of partition `p` as fetched at its current epoch.
    fn deliver(s: &mut State, p: u32, offsets: std::ops::Range<u64>) -> Vec<ConsumerRecord> {
        let t = target(s, &tp(p), Instant::now());
        let mut out = Vec::new();
        let taken =
            s.take(Chunk::Records { tp: tp(p), epoch: t.epoch, records: records(p, offsets) }, &mut out);
        assert!(matches!(taken, Taken::Records), "{taken:?}");
        out
    }

    #[test]
    fn a_heartbeat_revokes_what_left_the_target_then_adds_what_is_new() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        s.assign(tp(1), 0, None);
        let target: BTreeSet<TopicPartition> = [tp(1), tp(2), tp(3)].into_iter().collect();
        let (revoked, added) = s.follow("m-1".into(), 7, &target);
        assert_eq!((s.member_id.as_str(), s.member_epoch), ("m-1", 7));
        assert_eq!(revoked, [tp(0)]);
        assert_eq!(added, [tp(2), tp(3)]);
        // Nothing is dropped until the caller revokes (after its commit).
        assert_eq!(s.assignment(), [tp(0), tp(1)]);
        s.revoke(&revoked);
        for t in added {
            s.assign(t, 0, None);
        }
        assert_eq!(s.assignment(), [tp(1), tp(2), tp(3)]);
        assert_eq!(
            s.follow("m-1".into(), 7, &target),
            (vec![], vec![]),
            "a steady assignment changes nothing"
        );
    }

    #[test]
    fn being_fenced_loses_membership_and_every_partition() {
        let mut s = State::default();
        s.follow("m-1".into(), 3, &BTreeSet::new());
        s.assign(tp(2), 5, Some(5));
        s.assign(tp(0), 0, None);
        assert_eq!(s.fenced(), [tp(0), tp(2)]);
        assert_eq!((s.member_id.as_str(), s.member_epoch), ("", 0));
        assert!(s.assignment().is_empty());
        assert_eq!(s.owned(), []);
    }

    #[test]
    fn owned_partitions_are_grouped_by_topic() {
        let mut s = State::default();
        s.assign(TopicPartition::new("b", 1), 0, None);
        s.assign(TopicPartition::new("a", 3), 0, None);
        s.assign(TopicPartition::new("b", 0), 0, None);
        assert_eq!(
            s.owned(),
            [
                TopicPartitions { topic: "a".into(), partitions: vec![3] },
                TopicPartitions { topic: "b".into(), partitions: vec![0, 1] },
            ]
        );
    }

    #[test]
    fn records_of_a_revoked_or_reassigned_partition_are_stale() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        let old = target(&s, &tp(0), Instant::now());
        s.revoke(&[tp(0)]);
        let mut out = Vec::new();
        let chunk = Chunk::Records { tp: tp(0), epoch: old.epoch, records: records(0, 0..3) };
        assert!(matches!(s.take(chunk, &mut out), Taken::Stale));
        s.assign(tp(0), 0, None);
        let chunk = Chunk::Records { tp: tp(0), epoch: old.epoch, records: records(0, 0..3) };
        assert!(matches!(s.take(chunk, &mut out), Taken::Stale), "assigned again: a new epoch");
        assert!(out.is_empty());
    }

    #[test]
    fn fetches_start_at_the_assigned_offset_and_advance_with_results() {
        let mut s = State::default();
        s.assign(tp(0), 40, Some(40));
        let now = Instant::now();
        let t = target(&s, &tp(0), now);
        assert_eq!(t.offset, 40);
        s.fetched(&t, Some(45));
        assert_eq!(target(&s, &tp(0), now).offset, 45);
        s.fetched(&t, Some(43));
        assert_eq!(target(&s, &tp(0), now).offset, 45, "never moves back");
        s.fetched(&t, None);
        assert_eq!(target(&s, &tp(0), now).offset, 45, "an empty fetch stays put");
    }

    #[test]
    fn a_seek_moves_every_offset_and_drops_what_was_in_flight() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        let before = target(&s, &tp(0), Instant::now());
        deliver(&mut s, 0, 0..5);
        s.seek(&tp(0), 2, None);
        let after = target(&s, &tp(0), Instant::now());
        assert_eq!(after.offset, 2);
        assert_ne!(after.epoch, before.epoch);
        let mut out = Vec::new();
        let stale = Chunk::Records { tp: tp(0), epoch: before.epoch, records: records(0, 5..8) };
        assert!(matches!(s.take(stale, &mut out), Taken::Stale));
        // Records from the seek on are handed out again, even ones seen before.
        assert_eq!(deliver(&mut s, 0, 2..4).len(), 2);
        assert_eq!(s.to_commit(Progress::Delivered, None), [(tp(0), 4)]);
    }

    #[test]
    fn a_seek_kept_to_an_epoch_is_ignored_once_the_partition_moved_on() {
        let mut s = State::default();
        s.assign(tp(0), 10, None);
        let old = target(&s, &tp(0), Instant::now());
        s.seek(&tp(0), 20, None);
        s.seek(&tp(0), 0, Some(old.epoch)); // an out-of-range reset, too late
        assert_eq!(target(&s, &tp(0), Instant::now()).offset, 20);
        s.seek(&tp(9), 0, None); // not assigned: nothing to do
        assert_eq!(s.assignment(), [tp(0)]);
    }

    #[test]
    fn records_already_handed_out_are_not_handed_out_twice() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        assert_eq!(deliver(&mut s, 0, 0..5).len(), 5);
        let again = deliver(&mut s, 0, 3..8);
        assert_eq!(again.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6, 7]);
    }

    #[test]
    fn processed_records_are_only_those_followed_by_another_poll() {
        let mut s = State::default();
        s.assign(tp(0), 0, Some(0));
        assert_eq!(s.to_commit(Progress::Processed, None), [], "nothing moved since the commit");
        assert!(s.begin_poll().is_none());
        deliver(&mut s, 0, 0..5);
        // Handed out, not yet processed: auto-commit has nothing.
        assert_eq!(s.to_commit(Progress::Processed, None), []);
        assert_eq!(s.to_commit(Progress::Delivered, None), [(tp(0), 5)]);
        // The next poll: the application is done with them.
        assert!(s.begin_poll().is_none());
        assert_eq!(s.to_commit(Progress::Processed, None), [(tp(0), 5)]);
        s.committed_at(&tp(0), 5);
        assert_eq!(s.to_commit(Progress::Processed, None), [], "committed: nothing to send again");
        assert_eq!(s.committed().collect::<Vec<_>>(), [(&tp(0), 5)]);
    }

    #[test]
    fn a_partition_without_a_commit_commits_its_start() {
        let mut s = State::default();
        s.assign(tp(0), 7, None);
        s.assign(tp(1), 0, Some(0));
        assert_eq!(s.to_commit(Progress::Processed, None), [(tp(0), 7)]);
        assert_eq!(s.committed().count(), 1);
    }

    #[test]
    fn a_commit_can_be_kept_to_some_partitions() {
        let mut s = State::default();
        for p in 0..3 {
            s.assign(tp(p), 0, None);
            deliver(&mut s, p, 0..(u64::from(p) + 1));
        }
        s.begin_poll();
        assert_eq!(s.to_commit(Progress::Processed, Some(&[tp(2), tp(0)])), [(tp(0), 1), (tp(2), 3)]);
        s.committed_at(&tp(5), 1); // not assigned: ignored
        assert_eq!(s.committed().count(), 0);
    }

    #[test]
    fn a_failing_partition_backs_off_alone_and_counts_its_failures() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        s.assign(tp(1), 0, None);
        let now = Instant::now();
        let t = target(&s, &tp(0), now);
        let wait = |failures: u32| Duration::from_millis(100) * failures;
        assert_eq!(s.failed(&t, now, wait), Some(1));
        let (targets, next) = s.targets(now);
        assert_eq!(
            targets.iter().map(|t| t.tp.clone()).collect::<Vec<_>>(),
            [tp(1)],
            "the other keeps flowing"
        );
        assert_eq!(next, Some(now + Duration::from_millis(100)));
        assert_eq!(s.failed(&t, now, wait), Some(2));
        let (_, next) = s.targets(now);
        assert_eq!(next, Some(now + Duration::from_millis(200)), "the backoff grows with the failures");
        // Due again once the backoff passed; a success clears the count.
        let later = now + Duration::from_millis(200);
        assert_eq!(s.targets(later).0.len(), 2);
        s.fetched(&t, None);
        assert_eq!(s.failed(&t, later, wait), Some(1));
    }

    #[test]
    fn a_seek_clears_failures_and_a_failure_of_an_old_epoch_is_moot() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        let now = Instant::now();
        let t = target(&s, &tp(0), now);
        s.failed(&t, now, |_| Duration::from_secs(60));
        assert!(s.targets(now).0.is_empty());
        s.seek(&tp(0), 9, None);
        assert_eq!(target(&s, &tp(0), now).offset, 9, "a seek fetches at once");
        assert_eq!(s.failed(&t, now, |_| Duration::from_secs(60)), None);
        s.fetched(&t, Some(100)); // an old epoch's success moves nothing
        assert_eq!(target(&s, &tp(0), now).offset, 9);
    }

    #[test]
    fn failures_are_reported_for_the_current_epoch_only() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        let t = target(&s, &tp(0), Instant::now());
        let mut out = Vec::new();
        let failed = Chunk::Failed { tp: tp(0), epoch: t.epoch, error: fetch_error(0, 6) };
        match s.take(failed, &mut out) {
            Taken::Failure(e) => assert_eq!(e.position(), Some(("t", 0, 6))),
            other => panic!("expected the failure, got {other:?}"),
        }
        s.seek(&tp(0), 7, None);
        let failed = Chunk::Failed { tp: tp(0), epoch: t.epoch, error: fetch_error(0, 6) };
        assert!(matches!(s.take(failed, &mut out), Taken::Stale), "sought past it");
        let failed = Chunk::Failed { tp: tp(4), epoch: t.epoch, error: fetch_error(4, 0) };
        assert!(matches!(s.take(failed, &mut out), Taken::Stale), "not assigned");
    }

    #[test]
    fn a_revoked_partition_stays_owned_until_a_poll_releases_it() {
        let mut s = State::default();
        s.assign(tp(0), 0, Some(0));
        s.assign(tp(1), 0, Some(0));
        let before = target(&s, &tp(0), Instant::now());
        deliver(&mut s, 0, 0..4);
        let target_set: BTreeSet<TopicPartition> = [tp(1)].into_iter().collect();
        let (revoked, _) = s.follow("m".into(), 2, &target_set);
        assert_eq!(revoked, [tp(0)]);
        let now = Instant::now();
        s.mark_revoking(&revoked, now);
        // Still owned (heartbeats report it; commits for it are accepted)...
        assert_eq!(s.assignment(), [tp(0), tp(1)]);
        assert!(s.owned()[0].partitions.contains(&0));
        assert_eq!(s.follow("m".into(), 2, &target_set).0, [], "revoked once, not again per heartbeat");
        // ...but no longer fetched, and what was fetched is not handed out.
        assert_eq!(s.targets(now).0.iter().map(|t| t.tp.clone()).collect::<Vec<_>>(), [tp(1)]);
        let mut out = Vec::new();
        let late = Chunk::Records { tp: tp(0), epoch: before.epoch, records: records(0, 4..9) };
        assert!(matches!(s.take(late, &mut out), Taken::Stale));
        let failed = Chunk::Failed { tp: tp(0), epoch: before.epoch, error: fetch_error(0, 4) };
        assert!(matches!(s.take(failed, &mut out), Taken::Stale));
        // The next poll: what was handed out is processed, commit it, then release.
        assert!(s.begin_poll().is_none());
        assert_eq!(s.to_commit(Progress::Processed, Some(&[tp(0)])), [(tp(0), 4)]);
        let r = s.revocations(false);
        assert_eq!(r, Revocations { release: vec![tp(0)], announce: vec![] });
        s.revoke(&r.release);
        assert_eq!(s.assignment(), [tp(1)]);
        assert!(!s.revoking());
    }

    #[test]
    fn polling_for_events_announces_a_revocation_then_releases_it_next_time() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        s.assign(tp(1), 0, None);
        let now = Instant::now();
        s.mark_revoking(&[tp(1)], now);
        assert!(s.revoking());
        let first = s.revocations(true);
        assert_eq!(first, Revocations { release: vec![], announce: vec![tp(1)] });
        assert_eq!(s.assignment(), [tp(0), tp(1)], "the application commits it before the next poll");
        s.mark_revoking(&[tp(0)], now);
        let second = s.revocations(true);
        assert_eq!(second, Revocations { release: vec![tp(1)], announce: vec![tp(0)] });
        s.revoke(&second.release);
        assert_eq!(s.revocations(true), Revocations { release: vec![tp(0)], announce: vec![] });
    }

    #[test]
    fn a_revocation_of_nothing_uncommitted_needs_no_poll() {
        let mut s = State::default();
        for p in 0..3 {
            s.assign(tp(p), 0, None);
        }
        deliver(&mut s, 1, 0..4);
        deliver(&mut s, 2, 0..4);
        s.committed_at(&tp(2), 4); // everything handed out is committed
        let now = Instant::now();
        assert_eq!(s.mark_revoking(&[tp(0), tp(1), tp(2)], now), [tp(0), tp(2)]);
        s.committed_at(&tp(1), 2); // a commit short of what was handed out
        assert_eq!(s.revocations(false).release, [tp(0), tp(1), tp(2)], "poll releases all");
    }

    #[test]
    fn a_seek_does_not_undo_a_revocation() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        s.mark_revoking(&[tp(0)], Instant::now());
        s.seek(&tp(0), 5, None);
        assert!(s.targets(Instant::now()).0.is_empty());
        assert_eq!(s.revocations(false).release, [tp(0)]);
    }

    #[test]
    fn a_revocation_not_released_within_the_timeout_is_lost() {
        let mut s = State::default();
        s.assign(tp(0), 0, None);
        s.assign(tp(1), 0, None);
        let at = Instant::now();
        s.mark_revoking(&[tp(0)], at);
        let timeout = Duration::from_secs(10);
        assert_eq!(s.expire_revocations(at + Duration::from_secs(5), timeout), []);
        assert_eq!(s.expire_revocations(at + Duration::from_secs(11), timeout), [tp(0)]);
        assert_eq!(s.assignment(), [tp(1)], "the partition that was not revoked stays");
        assert!(!s.revoking());
    }

    #[test]
    fn a_deferred_failure_comes_with_the_next_poll_once() {
        let mut s = State::default();
        s.defer(fetch_error(0, 6));
        assert!(matches!(s.begin_poll(), Some(ConsumerError::Fetch { offset: 6, .. })));
        assert!(s.begin_poll().is_none());
    }
}
