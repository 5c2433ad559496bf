//! Replays the fuzz inputs committed under `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through the very checks the `cron` and `scheduled_job` fuzz
//! targets run (`fuzz/src/crds_checks.rs`, compiled into this test), so a crash
//! the fuzzer found stays fixed and the seeds stay meaningful. A
//! `regressions/` file is the minimised input of a crash or timeout; see
//! docs/fuzzing.md.

#[path = "../../fuzz/src/crds_checks.rs"]
#[allow(dead_code)]
mod crds_checks;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// An input that takes longer than this (in an unoptimised test build) is a
/// timeout: the fuzzer's limit is 10 s with optimisations.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Every committed input of a target, seeds first.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
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
fn replay(target: &str, check: fn(&[u8])) {
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

#[test]
fn cron_inputs_pass() {
    replay("cron", crds_checks::cron);
}

#[test]
fn scheduled_job_inputs_pass() {
    replay("scheduled_job", crds_checks::scheduled_job);
}
