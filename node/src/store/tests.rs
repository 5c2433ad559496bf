//! Storage conformance (openraft's suite) and durability of our stores.

use std::io;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

use super::*;
use crate::raft::types::{Entry, IOFlushed, LeaderId, LogId, TypeConfig, Vote};
use crate::sm::Command;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let err = |e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e);
        let dir = tempfile::tempdir().map_err(err)?;
        let log = LogStore::open(&dir.path().join("raft-log")).map_err(err)?;
        let sm = StateMachineStore::open(dir.path(), ChangeFeed::default()).map_err(err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_raft_log_and_snapshot_files() {
    Suite::test_all(Builder).await.unwrap();
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId {
            leader_id: LeaderId { term, node_id: 1 },
            index,
        },
        payload: EntryPayload::Normal(Command::SetClusterId {
            cluster_id: format!("c{index}"),
        }),
    }
}

async fn append_durably(log: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await?;
    rx.await
        .map_err(|_| io::Error::other("flush callback dropped"))?
}

#[tokio::test]
async fn acknowledged_appends_and_the_vote_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    {
        let mut log = LogStore::open(&path).unwrap();
        log.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        append_durably(&mut log, (1..=100).map(|i| entry(3, i)).collect())
            .await
            .unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 2))
    );
    let entries = log.try_get_log_entries(1..=100).await.unwrap();
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[99], entry(3, 100));
    assert!(log.is_initialized());
}

#[tokio::test]
async fn a_log_whose_tail_fails_its_checksum_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    {
        let mut log = LogStore::open(&path).unwrap();
        append_durably(&mut log, (1..=10).map(|i| entry(1, i)).collect())
            .await
            .unwrap();
    }
    crate::testkit::corrupt_newest_wal_record(&path);
    match LogStore::open(&path) {
        Err(e) => assert!(e.to_string().contains("damaged"), "{e}"),
        Ok(log) => {
            // raft-log may only drop a torn tail; a corrupted record must never be served.
            let mut log = log;
            let entries = log.try_get_log_entries(1..=10).await.unwrap();
            for (i, e) in entries.iter().enumerate() {
                assert_eq!(*e, entry(1, i as u64 + 1), "a corrupted record was served");
            }
            panic!(
                "opened a log with a checksum failure and kept {} entries",
                entries.len()
            );
        }
    }
}

#[tokio::test]
async fn a_snapshot_is_kept_across_reopening() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let built = {
        let mut sm = StateMachineStore::open(path, ChangeFeed::default()).unwrap();
        let stream = futures::stream::iter(vec![Ok((entry(1, 1), None)), Ok((entry(1, 2), None))]);
        sm.apply(stream).await.unwrap();
        let mut b = sm.get_snapshot_builder().await;
        b.build_snapshot().await.unwrap()
    };
    let mut sm = StateMachineStore::open(path, ChangeFeed::default()).unwrap();
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot stored");
    assert_eq!(current.meta, built.meta);
    sm.install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(sm.read().state.cluster_id.as_deref(), Some("c1"));
    assert_eq!(sm.read().last_applied.as_ref().map(|l| l.index), Some(2));
}

#[test]
fn garbage_snapshot_bytes_are_an_error_not_a_panic() {
    assert!(StateMachineStore::decode(b"\x01\x02garbage").is_err());
    assert!(StateMachineStore::decode(&[]).is_err());
}

/// A store with entries 1..=n applied, and the snapshot built from them.
async fn built_snapshot(dir: &std::path::Path, n: u64) -> (StateMachineStore, snapshot::Snapshot) {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let mut sm = StateMachineStore::open(dir, ChangeFeed::default()).unwrap();
    let stream = futures::stream::iter((1..=n).map(|i| Ok((entry(1, i), None))));
    sm.apply(stream).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    (sm, snap)
}

