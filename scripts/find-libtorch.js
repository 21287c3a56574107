#!/usr/bin/env node
// Finds LibTorch for both builds (cmake-js and node-gyp) with the discovery the run-time loader
// uses (scripts/libtorch.js): $FISHERLENS_TORCH or $LIBTORCH, a Python torch install (found
// without importing torch), the system library (Debian's libtorch-dev). A build needs headers:
// the first candidate that ships them (include/ and share/cmake/Torch) is taken.
// Prints JSON (default), or one field for binding.gyp: --cmake-prefix | --include | --libdir |
// --isystem | --libs | --abi | --std | --cuda | --version. Exits 1 with every candidate tried and the fix when none fits.
'use strict';
const fs = require('fs');
const path = require('path');
const { candidates, cxx11Abi, cxxStandard } = require('./libtorch');

function find() {
  const { found, rejected } = candidates();
  const tried = rejected.map((r) => `${r.source}${r.libDir ? ` (${r.libDir})` : ''}: ${r.why}`);
  for (const c of found) {
    if (c.includeDirs) return { ok: true, ...c, tried };
    tried.push(`${c.source} (${c.libDir}): LibTorch ${c.version} without headers (no share/cmake/Torch/TorchConfig.cmake under ${c.prefix})`);
  }
  return { ok: false, tried };
}

/**
 * Header folders to pass as -isystem: LibTorch's (the compiler's own folders left out: an
 * -isystem /usr/include reorders them and breaks libstdc++'s #include_next), and for a CUDA
 * LibTorch the CUDA toolkit's headers ($CUDA_HOME, else /usr/local/cuda), as CMake's
 * find_package(Torch) adds them.
 */
function isystem(f) {
  const dirs = f.includeDirs.filter((d) => !['/usr/include', '/usr/local/include'].includes(d));
  if (f.cuda) {
    const inc = path.join(process.env.CUDA_HOME || process.env.CUDA_PATH || '/usr/local/cuda', 'include');
    if (fs.existsSync(path.join(inc, 'cuda_runtime_api.h'))) dirs.push(fs.realpathSync(inc));
  }
  return dirs;
}

const found = find();
if (!found.ok) {
  process.stderr.write('fisherlens: no LibTorch with headers found. Tried:\n' + found.tried.map((t) => `  - ${t}\n`).join('') +
    'Fix: Debian/Ubuntu: apt-get install libtorch-dev (scripts/setup.sh does it); or set FISHERLENS_TORCH ' +
    'to an unpacked libtorch (https://pytorch.org, "LibTorch") or to a pip torch folder that has include/ and share/cmake/.\n');
  process.exit(1);
}
const names = ['torch', 'torch_cpu', 'c10', 'torch_cuda', 'c10_cuda'].filter((n) => found.libs[n]);
found.cxx11Abi = cxx11Abi(found.libs);
found.cxxStandard = cxxStandard(found);
const arg = process.argv[2];
const out = {
  '--cmake-prefix': found.cmakePrefixPath,
  '--include': found.includeDirs.join(' '),
  // LibTorch's headers as system headers: their warnings are not FisherLens's to fix
  '--isystem': isystem(found).map((d) => `-isystem ${d}`).join(' '),
  '--libdir': found.libDir,
  '--libs': names.map((l) => `-l${l}`).join(' '),
  '--abi': String(found.cxx11Abi),
  '--std': String(found.cxxStandard),
  '--cuda': found.cuda ? '1' : '0',
  '--version': found.version,
}[arg];
process.stdout.write(arg ? out + '\n' : JSON.stringify(found, null, 2) + '\n');
