import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, ModelSpec, Tensor } from '../lib';
import { modelGradState } from './helpers/grad-state';
import { train, manualSeed, scheduleFactor, presets, EpochMetrics, TrainOptions, probeMetrics } from '../lib/science/train';
import { CcklAccumulator } from '../lib/science/metrics';
import { fisherExact } from '../lib/science/fisher';
import { Dataset } from '../lib/science/data/dataset';
import { fashionSubset } from './helpers/train-fixtures';
import { addon } from '../lib/binding/native';

let trainSet: Dataset;
let probe: Dataset;
test.before(() => {
  trainSet = fashionSubset('train', 2000);
  probe = fashionSubset('test', 256);
});
const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'fl-train-'));
const MLP: ModelSpec = { arch: 'mlp', hidden: [128] };
const stable = (h: EpochMetrics[]) => h.map(({ seconds: _s, samplesPerSec: _p, ...rest }) => rest);

async function logits(m: Model, x: Tensor): Promise<number[]> {
  const z = await m.forward(x);
  return Array.from(z.toArray() as Float32Array);
}

test('schedules: multistep follows TRADES (epoch >= 75), cosine, one-cycle, piecewise, warm-up', (t) => {
  const ms = presets['trades-cifar10'].schedule;
  t.is(scheduleFactor(ms, 73.9, 76), 1);
  t.is(scheduleFactor(ms, 74, 76), 0.1 ** 1);
  const mn = presets['trades-mnist'].schedule;
  t.is(scheduleFactor(mn, 54, 100), 0.1);
  t.true(Math.abs(scheduleFactor(mn, 89, 100) - 1e-3) < 1e-12);
  t.is(scheduleFactor({ type: 'cosine' }, 0, 10), 1);
  t.true(Math.abs(scheduleFactor({ type: 'cosine' }, 5, 10) - 0.5) < 1e-12);
  t.is(scheduleFactor({ type: 'onecycle', peak: 0.5 }, 5, 10), 1);
  t.is(scheduleFactor({ type: 'onecycle', peak: 0.5 }, 7.5, 10), 0.5);
  t.is(scheduleFactor({ type: 'piecewise', points: [[0, 0], [2, 1], [4, 0]] }, 3, 4), 0.5);
  t.is(scheduleFactor({ type: 'constant', warmupEpochs: 2 }, 1, 10), 0.5);
});

test('CCKL from probabilities (the native class sums) equals the pairwise definition', async (t) => {
  const k = 3, labels = [0, 1, 1, 2, 0];
  const probs = new Float64Array(labels.length * k).map((_, i) => 0.1 + ((i * 37) % 11) / 10);
  for (let i = 0; i < labels.length; i++) {
    const s = probs.subarray(i * k, i * k + k).reduce((a, b) => a + b, 0);
    for (let c = 0; c < k; c++) probs[i * k + c] /= s;
  }
  let sum = 0, pairs = 0;
  for (let i = 0; i < labels.length; i++) for (let j = 0; j < labels.length; j++) {
    if (labels[i] === labels[j]) continue;
    pairs++;
    for (let c = 0; c < k; c++) sum += probs[i * k + c] * Math.log(probs[i * k + c] / probs[j * k + c]);
  }
  const acc = new CcklAccumulator({ keepLogp: false });
  const pt = Tensor.from(probs, [labels.length, k]), yt = Tensor.from(BigInt64Array.from(labels, BigInt), [labels.length]);
  await acc.addProbs(pt, yt);
  pt.dispose(); yt.dispose();
  // float64 sums of 5 samples × 3 classes: rounding ~1e-16 relative, far below 1e-12
  t.true(Math.abs(acc.result().cckl - sum / pairs) < 1e-12);
  acc.dispose();
});

