#!/usr/bin/env node
// `npm run package`: builds the prebuilt variant this machine can build (the LibTorch that
// scripts/find-libtorch.js finds, e.g. torch1.13-cpu on Debian 12) and the torch-free shim with
// prebuildify in a scratch copy (the development build/ is untouched), writes
// variants/manifest.json, and leaves fisherlens-<version>.tgz in the repository root.
//   --if-needed   reuse a variant whose binary and native-source hash still match (then only pack)
//   --no-pack     build and write the manifest only
//   --release DIR variants built elsewhere (default release/variants)
// Variants built elsewhere (the CUDA one, on the GPU machine) are kept from release/variants/
// (binary + manifest entry) when their native-source hash matches native/; stale ones are left
// out with a message. Exits non-zero with the reason when a build fails or a binary carries a
// build-machine path.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync, execFileSync } = require('child_process');
const { stageAddon, stageShim, inspect, sha256, torchNeeded } = require('./gyp-build');
const { majorMinor } = require('./libtorch');

const root = path.join(__dirname, '..');
const argv = process.argv.slice(2);
const args = new Set(argv);
const releaseDir = argv.includes('--release') ? path.resolve(argv[argv.indexOf('--release') + 1]) : path.join(root, 'release', 'variants');
const versionModule = path.join(root, 'dist', 'lib', 'util', 'version.js');
if (!fs.existsSync(versionModule)) {
  console.error('package: dist/lib/util/version.js missing: run `npm run build:ts` first');
  process.exit(1);
}
const { nativeSourceHash, packageVersion } = require(versionModule);
const hash = nativeSourceHash(root);
const version = packageVersion();
const variantsDir = path.join(root, 'variants');
const manifestFile = path.join(variantsDir, 'manifest.json');
const log = (m) => process.stderr.write(`package: ${m}\n`);

function readManifest(file) {
  try { return JSON.parse(fs.readFileSync(file, 'utf8')); } catch { return null; }
}

function libtorch() {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'find-libtorch.js')], { encoding: 'utf8' });
  if (r.status !== 0) { process.stderr.write(r.stderr); process.exit(1); }
  return JSON.parse(r.stdout);
}

