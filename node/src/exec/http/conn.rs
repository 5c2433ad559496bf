//! Plain-HTTP actions on connections of our own, picked before the instant.
//!
//! ```text
//!  armed (~20 ms ahead) ──► Pool::checkout ──► an idle connection to the target, still open
//!                                 └─ none ──► one opened now (at most MAX_CONNECTING at once)
//!  the instant ──► Pool::send: hyper's HTTP/1.1 connection driven in the attempt's own task
//!                     └─ response read to its end, keep-alive ──► Pool::checkin
//! ```
//!
//! Why not reqwest for these: at an instant with a thousand fires the leader
//! spent ~100 µs of CPU per fire in reqwest and hyper-util's pool (the URL
//! and headers built at the instant, the pool's locks, a hop to each
//! connection's own task), and fires reached the target only as fast as two
//! cores got through that. Here the request is built when the attempt is
//! armed (mod.rs), its connection is picked then too, and the exchange runs
//! in the attempt's task. HTTPS, credentials in the URL and Secret headers
//! keep going through reqwest (mod.rs).

use std::collections::HashMap;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::answer::{
    MAX_CONNECTING, Snippet, Unresolved, error_chain, read_snippet, resolve_allowed,
};
use crate::exec::policy::HttpPolicy;

/// An idle connection unused this long is closed (reqwest's default too). A
/// target that closes idle connections sooner is noticed at checkout.
const IDLE_FOR: Duration = Duration::from_secs(90);

/// Idle connections past their time are looked for this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Once a response was read to its end the connection settles at once, but
/// not always on the very next poll under load.
const SETTLE: Duration = Duration::from_millis(100);

/// At most this many idle connections are kept per target: as many as a
/// target can be sent at one instant, or each instant would close the
/// surplus and open as many again (at 10,000 fires to one target with a cap
/// of 4,096, the ephemeral ports ran out in TIME_WAIT and 18 % of the fires
/// failed to connect). Idle ones still close after [`IDLE_FOR`].
const MAX_IDLE_PER_TARGET: usize = 1 << 16;

/// Where a connection goes: the URL's host (without an IPv6 literal's
/// brackets) and port.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `host:port` for messages (never the URL: it may carry credentials).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The connection an attempt was armed with.
pub(super) enum Conn {
    /// Kept alive from an earlier attempt, and still open when armed.
    Pooled(TcpStream),
    /// Being opened since the attempt was armed. Dropping it stops the opening.
    Opening(AbortOnDrop),
}

