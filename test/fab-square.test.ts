import test from 'ava';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, Tensor } from '../lib';
import { attack, AttackParams, AttackResult } from '../lib/science/attacks';
import { modelGradState } from './helpers/grad-state';
import { manualSeed } from '../lib/science/train';
import { fashionSubset, ballViolations, trainedMlp } from './helpers/train-fixtures';
import { PY, hasTorch as hasTorchModules } from './helpers/python';
import { median } from '../lib/util/stats';

// FAB / FAB-T (minimal-norm) and Square (gradient-free) on small models: a linear model with a
// known minimal perturbation, an MLP trained in the test, and (with Python torch) an MLP behind a
// non-differentiable 8-bit input quantisation written by scripts/reference/quantised_model.py.

const hasTorch = hasTorchModules();

const N = 32;
let mlp: Model;
let xs: Tensor, ys: Tensor;
let labels: number[];
let quantised: Model | undefined;

test.before(async () => {
  if (hasTorch) {
    // here rather than in the test: the Python run blocks the event loop for a few seconds
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-square-'));
    execFileSync(PY, [path.join(__dirname, '..', '..', 'scripts', 'reference', 'quantised_model.py'), path.join(dir, 'q.pt')], {
      stdio: 'inherit', env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' },
    });
    quantised = await Model.load(path.join(dir, 'q.pt'));
    fs.rmSync(dir, { recursive: true });
  }
  mlp = await trainedMlp();
  const te = fashionSubset('test', N);
  xs = te.images;
  ys = te.labels;
  labels = ys.toNumbers();
});

function argmaxRows(z: Float32Array, k: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < z.length / k; i++) {
    let a = 0;
    for (let j = 1; j < k; j++) if (z[i * k + j] > z[i * k + a]) a = j;
    out.push(a);
  }
  return out;
}

/** Predictions at x_adv from a separate forward (not the attack's own bookkeeping). */
async function predict(m: Model, x: Tensor): Promise<number[]> {
  const z = await m.forward(x);
  const p = argmaxRows(z.toArray() as Float32Array, z.shape[1]);
  z.dispose();
  return p;
}

/** Checks the result against an independent forward: success ⇔ misclassified at x_adv. */
async function checkSuccess(t: import('ava').ExecutionContext, m: Model, r: AttackResult, y: number[]): Promise<void> {
  const pred = await predict(m, r.xAdv);
  pred.forEach((p, i) => t.is(r.success[i], p !== y[i] ? 1 : 0, `sample ${i}: success flag vs forward`));
}

test('fab and fab-t reach the closed-form minimal perturbation of a linear model (L2: |f|/‖w‖₂, L∞: |f|/‖w‖₁)', async (t) => {
  manualSeed(7);
  const lin = Model.create({ arch: 'mlp', hidden: [], numClasses: 2 });
  const st = await lin.state();
  const W = st.get('fcs.0.weight')!.toArray() as Float32Array; // [2, 784]
  const B = st.get('fcs.0.bias')!.toArray() as Float32Array;
  // interior images (0.3 + 0.4·pixel) so that the box [0, 1] does not bind at the optimum
  const n = 24, D = 784;
  const img = fashionSubset('test', n, 100).images.toArray() as Float32Array;
  const x = Float32Array.from(img, (v) => Math.fround(0.3 + 0.4 * v));
  const y: number[] = [];
  const r2: number[] = [], rinf: number[] = [];
  for (let i = 0; i < n; i++) {
    // float64 logits; f = z_other − z_y < 0, w = W_other − W_y: the boundary is f + w·δ = 0
    let z0 = B[0], z1 = B[1];
    for (let j = 0; j < D; j++) { z0 += W[j] * x[i * D + j]; z1 += W[D + j] * x[i * D + j]; }
    const lab = z1 > z0 ? 1 : 0;
    y.push(lab);
    const f = lab === 1 ? z0 - z1 : z1 - z0;
    let n1 = 0, n2 = 0, maxW = 0;
    for (let j = 0; j < D; j++) {
      const w = lab === 1 ? W[j] - W[D + j] : W[D + j] - W[j];
      n1 += Math.abs(w); n2 += w * w; maxW = Math.max(maxW, Math.abs(w));
    }
    r2.push(Math.abs(f) / Math.sqrt(n2));
    rinf.push(Math.abs(f) / n1);
    // the closed forms assume an inactive box: the largest coordinate of δ* (L2: |f|·|w_i|/‖w‖², L∞: r) with
    // FAB's overshoot η stays below the 0.3 margin of every pixel
    t.true(1.05 * Math.max(Math.abs(f) * maxW / n2, Math.abs(f) / n1) < 0.3, `sample ${i}: box would bind`);
    t.true(Math.abs(f) > 1e-2, `sample ${i}: too close to the boundary for a relative check (f = ${f})`);
  }
  const X = Tensor.from(x, [n, 1, 28, 28]);
  const Y = Tensor.from(BigInt64Array.from(y.map(BigInt)), [n]);
  for (const kind of ['fab', 'fab-t'] as const) {
    for (const norm of ['l2', 'linf'] as const) {
      const ref = norm === 'l2' ? r2 : rinf;
      const epsilon = norm === 'l2' ? 5 : 0.5;
      for (const eta of [1.05, 1.001]) {
        const r = await attack(lin, X, Y, { kind, norm, epsilon, eta });
        // Upper bound: the first step from x is exact for a linear model (both projections coincide),
        // landing at x + η·δ*, so the kept norm is at most η·r*. Lower bound: nothing closer than r*
        // is misclassified; float32 logits (|Δf| ≲ 1e-6·Σ|w_i x_i| ≈ 1e-6 here vs |f| > 1e-2) allow 1e-4.
        const ratios = ref.map((v, i) => r.norm[i] / v);
        t.true(Array.from(r.success).every((s) => s === 1), `${kind} ${norm} η ${eta}: every sample broken`);
        t.true(ratios.every((q) => q >= 1 - 1e-4 && q <= eta + 1e-6), `${kind} ${norm} η ${eta}: ‖δ‖/r* in [${Math.min(...ratios)}, ${Math.max(...ratios)}]`);
        t.log(`${kind} ${norm} η ${eta}: ‖δ‖ / r* ∈ [${Math.min(...ratios).toFixed(6)}, ${Math.max(...ratios).toFixed(6)}]`);
        await checkSuccess(t, lin, r, y);
        r.xAdv.dispose();
      }
    }
  }
});

