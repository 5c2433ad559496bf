#![no_main]
//! See `raftcron_fuzz::crds_checks::cron` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raftcron_fuzz::crds_checks::cron(data));
