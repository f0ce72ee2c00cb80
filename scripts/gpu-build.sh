#!/usr/bin/env bash
# On the GPU machine (after `source .devdeps/env.sh`), for gpu-check.sh and
# gpu-adapt-check.sh: builds minas with the GPU backend into build-gpu (minas
# and the GPU tests; CUDA_ARCH, default 90 for Hopper, picks the GPU
# generation) and runs the GPU tests (CTest label gpu). Logs go to OUT
# (default /tmp/minas-gpu). Exits 1 when the build fails, 2 when a GPU test
# fails.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/devdeps-fixes.sh
out=${OUT:-/tmp/minas-gpu}
mkdir -p "$out"
build=build-gpu
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMINAS_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" >"$out/configure.log" 2>&1 ||
  { tail -n 30 "$out/configure.log"; exit 1; }
ninja -C "$build" -j "$(nproc)" minas test_cuda test_cuda_kernels test_cuda_network \
  >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; exit 1; }
echo "== GPU tests"
ctest --test-dir "$build" -L gpu --output-on-failure 2>&1 | tee "$out/tests.log" | tail -n 60
[[ ${PIPESTATUS[0]} -eq 0 ]] || exit 2
