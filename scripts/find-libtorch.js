#!/usr/bin/env node
// Finds LibTorch for both builds (cmake-js and node-gyp). Tries, in order:
//   1. $LIBTORCH — an unpacked libtorch distribution (include/, lib/, share/cmake/Torch)
//   2. a Python torch install (python3 -c 'import torch') that ships its CMake config
//   3. the system CMake config (Debian's libtorch-dev: /usr/lib/<triplet>/cmake/Torch)
// Prints JSON (default), or one field for binding.gyp: --cmake-prefix | --include | --libdir |
// --libs | --abi | --cuda. Exits 1 with every path tried and the fix when nothing is found.
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

function exists(p) { try { fs.accessSync(p); return true; } catch { return false; } }

function fromPrefix(prefix, source) {
  // An install prefix with include/, lib/ and share/cmake/Torch (libtorch zip, pip wheel)
  const cmake = path.join(prefix, 'share', 'cmake', 'Torch', 'TorchConfig.cmake');
  if (!exists(cmake)) return { ok: false, why: `${cmake} not found` };
  const libDir = path.join(prefix, 'lib');
  return {
    ok: true, source, prefix,
    cmakePrefixPath: path.join(prefix, 'share', 'cmake'),
    includeDirs: [path.join(prefix, 'include'), path.join(prefix, 'include', 'torch', 'csrc', 'api', 'include')],
    libDir,
  };
}

function fromSystem() {
  const triplets = ['x86_64-linux-gnu', 'aarch64-linux-gnu'];
  for (const t of triplets) {
    const cmake = `/usr/lib/${t}/cmake/Torch/TorchConfig.cmake`;
    if (exists(cmake)) {
      return {
        ok: true, source: 'system', prefix: '/usr',
        cmakePrefixPath: `/usr/lib/${t}/cmake`,
        includeDirs: ['/usr/include', '/usr/include/torch/csrc/api/include'],
        libDir: `/usr/lib/${t}`,
      };
    }
  }
  return { ok: false, why: `no /usr/lib/{${triplets.join(',')}}/cmake/Torch/TorchConfig.cmake` };
}

function pythonTorch() {
  const tried = [];
  for (const py of ['python3', '/usr/bin/python3']) {
    try {
      const out = execFileSync(py, ['-c', 'import torch,os;print(os.path.dirname(torch.__file__))'],
        { stdio: ['ignore', 'pipe', 'ignore'], timeout: 60000 }).toString().trim();
      const r = fromPrefix(out, `python (${py})`);
      if (r.ok) return { r, tried };
      tried.push(`python torch at ${out}: ${r.why}`);
    } catch {
      tried.push(`${py}: no importable torch`);
    }
  }
  return { r: null, tried };
}

function libs(libDir) {
  const names = ['torch', 'torch_cpu', 'c10'];
  for (const cuda of ['torch_cuda', 'c10_cuda']) {
    if (exists(path.join(libDir, `lib${cuda}.so`))) names.push(cuda);
  }
  return names;
}

function cxx11Abi(libDir) {
  // The libstdc++ ABI LibTorch was built with: look for __cxx11 in its exported symbols
  const so = path.join(libDir, 'libtorch_cpu.so');
  try {
    const syms = execFileSync('nm', ['-D', '--defined-only', so], { maxBuffer: 1 << 28 }).toString();
    return syms.includes('__cxx11') ? 1 : 0;
  } catch {
    return 1;
  }
}

function find() {
  const tried = [];
  if (process.env.LIBTORCH) {
    const r = fromPrefix(process.env.LIBTORCH, '$LIBTORCH');
    if (r.ok) return { ...r, tried };
    tried.push(`$LIBTORCH=${process.env.LIBTORCH}: ${r.why}`);
  } else {
    tried.push('$LIBTORCH: not set');
  }
  const py = pythonTorch();
  tried.push(...py.tried);
  if (py.r) return { ...py.r, tried };
  const sys = fromSystem();
  if (sys.ok) return { ...sys, tried };
  tried.push(`system: ${sys.why}`);
  return { ok: false, tried };
}

const found = find();
if (!found.ok) {
  process.stderr.write('fisherlens: LibTorch not found. Tried:\n' + found.tried.map((t) => `  - ${t}\n`).join('') +
    'Fix: run scripts/setup.sh (Debian: installs libtorch-dev), or set LIBTORCH to an unpacked libtorch.\n');
  process.exit(1);
}
found.libs = libs(found.libDir);
found.cuda = found.libs.includes('torch_cuda');
found.cxx11Abi = cxx11Abi(found.libDir);
const arg = process.argv[2];
const out = {
  '--cmake-prefix': found.cmakePrefixPath,
  '--include': found.includeDirs.join(' '),
  '--libdir': found.libDir,
  '--libs': found.libs.map((l) => `-l${l}`).join(' '),
  '--abi': String(found.cxx11Abi),
  '--cuda': found.cuda ? '1' : '0',
}[arg];
process.stdout.write(arg ? out + '\n' : JSON.stringify(found, null, 2) + '\n');
