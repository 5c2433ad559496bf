//! The exec executor: one process per attempt, in its own process group.
//!
//! ```text
//!  ExecAction ──argv (no shell)──► child (process group leader, stdin null)
//!                                   ├─ stdout ─► last 4 KiB ─┐
//!                                   ├─ stderr ─► last 4 KiB ─┼─► "exit code N: <tail>"
//!                                   └─ exit ─► SIGKILL the group (leftovers die, pipes close)
//!  timeout/cancel: the future is dropped ─► SIGKILL the group
//! ```
//!
//! The whole group is killed, not just the child, so a shell's background
//! jobs and other grandchildren never outlive their attempt. Output is kept
//! as a bounded tail: a process flooding its output costs a copy, never
//! memory.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use raftcron_crds::ExecAction;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

use super::{Attempt, MAX_MESSAGE, Outcome, truncate};

/// How much of each of stdout and stderr is kept.
const TAIL: usize = 4096;

/// After the program exits and its group is killed, output still buffered
/// in the pipes is read for at most this long. Only a process that left the
/// group (setsid) and kept the pipe open makes this wait run out.
const DRAIN: Duration = Duration::from_secs(1);

/// Runs the action's command once and waits for it. Dropping the future
/// kills the process group.
pub async fn run(action: &ExecAction, attempt: &Attempt) -> Outcome {
    let Some((program, args)) = action.command.split_first() else {
        return Outcome::failed("the exec action has an empty command");
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(action.env.iter().map(|e| (&e.name, &e.value)))
        .envs(attempt.identity().map(|(_, var, value)| (var, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = &action.working_dir {
        command.current_dir(dir);
    }

    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::failed(spawn_error(program, action.working_dir.as_deref(), &e)),
    };
    // Declared after `child`, so it is dropped first: the group is killed
    // while its leader is still unreaped and the group id cannot be reused.
    let mut group = GroupKiller {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()),
    };
    let (exited_tx, exited_rx) = watch::channel(false);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let wait = async {
        let status = child.wait().await;
        group.kill();
        let _ = exited_tx.send(true);
        status
    };
    let (status, out, err) = tokio::join!(
        wait,
        read_tail(stdout, exited_rx.clone()),
        read_tail(stderr, exited_rx)
    );

    let status = match status {
        Ok(s) => s,
        Err(e) => return Outcome::failed(format!("waiting for {program:?} failed: {e}")),
    };
    tracing::debug!(run_id = %attempt.run_id, attempt = attempt.attempt, %status, "exec action finished");
    if status.success() {
        let message = match out.text() {
            Some(_) => out.message("exit code 0"),
            None => "exit code 0".to_string(),
        };
        return Outcome::ok(Some(truncate(message)));
    }
    let head = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        (None, None) => format!("ended with {status}"),
    };
    let message = if err.text().is_some() {
        err.message(&head)
    } else if out.text().is_some() {
        out.message(&head)
    } else {
        head
    };
    Outcome::failed(message)
}

fn spawn_error(program: &str, working_dir: Option<&str>, e: &std::io::Error) -> String {
    match (e.kind(), working_dir) {
        (ErrorKind::NotFound, Some(dir)) if !Path::new(dir).is_dir() => {
            format!("cannot run {program:?}: working directory {dir:?} does not exist")
        }
        (ErrorKind::NotFound, _) => format!("cannot run {program:?}: program not found"),
        (ErrorKind::PermissionDenied, _) => format!("cannot run {program:?}: permission denied"),
        _ => format!("cannot run {program:?}: {e}"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGQUIT => " (SIGQUIT)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

/// Sends SIGKILL to a process group, once.
struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    fn kill(&mut self) {
        // Never 0 or 1: kill(0) is our own group, kill(-1) every process we may signal.
        if let Some(pgid) = self.pgid.take().filter(|p| *p > 1) {
            // SAFETY: kill(2) takes plain integers; a group that is already
            // gone only makes it return ESRCH.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The end of an output stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if data.len() >= TAIL {
            self.bytes.clear();
            self.bytes.extend_from_slice(&data[data.len() - TAIL..]);
        } else {
            self.bytes.extend_from_slice(data);
            if self.bytes.len() > TAIL {
                self.bytes.drain(..self.bytes.len() - TAIL);
            }
        }
    }

    /// The kept output as lossy UTF-8 with surrounding whitespace trimmed,
    /// or `None` if it is blank.
    fn text(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// `head: <end of the output>`, cut from the front to fit [`MAX_MESSAGE`]:
    /// the last lines usually say what went wrong.
    fn message(&self, head: &str) -> String {
        let text = self.text().unwrap_or_default();
        let room = MAX_MESSAGE.saturating_sub(head.len() + ": …".len());
        let cut = self.total > self.bytes.len() as u64 || text.len() > room;
        if !cut {
            return format!("{head}: {text}");
        }
        let mut start = text.len().saturating_sub(room);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("{head}: …{}", &text[start..])
    }
}

/// Reads a stream to its end (or until [`DRAIN`] after the program exited),
/// keeping the last [`TAIL`] bytes.
async fn read_tail<R: AsyncRead + Unpin>(
    stream: Option<R>,
    mut exited: watch::Receiver<bool>,
) -> Tail {
    let mut tail = Tail::default();
    let Some(mut stream) = stream else {
        return tail;
    };
    let give_up = async move {
        let _ = exited.wait_for(|e| *e).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::pin!(give_up);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => tail.push(&buf[..n]),
            },
            _ = &mut give_up => break,
        }
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_only_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&[b'a'; 3000]);
        t.push(&[b'b'; 3000]);
        assert_eq!(t.bytes.len(), TAIL);
        assert_eq!(t.total, 6000);
        assert!(t.bytes.ends_with(&[b'b'; 3000]));
        t.push(&[b'c'; 10_000]);
        assert_eq!(t.bytes, vec![b'c'; TAIL]);
    }

    #[test]
    fn message_keeps_the_end_of_long_output_within_the_limit() {
        let mut t = Tail::default();
        t.push("é".repeat(5000).as_bytes());
        t.push(b"the real error");
        let m = t.message("exit code 1");
        assert!(m.starts_with("exit code 1: …"), "{m}");
        assert!(m.ends_with("the real error"), "{m}");
        assert!(m.len() <= MAX_MESSAGE, "{} bytes", m.len());
    }

    #[test]
    fn message_of_short_output_is_complete() {
        let mut t = Tail::default();
        t.push(b"  boom\n");
        assert_eq!(t.message("exit code 2"), "exit code 2: boom");
    }
}
