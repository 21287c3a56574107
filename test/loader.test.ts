/**
 * LibTorch discovery (scripts/libtorch.js) and variant matching (lib/binding/loader.ts) on folders laid
 * out like a pip torch, an unpacked libtorch and a bare lib folder (empty library files: nothing
 * is loaded here, so no LibTorch is needed). The expected values are read off the fixtures.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { discovery, loadOrder, mismatch, VariantEntry } from '../lib/binding/loader';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-loader-')));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

function touch(file: string, text = ''): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

/** A pip torch package folder: torch/version.py and torch/lib with unversioned SONAMEs. */
function pipTorch(name: string, version: string, cuda: string | null): string {
  const dir = path.join(tmp, name, 'site-packages', 'torch');
  touch(path.join(dir, 'version.py'), `__version__ = '${version}'\ndebug = False\ncuda: Optional[str] = ${cuda ? `'${cuda}'` : 'None'}\n`);
  for (const l of ['c10', 'torch_cpu', 'torch', ...(cuda ? ['c10_cuda', 'torch_cuda'] : [])]) touch(path.join(dir, 'lib', `lib${l}.so`));
  touch(path.join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'));
  fs.mkdirSync(path.join(dir, 'include', 'torch', 'csrc', 'api', 'include'), { recursive: true });
  return dir;
}

const v113: VariantEntry = {
  id: 'torch1.13-cpu', platform: `${process.platform}-${process.arch}`, file: 'torch1.13-cpu/x.node', torch: '1.13', torchVersion: '1.13.1',
  cuda: null, cxx11Abi: 1, needed: ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13', 'libc.so.6'],
  torchNeeded: ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13'], glibc: '2.32', glibcxx: '3.4.30', sha256: '0', bytes: 1, nativeSourceHash: '0',
};
const v25cu: VariantEntry = { ...v113, id: 'torch2.5-cu124', torch: '2.5', torchVersion: '2.5.1+cu124', cuda: '12.4',
  torchNeeded: ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so'] };

test('a pip torch folder: version and CUDA from version.py, headers from the wheel, libraries in load order', (t) => {
  const dir = pipTorch('pip-cuda', '2.5.1+cu124', '12.4');
  const d = discovery();
  const { found, rejected } = d.candidates({ FISHERLENS_TORCH: dir });
  t.is(found.length, 1);
  const c = found[0];
  t.is(c.source, `$FISHERLENS_TORCH=${dir}`);
  t.is(c.libDir, path.join(dir, 'lib'));
  t.is(c.version, '2.5.1+cu124');
  t.is(c.cuda, '12.4');
  t.deepEqual(Object.keys(c.libs), ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch']);
  t.deepEqual(c.includeDirs, [path.join(dir, 'include'), path.join(dir, 'include', 'torch', 'csrc', 'api', 'include')]);
  // an explicit choice is the only candidate
  t.deepEqual(rejected.map((r) => r.why), ['not considered: $FISHERLENS_TORCH is set']);
  t.is(d.majorMinor(c.version), '2.5');
});

test('an unpacked libtorch (build-version) and a bare lib folder with versioned SONAMEs only', (t) => {
  const zip = path.join(tmp, 'libtorch');
  touch(path.join(zip, 'build-version'), '2.3.0+cpu\n');
  for (const l of ['c10', 'torch_cpu', 'torch']) touch(path.join(zip, 'lib', `lib${l}.so`));
  const a = discovery().candidates({ LIBTORCH: zip }).found[0];
  t.is(a.version, '2.3.0+cpu');
  t.is(a.cuda, null);
  t.is(a.includeDirs, undefined, 'no share/cmake/Torch: no headers to build with');

  const bare = path.join(tmp, 'bare');
  for (const l of ['c10', 'torch_cpu', 'torch']) touch(path.join(bare, `lib${l}.so.1.13`));
  const b = discovery().candidates({ FISHERLENS_TORCH: bare }).found[0];
  t.is(b.libDir, bare);
  t.is(b.libs.torch_cpu, path.join(bare, 'libtorch_cpu.so.1.13'));
  t.is(b.version, '1.13', 'no build-version or version.py: the SONAME gives major.minor');
});

test('a folder without LibTorch is rejected with the reason', (t) => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty, { recursive: true });
  const r = discovery().candidates({ FISHERLENS_TORCH: empty });
  t.is(r.found.length, 0);
  t.regex(r.rejected[0].why, /no libtorch_cpu\.so \/ libc10\.so in .*empty/);
  const missing = discovery().candidates({ FISHERLENS_TORCH: path.join(tmp, 'nope') });
  t.regex(missing.rejected[0].why, /nope does not exist/);
});

test('variant matching: torch major.minor, CUDA or not, and the LibTorch libraries it needs', (t) => {
  const d = discovery();
  const cu = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-cu-2', '2.5.1+cu124', '12.4') }).found[0];
  const cpu = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-cpu', '2.5.1+cpu', null) }).found[0];
  const cu11 = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-cu11', '2.5.1+cu118', '11.8') }).found[0];
  t.is(mismatch(v113, cu, d.majorMinor), 'needs LibTorch 1.13.x, this one is 2.5.1+cu124');
  t.is(mismatch(v25cu, cu, d.majorMinor), null);
  t.is(mismatch(v25cu, cpu, d.majorMinor), 'needs a CUDA 12.4 LibTorch, this one is CPU-only');
  t.is(mismatch(v25cu, cu11, d.majorMinor), 'needs CUDA 12.4, this LibTorch has CUDA 11.8');
  t.is(mismatch({ ...v25cu, platform: 'darwin-arm64' }, cu, d.majorMinor), `built for darwin-arm64, this is ${process.platform}-${process.arch}`);
  // pip torch 1.13 has unversioned libraries: a variant linked against Debian's SONAMEs cannot bind to them
  const pip113 = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-113', '1.13.1+cpu', null) }).found[0];
  t.is(mismatch(v113, pip113, d.majorMinor), `needs libc10.so.1.13, libtorch_cpu.so.1.13, libtorch.so.1.13, not in ${pip113.libDir}`);
});

test('LibTorch libraries open in dependency order whatever order NEEDED lists them in', (t) => {
  t.deepEqual(loadOrder(['libtorch.so.1.13', 'libtorch_cpu.so.1.13', 'libc10.so.1.13']), ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13']);
  t.deepEqual(loadOrder(['libtorch.so', 'libtorch_cuda.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libc10.so']),
    ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so']);
});

// ---------------- the discovery cache (issue 26: every start spawned Python, 0.25–0.4 s) ----------------

/**
 * A fake Python (a shell script: nothing real is asked) that logs each run to `log` and answers
 * the discovery's question like find_spec would: `site/torch` when that folder exists, its
 * interpreter, its sys.path [site] and no user site.
 */
function fakePython(name: string): { py: string; site: string; log: string } {
  const root = path.join(tmp, name);
  const site = path.join(root, 'site-packages');
  const log = path.join(root, 'runs.log');
  const py = path.join(root, 'bin', 'python3');
  fs.mkdirSync(site, { recursive: true });
  touch(py, `#!/bin/sh\necho run >> '${log}'\nt=''\n[ -d '${site}/torch' ] && t='${site}/torch'\n` +
    `printf '{"torch": "%s", "exe": "%s", "path": ["%s"], "user": ""}\\n' "$t" '${py}' '${site}'\n`);
  fs.chmodSync(py, 0o755);
  return { py, site, log };
}
const runs = (log: string): number => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0);

test('discovery cache: a second discovery asks no Python; pip install, upgrade and uninstall of torch are noticed', (t) => {
  const { py, site, log } = fakePython('fakepy');
  const cacheDir = path.join(tmp, 'cache-a');
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, FISHERLENS_PYTHON: py };
  const ask = () => {
    const r = discovery().candidates(env, { cacheDir });
    return { found: r.found.find((c) => c.source === `python (${py})`), rejected: r.rejected.find((c) => c.source === `python (${py})`) };
  };
  t.is(ask().rejected?.why, `${py} has no torch package`);
  t.is(runs(log), 1);
  t.is(ask().rejected?.why, `${py} has no torch package`);
  t.is(runs(log), 1, 'the second discovery asked no Python');
  // `pip install torch`: a torch folder appears in site-packages (the folder's mtime changes)
  const torch = path.join(site, 'torch');
  touch(path.join(torch, 'version.py'), "__version__ = '2.5.1+cpu'\ncuda: Optional[str] = None\n");
  for (const l of ['c10', 'torch_cpu', 'torch']) touch(path.join(torch, 'lib', `lib${l}.so`));
  t.is(ask().found?.version, '2.5.1+cpu');
  t.is(runs(log), 2);
  t.is(ask().found?.version, '2.5.1+cpu');
  t.is(runs(log), 2, 'cached again');
  // an upgrade in place: version.py and the library change
  touch(path.join(torch, 'version.py'), "__version__ = '2.6.0+cpu'\ncuda: Optional[str] = None\n");
  touch(path.join(torch, 'lib', 'libtorch_cpu.so'), 'a larger library');
  t.is(ask().found?.version, '2.6.0+cpu');
  // `pip uninstall torch`
  fs.rmSync(torch, { recursive: true });
  t.is(ask().rejected?.why, `${py} has no torch package`);
  // another Python (another FISHERLENS_PYTHON) has its own answer
  const other = fakePython('fakepy-2');
  discovery().candidates({ ...env, FISHERLENS_PYTHON: other.py }, { cacheDir });
  t.is(runs(other.log), 1);
  // no cache folder (the build's discovery): asked every time
  const before = runs(log);
  discovery().candidates(env);
  t.is(runs(log), before + 1);
});

// The start of an installed package (dist/, scripts/, native/ and a variants/manifest.json, no
// development build) in a child process whose every spawn is logged by a preloaded hook: the first
// start asks the Python, the second spawns nothing, and after `pip install torch` the next start
// asks again and finds it.
test('discovery cache: the second start of an installed package spawns no process; a changed torch is noticed', (t) => {
  const root = path.join(tmp, 'installed');
  const src = path.join(__dirname, '..', '..');
  fs.mkdirSync(root, { recursive: true });
  for (const part of ['package.json', 'native', path.join('scripts', 'libtorch.js'), path.join('dist', 'lib')]) {
    fs.cpSync(path.join(src, part), path.join(root, part), { recursive: true });
  }
  touch(path.join(root, 'variants', 'manifest.json'), JSON.stringify({ format: 1, version: '0.0.0', nativeSourceHash: '0', shim: { file: 'shim.node', sha256: '0', bytes: 0 }, variants: [] }));
  const hook = path.join(tmp, 'spawn-hook.js');
  touch(hook, `const cp = require('child_process'); const fs = require('fs');
for (const k of ['spawn', 'spawnSync', 'execFile', 'execFileSync', 'exec', 'execSync']) {
  const f = cp[k];
  cp[k] = function (cmd, ...rest) { fs.appendFileSync(process.env.SPAWN_LOG, cmd + '\\n'); return f.call(this, cmd, ...rest); };
}`);
  const { py, site } = fakePython('fakepy-installed');
  const spawnLog = path.join(tmp, 'spawns.log');
  const start = (): { spawned: string[]; found: string } => {
    fs.rmSync(spawnLog, { force: true });
    const script = `const l = require(${JSON.stringify(path.join(root, 'dist', 'lib', 'binding', 'loader.js'))});
try { l.loadAddon(); } catch (e) { if (e.code !== 'ERR_LOAD') throw e; }
const c = l.discovery().candidates(process.env, { cacheDir: l.cacheDir() });
console.log(JSON.stringify(c.found.filter((f) => f.source.startsWith('python')).map((f) => f.version)));`;
    const r = spawnSyncNode(['-r', hook, '-e', script], { SPAWN_LOG: spawnLog, FISHERLENS_PYTHON: py, FISHERLENS_CACHE: path.join(tmp, 'cache-installed'), FISHERLENS_ADDON: '' });
    t.is(r.status, 0, r.stderr);
    return { spawned: fs.existsSync(spawnLog) ? fs.readFileSync(spawnLog, 'utf8').split('\n').filter(Boolean) : [], found: r.stdout.trim() };
  };
  const first = start();
  t.true(first.spawned.includes(py), `the first start asks the Python: ${first.spawned.join(', ')}`);
  const second = start();
  t.deepEqual(second.spawned, [], 'the second start spawns nothing');
  t.is(second.found, '[]');
  touch(path.join(site, 'torch', 'version.py'), "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n");
  for (const l of ['c10', 'torch_cpu', 'torch']) touch(path.join(site, 'torch', 'lib', `lib${l}.so`));
  const third = start();
  t.deepEqual(third.spawned, [py], 'after pip install torch the Python is asked again');
  t.is(third.found, '["2.13.0+cpu"]');
  t.deepEqual(start().spawned, []);
});

function spawnSyncNode(args: string[], env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000, cwd: tmp, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
