import test from 'ava';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { ensureFixture, refFisher, refCckl, relErr, writeNpy, ROOT } from './fisher-fixtures';

// Only child processes here (no native op in this process), so forking cannot catch OpenBLAS mid-call.
const dir = ensureFixture();
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const ref = refFisher(path.join(dir, 'tiny32.pt'), path.join(dir, 'x64.npy'), null, 'all-logits');

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test.serial('fisherlens fisher --json prints one JSON document with per-sample arrays equal to the reference', (t) => {
  const r = cli(['fisher', '--model', path.join(dir, 'tiny64.pt'), '--data', path.join(dir, 'x64.npy'), '--labels', path.join(dir, 'y.npy'), '--json', '--batch-size', '50']);
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  t.is(out.n, 120);
  t.is(out.lambdaMax.length, 120);
  // float64 model and images on both sides (JSON carries doubles exactly): summation order only,
  // ~1e-14; 1e-9 as the library's reference tests (test/fisher.test.ts)
  for (let i = 0; i < 120; i++) {
    t.true(relErr(out.lambdaMax[i], ref.lambdaMax[i]) < 1e-9);
    t.true(relErr(out.frobenius[i], ref.frobenius[i]) < 1e-9);
    t.true(relErr(out.trace[i], ref.trace[i]) < 1e-9);
  }
  const mean = ref.frobenius.reduce((a, b) => a + b, 0) / 120;
  t.true(relErr(out.mean.frobenius, mean) < 1e-9);
  for (const method of ['power', 'lanczos', 'hutchinson']) {
    const m = cli(['fisher', '--model', path.join(dir, 'tiny64.pt'), '--data', path.join(dir, 'x64.npy'), '--labels', path.join(dir, 'y.npy'), '--json', '--method', method, '--limit', '10']);
    t.is(m.status, 0, m.stderr);
    const o = JSON.parse(m.stdout);
    t.is(o.method, method);
    t.is(o.n, 10);
  }
});

test.serial('fisherlens cckl --json prints the eight quantities; bad arguments exit non-zero with one line', (t) => {
  const lf = path.join(dir, 'cli-logits.npy');
  writeNpy(lf, Float64Array.from(ref.logits.flat()), [120, 10]);
  const rc = refCckl(lf, path.join(dir, 'y.npy'), path.join(dir, 'cli-cckl.json'));
  const r = cli(['cckl', '--model', path.join(dir, 'tiny64.pt'), '--data', path.join(dir, 'x64.npy'), '--labels', path.join(dir, 'y.npy'), '--pairs', '64', '--json']);
  t.is(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout);
  for (const k of ['cckl', 'jsMean', 'lowerBound', 'accuracy', 'crossEntropy', 'nonRobust', 'robust', 'nonRobustFraction']) t.is(typeof o[k], 'number', k);
  // float64 logits of the float64 model on both sides: 1e-9 as above; robust = CCKL − N is an
  // identity of the printed numbers (O(1)): one float64 subtraction's rounding
  t.true(relErr(o.cckl, rc.cckl) < 1e-9);
  t.true(relErr(o.jsMean, rc.jsMean) < 1e-9);
  t.true(Math.abs(o.robust - (o.cckl - o.nonRobust)) < 1e-12);
  const bad = cli(['fisher', '--model', path.join(dir, 'tiny64.pt'), '--data', path.join(dir, 'x64.npy'), '--method', 'nope']);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /fisherlens: ERR_ARG: --method/);
  const prof = cli(['profile', 'fisher', '--model', path.join(dir, 'tiny32.pt'), '--input-shape', '1,12,12', '--batch', '4,8', '--repeats', '1', '--json']);
  t.is(prof.status, 0, prof.stderr);
  t.is(JSON.parse(prof.stdout).rows.length, 8);
});

test.serial('profile fisher --layout / --classes-per-pass pin the exact method and report what ran; bad values are ERR_ARG', (t) => {
  const r = cli(['profile', 'fisher', '--model', 'small-cnn', '--batch', '4', '--methods', 'exact', '--repeats', '1', '--layout', 'nchw', '--classes-per-pass', '3', '--json']);
  t.is(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout).rows as { method: string; layout?: string; classesPerPass?: number }[];
  t.deepEqual(rows.map((x) => [x.method, x.layout, x.classesPerPass]), [['exact', 'nchw', 3]]);
  const bad = cli(['profile', 'fisher', '--model', 'small-cnn', '--batch', '4', '--methods', 'exact', '--layout', 'nhwc']);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /ERR_ARG: --layout/);
});
