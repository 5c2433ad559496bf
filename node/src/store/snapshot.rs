//! Snapshots on disk: one file, written and read as a stream, so that a
//! snapshot never sits whole in memory beside the state it was made from.
//!
//! ```text
//!  DATA_DIR/snapshot.bin:  "RCSNAP01" | meta length (u32 BE) | meta | data | CRC-32 (u32 BE)
//!                           meta = SnapshotMeta, data = SmData, both MessagePack with field names
//!  build:    State ──encode──► snapshot.bin.tmp.N ──fsync, rename, fsync dir──► snapshot.bin
//!  receive:  1 MiB chunks ──► snapshot.recv.N ──checked by decoding──► installed: renamed over snapshot.bin
//!  send:     snapshot.bin's data part, read in 1 MiB chunks (the receiver writes its own header)
//! ```
//!
//! The data part is the same MessagePack as when snapshots were one redb
//! value, so nodes of both versions exchange snapshots; a data dir with
//! `snapshot.redb` and no `snapshot.bin` is converted when the node opens it.
//!
//! A newer snapshot is never replaced by an older one: a build that started
//! before a snapshot from the leader was installed finishes after it, and
//! writing it over the installed one would leave a gap between the snapshot
//! and the log openraft purged for it.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::raft::types::{LeaderId, LogId, Member, NodeId, SnapshotMeta, StoredMembership};
use crate::sm::{Key, ScheduleRecord, State, StateView};
use crate::store::msgpack;

const MAGIC: &[u8; 8] = b"RCSNAP01";
const FILE: &str = "snapshot.bin";
const BUILDING: &str = "snapshot.bin.tmp.";
const RECEIVING: &str = "snapshot.recv.";
/// Where snapshots were kept before this file: one redb value.
const OLD_REDB: &str = "snapshot.redb";
/// Read and write buffers: large enough that a 50 MB snapshot is a few
/// hundred syscalls, small beside the state.
const BUF: usize = 1 << 20;

/// What openraft hands between the state machine, the network and the
/// installer (since openraft 0.10 the state machine names it, not the type
/// config).
pub type SnapshotData = SnapshotFile;
pub type Snapshot = openraft::Snapshot<LeaderId, NodeId, Member, SnapshotData>;

/// Everything a snapshot holds.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
}

/// What a snapshot is encoded from: [`SmData`] with the state as a view
/// ([`StateView`]), taken under the read lock. Encodes exactly as
/// `SmData` does.
#[derive(Serialize)]
#[serde(rename = "SmData")]
pub struct SmView {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: StateView,
}

impl SmData {
    pub fn view(&self) -> SmView {
        SmView {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            state: self.state.view(),
        }
    }
}

