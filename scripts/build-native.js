#!/usr/bin/env node
// Builds the addon with cmake-js (Release) into build/Release/fisherlens.node.
// --if-needed: skip when the addon is newer than every file under native/ and CMakeLists.txt.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const root = path.join(__dirname, '..');
const out = path.join(root, 'build', 'Release', 'fisherlens.node');

function newest(p) {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...fs.readdirSync(p).map((f) => newest(path.join(p, f))));
}

if (process.argv.includes('--if-needed') && fs.existsSync(out)) {
  const src = Math.max(newest(path.join(root, 'native')), newest(path.join(root, 'CMakeLists.txt')));
  if (fs.statSync(out).mtimeMs >= src) process.exit(0);
}
const jobs = String(Math.max(1, require('os').availableParallelism?.() ?? require('os').cpus().length));
const bin = path.join(root, 'node_modules', '.bin', 'cmake-js');
console.error(`fisherlens: building the native addon (cmake-js, ${jobs} jobs)…`);
const r = spawnSync(bin, ['build', '--parallel', jobs, '--log-level', 'warn'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('fisherlens: native build failed. Is LibTorch installed? Run scripts/setup.sh (see README).');
  process.exit(r.status ?? 1);
}
