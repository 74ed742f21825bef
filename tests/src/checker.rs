//! The cluster tests' checker, after Jepsen's Kafka workload: given what a
//! workload was told ([`History`]: acknowledged produces, reads, commits,
//! faults), it finds
//!
//! - **lost** records: an acknowledged `(partition, offset, value)` missing
//!   from, or different in, a replica read ([`ReadKind::Replica`]: the
//!   leader's or an in-sync replica's copy, read from the start);
//! - **conflicts**: a `(partition, offset)` seen with two values (across
//!   acks and reads, up to each read's `stable_end`: a replica's tail past
//!   its high watermark may still be truncated, legitimately);
//! - **duplicates**: one value at two positions (values are unique per
//!   produce, so idempotent retries must not store one twice);
//! - **gaps**: a consumer ([`ReadKind::Consumer`]) skipping offsets forward;
//! - **commit regressions**: a group's committed offset for a partition
//!   acknowledged (or read back) lower than one acknowledged before it;
//! - per fault, the **unavailability window**: from the fault to the first
//!   produce acknowledged after it.
//!
//! Pure: no I/O, so its unit tests build synthetic histories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One acknowledged produce.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Partition it went to.
    pub partition: u32,
    /// Offset it was given.
    pub offset: u64,
    /// Its value (unique across the workload).
    pub value: Bytes,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// What produced a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// A consumer's sequence (re-reads allowed, forward skips are gaps).
    Consumer,
    /// A whole copy of the partition from its start (the leader, or an
    /// in-sync replica): every acknowledged record must be in it.
    Replica,
}

/// A sequence of records read from one partition.
#[derive(Debug, Clone)]
pub struct Read {
    /// Who read it (for messages): "consumer 1", "node 2 disk", ...
    pub source: String,
    /// What kind of read.
    pub kind: ReadKind,
    /// The partition.
    pub partition: u32,
    /// `(offset, value)` in the order read.
    pub records: Vec<(u64, Bytes)>,
    /// Offsets at or past this may still change (a replica's unreplicated
    /// tail); `None`: all are final (consumers read below the high watermark).
    pub stable_end: Option<u64>,
    /// The partition's log start when read: acknowledged records below it
    /// were deleted by retention, not lost.
    pub log_start: u64,
}

/// One committed offset, acknowledged by the broker or read back from it.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The group.
    pub group: String,
    /// The partition.
    pub partition: u32,
    /// The committed offset.
    pub offset: u64,
    /// When it was acknowledged (or read).
    pub at: Instant,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What it was: "kill -9 node 2", "cut 1->3", ...
    pub label: String,
    /// When it was injected.
    pub at: Instant,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Acknowledged produces.
    pub acks: Vec<Ack>,
    /// Produces that failed (counted only).
    pub failed: usize,
    /// Reads.
    pub reads: Vec<Read>,
    /// Commits, in the order they were acknowledged or read.
    pub commits: Vec<Commit>,
    /// Faults, in order.
    pub faults: Vec<Fault>,
}

impl History {
    /// Adds another history's entries (e.g. the reads done at the end).
    pub fn extend(&mut self, other: History) {
        self.acks.extend(other.acks);
        self.failed += other.failed;
        self.reads.extend(other.reads);
        self.commits.extend(other.commits);
        self.faults.extend(other.faults);
    }
}

/// How long after a fault produces were acknowledged again.
#[derive(Debug, Clone)]
pub struct Window {
    /// The fault.
    pub label: String,
    /// Until the first acknowledgement after it; `None`: none came.
    pub unavailable: Option<Duration>,
    /// Until every partition acknowledged in the history had an
    /// acknowledgement after it (the worst-hit partition's failover);
    /// `None`: some partition had none.
    pub every_partition: Option<Duration>,
}

/// The checker's findings.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Acknowledged produces.
    pub acknowledged: usize,
    /// Failed produces.
    pub failed: usize,
    /// Acknowledged records missing or changed in some replica read.
    pub lost: usize,
    /// Values stored at more than one position.
    pub duplicated: usize,
    /// Positions seen with more than one value.
    pub conflicts: usize,
    /// Forward skips in consumer reads.
    pub gaps: usize,
    /// Committed offsets that went backwards.
    pub commit_regressions: usize,
    /// Replica reads checked.
    pub replica_reads: usize,
    /// Records in consumer reads (checked for gaps and conflicts).
    pub consumed: usize,
    /// Per fault.
    pub windows: Vec<Window>,
    /// The first violations, described (at most [`MAX_MESSAGES`]).
    pub messages: Vec<String>,
}

/// Violations described in a report at most.
pub const MAX_MESSAGES: usize = 20;

impl Report {
    /// Whether no violation was found (commit regressions included).
    pub fn ok(&self) -> bool {
        self.data_ok() && self.commit_regressions == 0
    }

    /// Whether the records are intact: nothing lost, duplicated,
    /// conflicting or skipped.
    pub fn data_ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.conflicts == 0 && self.gaps == 0
    }

    /// The longest window, and how many faults saw no acknowledgement after them.
    pub fn worst_window(&self) -> (Option<Duration>, usize) {
        let worst = self.windows.iter().filter_map(|w| w.unavailable).max();
        (worst, self.windows.iter().filter(|w| w.unavailable.is_none()).count())
    }

    fn violation(&mut self, message: String) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(message);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "acknowledged {}, failed {}, lost {}, duplicated {}, conflicts {}, gaps {}, commit regressions {}, replica reads {}, consumed {}",
            self.acknowledged,
            self.failed,
            self.lost,
            self.duplicated,
            self.conflicts,
            self.gaps,
            self.commit_regressions,
            self.replica_reads,
            self.consumed
        )?;
        let ms =
            |d: Option<Duration>| d.map_or_else(|| "never".to_owned(), |d| format!("{} ms", d.as_millis()));
        for w in &self.windows {
            match w.unavailable {
                Some(d) => writeln!(
                    f,
                    "  {}: unavailable {} ms, every partition again after {}",
                    w.label,
                    d.as_millis(),
                    ms(w.every_partition)
                )?,
                None => writeln!(f, "  {}: no acknowledgement after it", w.label)?,
            }
        }
        for m in &self.messages {
            writeln!(f, "  VIOLATION {m}")?;
        }
        Ok(())
    }
}

