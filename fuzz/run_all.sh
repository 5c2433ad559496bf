#!/usr/bin/env bash
# Runs every fuzz target in turn, niced, one libFuzzer job at a time, for
# SECONDS_PER_TARGET each (default 600), keeping going after crashes
# (-fork=1 -ignore_crashes=1): findings land in fuzz/artifacts/<target>/.
# Logs: fuzz/logs/<target>.log. Usage: fuzz/run_all.sh [target...]
set -uo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cron scheduled_job grpc_scheduler grpc_raft snapshot)
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  nice -n 19 cargo +nightly fuzz run --target-dir "${CARGO_TARGET_DIR:-../target/fuzz}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    > "logs/$t.log" 2>&1
  echo "$t exit $?" >> logs/summary
done
