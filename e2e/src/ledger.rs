//! The HTTP ledger target (`raftcron-node target`) as a child process, and
//! the records it writes: one JSON line per request received.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde::Deserialize;

use crate::{bin, free_port};

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LedgerRecord {
    pub received_ms: f64,
    pub path: String,
    pub method: String,
    pub run_id: Option<String>,
    pub attempt: Option<u32>,
    pub scheduled_time: Option<String>,
    pub term: Option<u64>,
}

pub struct Ledger {
    pub addr: String,
    pub file: PathBuf,
    child: Child,
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
        let child = Command::new(bin("raftcron-node"))
            .args(["target", "--listen", &addr, "--ledger"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn target");
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
        Self { addr, file, child }
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

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
