#!/usr/bin/env bash
# Profiles one benchmark stage: runs `raftcron-bench ARGS...` (release build)
# and, DELAY seconds after it starts, records every CPU with perf for WINDOW
# seconds. Recorded are the processes of the run (the three nodes and the
# bench itself, which holds the clients and the HTTP target), named by
# thread, so the flamegraph says where the stage's time went; anything else
# on the machine is left out.
#
#   MODE=cpu     on-CPU samples, 199 Hz, DWARF call graphs (default)
#   MODE=offcpu  where threads go to sleep (sched:sched_switch with call
#                graphs): for figures bound by waiting (fsync, a lock, RPCs)
#   MODE=sched   run-queue delay per thread (perf sched latency): for
#                lateness, i.e. how long a ready thread waited for a core
#
#   PROCS=REGEX  which processes to record (pgrep -f), default the nodes and
#                the bench; for the Kubernetes stage add the operator and the
#                control plane: PROCS='raftcron-|kube-apiserver|etcd'
#
# Writes docs/benchmarks/profiles/NAME.svg (flamegraph, inferno) and
# NAME.txt (the top entries of `perf report`, or the sched latency table).
# Needs root (perf -a), perf, and inferno (`cargo install inferno --locked`).
#
#   DELAY=8 WINDOW=10 scripts/profile.sh writes-64 writes --clients 64 --duration 25s
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
mode=${MODE:-cpu}
delay=${DELAY:-8}
window=${WINDOW:-10}
out=docs/benchmarks/profiles
mkdir -p "$out"
bench=${BENCH:-target/release/raftcron-bench}
[ -x "$bench" ] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 2; }
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

"$bench" "$@" > "$data/bench.out" 2>&1 &
bench_pid=$!
sleep "$delay"
pids=$(pgrep -d, -f "${PROCS:-raftcron-node|raftcron-bench}" || true)
[ -n "$pids" ] || { echo "no raftcron processes after ${delay}s" >&2; exit 1; }
ps -o pid=,args= -p "$pids" | awk '{print $1, $2}' > "$data/procs"
case $mode in
  cpu) perf record -q -p "$pids" -F 199 --call-graph dwarf,8192 -o "$data/perf.data" -- sleep "$window" ;;
  offcpu) perf record -q -p "$pids" -e sched:sched_switch --call-graph dwarf,8192 -o "$data/perf.data" -- sleep "$window" ;;
  sched) perf sched record -q -o "$data/perf.data" -- sleep "$window" ;;
  *) echo "MODE: $mode is not cpu, offcpu or sched" >&2; exit 2 ;;
esac
wait "$bench_pid" || echo "note: the benchmark exited non-zero" >&2

{
  echo "# raftcron-bench $* (MODE=$mode DELAY=$delay WINDOW=$window), $(date -u +%FT%TZ)"
  echo "# benchmark output:"
  sed 's/^/#   /' "$data/bench.out" | tail -n 20
  echo
} > "$out/$name.txt"
if [ "$mode" = sched ]; then
  perf sched latency -i "$data/perf.data" --sort max 2>/dev/null | sed -n 1,40p >> "$out/$name.txt"
  exit 0
fi
# Share of the samples per process (the nodes and the operator all name
# their threads tokio-rt-worker, so the per-symbol table cannot tell them apart).
echo "# samples per process:" >> "$out/$name.txt"
perf script -i "$data/perf.data" -F pid 2>/dev/null | sort | uniq -c \
  | awk 'NR==FNR { name[$1] = $2; next } { n[$2] = $1; total += $1 }
         END { for (p in n) printf "#   %6.2f%%  %s (pid %s)\n", 100 * n[p] / total, name[p], p }' "$data/procs" - \
  | sort -rn -k2 >> "$out/$name.txt"
echo >> "$out/$name.txt"
perf report -i "$data/perf.data" --no-children -g none --percent-limit 0.5 --sort comm,dso,sym --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | sed -n 1,60p >> "$out/$name.txt"
perf script -i "$data/perf.data" 2>/dev/null \
  | inferno-collapse-perf --all \
  | inferno-flamegraph --title "$name: raftcron-bench $*" --width 1400 --minwidth 1.5 > "$out/$name.svg"
echo "wrote $out/$name.svg and $out/$name.txt"
