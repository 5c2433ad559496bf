//! raftcron-e2e: real `raftcron-node` processes on loopback, killed with
//! SIGKILL and restarted, driven through `raftcronctl` and the client
//! library, with an HTTP ledger target that records every execution.
//!
//! ```text
//!  test ──spawn──► raftcron-node run ×N (own data dirs, ports on 127.0.0.1)
//!    │                 │ fires HTTP actions
//!    │                 ▼
//!    ├──spawn──► raftcron-node target ──► ledger.jsonl (one line per request)
//!    └──► raftcronctl / raftcron_node::client ──► assertions
//! ```
//!
//! The binaries come from the workspace's target directory: the test script
//! builds them first (`cargo build --bins`), or set `RAFTCRON_BIN_DIR`.

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod etcd;
pub mod etcd_rpc;
pub mod kube;
pub mod lease_check;
pub mod ledger;
pub mod netlab;
pub mod plot;
pub mod process;

pub use cluster::{ClientTlsFiles, Cluster, ClusterOptions, Host, NodeProcess};
pub use ledger::{Ledger, LedgerRecord};

use std::path::PathBuf;

/// Directory holding `raftcron-node` and `raftcronctl`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RAFTCRON_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found; build it first with `cargo build -p raftcron-node --bins` (or set RAFTCRON_BIN_DIR)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound and released; tests use it at once).
pub fn free_port() -> u16 {
    // The kernel may hand the same ephemeral port out again once the probe
    // is closed: a clean-clone CI run gave node 1 and node 3 one --http
    // port. A port is given out at most once per process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut given = GIVEN.lock().expect("port list");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: std::time::Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.0 GET: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None).await
}

/// A plain HTTP/1.0 request with an optional JSON body: (status code, body).
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let body = json.unwrap_or("");
    let head = match json {
        Some(_) => format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    };
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        code,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// Makes ring the rustls provider of the test process (see raftcron_node::tls).
pub fn install_crypto() {
    raftcron_node::tls::install_crypto_provider();
}
