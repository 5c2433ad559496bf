//! The target's ledger: one JSON line per request, written by one task
//! through a buffer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// How often buffered ledger lines reach the file, at most.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// One request, as written to the ledger: the e2e harness
/// (`raftcron_e2e::Ledger`) reads the same type back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    /// Unix time in milliseconds, with a fraction.
    pub received_ms: f64,
    pub path: String,
    pub method: String,
    pub run_id: Option<String>,
    pub attempt: Option<u32>,
    pub scheduled_time: Option<String>,
    pub term: Option<u64>,
}

/// What the ledger task receives.
pub(super) enum LedgerMsg {
    Record(Record),
    /// Flush, acknowledge and stop.
    Stop(oneshot::Sender<()>),
}

/// The one task that writes the ledger: lines go through a buffer that is
/// flushed at most [`FLUSH_EVERY`] after a line was written.
pub(super) async fn write_ledger(
    file: tokio::fs::File,
    mut rx: mpsc::UnboundedReceiver<LedgerMsg>,
) -> std::io::Result<()> {
    let mut out = tokio::io::BufWriter::new(file);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(LedgerMsg::Record(record)) => {
                    let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line).await {
                        tracing::error!(error = %e, "cannot write the ledger");
                        return Err(e);
                    }
                    dirty = true;
                }
                Some(LedgerMsg::Stop(done)) => {
                    out.flush().await?;
                    let _ = done.send(());
                    return Ok(());
                }
                None => return out.flush().await,
            },
            _ = tick.tick(), if dirty => {
                if let Err(e) = out.flush().await {
                    tracing::error!(error = %e, "cannot write the ledger");
                    return Err(e);
                }
                dirty = false;
            }
        }
    }
}
