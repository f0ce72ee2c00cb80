#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on its embedded
# default: `minas search` with no arguments. Twenty minutes on this machine's
# cores: regularized evolution with ASHA early stopping over the default space
# on Fashion-MNIST, then the best architecture retrained on the training and
# validation images, evaluated once on the test set and exported (architecture,
# weights, ONNX, report) to runs/<experiment>/. The store is ./minas.db;
# Ctrl-C stops cleanly and `./build/minas search --resume` continues.
# Arguments are passed to `minas search` (e.g. --budget 5m).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/build.sh minas  # the main job needs the binary alone, not the tests
exec ./build/minas search "$@"
