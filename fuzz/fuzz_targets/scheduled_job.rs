#![no_main]
//! See `raftcron_fuzz::crds_checks::scheduled_job` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftcron_fuzz::crds_checks::scheduled_job(data));
