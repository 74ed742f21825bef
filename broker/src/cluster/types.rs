//! The openraft type configuration of the controller group, and the
//! conversions every openraft-facing module shares.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::state::{ApplyResult, Command};

openraft::declare_raft_types!(
    /// The controller's Raft types: [`Command`]s in, [`ApplyResult`]s out,
    /// node ids are broker ids, a node's address is its peer address.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A Raft log entry of the controller.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A log id (term, node, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// The membership as of some log id.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot with its bytes.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

/// Any displayable error as an `io::Error` (openraft's storage error type).
pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Locks `m`, turning a poisoned lock (a panic while held) into an error.
pub(crate) fn lock<T>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| io_err("controller store lock poisoned"))
}

/// Runs blocking file work `f` on `inner` off the async workers.
pub(crate) async fn blocking<T, R>(
    inner: &Arc<Mutex<T>>,
    f: impl FnOnce(&mut T) -> io::Result<R> + Send + 'static,
) -> io::Result<R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || f(&mut *lock(&inner)?)).await.map_err(io_err)?
}
