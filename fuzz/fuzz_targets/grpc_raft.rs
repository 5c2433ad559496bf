#![no_main]
//! See `raftcron_fuzz::node_checks::grpc_raft` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftcron_fuzz::node_checks::grpc_raft(data));
