/**
 * `npm run test:slow`: the torch2.14-cu130 variant as a user with pip's CUDA torch gets it, on a
 * machine with or without a GPU. The npm script makes the torch 2.14.1 CUDA 13.0 venv first
 * (scripts/torch-env.sh 2.14-cu130, ~5.5 GB; reused when it exists) and runs this file with
 * FISHERLENS_PYTHON set to its python. Here: `npm run package`'s builder makes every variant whose
 * venv exists (torch2.14-cu130 compiled against the wheel's LibTorch with C++20 and the CUDA
 * toolkit's headers), the tarball goes into a fresh folder with no compiler, LD_LIBRARY_PATH unset
 * and that venv first on PATH, and the loader must choose torch2.14-cu130 by itself; then the same
 * checks as test/package.test.ts against the Python references run by the venv's torch 2.14.1.
 * Not in `npm test` (its file name does not end in .test.js): the venv is 5.5 GB and the CUDA
 * variant one more compile.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { packageRoot, packageVersion } from '../../lib/util/version';
import { PY } from '../helpers/python';
import { assertReferences, installTarball, pythonReferences, References, runCheck, userEnv } from '../helpers/package-install';

const ID = 'torch2.14-cu130';
const root = packageRoot();
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fisherlens-cuda-test-')));
const app = path.join(tmp, 'app');
const installed = path.join(app, 'node_modules', 'fisherlens');
const cache = path.join(tmp, 'cache');
const tarball = path.join(root, `fisherlens-${packageVersion()}.tgz`);
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { VARIANTS } = require(path.join(root, 'scripts', 'variants.js')) as { VARIANTS: Array<{ id: string; verified: string }> };

let refs: References;
test.before(() => {
  if (!/venv\/2\.14-cu130\/bin\/python$/.test(PY)) throw new Error(`run through \`npm run test:slow\` (FISHERLENS_PYTHON must be the 2.14-cu130 venv's python, is ${PY})`);
  refs = pythonReferences(tmp);
  const t0 = Date.now();
  execFileSync(process.execPath, [path.join(root, 'scripts', 'package.js'), '--if-needed'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  console.error(`package-cuda: npm run package (--if-needed) took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  installTarball(app, tarball, userEnv(PY, cache));
});

test.after.always(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.serial(`${ID}: built against the CUDA wheel's LibTorch with C++20, its manifest entry says what was verified where`, (t) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'variants', 'manifest.json'), 'utf8')) as { variants: Array<Record<string, unknown>> };
  const v = manifest.variants.find((e) => e.id === ID);
  t.truthy(v, `no ${ID} in the manifest`);
  t.is(v!.cuda, '13.0');
  t.regex(String(v!.torchVersion), /^2\.14\.1/);
  t.is(v!.cxxStandard, 20);
  t.is(v!.verified, VARIANTS.find((e) => e.id === ID)!.verified);
  t.deepEqual(v!.torchNeeded, ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so']);
  const dyn = execFileSync('readelf', ['-dW', path.join(installed, 'variants', String(v!.file))]).toString();
  t.false(/\(RPATH\)/.test(dyn));
  t.false(dyn.includes('/usr/local/cuda') || dyn.includes('/root/') || dyn.includes(root), 'names a build-machine folder');
});

test.serial(`${ID} loads with no compiler and no LD_LIBRARY_PATH from the venv first on PATH; \`fisherlens info\` shows CUDA 13.0, no GPU here; every CPU path runs`, (t) => {
  const info = spawnSync(process.execPath, [path.join(installed, 'dist', 'lib', 'cli', 'main.js'), 'info'], { cwd: app, env: userEnv(PY, cache), encoding: 'utf8' });
  t.is(info.status, 0, info.stderr);
  const b = JSON.parse(info.stdout) as { variant: string; libtorch: { cuda: string | null; path: string }; cuda: boolean; cudaDeviceCount: number; torchVersion: string };
  t.is(b.variant, ID);
  t.is(b.libtorch.cuda, '13.0');
  t.true(b.libtorch.path.startsWith(fs.realpathSync(path.dirname(path.dirname(PY))) + path.sep), `LibTorch from ${b.libtorch.path}, not the venv`);
  t.is(b.torchVersion, '2.14.1');
  // The CUDA LibTorch without a GPU: cuda false and no device (with one, cuda true: scripts/cuda-variant.sh)
  const gpu = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' }).status === 0;
  t.is(b.cuda, gpu);
  if (!gpu) t.is(b.cudaDeviceCount, 0);
  const got = runCheck(installed, refs, userEnv(PY, cache), app);
  t.is(got.variant, ID);
  assertReferences(t, got, refs);
});
