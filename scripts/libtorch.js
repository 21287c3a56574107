'use strict';
// LibTorch discovery, shared by the build (scripts/find-libtorch.js, `fisherlens build`) and the
// run-time loader (lib/binding/loader.ts). Plain CommonJS so binding.gyp can use it before TypeScript is
// compiled. Candidates, in order:
//   1. $FISHERLENS_TORCH, else $LIBTORCH: an unpacked libtorch (lib/, include/, build-version), a
//      pip torch package folder (.../site-packages/torch) or a bare lib folder. When one is set it
//      is the only candidate considered (an explicit choice is never overridden).
//   2. a Python torch install, found WITHOUT importing torch (importlib.util.find_spec takes tens
//      of ms; `import torch` seconds): $FISHERLENS_PYTHON alone when set, else python3 on PATH and
//      /usr/bin/python3.
//   3. the system library (Debian's libtorch1.13: /usr/lib/<triplet>/libtorch_cpu.so.1.13).
// Two candidates whose libraries live in one folder, symlinks resolved (Debian's python3-torch links to the system
// library) are reported once.
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

/** The LibTorch libraries the addon links, in the order they must be loaded. */
const TORCH_LIBS = ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch'];
const TRIPLETS = ['x86_64-linux-gnu', 'aarch64-linux-gnu'];

function exists(p) { try { fs.accessSync(p); return true; } catch { return false; } }
function realpath(p) { try { return fs.realpathSync(p); } catch { return p; } }

/** File of lib<name>.so in dir: the unversioned name, else the shortest versioned one. */
function libFile(dir, name) {
  const plain = path.join(dir, `lib${name}.so`);
  if (exists(plain)) return plain;
  let names = [];
  try { names = fs.readdirSync(dir); } catch { return null; }
  const re = new RegExp(`^lib${name}\\.so\\.[0-9.]+$`);
  const hits = names.filter((n) => re.test(n)).sort((a, b) => a.length - b.length);
  return hits.length ? path.join(dir, hits[0]) : null;
}

/** Parses torch/version.py: { version, cuda } (cuda null for a CPU build). */
function readVersionPy(file) {
  try {
    const src = fs.readFileSync(file, 'utf8');
    const v = /^__version__\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m.exec(src);
    const c = /^cuda\s*(?::[^=]*)?=\s*(?:['"]([^'"]+)['"]|None)/m.exec(src);
    return { version: v ? v[1] : null, cuda: c && c[1] ? c[1] : null };
  } catch {
    return null;
  }
}

