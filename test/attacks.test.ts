import test from 'ava';
import { Model, Tensor, FisherLensError } from '../lib';
import { attack, attackPresets, AttackParams } from '../lib/science/attacks';
import { evaluateRobustness, worstExamples } from '../lib/science/robust';
import { modelGradState } from './helpers/grad-state';
import { fisherExact } from '../lib/science/fisher';
import { manualSeed, train } from '../lib/science/train';
import { Dataset } from '../lib/science/data/dataset';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { fashionSubset, ballViolations, readNpy, trainedMlp } from './helpers/train-fixtures';

// One model trained in the test (an MLP trains in well under a second) and one batch of test images.
let model: Model;
let testSet: Dataset;
let xs: Tensor, ys: Tensor;
const N = 128;

test.before(async () => {
  testSet = fashionSubset('test', N);
  model = await trainedMlp();
  xs = testSet.images;
  ys = testSet.labels;
});

const cases: [string, AttackParams][] = [
  ['fgsm linf', { kind: 'fgsm', epsilon: 0.1 }],
  ['pgd linf', { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 10 }],
  ['pgd l2', { kind: 'pgd', norm: 'l2', epsilon: 1.5, stepSize: 0.3, steps: 10 }],
  ['pgd linf no random start, 2 restarts', { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 5, randomStart: false, restarts: 2 }],
  ['cw linf', { kind: 'cw', epsilon: 0.1, stepSize: 0.02, steps: 10 }],
  ['cw-l2', { kind: 'cw-l2', steps: 30, binarySteps: 4, learningRate: 0.05, epsilon: 3 }],
  ['kl linf', { kind: 'kl', epsilon: 0.1, stepSize: 0.02, steps: 10 }],
  ['kl l2', { kind: 'kl', norm: 'l2', epsilon: 1.5, stepSize: 0.3, steps: 10 }],
  ['fisher one-step linf', { kind: 'fisher', epsilon: 0.1 }],
  ['fisher iterated l2', { kind: 'fisher', norm: 'l2', epsilon: 1.5, stepSize: 0.5, steps: 3 }],
];

for (const [name, p] of cases) {
  test(`${name}: lowers accuracy, keeps x_adv in the ε-ball and the box on every element`, async (t) => {
    const r = await evaluateRobustness(model, testSet, [p]);
    // outcomes of the trained MLP on 128 images: measured clean 0.78 and, over the ten attacks,
    // robust 0.16..0.41 on two kernel sets, so the required drop of 0.15 sits 28 images or more
    // inside what each attack does; another CPU's rounding moves these by an image or two
    t.true(r.accuracy > 0.6, `clean accuracy ${r.accuracy}`);
    const rob = r.attacks[0].robustAccuracy;
    t.log(`clean ${r.accuracy}, robust ${rob}`);
    t.true(rob < r.accuracy - 0.15, `robust ${rob} vs clean ${r.accuracy}`);
    const a = await attack(model, xs, ys, p);
    const bad = ballViolations(xs.toArray() as Float32Array, a.xAdv.toArray() as Float32Array, 784, p.norm ?? (p.kind === 'cw-l2' ? 'l2' : 'linf'), p.epsilon!);
    t.deepEqual(bad, []);
    t.is(a.loss.length, N);
    // x_adv is projected onto the ball in float32 and its norm recomputed in float32: a point on
    // the surface reads up to a few ulps (~1e-7 relative) above ε
    t.true(Array.from(a.norm).every((v) => v <= p.epsilon! * (1 + 1e-6) + 1e-7));
  });
}

test.serial('attacks leave the model as found: mode, requires-grad flags, no .grad', async (t) => {
  const before = await modelGradState(model);
  t.deepEqual(before, { training: false, parameters: 4, requiresGrad: 4, withGrad: 0 });
  await model.setTraining(true);
  for (const p of cases.map((c) => c[1])) {
    await attack(model, xs.slice(0, 16), ys.slice(0, 16), { ...p, steps: Math.min(p.steps ?? 1, 3), ...(p.kind === 'cw-l2' ? { binarySteps: 1 } : {}) });
    t.deepEqual(await modelGradState(model), { ...before, training: true });
  }
  await model.setTraining(false);
});

