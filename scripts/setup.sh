#!/usr/bin/env bash
# FisherLens setup on a fresh Debian/Ubuntu machine. Idempotent: installs the system packages
# (LibTorch, OpenBLAS, Fashion-MNIST, PyTorch for the reference tests, a C++ toolchain, Chromium
# for the headless check of report.html, python3-venv for scripts/torch-env.sh's pip PyTorch
# 2.x), then the npm dependencies, then builds the addon and the TypeScript. Prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS=(libtorch-dev libopenblas0-pthread dataset-fashion-mnist python3-torch python3-numpy python3-venv cmake g++ ninja-build ccache nlohmann-json3-dev zlib1g-dev chromium redis-server)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "setup: system packages present (${PKGS[*]})"
fi

# The reference BLAS is ~35x slower than OpenBLAS for matrix products: make sure OpenBLAS wins
if command -v update-alternatives >/dev/null; then
  for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    cur=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/{print $2}')
    case "$cur" in *openblas*|"") ;; *) echo "setup: pointing $alt at OpenBLAS"; $SUDO update-alternatives --auto "$alt" ;; esac
  done
fi

echo "setup: LibTorch found at: $(node scripts/find-libtorch.js --cmake-prefix)"
if [ -f package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
else
  echo "setup: npm install"
  npm install --no-audit --no-fund
fi
echo "setup: building the native addon (cmake-js) and the TypeScript"
npm run build --silent
echo "setup: done. $(node dist/lib/cli/main.js info | tr -d '\n' | tr -s ' ')"
