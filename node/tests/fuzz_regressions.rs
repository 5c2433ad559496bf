//! Replays the fuzz inputs committed under `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through the very checks the `grpc_scheduler`, `grpc_raft` and `snapshot` fuzz
//! targets run (`fuzz/src/node_checks.rs`, compiled into this test), so a crash
//! the fuzzer found stays fixed and the seeds stay meaningful. A
//! `regressions/` file is the minimised input of a crash or timeout; see
//! docs/fuzzing.md.

#[path = "../../fuzz/src/node_checks.rs"]
#[allow(dead_code)]
mod node_checks;

#[path = "../../fuzz/src/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn grpc_scheduler_inputs_pass() {
    replay("grpc_scheduler", node_checks::grpc_scheduler);
}

#[test]
fn grpc_raft_inputs_pass() {
    replay("grpc_raft", node_checks::grpc_raft);
}

#[test]
fn snapshot_inputs_pass() {
    replay("snapshot", node_checks::snapshot);
}
