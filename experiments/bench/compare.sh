#!/usr/bin/env bash
# Runs the project's bench binary and the PyTorch reference side by side on
# this machine, one (workload, threads) per process, pinned as the peers were
# (taskset -c 0 for 1 thread, -c 0,1 for 2), each under /usr/bin/time -v for
# peak RSS. Prints JSON lines (one per measurement, with "framework" and
# "peak_rss_mib") to stdout.
#
#   PYTHON=/path/to/python-with-torch experiments/bench/compare.sh > results.jsonl
#
# The bench binary is found through `cargo metadata` (so CARGO_TARGET_DIR and
# build.target-dir are honoured), and each run's `time -v` report goes to a
# private temporary file, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-20}
cargo build --release --bin bench >&2
target_dir=$(cargo metadata --format-version 1 --no-deps |
  "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bench="$target_dir/release/bench"
time_log=$(mktemp)
trap 'rm -f "$time_log"' EXIT
for w in W1 W2 W3 W5; do
  for t in 1 2; do
    cpus=$([ "$t" = 1 ] && echo 0 || echo 0,1)
    for fw in ours pytorch; do
      if [ "$fw" = ours ]; then
        cmd=("$bench" --workload "$w" --threads "$t" --steps "$STEPS" --json)
      else
        cmd=("$PYTHON" experiments/bench/pytorch_reference.py --workload "$w" --threads "$t" --steps "$STEPS")
      fi
      out=$( { /usr/bin/time -v taskset -c "$cpus" "${cmd[@]}" 2>"$time_log"; } )
      rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$time_log")
      echo "$out" | grep '^{' | sed "s/}\$/, \"framework_run\": \"$fw\", \"peak_rss_mib\": $rss}/"
    done
  done
done
