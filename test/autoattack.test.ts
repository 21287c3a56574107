import test from 'ava';
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, Tensor, FisherLensError } from '../lib';
import { attack, attackKinds, ATTACK_KINDS, AttackParams } from '../lib/science/attacks';
import { evaluateRobustness } from '../lib/science/robust';
import { autoAttack, resolveCascade } from '../lib/science/autoattack';
import { validateExperiment, expandRuns } from '../lib/experiment/grid';
import { evalAttackParams } from '../lib/experiment/science';
import { Dataset } from '../lib/science/data/dataset';
import { fashionSubset, ballViolations, trainedMlp } from './helpers/train-fixtures';
import { PY, hasTorch as hasTorchModules } from './helpers/python';
import { blockData, BlockRow, writeBlockLinear } from './helpers/designed';

// An MLP trained in the test (well under a second) and 128 test images, as in attacks.test.ts;
// and the block-linear model (test/helpers/designed.ts) for outcomes that must hold on any CPU.
let model: Model;
let testSet: Dataset;
const N = 128;
const designedDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-aa-designed-'));
const BLOCK_LINEAR = path.join(designedDir, 'block-linear.pt');

test.before(async () => {
  if (hasTorch) writeBlockLinear(BLOCK_LINEAR, 40);  // a Python process: before any native op starts here
  testSet = fashionSubset('test', N);
  model = await trainedMlp();
});
test.after.always(() => fs.rmSync(designedDir, { recursive: true, force: true }));

const argErr = { instanceOf: FisherLensError, code: 'ERR_ARG' } as const;

test('the capability table: one row per kind, APGD-T is untargeted with internal targets, unsupported options are ERR_ARG', async (t) => {
  const table = attackKinds();
  t.deepEqual(table.map((a) => a.kind), [...ATTACK_KINDS]);
  const row = (k: string) => table.find((a) => a.kind === k)!;
  t.like(row('apgd-t'), { targeted: false, internalTargets: true, minClasses: 4, defaultSteps: 100 });
  t.like(row('fab-t'), { targeted: false, internalTargets: true });
  t.like(row('pgd'), { targeted: true, internalTargets: false });
  t.like(row('kl'), { targeted: false });
  const x = testSet.images.slice(0, 4), y = testSet.labels.slice(0, 4);
  const target = Tensor.fromNested([1, 2, 3, 4], { dtype: 'int64' });
  // each of these ran before (silently ignoring the option or running PGD) and is refused now
  await t.throwsAsync(attack(model, x, y, { kind: 'kl', epsilon: 0.1, targeted: true, target }), { ...argErr, message: /^attack option 'targeted': expected false for kl \(it cannot be targeted\), got true$/ });
  await t.throwsAsync(attack(model, x, y, { kind: 42 as unknown as 'pgd' }), { ...argErr, message: /option 'kind'/ });
  await t.throwsAsync(attack(model, x, y, { kind: 'apgd-t', targeted: true, target }), { ...argErr, message: /untargeted attack that tries target classes/ });
  await t.throwsAsync(attack(model, x, y, { kind: 'apgd-ce', stepSize: 0.01 }), { ...argErr, message: /^attack option 'stepSize': expected none for apgd-ce \(APGD starts at 2ε and adapts it\), got 0.01$/ });
  await t.throwsAsync(attack(model, x, y, { kind: 'cw-l2', norm: 'linf' }), { ...argErr, message: /^attack option 'norm': expected l2 for cw-l2 \(it supports no other norm\), got 'linf'$/ });
  await t.throwsAsync(attack(model, x, y, { kind: 'fgsm', restarts: 2 }), { ...argErr, message: /^attack option 'restarts': expected 1 for fgsm \(it has no restarts\), got 2$/ });
  await t.throwsAsync(attack(model, x, y, { kind: 'pgd', targets: 3 }), { ...argErr, message: /^attack option 'targets': expected none for pgd \(apgd-t and fab-t take it\), got 3$/ });
  await t.throwsAsync(attack(model, x, y, { kind: 'pgd', eotIter: 5 }), { ...argErr, message: /eotIter/ });
  for (const k of table.filter((a) => !a.available)) {
    await t.throwsAsync(attack(model, x, y, { kind: k.kind }), { ...argErr, message: new RegExp(`${k.kind} is not available in this build`) });
  }
  target.dispose();
});

