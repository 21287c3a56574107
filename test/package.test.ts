/**
 * The npm package as a user gets it: `npm run package`'s tarball (the variants CI builds:
 * scripts/variants.js) installed into a fresh folder with no compiler (CC/CXX=/bin/false),
 * LD_LIBRARY_PATH unset and no FisherLens variable, the leg's Python first on PATH. This file runs
 * on each CI leg; the variant it expects is the one for the LibTorch of the development build
 * loaded here (torch1.13-cpu on Debian's leg, torch2.13-cpu on the pip torch 2.13 leg). Nothing
 * may be compiled, that variant must load through the shim, its forward, exact Fisher and FGSM
 * must agree with the development build running in this process (same LibTorch, same seeded
 * weights), and its forward, exact Fisher, PGD and a TRADES step must agree with the Python
 * references run by the leg's Python (test/helpers/package-install.ts). A broken variant in the
 * manifest is passed over with its reason. On Debian's leg only (they build against Debian's
 * LibTorch, whatever the leg): a LibTorch no variant fits (a fake folder reporting 2.99) gives the
 * listed-candidates error, and `npx fisherlens build` then compiles a working local build
 * (ccache makes that compile cheap after `npm run package` compiled the same sources with the
 * same command lines); the packer keeps variants built elsewhere.
 */
