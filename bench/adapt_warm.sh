#!/usr/bin/env bash
# Warm start against cold start of minas adapt on a data set the store has
# not seen (experiments/adapt-warm-start.md).
#
#   bash bench/adapt_warm.sh [SEEDS] [BUDGET] [OUT]      default "0 1 2" 3m experiments/adapt-warm-start
#
# The store first holds one earlier adaptation, to six Fashion-MNIST classes
# (trouser, dress, sandal, sneaker, bag, boot). The new customer brings the
# four other classes (t-shirt, pullover, coat, shirt: the hard ones), 300
# training and 100 test images each. Per seed, one run warm (the store's
# most similar data set's best architectures, then the portfolio) and one
# cold (--no-warm-start), each on its own copy of that store, one after the
# other on this machine. The figure: seconds of search until the best
# validation accuracy reaches the target, the median of the cold runs' final
# best (what cold search reaches in its whole budget).
set -euo pipefail
minas=${MINAS:-build/minas}
seeds=${1:-"0 1 2"}
budget=${2:-3m}
out=${3:-experiments/adapt-warm-start}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$minas" bench adapt-data --out "$work/source" --test-out "$work/source-test" \
  --classes 1,3,5,7,8,9 --per-class 300 --test-per-class 100 >/dev/null
"$minas" bench adapt-data --out "$work/new" --test-out "$work/new-test" \
  --classes 0,2,4,6 --per-class 300 --test-per-class 100 >/dev/null
echo "source: $(date -u +%H:%M:%S)"
"$minas" adapt --data "$work/source" --test "$work/source-test" --db "$work/source.db" \
  --name source --seed 100 --budget "$budget" --out "$work/source-out" \
  >"$out/source.json" 2>"$out/source.log"
for s in $seeds; do
  for mode in warm cold; do
    echo "$mode seed $s: $(date -u +%H:%M:%S)"
    cp "$work/source.db" "$work/$mode-$s.db"
    flag=()
    [[ $mode == cold ]] && flag=(--no-warm-start)
    "$minas" adapt --data "$work/new" --test "$work/new-test" --db "$work/$mode-$s.db" \
      --name "$mode-$s" --seed "$s" --budget "$budget" --out "$work/$mode-$s-out" "${flag[@]}" \
      >"$out/$mode-$s.json" 2>"$out/$mode-$s.log"
    "$minas" query --db "$work/$mode-$s.db" --format csv progress --experiment "$mode-$s" \
      >"$out/$mode-$s.progress.csv"
    cp "$work/$mode-$s-out/report.md" "$out/$mode-$s.report.md"
  done
done
# The target: the median over the cold runs of their final best validation accuracy.
target=$(for s in $seeds; do tail -n 1 "$out/cold-$s.progress.csv" | cut -d, -f3; done |
  sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
{
  echo "target validation accuracy (median of the cold runs' final best): $target"
  echo "seed,mode,seconds_to_target,trials_to_target,final_best_val,test_acc"
  for s in $seeds; do
    for mode in warm cold; do
      reach=$(awk -F, -v t="$target" 'NR > 1 && $3 >= t - 1e-12 {print $2 "," $1; exit}' \
        "$out/$mode-$s.progress.csv")
      best=$(tail -n 1 "$out/$mode-$s.progress.csv" | cut -d, -f3)
      acc=$(grep -o '"test_acc":[0-9.e-]*' "$out/$mode-$s.json" | cut -d: -f2)
      echo "$s,$mode,${reach:-not reached,-},$best,$acc"
    done
  done
} | tee "$out/summary.csv"