/**
 * The minimal perturbation with the box active: the smallest ‖δ‖ with w·δ ≥ c (c > 0) and x + δ ∈ [0, 1],
 * by bisection in float64 (L2: δ_i = clip(λ w_i, −x_i, 1 − x_i), find λ; L∞: δ_i = clip(r·sign(w_i), ...),
 * find r); NaN when even the best corner of the box stays short of c. Also returns how many
 * coordinates sit on the box at the optimum.
 */
function boxMinimal(w: Float64Array, x: Float32Array, c: number, norm: 'l2' | 'linf'): { r: number; clipped: number } {
  const delta = (s: number) => Array.from(w, (wi, i) => Math.min(Math.max(norm === 'l2' ? s * wi : s * Math.sign(wi), -x[i]), 1 - x[i]));
  const reach = (s: number) => delta(s).reduce((a, d, i) => a + w[i] * d, 0);
  let hi = 1;
  while (reach(hi) < c && hi < 1e12) hi *= 2;
  if (reach(hi) < c) return { r: NaN, clipped: 0 };
  let lo = 0;
  for (let k = 0; k < 200; k++) { const mid = (lo + hi) / 2; if (reach(mid) < c) lo = mid; else hi = mid; }
  const d = delta(hi);
  const r = norm === 'l2' ? Math.sqrt(d.reduce((a, v) => a + v * v, 0)) : Math.max(...d.map(Math.abs));
  const clipped = d.filter((v, i) => w[i] !== 0 && (v === -x[i] || v === 1 - x[i])).length;
  return { r, clipped };
}