test('attacks run in eval mode even on a model left in train mode (dropout off: deterministic)', async (t) => {
  manualSeed(3);
  const cnn = Model.create({ arch: 'small-cnn' }); // has dropout
  await cnn.setTraining(true);
  const x = xs.slice(0, 8), y = ys.slice(0, 8);
  const a = await attack(cnn, x, y, { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 2, randomStart: false });
  const b = await attack(cnn, x, y, { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 2, randomStart: false });
  t.deepEqual(a.xAdv.toArray(), b.xAdv.toArray());
  t.true(cnn.training);
});

test('seeds reproduce results exactly; different seeds differ', async (t) => {
  for (const p of [{ kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 3 }, { kind: 'kl', epsilon: 0.1, stepSize: 0.02, steps: 3 },
    { kind: 'pgd', norm: 'l2', epsilon: 1, stepSize: 0.2, steps: 3, restarts: 2 }] as AttackParams[]) {
    const a = await attack(model, xs, ys, { ...p, seed: 42 });
    const b = await attack(model, xs, ys, { ...p, seed: 42 });
    const c = await attack(model, xs, ys, { ...p, seed: 43 });
    t.deepEqual(a.xAdv.toArray(), b.xAdv.toArray());
    t.deepEqual(a.loss, b.loss);
    t.notDeepEqual(a.xAdv.toArray(), c.xAdv.toArray());
  }
});

test('restarts keep the worst case per sample: never fewer successes than one run', async (t) => {
  const p: AttackParams = { kind: 'pgd', epsilon: 0.05, stepSize: 0.01, steps: 5, seed: 5 };
  const one = await attack(model, xs, ys, p);
  const four = await attack(model, xs, ys, { ...p, restarts: 4 });
  for (let i = 0; i < N; i++) {
    // the first of the four runs repeats the single run (same seed, same draws) and a later run
    // replaces it per sample only where it scores higher: success and loss can only rise; 1e-6
    // allows for the loss being recomputed from the kept x_adv in another batch composition
    t.true(four.success[i] >= one.success[i], `sample ${i}`);
    if (four.success[i] === one.success[i]) t.true(four.loss[i] >= one.loss[i] - 1e-6);
  }
});

test('targeted PGD moves predictions to the target', async (t) => {
  const target = Tensor.from(BigInt64Array.from(ys.toNumbers().map((v) => BigInt((v + 1) % 10))), [N]);
  const r = await attack(model, xs, ys, { kind: 'pgd', epsilon: 0.2, stepSize: 0.02, steps: 20, targeted: true, target });
  const rate = r.success.reduce((s, v) => s + v, 0) / N;
  t.log(`targeted success ${rate}`);
  // measured 0.80 at ε = 0.2 (two kernel sets): 38 images above the bound
  t.true(rate > 0.5, `targeted success ${rate}`);
  await t.throwsAsync(attack(model, xs, ys, { kind: 'pgd', targeted: true }), { instanceOf: FisherLensError, code: 'ERR_ARG' } as never);
});

