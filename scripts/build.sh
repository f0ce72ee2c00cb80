#!/usr/bin/env bash
# Installs what is missing (scripts/install-deps.sh), then configures and
# builds minas in ./build (Release, Ninja, -j2 by default: MINAS_JOBS=N to change).
# The CUDA backend is built when /usr/local/cuda has nvcc, cuDNN and NCCL.
# Arguments name the targets to build (`bash scripts/build.sh minas` builds the
# binary alone, as scripts/run.sh does); without any, everything, tests included.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${MINAS_CMAKE_ARGS:-}
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "${MINAS_JOBS:-2}" "${targets[@]}"