test('fab-t with the [0, 1] box active: the minimal perturbation of a linear model on raw images (bisection reference)', async (t) => {
  manualSeed(8);
  const lin = Model.create({ arch: 'mlp', hidden: [], numClasses: 2 });
  const st = await lin.state();
  const W = st.get('fcs.0.weight')!.toArray() as Float32Array;
  const Bv = st.get('fcs.0.bias')!.toArray() as Float32Array;
  const n = 24, D = 784;
  const te = fashionSubset('test', n, 300);
  const x = te.images.toArray() as Float32Array; // raw pixels: many at 0, so the box binds
  const y: number[] = [];
  const cs: number[] = [];
  const ws: Float64Array[] = [];
  for (let i = 0; i < n; i++) {
    let z0 = Bv[0], z1 = Bv[1];
    for (let j = 0; j < D; j++) { z0 += W[j] * x[i * D + j]; z1 += W[D + j] * x[i * D + j]; }
    const lab = z1 > z0 ? 1 : 0;
    y.push(lab);
    cs.push(Math.abs(z1 - z0));
    ws.push(Float64Array.from({ length: D }, (_, j) => (lab === 1 ? W[j] - W[D + j] : W[D + j] - W[j])));
  }
  const X = te.images, Y = Tensor.from(BigInt64Array.from(y.map(BigInt)), [n]);
  for (const norm of ['l2', 'linf'] as const) {
    const ref = ws.map((w, i) => boxMinimal(w, x.subarray(i * D, (i + 1) * D), cs[i], norm));
    const ok = ref.map((r, i) => i).filter((i) => Number.isFinite(ref[i].r) && cs[i] > 1e-2);
    t.true(ok.length >= 12, `${norm}: ${ok.length} reachable samples`);
    t.true(ok.filter((i) => ref[i].clipped > 0).length >= ok.length / 2, `${norm}: the box binds on most samples`);
    const r = await attack(lin, X, Y, { kind: 'fab-t', norm, epsilon: norm === 'l2' ? 20 : 1, eta: 1.001 });
    // as in the interior case, the first step lands at clip(x + η·δ*) (‖·‖ ≤ η·r*, still across the
    // boundary: every coordinate of δ* moves w·δ the right way), and nothing closer than r* is misclassified
    const ratios = ok.map((i) => r.norm[i] / ref[i].r);
    t.true(ok.every((i) => r.success[i] === 1), `${norm}: every reachable sample broken`);
    t.true(ratios.every((q) => q >= 1 - 1e-4 && q <= 1.001 + 1e-6), `${norm}: ‖δ‖/r* in [${Math.min(...ratios)}, ${Math.max(...ratios)}]`);
    t.log(`${norm}, box active on ${ok.filter((i) => ref[i].clipped > 0).length}/${ok.length}: ‖δ‖ / r* ∈ [${Math.min(...ratios).toFixed(6)}, ${Math.max(...ratios).toFixed(6)}]`);
    await checkSuccess(t, lin, r, y);
  }
});

test('fab-t L2 on a trained MLP: norms within 10 % of CW-L2\'s or smaller where both succeed; all within ε and [0, 1]', async (t) => {
  const epsilon = 3;
  const fab = await attack(mlp, xs, ys, { kind: 'fab-t', norm: 'l2', epsilon });
  const cw = await attack(mlp, xs, ys, { kind: 'cw-l2', epsilon, steps: 100, binarySteps: 9, learningRate: 0.01 });
  t.deepEqual(ballViolations(xs.toArray() as Float32Array, fab.xAdv.toArray() as Float32Array, 784, 'l2', epsilon), []);
  await checkSuccess(t, mlp, fab, labels);
  const both: number[] = [];
  for (let i = 0; i < N; i++) if (fab.cleanCorrect[i] === 1 && fab.success[i] === 1 && cw.success[i] === 1) both.push(i);
  t.log(`both succeed on ${both.length} of ${N}`);
  t.true(both.length >= N / 2, `both succeed on ${both.length} of ${N}`);
  const ratios = both.map((i) => fab.norm[i] / cw.norm[i]);
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  t.log(`fab-t/cw-l2 ‖δ‖₂: median ${median(ratios).toFixed(3)}, mean norms ${mean(both.map((i) => fab.norm[i])).toFixed(3)} vs ${mean(both.map((i) => cw.norm[i])).toFixed(3)}, max ratio ${Math.max(...ratios).toFixed(3)}`);
  // measured median 0.86, mean norms 0.98 vs 1.19 (two kernel sets): 25 % inside the bounds
  t.true(median(ratios) <= 1.1, `median ratio ${median(ratios)}`);
  t.true(mean(both.map((i) => fab.norm[i])) <= 1.1 * mean(both.map((i) => cw.norm[i])), 'mean norm');
  // fab-t breaks about what cw-l2 breaks within ε (both minimal-norm attacks; fab-t tries 9 targets).
  // Outcomes on a trained MLP: measured fab-t 23, cw-l2 21, both 21 of 32 (norm ratio median 0.86,
  // asserted ≤ 1.1); 4 fewer than CW and half of the samples leave room for another CPU's model
  const fabWins = Array.from(fab.success).filter((s, i) => s === 1 && fab.cleanCorrect[i] === 1).length;
  const cwWins = Array.from(cw.success).filter((s, i) => s === 1 && cw.cleanCorrect[i] === 1).length;
  t.log(`fab-t broke ${fabWins}, cw-l2 ${cwWins}`);
  t.true(fabWins >= cwWins - 4, `fab-t broke ${fabWins}, cw-l2 ${cwWins}`);
});