test.serial('probe metrics (native class sums over uneven batches) equal a naive float64 computation from the probabilities', async (t) => {
  manualSeed(3);
  const m = Model.create(MLP);
  const small = await probe.take(100);
  const got = await probeMetrics(m, small, { batchSize: 32 });
  // independent: pull all probabilities once, then the pairwise definitions in float64
  const e = await fisherExact(m, small.images);
  const p = e.probs.toArray() as Float64Array;
  e.probs.dispose(); e.spectrum.dispose();
  const y = small.labels.toNumbers(), k = small.numClasses, n = y.length;
  let correct = 0, ce = 0, kl = 0, pairs = 0;
  for (let i = 0; i < n; i++) {
    let arg = 0;
    for (let c = 1; c < k; c++) if (p[i * k + c] > p[i * k + arg]) arg = c;
    if (arg === y[i]) correct++;
    ce -= Math.log(p[i * k + y[i]]);
    for (let j = 0; j < n; j++) {
      if (y[i] === y[j]) continue;
      pairs++;
      for (let c = 0; c < k; c++) kl += p[i * k + c] * Math.log(p[i * k + c] / p[j * k + c]);
    }
  }
  t.is(got.probeAccuracy, correct / n);
  // float64 sums over ≤ 10⁴ pairs: rounding stays ~1e-13 relative; fisherExact is batch-size
  // dependent only through float32 kernels of the forward (batch 32 vs 100), which move p by
  // ~1e-7 relative, so CE and CCKL are compared to 1e-5
  t.true(Math.abs(got.probeCrossEntropy! - ce / n) < 1e-5 * (ce / n), `CE ${got.probeCrossEntropy} vs ${ce / n}`);
  t.true(Math.abs(got.cckl! - kl / pairs) < 1e-5 * (kl / pairs), `CCKL ${got.cckl} vs ${kl / pairs}`);
  const mean = (a: Float64Array) => a.reduce((s, v) => s + v, 0) / a.length;
  // ‖G‖_F from float32 Jacobians of batches of 32 against one of 100: 1e-4, as the engine comparisons in test/fisher.test.ts
  t.true(Math.abs(got.fisherFrobeniusMean! - mean(e.frobenius)) < 1e-4 * mean(e.frobenius));
  small.dispose();
});

test.serial('natural training: accuracy and Fisher norm rise, events, metrics.jsonl, checkpoint readable, model left as found', async (t) => {
  const dir = tmp();
  manualSeed(0);
  const m = Model.create(MLP);
  const before = await modelGradState(m);
  const events: string[] = [];
  const r = await train(m, trainSet, {
    method: 'natural', epochs: 3, batchSize: 64, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, probe, probeSize: 200,
    outDir: dir, onEvent: (e) => events.push(e.type),
  });
  t.is(r.model, m);
  t.is(r.history.length, 3);
  t.is(events.filter((e) => e === 'batch').length, 3 * 32);
  t.is(events.filter((e) => e === 'epoch').length, 3);
  const h = r.history;
  t.log(`probe accuracy ${h.map((e) => e.probeAccuracy).join(', ')}; ‖G‖F mean ${h.map((e) => e.fisherFrobeniusMean!.toFixed(3)).join(', ')}`);
  // measured 0.63, 0.765, 0.79 on 200 probe images: 0.65 sits 28 images below the end, far more
  // than another CPU's rounding moves a 3-epoch MLP; ‖G‖F measured 0.29 → 0.55
  t.true(h[2].probeAccuracy! > h[0].probeAccuracy! && h[2].probeAccuracy! > 0.65, JSON.stringify(h.map((e) => e.probeAccuracy)));
  t.true(h[2].fisherFrobeniusMean! > h[0].fisherFrobeniusMean!);
  for (const k of ['probeCrossEntropy', 'fisherFrobeniusMedian', 'fisherLambdaMaxMean', 'fisherLambdaMaxMedian', 'cckl'] as const) {
    t.true(Number.isFinite(h[2][k]!), k);
  }
  t.true(h[2].fisherLambdaMaxMean! <= h[2].fisherFrobeniusMean! + 1e-12);  // λ_max ≤ ‖G‖_F per sample; float64 means of O(1)
  const lines = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EpochMetrics);
  t.deepEqual(lines, h);
  const ck = await Model.loadCheckpoint(path.join(dir, 'checkpoint.pt'));
  t.is((ck.checkpointMeta as { epoch: number }).epoch, 3);
  t.true(ck.checkpoint!.hasOptimizer);
  t.deepEqual(await logits(ck, probe.images.slice(0, 8)), await logits(m, probe.images.slice(0, 8)));
  t.deepEqual(await modelGradState(m), before);
  fs.rmSync(dir, { recursive: true });
});

async function resumeMatches(t: import('ava').ExecutionContext, spec: ModelSpec, opts: TrainOptions, data: Dataset): Promise<void> {
  const a = tmp(), b = tmp();
  // the same initial weights for both runs (the global generator is shared with concurrent tests)
  const m1 = Model.create(spec);
  await m1.save(path.join(a, 'init.pt'));
  const m2 = Model.create(spec);
  await m2.loadState(path.join(a, 'init.pt'));
  const full = await train(m1, data, { ...opts, epochs: 2, outDir: a, probe, probeSize: 64 });
  await train(m2, data, { ...opts, epochs: 1, outDir: b, probe, probeSize: 64 });
  const m3 = Model.create(spec); // other initial weights: resume must replace them
  const resumed = await train(m3, data, { ...opts, epochs: 2, outDir: b, resume: true, probe, probeSize: 64 });
  t.deepEqual(stable(resumed.history), stable(full.history));
  t.deepEqual(await logits(m3, probe.images.slice(0, 16)), await logits(m1, probe.images.slice(0, 16)));
  fs.rmSync(a, { recursive: true });
  fs.rmSync(b, { recursive: true });
}

