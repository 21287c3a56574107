#!/usr/bin/env bash
# The CUDA variant, in two steps (docs/cuda.md):
#
#   bash scripts/cuda-variant.sh prepare     HERE (npm registry or cache, the tarball): installs
#       fisherlens-<version>.tgz with its dependencies into .gpu/app, copies Node's headers to
#       .gpu/nodedir and Node itself to .gpu/bin, and packs the three into .gpu/bundle.tar.xz,
#       so the GPU machine needs neither Node, npm nor a network. Carry .gpu/bundle.tar.xz and
#       dist/ there (device tool: carry [".gpu/bundle.tar.xz", "dist"]).
#
#   bash scripts/cuda-variant.sh             ON THE GPU MACHINE, once, from this checkout: builds the
#       addon from the installed package's own sources against the machine's pip PyTorch
#       (scripts/find-libtorch.js finds it; rpath $ORIGIN only), adds it to the installed package
#       as variant torch<major.minor>-cu<ver> with its manifest entry, loads it with LD_LIBRARY_PATH
#       unset (it must be chosen by the loader, not by luck), runs the CUDA check
#       (scripts/cuda-check.ts) and the side-by-side bench against the machine's PyTorch
#       (bench/gpu.ts) through the installed package, and writes under $OUT what to bring back:
#       release-variants.tar (release/variants/<id>/… + release/variants/manifest.json, which the
#       packer ships while native/ is unchanged), the build log, the check's output, the bench's
#       figures: seven files in $OUT itself (the device tool brings back at most 8, 2 folders deep).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
APP=${FISHERLENS_APP:-$REPO/.gpu/app}
PKG=$APP/node_modules/fisherlens

if [ "${1:-}" = prepare ]; then
  # the version from its one reader (lib/util/version.ts); npm run package built dist/ already
  [ -f dist/lib/util/version.js ] || { echo "cuda-variant: dist/ missing: run npm run package first"; exit 1; }
  version=$(node -p "require('./dist/lib/util/version.js').packageVersion()")
  tgz=$REPO/fisherlens-$version.tgz
  [ -f "$tgz" ] || { echo "cuda-variant: $tgz missing: run npm run package first"; exit 1; }
  rm -rf "$APP" && mkdir -p "$APP"
  echo '{"name":"gpu-app","version":"1.0.0","private":true}' > "$APP/package.json"
  (cd "$APP" && npm install "$tgz" --prefer-offline --no-audit --no-fund)
  prefix=$(dirname "$(dirname "$(command -v node)")")
  rm -rf .gpu/nodedir .gpu/bin && mkdir -p .gpu/nodedir/include .gpu/bin
  cp -r "$prefix/include/node" .gpu/nodedir/include/
  cp "$(readlink -f "$(command -v node)")" .gpu/bin/node
  # one compressed file to carry: the device tool carries at most 64 MiB in all (this is ~30 MB)
  tar -C .gpu -cf - app nodedir bin | xz -T0 -6 > .gpu/bundle.tar.xz
  echo "cuda-variant: prepared .gpu/bundle.tar.xz ($(du -sh .gpu/bundle.tar.xz | cut -f1)): the installed" \
       "package, Node's headers and Node itself; carry .gpu/bundle.tar.xz and dist"
  exit 0
fi

