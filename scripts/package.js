#!/usr/bin/env node
// `npm run package`: builds the prebuilt variants of scripts/variants.js (torch1.13-cpu against
// Debian's LibTorch; torch2.13-cpu and torch2.14-cu130 against scripts/torch-env.sh's pip torch
// venvs, each when its venv exists) and the torch-free shim with prebuildify in scratch copies
// (the development build/ is untouched), writes variants/manifest.json, and leaves
// fisherlens-<version>.tgz in the repository root.
//   --if-needed     reuse a variant whose binary and native-source hash still match (then only pack)
//   --no-pack       build and write the manifest only
//   --ci            only the variants CI builds and tests (scripts/variants.js `ci`)
//   --variants A,B  exactly these (each one's LibTorch must exist: an error otherwise)
//   --release DIR   variants built elsewhere (default release/variants)
// The set built is the set shipped: anything else in variants/ is removed. Variants built
// elsewhere (on the GPU machine, scripts/cuda-variant.sh) are kept from release/variants/
// (binary + manifest entry, in place of a build of the same id here: they were verified further)
// while their native-source hash matches native/; stale ones are left out with a message. Exits
// non-zero with the reason when a build fails or a binary carries a build-machine path.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync, execFileSync } = require('child_process');
const { stageAddon, stageShim, inspect, sha256, torchNeeded } = require('./gyp-build');
const { majorMinor } = require('./libtorch');
const { VARIANTS, libtorchEnv } = require('./variants');

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

function libtorch(env) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'find-libtorch.js')], { encoding: 'utf8', env });
  if (r.status !== 0) { process.stderr.write(r.stderr); process.exit(1); }
  return JSON.parse(r.stdout);
}

/** This machine, for the manifest's builtOn: OS and CPU model. */
function machine() {
  let osName = `${os.type()} ${os.release()}`;
  try { osName = /^PRETTY_NAME="?([^"\n]*)/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))[1]; } catch { /* keep uname */ }
  const cpu = (os.cpus()[0] || {}).model || 'unknown CPU';
  return `${osName}, ${cpu} (${os.cpus().length} cores)`;
}

