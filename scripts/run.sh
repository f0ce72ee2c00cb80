#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on its embedded
# default. Until `minas search` lands, that is the part of it that exists:
# an architecture sampled from the default search space (small) the way a
# search starts, trained on Fashion-MNIST with the default recipe on the CPU,
# evaluated on the held-out test set and saved to runs/quickstart/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/build.sh
minas=./build/minas
echo "== the default search space"
"$minas" space info --space small | head -n 4
arch=$("$minas" space sample --space small --n 1 --seed 0)
echo "== sampled architecture: $arch"
"$minas" space arch --space small --arch "$arch"
echo "== training it: 3 epochs, 10,000 images held out for validation"
"$minas" train --space small --arch "$arch" --data fashion-mnist --epochs 3 --out runs/quickstart
echo "== saved: runs/quickstart/model.ckpt and runs/quickstart/report.json"
