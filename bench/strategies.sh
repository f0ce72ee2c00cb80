#!/usr/bin/env bash
# Search strategies against the NAS-Bench-201 table (experiments/nb201-strategies.md):
# random, regularized evolution and REINFORCE at N queries over R runs on the
# three data sets of the table, then Pareto mode (accuracy against MACs) of
# evolution against random search; the predictor strategy (BANANAS) against
# both on CIFAR-10, and its ensemble alone. Every strategy figure is the last
# line of a `minas bench strategies` run, printed as a table.
#
#   bash bench/strategies.sh [RUNS] [TABLE]      (RUNS default 500)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-500}"
table="${2:-$here/../shared/benchmarks/nas-bench-201.csv}"
minas="$here/build/minas"
[[ -x "$minas" ]] || { echo "bench/strategies.sh: build first (bash scripts/build.sh)" >&2; exit 1; }
[[ -r "$table" ]] || { echo "bench/strategies.sh: no table at $table" >&2; exit 1; }

figure() {  # the last line of one run: mean=X std=Y
  "$minas" bench strategies --space nb201 --table "$table" --runs "$runs" "$@" | tail -n 1
}

echo "runs=$runs table=$table"
printf '%-10s %-10s %-6s %s\n' dataset strategy N figure
for pair in cifar10_valid_12ep:cifar10_test_200ep cifar100_valid_12ep:cifar100_test_200ep \
            imagenet16_valid_12ep:imagenet16_test_200ep; do
  search="${pair%%:*}"
  report="${pair##*:}"
  for n in 100 300; do
    for s in random evolution reinforce; do
      printf '%-10s %-10s %-6s %s\n' "${search%%_*}" "$s" "$n" \
        "$(figure --search-metric "$search" --report-metric "$report" --queries "$n" --strategy "$s")"
    done
  done
done
echo "Predictor-guided search (BANANAS) against evolution and random, cifar10 (minutes: refits at every ask)"
for n in 50 100 150; do
  for s in random evolution predictor; do
    printf '%-10s %-10s %-6s %s\n' cifar10 "$s" "$n" \
      "$(figure --search-metric cifar10_valid_12ep --report-metric cifar10_test_200ep \
          --queries "$n" --strategy "$s")"
  done
done
echo "The ensemble alone (minas bench predictor), cifar10_valid_12ep"
"$minas" bench predictor --table "$table" --space nb201 --target cifar10_valid_12ep
echo "Pareto mode, cifar10_valid_12ep against MACs: hypervolume (normalized, reference at the worst corner)"
for n in 100 300; do
  for s in random evolution; do
    printf '%-10s %-10s %-6s %s\n' pareto "$s" "$n" \
      "$(figure --search-metric cifar10_valid_12ep --report-metric cifar10_test_200ep \
          --queries "$n" --strategy "$s" --pareto macs)"
  done
done
"$minas" bench strategies --space nb201 --table "$table" --runs 1 --queries 1 \
  --search-metric cifar10_valid_12ep --report-metric cifar10_test_200ep --pareto macs \
  | grep "whole table's front"