#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_one() {
    use openraft::storage::RaftStateMachine;
    let (newer_dir, older_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, newer) = built_snapshot(newer_dir.path(), 5).await;
    let (_, older) = built_snapshot(older_dir.path(), 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path(), ChangeFeed::default()).unwrap();
    sm.install_snapshot(&newer.meta, newer.snapshot)
        .await
        .unwrap();
    // A build that began before the newer one was installed, finishing after it.
    sm.snapshots()
        .write(&older.meta, &SmData::default())
        .unwrap();
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, newer.meta);
    let reopened = StateMachineStore::open(dir.path(), ChangeFeed::default()).unwrap();
    assert_eq!(reopened.snapshots().stored_meta(), Some(newer.meta));
}

#[tokio::test]
async fn a_snapshot_file_that_fails_its_checksum_is_refused() {
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir().unwrap();
    let (_, snap) = built_snapshot(dir.path(), 3).await;
    drop(snap);
    let path = dir.path().join("snapshot.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 8; // inside the data part
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let mut sm = StateMachineStore::open(dir.path(), ChangeFeed::default()).unwrap();
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    let err = sm
        .install_snapshot(&current.meta.clone(), current.snapshot)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fails its checksum"), "{err}");
}

#[tokio::test]
async fn a_received_snapshot_is_checked_and_a_malformed_one_leaves_no_file() {
    use openraft::storage::RaftStateMachine;
    let src = tempfile::tempdir().unwrap();
    let (_, snap) = built_snapshot(src.path(), 4).await;
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut snap.snapshot.data_reader().unwrap(), &mut data).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path(), ChangeFeed::default()).unwrap();
    let mut w = sm.snapshots().receive(&snap.meta).unwrap();
    w.write_data(&data[..data.len() / 2]).unwrap();
    let err = sm.snapshots().received(w).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let files = || {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert!(files().is_empty(), "{:?}", files());
    // A transfer cut off before its end leaves nothing behind either.
    let mut w = sm.snapshots().receive(&snap.meta).unwrap();
    w.write_data(&data[..10]).unwrap();
    drop(w);
    assert!(files().is_empty(), "{:?}", files());

    let mut w = sm.snapshots().receive(&snap.meta).unwrap();
    for part in data.chunks(7) {
        w.write_data(part).unwrap();
    }
    let file = sm.snapshots().received(w).unwrap();
    sm.install_snapshot(&snap.meta, file).await.unwrap();
    assert_eq!(files(), ["snapshot.bin"]);
    assert_eq!(sm.read().state.cluster_id.as_deref(), Some("c1"));
    assert_eq!(sm.read().last_applied.map(|l| l.index), Some(4));
    let reopened = StateMachineStore::open(dir.path(), ChangeFeed::default()).unwrap();
    assert_eq!(reopened.snapshots().stored_meta(), Some(snap.meta));
}

#[tokio::test]
async fn a_snapshot_kept_in_redb_by_an_older_version_is_converted() {
    use openraft::storage::RaftStateMachine;
    use redb::{Database, TableDefinition};
    let src = tempfile::tempdir().unwrap();
    let (_, snap) = built_snapshot(src.path(), 6).await;
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut snap.snapshot.data_reader().unwrap(), &mut data).unwrap();

    // What the older version wrote: meta and data as two values of one table.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join("snapshot.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx
                .open_table(TableDefinition::<&str, &[u8]>::new("snapshot"))
                .unwrap();
            t.insert(
                "meta",
                rmp_serde::to_vec_named(&snap.meta).unwrap().as_slice(),
            )
            .unwrap();
            t.insert("data", data.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut sm = StateMachineStore::open(dir.path(), ChangeFeed::default()).unwrap();
    assert!(!dir.path().join("snapshot.redb").exists());
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    sm.install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(sm.read().state.cluster_id.as_deref(), Some("c1"));
    assert_eq!(sm.read().last_applied.map(|l| l.index), Some(6));
}

