#!/usr/bin/env bash
# Installs what is missing, builds, and runs the test suite: every test but
# those labelled `long` (end-to-end checks: scripts/test.sh --long runs them
# too). Tests that need a GPU report themselves skipped where there is none.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/build.sh
select=(-LE long)
[[ "${1:-}" == "--long" ]] && select=()
ctest --test-dir build --output-on-failure -j "${MINAS_JOBS:-2}" "${select[@]}"
