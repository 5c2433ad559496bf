//! The Raft log, vote and committed index on `raft-log`: a chunked WAL with
//! CRC-checked records and batched fdatasync on its own flush thread.
//!
//! ```text
//!  openraft ──append──► RaftLog::append + flush(sync) ──fsync done──► IOFlushed callback
//!           ──save_vote─► RaftLog::save_vote + flush(sync) ──awaited before returning
//! ```
//!
//! Appends are acknowledged to openraft only from the flush callback, i.e.
//! after fdatasync; a vote is on disk before `save_vote` returns, so it is on
//! disk before the vote is answered.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::OptionalSend;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::{RaftLog, Types};

use crate::raft::types::{Entry, EntryPayload, IOFlushed, LogId, LogState, TypeConfig, Vote};

/// The raft-log type configuration: openraft's log id, payload and vote,
/// each stored as a length-prefixed MessagePack record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogTypes;

impl Types for LogTypes {
    type LogId = Mp<LogId>;
    type LogPayload = Mp<EntryPayload>;
    type Vote = Mp<Vote>;
    type Callback = FlushCallback;
    type UserData = Mp<()>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        match &payload.0 {
            openraft::EntryPayload::Blank => 16,
            openraft::EntryPayload::Normal(cmd) => cmd.approx_bytes(),
            openraft::EntryPayload::Membership(_) => 256,
        }
    }
}

/// A value stored as a u32 length followed by its MessagePack encoding.
/// Truncated input reports `UnexpectedEof`, which is what raft-log needs to
/// tell a torn tail (dropped on open) from corruption (refused on open).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mp<T>(pub T);

impl<T: serde::Serialize> Encode for Mp<T> {
    fn encode<W: Write>(&self, mut w: W) -> Result<usize, io::Error> {
        let bytes = rmp_serde::to_vec_named(&self.0).map_err(io::Error::other)?;
        let len =
            u32::try_from(bytes.len()).map_err(|_| io::Error::other("log record over 4 GiB"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(&bytes)?;
        Ok(4 + bytes.len())
    }
}

impl<T: serde::de::DeserializeOwned> Decode for Mp<T> {
    fn decode<R: Read>(mut r: R) -> Result<Self, io::Error> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        let mut buf = Vec::new();
        r.take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let v = rmp_serde::from_slice(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Mp(v))
    }
}

/// Called by raft-log's flush thread once a flush (and its fsync) is done.
pub enum FlushCallback {
    Openraft(IOFlushed),
    Oneshot(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl raft_log::Callback for FlushCallback {
    fn send(self, res: Result<(), io::Error>) {
        match self {
            FlushCallback::Openraft(cb) => cb.io_completed(res),
            FlushCallback::Oneshot(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

const LOG_CACHE_ENTRIES: usize = 10_000;
/// Counted by `Command::approx_bytes`, which undercounts a cached upsert's
/// heap: at 32 MiB the cache held 79 MB on a leader loading 100,000
/// schedules (heaptrack), a quarter of its resident size. Replication reads
/// the entries just appended, which 8 MiB still holds (hundreds of claim or
/// record entries); a follower further behind reads from disk.
const LOG_CACHE_BYTES: usize = 8 << 20;
/// How long the flush thread gathers more writes before its fsync. The
/// default (1 ms) was a millisecond added to every commit when the disk was
/// idle, on the leader and again on the followers (1-client commit p50 1.61
/// ms against etcd's 0.67 ms). Writes that arrive while an fsync runs are
/// queued and taken by the next batch anyway, so the batch only has to
/// drain the queue: 50 µs covers that (a receive is ~0.1 µs) and costs an
/// idle disk nothing it can feel.
const FLUSH_BATCH_WAIT: std::time::Duration = std::time::Duration::from_micros(50);

/// openraft's log store over one `RaftLog`. Cloning shares it; the clone is
/// also the log reader replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<RaftLog<LogTypes>>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`. A CRC mismatch or an unreadable
    /// record anywhere but a torn tail is refused: starting on a damaged log
    /// could lose acknowledged writes.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut config = raft_log::Config::new(dir.display());
        // raft-log keeps recent payloads in memory for replication reads; its
        // default (100,000 entries, 1 GiB) would dominate a node's memory.
        // Followers read from disk past this.
        config.log_cache_max_items = Some(LOG_CACHE_ENTRIES);
        // RAFTCRON_WAL_FLUSH_WAIT_US overrides it, for benchmarks beside the default.
        let wait = std::env::var("RAFTCRON_WAL_FLUSH_WAIT_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(FLUSH_BATCH_WAIT, std::time::Duration::from_micros);
        config.wal.flush_batch_wait = Some(wait);
        config.log_cache_capacity = Some(LOG_CACHE_BYTES);
        let log = RaftLog::<LogTypes>::open(Arc::new(config)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot open the Raft log in {}: {e}. The log is damaged (a record failed its checksum or \
                     could not be decoded); refusing to start so that nothing acknowledged is lost. To rejoin \
                     the cluster as a new member, move the data dir away and start the node again.",
                    dir.display()
                ),
            )
        })?;
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RaftLog<LogTypes>> {
        // A panic while holding the lock leaves the WAL in an unknown state; stop.
        self.log.lock().expect("raft log mutex poisoned")
    }

    /// Vote, last log id and committed id, for status and startup checks.
    pub fn summary(&self) -> (Option<Vote>, Option<LogId>, Option<LogId>) {
        let log = self.lock();
        let st = log.log_state();
        (
            st.vote().map(|v| v.0),
            st.last().map(|l| l.0),
            st.committed().map(|c| c.0),
        )
    }

    /// Whether this node has ever voted or stored an entry.
    pub fn is_initialized(&self) -> bool {
        let (vote, last, _) = self.summary();
        vote.is_some() || last.is_some()
    }

    async fn flush_and_wait(&self, sync: bool) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().flush(sync, Some(FlushCallback::Oneshot(tx)))?;
        rx.await
            .map_err(|_| io::Error::other("raft log flush thread stopped"))?
    }
}

fn range_to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e + 1,
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_to_bounds(&range);
        let log = self.lock();
        log.read(start, end)
            .map(|r| {
                r.map(|(id, payload)| Entry {
                    log_id: id.0,
                    payload: payload.0,
                })
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().log_state().vote().map(|v| v.0))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        let log = self.lock();
        let st = log.log_state();
        let last_purged_log_id = st.purged().map(|p| p.0);
        let last_log_id = st.last().map(|l| l.0).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.lock().save_vote(Mp(*vote))?;
        self.flush_and_wait(true).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(c) = committed {
            let mut log = self.lock();
            log.commit(Mp(c))?;
            // Best effort: the next synced append carries it to disk. A lost
            // committed id only means re-applying entries after a restart.
            log.flush(false, None)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock().log_state().committed().map(|c| c.0))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut log = self.lock();
        log.append(entries.into_iter().map(|e| (Mp(e.log_id), Mp(e.payload))))?;
        log.flush(true, Some(FlushCallback::Openraft(callback)))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut log = self.lock();
        if log.log_state().last().is_some_and(|l| l.0.index >= from) {
            log.truncate(from)?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut log = self.lock();
        log.purge(Mp(log_id))?;
        log.flush(false, None)?;
        Ok(())
    }
}
