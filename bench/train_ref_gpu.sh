#!/usr/bin/env bash
# GPU training throughput of minas against PyTorch on the same GPU, in the
# same run: the reference network and recipe at widths 16 and 32 and batches
# 128 and 512, one epoch each (bench/torch_ref_gpu.py is PyTorch's side).
#
#   bash bench/train_ref_gpu.sh [MINAS_BINARY] [DEVICE]   (default build/minas cuda:0)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
minas=${1:-$root/build/minas}
device=${2:-cuda:0}
[[ -x $minas ]] || { echo "no minas binary at $minas" >&2; exit 1; }
python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null ||
  { echo "PyTorch with CUDA is needed for the comparison" >&2; exit 1; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | tail -n 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
printf '%-6s %-6s %-9s %12s %12s %7s %10s %10s\n' width batch precision minas_img/s torch_img/s ratio minas_acc torch_acc
for width in 16 32; do
  for batch in 128 512; do
   for precision in fp32 bf16; do
    m=$("$minas" bench train-ref --device "$device" --width "$width" --batch "$batch" --epochs 1 --precision "$precision")
    t=$(python3 "$root/bench/torch_ref_gpu.py" --device "$device" --width "$width" --batch "$batch" --epochs 1 --precision "$precision")
    mi=$(echo "$m" | field img_per_s); ma=$(echo "$m" | field test_acc)
    ti=$(echo "$t" | field img_per_s); ta=$(echo "$t" | field test_acc)
    ratio=$(awk -v a="$mi" -v b="$ti" 'BEGIN { printf "%.2f", a / b }')
    printf '%-6s %-6s %-9s %12s %12s %7s %10s %10s\n' "$width" "$batch" "$precision" "$mi" "$ti" "$ratio" "$ma" "$ta"
   done
  done
done
# Time to 92% test accuracy (width 16, batch 128, a 10-epoch one-cycle
# schedule; the test set evaluated after every epoch, not timed).
m=$("$minas" bench train-ref --device "$device" --width 16 --batch 128 --epochs 10 --target 0.92)
t=$(python3 "$root/bench/torch_ref_gpu.py" --device "$device" --width 16 --batch 128 --epochs 10 --target 0.92)
echo "time to 92%: minas $(echo "$m" | grep '^target=' || true) | torch $(echo "$t" | grep '^target=' || true)"