/** Runs prebuildify in dir (its output tree under out); the node-gyp log goes to logFile. */
function prebuildify(dir, out, logFile) {
  const env = { ...process.env };
  // Node's own headers (no download): npm's nodedir setting may not reach a child node-gyp
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  if (!env.CXX && spawnSync('ccache', ['--version']).status === 0) env.CXX = 'ccache g++';
  // prebuildify looks for node-gyp from its working folder (the scratch copy has no node_modules/.bin)
  env.PREBUILD_NODE_GYP = path.join(path.dirname(require.resolve('node-gyp/package.json', { paths: [root] })), 'bin', 'node-gyp.js');
  env.JOBS = env.JOBS || String(os.availableParallelism ? os.availableParallelism() : os.cpus().length);
  const bin = path.join(root, 'node_modules', 'prebuildify', 'bin.js');
  const fd = fs.openSync(logFile, 'w');
  const r = spawnSync(process.execPath, [bin, '--napi', '--strip', '--tag-libc', `--target=${process.versions.node}`, '--out', out],
    { cwd: dir, env, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  if (r.status !== 0) {
    log(`prebuildify failed in ${dir}; last lines of ${logFile}:`);
    process.stderr.write(fs.readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n') + '\n');
    process.exit(1);
  }
}

function checkNoBuildPaths(file, info) {
  if (info.rpath || (info.runpath && info.runpath !== '$ORIGIN')) {
    log(`${file} carries a build-machine path (RPATH ${info.rpath}, RUNPATH ${info.runpath}); only $ORIGIN is allowed`);
    process.exit(1);
  }
}

const lt = libtorch();
const mm = majorMinor(lt.version);
const id = `torch${mm}-${lt.cuda ? `cu${lt.cuda.replace('.', '')}` : 'cpu'}`;
const platform = `${process.platform}-${process.arch}`;
const rel = (f) => path.relative(variantsDir, f).split(path.sep).join('/');
const addonFile = path.join(variantsDir, id, 'prebuilds', platform, 'fisherlens.glibc.node');
const shimFile = path.join(variantsDir, 'shim', 'prebuilds', platform, 'fisherlens_shim.glibc.node');
const old = readManifest(manifestFile);
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'fisherlens-package-'));
const started = Date.now();
try {
  // The shim: tiny, torch-free, rebuilt when missing or its sources changed
  const shimHash = sha256Dir(path.join(root, 'native', 'shim'));
  if (!(args.has('--if-needed') && old && old.shim && old.shim.sourceHash === shimHash && fs.existsSync(shimFile) && sha256(shimFile) === old.shim.sha256)) {
    log('building the shim (native/shim)');
    stageShim(root, path.join(scratch, 'shim'));
    fs.rmSync(path.join(variantsDir, 'shim'), { recursive: true, force: true });
    prebuildify(path.join(scratch, 'shim'), path.join(variantsDir, 'shim'), path.join(scratch, 'shim.log'));
  }
  const shimInfo = inspect(shimFile);
  checkNoBuildPaths(shimFile, shimInfo);

  let entry = old && (old.variants || []).find((v) => v.id === id);
  const fresh = entry && entry.nativeSourceHash === hash && fs.existsSync(addonFile) && sha256(addonFile) === entry.sha256;
  if (!(args.has('--if-needed') && fresh)) {
    log(`building variant ${id} against LibTorch ${lt.version} at ${lt.libDir} (node-gyp via prebuildify, log in ${scratch}/addon.log)`);
    stageAddon(root, path.join(scratch, 'addon'), version);
    fs.rmSync(path.join(variantsDir, id), { recursive: true, force: true });
    prebuildify(path.join(scratch, 'addon'), path.join(variantsDir, id), path.join(scratch, 'addon.log'));
    const info = inspect(addonFile);
    checkNoBuildPaths(addonFile, info);
    entry = {
      id, platform, file: rel(addonFile),
      torch: mm, torchVersion: lt.version, cuda: lt.cuda, cxx11Abi: lt.cxx11Abi,
      needed: info.needed, torchNeeded: torchNeeded(info.needed),
      glibc: info.glibc, glibcxx: info.glibcxx, cxxabi: info.cxxabi,
      sha256: info.sha256, bytes: info.bytes, nativeSourceHash: hash, packageVersion: version,
      builtOn: `${lt.source} LibTorch at ${lt.libDir}`, builtAt: new Date().toISOString(),
    };
    log(`built ${id}: ${(info.bytes / 1e6).toFixed(2)} MB, NEEDED ${entry.torchNeeded.join(' ')}, GLIBC_${info.glibc}, GLIBCXX_${info.glibcxx} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  } else {
    log(`variant ${id} is up to date (native sources ${hash})`);
  }
  const variants = [entry];

  // Variants built elsewhere (release/variants/): kept only while their sources match native/
  const release = readManifest(path.join(releaseDir, 'manifest.json'));
  for (const v of (release && release.variants) || []) {
    if (v.id === id) continue;
    const src = path.join(releaseDir, v.file);
    if (v.nativeSourceHash !== hash) { log(`left out ${v.id}: stale (built from native sources ${v.nativeSourceHash}, native/ is now ${hash}); rebuild it with scripts/cuda-variant.sh`); continue; }
    if (!fs.existsSync(src) || sha256(src) !== v.sha256) { log(`left out ${v.id}: ${src} missing or its sha256 differs from the manifest`); continue; }
    const dest = path.join(variantsDir, v.file);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.copyFileSync(src, dest);
    variants.push(v);
    log(`kept ${v.id} from ${path.relative(root, releaseDir) || releaseDir}`);
  }
  // Anything else in variants/ is left over from an earlier build: remove it so it is not packed
  for (const d of fs.readdirSync(variantsDir)) {
    if (d !== 'shim' && d !== 'manifest.json' && !variants.some((v) => v.id === d)) {
      log(`left out ${d}: not built by this run and not in release/variants`);
      fs.rmSync(path.join(variantsDir, d), { recursive: true, force: true });
    }
  }
  const manifest = {
    format: 1, package: 'fisherlens', version, nativeSourceHash: hash,
    shim: { file: rel(shimFile), sha256: shimInfo.sha256, bytes: shimInfo.bytes, glibc: shimInfo.glibc, sourceHash: shimHash },
    variants,
  };
  fs.writeFileSync(manifestFile, JSON.stringify(manifest, null, 2) + '\n');
  log(`wrote ${path.relative(root, manifestFile)} (${variants.map((v) => v.id).join(', ')})`);

  if (!args.has('--no-pack')) {
    // binding.gyp ships as scripts/binding.gyp: at the package root npm would run node-gyp on install
    const gypCopy = path.join(root, 'scripts', 'binding.gyp');
    fs.copyFileSync(path.join(root, 'binding.gyp'), gypCopy);
    try {
      const out = execFileSync('npm', ['pack', '--json', '--pack-destination', root], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
      const info = JSON.parse(out)[0];
      log(`packed ${info.filename}: ${(info.size / 1e6).toFixed(2)} MB, ${info.entryCount} files`);
    } finally {
      fs.rmSync(gypCopy, { force: true });
    }
  }
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}

function sha256Dir(dir) {
  const h = require('crypto').createHash('sha256');
  for (const f of fs.readdirSync(dir).sort()) h.update(f).update('\0').update(fs.readFileSync(path.join(dir, f))).update('\0');
  return h.digest('hex').slice(0, 16);
}