// The old targeted CW∞ ascended −relu(z_t − max_{j≠t} z_j + κ), i.e. pushed the input AWAY from the
// target, while success is scored as "classified as the target": it hit the target on ~0 % of the
// samples. Minimising the target's margin must reach it on most samples of this weak MLP at ε = 0.1
// (targeted PGD-CE does: the same test asserts that, as the yardstick).
test('targeted CW∞ moves towards the target (was: away from it)', async (t) => {
  const x = testSet.images, y = testSet.labels;
  // target: the runner-up class of the clean logits (reachable at ε = 0.1 for most samples)
  const z0 = (await model.forward(x)).toArray() as Float32Array;
  const second = y.toNumbers().map((_, i) => {
    const row = Array.from(z0.subarray(i * 10, i * 10 + 10));
    const order = row.map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]);
    return order[1][1];
  });
  const tgt = Tensor.fromNested(second, { dtype: 'int64' });
  const p: AttackParams = { epsilon: 0.1, stepSize: 0.02, steps: 20, targeted: true, target: tgt };
  const cw = await attack(model, x, y, { ...p, kind: 'cw' });
  const pgd = await attack(model, x, y, { ...p, kind: 'pgd' });
  const rate = (r: Uint8Array) => r.reduce((a, b) => a + b, 0) / r.length;
  t.log(`targeted success: cw ${rate(cw.success)}, pgd ${rate(pgd.success)}`);
  // measured 0.85 for both on two kernel sets: 45 images above the bound
  t.true(rate(pgd.success) > 0.5, 'targeted PGD reaches the target on most samples');
  t.true(rate(cw.success) > 0.5, `targeted CW reaches the target on most samples (${rate(cw.success)})`);
  // success means classified as the target: check it from the logits
  const z = (await model.forward(cw.xAdv)).toArray() as Float32Array;
  const tv = tgt.toNumbers();
  cw.success.forEach((s, i) => {
    let a = 0;
    for (let j = 1; j < 10; j++) if (z[i * 10 + j] > z[i * 10 + a]) a = j;
    t.is(s === 1, a === tv[i]);
  });
  tgt.dispose();
});

