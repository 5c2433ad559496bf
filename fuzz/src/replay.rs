//! The replay harness of the fuzz regression tests: runs every committed
//! input of a target (`fuzz/seeds/<target>/`, then `fuzz/regressions/<target>/`)
//! through its check, each on its own thread with a time limit. Compiled
//! into `crds/tests/fuzz_regressions.rs` and `node/tests/fuzz_regressions.rs`
//! with `#[path]`, like the checks themselves; `CARGO_MANIFEST_DIR` is
//! then the including crate's, a sibling of `fuzz/`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// An input that takes longer than this (in an unoptimised test build) is a
/// timeout: the fuzzer's limit is 10 s with optimisations.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Every committed input of a target, seeds first.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut all = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        all.extend(files);
    }
    all
}

/// Runs `check` on every input of `target`, each on its own thread with a
/// time limit, and fails naming every input that panicked or timed out.
pub fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds under fuzz/seeds/{target}");
    let mut failures = Vec::new();
    for path in &inputs {
        let bytes = std::fs::read(path).expect("read fuzz input");
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            check(&bytes);
            let _ = done.send(());
        });
        match finished.recv_timeout(TIME_LIMIT) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failures.push(format!("{}: panicked (message above)", path.display()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => failures.push(format!(
                "{}: still running after {TIME_LIMIT:?}",
                path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}
