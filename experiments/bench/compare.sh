#!/usr/bin/env bash
# Runs the project's bench binary and the PyTorch reference side by side on
# this machine, one (workload, threads) per process, pinned as the peers were
# (taskset -c 0 for 1 thread, -c 0,1 for 2), each under /usr/bin/time -v for
# peak RSS. Prints JSON lines (one per measurement, with "framework" and
# "peak_rss_mib") to stdout.
#
#   PYTHON=/path/to/python-with-torch experiments/bench/compare.sh > results.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-20}
cargo build --release --bin bench >&2
for w in W1 W2 W3; do
  for t in 1 2; do
    cpus=$([ "$t" = 1 ] && echo 0 || echo 0,1)
    for fw in ours pytorch; do
      if [ "$fw" = ours ]; then
        cmd=(./target/release/bench --workload "$w" --threads "$t" --steps "$STEPS" --json)
      else
        cmd=("$PYTHON" experiments/bench/pytorch_reference.py --workload "$w" --threads "$t" --steps "$STEPS")
      fi
      out=$( { /usr/bin/time -v taskset -c "$cpus" "${cmd[@]}" 2>/tmp/bench_time.txt; } )
      rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' /tmp/bench_time.txt)
      echo "$out" | grep '^{' | sed "s/}\$/, \"framework_run\": \"$fw\", \"peak_rss_mib\": $rss}/"
    done
  done
done