test('AutoAttack (custom: APGD-CE, APGD-T with 3 targets) is at most PGD-20 and CW-20; per-sample bookkeeping; in the ball', async (t) => {
  const eps = 0.1;
  const r = await evaluateRobustness(model, testSet, [
    { name: 'pgd', kind: 'pgd', epsilon: eps, stepSize: 0.01, steps: 20 },
    { name: 'cw', kind: 'cw', epsilon: eps, stepSize: 0.01, steps: 20 },
  ]);
  const stages: string[] = [];
  const aa = await autoAttack(model, testSet, {
    norm: 'linf', epsilon: eps, version: 'custom', attacks: ['apgd-ce', { kind: 'apgd-t', targets: 3 }],
    onStage: (e) => stages.push(`${e.batch}:${e.name}:${e.remaining}`),
  });
  const pgd = r.attacks[0].robustAccuracy, cw = r.attacks[1].robustAccuracy;
  // On this trained MLP the cascade broke 2 samples more than PGD-20 and CW-20 here (18 vs 20 of
  // 128 robust, on two kernel sets): nothing makes that hold on every CPU, so the ordering is
  // asserted on the designed model below, and here only that the cascade breaks samples at all
  // (it broke 82 of the 100 clean-correct)
  t.log(`clean ${r.accuracy}, pgd ${pgd}, cw ${cw}, autoattack ${aa.robustAccuracy} ± ${aa.robustAccuracyStderr}: ${aa.stages.map((s) => `${s.name} ${s.robustAccuracy} (${s.seconds.toFixed(2)} s)`).join(', ')}`);
  t.is(aa.accuracy, r.accuracy);
  t.true(aa.robustAccuracy < aa.accuracy);
  t.deepEqual(aa.stages.map((s) => s.name), ['apgd-ce', 'apgd-t']);
  t.deepEqual(stages.slice(0, 1), [`0:apgd-ce:${aa.perSample.clean.reduce((a, b) => a + b, 0)}`]);
  // per-sample bookkeeping agrees with the stage counts and the standard error formula
  const counts = [0, 0];
  let robust = 0;
  aa.perSample.brokenBy.forEach((b, i) => {
    if (b >= 0) counts[b]++;
    if (b === -1) robust++;
    t.is(b === -2, aa.perSample.clean[i] === 0);
    if (b >= 0) t.true(aa.perSample.norm[i] > 0 && aa.perSample.norm[i] <= eps + 1e-6);
    else t.is(aa.perSample.norm[i], 0);
  });
  t.deepEqual(counts, aa.stages.map((s) => s.broken));
  t.is(robust / N, aa.robustAccuracy);
  t.is(aa.robustAccuracyStderr, Math.sqrt(aa.robustAccuracy * (1 - aa.robustAccuracy) / N));
  t.is(aa.stages[1].robustAccuracy, aa.robustAccuracy);
  t.deepEqual(aa.warnings, []);
  // seeded: the same call gives the same samples
  const again = await autoAttack(model, testSet, { epsilon: eps, version: 'custom', attacks: ['apgd-ce', { kind: 'apgd-t', targets: 3 }] });
  t.deepEqual(Array.from(again.perSample.brokenBy), Array.from(aa.perSample.brokenBy));

  // At most PGD-20 and CW-20, where the outcome is built in: on the block-linear model at ε = 0.1,
  // 'robust' rows are misclassified nowhere in the ball and 'broken' rows by any sign step adding
  // up to ε (test/helpers/designed.ts has the margins). PGD-20 (20 steps of 0.01 from any start
  // in the ball reach +ε on block k, −ε on block y), CW-20 (the margin loss: the same signs) and the
  // cascade's APGD-CE (its first step) all break exactly the 'broken' rows, so all three robust
  // accuracies are the 'robust' rows' share, and APGD-T finds nothing left.
  if (!hasTorch) return;  // python3-torch writes that model
  const lin = await Model.load(BLOCK_LINEAR);
  const kinds: BlockRow[] = Array.from({ length: 24 }, (_, s) => (s % 3 === 2 ? 'wrong' : s % 3 === 1 ? 'broken' : 'robust'));
  const designed = blockData(kinds);
  const share = (k: BlockRow) => kinds.filter((v) => v === k).length / kinds.length;
  const rd = await evaluateRobustness(lin, designed, [
    { name: 'pgd', kind: 'pgd', epsilon: eps, stepSize: 0.01, steps: 20 },
    { name: 'cw', kind: 'cw', epsilon: eps, stepSize: 0.01, steps: 20 },
  ]);
  const ad = await autoAttack(lin, designed, { norm: 'linf', epsilon: eps, version: 'custom', attacks: ['apgd-ce', { kind: 'apgd-t', targets: 3 }] });
  t.is(rd.accuracy, kinds.filter((k) => k !== 'wrong').length / kinds.length);
  t.deepEqual(rd.attacks.map((a) => a.robustAccuracy), [share('robust'), share('robust')]);
  t.is(ad.robustAccuracy, share('robust'));
  t.deepEqual(ad.stages.map((s) => s.broken), [kinds.filter((v) => v === 'broken').length, 0]);
  t.deepEqual(Array.from(ad.perSample.brokenBy), kinds.map((k) => ({ robust: -1, broken: 0, wrong: -2 })[k]));
  lin.dispose();
  designed.dispose();
});