pub(super) struct AbortOnDrop(JoinHandle<Result<TcpStream, String>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Idle keep-alive connections by target, and the limit on connections
/// being opened at once (see [`MAX_CONNECTING`]).
pub(super) struct Pool {
    /// Most recently returned last: a checkout takes the warmest.
    idle: Mutex<HashMap<Target, Vec<(TcpStream, Instant)>>>,
    connecting: Arc<Semaphore>,
    policy: Arc<HttpPolicy>,
    /// Started with the first checkout, where a runtime is at hand.
    reaper: OnceLock<()>,
}

/// A send that failed.
enum Failure {
    /// The connection closed before the request was written: it can go on
    /// another connection without any chance of being received twice.
    Unsent(Box<Request<Full<Bytes>>>, String),
    Failed(String),
}

impl Pool {
    pub fn new(policy: Arc<HttpPolicy>) -> Self {
        Self {
            idle: Mutex::default(),
            connecting: Arc::new(Semaphore::new(MAX_CONNECTING)),
            policy,
            reaper: OnceLock::new(),
        }
    }

    /// A connection for an attempt being armed: the most recently used idle
    /// one that is still open, or one opened from now on.
    pub fn checkout(self: &Arc<Self>, target: &Target) -> Conn {
        self.reaper.get_or_init(|| self.spawn_reaper());
        if let Some(stream) = self.take_idle(target) {
            return Conn::Pooled(stream);
        }
        Conn::Opening(self.open_in_background(target.clone()))
    }

    /// Closes idle connections past [`IDLE_FOR`] every [`SWEEP_EVERY`],
    /// also when no attempt comes any more; ends with the pool.
    fn spawn_reaper(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep();
            }
        });
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        for list in idle.values_mut() {
            list.retain(|(_, since)| now.duration_since(*since) < IDLE_FOR);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    fn take_idle(&self, target: &Target) -> Option<TcpStream> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(target)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR && still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Bounded by the attempt's own timeout around its send (a timeout is
    /// recorded as TimedOut there), and stopped when the attempt is dropped.
    fn open_in_background(self: &Arc<Self>, target: Target) -> AbortOnDrop {
        let pool = self.clone();
        AbortOnDrop(tokio::spawn(async move { pool.open(&target).await }))
    }

    fn checkin(&self, target: Target, stream: TcpStream) {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(target).or_default();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push((stream, Instant::now()));
        }
    }

    /// Resolves the target (every address must pass the deny list, as on
    /// reqwest's path; an IP literal resolves to itself without DNS) and
    /// connects to the first address that answers.
    async fn open(&self, target: &Target) -> Result<TcpStream, String> {
        let _permit = self
            .connecting
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let addrs = resolve_allowed(&self.policy, &target.host, target.port)
            .await
            .map_err(|why| match why {
                Unresolved::Lookup(e) => format!(
                    "{}: cannot resolve {}: {e}",
                    target.authority(),
                    target.host
                ),
                Unresolved::NoAddresses => format!("{} has no addresses", target.host),
                Unresolved::Denied(denied) => denied.to_string(),
            })?;
        let mut last: Option<io::Error> = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(stream) => {
                    // Requests are one write each; nothing to gain from Nagle.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one address was tried");
        Err(format!("{}: cannot connect: {e}", target.authority()))
    }

    /// Sends the request armed with `conn` and reads the start of the
    /// response; the connection goes back to the pool when the response was
    /// read to its end and both sides keep it alive. A pooled connection
    /// that turns out closed before the request was written is replaced by a
    /// new one, once.
    pub async fn send(
        &self,
        target: Target,
        conn: Conn,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<String>), String> {
        let (stream, pooled) = match conn {
            Conn::Pooled(stream) => (stream, true),
            Conn::Opening(mut opening) => (open_result(&mut opening).await?, false),
        };
        match self.exchange(&target, stream, request).await {
            Ok(answer) => Ok(answer),
            Err(Failure::Unsent(request, _)) if pooled => {
                // Bounded by the attempt's timeout around the whole send.
                let stream = self.open(&target).await?;
                match self.exchange(&target, stream, *request).await {
                    Ok(answer) => Ok(answer),
                    Err(Failure::Unsent(_, e) | Failure::Failed(e)) => Err(e),
                }
            }
            Err(Failure::Unsent(_, e) | Failure::Failed(e)) => Err(e),
        }
    }

    /// One request and its response on `stream`, the connection driven
    /// right here rather than in a task of its own.
    async fn exchange(
        &self,
        target: &Target,
        stream: TcpStream,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<String>), Failure> {
        let failed = |e: hyper::Error| {
            Failure::Failed(format!("{}: {}", target.authority(), error_chain(&e)))
        };
        let (mut tx, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(failed)?;
        let mut conn = pin!(conn.without_shutdown());
        let talk = async move {
            let response = match tx.try_send_request(request).await {
                Ok(r) => r,
                Err(mut e) => {
                    let why = format!("{}: {}", target.authority(), error_chain(e.error()));
                    return Err(match e.take_message() {
                        Some(request) => Failure::Unsent(Box::new(request), why),
                        None => Failure::Failed(why),
                    });
                }
            };
            let status = response.status();
            let keep_alive = keeps_alive(&response);
            let Snippet { text, whole } = read_snippet(response.into_body()).await;
            // `tx` is dropped here: with the response read, the connection
            // future below then ends and gives the socket back.
            Ok((status, text, keep_alive && whole))
        };
        let mut talk = pin!(talk);
        let mut conn_ended = false;
        let (status, text, reusable) = tokio::select! {
            biased;
            r = &mut talk => r?,
            c = &mut conn => {
                conn_ended = true;
                // The connection ended first: the exchange fails now too,
                // and the connection's own error says more when it has one.
                match (c, talk.await) {
                    (_, Ok(answer)) => answer,
                    (Err(e), Err(_)) => return Err(failed(e)),
                    (Ok(_), Err(f)) => return Err(f),
                }
            }
        };
        // With the response read to its end and `tx` dropped, the connection
        // ends on its next poll; one that does not within SETTLE is closed,
        // not kept.
        if reusable
            && !conn_ended
            && let Ok(Ok(parts)) = tokio::time::timeout(SETTLE, conn).await
            && parts.read_buf.is_empty()
        {
            self.checkin(target.clone(), parts.io.into_inner());
        }
        Ok((status, text))
    }
}

async fn open_result(opening: &mut AbortOnDrop) -> Result<TcpStream, String> {
    match (&mut opening.0).await {
        Ok(r) => r,
        Err(e) => Err(format!("opening the connection failed: {e}")),
    }
}

/// HTTP/1.1 and no `Connection: close`: the server keeps the connection.
fn keeps_alive<B>(response: &http::Response<B>) -> bool {
    response.version() == http::Version::HTTP_11
        && !response
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// An idle connection has nothing to read: anything there (the peer's close,
/// or bytes nobody asked for) means it cannot carry another request. No
/// syscall unless the reactor saw the socket become readable.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
