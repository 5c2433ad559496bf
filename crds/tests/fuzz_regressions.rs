//! Replays the fuzz inputs committed under `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through the very checks the `cron` and `scheduled_job` fuzz
//! targets run (`fuzz/src/crds_checks.rs`, compiled into this test), so a crash
//! the fuzzer found stays fixed and the seeds stay meaningful. A
//! `regressions/` file is the minimised input of a crash or timeout; see
//! docs/fuzzing.md.

#[path = "../../fuzz/src/crds_checks.rs"]
#[allow(dead_code)]
mod crds_checks;

#[path = "../../fuzz/src/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn cron_inputs_pass() {
    replay("cron", crds_checks::cron);
}

#[test]
fn scheduled_job_inputs_pass() {
    replay("scheduled_job", crds_checks::scheduled_job);
}