test.serial('resume gives the same numbers as an uninterrupted run (TRADES, SGD momentum)', async (t) => {
  await resumeMatches(t, MLP, { method: 'trades', batchSize: 100, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, attack: { epsilon: 0.1, stepSize: 0.04, steps: 2, beta: 1 }, seed: 3 },
    await trainSet.take(600));
});

test.serial('resume is exact with dropout (small-cnn) and Adam, PGD-AT with random start', async (t) => {
  await resumeMatches(t, { arch: 'small-cnn' }, { method: 'pgd-at', batchSize: 64, optimizer: { type: 'adam', lr: 1e-3 }, attack: { epsilon: 0.1, stepSize: 0.05, steps: 1 }, seed: 4 },
    await trainSet.take(192));
});

test('abort stops within a batch and leaves the last checkpoint intact', async (t) => {
  const dir = tmp();
  manualSeed(0);
  const m = Model.create(MLP);
  const ac = new AbortController();
  let batchesAfter = 0;
  let aborted = false;
  const p = train(m, trainSet, {
    method: 'trades', epochs: 5, batchSize: 100, optimizer: { lr: 0.05 }, attack: { epsilon: 0.1, stepSize: 0.04, steps: 3, beta: 1 },
    outDir: dir, signal: ac.signal,
    onEvent: (e) => {
      if (e.type === 'epoch' && e.epoch === 1) setTimeout(() => { aborted = true; ac.abort(); }, 5);
      else if (e.type === 'batch' && aborted) batchesAfter++;
    },
  });
  await t.throwsAsync(p, { code: 'ERR_ABORTED' } as never);
  t.true(batchesAfter <= 1, `batches after abort: ${batchesAfter}`);
  const ck = await Model.loadCheckpoint(path.join(dir, 'checkpoint.pt'));
  t.is((ck.checkpointMeta as { epoch: number }).epoch, 1);
  t.is(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1);
  fs.rmSync(dir, { recursive: true });
});

/**
 * Mid-epoch preemption (issue 26): a run stopped inside an epoch and resumed from its checkpoint
 * ends with the same weights, optimiser state and non-timing metrics as an uninterrupted one.
 * TRADES with SGD momentum and crop/flip augmentation, so the data order, augmentation draws,
 * attack starts and momentum buffers all have to come back. Exact equality: the same binary on
 * the same machine replays the same float operations.
 */