/// The state of `n` schedules (of 7 namespaces, two kinds of pattern),
/// a cluster id and a lease, as a snapshot holds it.
fn state_of(n: usize) -> SmData {
    use crate::sm::{State, UpsertSchedule};
    let mut state = State::default();
    state.apply(&Command::SetClusterId {
        cluster_id: "c-1".into(),
    });
    let items = (0..n)
        .map(|i| UpsertSchedule {
            namespace: format!("ns-{}", i % 7),
            name: format!("job-{i}"),
            uid: format!("uid-{i}"),
            generation: 1 + i as i64 % 3,
            spec: serde_json::from_value(serde_json::json!({
                "schedule": if i % 2 == 0 { "*/5 * * * *" } else { "@every 90s" },
                "timeZone": "Europe/Berlin",
                "action": {"http": {"url": format!("http://s-{i}.ns.svc:8080/run"),
                                    "headers": [{"name": "X-Job", "value": format!("job-{i}")}]}}
            }))
            .unwrap(),
            kubernetes: i % 3 == 0,
            app_job: None,
        })
        .collect();
    state.apply(&Command::Upsert {
        items,
        now: 1_800_000_000_000,
    });
    state.apply(&Command::Lease(crate::sm::leases::LeaseCommand::Acquire {
        key: crate::sm::leases::LeaseKey {
            namespace: "ns-1".into(),
            app: "shop".into(),
            key: "billing".into(),
        },
        pod: "shop-0".into(),
        ttl_ms: 10_000,
        now: 1_800_000_000_000,
        skew_ms: 500,
    }));
    SmData {
        last_applied: Some(LogId {
            leader_id: LeaderId {
                term: 4,
                node_id: 2,
            },
            index: 77,
        }),
        last_membership: Default::default(),
        state,
    }
}

#[test]
fn a_snapshot_decoded_in_parts_is_the_state_decoded_whole_and_a_view_encodes_as_the_state() {
    let data = state_of(5000);
    let bytes = rmp_serde::to_vec_named(&data).unwrap();
    // What snapshots are built from (a view, not a copy) encodes the same.
    assert!(
        rmp_serde::to_vec_named(&data.view()).unwrap() == bytes,
        "a view encodes as the state does"
    );
    let whole: SmData = rmp_serde::from_slice(&bytes).unwrap();
    for parts in [1, 2, 3, 7] {
        let p = snapshot::decode_in_parts(&bytes, parts).expect("laid out as written");
        assert_eq!(p.state, whole.state, "{parts} parts");
        assert_eq!(p.state.len(), 5000);
        assert_eq!(p.last_applied, whole.last_applied);
        assert_eq!(p.last_membership, whole.last_membership);
    }
    let decoded = snapshot::decode(&bytes).unwrap();
    assert!(decoded.state.get_by_uid("uid-4999").is_some(), "reindexed");
    // Cut short, the parts refuse it and the whole decode names the error.
    assert!(snapshot::decode_in_parts(&bytes[..bytes.len() - 1], 2).is_none());
    assert!(snapshot::decode(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn damaged_snapshot_bytes_decoded_in_parts_never_panic_nor_disagree_with_the_whole_decode() {
    let bytes = rmp_serde::to_vec_named(&state_of(1200)).unwrap();
    let mut rng = crate::testkit::SplitMix64::new(16);
    let mut accepted = 0;
    for round in 0..200 {
        let mut b = bytes.clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] = rng.next_u64() as u8;
        }
        if round % 10 == 0 {
            b.truncate(rng.below(b.len() as u64) as usize);
        }
        let parts = snapshot::decode_in_parts(&b, 3);
        let whole: Result<SmData, _> = rmp_serde::from_slice(&b);
        if let Some(p) = &parts {
            accepted += 1;
            let w = whole.unwrap_or_else(|e| {
                panic!("round {round}: the parts accepted what the whole refuses: {e}")
            });
            assert_eq!(p.state, w.state, "round {round}");
            assert_eq!(p.last_applied, w.last_applied, "round {round}");
        }
    }
    // Most single-byte damage lands in a string and decodes: both paths saw it.
    assert!(accepted > 0, "no damaged snapshot was decoded in parts");
}
