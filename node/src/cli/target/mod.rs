//! A small HTTP target for examples, benchmarks and end-to-end tests
//! (`raftcron-node target`): it answers by path and writes every request to a
//! ledger, one JSON line each, so a test can count executions.
//!
//! ```text
//!  request ──► handle ──Record──► channel ──► ledger task ──BufWriter──► ledger.jsonl
//!                │                              (flushed every 100 ms and at shutdown)
//!                └─► response by path: / /ok /fail /status/<code> /slow?ms=N
//!                                      /flaky?fail=N /big /stats /ledger
//! ```
//!
//! `/stats` and `/ledger` look at the target itself and are not recorded.
//!
//! It is an edge of the node, not part of its core: the `raftcron-node
//! target` command and `raftcron-node local` serve it, and the e2e ledger
//! reads its [`Record`]s. The file writer is in `ledger.rs`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use raftcron_crds::names::header;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

mod ledger;

pub use ledger::Record;
use ledger::{LedgerMsg, write_ledger};

/// Size of the `/big` response.
const BIG: usize = 1 << 20;

/// Where requests are recorded besides the counters of `/stats`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Append each request to this file as a JSON line.
    pub ledger: Option<PathBuf>,
    /// Also keep every record in memory and serve them at `GET /ledger`.
    pub keep_in_memory: bool,
}

/// Serves until `shutdown` completes, then flushes the ledger.
pub async fn serve(
    listener: TcpListener,
    ledger: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        Options {
            ledger,
            keep_in_memory: false,
        },
        shutdown,
    )
    .await
}

/// [`serve`] with all options.
pub async fn serve_with(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Options {
        ledger,
        keep_in_memory,
    } = options;
    let writer = match ledger {
        Some(path) => {
            // Opened here so that a bad path fails start-up, not the first request.
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            let (tx, rx) = mpsc::unbounded_channel();
            Some((tx, tokio::spawn(write_ledger(file, rx))))
        }
        None => None,
    };
    let target = Target::with_ledger(writer.as_ref().map(|(tx, _)| tx.clone()), keep_in_memory);
    tracing::info!(addr = %listener.local_addr()?, "target listening");
    let served = axum::serve(listener, router(target))
        .with_graceful_shutdown(shutdown)
        .await;

    if let Some((tx, task)) = writer {
        let (done, flushed) = oneshot::channel();
        if tx.send(LedgerMsg::Stop(done)).is_ok() {
            let _ = flushed.await;
        }
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(format!("ledger writer failed: {e}"))),
        }
    }
    served
}

/// The target's state: where records go and what `/stats` counts.
#[derive(Clone)]
pub struct Target {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Option<mpsc::UnboundedSender<LedgerMsg>>,
    memory: Option<Mutex<Vec<Record>>>,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    by_path: HashMap<String, u64>,
    runs: HashSet<String>,
    attempts: HashMap<(String, u32), u64>,
    duplicate_attempts: u64,
}

impl Target {
    /// A target without a ledger file, e.g. for [`router`] in a test.
    pub fn new(keep_in_memory: bool) -> Self {
        Self::with_ledger(None, keep_in_memory)
    }

    fn with_ledger(ledger: Option<mpsc::UnboundedSender<LedgerMsg>>, keep_in_memory: bool) -> Self {
        let memory = keep_in_memory.then(|| Mutex::new(Vec::new()));
        Self {
            inner: Arc::new(Inner {
                ledger,
                memory,
                stats: Mutex::new(Stats::default()),
            }),
        }
    }

    /// Every record so far, if kept in memory.
    pub fn records(&self) -> Option<Vec<Record>> {
        self.inner
            .memory
            .as_ref()
            .map(|m| m.lock().expect("records lock").clone())
    }

    /// Counts the request and sends it to the ledger; false if the ledger
    /// writer has stopped (the request then fails, so a test notices).
    fn record(&self, record: Record) -> bool {
        {
            let mut s = self.inner.stats.lock().expect("stats lock");
            s.requests += 1;
            *s.by_path.entry(record.path.clone()).or_default() += 1;
            if let Some(run) = &record.run_id {
                s.runs.insert(run.clone());
                if let Some(a) = record.attempt {
                    let seen = s.attempts.entry((run.clone(), a)).or_default();
                    *seen += 1;
                    if *seen > 1 {
                        s.duplicate_attempts += 1;
                    }
                }
            }
        }
        if let Some(m) = &self.inner.memory {
            m.lock().expect("records lock").push(record.clone());
        }
        match &self.inner.ledger {
            Some(tx) => tx.send(LedgerMsg::Record(record)).is_ok(),
            None => true,
        }
    }

    fn stats(&self) -> serde_json::Value {
        let s = self.inner.stats.lock().expect("stats lock");
        serde_json::json!({
            "requests": s.requests,
            "by_path": s.by_path,
            "runs": s.runs.len(),
            "attempts": s.attempts.len(),
            "duplicate_attempts": s.duplicate_attempts,
        })
    }
}

/// Every path and method goes to one handler.
pub fn router(target: Target) -> Router {
    Router::new().fallback(handle).with_state(target)
}

async fn handle(
    State(target): State<Target>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = uri.path();
    match path {
        "/stats" => return Json(target.stats()).into_response(),
        "/ledger" => {
            return match target.records() {
                Some(records) => Json(records).into_response(),
                None => (StatusCode::NOT_FOUND, "records are not kept in memory\n").into_response(),
            };
        }
        _ => {}
    }

    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let record = Record {
        received_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        path: path.to_string(),
        method: method.to_string(),
        run_id: text(header::RUN_ID),
        attempt: text(header::ATTEMPT).and_then(|a| a.parse().ok()),
        scheduled_time: text(header::SCHEDULED_TIME),
        term: text(header::TERM).and_then(|t| t.parse().ok()),
    };
    let attempt = record.attempt;
    if !target.record(record) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "ledger writer stopped\n").into_response();
    }

    let number = |key: &str, default: u64| -> Result<u64, String> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{key} must be a number\n")),
        }
    };
    let bad_request = |e: String| (StatusCode::BAD_REQUEST, e).into_response();
    match path {
        "/" | "/ok" => (StatusCode::OK, "ok\n").into_response(),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "fail\n").into_response(),
        "/slow" => match number("ms", 1000) {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (StatusCode::OK, "ok\n").into_response()
            }
            Err(e) => bad_request(e),
        },
        "/flaky" => match number("fail", 1) {
            // Without a Raftcron-Attempt header the request counts as attempt 1.
            Ok(fail) if u64::from(attempt.unwrap_or(1)) <= fail => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "flaky: attempt {} of {fail} failing\n",
                    attempt.unwrap_or(1)
                ),
            )
                .into_response(),
            Ok(_) => (StatusCode::OK, "ok\n").into_response(),
            Err(e) => bad_request(e),
        },
        "/big" => (StatusCode::OK, vec![b'x'; BIG]).into_response(),
        _ => match path
            .strip_prefix("/status/")
            .map(|c| c.parse::<u16>().map(StatusCode::from_u16))
        {
            Some(Ok(Ok(status))) => {
                (status, format!("status {}\n", status.as_u16())).into_response()
            }
            Some(_) => (
                StatusCode::BAD_REQUEST,
                "status must be a code between 100 and 999\n",
            )
                .into_response(),
            None => (StatusCode::NOT_FOUND, "unknown path\n").into_response(),
        },
    }
}

#[cfg(test)]
mod tests;
