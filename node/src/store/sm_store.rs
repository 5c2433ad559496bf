//! openraft's state machine store: the pure [`State`] in memory, snapshots
//! in `redb`.
//!
//! ```text
//!  committed entries ──apply──► State (RwLock) ──changes──► ChangeFeed (fire loop, status writer)
//!                                   │
//!              build_snapshot ──────┴──► redb `snapshot` table (meta + MessagePack data, one txn)
//!  restart: redb snapshot ──install──► State, then openraft re-applies the log up to the
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
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::raft::types::{
    EntryResponder, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::sm::{Response, State};
use crate::store::feed::ChangeFeed;

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const META_KEY: &str = "meta";
const REDB_CACHE_BYTES: usize = 4 << 20;
const DATA_KEY: &str = "data";

/// Everything a snapshot holds.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
}

struct Inner {
    data: RwLock<SmData>,
    db: Database,
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
    /// Opens the snapshot database at `path`. The in-memory state starts
    /// empty; openraft installs the stored snapshot when the node starts.
    pub fn open(path: &Path, feed: ChangeFeed) -> io::Result<Self> {
        // The snapshot is written and read whole; a page cache for it only
        // costs memory (redb's default is 1 GiB).
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                io::Error::other(format!(
                    "cannot open the snapshot database {}: {e}",
                    path.display()
                ))
            })?;
        let tx = db.begin_write().map_err(io_err)?;
        tx.open_table(SNAPSHOT).map_err(io_err)?;
        tx.commit().map_err(io_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                data: RwLock::new(SmData::default()),
                db,
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

    fn encode(data: &SmData) -> io::Result<Vec<u8>> {
        rmp_serde::to_vec_named(data).map_err(io_err)
    }

    /// Decodes snapshot bytes. Exposed for the fuzz target: a snapshot from a
    /// peer must never panic the node, only fail to install.
    pub fn decode(bytes: &[u8]) -> io::Result<SmData> {
        let mut data: SmData = rmp_serde::from_slice(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        data.state.reindex();
        Ok(data)
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, bytes: &[u8]) -> io::Result<()> {
        let meta_bytes = rmp_serde::to_vec_named(meta).map_err(io_err)?;
        let tx = self.inner.db.begin_write().map_err(io_err)?;
        {
            let mut t = tx.open_table(SNAPSHOT).map_err(io_err)?;
            t.insert(META_KEY, meta_bytes.as_slice()).map_err(io_err)?;
            t.insert(DATA_KEY, bytes).map_err(io_err)?;
        }
        tx.commit().map_err(io_err)
    }

    /// The meta of the stored snapshot, without reading its data.
    fn stored_meta(&self) -> io::Result<Option<SnapshotMeta>> {
        let tx = self.inner.db.begin_read().map_err(io_err)?;
        let t = tx.open_table(SNAPSHOT).map_err(io_err)?;
        let Some(meta) = t.get(META_KEY).map_err(io_err)? else {
            return Ok(None);
        };
        decode_meta(meta.value()).map(Some)
    }

    fn load_snapshot(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let tx = self.inner.db.begin_read().map_err(io_err)?;
        let t = tx.open_table(SNAPSHOT).map_err(io_err)?;
        let (Some(meta), Some(data)) = (
            t.get(META_KEY).map_err(io_err)?,
            t.get(DATA_KEY).map_err(io_err)?,
        ) else {
            return Ok(None);
        };
        Ok(Some((decode_meta(meta.value())?, data.value().to_vec())))
    }
}

fn decode_meta(bytes: &[u8]) -> io::Result<SnapshotMeta> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Hands memory freed after a snapshot back to the OS. A snapshot is
/// encoded, written and read as one value (50 MB at 100,000 schedules), and
/// glibc keeps the freed buffers in its arenas, so the node's resident size
/// stayed at its snapshot peak (the heap profile in BENCHMARKS.md). Trimming
/// a large heap takes milliseconds: call it off the async workers, which
/// also run the firer.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Builds a snapshot from a copy of the state taken under the read lock.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Schedules are behind `Arc`s, so the copy is pointer-cheap and the
        // apply path waits only for the copy, not for the encoding.
        let data = self.store.read().clone();
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership.clone(),
        };
        let store = self.store.clone();
        let meta2 = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let bytes = StateMachineStore::encode(&data)?;
            store.save_snapshot(&meta2, &bytes)?;
            drop(data);
            release_freed_memory();
            Ok(bytes)
        })
        .await
        .map_err(io_err)??;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: bytes,
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
        let mut data = Self::decode(&snapshot)?;
        // The meta is authoritative for what the snapshot covers.
        data.last_applied = meta.last_log_id;
        data.last_membership = meta.last_membership.clone();
        let store = self.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || {
            // At start openraft installs the snapshot it just read from us;
            // writing the same bytes back cost a second copy in memory and a
            // rewrite of the whole value on every restart.
            if store.stored_meta()?.as_ref() != Some(&meta2) {
                store.save_snapshot(&meta2, &snapshot)?;
            }
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(io_err)??;
        let old = std::mem::replace(
            &mut *self.inner.data.write().expect("state lock poisoned"),
            data,
        );
        self.inner.feed.publish_all();
        // The replaced state is freed on the blocking pool too.
        tokio::task::spawn_blocking(move || {
            drop(old);
            release_freed_memory();
        });
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let store = self.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_snapshot())
            .await
            .map_err(io_err)??;
        Ok(loaded.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}
