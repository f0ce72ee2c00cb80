#!/usr/bin/env bash
# Experiment-store throughput of minas against Optuna with its SQLite storage
# on the same machine, in the same run.
#
#   bash bench/store.sh [results]      (default 100000)
#
# minas: `minas bench store --results N` records N simulated trial results
# (each with 5 per-epoch metric rows) through the controller's write path,
# durably (WAL, synchronous=FULL, group commit), then times top-k and Pareto
# queries over them. Optuna: shared/bench/optuna_ref.py 300 random (Debian's
# python3-optuna), an ask/tell loop with a trivial objective.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${1:-100000}
shared=${SHARED:-$root/../shared}
minas=$root/build/minas
[[ -x $minas ]] || { echo "build first: bash scripts/build.sh" >&2; exit 1; }
/usr/bin/python3 -c 'import optuna' 2>/dev/null || { echo "install python3-optuna" >&2; exit 1; }

m=$("$minas" bench store --results "$n")
echo "$m"
o=$(/usr/bin/python3 "$shared/bench/optuna_ref.py" 300 random)
echo "$o"
mr=$(echo "$m" | sed -n 's/.*results_per_s=\([0-9.]*\).*/\1/p' | tail -n 1)
orate=$(echo "$o" | sed -n 's/.*trials_per_s=\([0-9.]*\).*/\1/p' | tail -n 1)
awk -v a="$mr" -v b="$orate" 'BEGIN { printf "ratio minas/optuna: %.0fx (%s vs %s results/s)\n", a / b, a, b }'
