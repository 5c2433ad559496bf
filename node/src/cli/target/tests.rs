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
    // reqwest is built without a default rustls provider; the node's own
    // clients install ring, and these tests must not depend on one of them
    // having run first in this process.
    crate::tls::install_crypto_provider();
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
