/**
 * A user's install of the packed tarball, shared by test/package.test.ts (the variants CI builds)
 * and test/slow/package-cuda.ts (torch2.14-cu130): a fresh folder, no compiler, no
 * LD_LIBRARY_PATH, the user's Python first on PATH (an activated venv, or Debian's python3); then
 * test/helpers/package-check.ts run inside the installed package, and its numbers held against
 * Python references run by that same Python (so on the same LibTorch as the variant):
 * scripts/reference/fisher_ref.py (float64 exact Fisher) and attacks_pgd.py (PGD-20 L∞).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ensureFixture, refFisher, PY as FIXTURE_PY } from '../fisher-fixtures';
import type { PackageCheck } from './package-check';
import { readNpy } from './train-fixtures';

/** Images of the PGD reference (its training takes a few seconds in Python). */
export const PGD_N = 64;

/**
 * The user's environment: no compiler, no LD_LIBRARY_PATH, none of FisherLens's variables, a
 * private cache folder, and `py`'s folder first on PATH (what activating its venv does), so the
 * loader finds that torch as the first python3 with no variable set.
 */
export function userEnv(py: string, cache: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CC: '/bin/false', CXX: '/bin/false', FISHERLENS_CACHE: cache };
  for (const k of ['LD_LIBRARY_PATH', 'FISHERLENS_ADDON', 'FISHERLENS_TORCH', 'LIBTORCH', 'FISHERLENS_PYTHON']) delete env[k];
  env.PATH = `${path.dirname(py)}${path.delimiter}${env.PATH ?? ''}`;
  return { ...env, ...extra };
}

/** npm install of the tarball into app (created), offline from npm's cache if it can; returns seconds. */
export function installTarball(app: string, tarball: string, env: NodeJS.ProcessEnv): number {
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const t0 = Date.now();
  // From npm's cache when it has the dependencies' metadata (npm ci stores only their tarballs),
  // else the registry may fill it in
  const install = (mode: string): boolean => spawnSync('npm', ['install', tarball, mode, '--no-audit', '--no-fund', '--foreground-scripts'],
    { cwd: app, env, stdio: ['ignore', 'ignore', 'pipe'] }).status === 0;
  if (!install('--offline') && !install('--prefer-offline')) throw new Error(`npm install ${tarball} failed (offline and with the registry)`);
  return (Date.now() - t0) / 1000;
}

export interface References {
  /** The Python (and so the torch) that computed them. */
  python: string;
  fixture: string;
  fisher: ReturnType<typeof refFisher>;
  pgdDir: string;
  pgd: { accuracy: number; robust_linf: number };
  pgdXAdv: Float32Array;
}

/**
 * Runs the Python references with test/fisher-fixtures.ts's Python ($FISHERLENS_PYTHON, else
 * Debian's python3): the Fisher fixture and its float64 reference (cached per Python), and the
 * PGD reference into dir. Run these before any native op of the calling process starts (a fork
 * while OpenBLAS works can hang: test/fisher.test.ts).
 */
