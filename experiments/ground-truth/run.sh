#!/usr/bin/env bash
# Builds the ground-truth table of the `small` space on Fashion-MNIST, or goes
# on with it: a seeded sample of 60 architectures stratified over parameter
# count plus the hand-designed 16|32|conv_k3|skip|64|conv_k3|skip, each
# trained 10 epochs with the default recipe (the final training's), as one
# minas experiment (small-fashion-mnist.json). Stopped at any point (Ctrl-C,
# a killed machine), the same command resumes it; trained architectures are
# never trained again. At the end, and after every run, the table is written
# from the store: small-fashion-mnist.csv, read by
#   minas bench strategies --space small --table ... --search-metric valid_10ep
#
#   bash experiments/ground-truth/run.sh                    # 2 CPU workers here
#   bash experiments/ground-truth/run.sh --devices cuda:0x4 # on a GPU machine
#
# MINAS=path/to/minas picks the binary (default build/minas); STORE= the store
# (default experiments/ground-truth/small-fashion-mnist.db). Extra arguments go
# to `minas search` (workers, threads, devices).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=$root/experiments/ground-truth
minas=${MINAS:-$root/build/minas}
store=${STORE:-$dir/small-fashion-mnist.db}
[ -x "$minas" ] || { echo "run.sh: no minas binary at $minas (bash scripts/build.sh)" >&2; exit 2; }
"$minas" search --experiment "$dir/small-fashion-mnist.json" --db "$store" "$@"
"$minas" bench table --db "$store" --out "$dir/small-fashion-mnist.csv" --epochs 1,3