/** Runs prebuildify in dir (its output tree under out); the node-gyp log goes to logFile. */
function prebuildify(dir, out, logFile, baseEnv = process.env) {
  const env = { ...baseEnv };
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

const platform = `${process.platform}-${process.arch}`;
const rel = (f) => path.relative(variantsDir, f).split(path.sep).join('/');
const shimFile = path.join(variantsDir, 'shim', 'prebuilds', platform, 'fisherlens_shim.glibc.node');
const old = readManifest(manifestFile);
const explicit = argv.includes('--variants') ? argv[argv.indexOf('--variants') + 1].split(',').filter(Boolean) : null;
for (const id of explicit || []) {
  if (!VARIANTS.some((v) => v.id === id)) { log(`unknown variant ${id} (scripts/variants.js has ${VARIANTS.map((v) => v.id).join(', ')})`); process.exit(2); }
}
const wanted = VARIANTS.filter((v) => (explicit ? explicit.includes(v.id) : !args.has('--ci') || v.ci));
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

  // Variants built elsewhere (release/variants/): kept only while their sources match native/
  const release = readManifest(path.join(releaseDir, 'manifest.json'));
  const kept = [];
  for (const v of (release && release.variants) || []) {
    const src = path.join(releaseDir, v.file);
    if (v.nativeSourceHash !== hash) { log(`left out ${v.id}: stale (built from native sources ${v.nativeSourceHash}, native/ is now ${hash}); rebuild it with scripts/cuda-variant.sh`); continue; }
    if (!fs.existsSync(src) || sha256(src) !== v.sha256) { log(`left out ${v.id}: ${src} missing or its sha256 differs from the manifest`); continue; }
    kept.push(v);
  }

  const variants = [];
  for (const v of wanted) {
    // One built where it was verified further (the GPU machine) wins over a build here
    if (kept.some((k) => k.id === v.id)) continue;
    const env = libtorchEnv(v);
    if (!env) {
      const how = `its venv is missing: bash scripts/torch-env.sh ${v.libtorch.venv} makes it`;
      if (explicit) { log(`cannot build ${v.id}: ${how}`); process.exit(1); }
      log(`left out ${v.id}: ${how}`);
      continue;
    }
    const lt = libtorch(env);
    const mm = majorMinor(lt.version);
    const id = `torch${mm}-${lt.cuda ? `cu${lt.cuda.replace('.', '')}` : 'cpu'}`;
    if (id !== v.id) { log(`${v.id}: the LibTorch at ${lt.libDir} is ${lt.version} (${id}), not what ${v.id} is built against`); process.exit(1); }
    const addonFile = path.join(variantsDir, id, 'prebuilds', platform, 'fisherlens.glibc.node');
    let entry = old && (old.variants || []).find((e) => e.id === id);
    const fresh = entry && entry.nativeSourceHash === hash && entry.torchVersion === lt.version && fs.existsSync(addonFile) && sha256(addonFile) === entry.sha256;
    if (!(args.has('--if-needed') && fresh)) {
      const t0 = Date.now();
      const logFile = path.join(scratch, `${id}.log`);
      log(`building variant ${id} against LibTorch ${lt.version} at ${lt.libDir}, C++${lt.cxxStandard} (node-gyp via prebuildify, log in ${logFile})`);
      const dir = path.join(scratch, id);
      stageAddon(root, dir, version);
      fs.rmSync(path.join(variantsDir, id), { recursive: true, force: true });
      prebuildify(dir, path.join(variantsDir, id), logFile, env);
      // Our own sources build warning-free (LibTorch's headers are -isystem): show any warning
      const warnings = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => /warning:/.test(l));
      if (warnings.length) log(`${id}: ${warnings.length} compiler warning(s):\n${warnings.slice(0, 20).join('\n')}`);
      const info = inspect(addonFile);
      checkNoBuildPaths(addonFile, info);
      entry = {
        id, platform, file: rel(addonFile),
        torch: mm, torchVersion: lt.version, cuda: lt.cuda, cxx11Abi: lt.cxx11Abi, cxxStandard: lt.cxxStandard,
        needed: info.needed, torchNeeded: torchNeeded(info.needed),
        glibc: info.glibc, glibcxx: info.glibcxx, cxxabi: info.cxxabi,
        sha256: info.sha256, bytes: info.bytes, nativeSourceHash: hash, packageVersion: version,
        builtOn: `${machine()}: ${lt.source} LibTorch at ${lt.libDir}${lt.cuda ? ` (CUDA headers: ${process.env.CUDA_HOME || '/usr/local/cuda'})` : ''}`,
        builtAt: new Date().toISOString(),
      };
      log(`built ${id}: ${(info.bytes / 1e6).toFixed(2)} MB, NEEDED ${entry.torchNeeded.join(' ')}, GLIBC_${info.glibc}, GLIBCXX_${info.glibcxx}, ${warnings.length} warnings (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    } else {
      log(`variant ${id} is up to date (native sources ${hash})`);
    }
    // What a user installs to get this LibTorch from pip (the loader's ERR_LOAD names it), and
    // what has been verified where (scripts/variants.js): declared, so refreshed on every run
    entry = { ...entry, pip: v.libtorch === 'system' ? null : `torch==${lt.version.replace(/\+cu\d+$/, '')}`, verified: v.verified };
    variants.push(entry);
  }

  for (const v of kept) {
    const dest = path.join(variantsDir, v.file);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.copyFileSync(path.join(releaseDir, v.file), dest);
    variants.push(v);
    log(`kept ${v.id} from ${path.relative(root, releaseDir) || releaseDir} (verified: ${v.verified || 'not stated'})`);
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
