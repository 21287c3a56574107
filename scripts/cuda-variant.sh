#!/usr/bin/env bash
# The CUDA variant, in two steps (docs/cuda.md):
#
#   bash scripts/cuda-variant.sh prepare     HERE (npm registry or cache, the tarball): installs
#       fisherlens-<version>.tgz with its dependencies into .gpu/app and copies Node's headers to
#       .gpu/nodedir, so the GPU machine needs neither npm nor a network. Carry .gpu (with the
#       .gpu/node.xz Node binary scripts/gpu-check.sh also uses) and dist/ there.
#
#   bash scripts/cuda-variant.sh             ON THE GPU MACHINE, once, from this checkout: builds the
#       addon from the installed package's own sources against the machine's pip PyTorch
#       (scripts/find-libtorch.js finds it; rpath $ORIGIN only), adds it to the installed package
#       as variant torch<major.minor>-cu<ver> with its manifest entry, loads it with LD_LIBRARY_PATH
#       unset (it must be chosen by the loader, not by luck), runs the CUDA check
#       (scripts/cuda-check.ts) through the installed package, and writes under $OUT what to bring
#       back: release/variants/<id>/… + release/variants/manifest.json (the packer ships it while
#       native/ is unchanged), the build log, the check's output.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
APP=${FISHERLENS_APP:-$REPO/.gpu/app}
PKG=$APP/node_modules/fisherlens

if [ "${1:-}" = prepare ]; then
  version=$(node -p "require('./package.json').version")
  tgz=$REPO/fisherlens-$version.tgz
  [ -f "$tgz" ] || { echo "cuda-variant: $tgz missing: run npm run package first"; exit 1; }
  rm -rf "$APP" && mkdir -p "$APP"
  echo '{"name":"gpu-app","version":"1.0.0","private":true}' > "$APP/package.json"
  (cd "$APP" && npm install "$tgz" --prefer-offline --no-audit --no-fund)
  prefix=$(dirname "$(dirname "$(command -v node)")")
  rm -rf .gpu/nodedir && mkdir -p .gpu/nodedir/include && cp -r "$prefix/include/node" .gpu/nodedir/include/
  echo "cuda-variant: prepared $APP ($(du -sh "$APP" | cut -f1)) and .gpu/nodedir; carry .gpu and dist/"
  exit 0
fi

OUT=${OUT:-/tmp/fisherlens-cuda-variant}
mkdir -p "$OUT"
if ! command -v node >/dev/null; then
  mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node
  export PATH="$REPO/.gpu/bin:$PATH"
fi
[ -d "$PKG" ] || { echo "cuda-variant: $PKG missing: run 'bash scripts/cuda-variant.sh prepare' before carrying .gpu"; exit 1; }
nodedir=${NODEDIR:-$REPO/.gpu/nodedir}
node --version; nvidia-smi -L || true
node "$PKG/scripts/find-libtorch.js" | tee "$OUT/libtorch.json"
id=$(node -e "
  const l = require('$OUT/libtorch.json'); const mm = /^(\d+\.\d+)/.exec(l.version)[1];
  if (!l.cuda) { console.error('cuda-variant: the LibTorch found has no CUDA'); process.exit(1); }
  console.log('torch' + mm + '-cu' + l.cuda.replace('.', ''));")
echo "cuda-variant: building $id"

# 1. Build from the installed package's sources, staged as for every node-gyp build
stage=$(mktemp -d)
node -e "require('$PKG/scripts/gyp-build.js').stageAddon('$PKG', '$stage')"
start=$(date +%s)
if ! (cd "$stage" && JOBS=$(nproc) node "$APP/node_modules/node-gyp/bin/node-gyp.js" rebuild --release \
        --jobs="$(nproc)" --nodedir="$nodedir" >"$OUT/build.log" 2>&1); then
  echo "cuda-variant: build failed:"; grep -m 40 -E "error" "$OUT/build.log"; exit 1
fi
echo "cuda-variant: built in $(( $(date +%s) - start )) s"
strip --strip-unneeded "$stage/build/Release/fisherlens.node"

# 2. Add it to the installed package with its manifest entry; the same entry goes to release/
node - "$PKG" "$stage/build/Release/fisherlens.node" "$id" "$OUT" <<'EOF'
const fs = require('fs'); const path = require('path');
const [pkg, built, id, out] = process.argv.slice(2);
const g = require(path.join(pkg, 'scripts', 'gyp-build.js'));
const { nativeSourceHash, packageVersion } = require(path.join(pkg, 'dist', 'lib', 'provenance.js'));
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
for (const root of [path.join(pkg, 'variants'), path.join(out, 'release', 'variants')]) {
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

# 3. The loader must choose it by itself: no LD_LIBRARY_PATH, a fresh probe cache
export FISHERLENS_CACHE="$OUT/cache"
env -u LD_LIBRARY_PATH node -e "
  const b = require('$PKG').backend();
  console.log(JSON.stringify(b, null, 2));
  if (b.variant !== '$id' || !b.cuda) { console.error('cuda-variant: loaded ' + b.variant + ', cuda ' + b.cuda); process.exit(1); }" \
  | tee "$OUT/backend.json"

# 4. The CUDA check through the installed package (its dist/lib)
mkdir -p "$PKG/dist/scripts" && cp dist/scripts/cuda-check.js "$PKG/dist/scripts/"
env -u LD_LIBRARY_PATH node "$PKG/dist/scripts/cuda-check.js" 2>&1 | tee "$OUT/cuda-check.log"
exit "${PIPESTATUS[0]}"