test('KL attack reaches ½ ε² λ_max for small ε on a smooth model (ties to the Fisher engine)', async (t) => {
  manualSeed(2);
  const smooth = Model.create({ arch: 'mlp', hidden: [64], activation: 'softplus' });
  await train(smooth, fashionSubset('train', 1000), { method: 'natural', epochs: 2, batchSize: 64, optimizer: { type: 'sgd', lr: 0.05 }, seed: 2 });
  // interior points: keep the box constraint inactive
  const x = Tensor.from((xs.slice(0, 32).toArray() as Float32Array).map((v) => 0.1 + 0.8 * v), [32, 1, 28, 28]);
  const y = ys.slice(0, 32);
  const eps = 0.02;
  const kl = await attack(smooth, x, y, { kind: 'kl', norm: 'l2', epsilon: eps, stepSize: eps / 4, steps: 40, seed: 1 });
  const f = await fisherExact(smooth, x);
  const ratios = Array.from(kl.loss, (v, i) => v / (0.5 * eps * eps * f.lambdaMax[i]));
  const med = ratios.slice().sort((a, b) => a - b)[16];
  t.log(`KL / (½ε²λmax): median ${med}, range [${Math.min(...ratios)}, ${Math.max(...ratios)}]`);
  // ½ε²λ_max is the KL's second-order maximum: at ε = 0.02 the third-order remainder is ~1e-2 of it,
  // and 40 ascent steps converge to the top eigenvector where the eigen-gap is not tiny; measured
  // median 1.000 / 0.999, range 0.92..1.014 on two kernel sets, so the median and the cap hold
  t.true(med > 0.95 && med < 1.05, `median KL / (½ε²λmax) = ${med}`);
  t.true(ratios.every((r) => r < 1.1), `max ratio ${Math.max(...ratios)}`);
});

test('evaluateRobustness: worst case ≤ every attack, per-sample arrays, .npy saving', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-eval-'));
  const r = await evaluateRobustness(model, testSet, [
    { name: 'fgsm', kind: 'fgsm', epsilon: 0.05 },
    { name: 'pgd', kind: 'pgd', epsilon: 0.05, stepSize: 0.01, steps: 5 },
  ], { batchSize: 50, save: path.join(dir, 'adv.npy') });
  t.is(r.samples, N);
  for (const a of r.attacks) t.true(r.worstCaseAccuracy <= a.robustAccuracy);
  t.is(r.perSample.worst.reduce((s, v) => s + v, 0) / N, r.worstCaseAccuracy);
  for (const f of ['adv-fgsm.npy', 'adv-pgd.npy', 'adv-worst.npy']) {
    const a = readNpy(path.join(dir, f));
    t.deepEqual(a.shape, [N, 1, 28, 28]);
    t.deepEqual(ballViolations(xs.toArray() as Float32Array, a.data as Float32Array, 784, 'linf', 0.05), []);
  }
  // adv-worst.npy, independently: per sample the fgsm row where fgsm's example is misclassified,
  // else the pgd row (the success flags recomputed here by one forward of the saved fgsm rows; rows
  // whose top two logits lie within 1e-4, where float32 kernels of another batch shape could flip
  // the argmax, are only required to be one of the two rows)
  const D = 784;
  const fg = readNpy(path.join(dir, 'adv-fgsm.npy')).data as Float32Array;
  const pg = readNpy(path.join(dir, 'adv-pgd.npy')).data as Float32Array;
  const wo = readNpy(path.join(dir, 'adv-worst.npy')).data as Float32Array;
  const fgT = Tensor.from(fg, [N, 1, 28, 28]);
  const z = (await model.forward(fgT)).toArray() as Float32Array;
  fgT.dispose();
  const labels = ys.toNumbers();
  const rowEq = (a: Float32Array, i: number) => a.subarray(i * D, (i + 1) * D).every((v, k) => v === wo[i * D + k]);
  let checked = 0;
  for (let i = 0; i < N; i++) {
    const row = Array.from(z.subarray(i * 10, i * 10 + 10));
    const top = [...row].sort((a, b) => b - a);
    const broke = row.indexOf(top[0]) !== labels[i];
    if (top[0] - top[1] < 1e-4) { t.true(rowEq(fg, i) || rowEq(pg, i), `sample ${i}`); continue; }
    t.true(rowEq(broke ? fg : pg, i), `sample ${i}: worst row is ${broke ? 'fgsm' : 'pgd'}'s`);
    checked++;
  }
  t.log(`${checked} of ${N} rows checked exactly`);
  t.true(checked > N / 2);
  const single = await evaluateRobustness(model, testSet, [{ kind: 'fgsm', epsilon: 0.05 }], { save: path.join(dir, 'one.npy') });
  t.deepEqual(readNpy(path.join(dir, 'one.npy')).data, readNpy(path.join(dir, 'adv-fgsm.npy')).data);
  t.is(single.attacks[0].robustAccuracy, r.attacks[0].robustAccuracy);
  fs.rmSync(dir, { recursive: true });
});

