#!/usr/bin/env bash
# Runs every fuzz target in turn, niced, one libFuzzer job at a time, for
# SECONDS_PER_TARGET each (default 600), keeping going after crashes
# (-fork=1 -ignore_crashes=1): findings land in fuzz/artifacts/<target>/.
# Logs: fuzz/logs/<target>.log, one line per target in fuzz/logs/summary.
#
# Builds all targets once (`cargo fuzz build`), then runs the binaries
# directly: `cargo fuzz run` rebuilds whenever a source file's time changes,
# which on 2 cores ate the fuzzing time. SKIP_BUILD=1 reuses the binaries.
# The per-input timeout is 30 s of wall time: libFuzzer's timer is wall
# clock, and a niced fuzzer on a busy machine hit 10 s on inputs that take
# milliseconds (fuzz/regressions/cron/timeout-*).
#
# Usage: fuzz/run_all.sh [target...]
set -uo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-600}
dir=${CARGO_TARGET_DIR:-../target/fuzz}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cron scheduled_job grpc_scheduler grpc_raft snapshot)
mkdir -p logs
if [ -z "${SKIP_BUILD:-}" ]; then
  nice -n 19 cargo +nightly fuzz build --target-dir "$dir" || exit 1
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  start=$(date +%s)
  nice -n 19 "$dir/x86_64-unknown-linux-gnu/release/$t" "corpus/$t" "seeds/$t" \
    -artifact_prefix="artifacts/$t/" \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    > "logs/$t.log" 2>&1
  rc=$?
  echo "$t exit $rc, $(( $(date +%s) - start )) s, $(grep -E '^#[0-9]+' "logs/$t.log" | tail -n 1)" >> logs/summary
done
