#!/usr/bin/env bash
# Candidates per hour on one GPU: the same search of small networks run with
# one trial at a time on the GPU, then with K at once (cuda:0xK, each on its
# own stream), in the same run. Real training, the default space and data:
# each candidate one whole epoch, and nothing but the trials (no screening
# before them, no final training after: those run once, whatever the slots).
#
#   bash bench/gpu_candidates.sh [MINAS_BINARY] [K] [TRIALS]   (default build/minas 4 24)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
minas=${1:-$root/build/minas}
k=${2:-4}
trials=${3:-24}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for slots in 1 "$k"; do
  start=$(date +%s.%N)
  "$minas" search --db "$work/c$slots.db" --name "gpu-$slots" --devices "cuda:0x$slots" \
    --trials "$trials" --fidelity 1 --trial-fraction 1 --screen 0 --no-final --seed 1 \
    >/dev/null 2>"$work/log$slots"
  end=$(date +%s.%N)
  awk -v n="$trials" -v s="$start" -v e="$end" -v k="$slots" \
    'BEGIN { printf "at_once=%d trials=%d seconds=%.1f candidates_per_hour=%.0f\n", k, n, e - s, n / (e - s) * 3600 }'
done