/// Checks `history`; see the module docs for what is checked.
pub fn check(history: &History) -> Report {
    let mut report = Report { acknowledged: history.acks.len(), failed: history.failed, ..Report::default() };
    check_lost(history, &mut report);
    check_positions(history, &mut report);
    check_gaps(history, &mut report);
    check_commits(history, &mut report);
    report.windows = windows(history);
    report
}

/// Every acknowledged record at its offset with its value in every replica read.
fn check_lost(history: &History, report: &mut Report) {
    for read in history.reads.iter().filter(|r| r.kind == ReadKind::Replica) {
        report.replica_reads += 1;
        let stored: HashMap<u64, &Bytes> = read.records.iter().map(|(o, v)| (*o, v)).collect();
        for ack in history.acks.iter().filter(|a| a.partition == read.partition && a.offset >= read.log_start)
        {
            match stored.get(&ack.offset) {
                Some(v) if **v == ack.value => {}
                got => {
                    report.lost += 1;
                    let got = got.map_or_else(|| "nothing".to_owned(), |v| format!("{v:?}"));
                    report.violation(format!(
                        "lost: {}/{} acknowledged as {:?}, {} has {got}",
                        ack.partition, ack.offset, ack.value, read.source
                    ));
                }
            }
        }
    }
}

/// No position with two values, no value at two positions.
fn check_positions(history: &History, report: &mut Report) {
    let mut at: BTreeMap<(u32, u64), (&Bytes, String)> = BTreeMap::new();
    let mut where_: HashMap<&Bytes, (u32, u64)> = HashMap::new();
    let mut seen_dup: HashSet<&Bytes> = HashSet::new();
    let acked = history.acks.iter().map(|a| (a.partition, a.offset, &a.value, "ack".to_owned()));
    let read = history.reads.iter().flat_map(|r| {
        r.records
            .iter()
            .filter(|(o, _)| r.stable_end.is_none_or(|end| *o < end))
            .map(|(o, v)| (r.partition, *o, v, r.source.clone()))
    });
    for (p, o, v, source) in acked.chain(read) {
        match at.get(&(p, o)) {
            Some((other, first)) if *other != v => {
                report.conflicts += 1;
                report.violation(format!("conflict: {p}/{o} is {other:?} ({first}) and {v:?} ({source})"));
            }
            Some(_) => {}
            None => {
                at.insert((p, o), (v, source.clone()));
            }
        }
        match where_.get(v) {
            Some(pos) if *pos != (p, o) => {
                if seen_dup.insert(v) {
                    report.duplicated += 1;
                    report
                        .violation(format!("duplicate: {v:?} at {}/{} and {p}/{o} ({source})", pos.0, pos.1));
                }
            }
            Some(_) => {}
            None => {
                where_.insert(v, (p, o));
            }
        }
    }
}

/// Consumers never skip forward.
fn check_gaps(history: &History, report: &mut Report) {
    for read in history.reads.iter().filter(|r| r.kind == ReadKind::Consumer) {
        report.consumed += read.records.len();
        for pair in read.records.windows(2) {
            let (prev, next) = (pair[0].0, pair[1].0);
            if next > prev + 1 {
                report.gaps += 1;
                report.violation(format!(
                    "gap: {} read {}/{prev} then {}/{next}",
                    read.source, read.partition, read.partition
                ));
            }
        }
    }
}

/// Per group and partition, committed offsets never go backwards.
fn check_commits(history: &History, report: &mut Report) {
    let mut last: HashMap<(&str, u32), u64> = HashMap::new();
    for c in &history.commits {
        let key = (c.group.as_str(), c.partition);
        let before = last.get(&key).copied();
        if let Some(before) = before.filter(|b| c.offset < *b) {
            report.commit_regressions += 1;
            report.violation(format!(
                "commit of {}/{} went back to {} from {before}",
                c.group, c.partition, c.offset
            ));
        }
        last.insert(key, before.map_or(c.offset, |b| b.max(c.offset)));
    }
}

/// From each fault to the first acknowledgement after it, on any
/// partition and on every partition.
fn windows(history: &History) -> Vec<Window> {
    let mut times: Vec<Instant> = history.acks.iter().map(|a| a.at).collect();
    times.sort_unstable();
    let mut per_partition: BTreeMap<u32, Vec<Instant>> = BTreeMap::new();
    for a in &history.acks {
        per_partition.entry(a.partition).or_default().push(a.at);
    }
    per_partition.values_mut().for_each(|t| t.sort_unstable());
    let first_after =
        |times: &[Instant], at: Instant| times.get(times.partition_point(|t| *t <= at)).map(|t| *t - at);
    history
        .faults
        .iter()
        .map(|f| {
            let every: Option<Vec<Duration>> = per_partition.values().map(|t| first_after(t, f.at)).collect();
            Window {
                label: f.label.clone(),
                unavailable: first_after(&times, f.at),
                every_partition: every.and_then(|d| d.into_iter().max()),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