test('worstExamples: per sample the first successful attack\'s example, else the last one\'s (against a JS selection)', async (t) => {
  const B = 7, D = 3, A = 3;
  const rows = Array.from({ length: A }, (_, a) => Float32Array.from({ length: B * D }, (_, k) => 100 * a + k));
  const succ = [Uint8Array.from([1, 0, 0, 1, 0, 0, 0]), Uint8Array.from([0, 1, 0, 1, 0, 1, 0]), Uint8Array.from([0, 0, 1, 0, 0, 1, 0])];
  const advs = rows.map((r) => Tensor.from(r, [B, 1, 1, D]));
  const w = await worstExamples(advs, succ);
  const got = w.toArray() as Float32Array;
  t.deepEqual(w.shape, [B, 1, 1, D]);
  for (let i = 0; i < B; i++) {
    let pick = A - 1;
    for (let a = 0; a < A; a++) if (succ[a][i] === 1) { pick = a; break; }
    t.deepEqual(Array.from(got.subarray(i * D, i * D + D)), Array.from(rows[pick].subarray(i * D, i * D + D)), `sample ${i}`);
  }
  await t.throwsAsync(worstExamples(advs, succ.slice(0, 2)), { code: 'ERR_ARG' } as never);
  await t.throwsAsync(worstExamples(advs, [succ[0], succ[1], Uint8Array.from([1])]), { code: 'ERR_SHAPE' } as never);
  for (const x of [w, ...advs]) x.dispose();
});

test('presets carry the published settings', (t) => {
  t.like(attackPresets['pgd20-cifar10'], { epsilon: 0.031, stepSize: 0.003, steps: 20, randomStart: true });
  t.like(attackPresets['pgd40-mnist'], { epsilon: 0.3, stepSize: 0.01, steps: 40 });
});

test('abort stops an attack between steps; bad options are clear errors', async (t) => {
  const ac = new AbortController();
  const p = attack(model, xs, ys, { kind: 'pgd', epsilon: 0.1, stepSize: 0.01, steps: 100000, signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  await t.throwsAsync(p, { code: 'ERR_ABORTED' } as never);
  await t.throwsAsync(attack(model, xs, ys, { kind: 'nope' as never }), { code: 'ERR_ARG' } as never);
  await t.throwsAsync(attack(model, xs, ys, { norm: 'l3' as never }), { code: 'ERR_ARG' } as never);
  const big = Tensor.from(new Float32Array(784).fill(2), [1, 1, 28, 28]);
  await t.throwsAsync(attack(model, big, ys.slice(0, 1)), { code: 'ERR_VALUE' } as never);
});

test('channels-last attacks agree with the contiguous ones (up to flipped signs of tiny gradients)', async (t) => {
  manualSeed(5);
  const cnn = Model.create({ arch: 'small-cnn' });
  const x = xs.slice(0, 16), y = ys.slice(0, 16);
  const p: AttackParams = { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 3, randomStart: false };
  const a = (await attack(cnn, x, y, p)).xAdv.toArray() as Float32Array;
  const b = await attack(cnn, x, y, { ...p, channelsLast: true });
  const bv = b.xAdv.toArray() as Float32Array;
  let same = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i] - bv[i]) < 1e-6) same++;
  t.log(`agreeing elements ${same / a.length}`);
  t.true(same / a.length > 0.99, `agreeing elements ${same / a.length}`);
  t.deepEqual(ballViolations(x.toArray() as Float32Array, bv, 784, 'linf', 0.1), []);
  t.deepEqual(b.xAdv.shape, [16, 1, 28, 28]);
});
