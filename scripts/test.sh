#!/usr/bin/env bash
# Runs everything CI runs, on a fresh machine with only the Rust toolchain:
# format, lints, unit and storage tests, the multi-process e2e suite, and the
# generated-file checks. protoc comes from protoc-bin-vendored (a crate).
#
#   scripts/test.sh            # all of it
#   RAFTCRON_E2E_KUBECONFIG=…   # additionally runs the Kubernetes e2e
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ss, target/ %s)\n' "$1" "$SECONDS" "$(du -sh target/ 2>/dev/null | cut -f1)"; }

# A clean clone builds everything once, so incremental caches are dead weight:
# they were 6 GB of a CI run that died with "No space left on device".
export CARGO_INCREMENTAL=0

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build binaries"
cargo build --workspace --bins --locked

step "generated CRD is committed"
mkdir -p target
./target/debug/crdgen > target/crd.yaml
diff -u charts/raftcron/crds/scheduledjobs.raftcron.dev.yaml target/crd.yaml

step "no import cycles between the source files of node, crds and operator"
scripts/module-cycles.sh node/src crds/src operator/src

step "unit, property and storage tests"
cargo test --workspace --locked --exclude raftcron-e2e

step "multi-process e2e (real processes on loopback, kill -9; seeded fault runs in network namespaces)"
# One test at a time: each runs a cluster of real processes and 2 cores are shared.
# The fault runs (tests/faults.rs) need root for `ip netns`; without it they print SKIPPED.
cargo test -p raftcron-e2e --locked -- --test-threads=1

step "Helm chart: lint, render, validate"
scripts/chart-check.sh

step "alert rules: promtool check rules + test rules (promtool from Debian's prometheus package)"
scripts/alert-rules-check.sh

step "done"
