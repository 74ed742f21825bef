//! The controller's state machine storage: the [`ControllerState`] in
//! memory, rebuilt on start from the last snapshot plus the Raft log.
//!
//! A snapshot is the state, the last applied log id and the membership,
//! as JSON in `<data_dir>/controller/snapshot.json`, written atomically
//! through the durable-file module before openraft is told it exists (so
//! the log it covers may then be purged). Applying an entry touches only
//! memory: after a restart openraft re-applies committed entries from the
//! durable log past the snapshot.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use super::state::{ControllerState, Outcome};
use super::types::{blocking, io_err, lock, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::durable;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The snapshot file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    /// The JSON of the [`ControllerState`] (the snapshot's bytes).
    data: Vec<u8>,
}

#[derive(Debug)]
struct SmInner {
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ControllerState,
    snapshot: Option<SnapshotFile>,
}

/// The state machine store (cheap to clone: shared state).
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
}

impl StateMachineStore {
    /// Opens the store in `dir`, loading the snapshot if there is one.
    ///
    /// # Errors
    /// I/O errors or an unreadable snapshot.
    pub fn open(dir: &Path) -> io::Result<Self> {
        durable::create_dir_durably(dir).map_err(io_err)?;
        let mut inner = SmInner {
            dir: dir.to_owned(),
            last_applied: None,
            membership: StoredMembership::default(),
            state: ControllerState::default(),
            snapshot: None,
        };
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let snap: SnapshotFile = serde_json::from_slice(&bytes).map_err(io_err)?;
                inner.state = serde_json::from_slice(&snap.data).map_err(io_err)?;
                inner.last_applied = snap.meta.last_log_id;
                inner.membership = snap.meta.last_membership.clone();
                inner.snapshot = Some(snap);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Self { inner: Arc::new(Mutex::new(inner)) })
    }

    /// A copy of the current controller state (as applied on this node).
    ///
    /// # Errors
    /// Only a poisoned lock.
    pub fn state(&self) -> io::Result<ControllerState> {
        Ok(lock(&self.inner)?.state.clone())
    }

    /// The last applied log id.
    ///
    /// # Errors
    /// Only a poisoned lock.
    pub fn last_applied(&self) -> io::Result<Option<LogId>> {
        Ok(lock(&self.inner)?.last_applied)
    }
}

/// Writes `snap` durably and makes it the current snapshot.
fn store_snapshot(inner: &mut SmInner, snap: SnapshotFile) -> io::Result<()> {
    let bytes = serde_json::to_vec(&snap).map_err(io_err)?;
    durable::write_atomically(&inner.dir.join(SNAPSHOT_FILE), &bytes).map_err(io_err)?;
    inner.snapshot = Some(snap);
    Ok(())
}

fn to_snapshot(snap: &SnapshotFile) -> Snapshot {
    Snapshot { meta: snap.meta.clone(), snapshot: Cursor::new(snap.data.clone()) }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        blocking(&self.inner, |inner| {
            let data = serde_json::to_vec(&inner.state).map_err(io_err)?;
            let meta =
                SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
            let snap = SnapshotFile { meta, data };
            let out = to_snapshot(&snap);
            store_snapshot(inner, snap)?;
            Ok(out)
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = lock(&self.inner)?;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = {
                let mut inner = lock(&self.inner)?;
                inner.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Ok(Outcome::Done),
                    EntryPayload::Normal(cmd) => {
                        let res = inner.state.apply(cmd);
                        if let Err(e) = &res {
                            tracing::debug!(%cmd, error = %e, "controller command refused");
                        }
                        res
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Ok(Outcome::Done)
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let state: ControllerState = serde_json::from_slice(&data).map_err(io_err)?;
        let meta = meta.clone();
        blocking(&self.inner, move |inner| {
            store_snapshot(inner, SnapshotFile { meta: meta.clone(), data })?;
            inner.state = state;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership;
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.inner)?.snapshot.as_ref().map(to_snapshot))
    }
}

#[cfg(test)]
#[path = "sm_store_tests.rs"]
mod tests;
