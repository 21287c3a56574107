#!/usr/bin/env node
// `npm i fisherlens` install step: use a prebuilt binary from prebuilds/ when one fits this
// platform, else build with node-gyp (binding.gyp) against the LibTorch that
// scripts/find-libtorch.js finds. In a development checkout (a .git folder) it does nothing:
// scripts/setup.sh builds with cmake-js there.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const root = path.join(__dirname, '..');
if (fs.existsSync(path.join(root, '.git')) || process.env.FISHERLENS_SKIP_BUILD) process.exit(0);
try {
  const file = require('node-gyp-build').resolve(root);
  // Probe the binary in a child process: a wrong LibTorch must not crash the installer
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], { stdio: 'inherit' });
  if (probe.status === 0) process.exit(0);
  console.error(`fisherlens: the prebuilt binary ${file} does not load here; building from source`);
} catch {
  console.error('fisherlens: no prebuilt binary for this platform; building from source with node-gyp');
}
const gyp = spawnSync(process.platform === 'win32' ? 'npx.cmd' : 'npx', ['node-gyp', 'rebuild'], { cwd: root, stdio: 'inherit' });
if (gyp.status !== 0) {
  console.error('fisherlens: building the addon failed. Install LibTorch (Debian: apt-get install libtorch-dev) or set LIBTORCH, then run `npm rebuild fisherlens`.');
  process.exit(1);
}
