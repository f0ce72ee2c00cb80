#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on its embedded
# default. Until `minas search` lands, that is the best step of it that
# exists: the default search space (small), and five architectures sampled
# from it the way a search starts, each lowered to its network.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/build.sh
minas=./build/minas
echo "== the default search space"
"$minas" space info --space small
echo "== five sampled architectures (seed 0), lowered"
"$minas" space sample --space small --n 5 --seed 0 | while read -r key; do
  "$minas" space arch --space small --arch "$key"
done
