/**
 * The npm package as a user gets it: `npm run package`'s tarball installed into a fresh folder
 * with no compiler (CC/CXX=/bin/false) and LD_LIBRARY_PATH unset. Nothing may be compiled, the
 * prebuilt torch1.13-cpu variant must load through the shim, and its forward, exact Fisher and
 * FGSM must agree with the development build running in this process (same LibTorch, same
 * seeded weights). A broken variant in the manifest is passed over with its reason; a LibTorch no
 * variant fits (a fake folder reporting 2.99) gives the listed-candidates error, and
 * `npx fisherlens build` then compiles a working local build (ccache makes that compile cheap
 * after `npm run package` compiled the same sources with the same command lines).
 */
import test from 'ava';
import { execFileSync, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { attack, backend, fisherExact, manualSeed, Model, Tensor } from '../lib';
import { packageRoot, packageVersion } from '../lib/util/version';

const root = packageRoot();
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fisherlens-pkg-test-')));
const app = path.join(tmp, 'app');
const installed = path.join(app, 'node_modules', 'fisherlens');
const cache = path.join(tmp, 'cache');
const tarball = path.join(root, `fisherlens-${packageVersion()}.tgz`);

/** The user's environment: no compiler, no LD_LIBRARY_PATH, a private cache folder. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CC: '/bin/false', CXX: '/bin/false', FISHERLENS_CACHE: cache };
  for (const k of ['LD_LIBRARY_PATH', 'FISHERLENS_ADDON', 'FISHERLENS_TORCH', 'LIBTORCH']) delete env[k];
  return { ...env, ...extra };
}

// The same small computation in the installed package (child) and in this process (dev build)
const COMPUTE = `
const f = require(process.argv[1]);
(async () => {
  f.manualSeed(7);
  const m = f.Model.create({ arch: 'small-cnn', inChannels: 1, inputSize: 28, numClasses: 10 });
  const x = f.Tensor.from(Float32Array.from({ length: 4 * 784 }, (_, i) => ((i * 37) % 101) / 100), [4, 1, 28, 28]);
  const y = f.Tensor.from(new BigInt64Array([0n, 1n, 2n, 3n]), [4]);
  const logits = Array.from((await m.forward(x)).toArray());
  const fe = await f.fisherExact(m, x);
  const a = await f.attack(m, x, y, { kind: 'fgsm', epsilon: 0.1 });
  const xAdv = Array.from(a.xAdv.toArray());
  const b = f.backend();
  process.stdout.write(JSON.stringify({ variant: b.variant, libtorch: b.libtorch, addonPath: b.addonPath,
    logits, lambdaMax: Array.from(fe.lambdaMax), trace: Array.from(fe.trace), xAdv }));
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });`;

interface Computed { variant: string; libtorch: { path: string; version: string; cuda: string | null }; addonPath: string; logits: number[]; lambdaMax: number[]; trace: number[]; xAdv: number[] }

async function computeHere(): Promise<Computed> {
  manualSeed(7);
  const m = Model.create({ arch: 'small-cnn', inChannels: 1, inputSize: 28, numClasses: 10 });
  const x = Tensor.from(Float32Array.from({ length: 4 * 784 }, (_, i) => ((i * 37) % 101) / 100), [4, 1, 28, 28]);
  const y = Tensor.from(new BigInt64Array([0n, 1n, 2n, 3n]), [4]);
  const logits = Array.from((await m.forward(x)).toArray() as Float32Array);
  const fe = await fisherExact(m, x);
  const a = await attack(m, x, y, { kind: 'fgsm', epsilon: 0.1 });
  const b = backend();
  return { variant: b.variant, libtorch: b.libtorch, addonPath: b.addonPath, logits, lambdaMax: Array.from(fe.lambdaMax), trace: Array.from(fe.trace), xAdv: Array.from(a.xAdv.toArray() as Float32Array) };
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, cwd = app): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [file, ...args], { cwd, env, encoding: 'utf8', timeout: 10 * 60_000 });
}

function computeIn(pkgDir: string, env: NodeJS.ProcessEnv): Computed {
  const r = spawnSync(process.execPath, ['-e', COMPUTE, pkgDir], { cwd: app, env, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`the installed package failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Computed;
}

function maxRelDiff(a: number[], b: number[]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-6));
  return m;
}

let installSeconds = 0;
test.before(() => {
  // Packs the current dist/ with the variant `npm test`'s pretest built (compiles only if stale)
  execFileSync(process.execPath, [path.join(root, 'scripts', 'package.js'), '--if-needed'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const t0 = Date.now();
  // From npm's cache when it has the dependencies' metadata (npm ci stores only their tarballs),
  // else the registry may fill it in
  const install = (mode: string): boolean => spawnSync('npm', ['install', tarball, mode, '--no-audit', '--no-fund', '--foreground-scripts'],
    { cwd: app, env: userEnv(), stdio: ['ignore', 'ignore', 'pipe'] }).status === 0;
  if (!install('--offline') && !install('--prefer-offline')) throw new Error(`npm install ${tarball} failed (offline and with the registry)`);
  installSeconds = (Date.now() - t0) / 1000;
});

test.after.always(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial('the installed package has no install script, no binding.gyp at its root, and nothing was compiled', (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')) as { scripts?: Record<string, string>; os: string[]; cpu: string[] };
  for (const s of ['preinstall', 'install', 'postinstall']) t.is(pkg.scripts?.[s], undefined, s);
  t.deepEqual([pkg.os, pkg.cpu], [['linux'], ['x64']]);
  t.false(fs.existsSync(path.join(installed, 'binding.gyp')));
  t.false(fs.existsSync(path.join(installed, 'build')));
  t.true(fs.existsSync(path.join(installed, 'scripts', 'binding.gyp')));
  t.log(`npm install of the tarball: ${installSeconds.toFixed(1)} s`);
});

test.serial('shipped binaries carry no build-machine path (readelf: RUNPATH $ORIGIN only)', (t) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'variants', 'manifest.json'), 'utf8')) as { shim: { file: string }; variants: Array<{ id: string; file: string; nativeSourceHash: string }> };
  const files = [manifest.shim.file, ...manifest.variants.map((v) => v.file)].map((f) => path.join(installed, 'variants', f));
  t.true(manifest.variants.some((v) => v.id === 'torch1.13-cpu'));
  for (const f of files) {
    const dyn = execFileSync('readelf', ['-dW', f]).toString();
    t.false(/\(RPATH\)/.test(dyn), `${f} has an RPATH`);
    const runpath = /\(RUNPATH\)\s+Library runpath: \[([^\]]*)\]/.exec(dyn);
    t.true(runpath === null || runpath[1] === '$ORIGIN', `${f}: RUNPATH ${runpath?.[1]}`);
    t.false(dyn.includes('/usr/lib') || dyn.includes(root), `${f} names a build-machine folder`);
  }
});

test.serial('the installed package loads torch1.13-cpu with no LD_LIBRARY_PATH and computes what the dev build computes', async (t) => {
  const got = computeIn(installed, userEnv());
  t.is(got.variant, 'torch1.13-cpu');
  // the child-process probe's verdict is cached: a second process loads without probing again
  const verdicts = (): Array<{ ok: boolean; reason: string }> => fs.readdirSync(path.join(cache, 'probes')).map((f) => JSON.parse(fs.readFileSync(path.join(cache, 'probes', f), 'utf8')));
  t.deepEqual(verdicts().map((v) => v.ok), [true]);
  t.is(computeIn(installed, userEnv()).variant, 'torch1.13-cpu');
  t.is(verdicts().length, 1);
  t.is(got.addonPath, path.join(installed, 'variants', 'torch1.13-cpu', 'prebuilds', 'linux-x64', 'fisherlens.glibc.node'));
  t.is(got.libtorch.path, '/usr/lib/x86_64-linux-gnu');
  t.regex(got.libtorch.version, /^1\.13/);
  const ref = await computeHere();
  t.is(ref.variant, 'source');
  // Same LibTorch kernels and the same seeded weights; only FisherLens's own C++ differs in
  // compiler flags (cmake-js -O3 with PCH vs node-gyp -O2), which may reorder float32 sums:
  // ~1e-7 relative per op, so 1e-4 bounds logits and the float64 eigen-solve of λ_max/trace.
  t.true(maxRelDiff(got.logits, ref.logits) < 1e-4, `logits ${maxRelDiff(got.logits, ref.logits)}`);
  t.true(maxRelDiff(got.lambdaMax, ref.lambdaMax) < 1e-4, `λ_max ${maxRelDiff(got.lambdaMax, ref.lambdaMax)}`);
  t.true(maxRelDiff(got.trace, ref.trace) < 1e-4, `trace ${maxRelDiff(got.trace, ref.trace)}`);
  // FGSM x_adv = clip(x ± ε): a flipped gradient sign would move a pixel by 2ε = 0.2
  t.true(got.xAdv.every((v, i) => Math.abs(v - ref.xAdv[i]) < 1e-5));
});

test.serial('a broken variant in the manifest is passed over with its reason', (t) => {
  // A copy of the installed package whose manifest lists a damaged binary first
  const copy = path.join(app, 'node_modules', 'fisherlens-broken');
  fs.cpSync(installed, copy, { recursive: true });
  const mf = path.join(copy, 'variants', 'manifest.json');
  const manifest = JSON.parse(fs.readFileSync(mf, 'utf8')) as { variants: Array<Record<string, unknown>> };
  const good = manifest.variants.find((v) => v.id === 'torch1.13-cpu') as Record<string, unknown>;
  const junk = Buffer.from('not an ELF file\n');
  fs.mkdirSync(path.join(copy, 'variants', 'broken'), { recursive: true });
  fs.writeFileSync(path.join(copy, 'variants', 'broken', 'fisherlens.node'), junk);
  const sha = require('crypto').createHash('sha256').update(junk).digest('hex') as string;
  manifest.variants.unshift({ ...good, id: 'torch1.13-broken', file: 'broken/fisherlens.node', sha256: sha, bytes: junk.length });
  fs.writeFileSync(mf, JSON.stringify(manifest));
  const r = run(path.join(copy, 'dist', 'lib', 'cli', 'main.js'), ['info'], userEnv());
  t.is(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { variant: string; skipped: string[] };
  t.is(info.variant, 'torch1.13-cpu');
  t.is(info.skipped.length, 1);
  t.regex(info.skipped[0], /^variant torch1\.13-broken × LibTorch 1\.13.* does not load: .*(invalid ELF header|file too short)/);
});

function fakeLibTorch(dir: string): void {
  // LibTorch 2.99 by its build-version; its libraries are Debian's (hard links, or copies across
  // file systems) so that `fisherlens build` can really compile and load against it
  const sys = '/usr/lib/x86_64-linux-gnu';
  fs.mkdirSync(path.join(dir, 'lib'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'share', 'cmake', 'Torch'), { recursive: true });
  for (const n of ['c10', 'torch_cpu', 'torch']) {
    const real = fs.realpathSync(path.join(sys, `lib${n}.so.1.13`));
    const dest = path.join(dir, 'lib', `lib${n}.so.1.13`);
    try { fs.linkSync(real, dest); } catch { fs.copyFileSync(real, dest); }
    fs.symlinkSync(`lib${n}.so.1.13`, path.join(dir, 'lib', `lib${n}.so`));
  }
  fs.symlinkSync('/usr/include', path.join(dir, 'include'));
  fs.copyFileSync(path.join(sys, 'cmake', 'Torch', 'TorchConfig.cmake'), path.join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'));
  fs.writeFileSync(path.join(dir, 'build-version'), '2.99.0\n');
}

test.serial('a LibTorch no variant fits lists every candidate; `npx fisherlens build` then makes a working build', async (t) => {
  t.timeout(20 * 60_000);
  const fake = path.join(tmp, 'libtorch-2.99');
  fakeLibTorch(fake);
  const cli = path.join(installed, 'dist', 'lib', 'cli', 'main.js');
  const env = userEnv({ FISHERLENS_TORCH: fake });
  const r = run(cli, ['info'], env);
  t.is(r.status, 1);
  t.regex(r.stderr, /ERR_LOAD: .*no native addon fits/);
  t.regex(r.stderr, /variant torch1\.13-cpu × LibTorch 2\.99\.0 at [^ ]*libtorch-2\.99\/lib .*: needs LibTorch 1\.13\.x, this one is 2\.99\.0/);
  t.regex(r.stderr, /npx fisherlens build/);

  // Without a compiler the build says what is missing
  const noCxx = spawnSync('npx', ['--offline', 'fisherlens', 'build'], { cwd: app, env, encoding: 'utf8' });
  t.is(noCxx.status, 1);
  t.regex(noCxx.stderr, /ERR_BUILD: fisherlens build: missing a C\+\+17 compiler \(CXX=\/bin\/false does not run\)/);

  const cxx = spawnSync('ccache', ['--version']).status === 0 ? 'ccache g++' : 'g++';
  const t0 = Date.now();
  const b = spawnSync('npx', ['--offline', 'fisherlens', 'build', '--json'], { cwd: app, env: { ...env, CXX: cxx, CC: 'gcc' }, encoding: 'utf8', timeout: 20 * 60_000 });
  t.is(b.status, 0, b.stderr.slice(-3000));
  t.log(`npx fisherlens build (${cxx}): ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  t.regex(b.stderr, /fisherlens build: compiling/);
  const built = JSON.parse(b.stdout) as { file: string; libtorch: { path: string; version: string } };
  t.is(built.libtorch.version, '2.99.0');
  t.true(built.file.startsWith(path.join(cache, 'builds') + path.sep));

  const got = computeIn(installed, env);
  t.is(got.variant, 'source');
  t.is(got.addonPath, built.file);
  t.is(got.libtorch.path, path.join(fake, 'lib'));
  const ref = await computeHere();
  // same tolerance and reason as the prebuilt comparison above
  t.true(maxRelDiff(got.logits, ref.logits) < 1e-4);
  t.true(maxRelDiff(got.lambdaMax, ref.lambdaMax) < 1e-4);
});

test.serial('the packer keeps a variant built elsewhere while its native sources match, and leaves a stale one out with a message', (t) => {
  // runs after the installs above (they packed already); restores variants/ at the end
  const release = path.join(tmp, 'release');
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'variants', 'manifest.json'), 'utf8')) as { nativeSourceHash: string; variants: Array<Record<string, unknown> & { id: string; file: string }> };
  const cpu = manifest.variants.find((v) => v.id === 'torch1.13-cpu')!;
  const copyFile = 'torch1.13-copy/prebuilds/linux-x64/fisherlens.glibc.node';
  fs.mkdirSync(path.dirname(path.join(release, copyFile)), { recursive: true });
  fs.copyFileSync(path.join(root, 'variants', cpu.file), path.join(release, copyFile));
  fs.writeFileSync(path.join(release, 'manifest.json'), JSON.stringify({ format: 1, variants: [
    { ...cpu, id: 'torch9.9-cu999', file: 'torch9.9-cu999/x.node', nativeSourceHash: 'deadbeefdeadbeef' },
    { ...cpu, id: 'torch1.13-copy', file: copyFile },
  ] }));
  const pack = (extra: string[]): SpawnSyncReturns<string> => spawnSync(process.execPath, [path.join(root, 'scripts', 'package.js'), '--if-needed', '--no-pack', ...extra], { cwd: root, encoding: 'utf8' });
  const ids = (): string[] => (JSON.parse(fs.readFileSync(path.join(root, 'variants', 'manifest.json'), 'utf8')) as { variants: Array<{ id: string }> }).variants.map((v) => v.id);
  try {
    const r = pack(['--release', release]);
    t.is(r.status, 0, r.stderr);
    t.regex(r.stderr, new RegExp(`left out torch9\\.9-cu999: stale \\(built from native sources deadbeefdeadbeef, native/ is now ${manifest.nativeSourceHash}\\)`));
    t.regex(r.stderr, /kept torch1\.13-copy from /);
    t.deepEqual(ids(), ['torch1.13-cpu', 'torch1.13-copy']);
    t.true(fs.existsSync(path.join(root, 'variants', copyFile)));
  } finally {
    const back = pack([]);
    t.regex(back.stderr, /left out torch1\.13-copy: not built by this run/);
    t.false(ids().includes('torch1.13-copy'));
    t.true(ids().includes('torch1.13-cpu'));
  }
});
