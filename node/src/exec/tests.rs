//! Executors against real loopback servers and real processes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method};
use raftcron_crds::{ExecAction, HttpAction, HttpHeader, HttpMethod, SecretKeyRef, ValueFrom};
use tokio::net::TcpListener;

use super::http::HttpExecutor;
use super::policy::{HttpPolicy, default_deny, loopback};
use super::*;

fn attempt(run_id: &str) -> Attempt {
    Attempt {
        namespace: "team-a".into(),
        name: "report".into(),
        uid: "6a1f3c2e-9b1d-4f7e-8a2b-0c5d7e9f1a3b".into(),
        kubernetes: false,
        run_id: run_id.into(),
        attempt: 2,
        scheduled_ms: 1_795_311_000_250,
        term: 7,
        timeout: Duration::from_secs(10),
    }
}

fn get(url: String) -> HttpAction {
    HttpAction {
        url,
        method: HttpMethod::GET,
        headers: vec![],
        body: None,
        success_codes: vec![],
    }
}

fn allow_all() -> HttpExecutor {
    HttpExecutor::new(HttpPolicy { deny: vec![] })
}

/// The example target on a loopback port; stops when the test's runtime ends.
async fn target() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::cli::target::serve(
        listener,
        None,
        std::future::pending(),
    ));
    base
}

/// A server that keeps the method, headers and body of every request.
type Seen = Arc<Mutex<Vec<(Method, HeaderMap, Bytes)>>>;

async fn capture() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    let app = Router::new().fallback(move |method: Method, headers: HeaderMap, body: Bytes| {
        let keep = keep.clone();
        async move {
            keep.lock().unwrap().push((method, headers, body));
            "captured"
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

/// A loopback port that accepts nothing unless someone connects to it.
fn idle_listener() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

fn assert_never_connected(listener: &std::net::TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected: {other:?}"),
    }
}

fn message(o: &Outcome) -> &str {
    o.message.as_deref().unwrap_or_default()
}

struct FakeSecrets;

impl SecretResolver for FakeSecrets {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match (namespace, name, key) {
                ("team-a", "api", "token") => Ok("Bearer s3cret-value".to_string()),
                _ => Err(format!("secret {name} not found")),
            }
        })
    }
}

fn secret_header(name: &str, secret: &str, key: &str) -> HttpHeader {
    HttpHeader {
        name: name.into(),
        value: None,
        value_from: Some(ValueFrom {
            secret_key_ref: SecretKeyRef {
                name: secret.into(),
                key: key.into(),
            },
        }),
    }
}

#[tokio::test]
async fn http_request_carries_method_headers_body_and_the_four_raftcron_headers() {
    let (base, seen) = capture().await;
    let action = HttpAction {
        url: format!("{base}/jobs/report"),
        method: HttpMethod::PUT,
        headers: vec![HttpHeader {
            name: "X-Team".into(),
            value: Some("billing".into()),
            value_from: None,
        }],
        body: Some("{\"full\":true}".into()),
        success_codes: vec![],
    };
    let out = allow_all()
        .run(&action, &attempt("uid-20261122T013000.250Z"), None)
        .await;
    assert_eq!(out, Outcome::ok(Some("HTTP 200: captured".into())));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (method, headers, body) = &seen[0];
    assert_eq!(method, Method::PUT);
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        h("Raftcron-Run-Id").as_deref(),
        Some("uid-20261122T013000.250Z")
    );
    assert_eq!(h("Raftcron-Attempt").as_deref(), Some("2"));
    assert_eq!(
        h("Raftcron-Scheduled-Time").as_deref(),
        Some("2026-11-22T01:30:00.250Z")
    );
    assert_eq!(h("Raftcron-Term").as_deref(), Some("7"));
    assert_eq!(h("X-Team").as_deref(), Some("billing"));
    assert_eq!(h("Host").as_deref(), base.strip_prefix("http://"));
    assert!(h("User-Agent").is_some_and(|u| u.starts_with("raftcron/")));
    assert_eq!(h("Accept").as_deref(), Some("*/*"));
    assert_eq!(&body[..], b"{\"full\":true}");
}

#[tokio::test]
async fn the_actions_own_host_and_user_agent_are_sent_as_they_are() {
    let (base, seen) = capture().await;
    let mut action = get(format!("{base}/"));
    for (name, value) in [
        ("Host", "reports.example.test"),
        ("User-Agent", "billing/2"),
    ] {
        action.headers.push(HttpHeader {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        });
    }
    let out = allow_all().run(&action, &attempt("r"), None).await;
    assert_eq!(out, Outcome::ok(Some("HTTP 200: captured".into())));
    let seen = seen.lock().unwrap();
    let headers = &seen[0].1;
    assert_eq!(headers.get("host").unwrap(), "reports.example.test");
    assert_eq!(headers.get("user-agent").unwrap(), "billing/2");
}

