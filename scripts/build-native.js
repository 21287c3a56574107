#!/usr/bin/env node
// Builds the development addon (test hooks on) with cmake-js (Release) into <out>/Release/fisherlens.node,
// <out> = build/ unless `--out DIR` (CI builds a second one against pip torch 2.13 into its own folder,
// and points FISHERLENS_ADDON at it). Against the LibTorch scripts/find-libtorch.js finds; when that
// differs from the one the folder was configured for, the folder is configured afresh (cmake
// would otherwise keep the old LibTorch).
// --if-needed: skip when the addon is newer than every file under native/ and CMakeLists.txt and
// was built against the LibTorch found now.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const root = path.join(__dirname, '..');
const argv = process.argv.slice(2);
const outDir = argv.includes('--out') ? path.resolve(argv[argv.indexOf('--out') + 1]) : path.join(root, 'build');
const out = path.join(outDir, 'Release', 'fisherlens.node');
const stamp = path.join(outDir, 'fisherlens-libtorch.txt');

function newest(p) {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...fs.readdirSync(p).map((f) => newest(path.join(p, f))));
}

// The LibTorch this build is for: its CMake prefix and C++ standard
const found = spawnSync(process.execPath, [path.join(__dirname, 'find-libtorch.js')], { encoding: 'utf8' });
if (found.status !== 0) {
  process.stderr.write(found.stderr);
  process.exit(1);
}
const lt = JSON.parse(found.stdout);
const want = `${lt.cmakePrefixPath} ${lt.version} C++${lt.cxxStandard}`;
const had = fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').trim() : null;

if (argv.includes('--if-needed') && fs.existsSync(out) && had === want) {
  const src = Math.max(newest(path.join(root, 'native')), newest(path.join(root, 'CMakeLists.txt')));
  if (fs.statSync(out).mtimeMs >= src) process.exit(0);
}
const jobs = String(Math.max(1, require('os').availableParallelism?.() ?? require('os').cpus().length));
const bin = path.join(root, 'node_modules', '.bin', 'cmake-js');
const fresh = had !== want;
console.error(`fisherlens: building the native addon (cmake-js, ${jobs} jobs) against LibTorch ${lt.version} (${lt.source}), C++${lt.cxxStandard}, into ${path.relative(root, outDir) || '.'}` +
  (fresh && had ? ` (configured afresh: it was built for ${had})` : '') + '…');
const t0 = Date.now();
const r = spawnSync(bin, [fresh ? 'rebuild' : 'build', '--out', outDir, '--parallel', jobs, '--log-level', 'warn'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('fisherlens: native build failed. Is LibTorch installed? Run scripts/setup.sh (see README).');
  process.exit(r.status ?? 1);
}
fs.writeFileSync(stamp, want + '\n');
console.error(`fisherlens: native build took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