export function pythonReferences(dir: string): References {
  const fixture = ensureFixture();
  const fisher = refFisher(path.join(fixture, 'tiny32.pt'), path.join(fixture, 'x64.npy'), path.join(fixture, 'v.npy'), 'tiny');
  const pgdDir = path.join(dir, 'pgd-ref');
  const r = spawnSync(FIXTURE_PY, [path.join(__dirname, '..', '..', '..', 'scripts', 'reference', 'attacks_pgd.py'), pgdDir, String(PGD_N)],
    { encoding: 'utf8', timeout: 600_000, env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' } });
  if (r.status !== 0) throw new Error(`attacks_pgd.py failed: ${r.stderr || r.error}`);
  const pgd = JSON.parse(fs.readFileSync(path.join(pgdDir, 'result.json'), 'utf8')) as References['pgd'];
  return { python: FIXTURE_PY, fixture, fisher, pgdDir, pgd, pgdXAdv: readNpy(path.join(pgdDir, 'xadv_linf.npy')).data as Float32Array };
}

/** Runs test/helpers/package-check.ts inside the installed package at pkgDir. */
export function runCheck(pkgDir: string, refs: References, env: NodeJS.ProcessEnv, cwd: string): PackageCheck {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'package-check.js'), pkgDir, refs.fixture, refs.pgdDir],
    { cwd, env, encoding: 'utf8', timeout: 600_000, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`the installed package failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as PackageCheck;
}

function relErr(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

interface Assertions {
  true(v: boolean, msg?: string): void;
  is<T>(a: T, b: T, msg?: string): void;
  log(...v: unknown[]): void;
}

/**
 * The installed variant's numbers against the Python references: the float32 fixture model's
 * logits within 1e-5 of each row's largest logit of the float64 reference (a float32 forward of
 * a small net rounds at ~1e-7 of that scale per layer), its exact Fisher within 1e-4 relative
 * (logit rounding amplified in the eigen-solve of nearly confident outputs: the bound
 * test/fisher.test.ts uses for float32); PGD-20 x_adv to < 1e-5 and robust accuracy exactly
 * (the same LibTorch's kernels on both sides, the bound test/attacks-python.test.ts uses); one
 * TRADES step that ran (one batch, a finite loss, the weights moved).
 */
export function assertReferences(t: Assertions, got: PackageCheck, refs: References): void {
  const n = got.fisher.n;
  // logits: error relative to the row's largest |logit| (a logit near 0 has no relative precision)
  let worst = 0;
  for (let b = 0; b < n; b++) {
    const scale = Math.max(1e-12, ...refs.fisher.logits[b].map(Math.abs));
    for (let c = 0; c < 10; c++) worst = Math.max(worst, Math.abs(got.fisher.logits[b * 10 + c] - refs.fisher.logits[b][c]) / scale);
  }
  t.true(worst < 1e-5, `forward: logits differ from the float64 reference by ${worst} of the row's largest logit`);
  let fw = 0;
  for (let b = 0; b < n; b++) {
    for (const [k, want] of [['lambdaMax', refs.fisher.lambdaMax[b]], ['trace', refs.fisher.trace[b]], ['frobenius', refs.fisher.frobenius[b]]] as const) {
      const e = relErr(got.fisher[k][b], want);
      fw = Math.max(fw, e);
      t.true(e < 1e-4, `exact Fisher ${k} ${b}: ${got.fisher[k][b]} vs float64 ${want}`);
    }
  }
  let dx = 0;
  for (let i = 0; i < refs.pgdXAdv.length; i++) dx = Math.max(dx, Math.abs(got.pgd.xAdv[i] - refs.pgdXAdv[i]));
  t.is(got.pgd.xAdv.length, refs.pgdXAdv.length);
  t.true(dx < 1e-5, `PGD-20: max |Δx_adv| = ${dx} against Python`);
  const labels = Array.from(readNpy(path.join(refs.pgdDir, 'y.npy')).data as BigInt64Array, Number);
  const robust = got.pgd.success.filter((s, i) => s === 0 && got.pgd.clean[i] === labels[i]).length / got.pgd.n;
  t.is(robust, refs.pgd.robust_linf, 'PGD-20 robust accuracy = Python\'s');
  t.is(got.trades.steps, 1);
  t.true(Number.isFinite(got.trades.trainLoss) && got.trades.maxLogitChange > 0, `TRADES step: loss ${got.trades.trainLoss}, logits moved ${got.trades.maxLogitChange}`);
  t.log(`${got.variant} on LibTorch ${got.libtorch.version}: logits ${worst.toExponential(1)}, exact Fisher ${fw.toExponential(1)} from float64 (${refs.python}); ` +
    `PGD-20 |Δx_adv| ${dx}, robust accuracy ${robust} (Python ${refs.pgd.robust_linf}); TRADES loss ${got.trades.trainLoss.toFixed(4)}`);
}