test('fab-t and fab L∞ on a trained MLP: median ‖δ‖∞ on broken samples well below ε, all within ε and [0, 1]', async (t) => {
  // at ε 0.2 PGD breaks nearly every sample of this natural MLP, its perturbations sitting at ε; the minimal ones are spread below
  const epsilon = 0.2;
  const pgd = await attack(mlp, xs, ys, { kind: 'pgd', epsilon, stepSize: epsilon / 8, steps: 20 });
  const pgdBroken = Array.from(pgd.success).filter((s, i) => s === 1 && pgd.cleanCorrect[i] === 1).length;
  for (const p of [{ kind: 'fab-t' }, { kind: 'fab', steps: 30 }] as AttackParams[]) {
    const r = await attack(mlp, xs, ys, { ...p, norm: 'linf', epsilon });
    t.deepEqual(ballViolations(xs.toArray() as Float32Array, r.xAdv.toArray() as Float32Array, 784, 'linf', epsilon), []);
    await checkSuccess(t, mlp, r, labels);
    const broken = Array.from(r.norm).filter((_, i) => r.success[i] === 1 && r.cleanCorrect[i] === 1);
    // FAB searches the boundary, it does not maximise a loss: a sample PGD-20 breaks it may miss
    // within ε. Measured: both broke 24 of 32 (two kernel sets); 4 fewer leaves room for another
    // CPU's trained MLP and still says FAB finds the boundary where PGD does
    t.true(broken.length >= pgdBroken - 4, `${p.kind}: broke ${broken.length}, PGD-20 ${pgdBroken}`);
    // measured 0.056 = 0.28 ε: the minimal perturbations spread below ε, PGD's sit at ε
    t.true(median(broken) < 0.4 * epsilon, `${p.kind}: median ‖δ‖∞ ${median(broken)}`);
    t.log(`${p.kind} L∞ ε ${epsilon}: broke ${broken.length}/${N} (PGD-20 ${pgdBroken}), median ‖δ‖∞ ${median(broken).toFixed(4)}`);
    // samples misclassified clean are left as they are
    r.cleanCorrect.forEach((c, i) => { if (c === 0) t.is(r.norm[i], 0); });
  }
});

(hasTorch ? test : test.skip)('square breaks a model behind a non-differentiable input quantisation where PGD fails; deterministic per seed', async (t) => {
  const q = quantised!;
  const te = fashionSubset('test', 64, 200);
  const X = te.images, Y = te.labels, y = Y.toNumbers();
  const count = (r: AttackResult) => Array.from(r.cleanCorrect).filter((c, i) => c === 1 && r.success[i] === 0).length;
  for (const [norm, epsilon, stepSize] of [['linf', 0.1, 0.01], ['l2', 3, 0.3]] as const) {
    // L∞ without a random start: the quantisation's derivative is zero, sign(0) = 0, so PGD cannot
    // move x and fails on every clean-correct sample by construction. L2 replaces a zero gradient
    // by a random direction (native/attacks.cc), so its PGD wanders: measured 2 of 50 broken.
    const pgd = await attack(q, X, Y, { kind: 'pgd', norm, epsilon, stepSize, steps: 20, randomStart: norm !== 'linf' });
    const sq = await attack(q, X, Y, { kind: 'square', norm, epsilon, steps: 400, seed: 3 });
    const clean = Array.from(sq.cleanCorrect).filter((c) => c === 1).length;
    // the Python-trained MLP: measured 50 of 64; half says it is trained (chance: 6)
    t.true(clean >= 32, `clean ${clean}/64`);
    if (norm === 'linf') t.is(count(pgd), clean, 'PGD on a zero gradient does not move');
    else t.true(count(pgd) >= clean - 12, `${norm}: PGD robust ${count(pgd)} of ${clean} clean`);
    // Square only needs scores. Measured robust under square 18 (L∞) and 13 (L2) of 50, against
    // half of PGD's (25, 24): a margin of 6 and 11 samples for another CPU's model and rounding
    t.true(count(sq) <= 0.5 * count(pgd), `${norm}: square robust ${count(sq)}, PGD ${count(pgd)}`);
    t.log(`${norm} ε ${epsilon}: clean ${clean}/64, robust under PGD-20 ${count(pgd)}, under square (400 queries) ${count(sq)}`);
    await checkSuccess(t, q, sq, y);
    t.deepEqual(ballViolations(X.toArray() as Float32Array, sq.xAdv.toArray() as Float32Array, 784, norm, epsilon), []);
    // per-sample queries: 0 when misclassified clean, the whole budget when never broken, fewer when broken early
    for (let i = 0; i < 64; i++) {
      if (sq.cleanCorrect[i] === 0) t.is(sq.queries![i], 0);
      else if (sq.success[i] === 0) t.is(sq.queries![i], 400);
      else t.true(sq.queries![i] >= 1 && sq.queries![i] <= 400);
      if (sq.success[i] === 1) t.true(sq.loss[i] < 0, 'margin at a success is negative');
    }
    const again = await attack(q, X, Y, { kind: 'square', norm, epsilon, steps: 400, seed: 3 });
    t.deepEqual(again.xAdv.toArray(), sq.xAdv.toArray());
    t.deepEqual(again.queries, sq.queries);
    const other = await attack(q, X, Y, { kind: 'square', norm, epsilon, steps: 400, seed: 4 });
    t.notDeepEqual(other.xAdv.toArray(), sq.xAdv.toArray());
    if (norm === 'linf') {
      // a second run (same seed: the first run is the same search) only adds successes, on the survivors
      const two = await attack(q, X, Y, { kind: 'square', norm, epsilon, steps: 400, seed: 3, restarts: 2 });
      await checkSuccess(t, q, two, y);
      for (let i = 0; i < 64; i++) {
        t.true(two.success[i] >= sq.success[i], `sample ${i}`);
        if (sq.success[i] === 1 && sq.cleanCorrect[i] === 1) t.is(two.queries![i], sq.queries![i]);
        if (two.success[i] === 0 && two.cleanCorrect[i] === 1) t.is(two.queries![i], 800);
      }
      t.log(`linf, 2 runs: robust ${count(two)}`);
    }
  }
});

