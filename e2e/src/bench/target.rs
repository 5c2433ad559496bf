//! Where the lateness benchmarks send fires, and the floor they are judged
//! against.
//!
//! The target is nginx (Debian's `nginx-light`, a fast third-party server
//! logging `$msec` per request) when it is installed, and the project's own
//! ledger target otherwise. The floor is what the machine itself allows: the
//! same N requests sent at one instant by a minimal client over N warm
//! keep-alive connections, measured as instant → the last one received, on
//! the same cores, in the same run.
//!
//! ```text
//!  fires ──HTTP──► nginx (access log: $msec $uri $http_raftcron_scheduled_time) ─► arrivals
//!  floor: N sockets, warmed ──at T: N pre-built requests, 2 threads──► same nginx ─► max(arrival) − T
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use raftcron_crds::names::{header, parse_rfc3339_ms, rfc3339_ms};

use crate::ledger::Ledger;
use crate::process::ChildGuard;
use crate::{free_port, now_ms};

/// Path the floor's requests use, so they are told from fires.
const FLOOR_PATH: &str = "/floor";

/// One request received by the target.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub path: String,
    /// The `Raftcron-Scheduled-Time` header, in ms.
    pub scheduled_ms: i64,
    /// When the target received it (ms; nginx's `$msec` has ms resolution).
    pub received_ms: f64,
}

pub enum Target {
    Nginx(Nginx),
    Ledger(Ledger),
}

impl Target {
    /// nginx when it is installed (and `prefer_nginx`), else the ledger.
    pub async fn start(dir: &Path, prefer_nginx: bool) -> anyhow::Result<Self> {
        if prefer_nginx && let Some(bin) = Nginx::binary() {
            return Ok(Self::Nginx(Nginx::start(&bin, dir).await?));
        }
        Ok(Self::Ledger(Ledger::start(dir).await))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Nginx(_) => "nginx",
            Target::Ledger(_) => "raftcron-node target",
        }
    }

    pub fn addr(&self) -> &str {
        match self {
            Target::Nginx(n) => &n.addr,
            Target::Ledger(l) => &l.addr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Every request received so far that carried a scheduled time.
    pub fn arrivals(&self) -> Vec<Arrival> {
        match self {
            Target::Nginx(n) => n.arrivals(),
            Target::Ledger(l) => l
                .records()
                .into_iter()
                .filter_map(|r| {
                    Some(Arrival {
                        scheduled_ms: parse_rfc3339_ms(r.scheduled_time.as_deref()?)?,
                        path: r.path,
                        received_ms: r.received_ms,
                    })
                })
                .collect(),
        }
    }

    /// Waits until the target has written down what it received (nginx
    /// flushes its log buffer every 100 ms, the ledger every 100 ms).
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// nginx as a child process with a configuration of our own in `dir`.
pub struct Nginx {
    pub addr: String,
    log: PathBuf,
    child: ChildGuard,
}

impl Nginx {
    /// `nginx` on the PATH or where Debian puts it.
    pub fn binary() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .find(|f| f.is_file())
        });
        on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
    }

    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("body"))?;
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("access.log");
        // Debian's defaults where they matter to a client (listen backlog
        // 511, keep-alive 75 s, 1,000 requests per connection); enough
        // connections for 10,000 fires at once; the log buffered, as
        // production logs are, so writing it does not slow the requests.
        let conf = format!(
            "worker_processes auto;\n\
             worker_rlimit_nofile 65536;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\n\
             events {{ worker_connections 30000; }}\n\
             http {{\n\
               log_format arrival '$msec $uri $http_raftcron_scheduled_time';\n\
               access_log {log} arrival buffer=256k flush=100ms;\n\
               client_body_temp_path {dir}/body;\n\
               server {{\n\
                 listen {addr};\n\
                 location / {{ return 200 \"ok\\n\"; }}\n\
               }}\n\
             }}\n",
            dir = dir.display(),
            log = log.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let nginx = Self {
            addr: addr.clone(),
            log,
            child: ChildGuard::running(child),
        };
        let up = crate::wait_for(Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(&addr).await.ok() }
        })
        .await;
        if up.is_none() {
            let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            anyhow::bail!("nginx did not come up on {addr}: {errors}");
        }
        Ok(nginx)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let received_ms = f.next()?.parse::<f64>().ok()? * 1000.0;
                let path = f.next()?.to_string();
                let scheduled_ms = parse_rfc3339_ms(f.next()?)?;
                Some(Arrival {
                    path,
                    scheduled_ms,
                    received_ms,
                })
            })
            .collect()
    }
}

impl Drop for Nginx {
    /// SIGTERM first: the master stops its workers, which a SIGKILL of the
    /// master would leave running.
    fn drop(&mut self) {
        if let Some(pid) = self.child.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..50 {
                if !self.child.is_running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The floor for `n` requests at once: per round, instant → the last of
/// them received by the target (ms), over `rounds` rounds.
pub async fn floor(target: &Target, n: usize, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let addr = target.addr().to_string();
    let instants = tokio::task::spawn_blocking(move || send_floor(&addr, n, rounds)).await??;
    target.settle().await;
    let arrivals = target.arrivals();
    let mut floors = Vec::new();
    for t in instants {
        let got: Vec<f64> = arrivals
            .iter()
            .filter(|a| a.path == FLOOR_PATH && a.scheduled_ms == t)
            .map(|a| a.received_ms - t as f64)
            .collect();
        anyhow::ensure!(
            got.len() == n,
            "the target logged {} of the floor's {n} requests at {t}",
            got.len()
        );
        floors.push(got.into_iter().fold(0.0, f64::max));
    }
    Ok(floors)
}

/// The minimal client: `n` connections opened and warmed with one request
/// each, then per round all `n` requests (built beforehand) written at a
/// whole second by two threads, one per core, and every response read.
/// Returns the rounds' instants (ms).
fn send_floor(addr: &str, n: usize, rounds: usize) -> anyhow::Result<Vec<i64>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let request = |t: i64| {
        format!(
            "GET {FLOOR_PATH} HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\n\r\n",
            header::SCHEDULED_TIME,
            rfc3339_ms(t)
        )
        .into_bytes()
    };
    // Warm: one request each at an instant that no round uses.
    let warm = request(0);
    for c in &mut conns {
        c.write_all(&warm)?;
        read_response(c)?;
    }
    let mut instants = Vec::new();
    let half = n.div_ceil(2);
    for _ in 0..rounds {
        let t = (now_ms() / 1000 + 1) * 1000 + 500;
        let bytes = request(t);
        std::thread::sleep(Duration::from_millis((t - now_ms() - 2).max(0) as u64));
        let (a, b) = conns.split_at_mut(half.min(n));
        std::thread::scope(|s| -> anyhow::Result<()> {
            let bytes = &bytes;
            let send = move |part: &mut [TcpStream]| -> std::io::Result<()> {
                while now_ms() < t {
                    std::hint::spin_loop();
                }
                for c in part.iter_mut() {
                    c.write_all(bytes)?;
                }
                for c in part.iter_mut() {
                    read_response(c)?;
                }
                Ok(())
            };
            let other = s.spawn(move || send(b));
            send(a)?;
            other.join().expect("floor thread")?;
            Ok(())
        })?;
        instants.push(t);
    }
    Ok(instants)
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(c: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let got = c.read(&mut chunk)?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..got]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}
