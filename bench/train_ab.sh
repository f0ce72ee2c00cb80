#!/usr/bin/env bash
# Training throughput of two minas builds on this machine, alternated so that
# drift in the machine's load falls on both alike: `reps` pairs of one-epoch
# runs of the reference network (minas bench train-ref), the order of each
# pair flipped from the last; then each build's mean images per second and
# the ratio of the second's to the first's.
#
#   bash bench/train_ab.sh BEFORE_BINARY AFTER_BINARY [reps=3] [width=16] [threads=2]
set -euo pipefail
before=${1:?usage: train_ab.sh BEFORE_BINARY AFTER_BINARY [reps] [width] [threads]}
after=${2:?usage: train_ab.sh BEFORE_BINARY AFTER_BINARY [reps] [width] [threads]}
reps=${3:-3}
width=${4:-16}
threads=${5:-2}
for b in "$before" "$after"; do
  [[ -x $b ]] || { echo "train_ab.sh: $b is not an executable" >&2; exit 1; }
done
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | tail -n 1; }
sum_before=0 sum_after=0
for ((rep = 1; rep <= reps; ++rep)); do
  order="before after"
  ((rep % 2 == 0)) && order="after before"
  for which in $order; do
    bin=$before
    [[ $which == after ]] && bin=$after
    r=$("$bin" bench train-ref --width "$width" --epochs 1 --threads "$threads" | field img_per_s)
    echo "rep=$rep build=$which img_per_s=$r"
    if [[ $which == before ]]; then
      sum_before=$(awk -v a="$sum_before" -v b="$r" 'BEGIN { print a + b }')
    else
      sum_after=$(awk -v a="$sum_after" -v b="$r" 'BEGIN { print a + b }')
    fi
  done
done
awk -v a="$sum_before" -v b="$sum_after" -v n="$reps" 'BEGIN {
  printf "before_img_per_s=%.1f after_img_per_s=%.1f after_over_before=%.3f\n", a / n, b / n, b / a }'
