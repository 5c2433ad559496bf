//! Who this node is: the Raft id given on the command line, a random uid
//! created the first time the data dir is used, and the cluster id once the
//! node has joined one. Kept in `DATA_DIR/node.json`.
//!
//! The uid is what makes "a wiped node rejoins as a new member" hold: the
//! membership records the uid of each member, every Raft RPC names the uid it
//! is meant for, and a node refuses RPCs meant for another incarnation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::raft::types::NodeId;

const FILE: &str = "node.json";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct IdentityFile {
    id: NodeId,
    uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the data dir {dir} belongs to node {found}, but this node was started with --id {given}; use that id or another data dir"
    )]
    IdMismatch {
        dir: PathBuf,
        found: NodeId,
        given: NodeId,
    },
    #[error(
        "the data dir {dir} holds Raft data but no node.json; it was not created by raftcron-node or was damaged; refusing to start"
    )]
    MissingIdentity { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid node identity file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// This node's identity, shared by the transport, the API and the join logic.
#[derive(Debug)]
pub struct Identity {
    pub id: NodeId,
    pub uid: String,
    /// The address peers and clients reach this node's gRPC port at.
    pub addr: String,
    dir: PathBuf,
    cluster_id: RwLock<Option<String>>,
}

impl Identity {
    /// Reads the identity from `dir`, or creates a fresh one when the dir has
    /// never been used.
    pub fn load_or_create(dir: &Path, id: NodeId, addr: String) -> Result<Self, IdentityError> {
        let path = dir.join(FILE);
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: IdentityFile =
                    serde_json::from_slice(&bytes).map_err(|source| IdentityError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                if f.id != id {
                    return Err(IdentityError::IdMismatch {
                        dir: dir.to_path_buf(),
                        found: f.id,
                        given: id,
                    });
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if ["raft-log", "snapshot.bin", "snapshot.redb"]
                    .iter()
                    .any(|f| dir.join(f).exists())
                {
                    return Err(IdentityError::MissingIdentity {
                        dir: dir.to_path_buf(),
                    });
                }
                let f = IdentityFile {
                    id,
                    uid: uuid::Uuid::new_v4().to_string(),
                    cluster_id: None,
                };
                write_atomically(&path, &f)?;
                tracing::info!(id, uid = %f.uid, dir = %dir.display(), "created a new node identity");
                f
            }
            Err(source) => return Err(IdentityError::Read { path, source }),
        };
        Ok(Self {
            id,
            uid: file.uid,
            addr,
            dir: dir.to_path_buf(),
            cluster_id: RwLock::new(file.cluster_id),
        })
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().expect("identity lock").clone()
    }

    /// Records the cluster this node belongs to (once learned from the log).
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), IdentityError> {
        if self.cluster_id().as_deref() == Some(cluster_id) {
            return Ok(());
        }
        let f = IdentityFile {
            id: self.id,
            uid: self.uid.clone(),
            cluster_id: Some(cluster_id.to_string()),
        };
        write_atomically(&self.dir.join(FILE), &f)?;
        *self.cluster_id.write().expect("identity lock") = Some(cluster_id.to_string());
        Ok(())
    }
}

/// Write to a temporary file, fsync it, rename over the target and fsync the
/// directory, so a crash leaves either the old or the new file.
fn write_atomically(path: &Path, f: &IdentityFile) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(f).expect("identity serializes");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_data_dir_gets_a_new_uid_that_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), 1, "x:1".into()).unwrap();
        let b = Identity::load_or_create(dir.path(), 1, "x:1".into()).unwrap();
        assert_eq!(a.uid, b.uid);
        let other = tempfile::tempdir().unwrap();
        let c = Identity::load_or_create(other.path(), 1, "x:1".into()).unwrap();
        assert_ne!(
            a.uid, c.uid,
            "a wiped (new) data dir must be a new incarnation"
        );
    }

    #[test]
    fn a_data_dir_of_another_node_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path(), 1, "x:1".into()).unwrap();
        let err = Identity::load_or_create(dir.path(), 2, "x:1".into()).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::IdMismatch {
                    found: 1,
                    given: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_cluster_id_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), 3, "x:1".into()).unwrap();
        a.set_cluster_id("c-1").unwrap();
        let b = Identity::load_or_create(dir.path(), 3, "x:1".into()).unwrap();
        assert_eq!(b.cluster_id().as_deref(), Some("c-1"));
    }
}
