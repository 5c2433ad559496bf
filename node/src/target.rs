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
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How often buffered ledger lines reach the file, at most.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Size of the `/big` response.
const BIG: usize = 1 << 20;

/// One request, as written to the ledger.
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

/// What the ledger task receives.
enum LedgerMsg {
    Record(Record),
    /// Flush, acknowledge and stop.
    Stop(oneshot::Sender<()>),
}

/// The one task that writes the ledger: lines go through a buffer that is
/// flushed at most [`FLUSH_EVERY`] after a line was written.
async fn write_ledger(
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Running {
        base: String,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Running {
        async fn start(options: Options) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_with(listener, options, async move {
                let _ = stopped.await;
            }));
            Self {
                base,
                stop: Some(stop),
                task,
            }
        }

        async fn stop(mut self) -> std::io::Result<()> {
            let _ = self.stop.take().unwrap().send(());
            self.task.await.unwrap()
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn status_of(c: &reqwest::Client, url: String, attempt: Option<u32>) -> u16 {
        let mut req = c.get(url);
        if let Some(a) = attempt {
            req = req.header(header::ATTEMPT, a.to_string());
        }
        req.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn each_path_answers_as_documented() {
        let t = Running::start(Options::default()).await;
        let c = client();
        let b = &t.base;
        assert_eq!(status_of(&c, format!("{b}/"), None).await, 200);
        assert_eq!(status_of(&c, format!("{b}/ok"), None).await, 200);
        assert_eq!(status_of(&c, format!("{b}/fail"), None).await, 500);
        assert_eq!(status_of(&c, format!("{b}/status/418"), None).await, 418);
        assert_eq!(status_of(&c, format!("{b}/status/abc"), None).await, 400);
        assert_eq!(status_of(&c, format!("{b}/nowhere"), None).await, 404);
        assert_eq!(status_of(&c, format!("{b}/ledger"), None).await, 404);
        let big = c
            .get(format!("{b}/big"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(big.len(), BIG);

        let started = std::time::Instant::now();
        assert_eq!(status_of(&c, format!("{b}/slow?ms=150"), None).await, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(status_of(&c, format!("{b}/slow?ms=soon"), None).await, 400);
        t.stop().await.unwrap();
    }

    #[tokio::test]
    async fn flaky_fails_the_first_attempts_of_a_run_then_succeeds() {
        let t = Running::start(Options::default()).await;
        let c = client();
        let url = format!("{}/flaky?fail=2", t.base);
        assert_eq!(status_of(&c, url.clone(), Some(1)).await, 500);
        assert_eq!(status_of(&c, url.clone(), Some(2)).await, 500);
        assert_eq!(status_of(&c, url.clone(), Some(3)).await, 200);
        assert_eq!(
            status_of(&c, url, None).await,
            500,
            "no header counts as attempt 1"
        );
        assert_eq!(
            status_of(&c, format!("{}/flaky", t.base), Some(2)).await,
            200,
            "fail defaults to 1"
        );
        t.stop().await.unwrap();
    }

    #[tokio::test]
    async fn every_request_is_a_ledger_line_with_the_raftcron_headers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.jsonl");
        let t = Running::start(Options {
            ledger: Some(file.clone()),
            keep_in_memory: true,
        })
        .await;
        let c = client();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0;
        c.post(format!("{}/ok", t.base))
            .header(header::RUN_ID, "u-20261122T013000.000Z")
            .header(header::ATTEMPT, "2")
            .header(header::SCHEDULED_TIME, "2026-11-22T01:30:00.000Z")
            .header(header::TERM, "7")
            .send()
            .await
            .unwrap();
        c.get(format!("{}/fail", t.base)).send().await.unwrap();

        // Written within the flush interval, without stopping the target (e2e
        // tests kill it with SIGKILL).
        let mut lines = Vec::new();
        for _ in 0..50 {
            lines = std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>();
            if lines.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: Record = serde_json::from_str(&lines[0]).unwrap();
        assert!(
            first.received_ms >= before,
            "{} < {before}",
            first.received_ms
        );
        assert_eq!(
            first,
            Record {
                received_ms: first.received_ms,
                path: "/ok".into(),
                method: "POST".into(),
                run_id: Some("u-20261122T013000.000Z".into()),
                attempt: Some(2),
                scheduled_time: Some("2026-11-22T01:30:00.000Z".into()),
                term: Some(7),
            }
        );
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            second,
            serde_json::json!({"received_ms": second["received_ms"], "path": "/fail", "method": "GET",
                "run_id": null, "attempt": null, "scheduled_time": null, "term": null})
        );

        let kept: Vec<Record> = c
            .get(format!("{}/ledger", t.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0], first);
        t.stop().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().lines().count(),
            2,
            "/ledger is not recorded"
        );
    }

    #[tokio::test]
    async fn stats_count_requests_runs_and_duplicate_attempts() {
        let t = Running::start(Options::default()).await;
        let c = client();
        for (run, attempt) in [("a", "1"), ("a", "2"), ("b", "1"), ("a", "1")] {
            c.get(format!("{}/ok", t.base))
                .header(header::RUN_ID, run)
                .header(header::ATTEMPT, attempt)
                .send()
                .await
                .unwrap();
        }
        c.get(format!("{}/fail", t.base)).send().await.unwrap();
        let stats: serde_json::Value = c
            .get(format!("{}/stats", t.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["requests"], 5);
        assert_eq!(stats["by_path"]["/ok"], 4);
        assert_eq!(stats["by_path"]["/fail"], 1);
        assert_eq!(stats["runs"], 2);
        assert_eq!(stats["attempts"], 3);
        assert_eq!(stats["duplicate_attempts"], 1);
        t.stop().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_flushes_the_ledger_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.jsonl");
        let t = Running::start(Options {
            ledger: Some(file.clone()),
            keep_in_memory: false,
        })
        .await;
        let c = client();
        for _ in 0..20 {
            c.get(format!("{}/ok", t.base)).send().await.unwrap();
        }
        drop(c);
        t.stop().await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 20);
    }

    #[tokio::test]
    async fn an_unwritable_ledger_path_fails_at_start() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = serve(
            listener,
            Some("/nonexistent-dir/ledger.jsonl".into()),
            async {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