async function midEpochMatches(t: import('ava').ExecutionContext, stop: { at: [number, number]; how: 'graceful' | 'abort' | 'abandon'; every?: string; savedAt: number }): Promise<void> {
  const data = await trainSet.take(600); // 6 batches of 100 per epoch
  const opts: TrainOptions = {
    method: 'trades', batchSize: 100, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, attack: { epsilon: 0.1, stepSize: 0.04, steps: 2, beta: 1 },
    augment: { cropPad: 2, flip: true }, seed: 5, probe, probeSize: 64, checkpointEvery: stop.every ?? 'off',
  };
  const a = tmp(), b = tmp();
  const m1 = Model.create(MLP);
  await m1.save(path.join(a, 'init.pt'));
  const m2 = Model.create(MLP);
  await m2.loadState(path.join(a, 'init.pt'));
  const full = await train(m1, data, { ...opts, epochs: 3, outDir: a });
  const ac = new AbortController();
  // 'abandon': the batch after the stop cannot end within the grace. Constructed, not timed: its
  // step runs with 10⁹ attack steps (minutes on any machine), so only the cancellation at
  // abandonAfterSec(grace) ends it; options a cancelled step never uses, so no result changes.
  const native = addon() as unknown as { trainStep: (...a: unknown[]) => Promise<unknown> };
  const realStep = native.trainStep;
  let armed = false, huge = false, abandonedAfterMs = 0;
  if (stop.how === 'abandon') {
    native.trainStep = (m, o, x, y, so, ctl) => {
      if (!armed) return realStep(m, o, x, y, so, ctl);
      // the stop (SIGTERM) comes while this step runs
      ac.abort();
      huge = true;
      const t0 = Date.now();
      return realStep(m, o, x, y, { ...(so as object), steps: 1e9 }, ctl).finally(() => { abandonedAfterMs = Date.now() - t0; });
    };
  }
  const p = train(m2, data, {
    ...opts, epochs: 3, outDir: b, ...(stop.how === 'abort' ? { signal: ac.signal } : { stopAtBatch: ac.signal }),
    ...(stop.how === 'abandon' ? { stopGraceSec: 0.6 } : {}),
    onEvent: (e) => {
      if (e.type === 'batch' && e.epoch === stop.at[0] && e.batch === stop.at[1]) {
        if (stop.how === 'abandon') armed = true; else ac.abort();
      }
    },
  });
  try {
    await t.throwsAsync(p, { code: 'ERR_ABORTED', ...(stop.how === 'abandon' ? { message: /could not end within the grace and was abandoned/ } : {}) } as never);
  } finally {
    native.trainStep = realStep;
  }
  if (stop.how === 'abandon') {
    t.true(huge, 'the batch after the stop ran with the huge inner attack');
    // cancelled at abandonAfterSec(0.6) = 0.4 s; the op checks its signal between attack steps (< 1 ms each
    // here), 5 s covers a loaded CI machine and is far below the uncancelled 10⁹ steps
    t.true(abandonedAfterMs >= 300 && abandonedAfterMs < 5000, `abandoned after ${abandonedAfterMs} ms`);
  }
  const meta = (await Model.loadCheckpoint(path.join(b, 'checkpoint.pt'))).checkpointMeta as { epoch: number; batch?: number };
  t.deepEqual([meta.epoch, meta.batch], [stop.at[0] - 1, stop.savedAt], 'the checkpoint is inside the epoch');
  const m3 = Model.create(MLP); // other initial weights: resume must replace them
  const resumed = await train(m3, data, { ...opts, epochs: 3, outDir: b, resume: true });
  t.deepEqual(stable(resumed.history), stable(full.history));
  t.deepEqual(await logits(m3, probe.images.slice(0, 16)), await logits(m1, probe.images.slice(0, 16)));
  // the optimiser state too: one more epoch from each checkpoint gives the same weights
  const m4 = Model.create(MLP), m5 = Model.create(MLP);
  await train(m4, data, { ...opts, epochs: 4, outDir: a, resume: true });
  await train(m5, data, { ...opts, epochs: 4, outDir: b, resume: true });
  t.deepEqual(await logits(m5, probe.images.slice(0, 16)), await logits(m4, probe.images.slice(0, 16)));
  fs.rmSync(a, { recursive: true });
  fs.rmSync(b, { recursive: true });
}

test.serial('a graceful stop inside an epoch checkpoints at the next batch boundary and resumes identically', async (t) => {
  // stopped during batch 3 of epoch 2: the checkpoint holds 3 batches of epoch 2
  await midEpochMatches(t, { at: [2, 3], how: 'graceful', savedAt: 3 });
});

test.serial('an abrupt stop inside an epoch loses only the batches since the last mid-epoch checkpoint, and resumes identically', async (t) => {
  // checkpoints after batches 2 and 4; aborted during batch 5 of epoch 2: resumes after batch 4
  await midEpochMatches(t, { at: [2, 5], how: 'abort', every: '2b', savedAt: 4 });
});

test.serial('a batch that cannot end within the grace is abandoned: its op is cancelled and the state at the last boundary is checkpointed and resumes identically', async (t) => {
  // stopped during batch 6 of epoch 2 (last checkpoint: epoch 1's end), which never ends: the
  // checkpoint holds the 5 batches of epoch 2 before it
  await midEpochMatches(t, { at: [2, 5], how: 'abandon', savedAt: 5 });
});

test('checkpointEvery is validated', async (t) => {
  const m = Model.create(MLP);
  await t.throwsAsync(train(m, trainSet, { method: 'natural', epochs: 1, checkpointEvery: '5 minutes' }), { code: 'ERR_ARG', message: /checkpointEvery: expected a number of batches such as 500b, seconds such as 300s, or off/ } as never);
});