/** Debian package version of the system LibTorch (e.g. "1.13.1"), or null. */
function debianVersion(soVersion) {
  try {
    const out = execFileSync('dpkg-query', ['-W', '-f', '${Version}', `libtorch${soVersion}`],
      { stdio: ['ignore', 'pipe', 'ignore'], timeout: 10000 }).toString();
    const m = /^(?:\d+:)?([0-9.]+)/.exec(out);
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

/**
 * Describes the LibTorch whose libraries are in libDir: { libDir, libs: {name: file}, version,
 * cuda, prefix, includeDirs, cmakePrefixPath } or { why } when it has no libtorch_cpu.
 * `hint` may carry what the caller already knows (a version.py, the prefix).
 */
function describe(givenDir, source, hint = {}) {
  // The folder the libraries really live in (symlinks resolved): what the loader opens files in
  const first = libFile(givenDir, 'torch_cpu');
  const libDir = first ? path.dirname(realpath(first)) : givenDir;
  const libs = {};
  for (const n of TORCH_LIBS) {
    const f = libFile(libDir, n);
    if (f) libs[n] = f;
  }
  if (!libs.torch_cpu || !libs.c10) return { source, libDir, why: `no libtorch_cpu.so / libc10.so in ${libDir}` };
  const prefix = hint.prefix || path.dirname(libDir);
  let version = hint.version || null;
  let cuda = hint.cuda !== undefined ? hint.cuda : null;
  if (!version) {
    // libtorch zip: <prefix>/build-version; pip: <torch>/version.py; Debian: dpkg, else the SONAME
    const bv = path.join(prefix, 'build-version');
    const vp = readVersionPy(path.join(prefix, 'version.py'));
    if (exists(bv)) version = fs.readFileSync(bv, 'utf8').trim();
    else if (vp && vp.version) { version = vp.version; cuda = vp.cuda; }
    else {
      const m = /\.so\.(\d+\.\d+)/.exec(path.basename(realpath(libs.torch_cpu)));
      if (m) version = (libDir.startsWith('/usr/lib/') && debianVersion(m[1])) || m[1];
    }
  }
  if (cuda === null && libs.torch_cuda) {
    const m = /\+cu(\d+)(\d)$/.exec(version || '');
    cuda = m ? `${m[1]}.${m[2]}` : 'unknown';
  }
  if (!libs.torch_cuda) cuda = null;
  const out = { source, libDir, libs, version: version || 'unknown', cuda, prefix };
  // Build facet (headers and CMake config), when this LibTorch ships them
  const cmake = path.join(prefix, 'share', 'cmake', 'Torch', 'TorchConfig.cmake');
  if (exists(cmake)) {
    out.cmakePrefixPath = path.join(prefix, 'share', 'cmake');
    // Symlinks resolved: the same headers give the same compiler command line (ccache hits)
    out.includeDirs = [path.join(prefix, 'include'), path.join(prefix, 'include', 'torch', 'csrc', 'api', 'include')].map(realpath);
  }
  return out;
}

/** A folder given by the user: a libtorch prefix, a pip torch folder, or a lib folder itself. */
function fromFolder(dir, source) {
  if (!exists(dir)) return { source, libDir: dir, why: `${dir} does not exist` };
  const libDir = exists(path.join(dir, 'lib')) ? path.join(dir, 'lib') : dir;
  const prefix = libDir === dir ? path.dirname(dir) : dir;
  return describe(libDir, source, { prefix });
}

function system() {
  for (const t of TRIPLETS) {
    const dir = `/usr/lib/${t}`;
    if (!libFile(dir, 'torch_cpu')) continue;
    const d = describe(dir, 'system', { prefix: '/usr' });
    if (d.why) continue;
    if (exists(`/usr/lib/${t}/cmake/Torch/TorchConfig.cmake`)) {
      d.cmakePrefixPath = `/usr/lib/${t}/cmake`;
      d.includeDirs = ['/usr/include', '/usr/include/torch/csrc/api/include'];
    }
    return d;
  }
  return { source: 'system', libDir: `/usr/lib/{${TRIPLETS.join(',')}}`, why: 'no libtorch_cpu.so in the system library folders' };
}

const FIND_SPEC = "import importlib.util as u\ns=u.find_spec('torch')\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";

/** The Pythons asked for a torch: $FISHERLENS_PYTHON alone when set, else python3 on PATH and /usr/bin/python3. */
function pythons(env) {
  if (env.FISHERLENS_PYTHON) return [env.FISHERLENS_PYTHON];
  return ['python3', '/usr/bin/python3'];
}

/** The first Python of pythons(env) that has a torch package (the command as given), or null. */
function pythonWithTorch(env = process.env) {
  for (const py of pythons(env)) {
    try {
      if (execFileSync(py, ['-c', FIND_SPEC], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 30000 }).toString().trim()) return py;
    } catch { /* not runnable: the next one */ }
  }
  return null;
}

function python(py) {
  const source = `python (${py})`;
  let dir;
  try {
    dir = execFileSync(py, ['-c', FIND_SPEC], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 30000 }).toString().trim();
  } catch {
    return { source, libDir: '', why: `${py} not runnable` };
  }
  if (!dir) return { source, libDir: '', why: `${py} has no torch package` };
  const vp = readVersionPy(path.join(dir, 'version.py')) || {};
  return describe(path.join(dir, 'lib'), source, { prefix: dir, version: vp.version, cuda: vp.cuda });
}

/**
 * Every LibTorch candidate: { found: [descriptions], rejected: [{ source, libDir, why }] }.
 * `env` defaults to process.env.
 */
function candidates(env = process.env) {
  const found = [];
  const rejected = [];
  const add = (d) => {
    if (d.why) { rejected.push(d); return; }
    const same = found.findIndex((f) => f.libDir === d.libDir);
    if (same < 0) { found.push(d); return; }
    // One LibTorch reached two ways (Debian's python3-torch links to the system library):
    // report it as the system one, which has the headers and the distribution's version
    const keep = d.source === 'system' ? d : found[same];
    const drop = keep === d ? found[same] : d;
    found[same] = keep;
    rejected.push({ source: drop.source, libDir: drop.libDir, why: `same LibTorch as ${keep.source}` });
  };
  const explicit = env.FISHERLENS_TORCH ? ['$FISHERLENS_TORCH', env.FISHERLENS_TORCH]
    : env.LIBTORCH ? ['$LIBTORCH', env.LIBTORCH] : null;
  if (explicit) {
    add(fromFolder(path.resolve(explicit[1]), `${explicit[0]}=${explicit[1]}`));
    rejected.push({ source: 'python, system', libDir: '', why: `not considered: ${explicit[0]} is set` });
    return { found, rejected };
  }
  for (const py of pythons(env)) add(python(py));
  add(system());
  return { found, rejected };
}

/** The libstdc++ ABI a LibTorch was built with (1: C++11 ABI), from its exported symbols. */
function cxx11Abi(libs) {
  try {
    const syms = execFileSync('nm', ['-D', '--defined-only', libs.torch_cpu], { maxBuffer: 1 << 28 }).toString();
    return syms.includes('__cxx11') ? 1 : 0;
  } catch {
    return 1;
  }
}

/** "major.minor" of a version string ("2.1.0+cu121" → "2.1"). */
function majorMinor(v) {
  const m = /^(\d+)\.(\d+)/.exec(v || '');
  return m ? `${m[1]}.${m[2]}` : null;
}

module.exports = { candidates, describe, fromFolder, cxx11Abi, majorMinor, pythonWithTorch, TORCH_LIBS };
