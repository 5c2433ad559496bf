#![no_main]
//! See `raftcron_fuzz::node_checks::snapshot` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftcron_fuzz::node_checks::snapshot(data));