/// Decodes a snapshot's data part. A snapshot from a peer must never panic
/// the node, only fail to install (the fuzz target feeds it garbage).
pub fn decode(bytes: &[u8]) -> io::Result<SmData> {
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut data = match decode_in_parts(bytes, parts) {
        Some(d) => d,
        // Not the layout this version writes, or not sound: decoded whole,
        // which reads what serde accepts and names what is wrong.
        None => rmp_serde::from_slice(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
    };
    data.state.reindex();
    Ok(data)
}

/// Fewest schedules per part: below this, threads cost more than they save.
const PART_MIN: usize = 1000;

/// Decodes a snapshot with its schedules cut into `parts` runs of the map,
/// each decoded on a thread of its own (a restart at 1,000,000 schedules
/// decodes 470 MB; one thread did it in ~6 s). The rest of the state is
/// small and decoded as serde would. `None` when the bytes are not laid
/// out as [`SmData`] is written (`to_vec_named`): the caller then decodes
/// the whole in one piece.
pub(crate) fn decode_in_parts(bytes: &[u8], parts: usize) -> Option<SmData> {
    let mut c = msgpack::Cursor::new(bytes);
    let (mut last_applied, mut last_membership, mut state) = (None, None, None);
    for _ in 0..c.map_len()? {
        match c.str()? {
            "last_applied" => last_applied = rmp_serde::from_slice(c.value()?).ok()?,
            "last_membership" => last_membership = Some(rmp_serde::from_slice(c.value()?).ok()?),
            "state" => state = Some(decode_state(&mut c, parts)?),
            _ => {
                c.skip()?;
            }
        }
    }
    (c.pos() == bytes.len()).then_some(())?;
    Some(SmData {
        last_applied,
        last_membership: last_membership?,
        state: state?,
    })
}

fn decode_state(c: &mut msgpack::Cursor<'_>, parts: usize) -> Option<State> {
    let (mut cluster_id, mut schedules, mut leases, mut ended) = (None, None, None, None);
    for _ in 0..c.map_len()? {
        match c.str()? {
            "cluster_id" => cluster_id = rmp_serde::from_slice(c.value()?).ok()?,
            "schedules" => schedules = Some(decode_schedules(c, parts)?),
            "leases" => leases = Some(rmp_serde::from_slice(c.value()?).ok()?),
            "ended_jobs" => ended = Some(rmp_serde::from_slice(c.value()?).ok()?),
            _ => {
                c.skip()?;
            }
        }
    }
    Some(State::from_parts(
        cluster_id,
        schedules?,
        leases.unwrap_or_default(),
        ended.unwrap_or_default(),
    ))
}

/// Schedules with their keys, in key order.
type Schedules = Vec<(Key, Arc<ScheduleRecord>)>;

/// The map of schedules: walked once to find where each part starts, then
/// the parts decoded at once, in key order.
fn decode_schedules(c: &mut msgpack::Cursor<'_>, parts: usize) -> Option<Schedules> {
    let n = c.map_len()?;
    let per = n.div_ceil(parts.clamp(1, n.div_ceil(PART_MIN).max(1)));
    let mut runs = Vec::new();
    let mut left = n;
    while left > 0 {
        let count = per.min(left);
        let start = c.pos();
        for _ in 0..count {
            c.skip()?;
            c.skip()?;
        }
        runs.push((c.slice_from(start), count));
        left -= count;
    }
    let decoded: Vec<Option<Schedules>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(bytes, count)| s.spawn(move || decode_run(bytes, count)))
            .collect();
        handles.into_iter().map(|h| h.join().ok()?).collect()
    });
    let mut all = Vec::with_capacity(n);
    for run in decoded {
        all.extend(run?);
    }
    Some(all)
}

/// `count` pairs of key and schedule, back to back.
fn decode_run(bytes: &[u8], count: usize) -> Option<Schedules> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let key = Deserialize::deserialize(&mut de).ok()?;
        let record = Deserialize::deserialize(&mut de).ok()?;
        out.push((key, record));
    }
    Some(out)
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A snapshot's data, open for reading: what openraft hands between the
/// state machine, the network and the installer.
pub struct SnapshotFile {
    file: File,
    path: PathBuf,
    data_at: u64,
    data_len: u64,
    /// A received file not yet installed: removed if dropped before.
    pending: bool,
    /// Decoded when it was received and checked, so installing does not
    /// decode it a second time.
    decoded: Option<Box<SmData>>,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotFile({}, {} bytes)",
            self.path.display(),
            self.data_len
        )
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.pending {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl SnapshotFile {
    /// Opens `path`, checks its header and returns its meta.
    fn open(path: &Path) -> io::Result<(SnapshotMeta, Self)> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid(format!(
                "{} is not a raftcron snapshot",
                path.display()
            )));
        }
        let mut n = [0u8; 4];
        file.read_exact(&mut n)?;
        let meta_len = u64::from(u32::from_be_bytes(n));
        let data_at = 12 + meta_len;
        if data_at + 4 > len {
            return Err(invalid(format!("{} is truncated", path.display())));
        }
        let mut meta = vec![0; meta_len as usize];
        file.read_exact(&mut meta)?;
        let meta = rmp_serde::from_slice(&meta).map_err(invalid)?;
        Ok((
            meta,
            Self {
                file,
                path: path.to_path_buf(),
                data_at,
                data_len: len - data_at - 4,
                pending: false,
                decoded: None,
            },
        ))
    }

    /// Bytes of the data part (what is sent to a peer).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The data part, from its start; each call reads independently.
    pub fn data_reader(&self) -> io::Result<impl Read + Send + 'static> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(self.data_at))?;
        Ok(BufReader::with_capacity(BUF, f.take(self.data_len)))
    }

    /// The state it holds (decoded already when received from a peer),
    /// after checking the file against its CRC: a disk that returns
    /// different bytes than were written is refused, not loaded.
    fn decode(mut self) -> io::Result<SmData> {
        if let Some(d) = self.decoded.take() {
            return Ok(*d);
        }
        let map = self.map()?;
        let end = (self.data_at + self.data_len) as usize;
        let stored = map
            .get(end..end + 4)
            .ok_or_else(|| invalid(format!("{} is truncated", self.path.display())))?;
        if crc32fast::hash(&map[..end]).to_be_bytes() != stored {
            return Err(invalid(format!(
                "{} fails its checksum; move it away to recover this node from the leader",
                self.path.display()
            )));
        }
        decode(self.data_of(&map)?)
    }

    /// The file mapped into memory, for decoding. Mapped rather than read:
    /// decoding from memory borrows each string where decoding from a
    /// reader copies it through a buffer (rmp's `read_to_end` per string
    /// and the buffered reads were a sixth of a restart's CPU), and the
    /// pages are the page cache's, given back when the map is dropped, not
    /// heap. (A file just received is not summed again: its CRC was
    /// computed from the same bytes as they were written.)
    fn map(&self) -> io::Result<memmap2::Mmap> {
        // SAFETY: the map is read-only and dropped by the caller before it
        // returns; the file is this node's own, written once under a
        // temporary name and never modified after (replacing it renames
        // another file over it, which leaves this one's pages as they were).
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(map)
    }

    /// The data part of a mapped file.
    fn data_of<'m>(&self, map: &'m memmap2::Mmap) -> io::Result<&'m [u8]> {
        map.get(self.data_at as usize..(self.data_at + self.data_len) as usize)
            .ok_or_else(|| invalid(format!("{} is truncated", self.path.display())))
    }
}

