#!/usr/bin/env bash
# Installs, from Debian 12 packages, everything minas needs to build, test and
# run. Idempotent: packages already present are not touched, and apt is only
# called when something is missing. Run as root (or with sudo available).
#   --torch  also python3-torch, for the PyTorch reference of bench/one_click.sh
#            (../shared/bench/torch_ref.py); minas itself does not need it.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build
  libzmq3-dev cppzmq-dev
  libsqlite3-dev sqlite3
  nlohmann-json3-dev
  libcli11-dev
  doctest-dev
  libdnnl-dev ocl-icd-opencl-dev opencl-headers
  zlib1g-dev
  libonnx-dev libprotobuf-dev
  libstb-dev
  libcpp-httplib-dev libjs-chart.js
  chromium chromium-driver
  slurm-wlm munge python3
  dataset-fashion-mnist
)
for arg in "$@"; do
  case "$arg" in
    --torch) packages+=(python3-torch) ;;
    *) echo "install-deps: unknown option '$arg' (known: --torch)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
