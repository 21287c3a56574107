'use strict';
// LibTorch discovery, shared by the build (scripts/find-libtorch.js, `fisherlens build`) and the
// run-time loader (lib/binding/loader.ts). Plain CommonJS so binding.gyp can use it before TypeScript is
// compiled. Candidates, in order:
//   1. $FISHERLENS_TORCH, else $LIBTORCH: an unpacked libtorch (lib/, include/, build-version), a
//      pip torch package folder (.../site-packages/torch), a bare lib folder, or /usr for the
//      system library. When one is set it is the only candidate considered (an explicit choice is
//      never overridden).
//   2. a Python torch install, found WITHOUT importing torch (importlib.util.find_spec takes tens
//      of ms; `import torch` seconds): $FISHERLENS_PYTHON alone when set, else python3 on PATH and
//      /usr/bin/python3.
//   3. the system library (Debian's libtorch1.13: /usr/lib/<triplet>/libtorch_cpu.so.1.13).
// Two candidates whose libraries live in one folder, symlinks resolved (Debian's python3-torch links to the system
// library) are reported once.
//
// With a cache folder (the run-time loader passes lib/binding/loader.ts cacheDir()), what a Python
// said about torch and what dpkg said about the system library are remembered in
// <cache>/discovery/, each with the stamps (path, size, mtime) of what decides it: the Python
// command and interpreter, every folder on its sys.path (installing or removing a package changes
// the folder's mtime), the user site folder (even before it exists), the torch folder, its
// version.py and libtorch_cpu; pyenv-style shims also their version files; dpkg's answer the
// library file. A start whose stamps all match spawns no process; `pip install torch`, an apt
// upgrade or another Python on PATH changes a stamp, and that one answer is asked again.
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

/** [path, size, mtime] of a file or folder; [path, -1, -1] when absent (its appearing is a change too). */
function stampOf(p) {
  try { const st = fs.statSync(p); return [p, st.size, st.mtimeMs]; } catch { return [p, -1, -1]; }
}

/**
 * `compute()` → { value, stamps: [paths] } remembered under cacheDir/discovery/<hash of key>.json
 * and reused while every stamp still matches; without a cache folder, computed every time.
 */
function cached(cacheDir, key, compute) {
  if (!cacheDir) return compute().value;
  const file = path.join(cacheDir, 'discovery', `${crypto.createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 32)}.json`);
  try {
    const c = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (JSON.stringify(c.key) === JSON.stringify(key) && c.stamps.every((st) => JSON.stringify(stampOf(st[0])) === JSON.stringify(st))) return c.value;
  } catch { /* not cached yet, or unreadable: ask */ }
  const r = compute();
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify({ key, stamps: r.stamps.map(stampOf), value: r.value }));
    fs.renameSync(tmp, file);
  } catch { /* a read-only cache only costs the question next time */ }
  return r.value;
}

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

/** Debian package version of the system LibTorch (e.g. "1.13.1"), or null; cached against the library file `lib`. */
function debianVersion(soVersion, lib, cacheDir) {
  return cached(cacheDir, ['dpkg', soVersion, lib], () => ({ value: askDpkg(soVersion), stamps: [lib, realpath(lib)] }));
}