// serial: the abort case runs an op that only ends when the abort arrives; a concurrent test's
// synchronous tensor read would wait behind it on the compute thread and block the event loop
test.serial('fab, fab-t and square: the model is left as found, progress is reported, abort works, bad options are coded errors', async (t) => {
  const before = await modelGradState(mlp);
  await mlp.setTraining(true);
  const x = xs.slice(0, 8), y = ys.slice(0, 8);
  for (const p of [{ kind: 'fab', steps: 3 }, { kind: 'fab-t', steps: 3, targets: 2, restarts: 2 }, { kind: 'square', steps: 60, epsilon: 1e-6 },
    { kind: 'square', norm: 'l2', epsilon: 1e-6, steps: 60 }] as AttackParams[]) {
    const events: { step: number; steps: number }[] = [];
    await attack(mlp, x, y, { ...p, onProgress: (e) => events.push(e as { step: number; steps: number }) });
    t.deepEqual(await modelGradState(mlp), { ...before, training: true }, `${p.kind}`);
    // progress events travel separately from the result: let the queued ones arrive
    await new Promise((r) => setTimeout(r, 50));
    t.true(events.length > 0 && events.every((e) => e.step <= e.steps), `${p.kind}: progress events ${JSON.stringify(events)}`);
  }
  await mlp.setTraining(false);
  // random restarts are seeded: the same seed gives the same points bit for bit
  const rs: AttackParams = { kind: 'fab-t', norm: 'l2', epsilon: 0.3, steps: 10, targets: 2, restarts: 3, seed: 11 };
  const a = await attack(mlp, x, y, rs), b = await attack(mlp, x, y, rs);
  t.deepEqual(a.xAdv.toArray(), b.xAdv.toArray());
  t.deepEqual(a.norm, b.norm);
  for (const p of [{ kind: 'fab-t', steps: 1e5 }, { kind: 'square', steps: 1e7, epsilon: 1e-6 }] as AttackParams[]) {
    const ac = new AbortController();
    const run = attack(mlp, xs, ys, { ...p, signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await t.throwsAsync(run, { code: 'ERR_ABORTED' } as never, `${p.kind}`);
  }
  const bad: AttackParams[] = [
    { kind: 'fab-t', targeted: true, target: ys }, { kind: 'square', targeted: true, target: ys }, { kind: 'fab-t', targets: 0 },
    { kind: 'fab', eta: 0.5 }, { kind: 'fab', beta: 1 }, { kind: 'fab', alphaMax: 2 }, { kind: 'square', steps: 0 },
    { kind: 'square', pInit: 0 }, { kind: 'square', pInit: 1.5 }, { kind: 'square', steps: 'many' as never },
  ];
  for (const p of bad) await t.throwsAsync(attack(mlp, x, y, p), { code: 'ERR_ARG' } as never, JSON.stringify({ ...p, target: undefined }));
  const y10 = Tensor.from(BigInt64Array.from([10n, 0n, 0n, 0n, 0n, 0n, 0n, 0n]), [8]);
  for (const kind of ['fab', 'fab-t', 'square'] as const) await t.throwsAsync(attack(mlp, x, y10, { kind }), { code: 'ERR_VALUE' } as never, kind);
});
