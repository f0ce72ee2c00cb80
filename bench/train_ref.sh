#!/usr/bin/env bash
# CPU training throughput and accuracy of minas against PyTorch on the same
# machine, in the same run: the reference network and recipe of
# shared/bench/torch_ref.py at widths 16 and 32 (1 epoch) and width 16
# (5 epochs), batch 128, and the machine's single-precision GEMM peak.
#
#   bash bench/train_ref.sh [threads]      (default 2)
#
# MINAS_BEFORE=path/to/another/minas adds that build's images per second,
# measured in the same run just before this one's, and the ratio of this
# build's to it: a change to the trainer is shown not to slow it down.
#
# Needs a built ./build/minas (scripts/build.sh), Debian's python3-torch and
# the shared/ folder beside the repository (SHARED=path to point elsewhere).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
threads=${1:-2}
shared=${SHARED:-$root/../shared}
minas=$root/build/minas
ref=$shared/bench/torch_ref.py
[[ -x $minas ]] || { echo "build first: bash scripts/build.sh" >&2; exit 1; }
[[ -f $ref ]] || { echo "missing $ref (set SHARED=...)" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "install python3-torch" >&2; exit 1; }

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | tail -n 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$threads"
gemm=$("$minas" bench gemm --threads "$threads" | field gemm_gflops)
echo "sgemm peak (oneDNN, n=2048): $gemm GFLOP/s"
before=${MINAS_BEFORE:-}
[[ -z $before || -x $before ]] || { echo "MINAS_BEFORE=$before is not an executable" >&2; exit 1; }
printf '\n%-7s %-6s %12s %12s %7s %10s %10s %12s' width epochs minas_img/s torch_img/s ratio minas_acc torch_acc "of_gemm_peak"
[[ -n $before ]] && printf ' %12s %10s' before_img/s vs_before
printf '\n'
for run in "16 1" "32 1" "16 5"; do
  set -- $run
  [[ -n $before ]] && b=$("$before" bench train-ref --width "$1" --epochs "$2" --threads "$threads")
  m=$("$minas" bench train-ref --width "$1" --epochs "$2" --threads "$threads")
  t=$(/usr/bin/python3 "$ref" --width "$1" --epochs "$2" --threads "$threads")
  mi=$(echo "$m" | field img_per_s); ma=$(echo "$m" | field test_acc); mg=$(echo "$m" | field train_gflops)
  ti=$(echo "$t" | field img_per_s); ta=$(echo "$t" | field test_acc)
  ratio=$(awk -v a="$mi" -v b="$ti" 'BEGIN { printf "%.2f", a / b }')
  peak=$(awk -v a="$mg" -v b="$gemm" 'BEGIN { printf "%.0f%%", 100 * a / b }')
  printf '%-7s %-6s %12s %12s %7s %10s %10s %12s' "$1" "$2" "$mi" "$ti" "$ratio" "$ma" "$ta" "$peak"
  if [[ -n $before ]]; then
    bi=$(echo "$b" | field img_per_s)
    printf ' %12s %10s' "$bi" "$(awk -v a="$mi" -v b="$bi" 'BEGIN { printf "%.2f", a / b }')"
  fi
  printf '\n'
done
