//! The fault loop's catalogue (tests/tests/cluster_faults.rs): each kind
//! of fault, how it is injected against a running [`Cluster`], held and
//! healed, and the per-kind summary of a checked run.
//!
//! `SLUICE_CLUSTER_FAULT_KINDS` (comma-separated [`FaultKind::key`]s)
//! restricts a run to some kinds, e.g. `client-cut` for a long run of that
//! kind alone; unset, every kind runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use crate::checker::Report;
use crate::cluster::{Cluster, ClusterOptions};

/// One fault of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9` of a partition's leader, restarted after the hold.
    KillLeader,
    /// SIGSTOP of a partition's leader for longer than the lease.
    PauseLeader,
    /// Both directions cut between two nodes.
    Cut,
    /// One direction of one node's connections to another dropped.
    DropOneWay,
    /// 20-400 ms of latency between two nodes.
    Delay,
    /// The clients cut off from one node (its client proxy closes every
    /// connection and refuses new ones): requests in flight lose their
    /// answers and the idempotent producers resend them.
    ClientCut,
}

impl FaultKind {
    /// Every kind, in the order the summary lists them.
    pub const ALL: [Self; 6] =
        [Self::KillLeader, Self::PauseLeader, Self::Cut, Self::DropOneWay, Self::Delay, Self::ClientCut];

    /// What the summary calls it.
    pub fn name(self) -> &'static str {
        match self {
            Self::KillLeader => "kill -9 of a leader",
            Self::PauseLeader => "SIGSTOP of a leader past the lease",
            Self::Cut => "cut between two nodes",
            Self::DropOneWay => "one-way drop",
            Self::Delay => "delay between two nodes",
            Self::ClientCut => "clients cut off from a node",
        }
    }

    /// Its name in `SLUICE_CLUSTER_FAULT_KINDS`.
    pub fn key(self) -> &'static str {
        match self {
            Self::KillLeader => "kill",
            Self::PauseLeader => "pause",
            Self::Cut => "cut",
            Self::DropOneWay => "drop",
            Self::Delay => "delay",
            Self::ClientCut => "client-cut",
        }
    }

    /// The kinds `SLUICE_CLUSTER_FAULT_KINDS` names, or all of them.
    ///
    /// # Panics
    /// On a name that is no kind's key.
    pub fn from_env() -> Vec<Self> {
        let Ok(names) = std::env::var("SLUICE_CLUSTER_FAULT_KINDS") else { return Self::ALL.to_vec() };
        names
            .split(',')
            .map(|n| {
                let n = n.trim();
                Self::ALL.into_iter().find(|k| k.key() == n).unwrap_or_else(|| {
                    let keys: Vec<&str> = Self::ALL.iter().map(|k| k.key()).collect();
                    panic!("SLUICE_CLUSTER_FAULT_KINDS: `{n}` is not one of {keys:?}")
                })
            })
            .collect()
    }
}

/// What the faults aim at.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The workload's topic (a leader of one of its partitions is hit).
    pub topic: &'a str,
    /// Its partition count.
    pub partitions: u32,
    /// The controller's liveness lease: a pause outlasts it.
    pub lease: Duration,
}

/// Injects `kind` (against a leader of one of `target`'s partitions or a
/// random pair of nodes), holds it 0.5-4 s, heals it, and returns its
/// label and how long it was held.
///
/// # Panics
/// A node that does not restart.
pub async fn inject(
    c: &mut Cluster,
    kind: FaultKind,
    rng: &mut StdRng,
    options: &ClusterOptions,
    target: &Target<'_>,
) -> (String, Duration) {
    let partition = rng.gen_range(0..target.partitions);
    let leader = c.leader(target.topic, partition).await.unwrap_or(1);
    let (a, b) = (rng.gen_range(1..=3u32), rng.gen_range(1..=2u32));
    let b = if b >= a { b + 1 } else { b };
    let hold = Duration::from_millis(rng.gen_range(500..4000));
    match kind {
        FaultKind::KillLeader => {
            c.kill9(leader);
            tokio::time::sleep(hold).await;
            c.restart(leader, options).unwrap_or_else(|e| panic!("{e}"));
            (format!("kill -9 node {leader} (leader of {partition})"), hold)
        }
        FaultKind::PauseLeader => {
            c.stop(leader);
            tokio::time::sleep(target.lease + hold).await;
            c.cont(leader);
            (format!("SIGSTOP node {leader} (leader of {partition})"), target.lease + hold)
        }
        FaultKind::Cut => {
            c.cut_between(a, b);
            tokio::time::sleep(hold).await;
            c.heal_all();
            (format!("cut {a}<->{b}"), hold)
        }
        FaultKind::DropOneWay => {
            let a_to_b = rng.gen_bool(0.5);
            c.proxy(a, b).drop_direction(a_to_b);
            tokio::time::sleep(hold).await;
            c.heal_all();
            let (from, to) = if a_to_b { (a, b) } else { (b, a) };
            (format!("one-way drop {from}->{to} on {a}'s connections"), hold)
        }
        FaultKind::Delay => {
            let delay = Duration::from_millis(rng.gen_range(20..400));
            c.proxy(a, b).delay(delay);
            c.proxy(b, a).delay(delay);
            tokio::time::sleep(hold).await;
            c.heal_all();
            (format!("delay {} ms {a}<->{b}", delay.as_millis()), hold)
        }
        FaultKind::ClientCut => {
            c.client_proxy(leader).cut();
            tokio::time::sleep(hold).await;
            c.heal_all();
            (format!("clients cut off node {leader} (leader of {partition})"), hold)
        }
    }
}

/// Per kind: faults run, the longest unavailability (any partition, and
/// until every partition was acknowledged again), and how many saw no
/// acknowledgement after them (`kinds[i]` is the kind of `report.windows[i]`).
pub fn summarize(report: &Report, kinds: &[FaultKind]) {
    for kind in FaultKind::ALL.into_iter().filter(|k| kinds.contains(k)) {
        let windows: Vec<_> =
            report.windows.iter().zip(kinds).filter(|(_, k)| **k == kind).map(|(w, _)| w).collect();
        let worst = windows.iter().filter_map(|w| w.unavailable).max();
        let worst_every = windows.iter().filter_map(|w| w.every_partition).max();
        let open = windows.iter().filter(|w| w.every_partition.is_none()).count();
        eprintln!(
            "{}: {} faults, worst unavailability {worst:?} (every partition: {worst_every:?}), {open} with a partition never acknowledged after",
            kind.name(),
            windows.len()
        );
    }
}
