//! The one guard every child process of the harness sits in: a node, the
//! ledger target, an etcd member, the operator. Stopping is SIGKILL, so no
//! shutdown code of the child runs, and a guard dropped (a test that ends
//! or panics) kills and reaps its child, so no process outlives its test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process, or none while stopped.
#[derive(Debug, Default)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Guards a child that is already running.
    pub fn running(child: Child) -> Self {
        Self(Some(child))
    }

    /// Takes `child` in; one that is still guarded is killed first.
    pub fn set(&mut self, child: Child) {
        self.kill9();
        self.0 = Some(child);
    }

    /// Starts `command` with its stdout and stderr appended to `log`, and
    /// guards it; `what` names it in a panic.
    pub fn spawn_logged(&mut self, command: &mut Command, log: &Path, what: &str) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{what} log {}: {e}", log.display()));
        let child = command
            .stdout(Stdio::from(file.try_clone().expect("log fd")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        self.set(child);
    }

    /// SIGKILL and reap; nothing when stopped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether a child was started and not killed (it may have exited).
    pub fn is_started(&self) -> bool {
        self.0.is_some()
    }

    /// Whether the child is started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match &mut self.0 {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// The process id while started.
    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}