import test from 'ava';
import { execFileSync, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { attack, backend, fisherExact, manualSeed, Model, Tensor } from '../lib';
import { packageRoot, packageVersion } from '../lib/util/version';
import { PY } from './helpers/python';
import { installTarball, pythonReferences, References, runCheck, userEnv as installEnv, assertReferences } from './helpers/package-install';
import type { PackageCheck } from './helpers/package-check';

const root = packageRoot();
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fisherlens-pkg-test-')));
const app = path.join(tmp, 'app');
const installed = path.join(app, 'node_modules', 'fisherlens');
const cache = path.join(tmp, 'cache');
const tarball = path.join(root, `fisherlens-${packageVersion()}.tgz`);

/** The user's environment (test/helpers/package-install.ts) with this leg's Python first on PATH. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return installEnv(PY, cache, extra);
}

// This leg: the LibTorch the development build in this process runs on, and its variant's id
const leg = backend().libtorch;
const legMm = /^(\d+\.\d+)/.exec(leg.version)?.[1] ?? 'unknown';
const VARIANT = `torch${legMm}-${leg.cuda ? `cu${leg.cuda.replace('.', '')}` : 'cpu'}`;
const reVariant = VARIANT.replace(/\./g, '\\.');
const DEBIAN_LEG = VARIANT === 'torch1.13-cpu' && leg.path.startsWith('/usr/lib/');

type Computed = PackageCheck['seeded'] & { variant: string; libtorch: { path: string; version: string; cuda: string | null }; addonPath: string };

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

let refs: References;

function computeIn(pkgDir: string, env: NodeJS.ProcessEnv): Computed & { check: PackageCheck } {
  const check = runCheck(pkgDir, refs, env, app);
  return { ...check.seeded, variant: check.variant, libtorch: check.libtorch, addonPath: check.addonPath, check };
}

function maxRelDiff(a: number[], b: number[]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-6));
  return m;
}

let installSeconds = 0;
test.before(() => {
  // The Python references first, before any native op here (test/helpers/package-install.ts)
  refs = pythonReferences(tmp);
  // Packs the current dist/ with the variants `npm test`'s pretest built (compiles only if stale)
  execFileSync(process.execPath, [path.join(root, 'scripts', 'package.js'), '--if-needed', '--ci'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  installSeconds = installTarball(app, tarball, userEnv());
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
  t.true(manifest.variants.some((v) => v.id === VARIANT), `the manifest lacks ${VARIANT}`);
  for (const f of files) {
    const dyn = execFileSync('readelf', ['-dW', f]).toString();
    t.false(/\(RPATH\)/.test(dyn), `${f} has an RPATH`);
    const runpath = /\(RUNPATH\)\s+Library runpath: \[([^\]]*)\]/.exec(dyn);
    t.true(runpath === null || runpath[1] === '$ORIGIN', `${f}: RUNPATH ${runpath?.[1]}`);
    t.false(dyn.includes('/usr/lib') || dyn.includes(root), `${f} names a build-machine folder`);
  }
});

test.serial(`the installed package loads ${VARIANT} with no LD_LIBRARY_PATH and computes what the dev build and the Python references compute`, async (t) => {
  const got = computeIn(installed, userEnv());
  t.is(got.variant, VARIANT);
  // the child-process probe's verdict is cached: a second process loads without probing again
  const verdicts = (): Array<{ ok: boolean; reason: string }> => fs.readdirSync(path.join(cache, 'probes')).map((f) => JSON.parse(fs.readFileSync(path.join(cache, 'probes', f), 'utf8')));
  t.deepEqual(verdicts().map((v) => v.ok), [true]);
  const again = spawnSync(process.execPath, [path.join(installed, 'dist', 'lib', 'cli', 'main.js'), 'info'], { cwd: app, env: userEnv(), encoding: 'utf8' });
  t.is((JSON.parse(again.stdout) as { variant: string }).variant, VARIANT);
  t.is(verdicts().length, 1);
  t.is(got.addonPath, path.join(installed, 'variants', VARIANT, 'prebuilds', 'linux-x64', 'fisherlens.glibc.node'));
  t.is(got.libtorch.path, leg.path);
  t.is(got.libtorch.version, leg.version);
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
  assertReferences(t, got.check, refs);
});

test.serial('a broken variant in the manifest is passed over with its reason', (t) => {
  // A copy of the installed package whose manifest lists a damaged binary first
  const copy = path.join(app, 'node_modules', 'fisherlens-broken');
  fs.cpSync(installed, copy, { recursive: true });
  const mf = path.join(copy, 'variants', 'manifest.json');
  const manifest = JSON.parse(fs.readFileSync(mf, 'utf8')) as { variants: Array<Record<string, unknown>> };
  const good = manifest.variants.find((v) => v.id === VARIANT) as Record<string, unknown>;
  const junk = Buffer.from('not an ELF file\n');
  fs.mkdirSync(path.join(copy, 'variants', 'broken'), { recursive: true });
  fs.writeFileSync(path.join(copy, 'variants', 'broken', 'fisherlens.node'), junk);
  const sha = require('crypto').createHash('sha256').update(junk).digest('hex') as string;
  manifest.variants.unshift({ ...good, id: `${VARIANT}-broken`, file: 'broken/fisherlens.node', sha256: sha, bytes: junk.length });
  fs.writeFileSync(mf, JSON.stringify(manifest));
  const r = run(path.join(copy, 'dist', 'lib', 'cli', 'main.js'), ['info'], userEnv());
  t.is(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { variant: string; skipped: string[] };
  t.is(info.variant, VARIANT);
  // passed over: the broken copy (probed: it does not load) and variants of other LibTorch versions (never probed)
  const probed = info.skipped.filter((s) => / does not load: /.test(s));
  t.is(probed.length, 1, info.skipped.join('\n'));
  t.regex(probed[0], new RegExp(`^variant ${reVariant}-broken × LibTorch ${legMm.replace('.', '\\.')}.* does not load: .*(invalid ELF header|file too short)`));
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

(DEBIAN_LEG ? test.serial : test.serial.skip)('a LibTorch no variant fits lists every candidate; `npx fisherlens build` then makes a working build (Debian\'s leg)', async (t) => {
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

(DEBIAN_LEG ? test.serial : test.serial.skip)('the packer keeps a variant built elsewhere while its native sources match, and leaves a stale one out with a message (Debian\'s leg)', (t) => {
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
  const pack = (extra: string[]): SpawnSyncReturns<string> => spawnSync(process.execPath, [path.join(root, 'scripts', 'package.js'), '--if-needed', '--no-pack', '--ci', ...extra], { cwd: root, encoding: 'utf8' });
  const ids = (): string[] => (JSON.parse(fs.readFileSync(path.join(root, 'variants', 'manifest.json'), 'utf8')) as { variants: Array<{ id: string }> }).variants.map((v) => v.id);
  const built = ids();
  try {
    const r = pack(['--release', release]);
    t.is(r.status, 0, r.stderr);
    t.regex(r.stderr, new RegExp(`left out torch9\\.9-cu999: stale \\(built from native sources deadbeefdeadbeef, native/ is now ${manifest.nativeSourceHash}\\)`));
    t.regex(r.stderr, /kept torch1\.13-copy from /);
    t.deepEqual(ids(), [...built, 'torch1.13-copy']);
    t.true(fs.existsSync(path.join(root, 'variants', copyFile)));
  } finally {
    const back = pack([]);
    t.regex(back.stderr, /left out torch1\.13-copy: not built by this run/);
    t.false(ids().includes('torch1.13-copy'));
    t.true(ids().includes('torch1.13-cpu'));
  }
});