/// A raw HTTP/1.1 server that answers every request `200 ok`, counting
/// connections and requests; with `close` it says `Connection: close` (and
/// keeps the socket open all the same), with `idle_close` it closes a
/// connection idle that long after an answer.
struct Scripted {
    url: String,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

async fn scripted(close: bool, idle_close: Option<Duration>) -> Scripted {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let requests: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            c.fetch_add(1, SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let read = match idle_close {
                        Some(after) if buf.is_empty() && r.load(SeqCst) > 0 => {
                            match tokio::time::timeout(after, socket.read(&mut chunk)).await {
                                Ok(n) => n,
                                Err(_) => return, // idle too long: close
                            }
                        }
                        _ => socket.read(&mut chunk).await,
                    };
                    let Ok(n @ 1..) = read else { return };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        r.fetch_add(1, SeqCst);
                        let head = if close { "Connection: close\r\n" } else { "" };
                        let answer =
                            format!("HTTP/1.1 200 OK\r\n{head}Content-Length: 2\r\n\r\nok");
                        // After `Connection: close` the socket stays open: a
                        // client that kept it would send its next request here.
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted {
        url,
        connections,
        requests,
    }
}

impl Scripted {
    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Scripted {
    /// Sends `n` attempts one after the other through one executor, pausing
    /// `pause` after each, every one answered `200 ok`; the connections and
    /// requests the server saw.
    async fn each_ok(&self, n: usize, pause: Duration) -> (usize, usize) {
        let exec = allow_all();
        for i in 0..n {
            let out = exec
                .run(&get(self.url.clone()), &attempt(&format!("r{i}")), None)
                .await;
            assert_eq!(out, Outcome::ok(Some("HTTP 200: ok".into())), "attempt {i}");
            tokio::time::sleep(pause).await;
        }
        (self.connections(), self.requests())
    }
}

#[tokio::test]
async fn plain_http_attempts_reuse_one_kept_alive_connection() {
    let server = scripted(false, None).await;
    assert_eq!(server.each_ok(3, Duration::ZERO).await, (1, 3));
}

#[tokio::test]
async fn a_connection_the_target_closed_while_idle_is_not_used_again() {
    let server = scripted(false, Some(Duration::from_millis(50))).await;
    assert_eq!(server.each_ok(2, Duration::from_millis(200)).await, (2, 2));
}

#[tokio::test]
async fn a_connection_the_target_says_to_close_is_not_kept() {
    let server = scripted(true, None).await;
    assert_eq!(server.each_ok(2, Duration::ZERO).await, (2, 2));
}

#[tokio::test]
async fn an_armed_plain_http_attempt_has_its_connection_open_before_it_is_sent() {
    let server = scripted(false, None).await;
    let exec = allow_all();
    let a = attempt("r");
    let action = get(server.url.clone());
    let prepared = exec.prepare(&action, &a).expect("plain http is prepared");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.connections() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!((server.connections(), server.requests()), (1, 0));
    let out = exec.send(&action, &a, prepared).await;
    assert_eq!(out, Outcome::ok(Some("HTTP 200: ok".into())));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn https_secret_headers_and_url_credentials_are_left_to_the_instant() {
    let exec = allow_all();
    let a = attempt("r");
    assert!(
        exec.prepare(&get("https://example.test/".into()), &a)
            .is_none()
    );
    assert!(
        exec.prepare(&get("http://u:p@127.0.0.1:9/".into()), &a)
            .is_none()
    );
    let mut secret = get("http://127.0.0.1:9/".into());
    secret
        .headers
        .push(secret_header("Authorization", "api", "token"));
    assert!(exec.prepare(&secret, &a).is_none());
}

#[tokio::test]
async fn secret_header_is_resolved_at_execution_and_never_in_the_message() {
    let (base, seen) = capture().await;
    let mut action = get(format!("{base}/"));
    action.headers = vec![secret_header("Authorization", "api", "token")];
    let out = allow_all()
        .run(&action, &attempt("r"), Some(&FakeSecrets))
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Succeeded, "{out:?}");
    assert!(!message(&out).contains("s3cret"));
    let got = seen.lock().unwrap()[0]
        .1
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(got, "Bearer s3cret-value");

    action.headers = vec![secret_header("Authorization", "missing", "token")];
    let out = allow_all()
        .run(&action, &attempt("r"), Some(&FakeSecrets))
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    assert!(
        message(&out).contains("header Authorization") && message(&out).contains("missing"),
        "{out:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no request without the header"
    );
}

#[tokio::test]
async fn secret_header_without_kubernetes_fails_without_calling() {
    let listener = idle_listener();
    let mut action = get(format!("http://{}/", listener.local_addr().unwrap()));
    action.headers = vec![secret_header("Authorization", "api", "token")];
    let out = allow_all().run(&action, &attempt("r"), None).await;
    assert_eq!(
        out,
        Outcome::failed("header Authorization uses a Secret, which needs Kubernetes")
    );
    assert_never_connected(&listener);
}

#[tokio::test]
async fn any_2xx_succeeds_unless_success_codes_say_otherwise() {
    let base = target().await;
    let http = allow_all();
    let run = |path: &str, codes: Vec<u16>| {
        let mut action = get(format!("{base}{path}"));
        action.success_codes = codes;
        action
    };
    let a = attempt("r");
    assert_eq!(
        http.run(&run("/status/204", vec![]), &a, None).await,
        Outcome::ok(Some("HTTP 204".into()))
    );
    let out = http.run(&run("/status/404", vec![]), &a, None).await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    let out = http
        .run(&run("/status/404", vec![200, 404]), &a, None)
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Succeeded, "{out:?}");
    let out = http.run(&run("/ok", vec![202]), &a, None).await;
    assert_eq!(
        out.outcome,
        AttemptOutcome::Failed,
        "200 is not in successCodes"
    );
    assert!(message(&out).starts_with("HTTP 200"), "{out:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, seen) = capture().await;
    let app = Router::new().fallback(move || {
        let to = format!("{base}/elsewhere");
        async move { axum::response::Redirect::temporary(&to) }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let out = allow_all()
        .run(&get(url.clone()), &attempt("r"), None)
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    assert!(message(&out).starts_with("HTTP 307"), "{out:?}");
    let mut action = get(url);
    action.success_codes = vec![307];
    assert_eq!(
        allow_all().run(&action, &attempt("r"), None).await.outcome,
        AttemptOutcome::Succeeded
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn server_error_fails_with_a_snippet_of_the_body() {
    let base = target().await;
    let out = allow_all()
        .run(&get(format!("{base}/fail")), &attempt("r"), None)
        .await;
    assert_eq!(out, Outcome::failed("HTTP 500: fail"));
}

#[tokio::test]
async fn huge_body_is_cut_to_the_message_limit() {
    let base = target().await;
    let out = allow_all()
        .run(&get(format!("{base}/big")), &attempt("r"), None)
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Succeeded);
    let m = message(&out);
    assert!(m.starts_with("HTTP 200: xxxx"), "{m}");
    assert!(m.len() <= MAX_MESSAGE + '…'.len_utf8(), "{} bytes", m.len());
}

#[tokio::test]
async fn endless_body_is_not_read_to_its_end() {
    let app = Router::new().fallback(|| async {
        let chunks = futures::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'y'; 1024]))
        });
        Body::from_stream(chunks)
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut a = attempt("r");
    a.timeout = Duration::from_secs(5);
    let started = Instant::now();
    let out = allow_all().run(&get(url), &a, None).await;
    assert_eq!(out.outcome, AttemptOutcome::Succeeded, "{out:?}");
    assert!(message(&out).starts_with("HTTP 200: yyyy"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn loopback_target_is_refused_before_connecting_when_loopback_is_denied() {
    let listener = idle_listener();
    let http = HttpExecutor::new(HttpPolicy { deny: loopback() });
    let out = http
        .run(
            &get(format!("http://{}/", listener.local_addr().unwrap())),
            &attempt("r"),
            None,
        )
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    let m = message(&out);
    assert!(m.contains("127.0.0.1") && m.contains("--http-deny"), "{m}");
    assert_never_connected(&listener);
}

#[tokio::test]
async fn metadata_address_is_refused_by_default_in_every_spelling() {
    let http = HttpExecutor::new(HttpPolicy {
        deny: default_deny(),
    });
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://2852039166/",
        "http://0.0.0.0:1/",
    ] {
        let mut a = attempt("r");
        a.timeout = Duration::from_secs(3);
        let out =
            tokio::time::timeout(Duration::from_secs(1), http.run(&get(url.into()), &a, None))
                .await
                .unwrap_or_else(|_| panic!("{url}: tried to connect"));
        assert_eq!(out.outcome, AttemptOutcome::Failed, "{url}");
        assert!(message(&out).contains("--http-deny"), "{url}: {out:?}");
    }
    let out = http
        .run(&get("http://169.254.169.254/".into()), &attempt("r"), None)
        .await;
    assert!(
        message(&out).contains("169.254.169.254 is in 169.254.0.0/16"),
        "{out:?}"
    );
}

#[tokio::test]
async fn name_resolving_to_a_denied_address_is_refused_before_connecting() {
    let listener = idle_listener();
    let http = HttpExecutor::new(HttpPolicy { deny: loopback() });
    let url = format!(
        "http://localhost:{}/",
        listener.local_addr().unwrap().port()
    );
    let out = http.run(&get(url), &attempt("r"), None).await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    let m = message(&out);
    assert!(
        m.starts_with("refused to call localhost: its address "),
        "{m}"
    );
    assert!(
        (m.contains("127.0.0.1") || m.contains("::1")) && m.contains("--http-deny"),
        "{m}"
    );
    assert_never_connected(&listener);
}

#[tokio::test]
async fn name_resolving_to_an_allowed_address_is_called() {
    let base = target().await;
    let port = base.rsplit(':').next().unwrap();
    let http = HttpExecutor::new(HttpPolicy {
        deny: default_deny(),
    });
    let out = http
        .run(
            &get(format!("http://localhost:{port}/ok")),
            &attempt("r"),
            None,
        )
        .await;
    // localhost may resolve to ::1 first, where nothing listens; then it falls back to 127.0.0.1.
    assert_eq!(out.outcome, AttemptOutcome::Succeeded, "{out:?}");
}

#[tokio::test]
async fn refused_connection_fails_with_the_error_chain() {
    let port = idle_listener().local_addr().unwrap().port(); // closed when dropped
    let out = allow_all()
        .run(
            &get(format!("http://127.0.0.1:{port}/")),
            &attempt("r"),
            None,
        )
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    let m = message(&out).to_lowercase();
    assert!(m.starts_with(&format!("127.0.0.1:{port}: ")), "{m}");
    assert!(m.contains("connect") && m.contains("refused"), "{m}");
}

#[tokio::test]
async fn slow_response_times_out_at_the_attempt_timeout() {
    let base = target().await;
    let mut a = attempt("r");
    a.timeout = Duration::from_millis(200);
    let started = Instant::now();
    let out = allow_all()
        .run(&get(format!("{base}/slow?ms=5000")), &a, None)
        .await;
    assert_eq!(out, Outcome::timed_out(a.timeout));
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---- exec ----

fn exec(command: &[&str]) -> ExecAction {
    ExecAction {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        working_dir: None,
    }
}

fn sh(script: &str) -> ExecAction {
    exec(&["sh", "-c", script])
}

#[tokio::test]
async fn exit_code_zero_succeeds_and_others_fail_with_the_code() {
    let a = attempt("r");
    assert_eq!(
        process::run(&exec(&["true"]), &a).await,
        Outcome::ok(Some("exit code 0".into()))
    );
    assert_eq!(
        process::run(&sh("exit 3"), &a).await,
        Outcome::failed("exit code 3")
    );
    assert_eq!(
        process::run(&sh("echo partial; echo 'no such table' >&2; exit 2"), &a).await,
        Outcome::failed("exit code 2: no such table")
    );
    assert_eq!(
        process::run(&sh("echo only stdout; exit 1"), &a).await,
        Outcome::failed("exit code 1: only stdout")
    );
}

#[tokio::test]
async fn process_killed_by_a_signal_says_which() {
    let out = process::run(&sh("kill -9 $$"), &attempt("r")).await;
    assert_eq!(out, Outcome::failed("killed by signal 9 (SIGKILL)"));
}

#[tokio::test]
async fn process_gets_the_raftcron_variables_its_env_and_working_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut action = sh(
        "printf '%s|%s|%s|%s|%s|%s' \"$RAFTCRON_RUN_ID\" \"$RAFTCRON_ATTEMPT\" \
         \"$RAFTCRON_SCHEDULED_TIME\" \"$RAFTCRON_TERM\" \"$GREETING\" \"$(pwd -P)\"",
    );
    action.env = vec![raftcron_crds::EnvVar {
        name: "GREETING".into(),
        value: "hello there".into(),
    }];
    action.working_dir = Some(dir.path().to_str().unwrap().into());
    let out = process::run(&action, &attempt("uid-20261122T013000.250Z")).await;
    let pwd = dir.path().canonicalize().unwrap();
    let want = format!(
        "exit code 0: uid-20261122T013000.250Z|2|2026-11-22T01:30:00.250Z|7|hello there|{}",
        pwd.display()
    );
    assert_eq!(out, Outcome::ok(Some(want)));
}

#[tokio::test]
async fn output_flood_is_cut_to_its_tail_and_finishes_quickly() {
    let started = Instant::now();
    let action = sh(
        "yes | head -c 50000000; yes 'to stderr' | head -c 50000000 >&2; echo last words >&2; exit 1",
    );
    let out = process::run(&action, &attempt("r")).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    let m = message(&out);
    assert!(
        m.starts_with("exit code 1: …") && m.ends_with("to stderr\nlast words"),
        "{m}"
    );
    assert!(m.len() <= MAX_MESSAGE, "{} bytes", m.len());
}

#[tokio::test]
async fn missing_program_fails_naming_it() {
    let out = process::run(&exec(&["/no/such/raftcron-program", "x"]), &attempt("r")).await;
    assert_eq!(
        out,
        Outcome::failed("cannot run \"/no/such/raftcron-program\": program not found")
    );
    let mut action = exec(&["true"]);
    action.working_dir = Some("/no/such/raftcron-dir".into());
    let out = process::run(&action, &attempt("r")).await;
    assert_eq!(
        out,
        Outcome::failed(
            "cannot run \"true\": working directory \"/no/such/raftcron-dir\" does not exist"
        )
    );
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Processes whose environment holds `RAFTCRON_RUN_ID=<run_id>`.
fn processes_of_run(run_id: &str) -> Vec<u32> {
    let marker = format!("{}={run_id}", raftcron_crds::names::env::RUN_ID).into_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_slice())
        {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn timeout_kills_the_process_and_its_children() {
    let run_id = format!("kill-test-{}-{}", std::process::id(), unique());
    let action = sh("sleep 30 & sleep 30");
    let attempt = attempt(&run_id);
    // Boxed so that `drop(work)` below really drops the future, as a timeout does.
    let mut work = Box::pin(process::run(&action, &attempt));
    // The shell's children are running before the timeout fires (a shell
    // may exec its last command, so sh itself need not remain).
    let mut seen = 0;
    let started = Instant::now();
    while seen < 2 && started.elapsed() < Duration::from_secs(5) {
        tokio::select! {
            out = &mut work => panic!("finished early: {out:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => seen = processes_of_run(&run_id).len(),
        }
    }
    assert!(
        seen >= 2,
        "both sleeps should be running, saw {seen} processes"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut work)
            .await
            .is_err()
    );
    drop(work);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_of_run(&run_id);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn background_children_do_not_outlive_a_finished_attempt() {
    let run_id = format!("leak-test-{}-{}", std::process::id(), unique());
    let started = Instant::now();
    let out = process::run(&sh("sleep 30 & echo started"), &attempt(&run_id)).await;
    assert_eq!(out, Outcome::ok(Some("exit code 0: started".into())));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the background child"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_of_run(&run_id).is_empty() {
        assert!(Instant::now() < deadline, "background sleep survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn executors_refuse_exec_actions_unless_enabled() {
    let spec: raftcron_crds::ScheduledJobSpec = serde_json::from_value(serde_json::json!({
        "schedule": "* * * * *",
        "action": {"exec": {"command": ["true"]}}
    }))
    .unwrap();
    let settings = ExecSettings {
        exec_enabled: false,
        http_policy: HttpPolicy::default(),
        dry_run: false,
    };
    let token = tokio_util::sync::CancellationToken::new();
    let disabled = Executors::new(settings.clone(), None);
    let out = disabled
        .run(&spec, &attempt("r"), Default::default(), token.clone())
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Failed);
    assert!(message(&out).contains("--enable-exec"));
    let enabled = ExecSettings {
        exec_enabled: true,
        ..settings
    };
    let enabled = Executors::new(enabled, None);
    let out = enabled
        .run(&spec, &attempt("r"), Default::default(), token)
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Succeeded, "{out:?}");
}

#[tokio::test]
async fn dry_run_records_success_without_executing_anything() {
    let spec: ScheduledJobSpec = serde_json::from_value(serde_json::json!({
        "schedule": "* * * * * *",
        "action": {"exec": {"command": ["/nonexistent/program"]}}
    }))
    .unwrap();
    let settings = ExecSettings {
        exec_enabled: false,
        http_policy: HttpPolicy::default(),
        dry_run: true,
    };
    let out = Executors::new(settings, None)
        .run(
            &spec,
            &attempt("r"),
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
    assert_eq!(out.outcome, AttemptOutcome::Succeeded);
    assert!(message(&out).contains("dry run"));
}