test('APGD-CE and APGD-T: x_adv in the ball and the box (L∞ and L2); success is misclassification; abortable', async (t) => {
  const x = testSet.images, y = testSet.labels;
  for (const p of [{ kind: 'apgd-ce', norm: 'linf', epsilon: 0.05, steps: 20 }, { kind: 'apgd-t', norm: 'l2', epsilon: 1, steps: 10, targets: 2 }] as AttackParams[]) {
    const r = await attack(model, x, y, p);
    t.deepEqual(ballViolations(x.toArray() as Float32Array, r.xAdv.toArray() as Float32Array, 784, p.norm!, p.epsilon!), []);
    const z = (await model.forward(r.xAdv)).toArray() as Float32Array;
    const yv = y.toNumbers();
    r.success.forEach((s, i) => {
      let a = 0;
      for (let j = 1; j < 10; j++) if (z[i * 10 + j] > z[i * 10 + a]) a = j;
      t.is(s === 1, a !== yv[i], `${p.kind} sample ${i}`);
    });
    t.log(`${p.kind}: broke ${r.success.reduce((a, b) => a + b, 0)} of ${N}`);
    // measured 66 (APGD-CE) and 74 (APGD-T) of 128 against the bound's 39
    t.true(r.success.reduce((a, b) => a + b, 0) > 0.3 * N, `${p.kind} breaks samples`);
  }
  // EOT on a deterministic model averages identical gradients: L∞ steps use only their signs, so
  // the iterates (and x_adv) are exactly those without EOT
  const xs = x.slice(0, 32), ysl = y.slice(0, 32);
  const one = await attack(model, xs, ysl, { kind: 'apgd-dlr', epsilon: 0.05, steps: 8, seed: 3 });
  const eot = await attack(model, xs, ysl, { kind: 'apgd-dlr', epsilon: 0.05, steps: 8, seed: 3, eotIter: 3 });
  t.deepEqual(Array.from(eot.xAdv.toArray() as Float32Array), Array.from(one.xAdv.toArray() as Float32Array));
  const ac = new AbortController();
  const run = attack(model, x, y, { kind: 'apgd-ce', epsilon: 0.1, steps: 100000, signal: ac.signal, onProgress: () => ac.abort() });
  await t.throwsAsync(run, { code: 'ERR_ABORTED' });
});

test('cascade options: unavailable stages, too few classes, targeted stages', async (t) => {
  t.throws(() => resolveCascade({ version: 'custom' }, 10), argErr);
  t.throws(() => resolveCascade({ version: 'bogus' as 'custom' }, 10), argErr);
  const fab = attackKinds().find((a) => a.kind === 'fab-t')!;
  if (!fab.available) t.throws(() => resolveCascade({ version: 'standard' }, 10), { ...argErr, message: /fab-t not available in this build/ });
  else t.deepEqual(resolveCascade({ version: 'standard' }, 10).stages.map((s) => s.kind), ['apgd-ce', 'apgd-t', 'fab-t', 'square']);
  const three = resolveCascade({ version: 'custom', attacks: ['apgd-ce', 'apgd-dlr', 'apgd-t'] }, 3);
  t.deepEqual(three.stages.map((s) => s.name), ['apgd-ce', 'apgd-dlr']);
  t.regex(three.warnings[0], /apgd-t skipped: its loss needs at least 4 classes, the data has 3/);
  t.is(resolveCascade({ version: 'custom', attacks: ['apgd-t'] }, 5).stages[0].targets, 4);
  t.throws(() => resolveCascade({ version: 'custom', attacks: [{ kind: 'pgd', targeted: true } as never] }, 10), argErr);
});

const hasTorch = hasTorchModules('torch');

