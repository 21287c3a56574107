#!/usr/bin/env bash
# CUDA checks on a GPU machine whose python3 has a CUDA PyTorch (its LibTorch is what
# scripts/find-libtorch.js finds there). Builds the addon with plain CMake (no npm needed),
# then runs dist/scripts/cuda-check.js. Needs dist/ built here (npm run build:ts), and, where
# the GPU machine has no Node, .gpu/bundle.tar.xz (scripts/cuda-variant.sh prepare) + .gpu/include
# (node-api headers) carried along.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/fisherlens-gpu}
mkdir -p "$OUTDIR"
if ! command -v node >/dev/null; then  # Node from scripts/cuda-variant.sh prepare's bundle
  [ -x .gpu/bin/node ] || xz -dc .gpu/bundle.tar.xz | tar -C .gpu -xf - bin
  export PATH="$PWD/.gpu/bin:$PATH"
fi
node --version; nvidia-smi -L
node scripts/find-libtorch.js | tee "$OUTDIR/libtorch.json"
inc=${NODE_API_INCLUDE:-$PWD/.gpu/include}
# The C++ standard comes from LibTorch's headers (scripts/libtorch.js cxxStandard: 20 from 2.14)
rm -rf build-cuda
if ! { cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC="$inc" >"$OUTDIR/build.log" 2>&1 &&
       cmake --build build-cuda -j "$(nproc)" -- -k 0 >>"$OUTDIR/build.log" 2>&1; }; then
  echo "build failed:"; grep -m 40 -E "error:" "$OUTDIR/build.log"; exit 1
fi
built=$(grep -o "C++[0-9]*" "$OUTDIR/build.log" | head -1)
addon=$(find build-cuda -name fisherlens.node | head -1)
echo "built $addon with $built"; ldd "$addon" | grep -E "torch|c10" 
FISHERLENS_ADDON="$PWD/$addon" node dist/scripts/cuda-check.js 2>&1 | tee "$OUTDIR/cuda-check.log"
exit "${PIPESTATUS[0]}"