/// A writer that keeps the CRC of what went through it.
struct Summed<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T> Summed<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A snapshot file being written: the header first, then the data. One
/// dropped before [`finish`](Self::finish) (a transfer refused or cut
/// off) is removed, not left to the next start: it can be gigabytes.
pub struct Writing {
    /// The sum under the buffer: it sees 1 MiB writes, not each of the
    /// encoder's tiny ones.
    out: BufWriter<Summed<File>>,
    path: Unfinished,
    written: u64,
}

/// The path of a file being written, removed when dropped unless kept.
struct Unfinished(PathBuf);

impl Unfinished {
    fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

impl Writing {
    fn create(path: PathBuf, meta: &SnapshotMeta) -> io::Result<Self> {
        let file = File::create(&path)?;
        let mut out = BufWriter::with_capacity(BUF, Summed::new(file));
        let meta = rmp_serde::to_vec_named(meta).map_err(io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&(meta.len() as u32).to_be_bytes())?;
        out.write_all(&meta)?;
        Ok(Self {
            out,
            path: Unfinished(path),
            written: 0,
        })
    }

    /// Bytes of data written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Appends the CRC and makes the file durable under its temporary name.
    fn finish(self) -> io::Result<PathBuf> {
        let Summed {
            inner: mut file,
            crc,
        } = self.out.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&crc.finalize().to_be_bytes())?;
        file.sync_all()?;
        Ok(self.path.keep())
    }
}

/// The snapshots of one data dir.
pub struct Snapshots {
    dir: PathBuf,
    /// The meta of `snapshot.bin`; also serializes replacing it.
    current: Mutex<Option<SnapshotMeta>>,
    /// Names the temporary files.
    temp: AtomicU64,
}