// Tests that fork a process (python, the CLI) are serial: OpenBLAS's fork handler joins its worker
// threads, and a fork while a concurrent test's native op keeps them busy deadlocks the process.

// Gradient masking (scripts/reference/masked_models.py): the same trained CNN with its logits
// scaled by 1e4 (softmax saturates: float32 cross-entropy gradients vanish) and behind a
// 255-level input quantisation (zero input gradient). PGD on the cross-entropy looks robust on
// both; the sanity checks warn on both; on the scaled model the cascade's DLR stage (scale-
// invariant) brings robust accuracy down to within 0.1 of the unmasked model's. The quantised
// model needs a gradient-free stage: with Square in the build, the cascade brings it down too.
(hasTorch ? test.serial : test.skip)('gradient masking: PGD looks robust, the cascade is not fooled, the sanity checks warn (also on probabilities and randomness)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-masked-'));
  execFileSync(PY, [path.join(__dirname, '..', '..', 'scripts', 'reference', 'masked_models.py'), dir], {
    stdio: 'inherit', env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' },
  });
  const data = fashionSubset('test', 64);
  const eps = 0.1;
  const pgd = { name: 'pgd', kind: 'pgd', epsilon: eps, stepSize: 0.01, steps: 20 } as const;
  const custom = { norm: 'linf', epsilon: eps, version: 'custom', attacks: ['apgd-ce', { kind: 'apgd-t', targets: 3 }] } as const;
  const res: Record<string, { clean: number; pgd: number; aa: number; warnings: string[] }> = {};
  for (const name of ['base', 'scaled', 'quant']) {
    const m = await Model.load(path.join(dir, `${name}.pt`));
    const p = await evaluateRobustness(m, data, [pgd]);
    const a = await autoAttack(m, data, custom);
    res[name] = { clean: p.accuracy, pgd: p.attacks[0].robustAccuracy, aa: a.robustAccuracy, warnings: a.warnings };
    t.log(`${name}: clean ${p.accuracy}, pgd ${p.attacks[0].robustAccuracy}, autoattack ${a.robustAccuracy}; ${a.warnings.join(' | ') || 'no warnings'}`);
    m.dispose();
  }
  const { base, scaled, quant } = res;
  // The masked models' PGD is pinned by construction: scaled logits saturate the float32 softmax
  // (p_y = 1 exactly, a zero cross-entropy gradient) and quantisation has a zero derivative, so PGD
  // moves only by its random start (measured: robust = clean on both). How much PGD breaks of the
  // Python-trained base model is an outcome of its training on this CPU: measured 27 of the 42
  // clean-correct at ε = 0.1 (two kernel sets); 0.2 of 64 samples (13) leaves room for another
  // CPU's training while still saying that PGD breaks the unmasked model and not the masked ones
  t.true(base.pgd < base.clean - 0.2, 'PGD breaks the unmasked model');
  t.deepEqual(base.warnings, []);
  for (const [name, r] of [['scaled', scaled], ['quant', quant]] as const) {
    t.is(r.clean, base.clean, `${name}: same predictions`);
    t.true(r.pgd > base.pgd + 0.2, `${name}: PGD looks robust (${r.pgd} vs ${base.pgd})`);
    t.true(r.warnings.some((w) => /gradient masking/.test(w)), `${name}: warns`);
  }
  // DLR is invariant to the logits' scale, so the cascade sees the same model on both (measured:
  // the same robust accuracy); 0.1 allows a different APGD-CE stage outcome on a few samples
  t.true(scaled.aa <= base.aa + 0.1, `scaled: the cascade is not fooled (${scaled.aa} vs ${base.aa})`);
  // probability outputs and a randomised model: the other two sanity checks (two cheap APGD steps suffice)
  for (const [name, re] of [['softmax', /look like probabilities on 64 of 64 samples/], ['noisy', /the model is randomised; use version 'rand'/]] as const) {
    const m = await Model.load(path.join(dir, `${name}.pt`));
    const a = await autoAttack(m, data, { epsilon: eps, version: 'custom', attacks: [{ kind: 'apgd-ce', steps: 2 }] });
    t.true(a.warnings.some((w) => re.test(w)), `${name}: ${a.warnings.join(' | ')}`);
    m.dispose();
  }
  if (attackKinds().find((a) => a.kind === 'square')?.available) {
    const m = await Model.load(path.join(dir, 'quant.pt'));
    const a = await autoAttack(m, data, { ...custom, attacks: ['apgd-ce', 'square'] });
    t.log(`quant + square: robust ${a.robustAccuracy} (base, cascade: ${base.aa})`);
    t.true(a.robustAccuracy <= base.aa + 0.1, `quant + square: ${a.robustAccuracy} vs ${base.aa}`);
    m.dispose();
  }
  data.dispose();
  fs.rmSync(dir, { recursive: true });
});

