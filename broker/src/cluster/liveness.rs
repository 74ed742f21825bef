//! Broker liveness through the controller: each broker registers and then
//! renews its lease by heartbeat; the controller leader fences brokers
//! whose lease lapsed (`ExpireLeases`), which moves their partitions'
//! leadership to the ISR.
//!
//! Time: a lease's end is stamped by the broker's clock, its expiry judged
//! by the leader's clock, so the lease must be much longer than the clock
//! skew between machines (on one machine there is none). The state machine
//! itself never reads a clock: both times travel in the commands.
//! An `ExpireLeases` entry is proposed only when some live broker's lease
//! has ended by the leader's clock, so an idle healthy cluster writes only
//! heartbeats. The leader checks for ended leases every fifth of a
//! heartbeat interval, so a dead broker is fenced within 100 ms of its
//! lease's end. A newly elected controller leader first gives every broker
//! [`GRACE_INTERVALS`] heartbeat intervals to renew (heartbeats failed
//! during the election through no fault of the brokers), so a broker that
//! dies together with the controller leader is fenced after the election
//! plus the longer of its lease and that grace.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use super::node::{ClusterError, ControllerNode};
use super::state::{Command, CommandError};

/// Heartbeat intervals a new controller leader waits before expiring
/// leases: one that may be lost to the election, one to land, one spare.
pub const GRACE_INTERVALS: u32 = 3;

/// How often a broker heartbeats and how long a lease lasts.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// A lease not renewed for this long lapses.
    pub lease: Duration,
    /// Heartbeat (and expiry check) interval; well under `lease`.
    pub interval: Duration,
}

impl Default for LivenessConfig {
    /// A 3 s lease renewed every 500 ms.
    fn default() -> Self {
        Self { lease: Duration::from_secs(3), interval: Duration::from_millis(500) }
    }
}

/// The addresses a broker registers.
#[derive(Debug, Clone)]
pub struct BrokerAddrs {
    /// Native client listener.
    pub client_addr: String,
    /// Kafka listener, if any.
    pub kafka_addr: Option<String>,
    /// Peer listener.
    pub peer_addr: String,
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the liveness loop of the broker embedding `node` until aborted.
/// `renewed` is called with the lease's end (unix ms, stamped before the
/// command was sent, so never later than the controller's view) after
/// every registration or heartbeat the controller applied: the broker's
/// leaders refuse writes once it passes without a renewal.
pub fn spawn(
    node: Arc<ControllerNode>,
    addrs: BrokerAddrs,
    cfg: LivenessConfig,
    renewed: impl Fn(u64) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut registered = false;
        // (term, when this node was first seen leading in it)
        let mut leading: Option<(u64, Instant)> = None;
        let mut beat = tokio::time::interval(cfg.interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(cfg.interval / 5);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let grace = (cfg.interval * GRACE_INTERVALS).min(cfg.lease);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let lease_until_ms = now_ms().saturating_add(ms(cfg.lease));
                    let applied;
                    (registered, applied) = renew(&node, &addrs, lease_until_ms, registered).await;
                    if applied {
                        renewed(lease_until_ms);
                    }
                }
                _ = check.tick() => {}
            }
            if !node.is_leader() {
                leading = None;
                continue;
            }
            let term = node.term();
            let since = match leading {
                Some((t, at)) if t == term => at,
                _ => leading.insert((term, Instant::now())).1,
            };
            if since.elapsed() >= grace {
                expire(&node).await;
            }
        }
    })
}

/// Registers (or heartbeats, once registered) with a lease ending at
/// `lease_until_ms`; returns whether the broker is registered afterwards as
/// far as it knows, and whether the controller applied the renewal.
async fn renew(
    node: &ControllerNode,
    addrs: &BrokerAddrs,
    lease_until_ms: u64,
    registered: bool,
) -> (bool, bool) {
    let id = node.node_id();
    let cmd = if registered {
        Command::BrokerHeartbeat { id, lease_until_ms }
    } else {
        Command::RegisterBroker {
            id,
            client_addr: addrs.client_addr.clone(),
            kafka_addr: addrs.kafka_addr.clone(),
            peer_addr: addrs.peer_addr.clone(),
            lease_until_ms,
        }
    };
    match node.propose_anywhere(cmd).await {
        Ok(Ok(_)) => (true, true),
        Ok(Err(CommandError::UnknownBroker(_))) => (false, false),
        Ok(Err(e)) => {
            tracing::warn!(broker = id, error = %e, "controller refused a liveness command");
            (registered, false)
        }
        Err(ClusterError::NotLeader { .. }) => (registered, false), // an election: next tick
        Err(e) => {
            tracing::debug!(broker = id, error = %e, "liveness: controller unreachable");
            (registered, false)
        }
    }
}

/// On the leader: fences brokers whose lease ended by its clock.
async fn expire(node: &ControllerNode) {
    let now_ms = now_ms();
    let due = match node.state() {
        Ok(s) => s.brokers.values().any(|b| !b.fenced && b.lease_until_ms <= now_ms),
        Err(_) => false,
    };
    if !due {
        return;
    }
    match node.propose(Command::ExpireLeases { now_ms }).await {
        Ok(Ok(out)) => tracing::info!(?out, "controller: leases expired"),
        Ok(Err(e)) => tracing::warn!(error = %e, "controller refused ExpireLeases"),
        Err(e) => tracing::debug!(error = %e, "ExpireLeases not applied"),
    }
}