impl Snapshots {
    /// Opens the snapshots in `dir`: drops what a crash left half-written
    /// and converts a snapshot kept by an older version in redb.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for e in fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(BUILDING) || name.starts_with(RECEIVING) {
                fs::remove_file(dir.join(&*name))?;
            }
        }
        let me = Self {
            dir: dir.to_path_buf(),
            current: Mutex::new(None),
            temp: AtomicU64::new(0),
        };
        let path = dir.join(FILE);
        let current = match SnapshotFile::open(&path) {
            Ok((meta, _)) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => me.convert_redb()?,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read the snapshot {}: {e}", path.display()),
                ));
            }
        };
        *me.current.lock().expect("snapshot lock") = current;
        Ok(me)
    }

    /// An older version kept the snapshot as two values of a redb table;
    /// its data part is the same MessagePack, so it is copied as it is.
    fn convert_redb(&self) -> io::Result<Option<SnapshotMeta>> {
        use redb::{Database, ReadableDatabase, TableDefinition};
        const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
        let old = self.dir.join(OLD_REDB);
        if !old.exists() {
            return Ok(None);
        }
        let found = {
            let db = Database::open(&old).map_err(io::Error::other)?;
            let tx = db.begin_read().map_err(io::Error::other)?;
            match tx.open_table(TABLE) {
                Ok(t) => match (
                    t.get("meta").map_err(io::Error::other)?,
                    t.get("data").map_err(io::Error::other)?,
                ) {
                    (Some(meta), Some(data)) => {
                        let meta: SnapshotMeta =
                            rmp_serde::from_slice(meta.value()).map_err(invalid)?;
                        let mut w = Writing::create(self.temp(BUILDING), &meta)?;
                        w.write_data(data.value())?;
                        Some((meta, w.finish()?))
                    }
                    _ => None,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(io::Error::other(e)),
            }
        };
        let meta = match found {
            Some((meta, tmp)) => {
                self.put_in_place(&tmp)?;
                tracing::info!(last_log_id = ?meta.last_log_id, "snapshot converted from snapshot.redb");
                Some(meta)
            }
            None => None,
        };
        fs::remove_file(&old)?;
        sync_dir(&self.dir)?;
        Ok(meta)
    }

    fn temp(&self, prefix: &str) -> PathBuf {
        let n = self.temp.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{prefix}{n}"))
    }

    fn put_in_place(&self, tmp: &Path) -> io::Result<()> {
        fs::rename(tmp, self.dir.join(FILE))?;
        sync_dir(&self.dir)
    }

    /// The meta of the stored snapshot.
    pub fn stored_meta(&self) -> Option<SnapshotMeta> {
        self.current.lock().expect("snapshot lock").clone()
    }

    /// The stored snapshot, open for reading.
    pub fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        let _guard = self.current.lock().expect("snapshot lock");
        match SnapshotFile::open(&self.dir.join(FILE)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Encodes `data` into a new snapshot file and puts it in place unless a
    /// newer one got there first. Returns the file now in place.
    pub fn write(&self, meta: &SnapshotMeta, data: &impl Serialize) -> io::Result<SnapshotFile> {
        let mut w = Writing::create(self.temp(BUILDING), meta)?;
        rmp_serde::encode::write_named(&mut DataSink(&mut w), data).map_err(io::Error::other)?;
        let tmp = w.finish()?;
        self.replace_if_newer(meta, &tmp)?;
        self.current()?
            .map(|(_, f)| f)
            .ok_or_else(|| io::Error::other("snapshot vanished after writing"))
    }

    /// Starts a file for a snapshot arriving from a peer.
    pub fn receive(&self, meta: &SnapshotMeta) -> io::Result<Writing> {
        Writing::create(self.temp(RECEIVING), meta)
    }

    /// A received file, complete: made durable and checked by decoding it
    /// (openraft panics on a snapshot it cannot install; a malformed one is
    /// refused here instead).
    pub fn received(&self, w: Writing) -> io::Result<SnapshotFile> {
        let path = w.finish()?;
        let (_, mut f) = SnapshotFile::open(&path).inspect_err(|_| {
            let _ = fs::remove_file(&path);
        })?;
        f.pending = true;
        let decoded = decode(f.data_of(&f.map()?)?)?;
        f.decoded = Some(Box::new(decoded));
        Ok(f)
    }

    /// Installs `snap` (described by `meta`) as the stored snapshot and
    /// returns the state it holds. The stored snapshot itself (at start,
    /// openraft installs what it just read from us) is only decoded.
    pub fn install(&self, meta: &SnapshotMeta, mut snap: SnapshotFile) -> io::Result<SmData> {
        if self.stored_meta().as_ref() == Some(meta) {
            return snap.decode();
        }
        let ours = snap.pending && snap.path.parent() == Some(self.dir.as_path());
        let tmp = if ours {
            snap.pending = false;
            snap.path.clone()
        } else {
            // Another store's file (the storage test suite hands one
            // store's snapshot to another): copy it in.
            let mut w = self.receive(meta)?;
            io::copy(&mut snap.data_reader()?, &mut DataSink(&mut w))?;
            w.finish()?
        };
        let data = snap.decode();
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.replace_if_newer(meta, &tmp)?;
        Ok(data)
    }

    fn replace_if_newer(&self, meta: &SnapshotMeta, tmp: &Path) -> io::Result<()> {
        let mut current = self.current.lock().expect("snapshot lock");
        if current
            .as_ref()
            .is_some_and(|c| c.last_log_id > meta.last_log_id)
        {
            fs::remove_file(tmp)?;
            return Ok(());
        }
        self.put_in_place(tmp)?;
        *current = Some(meta.clone());
        Ok(())
    }
}

/// `Write` into a snapshot's data part.
struct DataSink<'a>(&'a mut Writing);

impl Write for DataSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_data(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
