#!/usr/bin/env bash
# On a GPU machine prepared as in shared/device/README.md (the command starts
# with `source .devdeps/env.sh &&`): builds minas with the GPU backend, runs
# the GPU tests (CTest label gpu: the backend's ops against the CPU oracle,
# the trainer's kernels, NCCL), then the GPU training benchmark against
# PyTorch on the same GPU. Prints every figure; with $OUT set, keeps the logs
# there too. Takes a few minutes; CUDA_ARCH (default 90, Hopper) picks the
# GPU generation to compile for. SEARCH=1 ends with the one-click search on
# the GPU, four candidates at once (`minas search --devices cuda:0x4 --budget
# 5m`: five more minutes). The build needs ONNX and protobuf beyond the
# packages shared/device/pack.sh carries by default: pack with
#   EXTRA_DEBS="libonnx1 libonnx-dev libonnxifi libprotobuf32 libprotobuf-lite32 libprotobuf-dev libstb0 libstb-dev" \
#     bash ../shared/device/pack.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-/tmp/minas-gpu-check}
mkdir -p "$out"
build=build-gpu
status=0
OUT=$out bash scripts/gpu-build.sh
case $? in
  0) ;;
  2) status=1 ;;  # a GPU test failed: the rest still runs
  *) exit 1 ;;    # no build
esac
echo "== training throughput against PyTorch"
bash bench/train_ref_gpu.sh "$build/minas" 2>&1 | tee "$out/bench.log" || status=1
echo "== candidates per hour on one GPU, one at a time and four at once"
bash bench/gpu_candidates.sh "$build/minas" 4 16 2>&1 | tee "$out/candidates.log" || status=1
if [[ ${SEARCH:-0} == 1 ]]; then
  echo "== minas search on one GPU, four candidates at once, 5 minutes"
  timeout 480 "$build/minas" search --devices cuda:0x4 --budget 5m --db "$out/search.db" \
    --out "$out/search" 2>&1 | tee "$out/search.log" || status=1
fi
exit $status
