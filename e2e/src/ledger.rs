//! The HTTP ledger target (`raftcron-node target`) as a child process, and
//! the records it writes: one JSON line per request received.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::process::ChildGuard;
use crate::{bin, free_port};

/// One request the target received: the target's own record type, read
/// back from its ledger file.
pub use raftcron_node::cli::target::Record as LedgerRecord;

pub struct Ledger {
    pub addr: String,
    pub file: PathBuf,
    _child: ChildGuard,
}

impl Ledger {
    /// Starts a target writing to `dir/ledger.jsonl`.
    pub async fn start(dir: &std::path::Path) -> Self {
        Self::start_on(dir, "127.0.0.1").await
    }

    /// Starts a target listening on `ip` (e.g. a fault lab's host address).
    pub async fn start_on(dir: &std::path::Path, ip: &str) -> Self {
        let addr = format!("{ip}:{}", free_port());
        let file = dir.join("ledger.jsonl");
        // Guarded from the start, so a target that does not come up is
        // killed with the failing test.
        let child = ChildGuard::running(
            Command::new(bin("raftcron-node"))
                .args(["target", "--listen", &addr, "--ledger"])
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn target"),
        );
        let url = format!("http://{addr}/stats");
        let up = crate::wait_for(std::time::Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                tokio::net::TcpStream::connect(
                    url.trim_start_matches("http://").trim_end_matches("/stats"),
                )
                .await
                .ok()
            }
        })
        .await;
        assert!(up.is_some(), "ledger target did not come up");
        Self {
            addr,
            file,
            _child: child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every record so far (the target flushes at least every 100 ms).
    pub fn records(&self) -> Vec<LedgerRecord> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Records grouped by (run id, attempt), counting duplicates.
    pub fn executions(&self) -> HashMap<(String, u32), usize> {
        let mut m = HashMap::new();
        for r in self.records() {
            if let (Some(id), Some(a)) = (r.run_id, r.attempt) {
                *m.entry((id, a)).or_insert(0) += 1;
            }
        }
        m
    }
}