// The CLI in a child process (as users call it): --attack autoattack --json against the library
// call on the same checkpoint and images (seeded: identical numbers); usage errors exit 1 with a
// one-line reason. Configs accept autoattack entries and refuse misplaced options.
test.serial('CLI attack --attack autoattack --json; configs accept autoattack', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-aa-cli-'));
  const ck = path.join(dir, 'model.pt');
  await model.save(ck);
  const cli = path.join(__dirname, '..', 'lib', 'cli', 'main.js');
  const args = ['attack', '--model', ck, '--data', 'fashion-mnist', '--limit', '64', '--attack', 'autoattack', '--epsilon', '0.1',
    '--version', 'custom', '--attacks', 'apgd-ce,apgd-t', '--json'];
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { accuracy: number; robustAccuracy: number; robustAccuracyStderr: number; samples: number; stages: { name: string; robustAccuracy: number }[] };
  const lib = await autoAttack(model, testSet, { epsilon: 0.1, version: 'custom', attacks: ['apgd-ce', 'apgd-t'], limit: 64 });
  t.is(out.samples, 64);
  t.is(out.accuracy, lib.accuracy);
  t.is(out.robustAccuracy, lib.robustAccuracy);
  t.deepEqual(out.stages.map((s) => [s.name, s.robustAccuracy]), lib.stages.map((s) => [s.name, s.robustAccuracy]));
  const bad = spawnSync(process.execPath, [cli, 'attack', '--model', ck, '--data', 'fashion-mnist', '--limit', '8', '--attack', 'apgd-ce', '--step-size', '0.1'], { encoding: 'utf8' });
  t.is(bad.status, 1);
  t.regex(bad.stderr, /ERR_ARG: --step-size: expected none for apgd-ce/);
  fs.rmSync(dir, { recursive: true });

  const cfg = (a: Record<string, unknown>) => ({ name: 'x', defaults: { data: { dataset: 'fashion-mnist' } }, runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' }, eval: { attacks: [a] } }] });
  const v = expandRuns(validateExperiment(cfg({ name: 'autoattack', type: 'autoattack', epsilon: 0.1, attacks: ['apgd-ce', { type: 'apgd-t', targets: 3 }] })));
  const a = v[0].eval.attacks[0];
  t.deepEqual(evalAttackParams(a, 5), { kind: 'autoattack', norm: 'linf', epsilon: 0.1, version: 'custom', seed: 5,
    attacks: ['apgd-ce', { kind: 'apgd-t', steps: undefined, restarts: undefined, targets: 3 }] });
  t.throws(() => expandRuns(validateExperiment(cfg({ type: 'pgd', epsilon: 0.1, version: 'standard' }))), { message: /`version` and `attacks` are for type autoattack/ });
  t.throws(() => expandRuns(validateExperiment(cfg({ type: 'autoattack', epsilon: 0.1, steps: 10 }))), { message: /autoattack takes norm, epsilon/ });
});