function askDpkg(soVersion) {
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
function describe(givenDir, source, hint = {}, cacheDir) {
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
      if (m) version = (libDir.startsWith('/usr/lib/') && debianVersion(m[1], libs.torch_cpu, cacheDir)) || m[1];
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

/**
 * A folder given by the user: a libtorch prefix, a pip torch folder, or a lib folder itself;
 * /usr (or /usr/lib/<triplet>) is the system library (Debian's libtorch-dev), headers included.
 */
function fromFolder(dir, source, cacheDir) {
  if (!exists(dir)) return { source, libDir: dir, why: `${dir} does not exist` };
  const real = realpath(dir);
  if (real === '/usr' || TRIPLETS.some((t) => real === `/usr/lib/${t}`)) return { ...system(cacheDir), source };
  const libDir = exists(path.join(dir, 'lib')) ? path.join(dir, 'lib') : dir;
  const prefix = libDir === dir ? path.dirname(dir) : dir;
  return describe(libDir, source, { prefix }, cacheDir);
}

function system(cacheDir) {
  for (const t of TRIPLETS) {
    const dir = `/usr/lib/${t}`;
    if (!libFile(dir, 'torch_cpu')) continue;
    const d = describe(dir, 'system', { prefix: '/usr' }, cacheDir);
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

// What a Python knows about torch, without importing it, and what decides that answer: its
// interpreter, its sys.path (the current folder left out: discovery must not depend on where it
// runs) and its user site folder
const PY_INFO = [
  'import importlib.util as u, json, site, sys',
  "sys.path[:] = [p for p in sys.path if p and p != '.']",
  "s = u.find_spec('torch')",
  "user = site.getusersitepackages() if site.ENABLE_USER_SITE is not False else ''",
  "print(json.dumps({'torch': s.submodule_search_locations[0] if s and s.submodule_search_locations else '', 'exe': sys.executable, 'path': sys.path, 'user': user}))",
].join('\n');

/** The environment that decides which Python a command runs and where it looks. */
const PY_ENV = ['PATH', 'PYTHONPATH', 'PYTHONHOME', 'PYTHONUSERBASE', 'PYTHONNOUSERSITE', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'PYENV_VERSION', 'PYENV_ROOT', 'HOME'];

/** The file a command runs (PATH searched as the shell does), or null. */
function which(cmd, env) {
  if (cmd.includes('/')) return exists(cmd) ? path.resolve(cmd) : null;
  for (const d of (env.PATH || '').split(':')) {
    const f = path.join(d || '.', cmd);
    try { fs.accessSync(f, fs.constants.X_OK); if (fs.statSync(f).isFile()) return f; } catch { /* next */ }
  }
  return null;
}

/** Whether a file is a script (#!): a shim (pyenv, asdf) that picks its Python from version files. */
function isScript(f) {
  try { const fd = fs.openSync(f, 'r'); const b = Buffer.alloc(2); fs.readSync(fd, b, 0, 2, 0); fs.closeSync(fd); return b.toString() === '#!'; } catch { return false; }
}

/** The version files a shim may read: .python-version in the current folder and its parents, and pyenv's global one. */
function shimFiles(env) {
  const out = [];
  for (let d = process.cwd(); ; d = path.dirname(d)) {
    out.push(path.join(d, '.python-version'));
    if (path.dirname(d) === d) break;
  }
  out.push(path.join(env.PYENV_ROOT || path.join(env.HOME || os.homedir(), '.pyenv'), 'version'));
  return out;
}

/** What `py` says about torch: { torch: folder or '', stamps } (null when it does not run). */
function askPython(py, env) {
  let info;
  try {
    info = JSON.parse(execFileSync(py, ['-c', PY_INFO], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 30000, env }).toString());
  } catch {
    return { value: null, stamps: [] };
  }
  const stamps = [info.exe, realpath(info.exe), ...info.path, ...(info.user ? [info.user] : [])];
  if (info.torch) stamps.push(info.torch, path.join(info.torch, 'version.py'), path.join(info.torch, 'lib'), path.join(info.torch, 'lib', 'libtorch_cpu.so'));
  return { value: info.torch, stamps };
}

function python(py, env = process.env, cacheDir) {
  const source = `python (${py})`;
  let dir;
  const file = which(py, env);
  if (!file) return { source, libDir: '', why: `${py} not runnable` };
  const script = isScript(file);
  const key = ['python', py, file, PY_ENV.map((k) => env[k] ?? null), script ? process.cwd() : null];
  dir = cached(cacheDir, key, () => {
    const r = askPython(py, env);
    return { value: r.value, stamps: [file, realpath(file), ...(script ? shimFiles(env) : []), ...r.stamps] };
  });
  if (dir === null) return { source, libDir: '', why: `${py} not runnable` };
  if (!dir) return { source, libDir: '', why: `${py} has no torch package` };
  const vp = readVersionPy(path.join(dir, 'version.py')) || {};
  return describe(path.join(dir, 'lib'), source, { prefix: dir, version: vp.version, cuda: vp.cuda }, cacheDir);
}

/**
 * Every LibTorch candidate: { found: [descriptions], rejected: [{ source, libDir, why }] }.
 * `env` defaults to process.env; `opts.cacheDir`: remember the Pythons' and dpkg's answers there
 * (see the file comment).
 */
function candidates(env = process.env, opts = {}) {
  const cacheDir = opts.cacheDir;
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
    add(fromFolder(path.resolve(explicit[1]), `${explicit[0]}=${explicit[1]}`, cacheDir));
    rejected.push({ source: 'python, system', libDir: '', why: `not considered: ${explicit[0]} is set` });
    return { found, rejected };
  }
  for (const py of pythons(env)) add(python(py, env, cacheDir));
  add(system(cacheDir));
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

/**
 * The C++ standard (17 or 20) to compile against a LibTorch with headers: what its headers demand
 * (torch/all.h and ATen/ATen.h say "#error C++<N> or later compatible compiler is required": 14 in
 * 1.13, 17 in 2.x up to 2.13, 20 from 2.14), never below 17 (FisherLens's own sources use C++17).
 * Without readable headers, the version decides: 20 from 2.14 on. Both builds (CMakeLists.txt
 * and binding.gyp, through find-libtorch.js --std) take it from here.
 */
function cxxStandard(c) {
  let need = 0;
  for (const dir of c.includeDirs || []) {
    for (const f of ['torch/all.h', 'ATen/ATen.h']) {
      try {
        const m = /#error C\+\+(\d+) or later/.exec(fs.readFileSync(path.join(dir, f), 'utf8'));
        if (m) need = Math.max(need, Number(m[1]));
      } catch { /* not in this include folder */ }
    }
  }
  if (!need) {
    const m = /^(\d+)\.(\d+)/.exec(c.version || '');
    need = m && (Number(m[1]) > 2 || (Number(m[1]) === 2 && Number(m[2]) >= 14)) ? 20 : 17;
  }
  return Math.max(17, need);
}

/** "major.minor" of a version string ("2.1.0+cu121" → "2.1"). */
function majorMinor(v) {
  const m = /^(\d+)\.(\d+)/.exec(v || '');
  return m ? `${m[1]}.${m[2]}` : null;
}

module.exports = { candidates, describe, fromFolder, cxx11Abi, cxxStandard, majorMinor, pythonWithTorch, TORCH_LIBS };
