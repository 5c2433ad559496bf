//! openraft's state machine store: the pure [`crate::sm::State`] in memory, snapshots
//! in a file of the data dir ([`super::snapshot`]).
//!
//! ```text
//!  committed entries ──apply──► State (RwLock) ──changes──► ChangeFeed (fire loop, status writer)
//!                                   │
//!              build_snapshot ──────┴──► snapshot.bin (encoded as a stream, fsynced, renamed)
//!  restart: snapshot.bin ──install──► State, then openraft re-applies the log up to the
//!           committed id saved in the Raft log
//! ```
//!
//! The state machine is transient by design: applying does no disk IO, so
//! fires are not slowed by a second fsync. Durability comes from the Raft
//! log (fsynced before acknowledgement) plus the last snapshot.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};

use crate::raft::types::{EntryResponder, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::sm::Response;
use crate::store::feed::ChangeFeed;
use crate::store::snapshot::{self, SmData, Snapshot, SnapshotData, Snapshots};

struct Inner {
    data: RwLock<SmData>,
    snapshots: Snapshots,
    feed: ChangeFeed,
}

/// Cloning shares the store: openraft's state machine worker holds one
/// clone, the API and the fire loop read through another.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachineStore {
    /// Opens the snapshots kept in `dir` (the data dir). The in-memory
    /// state starts empty; openraft installs the stored snapshot when the
    /// node starts.
    pub fn open(dir: &Path, feed: ChangeFeed) -> io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                data: RwLock::new(SmData::default()),
                snapshots: Snapshots::open(dir)?,
                feed,
            }),
        })
    }

    /// Read access to the state; hold it briefly, applying waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.inner.data.read().expect("state lock poisoned")
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    /// Where a snapshot arriving from a peer is written.
    pub fn snapshots(&self) -> &Snapshots {
        &self.inner.snapshots
    }

    /// Decodes snapshot data. Exposed for the fuzz target: a snapshot from a
    /// peer must never panic the node, only fail to install.
    pub fn decode(bytes: &[u8]) -> io::Result<SmData> {
        snapshot::decode(bytes)
    }
}

/// Builds a snapshot from a copy of the state taken under the read lock.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Schedules are behind `Arc`s, so the view is a pointer a schedule
        // and the apply path waits only for it, not for the encoding.
        let data = self.store.read().view();
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership.clone(),
        };
        let store = self.store.clone();
        let meta2 = meta.clone();
        let file = tokio::task::spawn_blocking(move || store.snapshots().write(&meta2, &data))
            .await
            .map_err(io_err)??;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = file.data_len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let d = self.read();
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder, io::Error>> + Unpin + OptionalSend,
    {
        let mut changes = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = {
                let mut d = self.inner.data.write().expect("state lock poisoned");
                d.last_applied = Some(entry.log_id);
                let r = match &entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(cmd) => d.state.apply(cmd),
                    EntryPayload::Membership(m) => {
                        d.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Response::None
                    }
                };
                changes.extend(d.state.drain_changes());
                r
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        self.inner.feed.publish(changes);
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let store = self.clone();
        let meta2 = meta.clone();
        let mut data =
            tokio::task::spawn_blocking(move || store.snapshots().install(&meta2, snapshot))
                .await
                .map_err(io_err)??;
        // The meta is authoritative for what the snapshot covers.
        data.last_applied = meta.last_log_id;
        data.last_membership = meta.last_membership.clone();
        let old = std::mem::replace(
            &mut *self.inner.data.write().expect("state lock poisoned"),
            data,
        );
        self.inner.feed.publish_all();
        // The replaced state is freed on the blocking pool too.
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let store = self.clone();
        let loaded = tokio::task::spawn_blocking(move || store.snapshots().current())
            .await
            .map_err(io_err)??;
        Ok(loaded.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}