OUT=${OUT:-/tmp/fisherlens-cuda-variant}
mkdir -p "$OUT"
WORK=$(mktemp -d)  # release/variants and the probe cache; only the tar of release/ goes to $OUT
if [ ! -d "$PKG" ] && [ -f .gpu/bundle.tar.xz ]; then xz -dc .gpu/bundle.tar.xz | tar -C .gpu -xf -; fi
[ -d "$PKG" ] || { echo "cuda-variant: $PKG missing: run 'bash scripts/cuda-variant.sh prepare' here, then carry .gpu/bundle.tar.xz"; exit 1; }
command -v node >/dev/null || export PATH="$REPO/.gpu/bin:$PATH"
nodedir=${NODEDIR:-$REPO/.gpu/nodedir}
node --version; nvidia-smi -L || true
node "$PKG/scripts/find-libtorch.js" | tee "$OUT/libtorch.json"
# CUDA_VARIANT_DRY_RUN=1: the whole recipe on a CPU LibTorch (variant torch<v>-dryrun, no CUDA
# check, a one-batch-size bench on the CPU), to try the plumbing before spending GPU time
DRY=${CUDA_VARIANT_DRY_RUN:-}
id=$(node -e "
  const l = require('$OUT/libtorch.json'); const mm = /^(\d+\.\d+)/.exec(l.version)[1];
  if (!l.cuda && '$DRY') { console.log('torch' + mm + '-dryrun'); process.exit(0); }
  if (!l.cuda) { console.error('cuda-variant: the LibTorch found has no CUDA'); process.exit(1); }
  console.log('torch' + mm + '-cu' + l.cuda.replace('.', ''));")
echo "cuda-variant: building $id"

# 1. Build from the installed package's sources, staged as for every node-gyp build
stage=$(mktemp -d)
node -e "require('$PKG/scripts/gyp-build.js').stageAddon('$PKG', '$stage', require('$PKG/dist/lib/util/version.js').packageVersion())"
start=$(date +%s)
if ! (cd "$stage" && JOBS=$(nproc) node "$APP/node_modules/node-gyp/bin/node-gyp.js" rebuild --release \
        --jobs="$(nproc)" --nodedir="$nodedir" >"$OUT/build.log" 2>&1); then
  echo "cuda-variant: build failed:"; grep -m 40 -E "error" "$OUT/build.log"; exit 1
fi
echo "cuda-variant: built in $(( $(date +%s) - start )) s"
strip --strip-unneeded "$stage/build/Release/fisherlens.node"

# 2. Add it to the installed package with its manifest entry; the same entry goes to release/
node - "$PKG" "$stage/build/Release/fisherlens.node" "$id" "$OUT" "$WORK" <<'EOF'
const fs = require('fs'); const path = require('path');
const [pkg, built, id, out, work] = process.argv.slice(2);
const g = require(path.join(pkg, 'scripts', 'gyp-build.js'));
const { nativeSourceHash, packageVersion } = require(path.join(pkg, 'dist', 'lib', 'util', 'version.js'));
const l = require(path.join(out, 'libtorch.json'));
const { execFileSync } = require('child_process');
const info = g.inspect(built);
if (info.rpath || (info.runpath && info.runpath !== '$ORIGIN')) { console.error(`RPATH ${info.rpath} RUNPATH ${info.runpath}: only $ORIGIN allowed`); process.exit(1); }
const abi = execFileSync(process.execPath, [path.join(pkg, 'scripts', 'find-libtorch.js'), '--abi']).toString().trim();
const rel = `${id}/prebuilds/linux-x64/fisherlens.glibc.node`;
const entry = {
  id, platform: 'linux-x64', file: rel, torch: /^(\d+\.\d+)/.exec(l.version)[1], torchVersion: l.version, cuda: l.cuda,
  cxx11Abi: Number(abi), needed: info.needed, torchNeeded: g.torchNeeded(info.needed), glibc: info.glibc, glibcxx: info.glibcxx,
  cxxabi: info.cxxabi, sha256: info.sha256, bytes: info.bytes, nativeSourceHash: nativeSourceHash(pkg), packageVersion: packageVersion(),
  builtOn: `${l.source} LibTorch at ${l.libDir}`, builtAt: new Date().toISOString(),
};
for (const root of [path.join(pkg, 'variants'), path.join(work, 'release', 'variants')]) {
  fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  fs.copyFileSync(built, path.join(root, rel));
  const mf = path.join(root, 'manifest.json');
  const m = fs.existsSync(mf) ? JSON.parse(fs.readFileSync(mf, 'utf8')) : { format: 1, variants: [] };
  m.variants = [...m.variants.filter((v) => v.id !== id), entry];
  fs.writeFileSync(mf, JSON.stringify(m, null, 2) + '\n');
}
console.log(`cuda-variant: ${id}: ${(info.bytes / 1e6).toFixed(2)} MB, NEEDED ${entry.torchNeeded.join(' ')}, GLIBC_${info.glibc}, GLIBCXX_${info.glibcxx}`);
EOF
rm -rf "$stage"
tar -C "$WORK" -cf "$OUT/release-variants.tar" release

# 3. The loader must choose it by itself: no LD_LIBRARY_PATH, a fresh probe cache (a dry run
#    leaves only its own variant in the installed package's manifest, so that it is the one tried)
export FISHERLENS_CACHE="$WORK/cache"
if [ -n "$DRY" ]; then
  node -e "const f='$PKG/variants/manifest.json', fs=require('fs'); const m=JSON.parse(fs.readFileSync(f,'utf8'));
    m.variants=m.variants.filter((v)=>v.id==='$id'); fs.writeFileSync(f, JSON.stringify(m,null,2)+'\n');"
fi
env -u LD_LIBRARY_PATH node -e "
  const b = require('$PKG').backend();
  console.log(JSON.stringify(b, null, 2));
  if (b.variant !== '$id' || (!b.cuda && !'$DRY')) { console.error('cuda-variant: loaded ' + b.variant + ', cuda ' + b.cuda); process.exit(1); }" \
  | tee "$OUT/backend.json"

# 4. The CUDA check through the installed package (its dist/lib)
set +e  # run the bench even when a check fails; the exit status says whether both passed
mkdir -p "$PKG/dist/scripts" && cp dist/scripts/cuda-check.js "$PKG/dist/scripts/"
if [ -n "$DRY" ]; then
  echo "cuda-variant: dry run, no CUDA check" | tee "$OUT/cuda-check.log"; check=0
  export BENCH_DEVICE=cpu BENCH_ARCHS=resnet20 BENCH_BATCH=8 BENCH_REPS=1
else
  env -u LD_LIBRARY_PATH node "$PKG/dist/scripts/cuda-check.js" 2>&1 | tee "$OUT/cuda-check.log"
  check=${PIPESTATUS[0]}
fi

# 5. The side-by-side bench through the installed package (bench/gpu.ts): exact Fisher, 20 power
#    iterations, PGD-20 and one TRADES step on resnet20 and wrn-34-10, batch 128, against the same
#    workloads in the machine's PyTorch; figures to $OUT/gpu-bench.{log,json}
mkdir -p "$PKG/dist/bench" "$PKG/bench/python"
cp dist/bench/gpu.js dist/bench/pyserver.js "$PKG/dist/bench/"
cp bench/python/gpu_bench.py bench/python/fisher_bench.py bench/python/attacks_bench.py bench/python/train_bench.py "$PKG/bench/python/"
# the Python side needs a Python with torch, found as LibTorch discovery finds one (this checkout's
# scripts/libtorch.js: $FISHERLENS_PYTHON alone when set, else python3, then /usr/bin/python3)
py=$(node -p "require('$REPO/scripts/libtorch.js').pythonWithTorch() || ''")
[ -n "$py" ] || { echo "cuda-variant: no Python with torch: the bench's PyTorch side cannot run"; py=python3; }
echo "cuda-variant: bench against $py ($("$py" -c 'import torch; print(torch.__version__)' 2>&1))"
FISHERLENS_PYTHON=$py BENCH_JSON="$OUT/gpu-bench.json" \
  env -u LD_LIBRARY_PATH node "$PKG/dist/bench/gpu.js" 2>&1 | tee "$OUT/gpu-bench.log"
bench=${PIPESTATUS[0]}
echo "cuda-variant: $id: check exit $check, bench exit $bench; bring back $OUT/release-variants.tar"
[ "$check" = 0 ] && [ "$bench" = 0 ]
