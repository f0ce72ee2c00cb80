#!/usr/bin/env bash
# On a GPU machine prepared as in shared/device/README.md (the command starts
# with `source .devdeps/env.sh &&`; pack with EXTRA_DEBS as scripts/gpu-check.sh
# says): builds minas with the GPU backend, runs the
# GPU tests, then minas adapt twice on a small customer folder (four
# Fashion-MNIST classes as PNG files):
#   1. trained on the GPU, latency constrained and measured on the GPU (--target cuda:0);
#   2. trained on the GPU, latency constrained and measured on one CPU thread
#      (--target cpu:1): the GPU pool trains while the CPU measures.
# Prints every figure; with $OUT set, keeps the logs and reports there.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-/tmp/minas-gpu-adapt}
mkdir -p "$out"
build=build-gpu
status=0
OUT=$out bash scripts/gpu-build.sh
case $? in
  0) ;;
  2) status=1 ;;  # a GPU test failed: the rest still runs
  *) exit 1 ;;    # no build
esac
data=$(mktemp -d)
"$build/minas" bench adapt-data --out "$data/train" --test-out "$data/test" \
  --classes 0,1,8,9 --per-class 300 --test-per-class 100 >/dev/null || exit 1
run() {  # NAME ARGS...: one adapt run, its last line and report kept
  local name=$1; shift
  echo "== adapt: $name"
  "$build/minas" adapt --data "$data/train" --test "$data/test" --db "$out/adapt.db" \
    --name "$name" --out "$out/$name" "$@" >"$out/$name.json" 2>"$out/$name.log" || status=1
  tail -n 3 "$out/$name.log"
  cat "$out/$name.json"
  sed -n '/^## Constraints/,/^## Confusion/p' "$out/$name/report.md" 2>/dev/null | head -n 14
}
run gpu-target --devices cuda:0 --target cuda:0 --latency-ms 2 --budget "${BUDGET:-100s}"
run cpu-target --devices cuda:0 --target cpu:1 --latency-ms 1 --budget "${BUDGET:-100s}"
echo "== latency measurements in the store, by target"
"$build/minas" sql --db "$out/adapt.db" \
  "SELECT target, count(*), round(avg(measured_ms),4), sum(predicted_ms IS NOT NULL) FROM latency_measurements GROUP BY target" 2>&1 || true
exit $status