test.serial('adversarial training keeps the Fisher norm far below natural training after the same epochs', async (t) => {
  const run = async (method: 'natural' | 'pgd-at' | 'trades') => {
    manualSeed(11);
    const m = Model.create(MLP);
    const r = await train(m, trainSet, {
      method, epochs: 3, batchSize: 100, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, seed: 1,
      attack: { epsilon: 0.1, stepSize: 0.04, steps: 3, beta: 1 }, probe, probeSize: 256,
    });
    return r.history[2];
  };
  const nat = await run('natural'), pgd = await run('pgd-at'), trades = await run('trades');
  t.log(`probe accuracy: natural ${nat.probeAccuracy}, pgd-at ${pgd.probeAccuracy}, trades ${trades.probeAccuracy}`);
  t.log(`‖G‖F mean: natural ${nat.fisherFrobeniusMean!.toFixed(3)}, pgd-at ${pgd.fisherFrobeniusMean!.toFixed(3)}, trades ${trades.fisherFrobeniusMean!.toFixed(3)}`);
  // Outcomes of 3 epochs of training, so margins over what another CPU's rounding moves (a few %
  // of a trained model's statistics): measured ‖G‖F natural 0.392, PGD-AT 0.129 (3.0×, asserted
  // 2×), TRADES 0.190 (2.1×, asserted 1.5×; bench/findings.js shows 11–15× on LeNet after 6 epochs)
  t.true(nat.fisherFrobeniusMean! > 2 * pgd.fisherFrobeniusMean!);
  t.true(nat.fisherFrobeniusMean! > 1.5 * trades.fisherFrobeniusMean!);
  // PGD-AT gives up clean accuracy for robustness: measured 0.691 vs natural 0.777 (22 of 256
  // probe images). TRADES at β = 1 gave up only 4 (0.762), which rounding could turn around, so
  // its accuracy is not compared
  t.true(nat.probeAccuracy! >= pgd.probeAccuracy!);
});

test('optimizers, schedules and augmentation run and reduce the loss; bad options are clear errors', async (t) => {
  const small = await trainSet.take(500);
  for (const opt of [{ type: 'adam', lr: 2e-3 }, { type: 'adamw', lr: 2e-3, weightDecay: 0.01 }, { type: 'sgd', lr: 0.05, nesterov: true, momentum: 0.9, weightDecay: 5e-4 }] as const) {
    manualSeed(1);
    const m = Model.create(MLP);
    const r = await train(m, small, { method: 'natural', epochs: 3, batchSize: 50, optimizer: opt, schedule: { type: 'cosine', warmupEpochs: 1 }, augment: { cropPad: 2, flip: true } });
    t.log(`${opt.type}: train loss ${r.history.map((h) => h.trainLoss.toFixed(4)).join(', ')}`);
    // measured 2.21 → 1.56 (Adam), 2.25 → 1.61 (SGD): the drop is 30 times any rounding effect
    t.true(r.history[2].trainLoss < r.history[0].trainLoss, `${opt.type}: ${r.history.map((h) => h.trainLoss)}`);
  }
  const m = Model.create(MLP);
  await t.throwsAsync(train(m, small, { method: 'nope' as never }), { code: 'ERR_ARG' } as never);
  await t.throwsAsync(train(m, small, { method: 'natural', optimizer: { type: 'rmsprop' as never } }), { code: 'ERR_ARG' } as never);
});

test.serial('a cancelled training step leaves the model as it was, BatchNorm running statistics included (fisher-lambda checks its signal after the train-mode forward)', async (t) => {
  // resnet20 has BatchNorm; its running statistics change in any train-mode forward. The step runs
  // 10⁹ power iterations, so only the cancellation ends it, after that forward.
  manualSeed(3);
  const m = Model.create({ arch: 'resnet20', inChannels: 1, inputSize: 28 });
  const data = await trainSet.take(16);
  const before = await m.state();
  const ac = new AbortController();
  const native = addon() as unknown as { trainStep: (...a: unknown[]) => Promise<unknown> };
  const realStep = native.trainStep;
  let started = false;
  native.trainStep = (mm, o, x, y, so, ctl) => {
    started = true;
    setTimeout(() => ac.abort(), 300);
    return realStep(mm, o, x, y, { ...(so as object), powerIters: 1e9 }, ctl);
  };
  try {
    await t.throwsAsync(train(m, data, { method: 'fisher-lambda', epochs: 1, batchSize: 16, signal: ac.signal, optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 } }), { code: 'ERR_ABORTED' } as never);
  } finally {
    native.trainStep = realStep;
  }
  t.true(started);
  const after = await m.state();
  t.deepEqual([...after.keys()], [...before.keys()]);
  t.true([...before.keys()].some((k) => k.endsWith('running_mean')), 'the model has BatchNorm buffers');
  for (const [k, v] of before) t.deepEqual(Array.from(after.get(k)!.toArray() as Float32Array), Array.from(v.toArray() as Float32Array), k);
  for (const v of [...before.values(), ...after.values()]) v.dispose();
  data.dispose();
  m.dispose();
});
