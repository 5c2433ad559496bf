//! The sidecar's calls to its own app: attempts prepared ahead (Prepare),
//! sent on Go, dropped on Cancel, each ending in one Result.

use std::collections::HashMap;
use std::time::Duration;

use raftcron_crds::names::{header, rfc3339_ms};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::clock::now_us;
use crate::pb::sidecar as pb;

/// A Prepare never followed by Go is dropped after this long.
const PREPARED_TTL: Duration = Duration::from_secs(10);
/// Longest response snippet kept in a result message.
const SNIPPET: usize = 200;

/// One request ready to send.
struct Ready {
    request: reqwest::Request,
    timeout: Duration,
    success_codes: Vec<u32>,
    term: u64,
    prepared_at: std::time::Instant,
}

/// Attempts prepared or running on this replica, within one attachment.
pub struct Calls {
    http: reqwest::Client,
    app_url: String,
    pod: String,
    prepared: HashMap<(String, u32), Ready>,
    running: HashMap<(String, u32), AbortHandle>,
    results: mpsc::UnboundedSender<pb::Result>,
}

impl Calls {
    pub fn new(
        http: reqwest::Client,
        app_url: &str,
        pod: &str,
        results: mpsc::UnboundedSender<pb::Result>,
    ) -> Self {
        Self {
            http,
            app_url: app_url.trim_end_matches('/').to_string(),
            pod: pod.to_string(),
            prepared: HashMap::new(),
            running: HashMap::new(),
            results,
        }
    }

    /// Attempts in flight (prepared or running).
    pub fn in_flight(&self) -> usize {
        self.prepared.len() + self.running.len()
    }

    /// Builds the request now, so that Go only sends it.
    pub fn prepare(&mut self, p: pb::Prepare) {
        let key = (p.run_id.clone(), p.attempt);
        self.expire();
        match self.build(&p) {
            Ok(request) => {
                self.prepared.insert(
                    key,
                    Ready {
                        request,
                        timeout: Duration::from_millis(u64::from(p.timeout_ms.max(1))),
                        success_codes: p.success_codes,
                        term: p.term,
                        prepared_at: std::time::Instant::now(),
                    },
                );
            }
            Err(message) => self.report(&key, pb::Outcome::Failed, message, 0),
        }
    }

    /// Sends a prepared request. A Go without its Prepare, or of an older
    /// term than the Prepare's, calls nothing.
    pub fn go(&mut self, g: pb::Go) {
        let key = (g.run_id.clone(), g.attempt);
        let Some(ready) = self.prepared.remove(&key) else {
            self.report(&key, pb::Outcome::Refused, "no prepared attempt".into(), 0);
            return;
        };
        if g.term < ready.term {
            self.report(
                &key,
                pb::Outcome::Refused,
                "a Go of an older term".into(),
                0,
            );
            return;
        }
        let http = self.http.clone();
        let results = self.results.clone();
        let (run_id, attempt) = key.clone();
        let task = tokio::spawn(async move {
            let sent_us = now_us();
            let (outcome, message) = send(&http, ready).await;
            let _ = results.send(pb::Result {
                run_id,
                attempt,
                outcome: outcome as i32,
                message,
                sent_us,
            });
        });
        self.running.insert(key, task.abort_handle());
    }

    /// Drops an attempt; a request in flight is aborted (the connection to
    /// the app closes, as the `http` action's cancellation does).
    pub fn cancel(&mut self, c: pb::Cancel) {
        let key = (c.run_id, c.attempt);
        self.prepared.remove(&key);
        if let Some(h) = self.running.remove(&key) {
            h.abort();
        }
    }

    /// A result left for the leader: the attempt is no longer running here.
    pub fn done(&mut self, run_id: &str, attempt: u32) {
        self.running.remove(&(run_id.to_string(), attempt));
    }

    /// Everything of an attachment that ended: its leader will settle
    /// these attempts (as Lost) itself.
    pub fn abandon(&mut self) {
        self.prepared.clear();
        for (_, h) in self.running.drain() {
            h.abort();
        }
    }

    fn expire(&mut self) {
        self.prepared
            .retain(|_, r| r.prepared_at.elapsed() < PREPARED_TTL);
    }

    fn report(&self, key: &(String, u32), outcome: pb::Outcome, message: String, sent_us: i64) {
        let _ = self.results.send(pb::Result {
            run_id: key.0.clone(),
            attempt: key.1,
            outcome: outcome as i32,
            message,
            sent_us,
        });
    }

    fn build(&self, p: &pb::Prepare) -> Result<reqwest::Request, String> {
        if !p.path.starts_with('/') {
            return Err(format!("path {:?} must start with /", p.path));
        }
        let url = format!("{}{}", self.app_url, p.path);
        let method = reqwest::Method::from_bytes(p.method.as_bytes())
            .map_err(|_| format!("method {:?} is not an HTTP method", p.method))?;
        let mut headers = HeaderMap::new();
        for h in &p.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("header name {:?} is not valid", h.name))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("the value of header {} is not valid", h.name))?;
            headers.append(name, value);
        }
        let identity = [
            (header::RUN_ID, p.run_id.clone()),
            (header::ATTEMPT, p.attempt.to_string()),
            (header::SCHEDULED_TIME, rfc3339_ms(p.scheduled_ms)),
            (header::TERM, p.term.to_string()),
            (header::POD, self.pod.clone()),
        ];
        for (name, value) in identity {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("{name} {value:?} is not a valid header value"))?;
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("Raftcron header names are valid"),
                value,
            );
        }
        self.http
            .request(method, &url)
            .headers(headers)
            .body(p.body.clone())
            .build()
            .map_err(|e| format!("cannot build the request to {url}: {e}"))
    }
}

async fn send(http: &reqwest::Client, ready: Ready) -> (pb::Outcome, String) {
    let call = async {
        let resp = http.execute(ready.request).await?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(ready.timeout, call).await {
        Err(_) => (
            pb::Outcome::TimedOut,
            format!("timed out after {:?}", ready.timeout),
        ),
        Ok(Err(e)) => (pb::Outcome::Failed, format!("calling the app: {e}")),
        Ok(Ok((status, body))) => {
            let code = u32::from(status.as_u16());
            let ok = if ready.success_codes.is_empty() {
                status.is_success()
            } else {
                ready.success_codes.contains(&code)
            };
            let mut snippet: String = body.chars().take(SNIPPET).collect();
            if snippet.len() < body.len() {
                snippet.push('…');
            }
            let message = if snippet.trim().is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {}", snippet.trim())
            };
            let outcome = if ok {
                pb::Outcome::Succeeded
            } else {
                pb::Outcome::Failed
            };
            (outcome, message)
        }
    }
}
